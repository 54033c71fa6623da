"""Locust user: streamed chat completions (or completions) against any OpenAI-compatible server.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --headless -u 16 -r 4 -t 5m \
        --workload paper --csv runs/x/locust --csv-full-history --html runs/x/locust.html

Besides Locust's own entry for the request (``POST <endpoint>``: response time = end-to-end
latency, "size" = output tokens from the server's usage), every request fires custom entries
that the web UI, CSV and HTML report show like any request: ``TTFT``, ``TFAT`` (time to the first
answer token, after the reasoning), ``TPOT``, and one ``ITL`` per gap between output chunks.
Failures are keyed by HTTP status. Each process also appends one JSON line per request to
``<run dir>/requests-<pid>.jsonl`` for ``python -m loadtest.report``. See loadtest/README.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

# `locust -f loadtest/locustfile.py` puts loadtest/ on sys.path, not the directory holding the package.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from locust import User, events, task  # noqa: E402
from locust.exception import StopUser  # noqa: E402
from locust.runners import WorkerRunner  # noqa: E402

from loadtest.settings import Settings, load_settings, request_factory  # noqa: E402
from loadtest.stream_client import Endpoint  # noqa: E402
from sambay_client.sse import RequestResult  # noqa: E402
from sambay_client.workload import BENCHMARK_FIRST_ID, PRESETS, STYLES, Workload, benchmark_token  # noqa: E402

log = logging.getLogger("loadtest")


def presets_help() -> str:
    """Every preset as the workload module describes it: the help cannot drift from the numbers."""
    return "; ".join(f"{name} = {wl.describe()}" for name, wl in PRESETS.items()).replace("%", "%%")


@events.init_command_line_parser.add_listener
def add_arguments(parser) -> None:
    # On the parser itself: only its add_argument knows Locust's web-UI options (is_secret).
    g = parser
    g.add_argument(
        "--api-key",
        env_var="LOADTEST_API_KEY",
        default=os.environ.get("OPENAI_API_KEY", ""),
        is_secret=True,
        help="sent as 'Authorization: Bearer KEY' (default: $OPENAI_API_KEY)",
    )
    g.add_argument(
        "--model",
        env_var="LOADTEST_MODEL",
        default="",
        help="model name to request (default: the first one GET /v1/models lists)",
    )
    g.add_argument(
        "--api",
        env_var="LOADTEST_API",
        choices=sorted(STYLES),
        default="chat",
        help="endpoint style: chat (messages) or completions (prompt); default chat",
    )
    g.add_argument(
        "--endpoint",
        env_var="LOADTEST_ENDPOINT",
        default="",
        help="path under --host (default: " + ", ".join(f"{s.path} for {n}" for n, s in STYLES.items()) + "); "
        "/v1/models is looked up beside it",
    )
    g.add_argument(
        "--workload",
        env_var="LOADTEST_WORKLOAD",
        choices=sorted(PRESETS),
        default=None,
        help="named shape; explicit length/jitter/sampling options override it. " + presets_help(),
    )
    g.add_argument(
        "--prompt-tokens",
        env_var="LOADTEST_PROMPT_TOKENS",
        type=int,
        default=None,
        help="prompt length in tokens, as words (about one token each; exact with --benchmark-vocab; "
        f"default {Workload.prompt_tokens})",
    )
    g.add_argument(
        "--output-tokens",
        env_var="LOADTEST_OUTPUT_TOKENS",
        type=int,
        default=None,
        help=f"max_tokens per request (default {Workload.output_tokens})",
    )
    g.add_argument(
        "--prompt-jitter",
        env_var="LOADTEST_PROMPT_JITTER",
        type=float,
        default=None,
        help="std of the prompt length as a fraction of its mean (Gaussian, as the paper; default 0)",
    )
    g.add_argument(
        "--output-jitter",
        env_var="LOADTEST_OUTPUT_JITTER",
        type=float,
        default=None,
        help="std of max_tokens as a fraction of its mean (Gaussian, as the paper; default 0)",
    )
    g.add_argument(
        "--ignore-eos",
        env_var="LOADTEST_IGNORE_EOS",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="send ignore_eos (vLLM extension) so every request decodes max_tokens",
    )
    g.add_argument("--temperature", env_var="LOADTEST_TEMPERATURE", type=float, default=None)
    g.add_argument("--top-p", env_var="LOADTEST_TOP_P", type=float, default=None)
    g.add_argument(
        "--benchmark-vocab",
        env_var="LOADTEST_BENCHMARK_VOCAB",
        type=int,
        default=None,
        metavar="VOCAB_SIZE",
        help=f"prompts in sambay-bench's benchmark tokenizer (one word {benchmark_token(BENCHMARK_FIRST_ID)}.. per "
        "token, ids below VOCAB_SIZE): exactly --prompt-tokens long against a model directory sambay-bench wrote",
    )
    g.add_argument(
        "--prompts-file",
        env_var="LOADTEST_PROMPTS_FILE",
        default=None,
        help='JSONL of {"prompt": ...} or {"messages": [...]} (+ optional "max_tokens") instead of generated prompts',
    )
    g.add_argument(
        "--extra-body",
        env_var="LOADTEST_EXTRA_BODY",
        default="",
        help="JSON object merged into every request body, e.g. '{\"presence_penalty\": 0.5}'",
    )
    g.add_argument(
        "--think-time",
        env_var="LOADTEST_THINK_TIME",
        type=float,
        default=0.0,
        help="seconds a user waits between requests (default 0: closed loop)",
    )
    g.add_argument(
        "--think-jitter",
        env_var="LOADTEST_THINK_JITTER",
        type=float,
        default=0.0,
        help="+-fraction of uniform jitter on --think-time",
    )
    g.add_argument(
        "--request-timeout",
        env_var="LOADTEST_REQUEST_TIMEOUT",
        type=float,
        default=600.0,
        help="seconds of silence on a connection before the request fails",
    )
    g.add_argument(
        "--run-dir",
        env_var="LOADTEST_RUN_DIR",
        default=None,
        help="where requests-<pid>.jsonl go (default: the --csv prefix's directory, else loadtest-runs/<time>)",
    )
    g.add_argument(
        "--seed",
        env_var="LOADTEST_SEED",
        type=int,
        default=None,
        help="reproducible prompts (each user still gets its own stream)",
    )


class _Process:
    """Per-process state: settings (re-read at each test start, the web UI may have changed
    them), the discovered model, and this process's own JSONL file (opened after any fork)."""

    settings: Settings | None = None
    model: str | None = None
    file = None
    users = itertools.count()

    @classmethod
    def get(cls, environment) -> Settings:
        if cls.settings is None:
            cls.settings = load_settings(environment.parsed_options)
        return cls.settings

    @classmethod
    def record(cls, rec: dict) -> None:
        if cls.file is None:
            run_dir = cls.settings.run_dir
            run_dir.mkdir(parents=True, exist_ok=True)
            cls.file = open(run_dir / f"requests-{os.getpid()}.jsonl", "a", buffering=1, encoding="utf-8")
        cls.file.write(json.dumps(rec, separators=(",", ":")) + "\n")


@events.test_start.add_listener
def _on_test_start(environment, **_kw) -> None:
    _Process.settings, _Process.model, _Process.users = None, None, itertools.count()
    s = _Process.get(environment)
    if isinstance(environment.runner, WorkerRunner):
        return
    opts = environment.parsed_options
    s.run_dir.mkdir(parents=True, exist_ok=True)
    for old in s.run_dir.glob("requests-*.jsonl"):  # a run directory holds one run, as Locust's CSVs do
        old.unlink()
    # Workers lose --csv and get the master's custom options with each spawn message (fired after
    # this event), so pinning the resolved directory here puts every worker's file beside the CSVs.
    opts.run_dir = str(s.run_dir.resolve())
    config = {
        "host": environment.host,
        "api": s.style.name,
        "endpoint": s.endpoint,
        "model": s.model or None,
        "workload": s.workload.to_dict(),
        "users": getattr(opts, "num_users", None),
        "spawn_rate": getattr(opts, "spawn_rate", None),
        "run_time": getattr(opts, "run_time", None),
        "processes": getattr(opts, "processes", None),
        "think_time": s.think_time,
        "started": time.time(),
        "argv": _redacted(sys.argv[1:]),
    }
    (s.run_dir / "loadtest_config.json").write_text(json.dumps(config, indent=1, default=str))
    log.info("loadtest: writing per-request records under %s", s.run_dir)


def _redacted(argv: list[str]) -> list[str]:
    out, hide = [], False
    for arg in argv:
        out.append("***" if hide else ("--api-key=***" if arg.startswith("--api-key=") else arg))
        hide = arg == "--api-key"
    return out


@events.test_stop.add_listener
def _on_test_stop(environment, **_kw) -> None:
    if _Process.file is not None:
        _Process.file.close()
        _Process.file = None


class LoadtestFailure(Exception):
    """Shown by Locust as its bare message, so failures group as 'HTTP 429 ...', not as repr()."""

    def __repr__(self) -> str:
        return str(self)


class ChatUser(User):
    """One closed-loop client: send, read the whole stream, think, repeat."""

    def wait_time(self) -> float:
        s = _Process.get(self.environment)
        if not s.think_time:
            return 0.0
        return s.think_time * self.rng.uniform(1 - s.think_jitter, 1 + s.think_jitter)

    def on_start(self) -> None:
        s = _Process.get(self.environment)
        # Seeded streams differ per worker and per user but repeat from run to run (pids would not).
        stream = f"{s.seed}-{getattr(self.environment.runner, 'worker_index', 0)}-{next(_Process.users)}"
        self.rng = random.Random(stream) if s.seed is not None else random.Random()
        self.endpoint = Endpoint(self.host, s.api_key, s.timeout_s)
        if not s.model and _Process.model is None:
            t0 = time.time()
            try:
                _Process.model = self.endpoint.first_model(s.models_path)
                log.info("loadtest: model %r (from %s)", _Process.model, s.models_path)
            except Exception as exc:
                self.environment.events.request.fire(
                    request_type="GET",
                    name=s.models_path,
                    response_time=(time.time() - t0) * 1e3,
                    response_length=0,
                    exception=LoadtestFailure(f"model lookup failed: {exc}"),
                    context={},
                )
                raise StopUser() from exc
        self.factory = request_factory(s, s.model or _Process.model)

    def on_stop(self) -> None:
        endpoint = getattr(self, "endpoint", None)
        if endpoint is not None:
            endpoint.close()

    @task
    def chat(self) -> None:
        s = _Process.get(self.environment)
        body = self.factory.body(self.rng)
        start = time.time()
        result = self.endpoint.stream(s.endpoint, body)
        self._report(s.endpoint, result, start)
        _Process.record(
            {
                "start": start,
                "pid": os.getpid(),
                "max_tokens": body["max_tokens"],
                "ignore_eos": bool(body.get("ignore_eos")),
                **result.to_dict(),
            }
        )

    def _report(self, name: str, r: RequestResult, start: float) -> None:
        fire = self.environment.events.request.fire
        fire(
            request_type="POST",
            name=name,
            response_time=r.e2e_ms if r.e2e_ms is not None else r.total_ms,
            response_length=r.output_tokens or 0,
            exception=None if r.ok else LoadtestFailure(r.error),
            context={},
            start_time=start,
        )
        if not r.ok:
            return
        for kind, value in (("TTFT", r.ttft_ms), ("TFAT", r.tfat_ms), ("TPOT", r.tpot_ms)):
            if value is not None:
                fire(request_type=kind, name=name, response_time=value, response_length=0, exception=None, context={})
        for gap in r.itl_ms:
            fire(request_type="ITL", name=name, response_time=gap, response_length=0, exception=None, context={})
