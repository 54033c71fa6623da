"""KeyRateLimit: a token bucket per API key, 429 + Retry-After past the key's rate, others unaffected."""

from __future__ import annotations

import pytest
from asgi_stub import Stub, call

from sambay_server import cli, policies
from sambay_server.policies.key_rate_limit import KeyRateLimit
from sambay_server.policies.settings import SettingsError

A, B = {"Authorization": "Bearer ka"}, {"Authorization": "Bearer kb"}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def limited(monkeypatch):
    """The whole chain with two keys at 2 requests/s each, on a clock the test moves."""
    clock = Clock()
    monkeypatch.setattr(KeyRateLimit, "clock", staticmethod(clock))
    stub = Stub()
    app = policies.compose(stub, policies.settings(api_keys=("ka", "kb"), rate_limit_per_key=2.0))
    return app, clock, stub


def test_a_key_past_its_rate_gets_429_with_retry_after_and_others_do_not(limited):
    app, clock, stub = limited
    assert [call(app, headers=A).status for _ in range(2)] == [200, 200]  # a burst of one second's worth
    over = call(app, headers=A)
    assert over.status == 429 and over.headers["retry-after"] == "1"
    error = over.json()["error"]
    assert error["type"] == "rate_limit_error" and "--rate-limit-per-key" in error["message"]
    assert call(app, headers=B).status == 200  # the other key has its own bucket
    assert len(stub.seen) == 3


def test_the_bucket_refills_at_the_rate(limited):
    app, clock, _ = limited
    for _ in range(2):
        call(app, headers=A)
    assert call(app, headers=A).status == 429
    clock.now += 0.49
    assert call(app, headers=A).status == 429  # 0.98 of a request earned
    clock.now += 0.02
    assert call(app, headers=A).status == 200
    clock.now += 100
    assert [call(app, headers=A).status for _ in range(3)] == [200, 200, 429]  # the burst is capped


def test_only_engine_work_counts_and_slow_rates_say_how_long_to_wait(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(KeyRateLimit, "clock", staticmethod(clock))
    app = policies.compose(Stub(), policies.settings(api_keys=("ka",), rate_limit_per_key=0.1))
    assert call(app, headers=A).status == 200
    assert call(app, "GET", "/v1/models", headers=A).status == 200  # not work for the engine
    assert call(app, "POST", "/tokenize", headers=A).status == 200
    over = call(app, headers=A)
    assert over.status == 429 and over.headers["retry-after"] == "10"


def test_off_by_default_and_refused_without_keys_or_with_a_bad_rate():
    assert not KeyRateLimit.enabled(policies.settings(api_keys=("k",)))
    with pytest.raises(SettingsError, match="--api-key"):
        policies.check(policies.settings(rate_limit_per_key=1.0))
    with pytest.raises(SettingsError, match="positive"):
        policies.check(policies.settings(api_keys=("k",), rate_limit_per_key=0.0))


def test_the_flag(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(cli, "DEFAULT_TINY", tiny_checkpoint)
    monkeypatch.delenv("SAMBAY_API_KEY", raising=False)
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    args = cli.parse_args(["--api-key", "k1", "k2", "--rate-limit-per-key", "5"])
    assert policies.settings_from_args(args).rate_limit_per_key == 5.0 and args.sambay_api_keys == ["k1", "k2"]
    with pytest.raises(SystemExit):
        cli.parse_args(["--rate-limit-per-key", "5"])  # no keys: refused at start-up, naming the flag
