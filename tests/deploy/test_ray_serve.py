"""Ray Serve scale-out, for real: a local Ray cluster on CPU runs two replicas of the server (each
its own vLLM engine on the tiny checkpoint) behind Ray Serve's HTTP proxy. Requests sent to the
proxy must be answered by BOTH replicas, and shutting down must leave no process behind."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("ray.serve")

RAY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "ray"
API_KEY = "sk-ray-test"
pytestmark = [pytest.mark.engine, pytest.mark.timeout(420)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants() -> set:
    import psutil

    return set(psutil.Process().children(recursive=True))


def _is_engine(p) -> bool:
    try:
        return "EngineCore" in p.name() or "EngineCore" in " ".join(p.cmdline())
    except Exception:  # gone already
        return False


def _replica_logs(temp_dir: str) -> str:
    logs = sorted(Path(temp_dir).glob("session_*/logs/serve/replica_*.log"))
    return "\n".join(f"== {f.name}\n{f.read_text(errors='replace')[-3000:]}" for f in logs[-2:])


def test_two_replicas_answer_through_the_proxy(tiny_checkpoint, monkeypatch):
    import httpx
    import psutil
    import ray
    from ray import serve

    monkeypatch.syspath_prepend(str(RAY_DIR))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster: no token file in $HOME
    import sambay_ray

    saved_env = dict(os.environ)  # ray.init sets a few variables (PYTHONBREAKPOINT...) for good
    before = _descendants()
    running: set = set()
    seen: set = set()
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-sambay-", dir="/tmp")  # short: Ray puts sockets in it
    started = time.monotonic()
    # Replicas need the module (PYTHONPATH) and read their API key from their own environment.
    env = {"PYTHONPATH": str(RAY_DIR), "SAMBAY_API_KEY": API_KEY, "VLLM_CPU_KVCACHE_SPACE": "1"}
    ray.init(
        num_cpus=2,
        object_store_memory=200 * 2**20,
        include_dashboard=False,
        runtime_env={"env_vars": env},
        _temp_dir=temp_dir,
        log_to_driver=False,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = sambay_ray.build(
            {
                "server_args": [
                    "--model",
                    str(tiny_checkpoint),
                    "--served-model-name",
                    "sambay-tiny",
                    "--max-model-len",
                    "512",
                    "--max-num-seqs",
                    "8",
                ],
                "num_cpus": 0.5,  # two replicas on a 2-core machine
                "autoscaling": {"min_replicas": 2, "max_replicas": 2, "initial_replicas": 2},
            }
        )
        try:
            serve.run(app, name="sambay", route_prefix="/", blocking=False)
        except RuntimeError as exc:
            pytest.fail(f"{exc}\n{_replica_logs(temp_dir)}")
        running = _descendants()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            assert http.get("/health").status_code == 200
            assert http.get("/v1/models").status_code == 401  # the server's own auth is in front
            headers = {"Authorization": f"Bearer {API_KEY}"}
            body = {"model": "sambay-tiny", "prompt": "Hello", "max_tokens": 4, "temperature": 0}

            def one(_):
                r = http.post("/v1/completions", json=body, headers=headers)
                assert r.status_code == 200, r.text
                assert r.json()["usage"]["completion_tokens"] == 4
                return r.headers["x-sambay-replica"]

            with ThreadPoolExecutor(8) as pool:
                answers: list[str] = []
                for _ in range(5):  # bounded: stop as soon as both replicas have answered
                    answers += pool.map(one, range(8))
                    if len(set(answers)) >= 2:
                        break
            seen = set(answers)
        running |= _descendants()
        counts = {r: answers.count(r) for r in seen}
        print(
            f"\nanswers per replica: {counts}; ready and answered in {time.monotonic() - started:.0f} s",
            file=sys.stderr,
        )
        assert len(seen) == 2, f"only {seen} answered"
        assert len({s.split("/pid-")[1] for s in seen}) == 2  # two processes, not one replica twice
        engines = [p for p in running - before if _is_engine(p)]
        assert len(engines) >= 2, "each replica runs its own engine process"
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)
            os.environ.clear()
            os.environ.update(saved_env)
    _, alive = psutil.wait_procs(list(running - before), timeout=60)
    stray = [f"{p.pid} {p.name()}" for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:
        p.kill()  # never leave them to later tests, but fail this one
    assert not stray, f"processes left after shutdown: {stray}"
