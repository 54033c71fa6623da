"""Throughput against latency across concurrency levels, one headless Locust run per level.

    python -m loadtest.sweep --host http://127.0.0.1:8000 --concurrency 1,4,16,64 --run-time 3m \
        --out runs/sweep -- --workload paper --api-key KEY

Each level gets its own run directory (``OUT/c0004/``: Locust CSVs, HTML, JSONL, summary.json and
plots); ``OUT/sweep.json`` and ``OUT/sweep.png`` put the levels side by side. Levels are separate
processes so that one level's stragglers and Locust state never leak into the next.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sambay_client.jsonutil import json_safe

from . import report

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def run_level(
    host: str,
    users: int,
    run_dir: Path,
    run_time: str,
    stop_timeout: str,
    extra: list[str],
    spawn_rate: float | None = None,
) -> int:
    """One headless Locust run; its console output goes to run_dir/locust.log. Returns Locust's
    exit code (1 when any request failed, which does not stop the sweep)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        host,
        "--users",
        str(users),
        "--spawn-rate",
        str(spawn_rate or users),
        "--run-time",
        run_time,
        "--stop-timeout",
        stop_timeout,
        "--csv",
        str(run_dir / "locust"),
        "--csv-full-history",
        "--html",
        str(run_dir / "locust.html"),
        "--only-summary",
        "--run-dir",
        str(run_dir),
        *extra,
    ]
    with (run_dir / "locust.log").open("w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode


def point(users: int, summary: dict[str, Any], exit_code: int) -> dict[str, Any]:
    def p(key: str, q: int) -> float | None:
        return (summary.get(key) or {}).get(f"p{q}")

    return {
        "concurrency": users,
        "exit_code": exit_code,
        "requests": summary.get("requests", 0),
        "error_rate": summary.get("error_rate"),
        "requests_per_s": summary.get("requests_per_s"),
        "output_tokens_per_s": summary.get("output_tokens_per_s"),
        "per_user_output_tps_p50": p("output_tps", 50),
        **{f"{k}_p{q}": p(f"{k}_ms", q) for k in ("ttft", "tfat", "itl", "tpot", "e2e") for q in (50, 99)},
    }


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [p for p in points if p.get("output_tokens_per_s") is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    c = [p["concurrency"] for p in pts]
    left.plot(c, [p["output_tokens_per_s"] for p in pts], marker="o", label="output tok/s (all users)")
    left.set_xlabel("concurrent users")
    left.set_ylabel("output tokens/s")
    left.set_xscale("log", base=2)
    left.set_xticks(c, [str(n) for n in c])
    left.set_ylim(bottom=0)
    twin = left.twinx()
    twin.plot(
        c, [p["per_user_output_tps_p50"] for p in pts], marker="s", color="tab:orange", label="tok/s per user (p50)"
    )
    twin.set_ylabel("tokens/s per user (p50)", color="tab:orange")
    twin.set_ylim(bottom=0)
    left.legend(handles=left.get_lines() + twin.get_lines(), loc="upper left", fontsize=8)
    left.set_title("throughput vs concurrency")
    left.grid(alpha=0.3)
    x = [p["output_tokens_per_s"] for p in pts]
    for key, style in (("ttft_p50", "o-"), ("ttft_p99", "o--"), ("tpot_p50", "s-"), ("tpot_p99", "s--")):
        right.plot(x, [p[key] for p in pts], style, label=key.replace("_", " "))
    for p in pts:
        right.annotate(
            f"c={p['concurrency']}",
            (p["output_tokens_per_s"], p["ttft_p50"] or 0),
            fontsize=8,
            textcoords="offset points",
            xytext=(4, 4),
        )
    right.set_xlabel("output tokens/s (all users)")
    right.set_ylabel("ms")
    right.set_yscale("log")
    right.set_title("latency vs throughput")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sweep(
    host: str, levels: list[int], out: Path, run_time: str, stop_timeout: str, extra: list[str], warmup_s: float = 0.0
) -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    points = []
    for users in levels:
        run_dir = out / f"c{users:04d}"
        t = time.monotonic()
        code = run_level(host, users, run_dir, run_time, stop_timeout, extra)
        print(f"== concurrency {users}: locust exit {code} after {time.monotonic() - t:.0f} s ({run_dir})")
        if not list(run_dir.glob("requests-*.jsonl")):
            tail = (run_dir / "locust.log").read_text()[-2000:]
            raise SystemExit(f"concurrency {users}: Locust (exit {code}) recorded no request:\n{tail}")
        summary = report.report(run_dir, warmup_s)["summary"]
        points.append(point(users, summary, code))
        (out / "sweep.json").write_text(
            json.dumps(
                json_safe({"host": host, "run_time": run_time, "locust_args": extra, "points": points}), indent=1
            )
        )
    plot(points, out / "sweep.png")
    return points


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(
        prog="python -m loadtest.sweep",
        description=__doc__.splitlines()[0],
        epilog="Arguments after -- go to every Locust run (workload, --api-key, ...).",
    )
    p.add_argument("--host", required=True)
    p.add_argument("--concurrency", required=True, help="comma-separated user counts, e.g. 1,4,16,64")
    p.add_argument("--run-time", default="60s", help="per level (Locust syntax: 30s, 5m)")
    p.add_argument(
        "--stop-timeout",
        default="30s",
        help="time in-flight requests get to finish after each level's run time (Locust syntax)",
    )
    p.add_argument("--warmup", type=float, default=0.0, help="leave out requests started in each level's first S s")
    p.add_argument("--out", type=Path, default=Path("loadtest-runs") / time.strftime("sweep-%Y%m%d-%H%M%S"))
    args = p.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    points = sweep(args.host, levels, args.out, args.run_time, args.stop_timeout, extra, args.warmup)
    print(
        f"{'users':>6}"
        + "".join(f"{h:>10}" for h in ("req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50"))
        + f"{'errors':>8}"
    )
    for pt in points:
        cells = [pt.get(k) for k in ("requests_per_s", "output_tokens_per_s", "ttft_p50", "ttft_p99", "tpot_p50")]
        print(
            f"{pt['concurrency']:>6}"
            + "".join(report.fmt(v) for v in cells)
            + f"{100 * (pt.get('error_rate') or 0):>7.1f}%"
        )
    print(f"wrote {args.out / 'sweep.json'} and {args.out / 'sweep.png'}")


if __name__ == "__main__":
    main()
