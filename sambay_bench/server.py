"""An OpenAI-compatible server as a child process: started, waited for, and stopped with every
process it spawned (vLLM's engine core and workers hold the accelerator's memory; one left behind
makes the next start fail or hang)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from pathlib import Path


class ServerError(RuntimeError):
    """The server exited or did not become ready; the message ends with its log's tail."""


def free_port() -> int:
    """A free port below the kernel's ephemeral range: the ports vLLM's engine processes take for
    themselves (bind to port 0) come from that range, so they can never take this one first."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # crowded below the range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``with ServerProcess(cmd, log) as srv:`` runs ``cmd --host 127.0.0.1 --port P`` until
    ``/health`` answers 200, then ``srv.base_url`` is its address."""

    def __init__(
        self, cmd: list[str], log_path: str | Path, ready_timeout_s: float = 600, env: dict[str, str] | None = None
    ) -> None:
        self.cmd, self.log_path, self.ready_timeout_s = cmd, Path(log_path), ready_timeout_s
        self.env = {**os.environ, **(env or {})}
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.ready_s: float | None = None
        self._children: list = []

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, since: int = 0, n: int = 4000) -> str:
        """The end of what the log holds from byte ``since`` on (one start's part of it)."""
        try:
            return self.log_path.read_bytes()[since:].decode(errors="replace")[-n:]
        except OSError:
            return ""

    def start(self, attempts: int = 3) -> None:
        """The port is picked free but only bound by the server after its engine started, and the
        engine's own processes open ports meanwhile: when one took ours, start again on another."""
        for attempt in range(attempts):
            try:
                return self._start_once()
            except ServerError as exc:
                if "address already in use" not in str(exc) or attempt == attempts - 1:
                    raise
                self.port = free_port()
                self.base_url = f"http://127.0.0.1:{self.port}"

    def _start_once(self) -> None:
        import httpx
        import psutil

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        start_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.cmd, "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        try:
            while True:
                if self.proc.poll() is not None:
                    raise ServerError(f"server exited with {self.proc.returncode}:\n{self.log_tail(start_offset)}")
                try:
                    if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() - t0 > self.ready_timeout_s:
                    raise ServerError(
                        f"server not ready in {self.ready_timeout_s:.0f} s:\n{self.log_tail(start_offset)}"
                    )
                time.sleep(1)
            self.ready_s = time.monotonic() - t0
            self._children = psutil.Process(self.proc.pid).children(recursive=True)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 60) -> None:
        import psutil

        if self.proc is None:
            return
        if not self._children:
            try:
                self._children = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # vLLM's engine processes leave on their own once the server is gone; what is still there
        # after a grace period is asked, then made, to go.
        _, alive = psutil.wait_procs(self._children, timeout=10)
        for child in alive:
            child.terminate()
        _, alive = psutil.wait_procs(alive, timeout=10)
        for child in alive:
            child.kill()
        self.proc = None
