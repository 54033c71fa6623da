"""Concurrency, backpressure, disconnects, health, metrics, auth, bad input."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import pytest

pytestmark = pytest.mark.engine
MODEL = "sambay-tiny"


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    values = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)]
    assert values, f"{name} not exported"
    return sum(values)


async def _stream(client: httpx.AsyncClient, base: str, auth: dict, max_tokens: int) -> tuple[int, int]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count with me."}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    async with client.stream("POST", f"{base}/v1/chat/completions", json=body, headers=auth) as r:
        usage, done = None, False
        async for line in r.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                payload = json.loads(line[6:])
                usage = payload.get("usage") or usage
        return r.status_code, (usage["completion_tokens"] if usage and done else -1)


def test_32_concurrent_streams_all_succeed(server, auth):
    async def run():
        async with httpx.AsyncClient(timeout=300) as c:
            return await asyncio.gather(*[_stream(c, server["base"], auth, 16) for _ in range(32)])

    results = asyncio.run(run())
    assert results == [(200, 16)] * 32


def test_burst_over_the_limit_gets_429_and_the_server_stays_up(server, auth):
    max_pending = server["max_pending"]

    async def one(c):
        body = {"model": MODEL, "prompt": "Go", "max_tokens": 48, "ignore_eos": True}
        r = await c.post(f"{server['base']}/v1/completions", json=body, headers=auth)
        return r.status_code, r.headers.get("retry-after"), r.json()

    async def run():
        async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=200)) as c:
            return await asyncio.gather(*[one(c) for _ in range(2 * max_pending + 20)])

    results = asyncio.run(run())
    codes = [code for code, _, _ in results]
    assert set(codes) <= {200, 429} and codes.count(200) >= max_pending // 2 and 429 in codes
    rejected = [r for r in results if r[0] == 429]
    assert all(retry == "1" and body["error"]["type"] == "rate_limit_error" for _, retry, body in rejected)
    assert httpx.get(f"{server['base']}/health", timeout=10).status_code == 200
    assert server["proc"].poll() is None


def test_client_disconnect_aborts_the_engine_request(server, auth):
    async def drop_mid_stream():
        body = {"model": MODEL, "prompt": "Keep going", "max_tokens": 400, "ignore_eos": True, "stream": True}
        async with httpx.AsyncClient(timeout=60) as c:
            async with c.stream("POST", f"{server['base']}/v1/completions", json=body, headers=auth) as r:
                n = 0
                async for line in r.aiter_lines():
                    n += line.startswith("data: ")
                    if n >= 3:
                        break  # leave the stream: closes the connection

    asyncio.run(drop_mid_stream())
    deadline = time.monotonic() + 30
    while metric(server["base"], "vllm:num_requests_running") != 0:
        assert time.monotonic() < deadline, "request still running after the client left"
        time.sleep(0.5)


def _access_line(server, request_id: str, deadline_s: float = 30) -> dict:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for line in server["log"].read_text(errors="replace").splitlines():
            if f'"request_id": "{request_id}"' in line and line.startswith("{"):
                return json.loads(line)
        time.sleep(0.3)
    raise AssertionError(f"no access-log line for {request_id}")


def _status_count(base: str, status: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    pattern = rf'^sambay_server_requests_total\{{route="/v1/completions",status="{status}"\}} (\S+)'
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_non_streamed_request_whose_client_left_is_logged_499(server, auth):
    """vLLM answers such a request 200 ``null`` into the closed connection; what the client got is nothing."""
    before_499, before_200 = _status_count(server["base"], "499"), _status_count(server["base"], "200")
    request_id = f"left-{time.time_ns()}"
    body = {"model": MODEL, "prompt": "Keep going", "max_tokens": 400, "ignore_eos": True}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{server['base']}/v1/completions", json=body, timeout=1.0,
                   headers={**auth, "X-Request-Id": request_id})  # fmt: skip
    line = _access_line(server, request_id)
    assert line["status"] == 499 and line["bytes"] == 0, line
    assert _status_count(server["base"], "499") == before_499 + 1
    assert _status_count(server["base"], "200") == before_200


def test_n_counts_as_n_sequences_against_max_pending(server, auth):
    """A request for n sequences takes n slots of --max-pending while it runs, and gives them back."""
    held_n = server["max_pending"] - 10
    body = {"model": MODEL, "prompt": "Keep going", "max_tokens": 400, "ignore_eos": True, "stream": True}

    async def run():
        async with httpx.AsyncClient(timeout=60) as c:
            async with c.stream("POST", f"{server['base']}/v1/completions", json={**body, "n": held_n},
                                headers=auth) as r:  # fmt: skip
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        break  # running: its n slots are held
                over = await c.post(f"{server['base']}/v1/completions", headers=auth,
                                    json={**body, "stream": False, "max_tokens": 2, "n": 11})  # fmt: skip
                fits = await c.post(f"{server['base']}/v1/completions", headers=auth,
                                    json={**body, "stream": False, "max_tokens": 2, "n": 10})  # fmt: skip
            return over, fits

    over, fits = asyncio.run(run())
    assert over.status_code == 429 and "needs 11 sequences" in over.json()["error"]["message"], over.text
    assert fits.status_code == 200, fits.text
    after = httpx.post(f"{server['base']}/v1/completions", headers=auth, timeout=60,
                       json={**body, "stream": False, "max_tokens": 2, "n": server["max_pending"]})  # fmt: skip
    assert after.status_code == 200, after.text  # every slot came back


def test_health_deep_and_metrics(server, auth):
    # The deep check generates a token: it needs the key (the shallow one does not).
    assert httpx.get(f"{server['base']}/health?deep=true", timeout=60).status_code == 401
    assert httpx.get(f"{server['base']}/health?deep=true", headers=auth, timeout=60).json() == {"status": "ok"}
    assert httpx.get(f"{server['base']}/health", timeout=60).status_code == 200
    for name in (
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
        "sambay_server_requests_total",
    ):
        metric(server["base"], name)


# Validation errors are 400, as vLLM's front end answers them (the hand-written server used 422).
BAD = [
    # (method, path, body or raw string, headers, expected status, expected param / message fragment)
    ("POST", "/v1/chat/completions", "{not json", None, 400, "JSON"),
    ("POST", "/v1/chat/completions", {"model": MODEL}, None, 400, "messages"),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": []}, None, 400, "messages"),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": "hi"}, None, 400, "messages"),
    (
        "POST",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]},
        None,
        400,
        "role",
    ),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]},
        None,
        404,
        "model",
    ),
    (
        "POST",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
        None,
        400,
        "max_tokens",
    ),
    (
        "POST",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"},
        None,
        400,
        "max_tokens",
    ),
    (
        "POST",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": -1},
        None,
        400,
        "temperature",
    ),
    (
        "POST",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "top_p": 0},
        None,
        400,
        "top_p",
    ),
    (
        "POST",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 0},
        None,
        400,
        "n",
    ),
    (
        "POST",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "top_logprobs": 3},
        None,
        400,
        "logprobs",
    ),
    (
        "POST",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 100000},
        None,
        400,
        "max_tokens",
    ),
    ("POST", "/v1/completions", {"model": MODEL, "prompt": "word " * 600}, None, 400, "context"),
    ("POST", "/v1/completions", {"model": MODEL, "prompt": ""}, None, 400, "prompt"),
    ("POST", "/v1/completions", {"model": MODEL, "prompt": [10**9]}, None, 400, "vocabulary"),
    (
        "POST",
        "/v1/completions",
        {"model": MODEL, "prompt": "x", "min_tokens": 9, "max_tokens": 3},
        None,
        400,
        "min_tokens",
    ),
    ("POST", "/v1/completions", {"model": MODEL, "prompt": "x", "stop": 5}, None, 400, "stop"),
    ("POST", "/v1/completions", {"model": MODEL, "prompt": "x"}, {"Authorization": "Bearer wrong"}, 401, "API key"),
    ("GET", "/v1/models", None, {}, 401, "API key"),
    ("GET", "/v1/nope", None, None, 404, "Not Found"),
]


@pytest.mark.parametrize(
    "method,path,body,headers,status,fragment", BAD, ids=[f"{i}-{b[4]}" for i, b in enumerate(BAD)]
)
def test_bad_input_gets_an_openai_error(server, auth, method, path, body, headers, status, fragment):
    hdrs = auth if headers is None else headers
    kwargs = (
        {"content": body, "headers": {**hdrs, "Content-Type": "application/json"}}
        if isinstance(body, str)
        else {"json": body, "headers": hdrs}
    )
    r = httpx.request(method, f"{server['base']}{path}", timeout=60, **kwargs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert {"message", "type", "param", "code"} <= set(err)
    assert fragment.lower() in (err["message"] + str(err["param"])).lower(), err
