"""Quantized SambaY on CPU at full size: bf16 vs W8A8 vs W4A16 in one run, against this machine's bound.

    python benchmarks/quant_cpu.py OUT_DIR [--schemes bf16,W8A8,W4A16] [--contexts 2048,8192] [--threads 2]

For each scheme, one ``sambay-bench run --size full --models sambay`` (the published config, dummy
weights; ``--quantization`` writes the config the recipe writes) gives decode ms/step at each
context and TTFT at 2K; its process tree's peak RSS is read from ``wait4``. The same run measures
this machine's read bandwidth (min time over rounds of summing a 2 GiB tensor with the engine's
thread count) and, at the decode shape of fc1 (x 1 x 2560, W 20480 x 2560), plain ``F.linear``
against vLLM's CPU GEMM path for bf16 weights. The bound of a decode step is the bytes of
weights it reads (every matrix once; the embedding only one row) over that bandwidth.

Before each measurement it waits until the 1-minute load is below 0.8 (polling every 30 s, at
most 30 minutes; the machine is shared) and records the load it started at. Writes
OUT_DIR/quant_cpu.json, quant_cpu.log (everything, the engines' logs included), quant_cpu.png, and
one sambay-bench run directory per scheme.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

QUIET_LOAD = 0.8
QUIET_WAIT_S = 30 * 60
SCHEMES = ("bf16", "W8A8", "W4A16")
LOG: Path | None = None


def say(line: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {line}", flush=True)
    if LOG is not None:
        with LOG.open("a") as f:
            f.write(f"[{stamp}] {line}\n")


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_for_quiet(max_wait_s: float = QUIET_WAIT_S) -> dict:
    t0 = time.time()
    while load1() >= QUIET_LOAD and time.time() - t0 < max_wait_s:
        time.sleep(30)
    waited = time.time() - t0
    load = load1()
    say(f"load {load:.2f} after waiting {waited:.0f} s" + ("" if load < QUIET_LOAD else " (ran anyway)"))
    return {"load1_at_start": load, "waited_s": waited, "quiet": load < QUIET_LOAD}


# -- bytes ------------------------------------------------------------------------------------
def weight_bytes(scheme: str) -> dict:
    """Bytes of weights one B=1 decode step reads, per scheme, for the published config."""
    from vllm_sambay.config import LayerKind, Phi4FlashConfig

    cfg = Phi4FlashConfig()
    h, di, inter, v = cfg.hidden_size, cfg.mamba_d_inner, cfg.intermediate_size, cfg.vocab_size
    kv = cfg.num_key_value_heads * cfg.head_dim
    quantized: list[tuple[int, int]] = [(v, h)]  # lm_head (untied when quantized)
    plain = 0  # parameters kept in bf16 that a step reads
    for spec in cfg.layer_layout:
        quantized += [(2 * inter, h), (h, inter)]
        if spec.is_mamba:
            quantized += [(2 * di, h), (h, di)]
            plain += di * (cfg.mamba_dt_rank + 2 * cfg.mamba_d_state) + cfg.mamba_dt_rank * di + di * cfg.mamba_d_conv
        elif spec.kind is LayerKind.GMU:
            quantized += [(di, h), (h, di)]
        elif spec.kind is LayerKind.CROSS_ATTENTION:
            quantized += [(h, h), (h, h)]
        else:
            quantized += [(h + 2 * kv, h), (h, h)]
    params = sum(o * i for o, i in quantized)
    if scheme == "bf16":
        matrices = 2 * params
    elif scheme == "W8A8":  # int8 + one fp32 scale per output channel
        matrices = params + 4 * sum(o for o, _ in quantized)
    else:  # int4 + one bf16 scale per 128 inputs
        matrices = params // 2 + 2 * sum(o * i // 128 for o, i in quantized)
    return {"quantized_params": params, "plain_params": plain, "bytes": matrices + 2 * plain}


# -- machine ----------------------------------------------------------------------------------
def read_bandwidth(threads: int, rounds: int = 7) -> dict:
    import torch

    torch.set_num_threads(threads)
    x = torch.ones(512 * 1024 * 1024, dtype=torch.float32)  # 2 GiB
    x.sum()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"bytes": x.numel() * 4, "threads": threads, "min_s": best, "gb_s": x.numel() * 4 / best / 1e9}


def gemm_paths(threads: int, rounds: int = 20) -> dict:
    """bf16 ``F.linear`` vs vLLM's CPU GEMM for unquantized weights at the decode shape of fc1."""
    import torch
    import torch.nn.functional as F
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    torch.set_num_threads(threads)
    out_f, in_f = 20480, 2560
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(torch.randn(out_f, in_f).to(torch.bfloat16), requires_grad=False)
    x = torch.randn(1, in_f).to(torch.bfloat16)
    plain_w = layer.weight.detach().clone()
    dispatch_cpu_unquantized_gemm(layer, remove_weight=False)

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    with torch.no_grad():
        t_plain = best(lambda: F.linear(x, plain_w))
        t_vllm = best(lambda: layer.cpu_linear(x, layer.weight, None))
    nbytes = out_f * in_f * 2
    return {
        "shape": [1, in_f, out_f],
        "f_linear_ms": t_plain * 1e3,
        "f_linear_gb_s": nbytes / t_plain / 1e9,
        "vllm_cpu_gemm_ms": t_vllm * 1e3,
        "vllm_cpu_gemm_gb_s": nbytes / t_vllm / 1e9,
        "vllm_cpu_linear": getattr(layer.cpu_linear, "__name__", repr(layer.cpu_linear)),
    }


# -- one scheme -------------------------------------------------------------------------------
def bench(scheme: str, out: Path, contexts: list[int], budget_s: float) -> dict:
    run_dir = out / f"bench-{scheme.lower()}"
    cmd = [
        sys.executable, "-m", "sambay_bench.cli", "run", "--size", "full", "--models", "sambay",
        "--dtype", "bfloat16", "--modes", "ttft,decode", "--batches", "1",
        "--contexts", ",".join(map(str, contexts)), "--ttft-prompt-lens", "2048", "--ttft-repeats", "2",
        "--decode-steps", "8", "--decode-warmup-steps", "2", "--max-model-len", str(max(contexts) + 1024),
        "--time-budget-s", str(budget_s), "--engine-arg", "sambay:kv_sharing_fast_prefill=true",
        "--out", str(run_dir),
    ]  # fmt: skip
    if scheme != "bf16":
        cmd += ["--quantization", scheme]
    say(f"{scheme}: {' '.join(cmd)}")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"}
    t0 = time.time()
    with LOG.open("a") as log:  # type: ignore[union-attr]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    doc = json.loads((run_dir / "bench.json").read_text())
    points = doc["modes"]
    decode = {
        str(p["context"]): p["ms_per_step"] for p in points.get("decode", {}).get("points", []) if p["batch"] == 1
    }
    ttft = [p for p in points.get("ttft", {}).get("points", []) if p["prompt_len"] == 2048]
    result = {
        "rc": rc,
        "wall_s": time.time() - t0,
        "peak_rss_gib": usage.ru_maxrss / 2**20,  # KiB; the largest process of the tree (the engine)
        "decode_ms_per_step": decode,
        "ttft_2048_ms_min": min(ttft[0]["ttft_ms_samples"]) if ttft else None,
        "ttft_2048_ms_samples": ttft[0]["ttft_ms_samples"] if ttft else None,
        "skipped": [s for m in points.values() for s in m.get("skipped", [])],
        "run_dir": str(run_dir.relative_to(out)),
    }
    say(f"{scheme}: {json.dumps(result)}")
    return result


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schemes = list(doc["schemes"])
    contexts = doc["contexts"]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(contexts)
    for j, ctx in enumerate(contexts):
        ms = [doc["schemes"][s]["decode_ms_per_step"].get(str(ctx)) or 0 for s in schemes]
        xs = [i + j * width for i in range(len(schemes))]
        ax.bar(xs, ms, width, label=f"decode ms/step at {ctx}")
    bounds = [doc["schemes"][s]["bound_ms"] for s in schemes]
    ax.scatter([i + width * (len(contexts) - 1) / 2 for i in range(len(schemes))], bounds, color="k", marker="_",
               s=600, label="weight bytes / read bandwidth", zorder=3)  # fmt: skip
    ax.set_xticks([i + width * (len(contexts) - 1) / 2 for i in range(len(schemes))], schemes)
    ax.set_ylabel("ms per decode step (B = 1)")
    ax.set_title(f"SambaY full size, vLLM CPU, {doc['threads']} threads")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    global LOG
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    ap.add_argument("--contexts", default="2048,8192")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--budget-s", type=float, default=900, help="per mode and scheme (sambay-bench --time-budget-s)")
    ap.add_argument("--quiet-wait-s", type=float, default=QUIET_WAIT_S, help="longest wait for load < 0.8, per run")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    LOG = args.out / "quant_cpu.log"
    schemes = args.schemes.split(",")
    contexts = [int(c) for c in args.contexts.split(",")]
    doc: dict = {"command": " ".join(["python", *sys.argv]), "threads": args.threads, "contexts": contexts}
    say(doc["command"])
    doc["bandwidth_load"] = wait_for_quiet(args.quiet_wait_s)
    doc["read_bandwidth"] = read_bandwidth(args.threads)
    say(f"read bandwidth: {json.dumps(doc['read_bandwidth'])}")
    doc["gemm_load"] = wait_for_quiet(args.quiet_wait_s)
    doc["gemm_bf16_fc1_decode_shape"] = gemm_paths(args.threads)
    say(f"GEMM at fc1's decode shape: {json.dumps(doc['gemm_bf16_fc1_decode_shape'])}")
    gb_s = doc["read_bandwidth"]["gb_s"]
    doc["schemes"] = {}
    for scheme in schemes:
        load = wait_for_quiet(args.quiet_wait_s)
        result = bench(scheme, args.out, contexts, args.budget_s)
        wb = weight_bytes(scheme)
        result |= {"load": load, "weight_bytes": wb, "bound_ms": wb["bytes"] / (gb_s * 1e9) * 1e3}
        doc["schemes"][scheme] = result
        (args.out / "quant_cpu.json").write_text(json.dumps(doc, indent=2) + "\n")
    base = doc["schemes"].get("bf16", {}).get("decode_ms_per_step", {})
    for r in doc["schemes"].values():
        r["speedup_vs_bf16"] = {c: base[c] / ms for c, ms in r["decode_ms_per_step"].items() if c in base and ms}
        r["of_bound"] = {c: ms / r["bound_ms"] for c, ms in r["decode_ms_per_step"].items() if ms}
    (args.out / "quant_cpu.json").write_text(json.dumps(doc, indent=2) + "\n")
    plot(doc, args.out / "quant_cpu.png")
    say("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
