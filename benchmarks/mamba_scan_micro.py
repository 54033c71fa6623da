"""CPU prefill of one Mamba-1 layer at the published width (d_inner 5120, d_state 16): the per-token
loop scan (``selective_scan_varlen_loop``, the readable definition) against the chunked scan the
model uses (``selective_scan_varlen``), the per-sequence conv against the batched one, and, on the
same tokens, the layer's largest matmul (in_proj, 2560 -> 2 * 5120) in float32 and bf16.

Two bounds put the scan's time in context, both measured in the same run:

* bytes: the scan must at least read x, dt, B, C (and z when gated) and write y, in float32; that
  many bytes over this machine's copy bandwidth (a large tensor copy, read + write counted);
* exp: it must evaluate T * D * N exponentials; that many over torch's in-cache float32 exp2 rate
  on this machine (the scan's actual exp, one thread count as the run).

Other processes share this machine's 2 cores and move single timings by 2-10x, so the times are
taken in one subprocess per T that builds the inputs once and calls every variant once per round,
in an order rotated each round, measuring the copy bandwidth and the exp2 rate in every round too;
each value reported is its minimum over the rounds (the least disturbed), medians and all samples
are in the JSON beside the 1-minute load average of every round. Peak memory is measured apart:
one fresh subprocess per variant and T, one cold call, "peak extra" = the kernel's RSS high-water
mark (``VmHWM``, reset through ``/proc/self/clear_refs`` once the inputs exist; a 1 ms RSS sampler
where that is refused) minus the RSS before the call; tracemalloc would not see torch's memory.
The loop at T = 8192 runs once and is left out (with the reason) when MemAvailable is too small.

python benchmarks/mamba_scan_micro.py --out benchmarks/results/cpu/mamba_scan_micro.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

HIDDEN, INNER, STATE, KERNEL = 2560, 5120, 16, 4
DT_RANK = 160


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class PeakMemory:
    """Peak RSS above the level at entry, for a block that runs torch ops (tracemalloc sees none)."""

    def __enter__(self) -> PeakMemory:
        self.base = _rss_bytes()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self.method = "VmHWM after clear_refs"
            self._stop = None
        except OSError:
            self.method = "RSS sampled every 1 ms"
            self._peak = self.base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        if self._stop is None:
            self.peak = _hwm_bytes()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._peak, _rss_bytes())
        self.extra = self.peak - self.base


def _scan_inputs(T: int, gated: bool, seqs: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    a_log = torch.log(torch.arange(1, STATE + 1, dtype=torch.float32)).repeat(INNER, 1)  # Mamba's S4D-real init
    lens = [T // seqs] * seqs
    lens[-1] += T - sum(lens)
    qsl = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()])
    return dict(
        x=torch.randn(T, INNER, generator=g),
        dt=torch.randn(T, INNER, generator=g) * 0.5 - 4.0,  # softplus(dt_proj init) ~ 0.001..0.1
        A=-torch.exp(a_log),
        B=torch.randn(T, STATE, generator=g),
        C=torch.randn(T, STATE, generator=g),
        D=torch.ones(INNER),
        z=torch.randn(T, INNER, generator=g) if gated else None,
        dt_bias=torch.zeros(INNER),
        ssm_state=torch.zeros(seqs, INNER, STATE),
        state_indices=torch.arange(seqs),
        has_initial_state=torch.zeros(seqs, dtype=torch.bool),
        query_start_loc=qsl,
    )


def _conv_inputs(T: int, seqs: int) -> dict[str, Any]:
    s = _scan_inputs(T, False, seqs)
    g = torch.Generator().manual_seed(1)
    return dict(
        x=s["x"],
        weight=torch.randn(INNER, KERNEL, generator=g) * 0.5,
        bias=torch.randn(INNER, generator=g) * 0.1,
        conv_state=torch.zeros(seqs, INNER, KERNEL - 1),
        state_indices=s["state_indices"],
        has_initial_state=s["has_initial_state"],
        query_start_loc=s["query_start_loc"],
    )


def _copy_rate() -> float:
    """Read + write bytes per second of one copy between two 256 MB float32 tensors."""
    a, c = torch.ones(64 * 1024 * 1024), torch.empty(64 * 1024 * 1024)
    c.copy_(a)
    t = time.perf_counter()
    c.copy_(a)
    return 2 * a.numel() * 4 / (time.perf_counter() - t)


def _exp2_rate() -> float:
    """torch.exp2 elements per second on one scan chunk ([16, 16, 5120] float32, in cache), best of 20."""
    x = -torch.rand(16, STATE, INNER)
    y = torch.empty_like(x)
    best = float("inf")
    for _ in range(20):
        t = time.perf_counter()
        torch.exp2(x, out=y)
        best = min(best, time.perf_counter() - t)
    return x.numel() / best


def _calls(spec: dict[str, Any]) -> dict[str, Any]:
    """The variants of one timing or memory spec, as argument-free callables on shared inputs."""
    from vllm_sambay.ops import mamba_torch as ops

    T, seqs = spec["T"], spec.get("seqs", 1)
    kinds = spec["variants"]
    calls: dict[str, Any] = {}
    scan_g = _scan_inputs(T, True, seqs) if any(k.startswith("scan") for k in kinds) else None
    conv = _conv_inputs(T, seqs) if any(k.startswith("conv") for k in kinds) else None
    h = None
    for kind in kinds:
        if kind == "scan_loop":
            calls[kind] = lambda: ops.selective_scan_varlen_loop(**scan_g)
        elif kind == "scan_chunked":
            calls[kind] = lambda: ops.selective_scan_varlen(**scan_g)
        elif kind == "scan_chunked_ungated":
            calls[kind] = lambda: ops.selective_scan_varlen(**{**scan_g, "z": None})
        elif kind.startswith("scan_chunked@"):
            chunk = int(kind.split("@")[1])

            def call(chunk: int = chunk) -> None:
                saved, ops.SCAN_CHUNK_TOKENS = ops.SCAN_CHUNK_TOKENS, chunk
                try:
                    ops.selective_scan_varlen(**scan_g)
                finally:
                    ops.SCAN_CHUNK_TOKENS = saved

            calls[kind] = call
        elif kind == "conv_loop":
            calls[kind] = lambda: ops.causal_conv1d_varlen_loop(**conv)
        elif kind == "conv_batched":
            calls[kind] = lambda: ops.causal_conv1d_varlen(**conv)
        elif kind.startswith("in_proj_"):
            dtype = getattr(torch, kind.removeprefix("in_proj_"))
            if h is None:
                g = torch.Generator().manual_seed(2)
                h = torch.randn(T, HIDDEN, generator=g)
                w = torch.randn(2 * INNER, HIDDEN, generator=g) * 0.02
            hd, wd = h.to(dtype), w.to(dtype)
            calls[kind] = lambda hd=hd, wd=wd: torch.nn.functional.linear(hd, wd)
        else:
            raise ValueError(kind)
    return calls


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs one spec in this (fresh) process. ``memory``: the peak extra RSS and time of one cold
    call of one variant. ``timing``: all variants of one T on the same inputs, one call of each
    per round, the order rotated every round, with the copy bandwidth and the exp2 rate measured
    in every round as well; the minimum over rounds is the least disturbed value of each."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    calls = _calls(spec)
    if spec["mode"] == "memory":
        (call,) = calls.values()
        with PeakMemory() as mem:
            t = time.perf_counter()
            call()
            cold = time.perf_counter() - t
        return {"cold_s": cold, "peak_extra_mb": mem.extra / 2**20, "peak_method": mem.method}
    names = list(calls)
    times: dict[str, list[float]] = {n: [] for n in names}
    copy_bps, exp2_ps, loads = [], [], []
    for n in names:  # warm-up: first-touch page faults, thread pool start, oneDNN kernel creation
        if not n.startswith("scan_loop"):
            calls[n]()
    for r in range(spec["rounds"]):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            if n == "scan_loop" and len(times[n]) >= spec["loop_rounds"]:
                continue
            t = time.perf_counter()
            calls[n]()
            times[n].append(time.perf_counter() - t)
        copy_bps.append(_copy_rate())
        exp2_ps.append(_exp2_rate())
        loads.append(os.getloadavg()[0])
    out: dict[str, Any] = {
        n: {"best_s": min(v), "median_s": sorted(v)[len(v) // 2], "samples_s": v} for n, v in times.items() if v
    }
    return {
        "variants": out,
        "copy_gbps_best": max(copy_bps) / 1e9,
        "copy_gbps_samples": [v / 1e9 for v in copy_bps],
        "exp2_per_s_best": max(exp2_ps),
        "load_1min_per_round": loads,
        "threads": torch.get_num_threads(),
    }


def _run_variant(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    load_before = os.getloadavg()
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {**spec, "skipped": f"timed out after {timeout_s:.0f} s", "load_before": load_before}
    if proc.returncode != 0:
        return {**spec, "skipped": f"worker failed: {proc.stderr.strip()[-500:]}", "load_before": load_before}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**spec, **result, "load_before": load_before, "load_after": os.getloadavg()}


def _mem_available_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor()
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def scan_min_bytes(T: int, gated: bool) -> int:
    """Bytes the scan cannot avoid in float32: x, dt (, z) and y of [T, D], B and C of [T, N]."""
    rows = 3 + (1 if gated else 0)
    return 4 * T * (rows * INNER + 2 * STATE)


SCAN_VARIANTS = ["scan_loop", "scan_chunked", "scan_chunked_ungated"]
OTHER_VARIANTS = ["conv_loop", "conv_batched", "in_proj_float32", "in_proj_bfloat16"]


def _plan(args: argparse.Namespace, loop_8192_ok: bool) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = []
    for T in args.tokens:
        variants = SCAN_VARIANTS + OTHER_VARIANTS
        if T >= 8192 and not loop_8192_ok:
            variants = variants[1:]
        if T == 2048:
            variants = variants + [f"scan_chunked@{c}" for c in args.chunks]
        rounds = args.rounds if T < 8192 else max(2, args.rounds // 2)
        loop_rounds = 3 if T <= 2048 else 1
        specs.append({"mode": "timing", "T": T, "variants": variants, "rounds": rounds, "loop_rounds": loop_rounds})
        for v in variants:
            if "@" not in v and not args.no_memory:
                specs.append({"mode": "memory", "T": T, "variants": [v]})
    for threads in args.threads:  # one thread cannot wait for a descheduled partner: steadier under load
        specs.append(
            {
                "mode": "timing",
                "T": 2048,
                "variants": ["scan_loop", "scan_chunked"],
                "rounds": args.rounds,
                "loop_rounds": 2,
                "threads": threads,
                "sweep": "threads",
            }
        )
    if args.no_batch:
        return specs
    specs.append(
        {
            "mode": "timing",
            "T": 2048,
            "seqs": 64,
            "variants": ["scan_loop", "scan_chunked", "conv_loop", "conv_batched"],
            "rounds": 3,
            "loop_rounds": 2,
            "sweep": "batch 64 x 32 tokens",
        }
    )
    return specs


def _summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    def best(T: int, v: str, sweep: str | None = None) -> float | None:
        for r in results:
            if r["mode"] == "timing" and r["T"] == T and r.get("sweep") == sweep and v in r.get("variants", {}):
                return r["variants"][v]["best_s"]
        return None

    def peak(T: int, v: str) -> float | None:
        for r in results:
            if r["mode"] == "memory" and r["T"] == T and r["variants"] == [v]:
                return r.get("peak_extra_mb")
        return None

    rows = []
    for r in results:
        if r["mode"] != "timing" or r.get("sweep") or "variants" not in r or isinstance(r["variants"], list):
            continue
        T, v = r["T"], r["variants"]
        bw = r["copy_gbps_best"] * 1e9
        loop, fast = best(T, "scan_loop"), best(T, "scan_chunked")
        bytes_bound = scan_min_bytes(T, True) / bw
        rows.append(
            {
                "T": T,
                "scan_loop_s": loop,
                "scan_chunked_s": fast,
                "scan_chunked_ungated_s": best(T, "scan_chunked_ungated"),
                "speedup_best": loop / fast if loop and fast else None,
                "speedup_median": v["scan_loop"]["median_s"] / v["scan_chunked"]["median_s"] if loop and fast else None,
                "copy_gbps": r["copy_gbps_best"],
                "scan_bytes_bound_s": bytes_bound,
                "scan_exp_bound_s": T * INNER * STATE / r["exp2_per_s_best"],
                "chunked_over_bytes_bound": fast / bytes_bound if fast else None,
                "in_proj_f32_s": best(T, "in_proj_float32"),
                "in_proj_bf16_s": best(T, "in_proj_bfloat16"),
                "conv_loop_s": best(T, "conv_loop"),
                "conv_batched_s": best(T, "conv_batched"),
                "load_1min_per_round": r["load_1min_per_round"],
                "peak_extra_mb": {v: peak(T, v) for v in SCAN_VARIANTS + OTHER_VARIANTS},
            }
        )
    by = {r["T"]: r for r in rows}
    r2048, r8192 = by.get(2048), by.get(8192)
    chunk_sweep = {}
    for r in results:
        if r["mode"] == "timing" and r["T"] == 2048 and not r.get("sweep") and isinstance(r.get("variants"), dict):
            chunk_sweep = {k.split("@")[1]: x["best_s"] for k, x in r["variants"].items() if "@" in k}
    sweeps = {}
    for r in results:
        if r["mode"] == "timing" and r.get("sweep") and isinstance(r.get("variants"), dict):
            label = r["sweep"] + (f" ({r['threads']} thread)" if r["sweep"] == "threads" else "")
            sweeps[label] = {k: x["best_s"] for k, x in r["variants"].items()}
    return {
        "by_T": rows,
        "chunk_sweep_T2048_best_s": chunk_sweep,
        "sweeps_T2048_best_s": sweeps,
        "targets": {
            "speedup_at_2048_ge_10x": bool(r2048 and r2048["speedup_best"] and r2048["speedup_best"] >= 10),
            "peak_extra_at_8192_le_512mb": bool(
                r8192 and r8192["peak_extra_mb"]["scan_chunked"] and r8192["peak_extra_mb"]["scan_chunked"] <= 512
            ),
            "within_2x_of_bytes_bound_at_2048": bool(
                r2048 and r2048["chunked_over_bytes_bound"] and r2048["chunked_over_bytes_bound"] <= 2
            ),
        },
    }


def _plot(summary: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = summary["by_T"]
    Ts = [r["T"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = [
        ("scan_loop_s", "scan, per-token loop", "o-"),
        ("scan_chunked_s", "scan, chunked (gated)", "s-"),
        ("in_proj_f32_s", "in_proj matmul f32", "^--"),
        ("in_proj_bf16_s", "in_proj matmul bf16", "v--"),
        ("scan_exp_bound_s", "exp bound (T*D*N exp2)", ":"),
        ("scan_bytes_bound_s", "bytes bound (copy bandwidth)", ":"),
    ]
    for key, label, style in series:
        pts = [(T, r[key]) for T, r in zip(Ts, rows, strict=True) if r[key]]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("prefill tokens T")
    ax.set_ylabel("seconds per layer call")
    ax.set_title(f"Mamba-1 layer prefill ops on CPU, D={INNER}, N={STATE}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu/mamba_scan_micro.json"))
    ap.add_argument("--tokens", type=lambda s: [int(v) for v in s.split(",")], default=[512, 2048, 8192])
    ap.add_argument("--chunks", type=lambda s: [int(v) for v in s.split(",") if v], default=[4, 8, 16, 32])
    ap.add_argument("--threads", type=lambda s: [int(v) for v in s.split(",") if v], default=[1])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-memory", action="store_true", help="times only (the peak-memory runs are deterministic)")
    ap.add_argument("--no-batch", action="store_true", help="skip the 64 x 32-token batch")
    ap.add_argument("--variant-timeout-s", type=float, default=900)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return
    loop_need_gb = 3 * 8192 * INNER * STATE * 4 / 1e9 + 2  # dA, dBx and one temporary at T = 8192
    loop_8192_ok = _mem_available_gb() > loop_need_gb * 1.3
    results: list[dict[str, Any]] = []
    if not loop_8192_ok:
        results.append(
            {
                "mode": "note",
                "T": 8192,
                "skipped": f"scan_loop needs ~{loop_need_gb:.0f} GB, MemAvailable {_mem_available_gb():.1f} GB",
            }
        )
    started = time.time()
    for spec in _plan(args, loop_8192_ok):
        r = _run_variant(spec, args.variant_timeout_s)
        results.append(r)
        print(json.dumps(r), flush=True)
    summary = _summarize(results)
    doc = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "dims": {"hidden": HIDDEN, "d_inner": INNER, "d_state": STATE, "d_conv": KERNEL},
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": time.time() - started,
        "summary": summary,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    _plot(summary, args.out.with_suffix(".png"))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
