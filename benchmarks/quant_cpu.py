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
        quantized = quantized_gemm_paths(x, out_f, in_f, best)
    nbytes = out_f * in_f * 2
    return {
        "shape": [1, in_f, out_f],
        "f_linear_ms": t_plain * 1e3,
        "f_linear_gb_s": nbytes / t_plain / 1e9,
        "vllm_cpu_gemm_ms": t_vllm * 1e3,
        "vllm_cpu_gemm_gb_s": nbytes / t_vllm / 1e9,
        "vllm_cpu_linear": getattr(layer.cpu_linear, "__name__", repr(layer.cpu_linear)),
        **quantized,
    }


def quantized_gemm_paths(x, out_f: int, in_f: int, best) -> dict:
    """The calls vLLM's CPU kernels make for W8A8 (oneDNN: per-token int8 quantization of x, then
    the int8 GEMM; ``CPUInt8ScaledMMLinearKernel``) and W4A16 (``cpu_gemm_wna16`` with the ISA
    hint this CPU gets; ``CPUWNA16LinearKernel``), on random weights of the right layout."""
    import torch
    from vllm import _custom_ops as ops
    from vllm.model_executor.kernels.linear.mixed_precision.cpu import _get_isa_hint

    w8 = torch.randint(-127, 127, (out_f, in_f), dtype=torch.int8)
    handler = ops.create_onednn_scaled_mm(w8.t(), torch.rand(out_f, 1) * 0.01, torch.bfloat16, True, False, 32)

    def int8() -> None:
        x_q, x_s, x_zp = ops.onednn_scaled_int8_quant(x, None, None, True)
        out = torch.empty((x.shape[0], out_f), dtype=x.dtype)
        ops.onednn_scaled_mm(handler, x_q, out, x_s, x_zp, None, None)

    isa = _get_isa_hint(torch.bfloat16)
    q4 = torch.randint(-(2**31), 2**31 - 1, (out_f // 16, in_f * 2), dtype=torch.int32)  # after its repack
    s4 = torch.rand(in_f // 128, out_f).to(torch.bfloat16)

    def int4() -> None:
        ops.cpu_gemm_wna16(input=x, q_weight=q4, scales=s4, zeros=None, bias=None, pack_factor=8, isa_hint=isa)

    t8, t4 = best(int8), best(int4)
    return {
        "w8a8_onednn_ms": t8 * 1e3,
        "w8a8_onednn_gb_s": out_f * in_f / t8 / 1e9,
        "w4a16_wna16_ms": t4 * 1e3,
        "w4a16_wna16_gb_s": out_f * in_f / 2 / t4 / 1e9,
        "w4a16_isa_hint": isa,
    }


# -- one scheme -------------------------------------------------------------------------------
def bench(scheme: str, out: Path, contexts: list[int], budget_s: float, size: str, threads: int) -> dict:
    run_dir = out / f"bench-{scheme.lower()}"
    cmd = [
        sys.executable, "-m", "sambay_bench.cli", "run", "--size", size, "--models", "sambay",
        "--dtype", "bfloat16", "--modes", "ttft,decode", "--batches", "1",
        "--contexts", ",".join(map(str, contexts)), "--ttft-repeats", "1",
        "--ttft-prompt-lens", str(2048 if size == "full" else 256),
        "--decode-steps", "8", "--decode-warmup-steps", "2", "--max-model-len", str(max(contexts) + 1024),
        "--time-budget-s", str(budget_s), "--engine-arg", "sambay:kv_sharing_fast_prefill=true",
        "--engine-arg", "sambay:max_num_batched_tokens=2048",
        "--out", str(run_dir),
    ]  # fmt: skip
    if scheme != "bf16":
        cmd += ["--quantization", scheme]
    say(f"{scheme}: {' '.join(cmd)}")
    # 9K tokens of SambaY's one full KV need ~0.1 GiB. OMP_NUM_THREADS: vLLM's CPU worker otherwise
    # reduces torch to 1 thread "for serving" on this 2-core machine (first run of 2026-12-03).
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": str(threads)}
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
    ttft = points.get("ttft", {}).get("points", [])
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


# -- where the time goes ------------------------------------------------------------------------
GEMM_OPS = ("linear", "addmm", "aten::mm", "gemm", "onednn", "scaled_mm", "wna16", "int8")
ATTENTION_OPS = ("attention", "attn", "paged")


def _category(name: str) -> str:
    low = name.lower()
    if any(k in low for k in GEMM_OPS):
        return "gemm"
    if any(k in low for k in ATTENTION_OPS):
        return "attention"
    return "other"


def profile_one(scheme: str, out: Path, prompt_len: int, decode_steps: int, threads: int, size: str) -> dict:
    """In this process: the full-size engine (dummy weights), one 2K prefill step and a few decode
    steps under torch.profiler (self CPU time by op, and by GEMM / attention / other), and the
    chunked Mamba scan alone at the same T for its share of the prefill."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import torch
    from torch.profiler import ProfilerActivity, profile
    from vllm import LLM

    from sambay_bench.models import write_model
    from sambay_bench.offline import EngineDriver

    model_dir = write_model(out / "profile-models", "sambay", size, None if scheme == "bf16" else scheme)
    llm = LLM(
        model=str(model_dir),
        load_format="dummy",
        dtype="bfloat16",
        enforce_eager=True,
        max_model_len=prompt_len + 1024,
        max_num_batched_tokens=2048,
        enable_prefix_caching=False,
        kv_sharing_fast_prefill=True,
        skip_tokenizer_init=True,
        seed=0,
    )
    d = EngineDriver(llm, json.loads((model_dir / "config.json").read_text())["vocab_size"])
    d.add(prompt_len, 512)
    result: dict = {"scheme": scheme, "prompt_len": prompt_len}
    for phase, steps in (("prefill", 1), ("decode", decode_steps)):
        if phase == "decode":
            d.step()  # one unprofiled decode step first
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for _ in range(steps):
                d.step()
            wall = (time.perf_counter() - t0) / steps
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        by_cat: dict[str, float] = {}
        for e in events:
            by_cat[_category(e.key)] = by_cat.get(_category(e.key), 0.0) + e.self_cpu_time_total
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
        result[phase] = {
            "wall_ms_per_step": wall * 1e3,
            "self_cpu_share": {k: v / total for k, v in sorted(by_cat.items())},
            "top_ops": [
                {"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps, "calls": e.count // steps}
                for e in top
            ],
        }
        (out / f"profile-{scheme.lower()}-{phase}.txt").write_text(
            events.table(sort_by="self_cpu_time_total", row_limit=30) + "\n"
        )
    d.abort_all()
    del llm
    # The Mamba prefill scan alone, at one full-size layer's shape (d_inner 5120, d_state 16).
    from vllm_sambay.ops import mamba_torch

    torch.set_num_threads(threads)
    from vllm_sambay.config import Phi4FlashConfig

    cfg = (
        Phi4FlashConfig() if size == "full" else Phi4FlashConfig(**json.loads((model_dir / "config.json").read_text()))
    )
    dim, n, t = cfg.mamba_d_inner, cfg.mamba_d_state, prompt_len
    g = torch.Generator().manual_seed(0)
    x = torch.randn(t, dim, generator=g).to(torch.bfloat16)
    dt = torch.randn(t, dim, generator=g).to(torch.bfloat16)
    a = -torch.rand(dim, n, generator=g)
    b, c = (torch.randn(t, n, generator=g).to(torch.bfloat16) for _ in range(2))
    dd, dt_bias = torch.ones(dim), torch.zeros(dim)
    state = torch.zeros(1, dim, n, dtype=torch.bfloat16)
    idx, has_init = torch.zeros(1, dtype=torch.int32), torch.zeros(1, dtype=torch.bool)
    qsl = torch.tensor([0, t], dtype=torch.int32)

    def scan() -> None:
        mamba_torch.selective_scan_varlen(x, dt, a, b, c, dd, None, dt_bias, state, idx, has_init, qsl)

    scan()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        scan()
        times.append(time.perf_counter() - t0)
    layers = sum(spec.is_mamba for spec in cfg.layer_layout)
    result["scan_one_layer_ms"] = min(times) * 1e3
    result["scan_all_layers_ms"] = min(times) * 1e3 * layers
    result["scan_share_of_prefill_step"] = result["scan_all_layers_ms"] / result["prefill"]["wall_ms_per_step"]
    return result


def profile_scheme(scheme: str, out: Path, threads: int, size: str) -> dict:
    """:func:`profile_one` in a process of its own (one full-size engine at a time)."""
    cmd = [sys.executable, __file__, str(out), "--profile-one", scheme, "--threads", str(threads), "--size", size]
    say(f"{scheme}: profile: {' '.join(cmd)}")
    with LOG.open("a") as log:  # type: ignore[union-attr]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    path = out / f"profile-{scheme.lower()}.json"
    result = json.loads(path.read_text()) if rc == 0 and path.exists() else {"rc": rc}
    say(f"{scheme}: profile: {json.dumps({k: v for k, v in result.items() if k not in ('prefill', 'decode')})}")
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
    ax.set_title(f"SambaY full size, vLLM CPU, bandwidth with {doc['threads']} threads")
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
    ap.add_argument("--size", choices=("full", "tiny"), default="full", help="tiny: a smoke test of this script")
    ap.add_argument("--no-profile", action="store_true", help="skip the per-scheme torch.profiler run")
    ap.add_argument("--profile-one", help=argparse.SUPPRESS)  # internal: the profile subprocess
    ap.add_argument("--machine-only", action="store_true", help="only the read bandwidth and the GEMM paths")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.profile_one:
        result = profile_one(
            args.profile_one, args.out, 2048 if args.size == "full" else 256, 3, args.threads, args.size
        )
        (args.out / f"profile-{args.profile_one.lower()}.json").write_text(json.dumps(result, indent=2) + "\n")
        return 0
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
    if args.machine_only:
        (args.out / "machine.json").write_text(json.dumps(doc, indent=2) + "\n")
        return 0
    gb_s = doc["read_bandwidth"]["gb_s"]
    doc["schemes"] = {}
    for scheme in schemes:
        load = wait_for_quiet(args.quiet_wait_s)
        result = bench(scheme, args.out, contexts, args.budget_s, args.size, args.threads)
        wb = weight_bytes(scheme)
        result |= {"load": load, "weight_bytes": wb, "bound_ms": wb["bytes"] / (gb_s * 1e9) * 1e3}
        doc["schemes"][scheme] = result
        (args.out / "quant_cpu.json").write_text(json.dumps(doc, indent=2) + "\n")
    for scheme in schemes if not args.no_profile else []:  # after every timing: one engine at a time
        doc["schemes"][scheme]["profile_load"] = wait_for_quiet(args.quiet_wait_s)
        doc["schemes"][scheme]["profile"] = profile_scheme(scheme, args.out, args.threads, args.size)
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
