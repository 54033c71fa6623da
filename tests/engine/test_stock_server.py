"""vLLM's own OpenAI server finds the plugin through its entry point and serves the model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.engine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stock_server(tiny_checkpoint, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # the real multi-process server
    # On CPU the module form: vllm-cpu's `vllm` console script cannot find its own metadata.
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_checkpoint),
        "--served-model-name", "sambay-tiny", "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--max-model-len", "1024", "--enforce-eager",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        try:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"server not ready in 300 s:\n{log.read_text()[-4000:]}")
                time.sleep(1)
            yield base
        finally:
            import psutil

            children = psutil.Process(proc.pid).children(recursive=True)
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            _, alive = psutil.wait_procs(children, timeout=30)
            for child in alive:  # never leave engine processes (and their memory) to later tests
                child.kill()


def test_completions_and_chat_through_the_openai_sdk(stock_server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{stock_server}/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == ["sambay-tiny"]
    comp = client.completions.create(model="sambay-tiny", prompt="The cat sat on", max_tokens=8, temperature=0)
    assert comp.usage.completion_tokens == 8 and comp.choices[0].text
    chat = client.chat.completions.create(
        model="sambay-tiny", messages=[{"role": "user", "content": "Add 2 and 3."}], max_tokens=8, temperature=0
    )
    assert chat.usage.completion_tokens >= 1
    assert chat.choices[0].finish_reason in ("length", "stop")
    # Greedy decoding through the server is deterministic.
    again = client.completions.create(model="sambay-tiny", prompt="The cat sat on", max_tokens=8, temperature=0)
    assert again.choices[0].text == comp.choices[0].text
