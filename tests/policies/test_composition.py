"""The list, the one Settings, the flags made from it, and the --middleware entry."""

from __future__ import annotations

import asyncio
from argparse import Namespace

import pytest
from asgi_stub import Stub, acall, call

from sambay_server import policies
from sambay_server.policies import POLICIES, POLICY_PATHS, Policy, SambayPolicies, Settings
from sambay_server.policies.deep_health import DeepHealth


def test_every_policy_in_the_list_once_from_the_file_the_list_names():
    assert len(set(POLICIES)) == len(POLICIES) == len(POLICY_PATHS)
    for path, policy in zip(POLICY_PATHS, POLICIES, strict=True):
        module, name = path.split(":")
        assert policy.__module__ == f"sambay_server.policies.{module}" and policy.__name__ == name
        assert issubclass(policy, Policy)


def test_option_names_are_unique_and_settings_refuse_unknown_names():
    names = [o.name for o in policies.options()]
    assert len(names) == len(set(names))
    with pytest.raises(TypeError, match="unknown setting"):
        policies.settings(max_pendin=3)


def test_settings_from_args_default_what_is_missing():
    s = policies.settings_from_args(Namespace(max_pending=7, max_model_len=2048))
    assert s.max_pending == 7 and s.max_request_bytes == (1 << 20) + 64 * 2048
    assert s.body_timeout_s == policies.settings().body_timeout_s == 30.0 and s.api_keys == ()


def test_the_middleware_entry_reads_settings_from_vllms_app_state():
    stub = Stub()
    stub.state.args = Namespace(max_pending=0, sambay_api_keys=["k"])
    entry = SambayPolicies(stub)
    r = call(entry, "POST", "/v1/completions", headers={"Authorization": "Bearer k"}, stub=stub)
    assert r.status == 429  # max_pending 0 from the args
    assert call(entry, "POST", "/v1/completions", stub=stub).status == 401
    assert isinstance(entry.chain, POLICIES[0])


def test_order_auth_before_body_and_admission():
    """An unauthenticated request is refused before its body is read or a slot is taken."""
    stub = Stub()
    app = policies.compose(stub, policies.settings(api_keys=("k",), max_pending=1, body_timeout_s=0.1))
    r = call(app, chunks=[b"{"], stall=True, stub=stub)  # would be 408 if the body were read first
    assert r.status == 401


def test_deep_health_generates_one_token_shared_by_concurrent_checks():
    calls = []

    class Engine:
        async def check_health(self):
            calls.append("check")

        async def generate(self, prompt, params, request_id):
            calls.append((prompt["prompt_token_ids"], params.max_tokens))
            await asyncio.sleep(0.1)
            yield None

    stub = Stub(engine=Engine())
    app = DeepHealth(stub, policies.settings())

    async def run():
        return await asyncio.gather(*[acall(app, "GET", "/health", query=b"deep=true", stub=stub) for _ in range(3)])

    results = asyncio.run(run())
    assert [r.status for r in results] == [200] * 3 and results[0].json() == {"status": "ok"}
    assert calls == ["check", ([0], 1)] and not stub.seen


def test_deep_health_failure_is_503():
    class Broken:
        async def check_health(self):
            raise RuntimeError("dead")

    stub = Stub(engine=Broken())
    r = call(DeepHealth(stub, policies.settings()), "GET", "/health", query=b"deep=1", stub=stub)
    assert r.status == 503 and "RuntimeError" in r.json()["error"]["message"]


def test_settings_repr_lists_every_option():
    text = repr(policies.settings())
    assert all(o.name in text for o in policies.options()) and isinstance(policies.settings(), Settings)
