"""``sambay-bench``: SambaY against the dense Phi-4-mini on the same machine and vLLM.

``sambay-bench run [--modes NAME,...] [--size full|tiny] [--out DIR] ...`` writes
``DIR/bench.json`` (every number, the environment and the exact command), ``DIR/bench.log`` (the
raw log: this process and the engine workers, line by line), ``DIR/logs/server-*.log``,
``DIR/summary.md`` and one PNG per mode. ``sambay-bench report DIR`` prints the tables and redraws
the plots from ``bench.json``; ``sambay-bench schema`` prints its JSON schema. ``--size tiny`` runs
the same code on tiny configs in seconds (CI). The modes, their flags and their report sections
come from the registry in ``sambay_bench.modes``; this module runs them: offline modes in one
engine worker per model, server modes against one server per model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .mode import OFFLINE, SERVER, Mode, Option, ServerRun
from .models import MODELS, QUANTIZATIONS, SIZES, write_model
from .modes import MODES
from .results import Results, parse_event

# Settings of every mode; each mode's own flags and their defaults per size are in its registry entry.
SIZE_SETTINGS: dict[str, dict[str, Any]] = {"full": {"max_model_len": 65536}, "tiny": {"max_model_len": 2048}}


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


def option_help(opt: Option) -> str:
    """The option's help with its defaults per size, as the registry holds them."""

    def shown(v: Any) -> str:
        return ",".join(map(str, v)) if isinstance(v, list) else str(v)

    defaults = f"default {shown(opt.full)}, --size tiny {shown(opt.tiny)}" if opt.full is not None else ""
    return "; ".join(p for p in (opt.help, defaults) if p).replace("%", "%%")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sambay-bench", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="measure and write DIR/bench.json, bench.log, summary.md and PNGs")
    run.add_argument("--out", type=Path, help="run directory (default bench-runs/<time>)")
    run.add_argument(
        "--modes", type=name_list(tuple(MODES)), default=list(MODES), help="comma list of " + ",".join(MODES)
    )
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
    for mode in MODES.values():
        group = run.add_argument_group(f"{mode.name}: {mode.title}")
        for opt in mode.options:
            group.add_argument(opt.flag, dest=opt.name, type=opt.type, help=option_help(opt))
    rep = sub.add_parser("report", help="tables and plots again from RUN_DIR/bench.json")
    rep.add_argument("run_dir", type=Path)
    rep.add_argument("--no-plots", action="store_true")
    sub.add_parser("schema", help="print the JSON schema of bench.json")
    return ap


def resolve(args: argparse.Namespace, has_gpu: bool) -> dict[str, Any]:
    """Explicit flags beat the size's defaults; each mode then refuses what does not fit."""
    s = dict(SIZE_SETTINGS[args.size])
    for key in s:
        if getattr(args, key, None) is not None:
            s[key] = getattr(args, key)
    for mode in MODES.values():
        for opt in mode.options:
            value = getattr(args, opt.name)
            s[opt.name] = value if value is not None else opt.default(args.size)
    s["dtype"] = args.dtype or ("bfloat16" if has_gpu else "float32")
    s["enforce_eager"] = (not has_gpu) if args.enforce_eager is None else args.enforce_eager
    for key in ("modes", "models", "size", "gpu_memory_utilization", "time_budget_s", "startup_timeout_s", "hbm_tbps"):
        s[key] = getattr(args, key)
    s["quantization"] = args.quantization
    if args.quantization and s["models"] != ["sambay"]:
        raise SystemExit("sambay-bench: --quantization applies to SambaY only; add --models sambay")
    s["engine_args"] = [{"model": m, "key": k, "value": v} for m, k, v in args.engine_arg]
    for mode in MODES.values():
        mode.check(s)
    return s


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

    def selected(self, runs_in: str) -> list[Mode]:
        """The modes this run asked for that run in ``runs_in``, in the registry's order."""
        return [m for name, m in MODES.items() if name in self.s["modes"] and m.runs_in == runs_in]

    # -- offline modes, one worker process per model --------------------------------------------
    def offline_spec(self, model: str, model_dir: Path, vocab_size: int) -> dict[str, Any] | None:
        """What the model's engine worker runs: its engine arguments and each offline mode's
        keyword arguments; None when this run has no offline mode."""
        s = self.s
        selected = self.selected(OFFLINE)
        if not selected:
            return None
        budget = s["time_budget_s"] if s["time_budget_s"] is not None else math.inf
        engine = engine_settings(s, model, model_dir)
        for mode in selected:
            for key, value in mode.engine_args(s).items():
                engine.setdefault(key, value)  # what the user set wins
        common = {"max_model_len": s["max_model_len"], "budget_s": budget}
        return {
            "model": model,
            "size": s["size"],
            "engine": engine,
            "modes": {m.name: {**m.params(s), **common} for m in selected},
            "vocab_size": vocab_size,
            "dtype_bytes": dtype_bytes(s["dtype"]),
            "hbm_tbps": s["hbm_tbps"],
        }

    def offline(self, model: str, model_dir: Path, vocab_size: int) -> None:
        from tqdm import tqdm

        s = self.s
        spec = self.offline_spec(model, model_dir, vocab_size)
        if spec is None:
            return
        spec_path = self.out / "logs" / f"offline-{model}.json"
        spec_path.write_text(json.dumps(spec, indent=2, default=str))
        self.results.doc["models"][model]["offline_engine"] = spec["engine"]
        budget = s["time_budget_s"] if s["time_budget_s"] is not None else math.inf
        hard_limit = s["startup_timeout_s"] + len(spec["modes"]) * budget + 300
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
            self.log.say(f"[{model}] {ev['mode']}: {MODES[ev['mode']].brief(ev['point'])}")
        elif kind == "skip":
            self.results.add_skip(ev["mode"], {**ev["point"], "reason": ev["reason"]})
            self.log.say(f"[{model}] {ev['mode']}: skipped {ev['point']}: {ev['reason']}")

    # -- server modes, one server per model -----------------------------------------------------
    def server(self, model: str, model_dir: Path, vocab_size: int) -> None:
        from .server import ServerError, ServerProcess

        s = self.s
        selected = self.selected(SERVER)
        if not selected:
            return
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
            for mode in selected:
                mode.run(ServerRun(s, model, vocab_size, srv.base_url, self.out, self.results, self.log))
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
            self.offline(model, model_dir, cfg["vocab_size"])
            self.server(model, model_dir, cfg["vocab_size"])
        return self.finish()

    def finish(self) -> int:
        """Tables and plots; exit status 1 when a model failed (its errors are in the JSON)."""
        from .report import render

        self.results.save(finished=True)
        for line in render(self.results.doc, self.out).splitlines():
            self.log.say(line)
        self.log.say(f"results: {self.out / 'bench.json'}")
        return 1 if any(m.get("errors") for m in self.results.doc["models"].values()) else 0


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
    if args.command == "schema":
        from .schema import schema

        print(json.dumps(schema(), indent=2))
        return 0
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
