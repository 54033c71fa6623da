"""CPU prefill of one Mamba-1 layer at the published width (d_inner 5120, d_state 16): the per-token
loop scan (``selective_scan_varlen_loop``, the readable definition) against the chunked scan the
model uses (``selective_scan_varlen``), the per-sequence conv against the batched one, and, on the
same tokens, the layer's largest matmul (in_proj, 2560 -> 2 * 5120) in float32 and bf16.

Two bounds put the scan's time in context, both measured in the same run:

* bytes: the scan must at least read x, dt, B, C (and z when gated) and write y, in float32; that
  many bytes over this machine's copy bandwidth (a large tensor copy, read + write counted);
* exp: it must evaluate T * D * N exponentials; that many over torch's in-cache float32 exp2 rate
  on this machine (the scan's actual exp, one thread count as the run).

Every variant runs in its own subprocess so that its peak memory can be read from the kernel
(``VmHWM`` reset through ``/proc/self/clear_refs`` after the inputs exist; a 1 ms RSS sampler
where that is not allowed): "peak extra" is the high-water mark minus the RSS before the call, on
the first (cold) call. Times are the minimum over repeats after that call; the loop at T = 8192
runs once, cold, and is skipped (with the reason) when MemAvailable is below what it needs.
Load averages are recorded beside every variant: other processes on a 2-core machine move
these numbers by 2x and more.

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


def _bandwidth() -> dict[str, float]:
    """Copy and add of 512 MB float32 tensors, read + write bytes per second (best of 5)."""
    n = 128 * 1024 * 1024
    a, b, c = torch.ones(n), torch.ones(n), torch.empty(n)
    best_copy = best_add = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        c.copy_(a)
        best_copy = min(best_copy, time.perf_counter() - t)
        t = time.perf_counter()
        torch.add(a, b, out=c)
        best_add = min(best_add, time.perf_counter() - t)
    return {"copy_gbps": 2 * n * 4 / best_copy / 1e9, "add_gbps": 3 * n * 4 / best_add / 1e9}


def _exp2_rate() -> float:
    """torch.exp2 elements per second on a 2.6 MB float32 tensor (one scan chunk, in cache)."""
    x = -torch.rand(8, INNER, STATE)
    y = torch.empty_like(x)
    best = float("inf")
    for _ in range(20):
        t = time.perf_counter()
        torch.exp2(x, out=y)
        best = min(best, time.perf_counter() - t)
    return x.numel() / best


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs one variant in this (fresh) process and returns its numbers."""
    from vllm_sambay.ops import mamba_torch as ops

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec.get("chunk"):
        ops.SCAN_CHUNK_TOKENS = spec["chunk"]
    kind, T = spec["kind"], spec["T"]
    if kind == "bandwidth":
        return {**_bandwidth(), "exp2_per_s": _exp2_rate()}
    if kind in ("scan_loop", "scan_chunked"):
        args = _scan_inputs(T, spec["gated"], spec["seqs"])
        fn = ops.selective_scan_varlen_loop if kind == "scan_loop" else ops.selective_scan_varlen
        call = lambda: fn(**args)  # noqa: E731
    elif kind in ("conv_loop", "conv_batched"):
        args = _conv_inputs(T, spec["seqs"])
        fn = ops.causal_conv1d_varlen_loop if kind == "conv_loop" else ops.causal_conv1d_varlen
        call = lambda: fn(**args)  # noqa: E731
    elif kind == "in_proj":
        dtype = getattr(torch, spec["dtype"])
        g = torch.Generator().manual_seed(2)
        h = torch.randn(T, HIDDEN, generator=g).to(dtype)
        w = (torch.randn(2 * INNER, HIDDEN, generator=g) * 0.02).to(dtype)
        call = lambda: torch.nn.functional.linear(h, w)  # noqa: E731
    else:
        raise ValueError(kind)
    with PeakMemory() as mem:
        t = time.perf_counter()
        call()
        cold = time.perf_counter() - t
    times = [cold]
    for _ in range(spec["repeats"]):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    warm = times[1:] or times
    return {
        "cold_s": cold,
        "best_s": min(warm),
        "median_s": sorted(warm)[len(warm) // 2],
        "runs": len(times),
        "peak_extra_mb": mem.extra / 2**20,
        "peak_method": mem.method,
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


def _plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = [{"kind": "bandwidth", "T": 0, "repeats": 0}]
    for T in args.tokens:
        base = {"T": T, "seqs": 1, "gated": True, "repeats": args.repeats}
        specs.append({**base, "kind": "scan_loop", "repeats": 2 if T <= 2048 else 0})
        specs.append({**base, "kind": "scan_chunked"})
        specs.append({**base, "kind": "scan_chunked", "gated": False})
        specs.append({**base, "kind": "conv_loop"})
        specs.append({**base, "kind": "conv_batched"})
        specs.append({**base, "kind": "in_proj", "dtype": "float32"})
        specs.append({**base, "kind": "in_proj", "dtype": "bfloat16"})
    sweep_T = 2048
    for chunk in args.chunks:
        specs.append(
            {
                "kind": "scan_chunked",
                "T": sweep_T,
                "seqs": 1,
                "gated": True,
                "repeats": args.repeats,
                "chunk": chunk,
                "sweep": "chunk",
            }
        )
    for threads in args.threads:  # one thread cannot wait for a descheduled partner: steadier under load
        for kind in ("scan_loop", "scan_chunked"):
            specs.append(
                {
                    "kind": kind,
                    "T": sweep_T,
                    "seqs": 1,
                    "gated": True,
                    "repeats": 1 if kind == "scan_loop" else 3,
                    "threads": threads,
                    "sweep": "threads",
                }
            )
    # many short prompts in one batch: 64 x 32 tokens
    for kind in ("scan_loop", "scan_chunked", "conv_loop", "conv_batched"):
        specs.append(
            {
                "kind": kind,
                "T": 2048,
                "seqs": 64,
                "gated": True,
                "repeats": 1 if "loop" in kind else 3,
                "sweep": "batch",
            }
        )
    return specs


def _summarize(results: list[dict[str, Any]], bw: dict[str, float]) -> dict[str, Any]:
    def pick(**kw: Any) -> dict[str, Any] | None:
        for r in results:
            if all(r.get(k) == v for k, v in kw.items()) and "sweep" not in r and "best_s" in r:
                return r
        return None

    rows = []
    for T in sorted({r["T"] for r in results if r["T"]}):
        loop, fast = pick(kind="scan_loop", T=T), pick(kind="scan_chunked", T=T, gated=True)
        ungated = pick(kind="scan_chunked", T=T, gated=False)
        f32, b16 = pick(kind="in_proj", T=T, dtype="float32"), pick(kind="in_proj", T=T, dtype="bfloat16")
        cl, cb = pick(kind="conv_loop", T=T), pick(kind="conv_batched", T=T)
        bytes_bound = scan_min_bytes(T, True) / (bw["copy_gbps"] * 1e9)
        exp_bound = T * INNER * STATE / bw["exp2_per_s"]
        row = {
            "T": T,
            "scan_loop_s": loop and loop["best_s"],
            "scan_chunked_s": fast and fast["best_s"],
            "scan_chunked_ungated_s": ungated and ungated["best_s"],
            "speedup": loop and fast and loop["best_s"] / fast["best_s"],
            "scan_bytes_bound_s": bytes_bound,
            "scan_exp_bound_s": exp_bound,
            "chunked_over_bytes_bound": fast and fast["best_s"] / bytes_bound,
            "in_proj_f32_s": f32 and f32["best_s"],
            "in_proj_bf16_s": b16 and b16["best_s"],
            "conv_loop_s": cl and cl["best_s"],
            "conv_batched_s": cb and cb["best_s"],
            "peak_extra_mb": {
                "scan_loop": loop and loop["peak_extra_mb"],
                "scan_chunked": fast and fast["peak_extra_mb"],
                "conv_batched": cb and cb["peak_extra_mb"],
            },
        }
        rows.append(row)
    r2048 = next((r for r in rows if r["T"] == 2048), None)
    r8192 = next((r for r in rows if r["T"] == 8192), None)
    targets = {
        "speedup_at_2048_ge_10x": bool(r2048 and r2048["speedup"] and r2048["speedup"] >= 10),
        "peak_extra_at_8192_le_512mb": bool(
            r8192 and r8192["peak_extra_mb"]["scan_chunked"] and r8192["peak_extra_mb"]["scan_chunked"] <= 512
        ),
        "within_2x_of_bytes_bound_at_2048": bool(
            r2048 and r2048["chunked_over_bytes_bound"] and r2048["chunked_over_bytes_bound"] <= 2
        ),
    }

    def sweep(name: str, key: str) -> dict[str, float | None]:
        return {f"{r['kind']}@{r.get(key)}": r.get("best_s") for r in results if r.get("sweep") == name}

    batch = {r["kind"]: r.get("best_s") for r in results if r.get("sweep") == "batch"}
    return {
        "by_T": rows,
        "targets": targets,
        "chunk_sweep_T2048_s": sweep("chunk", "chunk"),
        "threads_sweep_T2048_s": sweep("threads", "threads"),
        "batch_64x32_tokens_s": batch,
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
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variant-timeout-s", type=float, default=600)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return
    loop_need_gb = 3 * 8192 * INNER * STATE * 4 / 1e9 + 2  # dA, dBx and one temporary at T = 8192
    results = []
    started = time.time()
    for spec in _plan(args):
        if spec["kind"] == "scan_loop" and spec["T"] >= 8192 and _mem_available_gb() < loop_need_gb * 1.3:
            r = {**spec, "skipped": f"needs ~{loop_need_gb:.0f} GB, MemAvailable {_mem_available_gb():.1f} GB"}
        else:
            r = _run_variant(spec, args.variant_timeout_s)
        results.append(r)
        print(json.dumps(r), flush=True)
    bw = next(r for r in results if r["kind"] == "bandwidth")
    summary = _summarize([r for r in results if r["kind"] != "bandwidth"], bw)
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
        "bandwidth": bw,
        "summary": summary,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    _plot(summary, args.out.with_suffix(".png"))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
