"""ReplySize: a reply too large to build in one piece on the event loop is refused up front."""

from __future__ import annotations

import pytest
from asgi_stub import Stub, call

from sambay_server import policies
from sambay_server.policies.reply_size import reply_product

C, P = "/v1/chat/completions", "/v1/completions"


def chat(**kw):
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}


def entries(path, body, max_model_len=4096):
    return reply_product(path, body, max_model_len, 200064).entries


def test_the_product_counts_what_a_reply_can_hold():
    assert entries(C, chat(max_tokens=4000, logprobs=True, top_logprobs=20)) == 4000 * 21
    assert entries(C, chat(max_tokens=4000, logprobs=True, top_logprobs=20, n=2)) == 2 * 4000 * 21
    assert entries(C, chat(max_tokens=4000, logprobs=True, top_logprobs=20, stream=True)) == 0  # token by token
    assert entries(C, chat(max_tokens=4000)) == 0  # no logprobs asked
    assert entries(C, chat(logprobs=True)) == 4096  # no max_tokens: up to the context
    assert entries(P, {"prompt": "x", "logprobs": 5}) == 16 * 6  # completions' default max_tokens 16
    assert entries(P, {"prompt": list(range(1000)), "logprobs": 1, "echo": True, "max_tokens": 1}) == 1000 * 2 + 2
    assert entries(P, {"prompt": ["ab", "cd"], "prompt_logprobs": 2, "max_tokens": 1}) == 2 * 18 * 3
    assert entries(C, chat(max_tokens=10, logprobs=True, top_logprobs=-1)) == 10 * 200065  # every token


def _post(body, path=C, **values):
    stub = Stub()
    r = call(policies.compose(stub, policies.settings(**values)), "POST", path, body=body, stub=stub)
    return r, stub


def test_a_reply_past_the_limit_is_a_400_with_the_product_spelled_out():
    r, stub = _post(chat(max_tokens=4000, logprobs=True, top_logprobs=20))
    error = r.json()["error"]
    assert r.status == 400 and not stub.seen
    assert (
        "84000" in error["message"] and "--max-reply-logprobs" in error["message"] and "stream=true" in error["message"]
    )


@pytest.mark.parametrize(
    "body",
    [
        chat(max_tokens=4000, logprobs=True, top_logprobs=20, stream=True),
        chat(max_tokens=190, logprobs=True, top_logprobs=20),  # 3990 entries
        chat(max_tokens=8000),
    ],
)
def test_what_fits_or_streams_passes(body):
    r, stub = _post(body)
    assert r.status == 200 and stub.seen


def test_zero_turns_it_off():
    r, _ = _post(chat(max_tokens=4000, logprobs=True, top_logprobs=20), max_reply_logprobs=0)
    assert r.status == 200
