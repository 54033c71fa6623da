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

- Nesting deeper than ``--max-json-depth`` (a body nested beyond what Python's parser can recurse into
  raised ``RecursionError`` in the old body check: a 500). The decoded body is kept on the request's
  :class:`~.asgi.Exchange` for the policies after this one (``fan_out``, ``reply_size``).

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
from .settings import Option, SettingsError

CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
BIG_BODY = 1 << 18  # parse and walk larger bodies in a thread, off the event loop
# vLLM refuses a response_format schema nested deeper than 64 levels; the request around it adds
# at most a handful (response_format.json_schema.schema, tools[i].function.parameters), and a
# schema level is one or two JSON levels ("items" / "properties": {name: ...}). 160 admits every
# request vLLM can serve and stays far below the ~1000 levels where Python's parser gives up.
DEFAULT_MAX_JSON_DEPTH = 160
NOT_JSON = object()  # Exchange.data for a body that is not JSON (vLLM answers it)


def too_deep(value: Any, limit: int) -> bool:
    """Whether objects/arrays nest more than ``limit`` levels (iterative: no recursion to overflow)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


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
    options = (
        Option(
            "max_json_depth",
            DEFAULT_MAX_JSON_DEPTH,
            "deepest nesting of objects/arrays a request body may have; deeper gets 400 "
            f"(default {DEFAULT_MAX_JSON_DEPTH}: room for any response_format schema vLLM accepts)",
            type=int,
        ),
    )

    @classmethod
    def check(cls, settings) -> None:
        if not 8 <= settings.max_json_depth <= 900:
            raise SettingsError(
                f"--max-json-depth must be between 8 (the shape of a chat request) and 900 (below Python's "
                f"recursion limit, which vLLM's own parsing meets); got {settings.max_json_depth}"
            )

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
        record = exchange(scope)
        if record.body:
            args = (record.body, self.schema_for(scope), self.settings.max_json_depth)
            big = len(record.body) > BIG_BODY
            record.data, found = await asyncio.to_thread(_judge, *args) if big else _judge(*args)
            if found is not None:
                return await send_error(send, 400, *found)
        await self.app(scope, receive, send)


def _judge(body: bytes, schema: RequestSchema | None, max_depth: int) -> tuple[Any, tuple[str, str] | None]:
    """(the decoded body or NOT_JSON, (message, param) of a refusal or None)."""
    deep = f"request body nests objects/arrays more than {max_depth} levels deep (--max-json-depth)"
    try:
        data = json.loads(body)
    except RecursionError:
        return NOT_JSON, (deep, "body")
    except (ValueError, UnicodeDecodeError):
        return NOT_JSON, None  # vLLM answers malformed JSON itself (400)
    if too_deep(data, max_depth):
        return data, (deep, "body")
    return data, refusal(data, schema) if schema is not None else None
