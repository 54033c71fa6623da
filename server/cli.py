"""``sambay-serve``: vLLM's own OpenAI server (``vllm serve``'s arguments and run path) plus the
sambay-serve policies (:mod:`sambay_server.policies`) and project defaults.

With no model it serves a tiny SambaY checkpoint generated on first start, on CPU — the
project's "run the main job" command. Every ``vllm serve`` flag works; the extra flags are in
the "sambay-serve" group of ``--help``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from . import vllm_front

DEFAULT_TINY = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vllm-sambay" / "tiny-sambay"
MIDDLEWARE = "sambay_server.policies.SambayPolicies"


def _given(flag: str, argv: list[str]) -> bool:
    """Whether ``--flag`` is on the command line (vLLM also accepts ``--flag_name`` spellings)."""
    variants = {flag, flag.replace("-", "_").replace("__", "--")}
    return any(a.split("=", 1)[0] in variants for a in argv)


def build_parser():
    """vLLM's serve parser with the sambay-serve flags added (one parser: one ``--help``). The policy
    flags come from the policies' own option declarations, defaults and help included."""
    from . import http, policies

    parser = vllm_front.make_arg_parser("sambay-serve: vLLM's OpenAI-compatible server for SambaY, hardened")
    group = parser.add_argument_group("sambay-serve")
    for option in [*policies.options(), *http.OPTIONS]:
        if option.cli_flag is not None:
            group.add_argument(option.cli_flag, type=option.type, default=option.default, help=option.help)
    group.add_argument(
        "--graceful-shutdown-s", type=float, default=30.0, help="on SIGTERM, in-flight requests get this long to finish"
    )
    return parser


def parse_args(argv: list[str] | None = None):
    """Parse like ``vllm serve`` and apply sambay-serve's defaults (see the README's server section)."""
    from . import http, policies

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "model_tag", None):  # `sambay-serve CKPT`, as `vllm serve CKPT`
        args.model = args.model_tag
    elif not _given("--model", argv):
        from vllm_sambay.testing.tiny import write_tiny_checkpoint

        args.model = str(write_tiny_checkpoint(DEFAULT_TINY))
        if not args.served_model_name:
            args.served_model_name = ["sambay-tiny"]
        if args.max_model_len is None:
            args.max_model_len = 2048
    if not _given("--host", argv):
        args.host = "127.0.0.1"  # vLLM listens on every interface by default; we do not
    if vllm_front.is_cpu():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if not _given("--dtype", argv):
            args.dtype = "float32"
        if not any(_given(f, argv) for f in ("--enforce-eager", "--no-enforce-eager", "-cc", "--compilation-config")):
            args.enforce_eager = True  # compilation costs minutes on small CPUs for little gain
    if not _given("--reasoning-parser", argv):
        from vllm_sambay import REASONING_PARSER, register_reasoning_parser

        register_reasoning_parser()  # vLLM checks the name before it loads plugins in some releases
        args.reasoning_parser = REASONING_PARSER
        if getattr(args, "structured_outputs_config", None) is not None:  # what the app state reads
            args.structured_outputs_config.reasoning_parser = REASONING_PARSER
    if not _given("--shutdown-timeout", argv) and hasattr(args, "shutdown_timeout"):
        args.shutdown_timeout = int(args.graceful_shutdown_s)  # vLLM drains (not aborts) on SIGTERM
    if not _given("--disable-uvicorn-access-log", argv):
        args.disable_uvicorn_access_log = True  # our JSON line per request replaces it
    # The key guards every route but /health and /metrics here; vLLM's own --api-key guards only
    # /v1, so it is taken over (and VLLM_API_KEY too, which vLLM would otherwise apply as well).
    keys = args.api_key or [k for k in (os.environ.get("SAMBAY_API_KEY"), os.environ.pop("VLLM_API_KEY", None)) if k]
    args.sambay_api_keys, args.api_key = [k for k in keys if k], None
    # X-Request-Id on every response is vLLM's --enable-request-id-headers, on by default here and
    # taken over the same way: the policies run vLLM's middleware outside their own answers.
    given = _given("--enable-request-id-headers", argv) or _given("--no-enable-request-id-headers", argv)
    args.sambay_request_id_headers = args.enable_request_id_headers if given else True
    args.enable_request_id_headers = False
    for vllm_flag, ours in http.VLLM_H11_FLAGS.items():  # vLLM's header limits that limit nothing here
        if _given(vllm_flag, argv):
            parser.error(
                f"{vllm_flag} does not limit the HTTP parser sambay-serve runs; use --{ours.replace('_', '-')}"
            )
    if hasattr(args, "h11_max_incomplete_event_size"):  # what vLLM hands uvicorn's h11 fallback
        args.h11_max_incomplete_event_size = args.max_header_bytes
    try:
        policies.check(policies.settings_from_args(args))
        http.check(http.settings_from_args(args))
    except policies.SettingsError as exc:
        parser.error(str(exc))
    if MIDDLEWARE not in args.middleware:
        args.middleware = [*args.middleware, MIDDLEWARE]
    return args


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("sambay_server.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    own = logging.getLogger("sambay_server")
    own.setLevel(level.upper())
    if not own.handlers:
        fmt = logging.StreamHandler(sys.stderr)
        fmt.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        own.addHandler(fmt)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM (exit 0) or until the engine dies (exit non-zero, so it gets restarted)."""
    vllm_front.cli_env_setup()
    args = parse_args(argv)
    _setup_logging(args.uvicorn_log_level)
    vllm_front.validate(args)
    from . import http
    from .event_loop import StopNotingLoop
    from .policies import engine_state

    http.configure(http.settings_from_args(args))
    vllm_front.run(
        args,
        loop_factory=StopNotingLoop,
        http=http.TimedHttpProtocol,
        timeout_graceful_shutdown=int(args.graceful_shutdown_s),
    )
    if engine_state.LIVENESS.dead:
        code = engine_state.ENGINE_DEAD_EXIT_CODE
        logging.getLogger("sambay_server").error("exiting with %d: the engine died", code)
        return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
