"""``sambay-serve``: vLLM's engine arguments plus server options.

With no ``--model`` it serves a tiny SambaY checkpoint generated on first start, on CPU — the
project's "run the main job" command.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

DEFAULT_TINY = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vllm-sambay" / "tiny-sambay"


def _given(flag: str, argv: list[str]) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def parse_args(argv: list[str] | None = None):
    from vllm import AsyncEngineArgs

    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # pragma: no cover - older releases
        from vllm.utils import FlexibleArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = FlexibleArgumentParser(description="OpenAI-compatible server for SambaY on vLLM")
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8000)
    server.add_argument("--api-key", default=os.environ.get("SAMBAY_API_KEY"),
                        help="require 'Authorization: Bearer KEY' (env SAMBAY_API_KEY)")
    server.add_argument("--max-pending", type=int, default=256,
                        help="requests admitted at once (running + queued); beyond it: 429 with Retry-After")
    server.add_argument("--allowed-origins", nargs="*", default=[], help="CORS origins (none by default)")
    server.add_argument("--graceful-shutdown-s", type=float, default=30.0)
    server.add_argument("--uvicorn-log-level", default="info")
    parser = AsyncEngineArgs.add_cli_args(parser)
    cpu = _is_cpu()
    defaults = {}
    if not _given("--model", argv):
        from vllm_sambay.testing.tiny import write_tiny_checkpoint

        defaults["model"] = str(write_tiny_checkpoint(DEFAULT_TINY))
        defaults["served_model_name"] = ["sambay-tiny"]
        if not _given("--max-model-len", argv):
            defaults["max_model_len"] = 2048
    if cpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if not _given("--dtype", argv):
            defaults["dtype"] = "float32"
        if not any(_given(f, argv) for f in ("--enforce-eager", "--no-enforce-eager", "-cc", "--compilation-config")):
            defaults["enforce_eager"] = True  # compilation costs minutes on small CPUs for little gain
    parser.set_defaults(**defaults)
    return parser.parse_args(argv)


def _is_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.uvicorn_log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    import uvicorn
    from vllm import AsyncEngineArgs, AsyncLLMEngine

    from .app import Settings, build_app

    engine_args = AsyncEngineArgs.from_cli_args(args)
    engine = AsyncLLMEngine.from_engine_args(engine_args)
    names = args.served_model_name or [args.model]
    max_len = engine.vllm_config.model_config.max_model_len
    app = build_app(engine, Settings(model_name=names[0], max_model_len=max_len, api_key=args.api_key,
                                     max_pending=args.max_pending, cors_origins=args.allowed_origins))
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.uvicorn_log_level,
                            timeout_graceful_shutdown=args.graceful_shutdown_s, access_log=False)
    try:
        uvicorn.Server(config).run()
    finally:
        engine.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
