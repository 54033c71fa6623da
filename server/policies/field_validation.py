"""No request field accepted and ignored: 400 naming it, before vLLM sees the request.

- By the route's own request schema (vLLM's pydantic model, nested objects included; see
  :mod:`.request_schema`): unknown keys anywhere (``messages[0].foo``, ``response_format.bar``,
  ``stream_options.bogus``, ``tools[0].function.oops``), and missing required ones (a user message
  without ``content``, which vLLM answers with 200 and OpenAI with 400).
- Beyond the schema: an empty ``messages`` list; chat roles outside OpenAI's set (vLLM renders any
  role string into the prompt); integers beyond 64 bits (vLLM hands e.g. ``top_k`` to torch, which
  overflows into a 500); text with lone surrogates, keys included (``json.loads`` lets ``\\ud800``
  escapes through and the tokenizer then fails with a 500).
- ``/v1/responses`` input items vLLM cannot turn into a prompt: a ``refusal`` content part (vLLM
  <= 0.34 reads ``.text`` of the first part: a 500 when it is a refusal, silently dropped when it
  is not first) and an output message with no content (a 500 before 0.34). Until vLLM handles them;
  the upstream reproduction is in docs/vllm-notes.md.

Malformed JSON and every type error are left to vLLM, which answers them with 400 itself.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from . import routes
from .asgi import Receive, Scope, Send, exchange, send_error
from .policy import Policy
from .request_schema import RequestSchema

CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
BIG_BODY = 1 << 18  # parse and walk larger bodies in a thread, off the event loop


def first_huge_int(value: Any) -> str | None:
    """The path of the first integer beyond int64, or None."""
    stack = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool) and not -(2**63) <= item < 2**63:
            return where or "body"
        if isinstance(item, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return None


def first_invalid_text(value: Any) -> str | None:
    """The path of the first string (key or value) with a lone surrogate, or None."""
    stack = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return where or "body"
        elif isinstance(item, dict):
            for k, v in item.items():
                sub = f"{where}.{k}" if where else str(k)
                stack.append((k, sub))
                stack.append((v, sub))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return None


def first_unusable_input_part(data: dict) -> str | None:
    """The path of the first ``/v1/responses`` input content vLLM cannot use (a ``refusal`` part,
    an empty content list), or None."""
    items = data.get("input")
    if not isinstance(items, list):
        return None
    for i, item in enumerate(items):
        content = item.get("content") if isinstance(item, dict) else None
        if content == [] and item.get("type") == "message" and item.get("role") == "assistant":
            return f"input[{i}].content"
        for j, part in enumerate(content if isinstance(content, list) else ()):
            if isinstance(part, dict) and part.get("type") == "refusal":
                return f"input[{i}].content[{j}].type"
    return None


def refusal(data: Any, schema: RequestSchema | None) -> tuple[str, str] | None:
    """(message, param) for a body that must be refused, or None. ``data`` is the decoded JSON."""
    if not isinstance(data, dict):
        return None  # vLLM answers a body that is not an object
    bad = first_invalid_text(data)
    if bad is not None:
        return f"{bad}: text is not valid Unicode (lone surrogate)", bad
    big = first_huge_int(data)
    if big is not None:
        return f"{big}: integer out of range (beyond 64 bits)", big
    messages = data.get("messages")
    if isinstance(messages, list):
        if not messages:
            return "messages: at least one message is required", "messages"
        for i, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if isinstance(role, str) and role not in CHAT_ROLES:
                where = f"messages[{i}].role"
                return f"{where}: {role[:40]!r} is not a chat role ({', '.join(CHAT_ROLES)})", where
    unusable = first_unusable_input_part(data)
    if unusable is not None:
        if unusable.endswith(".type"):
            return f"{unusable}: 'refusal' content parts are not supported by this server", unusable
        return f"{unusable}: a message needs at least one content part", unusable
    if schema is not None:
        problems = schema.problems(data)
        unknown = [p.path for p in problems if p.kind == "unknown"]
        if unknown:
            listed = ", ".join(unknown)
            return f"unknown field(s) {listed}: this server does not accept and ignore request fields", unknown[0]
        if problems:
            return f"{problems[0]}", problems[0].path
    return None


class FieldValidation(Policy):
    def __init__(self, app, settings) -> None:
        super().__init__(app, settings)
        self.schemas: dict[int, RequestSchema | None] = {}

    def schema_for(self, scope: Scope) -> RequestSchema | None:
        route = routes.route_of(scope)
        if route is None:
            return None
        key = id(route)
        if key not in self.schemas:
            annotation = routes.body_annotation(scope)
            schema = None
            if annotation is not None:
                try:
                    import pydantic

                    schema = RequestSchema(pydantic.TypeAdapter(annotation).json_schema())
                except Exception:  # noqa: BLE001 - a body type without a JSON schema: nothing to walk
                    schema = None
            self.schemas[key] = schema
        return self.schemas[key]

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = exchange(scope).body
        if body:
            schema = self.schema_for(scope)
            if schema is not None:
                found = await asyncio.to_thread(_judge, body, schema) if len(body) > BIG_BODY else _judge(body, schema)
                if found is not None:
                    return await send_error(send, 400, *found)
        await self.app(scope, receive, send)


def _judge(body: bytes, schema: RequestSchema) -> tuple[str, str] | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None  # vLLM answers malformed JSON itself (400)
    return refusal(data, schema)
