"""``sambay-bench``: SambaY against the dense Phi-4-mini on the same machine and vLLM.

``sambay-bench run [--modes serve,decode,genlen,ttft] [--size full|tiny] [--out DIR] ...`` writes
``DIR/bench.json`` (every number, the environment and the exact command), ``DIR/bench.log`` (the
raw log: this process and the engine workers, line by line), ``DIR/logs/server-*.log``,
``DIR/summary.md`` and one PNG per mode. ``sambay-bench report DIR`` prints the tables and redraws
the plots from ``bench.json``. ``--size tiny`` runs the same code on tiny configs in seconds (CI).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sambay_client.workload import PAPER as PAPER_WORKLOAD
from sambay_client.workload import PAPER_CONCURRENCY, PAPER_WARMUP_PER_CLIENT

from .models import MODELS, QUANTIZATIONS, SIZES, write_model
from .results import Results, parse_event

MODES = ("serve", "decode", "genlen", "ttft")
OFFLINE_MODES = ("decode", "genlen", "ttft")

# The paper's client (shared/design/benchmark.md section 7), from the one workload definition that
# the load tests share; what a run changes is listed in its JSON.
PAPER = {
    "size": "full",
    "concurrency": list(PAPER_CONCURRENCY),
    "prompt_len": PAPER_WORKLOAD.prompt_tokens,
    "output_len": PAPER_WORKLOAD.output_tokens,
    "jitter": PAPER_WORKLOAD.prompt_jitter,
    "requests": "4C+32",
    "warmup_per_client": PAPER_WARMUP_PER_CLIENT,
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "full": {
        "concurrency": PAPER["concurrency"],
        "prompt_len": PAPER["prompt_len"],
        "output_len": PAPER["output_len"],
        "jitter": PAPER["jitter"],
        "warmup_per_client": PAPER_WARMUP_PER_CLIENT,
        "batches": [1, 16, 64, 256],
        "contexts": [2048, 8192, 16384, 32768],
        "decode_steps": 32,
        "decode_warmup_steps": 4,
        "gen_lens": [500, 1000, 2000, 4000, 8000, 16000, 32000],
        "genlen_prompt_len": 2000,
        "ttft_prompt_lens": [2048, 8192, 32768],
        "ttft_repeats": 3,
        "max_model_len": 65536,
    },
    "tiny": {
        "concurrency": [1, 2, 4],
        "prompt_len": 48,
        "output_len": 16,
        "jitter": 0.3,
        "warmup_per_client": 1,
        "batches": [1, 4, 16],
        "contexts": [64, 256],
        "decode_steps": 8,
        "decode_warmup_steps": 2,
        "gen_lens": [16, 32, 64, 128],
        "genlen_prompt_len": 48,
        "ttft_prompt_lens": [64, 256, 1024],
        "ttft_repeats": 2,
        "max_model_len": 2048,
    },
}


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def name_list(known: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        names = [v.strip() for v in text.split(",") if v.strip()]
        bad = [n for n in names if n not in known]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad) or 'empty list'}; known: {', '.join(known)}")
        return names

    return parse


def engine_arg(text: str) -> tuple[str | None, str, Any]:
    """``[MODEL:]KEY=VALUE``; VALUE is read as JSON when it parses (numbers, true, objects)."""
    head, sep, value = text.partition("=")
    scope, _, key = head.rpartition(":")  # a colon in VALUE (JSON) is not a model prefix
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected [MODEL:]KEY=VALUE, got {text!r}")
    if scope and scope not in MODELS:
        raise argparse.ArgumentTypeError(f"unknown model {scope!r} in {text!r}; known: {', '.join(MODELS)}")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return scope or None, key.replace("-", "_"), parsed


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sambay-bench", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="measure and write DIR/bench.json, bench.log, summary.md and PNGs")
    run.add_argument("--out", type=Path, help="run directory (default bench-runs/<time>)")
    run.add_argument("--modes", type=name_list(MODES), default=list(MODES), help="comma list of " + ",".join(MODES))
    run.add_argument("--models", type=name_list(MODELS), default=list(MODELS))
    run.add_argument("--size", choices=SIZES, default="full", help="full: the real configs; tiny: CI smoke sizes")
    run.add_argument("--dtype", default=None, help="default bfloat16 on a GPU, float32 on CPU")
    run.add_argument(
        "--quantization",
        choices=QUANTIZATIONS,
        help="SambaY as a compressed-tensors checkpoint of this scheme (what vllm_sambay.quantize writes)",
    )
    run.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    run.add_argument("--max-model-len", type=int)
    run.add_argument(
        "--time-budget-s",
        type=float,
        default=None,
        help="per mode and model, start-up excluded; points that would not fit are skipped and listed",
    )
    run.add_argument("--startup-timeout-s", type=float, default=1200)
    run.add_argument("--hbm-tbps", type=float, help="HBM bandwidth for the roofline (default: from the GPU name)")
    run.add_argument(
        "--enforce-eager",
        action="store_true",
        default=None,
        help="no CUDA graphs / torch.compile (default: only on CPU)",
    )
    run.add_argument(
        "--engine-arg",
        type=engine_arg,
        action="append",
        default=[],
        metavar="[MODEL:]KEY=VALUE",
        help="extra vLLM engine argument, for both models or one, e.g. dense:num_gpu_blocks_override=64",
    )
    g = run.add_argument_group("serve (paper method)")
    g.add_argument("--concurrency", type=int_list)
    g.add_argument("--prompt-len", type=int)
    g.add_argument("--output-len", type=int)
    g.add_argument("--jitter", type=float, help="std of the lengths as a fraction of the mean (paper 0.3)")
    g.add_argument("--requests", type=int, help="measured requests per level (paper: 4C+32)")
    g.add_argument("--requests-per-client", type=int, help="measured requests per level = this x C")
    g.add_argument("--warmup-per-client", type=int)
    g = run.add_argument_group("decode sweep")
    g.add_argument("--batches", type=int_list)
    g.add_argument("--contexts", type=int_list)
    g.add_argument("--decode-steps", type=int)
    g.add_argument("--decode-warmup-steps", type=int)
    g = run.add_argument_group("latency vs generation length")
    g.add_argument("--gen-lens", type=int_list)
    g.add_argument("--genlen-prompt-len", type=int)
    g = run.add_argument_group("TTFT")
    g.add_argument("--ttft-prompt-lens", type=int_list)
    g.add_argument("--ttft-repeats", type=int)
    rep = sub.add_parser("report", help="tables and plots again from RUN_DIR/bench.json")
    rep.add_argument("run_dir", type=Path)
    rep.add_argument("--no-plots", action="store_true")
    return ap


def resolve(args: argparse.Namespace, has_gpu: bool) -> dict[str, Any]:
    """Explicit flags beat the size's defaults."""
    s = dict(DEFAULTS[args.size])
    for key in s:
        value = getattr(args, key, None)
        if value is not None:
            s[key] = value
    if args.requests is not None and args.requests_per_client is not None:
        raise SystemExit("sambay-bench: give --requests or --requests-per-client, not both")
    for key in ("requests", "requests_per_client"):
        value = getattr(args, key)
        if value is not None and value < 1:
            raise SystemExit(f"sambay-bench: --{key.replace('_', '-')} must be at least 1")
        s[key] = value  # both None: the paper's 4C + 32
    s["dtype"] = args.dtype or ("bfloat16" if has_gpu else "float32")
    s["enforce_eager"] = (not has_gpu) if args.enforce_eager is None else args.enforce_eager
    for key in ("modes", "models", "size", "gpu_memory_utilization", "time_budget_s", "startup_timeout_s", "hbm_tbps"):
        s[key] = getattr(args, key)
    s["quantization"] = args.quantization
    if args.quantization and s["models"] != ["sambay"]:
        raise SystemExit("sambay-bench: --quantization applies to SambaY only; add --models sambay")
    s["engine_args"] = [{"model": m, "key": k, "value": v} for m, k, v in args.engine_arg]
    if s["jitter"] < 0 or s["jitter"] >= 1:
        raise SystemExit("sambay-bench: --jitter must be in [0, 1)")
    if s["prompt_len"] + 1 > s["max_model_len"]:
        raise SystemExit(
            f"sambay-bench: --prompt-len {s['prompt_len']} does not fit --max-model-len {s['max_model_len']}"
        )
    return s


def paper_differences(s: dict[str, Any]) -> dict[str, Any]:
    per_client = f"{s['requests_per_client']}C" if s.get("requests_per_client") else None
    ran = {**{k: s[k] for k in PAPER if k in s}, "requests": s["requests"] or per_client or "4C+32"}
    return {k: {"paper": PAPER[k], "ran": ran[k]} for k in PAPER if ran[k] != PAPER[k]}


def engine_settings(s: dict[str, Any], model: str, model_dir: Path) -> dict[str, Any]:
    engine = {
        "model": str(model_dir),
        "load_format": "dummy",
        "dtype": s["dtype"],
        "max_model_len": s["max_model_len"],
        "gpu_memory_utilization": s["gpu_memory_utilization"],
        "enable_prefix_caching": False,
        "seed": 0,
    }
    if s["enforce_eager"]:
        engine["enforce_eager"] = True
    for extra in s["engine_args"]:
        if extra["model"] in (None, model):
            engine[extra["key"]] = extra["value"]
    return engine


def dtype_bytes(dtype: str) -> int:
    return 4 if dtype in ("float32", "float") else 2


def server_flags(engine: dict[str, Any]) -> list[str]:
    flags = []
    for key, value in engine.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + flag[2:])
        else:
            flags += [flag, json.dumps(value) if isinstance(value, dict | list) else str(value)]
    return flags


class RawLog:
    """bench.log: every line this run produced, in order, with the time it was seen."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (kept open for the run)
        self.lock = threading.Lock()

    def write(self, source: str, line: str) -> None:
        with self.lock:
            self.file.write(f"{time.strftime('%H:%M:%S')} [{source}] {line.rstrip()}\n")

    def say(self, line: str) -> None:
        """A line for the person running the benchmark, too."""
        self.write("bench", line)
        from tqdm import tqdm

        tqdm.write(line)


class Bench:
    def __init__(self, settings: dict[str, Any], out: Path) -> None:
        self.s, self.out = settings, out
        (out / "logs").mkdir(parents=True, exist_ok=True)
        self.results = Results(out / "bench.json", settings)
        self.log = RawLog(out / "bench.log")

    # -- offline modes, one worker process per model --------------------------------------------
    def offline(self, model: str, model_dir: Path, vocab_size: int) -> None:
        from tqdm import tqdm

        s = self.s
        budget = s["time_budget_s"] if s["time_budget_s"] is not None else math.inf
        modes: dict[str, dict[str, Any]] = {}
        if "decode" in s["modes"]:
            modes["decode"] = {
                "batches": s["batches"],
                "contexts": s["contexts"],
                "steps": s["decode_steps"],
                "warmup_steps": s["decode_warmup_steps"],
                "max_model_len": s["max_model_len"],
                "budget_s": budget,
            }
        if "genlen" in s["modes"]:
            modes["genlen"] = {
                "prompt_len": s["genlen_prompt_len"],
                "gen_lens": s["gen_lens"],
                "max_model_len": s["max_model_len"],
                "budget_s": budget,
            }
        if "ttft" in s["modes"]:
            modes["ttft"] = {
                "prompt_lens": s["ttft_prompt_lens"],
                "repeats": s["ttft_repeats"],
                "max_model_len": s["max_model_len"],
                "budget_s": budget,
            }
        if not modes:
            return
        engine = engine_settings(s, model, model_dir)
        if "decode" in modes:
            engine.setdefault("max_num_seqs", max(s["batches"]))
        spec = {
            "model": model,
            "size": s["size"],
            "engine": engine,
            "modes": modes,
            "vocab_size": vocab_size,
            "dtype_bytes": dtype_bytes(s["dtype"]),
            "hbm_tbps": s["hbm_tbps"],
        }
        spec_path = self.out / "logs" / f"offline-{model}.json"
        spec_path.write_text(json.dumps(spec, indent=2, default=str))
        self.results.doc["models"][model]["offline_engine"] = engine
        hard_limit = s["startup_timeout_s"] + len(modes) * budget + 300
        cmd = [sys.executable, "-m", "sambay_bench.offline", str(spec_path)]
        self.log.say(f"[{model}] offline engine: {' '.join(cmd)}")
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=worker_env()
        )
        killer = threading.Timer(hard_limit, proc.kill) if math.isfinite(hard_limit) else None
        if killer:
            killer.start()
        bars: dict[str, tqdm] = {}
        last_error = None
        try:
            for line in proc.stdout:
                self.log.write(f"offline-{model}", line)
                if "Error:" in line:
                    last_error = line.strip()[-400:]
                ev = parse_event(line)
                if ev is not None:
                    self.on_event(model, ev, bars)
        finally:
            rc = proc.wait()
            if killer:
                killer.cancel()
            for bar in bars.values():
                bar.close()
        if rc != 0:
            reason = f"offline worker exited with {rc}" + (" (killed at the hard time limit)" if rc == -9 else "")
            reason += f": {last_error}" if last_error else ""
            self.results.doc["models"][model].setdefault("errors", []).append(reason)
            self.results.save()
            self.log.say(f"[{model}] {reason}; see bench.log")

    def on_event(self, model: str, ev: dict[str, Any], bars: dict) -> None:
        from tqdm import tqdm

        kind = ev["event"]
        if kind == "environment":
            self.results.doc["environment"] = ev["environment"]
            self.results.doc["models"][model]["environment"] = ev["environment"]
            self.results.save()
        elif kind == "engine":
            self.results.doc["models"][model]["offline_engine_start_s"] = ev["start_s"]
            self.log.say(f"[{model}] engine ready in {ev['start_s']:.1f} s")
        elif kind == "progress":
            bar = bars.get(ev["mode"])
            if bar is None:
                bar = bars[ev["mode"]] = tqdm(
                    total=ev["total"], desc=f"{model} {ev['mode']}", unit="", leave=False, disable=None
                )
            bar.n = ev["n"]
            bar.set_postfix_str(ev.get("desc", ""), refresh=True)
        elif kind == "point":
            self.results.add_point(ev["mode"], ev["point"])
            self.log.say(f"[{model}] {ev['mode']}: {brief(ev['mode'], ev['point'])}")
        elif kind == "skip":
            self.results.add_skip(ev["mode"], {**ev["point"], "reason": ev["reason"]})
            self.log.say(f"[{model}] {ev['mode']}: skipped {ev['point']}: {ev['reason']}")

    # -- mode 1, through the server ------------------------------------------------------------
    def serve(self, model: str, model_dir: Path, vocab_size: int) -> None:
        from tqdm import tqdm

        from sambay_client.workload import paper_requests

        from .serve import closed_loop, level_point
        from .server import ServerError, ServerProcess

        s = self.s
        engine = engine_settings(s, model, model_dir)
        cmd = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            *server_flags(engine),
            "--served-model-name",
            model,
        ]
        log_path = self.out / "logs" / f"server-{model}.log"
        self.log.say(f"[{model}] server: {' '.join(cmd)} (log {log_path.relative_to(self.out)})")
        info = self.results.doc["models"][model]
        info["server"] = {"command": cmd, "log": str(log_path.relative_to(self.out))}
        mode = self.results.mode("serve")
        mode.setdefault("paper_method", {"differences": paper_differences(s)})
        try:
            srv = ServerProcess(cmd, log_path, ready_timeout_s=s["startup_timeout_s"], env=worker_env(server=True))
            srv.start()
        except ServerError as exc:
            errors = [ln for ln in str(exc).splitlines() if "Error:" in ln]
            info.setdefault("errors", []).append(f"server did not start: {(errors or [str(exc)])[-1][-400:]}")
            self.results.save()
            self.log.say(f"[{model}] server did not start; see {log_path}")
            return
        try:
            info["server"]["ready_s"] = srv.ready_s
            self.log.say(f"[{model}] server ready in {srv.ready_s:.1f} s at {srv.base_url}")
            workload = dataclasses.replace(
                PAPER_WORKLOAD,
                prompt_tokens=s["prompt_len"],
                output_tokens=s["output_len"],
                prompt_jitter=s["jitter"],
                output_jitter=s["jitter"],
            )
            budget = s["time_budget_s"] if s["time_budget_s"] is not None else math.inf
            end = time.perf_counter() + budget
            levels = list(s["concurrency"])
            for i, c in enumerate(levels):
                planned = s["requests"] or (s["requests_per_client"] or 0) * c or paper_requests(c)
                level_deadline = time.perf_counter() + (end - time.perf_counter()) / (len(levels) - i)
                bar = tqdm(total=planned, desc=f"{model} serve C={c}", unit="req", leave=False, disable=None)
                run = asyncio.run(
                    closed_loop(
                        srv.base_url,
                        model,
                        c,
                        planned,
                        s["warmup_per_client"],
                        workload,
                        s["max_model_len"],
                        vocab_size,
                        level_deadline,
                        seed=c,
                        on_done=lambda _r, b=bar: b.update(),
                    )
                )
                bar.close()
                with open(self.out / "logs" / f"serve-{model}-c{c}.jsonl", "w") as f:
                    for rec in run["records"]:
                        f.write(json.dumps(rec) + "\n")
                point = level_point(model, c, run["records"], planned, run["cut_in_flight"])
                if not point["ok"]:
                    reason = (
                        "time budget ran out before a request completed"
                        if not point["failed"]
                        else f"every request failed: {point['errors']}"
                    )
                    self.results.add_skip("serve", {"model": model, "concurrency": c, "reason": reason})
                    self.log.say(f"[{model}] serve: C={c} skipped: {reason}")
                    continue
                if point["requests"] < planned:
                    mode["paper_method"].setdefault("cut_by_budget", []).append(
                        {
                            "model": model,
                            "concurrency": c,
                            "planned": planned,
                            "measured": point["requests"],
                            "cut_in_flight": point["cut_in_flight"],
                        }
                    )
                self.results.add_point("serve", point)
                self.log.say(f"[{model}] serve: {brief('serve', point)}")
        finally:
            srv.stop()

    def run(self) -> int:
        from .roofline import decode_bytes

        s = self.s
        self.log.say(f"sambay-bench: {' '.join(self.results.doc['command'])}")
        for model in s["models"]:
            model_dir = write_model(self.out / "models", model, s["size"], s["quantization"])
            cfg = json.loads((model_dir / "config.json").read_text())
            cost = decode_bytes(model, s["size"], dtype_bytes=dtype_bytes(s["dtype"]))
            self.results.doc["models"][model] = {
                "architecture": cfg["architectures"][0],
                "dir": str(model_dir.relative_to(self.out)),
                "decode_bytes": cost.to_dict(),
                "vocab_size": cfg["vocab_size"],
            }
            self.results.save()
            if any(m in s["modes"] for m in OFFLINE_MODES):
                self.offline(model, model_dir, cfg["vocab_size"])
            if "serve" in s["modes"]:
                self.serve(model, model_dir, cfg["vocab_size"])
        return self.finish()

    def finish(self) -> int:
        """Tables and plots; exit status 1 when a model failed (its errors are in the JSON)."""
        from .report import render

        self.results.save(finished=True)
        for line in render(self.results.doc, self.out).splitlines():
            self.log.say(line)
        self.log.say(f"results: {self.out / 'bench.json'}")
        return 1 if any(m.get("errors") for m in self.results.doc["models"].values()) else 0


def brief(mode: str, p: dict[str, Any]) -> str:
    if mode == "decode":
        roof = f", roofline {p['roofline_ms']:.2f} ms ({p['roofline_fraction']:.0%})" if p.get("roofline_ms") else ""
        lim = f" of {p['batch']} ({p['limited_by']})" if p.get("limited_by") else ""
        return (
            f"B={p['batch_running']}{lim} L={p['context']}: {p['ms_per_step']:.2f} ms/step, "
            f"{p['tok_s']:.0f} tok/s{roof}"
        )
    if mode == "genlen":
        return f"gen {p['gen_len']}: {p['latency_s']:.2f} s (TTFT {p['ttft_s'] * 1e3:.0f} ms)"
    if mode == "ttft":
        return f"prompt {p['prompt_len']}: TTFT {p['ttft_ms']:.1f} ms"
    ttft = (p.get("ttft_ms") or {}).get("mean")
    return (
        f"C={p['concurrency']}: {p['ok']}/{p['requests_planned']} ok, latency {p['mean_latency_s']:.2f} s, "
        f"{p['queries_per_s']:.3f} q/s, {p['output_tok_s']:.0f} tok/s, TTFT {ttft or float('nan'):.0f} ms"
    )


def worker_env(server: bool = False) -> dict[str, str]:
    env = {
        **os.environ,
        "VLLM_NO_USAGE_STATS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU builds; ignored on GPUs
    if server:
        env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    return env


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no usable torch means no GPU either
        return False


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "report":
        from .report import render

        doc = json.loads((args.run_dir / "bench.json").read_text())
        print(render(doc, args.run_dir, plots=not args.no_plots))
        return 0
    settings = resolve(args, has_cuda())
    out = args.out or Path("bench-runs") / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    return Bench(settings, out).run()


if __name__ == "__main__":
    raise SystemExit(main())
