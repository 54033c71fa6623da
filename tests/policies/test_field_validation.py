"""FieldValidation: vLLM's own request schema, nested objects included, plus the refusals beyond it.

The routes are built with vLLM's real request models (what ``sambay-serve`` finds on vLLM's routes),
so these tests follow the schema of the installed release. (No postponed annotations here: FastAPI
must see the model classes on the endpoints.)
"""

import pytest
from asgi_stub import Stub, call
from fastapi import FastAPI

from sambay_server import policies
from sambay_server.policies.body_limits import BodyLimits
from sambay_server.policies.field_validation import FieldValidation

C, P, R = "/v1/chat/completions", "/v1/completions", "/v1/responses"


@pytest.fixture(scope="module")
def vllm_routes():
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.entrypoints.openai.responses.protocol import ResponsesRequest

    app = FastAPI()

    @app.post(C)
    async def chat(request: ChatCompletionRequest):  # noqa: ARG001
        return {}

    @app.post(P)
    async def completions(request: CompletionRequest):  # noqa: ARG001
        return {}

    @app.post(R)
    async def responses(request: ResponsesRequest):  # noqa: ARG001
        return {}

    return app.routes


@pytest.fixture
def check(vllm_routes):
    """POST ``body`` to ``path`` through BodyLimits + FieldValidation; (status, error or None)."""

    def run(body, path=C):
        stub = Stub(routes=vllm_routes)
        settings = policies.settings()
        app = BodyLimits(FieldValidation(stub, settings), settings)
        r = call(app, "POST", path, body=body, stub=stub)
        return r.status, (r.json()["error"] if r.status != 200 else None)

    return run


def chat(*messages, **kw):
    return {"model": "m", "messages": list(messages) or [{"role": "user", "content": "hi"}], **kw}


USER = {"role": "user", "content": "hi"}


def said(*parts):
    """A /v1/responses body replaying an earlier assistant output message with these content parts."""
    output = {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed", "content": list(parts)}
    return {"model": "m", "input": [USER, output, USER]}


REFUSAL = {"type": "refusal", "refusal": "I cannot help with that."}
TEXT = {"type": "output_text", "text": "ok", "annotations": []}

REFUSED = {
    # unknown keys, nested: (body, path) -> the param named
    "top-level": (chat(guided_json={}), C, "guided_json"),
    "in-a-message": (chat({"role": "user", "content": "hi", "foo": 1}), C, "messages[0].foo"),
    "in-a-content-part": (
        chat({"role": "user", "content": [{"type": "text", "text": "x", "zz": 1}]}),
        C,
        "messages[0].content[0].zz",
    ),
    "in-response-format": (chat(response_format={"type": "json_object", "bar": 2}), C, "response_format.bar"),
    "in-json-schema-format": (
        chat(response_format={"type": "json_schema", "json_schema": {"name": "n", "x": 1}}),
        C,
        "response_format.json_schema.x",
    ),
    "in-stream-options": (
        chat(stream=True, stream_options={"include_usage": True, "bogus": 1}),
        C,
        "stream_options.bogus",
    ),
    "in-a-tool": (
        chat(tools=[{"type": "function", "function": {"name": "f", "oops": 3}}]),
        C,
        "tools[0].function.oops",
    ),
    "beside-a-tool": (chat(tools=[{"type": "function", "function": {"name": "f"}, "extra": 1}]), C, "tools[0].extra"),
    "in-tool-choice": (
        chat(tool_choice={"type": "function", "function": {"name": "f", "y": 1}}),
        C,
        "tool_choice.function.y",
    ),
    "in-a-tool-call": (
        chat(
            USER,
            {
                "role": "assistant",
                "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}", "z": 1}}],
            },
        ),
        C,
        "messages[1].tool_calls[0].function.z",
    ),
    "completions": (
        ({"model": "m", "prompt": "x", "stream_options": {"nope": 1}, "stream": True}),
        P,
        "stream_options.nope",
    ),
    # missing required content (OpenAI: 400; vLLM's custom-role branch lets it through)
    "user-without-content": (chat({"role": "user"}), C, "messages[0].content"),
    "system-without-content": (chat({"role": "system"}, USER), C, "messages[0].content"),
    "tool-without-call-id": (chat(USER, {"role": "tool", "content": "r"}), C, "messages[1].tool_call_id"),
    "text-part-without-text": (
        chat({"role": "user", "content": [{"type": "text"}]}),
        C,
        "messages[0].content[0].text",
    ),
    # beyond the schema
    "no-messages": (chat(messages=[]) | {"messages": []}, C, "messages"),
    "unknown-role": (chat({"role": "wizard", "content": "x"}), C, "messages[0].role"),
    "lone-surrogate": (chat({"role": "user", "content": "a\ud800"}), C, "messages[0].content"),
    "surrogate-in-a-key": (chat(**{"x\udfff": 1}), C, "x\udfff"),
    "beyond-int64": (chat(top_k=10**40), C, "top_k"),
    # /v1/responses input vLLM cannot use: a 500 (first part, empty content) or dropped (later part)
    "responses-refusal-part": (said(REFUSAL), R, "input[1].content[0].type"),
    "responses-refusal-after-text": (said(TEXT, REFUSAL), R, "input[1].content[1].type"),
    "responses-empty-output-message": (said(), R, "input[1].content"),
}

ACCEPTED = {
    "plain": chat(),
    "all-roles": chat(
        {"role": "system", "content": "s"},
        {"role": "developer", "content": "d"},
        USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "content": "r", "tool_call_id": "1"},
    ),
    "assistant-reasoning": chat(USER, {"role": "assistant", "content": "x", "reasoning": "r"}, USER),
    "assistant-reasoning-content": chat(USER, {"role": "assistant", "content": "x", "reasoning_content": "r"}, USER),
    "named-user": chat({"role": "user", "content": "x", "name": "ann"}),
    "text-parts": chat({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}),
    "free-form-objects": chat(
        logit_bias={"5": 1.0},
        chat_template_kwargs={"enable_thinking": True, "x": [1]},
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "n", "schema": {"type": "object", "anything": {"goes": 1}}},
        },
    ),
    "tools": chat(
        tools=[
            {
                "type": "function",
                "function": {"name": "f", "description": "d", "parameters": {"type": "object", "properties": {}}},
            }
        ],
        tool_choice="auto",
    ),
    "stream-options": chat(stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True}),
    "vllm-extensions": chat(top_k=5, min_p=0.1, ignore_eos=True, min_tokens=1, repetition_penalty=1.1, seed=2**62),
    "completions": {"model": "m", "prompt": [1, 2, 3], "max_tokens": 2, "echo": True, "logprobs": 1},
    "responses-replayed-output": said(TEXT),
    # what vLLM refuses itself (in its own words) is left to it: type errors, malformed JSON, and
    # required keys outside a tagged union member
    "message-without-role": chat({"content": "x"}),
    "no-messages-field": {"model": "m"},
    "tool-without-function-name": chat(tools=[{"type": "function", "function": {"description": "d"}}]),
    "wrong-type": chat(max_tokens="ten"),
    "messages-not-a-list": {"model": "m", "messages": "hi"},
    "unknown-part-type": chat({"role": "user", "content": [{"type": "hologram", "x": 1}]}),
    "not-json": b"{not json",
    "not-an-object": [1, 2],
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_with_the_path_named(check, name):
    body, path, param = REFUSED[name]
    status, error = check(body, path)
    assert status == 400, error
    assert error["param"] == param and error["type"] == "BadRequestError", error
    assert param.split("[")[0].split(".")[0] in error["message"]


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_accepted_bodies_reach_vllm(check, name):
    body = ACCEPTED[name]
    status, error = check(body, P if name == "completions" else R if name.startswith("responses") else C)
    assert status == 200, error


def test_several_unknown_keys_are_listed(check):
    _, error = check(chat({"role": "user", "content": "x", "a": 1, "b": 2}))
    assert "messages[0].a" in error["message"] and "messages[0].b" in error["message"]


def test_routes_without_a_body_model_pass(stub):
    settings = policies.settings()
    app = BodyLimits(FieldValidation(stub, settings), settings)
    assert call(app, "POST", "/nope", body={"anything": 1}, stub=stub).status == 200


def test_client_values_do_not_grow_the_schema_cache():
    import pydantic
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    from sambay_server.policies.request_schema import RequestSchema

    schema = RequestSchema(pydantic.TypeAdapter(ChatCompletionRequest).json_schema())
    schema.problems(chat({"role": "user", "content": [{"type": "text", "text": "a"}]}))
    size = len(schema._cache)
    for i in range(50):
        schema.problems(chat({"role": "user", "content": [{"type": f"made-up-{i}", "text": "a"}]}))
    assert len(schema._cache) <= size + 2


def _nested(depth: int, leaf: str = "1") -> bytes:
    return (b'{"model":"m","messages":[{"role":"user","content":"hi"}],"chat_template_kwargs":{"x":'
            + b"[" * depth + leaf.encode() + b"]" * depth + b"}}")  # fmt: skip


@pytest.mark.parametrize("depth", [200, 990, 5000, 100_000])
def test_nesting_past_the_limit_is_a_400_naming_it(check, depth):
    # 990 parses and used to reach vLLM (accepted: a 200); 5000+ raised RecursionError in the parser
    status, error = check(_nested(depth))
    assert status == 400 and "--max-json-depth" in error["message"] and error["param"] == "body", error


def test_a_schema_as_deep_as_vllm_accepts_is_not_refused(check):
    schema: dict = {"type": "string"}
    for _ in range(64):  # vLLM's own limit on a response_format schema's nesting
        schema = {"type": "object", "properties": {"a": schema}}
    body = chat(response_format={"type": "json_schema", "json_schema": {"name": "deep", "schema": schema}})
    status, error = check(body)
    assert status == 200, error


def test_max_json_depth_is_checked_at_start_up():
    with pytest.raises(policies.SettingsError, match="--max-json-depth"):
        policies.check(policies.settings(max_json_depth=5000))
