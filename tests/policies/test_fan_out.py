"""FanOut: ``n`` bounded by --max-n, and a request charged every sequence it fans out into."""

from __future__ import annotations

import asyncio

import pytest
from asgi_stub import Stub, acall, call

from sambay_server import policies
from sambay_server.policies.fan_out import sequences

C, P, B = "/v1/chat/completions", "/v1/completions", "/v1/chat/completions/batch"


def chat(**kw):
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (C, chat(), 1),
        (C, chat(n=8), 8),
        (C, chat(n=4, use_beam_search=True), 4),
        (P, {"prompt": "x", "n": 3}, 3),
        (P, {"prompt": [1, 2, 3], "n": 2}, 2),  # one prompt of token ids
        (P, {"prompt": ["a", "b", "c"], "n": 2}, 6),
        (P, {"prompt": [[1, 2], [3]]}, 2),
        (B, {"messages": [[{"role": "user", "content": "a"}]] * 5}, 5),
        (C, [1, 2], 1),
    ],
)
def test_sequences_a_body_fans_out_into(path, body, expected):
    assert sequences(path, body) == expected


def _chain(stub, **values):
    return policies.compose(stub, policies.settings(**values))


def test_n_above_max_n_is_a_400_naming_the_limit():
    stub = Stub()
    r = call(_chain(stub), "POST", C, body=chat(n=5000), stub=stub)
    assert r.status == 400 and r.json()["error"]["param"] == "n"
    assert "--max-n 64" in r.json()["error"]["message"] and not stub.seen


def test_more_sequences_than_max_pending_can_admit_is_a_400():
    stub = Stub()
    r = call(_chain(stub, max_pending=8, max_n=8), "POST", P, body={"prompt": ["a"] * 4, "n": 4}, stub=stub)
    assert r.status == 400 and "16 sequences" in r.json()["error"]["message"] and not stub.seen


def test_n_is_charged_against_max_pending_and_given_back():
    release = asyncio.Event()

    class Slow(Stub):
        async def __call__(self, scope, receive, send):
            await release.wait()
            await super().__call__(scope, receive, send)

    stub = Slow()
    app = _chain(stub, max_pending=10, max_n=8)
    admission = next(a for a in _layers(app) if type(a).__name__ == "Admission")

    async def run():
        held = asyncio.create_task(acall(app, "POST", C, body=chat(n=8), stub=stub))
        await asyncio.sleep(0.05)
        in_use = admission.in_flight
        over = await acall(app, "POST", C, body=chat(n=3), stub=stub)  # 8 + 3 > 10
        fits = asyncio.create_task(acall(app, "POST", C, body=chat(n=2), stub=stub))  # 8 + 2 = 10
        await asyncio.sleep(0.05)
        full = admission.in_flight
        release.set()
        return in_use, over, full, await held, await fits

    in_use, over, full, held, fits = asyncio.run(run())
    assert in_use == 8 and full == 10
    assert (
        over.status == 429
        and over.headers["retry-after"] == "1"
        and "needs 3 sequences" in over.json()["error"]["message"]
    )
    assert held.status == fits.status == 200 and admission.in_flight == 0


def _layers(app):
    while app is not None:
        yield app
        app = getattr(app, "app", None)


def test_max_n_above_max_pending_is_refused_at_start_up():
    with pytest.raises(policies.SettingsError, match="--max-n 300 is more than --max-pending 256"):
        policies.check(policies.settings(max_n=300))
