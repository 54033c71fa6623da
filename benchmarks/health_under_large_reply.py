"""/health latency while sambay-serve answers a huge logprobs request: before and after --max-reply-logprobs.

The finding (issue 25, item 4): vLLM builds a non-streamed reply in one piece on the event loop, so a
22 MB logprobs reply held ``/health`` for 6.5 s. This starts ``sambay-serve`` on the tiny checkpoint
twice in one run — ``--max-reply-logprobs 0`` (the check off: the old behaviour) and the default — and
sends the same requests to each while an open-loop prober asks ``/health`` every ``--probe-ms``
(each probe's latency counts from the moment it was due, so a stalled loop shows as every probe it
delayed, not as one slow sample).

Scenarios: ``big`` (non-streamed, n x max_tokens x top_logprobs: the reply that stalls), ``largest-
admitted`` (non-streamed, just under the default limit), ``big-streamed`` (the big request with
stream=true, built token by token). Writes bench.json, run.log (both servers' output and the
prober's samples) and health.png under --out.

    .venv/bin/python benchmarks/health_under_large_reply.py --out benchmarks/results/cpu/<date>/health-large-reply
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

MODEL = "sambay-tiny"
KEY = "bench-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(extra: list[str], log) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "sambay_server.cli", "--port", str(port), "--api-key", KEY,
           "--max-model-len", "4096", *extra]  # fmt: skip
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see the log")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                # warm up (the first generation's one-time costs are not what is measured here)
                body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
                        "logprobs": True, "top_logprobs": 5}  # fmt: skip
                r = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                               timeout=300)  # fmt: skip
                r.raise_for_status()
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    raise RuntimeError("server did not start within 600 s")


def probe_while(base: str, request, probe_s: float) -> tuple[dict, list[tuple[float, float]]]:
    """Run ``request`` (a coroutine function) while probing /health; (its result, samples).

    One keep-alive connection, probes due every ``probe_s``; a probe's latency counts from when it was
    due, so probes held up behind a stalled one count their wait too (open-loop, without a crowd of
    client connections whose own overhead would be measured instead).
    """
    samples: list[tuple[float, float]] = []
    done = threading.Event()
    host, port = base.removeprefix("http://").split(":")

    def prober() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        t0 = due = time.perf_counter()
        while not done.is_set():
            conn.request("GET", "/health")
            conn.getresponse().read()
            samples.append((due - t0, (time.perf_counter() - due) * 1e3))
            due += probe_s
            time.sleep(max(0.0, due - time.perf_counter()))
        conn.close()

    thread = threading.Thread(target=prober, daemon=True)
    thread.start()
    time.sleep(0.5)  # a baseline before the request
    try:
        result = asyncio.run(request())
    finally:
        time.sleep(0.5)
        done.set()
        thread.join()
    return result, samples


def summary(samples: list[tuple[float, float]]) -> dict:
    lat = sorted(ms for _, ms in samples)
    pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 1)  # noqa: E731
    return {"probes": len(lat), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": round(lat[-1], 1),
            "over_100ms": sum(ms > 100 for ms in lat), "over_1s": sum(ms > 1000 for ms in lat)}  # fmt: skip


def make_request(base: str, body: dict):
    async def run() -> dict:
        t = time.perf_counter()
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(timeout=3600) as c:
            if body.get("stream"):
                size = 0
                async with c.stream("POST", f"{base}/v1/chat/completions", json=body, headers=headers) as r:
                    async for chunk in r.aiter_bytes():
                        size += len(chunk)
                status = r.status_code
            else:
                r = await c.post(f"{base}/v1/chat/completions", json=body, headers=headers)
                status, size = r.status_code, len(r.content)
        return {"status": status, "reply_bytes": size, "seconds": round(time.perf_counter() - t, 2)}

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=3000)
    ap.add_argument("--top-logprobs", type=int, default=20)
    ap.add_argument("--probe-ms", type=float, default=10.0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "ignore_eos": True, "logprobs": True}
    big = {**chat, "n": args.n, "max_tokens": args.max_tokens, "top_logprobs": args.top_logprobs}
    from sambay_server.policies.reply_size import DEFAULT_MAX_REPLY_LOGPROBS as LIMIT

    largest = {**chat, "max_tokens": LIMIT // (args.top_logprobs + 1), "top_logprobs": args.top_logprobs}
    after = [("big", big), ("largest-admitted", largest), ("big-streamed", {**big, "stream": True})]
    runs = [
        ("before (--max-reply-logprobs 0)", ["--max-reply-logprobs", "0"], [("big", big)]),
        ("after (default)", [], after),
    ]
    results, timelines = [], {}
    with open(args.out / "run.log", "w") as log:
        for label, flags, scenarios in runs:
            proc, base = start_server(flags, log)
            try:
                for name, body in scenarios:
                    reply, samples = probe_while(base, make_request(base, body), args.probe_ms / 1e3)
                    request = {k: v for k, v in body.items() if k != "messages"}
                    row = {"server": label, "scenario": name, "request": request, **reply, "health": summary(samples)}
                    results.append(row)
                    timelines[f"{label}: {name}"] = samples
                    print(json.dumps(row), flush=True)
                    log.write(f"# {label} / {name}: {json.dumps(row)}\n# samples (t_s, ms): {json.dumps(samples)}\n")
                    log.flush()
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    out = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine,
           "probe_ms": args.probe_ms, "max_reply_logprobs_default": LIMIT, "results": results}  # fmt: skip
    (args.out / "bench.json").write_text(json.dumps(out, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    for name, samples in timelines.items():
        ax.plot([t for t, _ in samples], [ms for _, ms in samples], label=name, lw=0.8)
    ax.set_yscale("log")
    ax.axhline(100, color="k", ls="--", lw=0.8)
    ax.set_xlabel("seconds since the probing began")
    ax.set_ylabel("/health latency from its due time (ms)")
    ax.set_title("sambay-serve /health while a large logprobs request is answered")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "health.png", dpi=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
