from __future__ import annotations

import sys

import pytest

API_KEY = "sk-test-sambay"
MAX_PENDING = 40
BODY_TIMEOUT_S = 3
HEADER_TIMEOUT_S = 3


@pytest.fixture(scope="session")
def server(tiny_checkpoint, tmp_path_factory, serve_subprocess):
    """`sambay-serve` as users run it (multi-process engine), on the tiny checkpoint."""
    log = tmp_path_factory.mktemp("sambay-serve") / "server.log"
    flags = (
        f"--served-model-name sambay-tiny --api-key {API_KEY} --max-pending {MAX_PENDING} --max-model-len 512 "
        f"--max-num-seqs 16 --body-timeout-s {BODY_TIMEOUT_S} --header-timeout-s {HEADER_TIMEOUT_S}"
    )
    cmd = [sys.executable, "-m", "sambay_server.cli", "--model", str(tiny_checkpoint), *flags.split()]
    with serve_subprocess(cmd, log) as (base, proc):
        yield {
            "base": base, "proc": proc, "log": log, "max_pending": MAX_PENDING, "api_key": API_KEY,
            "body_timeout_s": BODY_TIMEOUT_S, "header_timeout_s": HEADER_TIMEOUT_S,
        }  # fmt: skip


@pytest.fixture(scope="session")
def auth():
    return {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="session")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server['base']}/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def stock_server(tiny_checkpoint, tmp_path_factory, serve_subprocess):
    """Stock vLLM's OpenAI server with the plugin, engine settings as `server` above (no key)."""
    log = tmp_path_factory.mktemp("stock-vllm") / "server.log"
    flags = (
        "--served-model-name sambay-tiny --dtype float32 --enforce-eager --max-model-len 512 --max-num-seqs 16 "
        "--reasoning-parser phi4_flash"
    )
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_checkpoint), *flags.split()]
    with serve_subprocess(cmd, log) as (base, _):
        yield base
