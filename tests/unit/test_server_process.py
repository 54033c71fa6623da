"""ServerProcess (the bench's and the tests' way to run a server) with a stand-in server script:
the port choice, the retry when the port was taken, start-up failures and clean stops."""

from __future__ import annotations

import socket
import sys
import textwrap
from pathlib import Path

import httpx
import psutil
import pytest

from sambay_bench.server import ServerError, ServerProcess, free_port

# Binds --port like uvicorn does (and says what uvicorn says when it cannot), answers /health,
# and keeps a child process alive the way vLLM's engine core does.
STAND_IN = textwrap.dedent("""
    import http.server, subprocess, sys
    port = int(sys.argv[sys.argv.index("--port") + 1])
    if "--fail" in sys.argv:
        print("engine failed to start", flush=True)
        sys.exit(3)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *a): pass
    try:
        srv = http.server.HTTPServer(("127.0.0.1", port), H)
    except OSError as exc:
        print(f"ERROR: [Errno 98] error while attempting to bind on address: {exc}: address already in use",
              flush=True)
        child.kill()
        sys.exit(1)
    srv.serve_forever()
""")


@pytest.fixture
def stand_in(tmp_path) -> list[str]:
    script = tmp_path / "server.py"
    script.write_text(STAND_IN)
    return [sys.executable, str(script)]


def ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_ports_come_from_below_the_ephemeral_range():
    ports = {free_port() for _ in range(20)}
    assert all(1024 <= p < ephemeral_low() for p in ports) and len(ports) > 1


def test_a_taken_port_is_retried_on_another_and_stop_leaves_nothing(stand_in, tmp_path):
    srv = ServerProcess(stand_in, tmp_path / "server.log", ready_timeout_s=30)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", srv.port))  # what an engine process did in CI once
        taken = srv.port
        srv.start()
    try:
        assert srv.port != taken and httpx.get(f"{srv.base_url}/health").status_code == 200
        assert "address already in use" in (tmp_path / "server.log").read_text()
        family = [psutil.Process(srv.proc.pid), *psutil.Process(srv.proc.pid).children(recursive=True)]
        assert len(family) == 2
    finally:
        srv.stop()
    _, alive = psutil.wait_procs(family, timeout=10)
    assert not alive


def test_a_server_that_exits_is_an_error_with_its_log(stand_in, tmp_path):
    srv = ServerProcess([*stand_in, "--fail"], tmp_path / "server.log", ready_timeout_s=30)
    with pytest.raises(ServerError, match="exited with 3:\n.*engine failed to start"):
        srv.start()
    assert srv.proc is None


def test_a_server_that_never_answers_times_out(tmp_path):
    cmd = [sys.executable, "-c", "import time; time.sleep(60)"]
    srv = ServerProcess(cmd, tmp_path / "server.log", ready_timeout_s=2)
    with pytest.raises(ServerError, match="not ready in 2 s"):
        srv.start()
    assert srv.proc is None
