"""What sambay-serve adds to vLLM's own OpenAI server, as one pure-ASGI middleware.

vLLM loads it through its public ``--middleware`` flag (``sambay-serve`` passes
``--middleware sambay_server.middleware.SambayMiddleware``), so every route and field is vLLM's
and this layer only guards, counts and annotates. Pure ASGI (no ``BaseHTTPMiddleware``) so that
streaming and vLLM's disconnect detection (it reads ``http.disconnect`` from ``receive``) keep
working. Its settings are read from ``app.state.args`` (the parsed ``sambay-serve`` arguments,
which vLLM stores there); a plain ``vllm serve --middleware ...`` without them gets the defaults
of :class:`Settings`.

Order of checks for an HTTP request: request id; dead engine → 503; auth (everything but
``/health`` and ``/metrics``); admission (429 past ``--max-pending``); body (413 past the size
limit before anything parses it, 408 when it does not arrive in time); request fields (400 for
fields vLLM would accept and ignore, and for text that is not valid Unicode); then vLLM. On the
way out: ``reasoning_content`` mirrored beside ``reasoning``, SSE anti-buffering headers, one
JSON access-log line and a metric labelled by route template.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from .errors import error_body

log = logging.getLogger("sambay_server.access")
server_log = logging.getLogger("sambay_server")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

OPEN_PATHS = ("/health", "/metrics")
# POSTs that only tokenize are cheap and not admitted (they never reach the engine).
UNCOUNTED_POSTS = ("/tokenize", "/detokenize")
CHAT_PATHS = ("/v1/chat/completions",)
# vLLM renders any role string into the prompt; an unknown one is almost always a client bug.
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_REASONING_KEY = re.compile(rb'"reasoning(?:_content)?"\s*:')
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Set when the engine died; the CLI exits non-zero with it (orchestrators restart the process).
ENGINE_DEAD_EXIT_CODE = 3
state = {"engine_dead": False}


@dataclass
class Settings:
    """The middleware's knobs (``sambay-serve`` flags of the same names)."""

    api_keys: list[str] = field(default_factory=list)
    max_pending: int = 256
    max_request_bytes: int = 1 << 20
    body_timeout_s: float = 30.0
    exit_on_engine_death_s: float | None = None  # None: leave exiting to whoever embeds the app (Ray)

    @classmethod
    def from_args(cls, args) -> Settings:
        get = lambda name, default: getattr(args, name, default)  # noqa: E731 - local shorthand
        return cls(
            api_keys=list(get("sambay_api_keys", []) or []),
            max_pending=get("max_pending", 256),
            max_request_bytes=get("max_request_bytes", None) or (1 << 20),
            body_timeout_s=get("body_timeout_s", 30.0),
            exit_on_engine_death_s=get("exit_on_engine_death_s", None),
        )


def _send_json(send: Send, status: int, body: dict, headers: list | None = None):
    payload = json.dumps(body).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]

    async def go():
        await send({"type": "http.response.start", "status": status, "headers": hdrs + (headers or [])})
        await send({"type": "http.response.body", "body": payload})

    return go()


class _BodyTooLarge(Exception):
    pass


class SambayMiddleware:
    """sambay-serve's extras around vLLM's FastAPI app (see the module docstring)."""

    def __init__(self, app) -> None:
        self.app = app
        self.settings: Settings | None = None
        self.key_digests: list[bytes] = []
        self.in_flight = 0
        self.deep_health: asyncio.Future | None = None
        self.monitor: asyncio.Task | None = None
        self.routes: list | None = None
        self.body_models: dict[str, Any] = {}
        from prometheus_client import REGISTRY, Counter

        try:
            self.requests_total = Counter(
                "sambay_server_requests", "HTTP requests by route template and status", ["route", "status"]
            )
        except ValueError:  # already registered (several apps in one process)
            self.requests_total = REGISTRY._names_to_collectors["sambay_server_requests"]

    # -- setup -------------------------------------------------------------------------------
    def _configure(self, scope: Scope) -> None:
        if self.settings is not None:
            return
        app = scope.get("app")
        args = getattr(getattr(app, "state", None), "args", None)
        self.settings = Settings.from_args(args) if args is not None else Settings()
        self.key_digests = [hashlib.sha256(k.encode()).digest() for k in self.settings.api_keys]
        self.routes = list(getattr(app, "routes", []) or [])

    def _engine(self, scope: Scope):
        return getattr(getattr(scope.get("app"), "state", None), "engine_client", None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(scope, receive, send)
        self._configure(scope)
        if scope["type"] == "websocket":
            if self.key_digests and not self._authorized(scope):
                return await send({"type": "websocket.close", "code": 1008})
            return await self.app(scope, receive, send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        await self._http(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watched_receive():
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._configure(scope)
                _mark_deliberate_shutdown(self._engine(scope))
                self.monitor = asyncio.ensure_future(self._watch_engine(scope))
            elif message["type"] == "lifespan.shutdown":
                # vLLM's error handler stops the server itself the moment a request meets the dead
                # engine, which can be before the next poll below: judge once more on the way out.
                if _engine_died(self._engine(scope)):
                    state["engine_dead"] = True
                if self.monitor is not None:
                    self.monitor.cancel()
            return message

        await self.app(scope, watched_receive, send)

    async def _watch_engine(self, scope: Scope) -> None:
        """Poll the engine client twice a second; once it is dead, stop the HTTP server (and, under
        the CLI, end the process a few seconds later whatever is still open) so the orchestrator
        restarts it. vLLM's own watchdog does the first part every 5 s; this makes it prompt."""
        while True:
            await asyncio.sleep(0.5)
            engine = self._engine(scope)
            if not _engine_died(engine):
                continue
            state["engine_dead"] = True
            server_log.error("engine died (%r); stopping the server", getattr(engine, "dead_error", None))
            server = getattr(scope["app"].state, "server", None)
            if server is not None:
                server.should_exit = True
            deadline = self.settings.exit_on_engine_death_s if self.settings else None
            if deadline is not None:
                asyncio.get_running_loop().call_later(deadline, os._exit, ENGINE_DEAD_EXIT_CODE)
            return

    # -- the HTTP path -----------------------------------------------------------------------
    def _authorized(self, scope: Scope) -> bool:
        given = b""
        for name, value in scope.get("headers") or []:
            if name == b"authorization":
                given = value
        if not given.startswith(b"Bearer "):
            return False
        digest = hashlib.sha256(given[7:]).digest()
        return any(secrets.compare_digest(digest, d) for d in self.key_digests)

    def _route_template(self, scope: Scope) -> str:
        from starlette.routing import Match

        for route in self.routes or []:
            try:
                match, _ = route.matches(scope)
            except Exception:  # noqa: BLE001 - a route that cannot judge this scope is not it
                continue
            if match == Match.FULL:
                return getattr(route, "path", "other")
        return "unmatched"

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        settings = self.settings
        method, path = scope["method"], scope["path"]
        request_id = self._request_id(scope)
        status = {"code": 0, "bytes": 0}
        admitted = False

        async def send_logged(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers") or [])
                headers.append((b"x-request-id", request_id.encode()))
                if any(k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers):
                    # Behind nginx-style proxies an SSE stream is otherwise buffered (TTFT lies).
                    headers += [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                status["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            deep = path == "/health" and _query_flag(scope, "deep")
            open_path = path.startswith(OPEN_PATHS) and not deep
            if state["engine_dead"] and not open_path:
                return await _send_json(
                    send_logged, 503, error_body(503, "the engine is dead; the server is restarting")
                )
            if self.key_digests and method != "OPTIONS" and not open_path and not self._authorized(scope):
                return await _send_json(
                    send_logged,
                    401,
                    error_body(401, "missing or invalid API key (Authorization: Bearer ...)"),
                    [(b"www-authenticate", b"Bearer")],
                )
            counted = deep or (method == "POST" and not path.startswith(UNCOUNTED_POSTS))
            if counted:
                if self.in_flight >= settings.max_pending:
                    return await _send_json(
                        send_logged,
                        429,
                        error_body(
                            429,
                            f"server busy: {self.in_flight} requests in flight (--max-pending "
                            f"{settings.max_pending}); retry later",
                        ),
                        [(b"retry-after", b"1")],
                    )
                self.in_flight += 1
                admitted = True
            if deep:
                return await self._deep_health(scope, send_logged)
            if method in ("POST", "PUT", "PATCH"):
                replay = await self._read_body(scope, receive, send_logged)
                if replay is None:
                    return
                receive = replay
            if path in CHAT_PATHS:
                send_logged = _ReasoningMirror(send_logged).send
            engine = self._engine(scope)
            if engine is not None:
                send_logged = _DeadEngineAs503(send_logged, engine).send
            send_logged = _OpenAIErrors(send_logged).send
            await self.app(scope, receive, send_logged)
        finally:
            if admitted:
                self.in_flight -= 1
            route = self._route_template(scope)
            code = status["code"] or 499  # no response started: the client went away first
            self.requests_total.labels(route, str(code)).inc()
            log.info(
                json.dumps(
                    {
                        "request_id": request_id,
                        "method": method,
                        "route": route,
                        "path": path[:200],
                        "status": code,
                        "bytes": status["bytes"],
                        "latency_ms": round((time.perf_counter() - start) * 1e3, 1),
                    }
                )
            )

    def _request_id(self, scope: Scope) -> str:
        """The client's X-Request-Id if it is sane, else a fresh one; passed on to vLLM, which
        names its engine request after it, so the access log and the engine log agree."""
        headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"x-request-id"]
        given = next((v for k, v in scope.get("headers") or [] if k == b"x-request-id"), b"").decode("latin-1")
        request_id = given if _REQUEST_ID_OK.match(given) else f"req-{uuid.uuid4().hex[:16]}"
        scope["headers"] = headers + [(b"x-request-id", request_id.encode())]
        return request_id

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Read the whole body under a size limit and a deadline, check its fields, and return a
        ``receive`` that replays it. None: an error was answered (or the client left)."""
        settings = self.settings
        limit = settings.max_request_bytes
        declared = next((v for k, v in scope.get("headers") or [] if k == b"content-length"), None)
        too_large = error_body(413, f"request body larger than {limit} bytes (--max-request-bytes)")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _send_json(send, 400, error_body(400, "invalid Content-Length"))
                return None
            if size > limit:
                await _send_json(send, 413, too_large, [(b"connection", b"close")])
                return None
        chunks: list[bytes] = []
        total = 0

        async def collect() -> bool:
            nonlocal total
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return False
                chunk = message.get("body", b"")
                total += len(chunk)
                if total > limit:
                    raise _BodyTooLarge
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return True

        try:
            complete = await asyncio.wait_for(collect(), timeout=settings.body_timeout_s)
        except _BodyTooLarge:
            await _send_json(send, 413, too_large, [(b"connection", b"close")])
            return None
        except TimeoutError:
            await _send_json(
                send,
                408,
                error_body(408, f"request body not received within {settings.body_timeout_s:g} s (--body-timeout-s)"),
                [(b"connection", b"close")],
            )
            return None
        if not complete:
            return None
        body = b"".join(chunks)
        problem = await self._check_fields(scope, body)
        if problem is not None:
            await _send_json(send, 400, error_body(400, problem[0], problem[1]))
            return None
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the client's disconnect, as vLLM expects

        return replay

    def _body_model(self, scope: Scope):
        """The pydantic request model of the route this request goes to (vLLM's own classes, found
        on the route, so nothing is imported from vLLM's moving protocol modules)."""
        from starlette.routing import Match

        key = f"{scope['method']} {scope['path']}"
        if key in self.body_models:
            return self.body_models[key]
        model = None
        for route in self.routes or []:
            try:
                match, _ = route.matches(scope)
            except Exception:  # noqa: BLE001
                continue
            if match == Match.FULL:
                dependant = getattr(route, "dependant", None)
                for param in getattr(dependant, "body_params", None) or []:
                    annotation = getattr(getattr(param, "field_info", None), "annotation", None)
                    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                        model = annotation
                break
        if len(self.body_models) < 256:  # unmatched paths vary; only real routes are worth caching
            self.body_models[key] = model
        return model

    async def _check_fields(self, scope: Scope, body: bytes) -> tuple[str, str | None] | None:
        model = self._body_model(scope)
        if model is None or not body:
            return None
        try:
            data = await asyncio.to_thread(json.loads, body) if len(body) > 1 << 18 else json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None  # vLLM answers malformed JSON itself (400)
        if not isinstance(data, dict):
            return None
        known = _field_names(model)
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            return (
                f"unknown field(s) {', '.join(unknown)}: this server does not accept and ignore request fields",
                unknown[0],
            )
        options = data.get("stream_options")
        if isinstance(options, dict):
            extra = sorted(set(options) - {"include_usage", "continuous_usage_stats"})
            if extra:
                return f"unknown stream_options field(s) {', '.join(extra)}", "stream_options"
        messages = data.get("messages")
        if isinstance(messages, list):
            if not messages:
                return "messages: at least one message is required", "messages"
            for i, message in enumerate(messages):
                role = message.get("role") if isinstance(message, dict) else None
                if isinstance(role, str) and role not in CHAT_ROLES:
                    return (
                        f"messages[{i}].role: {role[:40]!r} is not a chat role ({', '.join(CHAT_ROLES)})",
                        f"messages[{i}].role",
                    )
        big = _first_huge_int(data)
        if big is not None:
            return f"{big}: integer out of range (beyond 64 bits)", big
        bad = _first_invalid_text(data)
        if bad is not None:
            return f"{bad}: text is not valid Unicode (lone surrogate)", bad
        return None

    async def _deep_health(self, scope: Scope, send: Send) -> None:
        """Generate one token. One generation at a time: concurrent deep checks share it, so the
        endpoint cannot be used to multiply engine load."""
        engine = self._engine(scope)
        if self.deep_health is None or self.deep_health.done():
            self.deep_health = asyncio.ensure_future(_one_token(engine))
        try:
            await asyncio.wait_for(asyncio.shield(self.deep_health), timeout=60)
        except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
            return await _send_json(send, 503, error_body(503, f"engine unhealthy: {type(exc).__name__}"))
        await _send_json(send, 200, {"status": "ok"})


def _engine_died(engine) -> bool:
    """Errored and not stopped on purpose (on SIGTERM vLLM shuts the engine down first)."""
    return (
        engine is not None
        and bool(getattr(engine, "errored", False))
        and not getattr(engine, "_sambay_stopping", False)
    )


def _mark_deliberate_shutdown(engine) -> None:
    """After ``engine.shutdown()`` vLLM's client reports ``errored`` too; wrap that one method of
    this engine object so a SIGTERM shutdown is not mistaken for the engine dying."""
    original = getattr(engine, "shutdown", None)
    if original is None or getattr(engine, "_sambay_stopping", None) is not None:
        return

    def shutdown(*args, **kwargs):
        engine._sambay_stopping = True
        return original(*args, **kwargs)

    engine._sambay_stopping = False
    engine.shutdown = shutdown


async def _one_token(engine) -> None:
    from vllm import SamplingParams, TokensPrompt

    await engine.check_health()
    params = SamplingParams(max_tokens=1, temperature=0.0)
    async for _ in engine.generate(TokensPrompt(prompt_token_ids=[0]), params, f"health-{uuid.uuid4().hex}"):
        pass


def _query_flag(scope: Scope, name: str) -> bool:
    from urllib.parse import parse_qs

    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name, [])
    return any(v.lower() in ("1", "true", "yes") for v in values)


def _field_names(model) -> set[str]:
    names = set()
    for name, info in model.model_fields.items():
        names.add(name)
        if getattr(info, "alias", None):
            names.add(info.alias)
    return names


def _first_huge_int(value, path: str = "") -> str | None:
    """The path of the first integer beyond int64: vLLM passes e.g. ``top_k`` on to torch, which
    overflows (a 500); no field of this API means anything that large."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool) and not -(2**63) <= item < 2**63:
            return where or "body"
        if isinstance(item, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return None


def _first_invalid_text(value, path: str = "") -> str | None:
    """The path of the first string (key or value) with a lone surrogate, which ``json.loads``
    lets through from ``\\ud800`` escapes and tokenizers then fail on."""
    stack = [(value, path)]
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


class _ReasoningMirror:
    """Adds ``reasoning_content`` beside ``reasoning`` (and the reverse) in chat responses, whole
    and streamed: vLLM since 0.11 names the field ``reasoning``, many clients still read the older
    ``reasoning_content``. Bodies without either key pass through untouched."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.kind = None  # "json" | "sse" | None
        self.buffer = b""
        self.start: dict | None = None

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            ctype = next((v for k, v in message.get("headers") or [] if k.lower() == b"content-type"), b"")
            self.kind = (
                "sse"
                if ctype.startswith(b"text/event-stream")
                else ("json" if ctype.startswith(b"application/json") and message["status"] == 200 else None)
            )
            if self.kind == "json":  # the length changes: held until the body is complete
                self.start = message
                return
            return await self._send(message)
        if message["type"] != "http.response.body" or self.kind is None:
            return await self._send(message)
        more = message.get("more_body", False)
        if self.kind == "json":
            self.buffer += message.get("body", b"")
            if more:
                return
            body = self.buffer
            if _REASONING_KEY.search(body):
                body = await _mirror_json(body)
            headers = [(k, v) for k, v in self.start.get("headers") or [] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await self._send({**self.start, "headers": headers})
            return await self._send({"type": "http.response.body", "body": body, "more_body": False})
        data = self.buffer + message.get("body", b"")
        events, _, self.buffer = data.rpartition(b"\n\n")
        out = b""
        if events:
            for event in (events + b"\n\n").split(b"\n\n")[:-1]:
                out += (_mirror_event(event) if _REASONING_KEY.search(event) else event) + b"\n\n"
        if not more and self.buffer:
            out, self.buffer = out + self.buffer, b""
        if out or not more:
            await self._send({"type": "http.response.body", "body": out, "more_body": more})


def _mirror(obj) -> None:
    for choice in obj.get("choices") or []:
        for key in ("message", "delta"):
            part = choice.get(key) if isinstance(choice, dict) else None
            if isinstance(part, dict):
                if "reasoning" in part and "reasoning_content" not in part:
                    part["reasoning_content"] = part["reasoning"]
                elif "reasoning_content" in part and "reasoning" not in part:
                    part["reasoning"] = part["reasoning_content"]


async def _mirror_json(body: bytes) -> bytes:
    def work() -> bytes:
        try:
            obj = json.loads(body)
        except ValueError:
            return body
        if isinstance(obj, dict):
            _mirror(obj)
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()

    return await asyncio.to_thread(work) if len(body) > 1 << 18 else work()


def _mirror_event(event: bytes) -> bytes:
    lines = event.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(b"data: ") and line != b"data: [DONE]":
            with contextlib.suppress(ValueError):
                obj = json.loads(line[6:])
                if isinstance(obj, dict):
                    _mirror(obj)
                    lines[i] = b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    return b"\n".join(lines)


def _dead_error(obj: dict) -> dict:
    error = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(error, dict) and error.get("code") == 500:
        error.update(
            code=503,
            type="ServiceUnavailableError",
            message=f"the engine died; the server restarts ({error.get('message', '')})",
        )
    return obj


class _DeadEngineAs503:
    """A request in flight when the engine dies gets 503 (retry elsewhere or later), not vLLM's 500:
    the fault is not the request's, and the process is about to exit and be restarted. Streams
    already begun keep their 200 and get the same error as their last event."""

    def __init__(self, send: Send, engine) -> None:
        self._send, self.engine = send, engine
        self.mode = None  # "json": a 500 being rewritten; "sse": a stream

    def _dead(self) -> bool:
        return bool(getattr(self.engine, "errored", False)) or state["engine_dead"]

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            ctype = next((v for k, v in message.get("headers") or [] if k.lower() == b"content-type"), b"")
            if message["status"] == 500 and self._dead():
                self.mode, self.body = "json", b""
                return
            self.mode = "sse" if ctype.startswith(b"text/event-stream") else None
            return await self._send(message)
        if message["type"] != "http.response.body" or self.mode is None:
            return await self._send(message)
        if self.mode == "json":
            self.body += message.get("body", b"")
            if message.get("more_body", False):
                return
            try:
                body = _dead_error(json.loads(self.body))
            except ValueError:
                body = error_body(503, "the engine died; the server restarts")
            return await _send_json(self._send, 503, body)
        chunk = message.get("body", b"")
        if b'"error"' in chunk and self._dead():
            lines = chunk.split(b"\n")
            for i, line in enumerate(lines):
                if line.startswith(b"data: {"):
                    with contextlib.suppress(ValueError):
                        lines[i] = b"data: " + json.dumps(_dead_error(json.loads(line[6:]))).encode()
            message = {**message, "body": b"\n".join(lines)}
        await self._send(message)


class _OpenAIErrors:
    """Framework errors (404 for an unknown path, 405, …) come from Starlette as ``{"detail": …}``;
    clients expect one error shape, so any error response without an ``error`` object gets one."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.start: dict | None = None
        self.body = b""

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            ctype = next((v for k, v in message.get("headers") or [] if k.lower() == b"content-type"), b"")
            if message["status"] >= 400 and not ctype.startswith(b"text/event-stream"):
                self.start = message
                return
            return await self._send(message)
        if self.start is None or message["type"] != "http.response.body":
            return await self._send(message)
        self.body += message.get("body", b"")
        if message.get("more_body", False):
            return
        start, body = self.start, self.body
        self.start = None
        try:
            obj = json.loads(body) if body else {}
        except ValueError:
            obj = {"detail": body.decode(errors="replace")[:500]}
        if not (isinstance(obj, dict) and isinstance(obj.get("error"), dict)):
            detail = obj.get("detail") if isinstance(obj, dict) else None
            text = detail if isinstance(detail, str) else (json.dumps(obj)[:500] if obj else "")
            kept = [
                (k, v) for k, v in start.get("headers") or [] if k.lower() not in (b"content-length", b"content-type")
            ]
            status = start["status"]
            return await _send_json(self._send, status, error_body(status, text or HTTPStatus(status).phrase), kept)
        await self._send(start)
        await self._send({"type": "http.response.body", "body": body, "more_body": False})
