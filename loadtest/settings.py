"""The locustfile's options resolved into one ``Settings`` and a ``RequestFactory``.

No Locust import here (importing Locust monkey-patches the process with gevent), so the tests build
requests exactly as a Locust user does and compare them with what ``sambay-bench`` sends.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sambay_client.workload import (
    STYLES,
    BenchmarkTokenPrompts,
    EndpointStyle,
    PromptBuilder,
    RequestFactory,
    Workload,
    resolve,
)

# Taken at import, before --processes forks, so that every worker agrees on the default directory.
STAMP = time.strftime("%Y%m%d-%H%M%S")


@dataclass(frozen=True)
class Settings:
    style: EndpointStyle
    endpoint: str
    models_path: str
    api_key: str
    model: str
    workload: Workload
    prompts: PromptBuilder | None  # None: generated words, or the prompts file
    think_time: float
    think_jitter: float
    timeout_s: float
    run_dir: Path
    seed: int | None


def _opt(opts: Any, name: str, kind=None):
    """Options edited in the web UI may arrive as strings; '' means unset."""
    value = getattr(opts, name, None)
    if value is None or value == "":
        return None
    if kind is bool and isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return kind(value) if kind else value


def load_settings(opts: Any) -> Settings:
    """Resolved once per test and process, so the request loop only reads attributes."""
    api = _opt(opts, "api") or "chat"
    if api not in STYLES:
        raise ValueError(f"--api {api!r}: known are {', '.join(STYLES)}")
    style = STYLES[api]
    endpoint = "/" + (_opt(opts, "endpoint") or style.path).lstrip("/")
    extra = _opt(opts, "extra_body")
    wl = resolve(
        _opt(opts, "workload"),
        prompt_tokens=_opt(opts, "prompt_tokens", int),
        output_tokens=_opt(opts, "output_tokens", int),
        prompt_jitter=_opt(opts, "prompt_jitter", float),
        output_jitter=_opt(opts, "output_jitter", float),
        ignore_eos=_opt(opts, "ignore_eos", bool),
        temperature=_opt(opts, "temperature", float),
        top_p=_opt(opts, "top_p", float),
        prompts_file=_opt(opts, "prompts_file"),
        extra_body=json.loads(extra) if extra else None,
    )
    vocab = _opt(opts, "benchmark_vocab", int)
    if vocab is not None and wl.prompts_file:
        raise ValueError("give --benchmark-vocab or --prompts-file, not both")
    run_dir = _opt(opts, "run_dir")
    if run_dir is None:
        csv_prefix = _opt(opts, "csv_prefix")
        run_dir = Path(csv_prefix).parent if csv_prefix else Path("loadtest-runs") / STAMP
    return Settings(
        style=style,
        endpoint=endpoint,
        models_path=style.models_path(endpoint),
        api_key=_opt(opts, "api_key") or "",
        model=_opt(opts, "model") or "",
        workload=wl,
        prompts=BenchmarkTokenPrompts(vocab) if vocab is not None else None,
        think_time=_opt(opts, "think_time", float) or 0.0,
        think_jitter=_opt(opts, "think_jitter", float) or 0.0,
        timeout_s=_opt(opts, "request_timeout", float) or 600.0,
        run_dir=Path(run_dir),
        seed=_opt(opts, "seed", int),
    )


def request_factory(settings: Settings, model: str) -> RequestFactory:
    """What every Locust user sends: the one workload definition with this run's settings."""
    return RequestFactory(settings.workload, model, style=settings.style, prompts=settings.prompts)
