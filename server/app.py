"""The FastAPI application: OpenAI routes over one vLLM ``AsyncLLM``.

Only vLLM's public engine API is used (``generate``, ``abort``, ``check_health``,
``get_tokenizer``); prompts are rendered and tokenized here, so vLLM's private server modules
(which move between releases) are never imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from . import errors, reasoning
from .errors import APIError
from .protocol import ChatRequest, CompletionRequest, SamplingFields

log = logging.getLogger("sambay_server")
OPEN_PATHS = ("/health", "/metrics")


@dataclass
class Settings:
    model_name: str
    max_model_len: int
    api_key: str | None = None
    max_pending: int = 256  # requests admitted at once (running + waiting); more get 429
    cors_origins: list[str] = field(default_factory=list)


class ServerState:
    def __init__(self, engine, settings: Settings) -> None:
        from prometheus_client import Counter

        self.engine = engine
        self.settings = settings
        self.in_flight = 0
        self.tokenizer = None
        self.end_think_id: int | None = None
        try:
            self.requests_total = Counter("sambay_server_requests", "HTTP requests by route and status",
                                          ["route", "status"])
        except ValueError:  # already registered (several apps in one process, tests)
            from prometheus_client import REGISTRY

            self.requests_total = REGISTRY._names_to_collectors["sambay_server_requests"]

    def admit(self, scope) -> None:
        """Count a request as in flight until the middleware sees its HTTP exchange end, whatever
        path it takes (streamed, collected, cancelled, or a stream Starlette never started)."""
        self.in_flight += 1
        scope.setdefault("state", {})["admitted"] = True

    async def get_tokenizer(self):
        if self.tokenizer is None:
            tok = self.engine.get_tokenizer()
            self.tokenizer = await tok if inspect.isawaitable(tok) else tok
            ids = self.tokenizer.encode(reasoning.CLOSE, add_special_tokens=False)
            self.end_think_id = ids[0] if len(ids) == 1 else None
        return self.tokenizer


class AuthAndAccessLog:
    """Pure ASGI middleware (keeps request.is_disconnected working): Bearer auth on every route
    but /health and /metrics, a request id, and one structured log line per request."""

    def __init__(self, app, state: ServerState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        request_id = f"req-{uuid.uuid4().hex[:16]}"
        scope.setdefault("state", {})["request_id"] = request_id
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        path = scope["path"]
        key = self.state.settings.api_key
        try:
            if key and scope["method"] != "OPTIONS" and not path.startswith(OPEN_PATHS):
                headers = dict(scope.get("headers") or [])
                given = headers.get(b"authorization", b"").decode(errors="replace")
                if not secrets.compare_digest(given.encode(), f"Bearer {key}".encode()):
                    resp = errors.error_response(401, "missing or invalid API key (Authorization: Bearer ...)")
                    return await resp(scope, receive, send_wrapper)
            await self.app(scope, receive, send_wrapper)
        finally:
            if scope["state"].pop("admitted", False):
                self.state.in_flight -= 1
            ms = (time.perf_counter() - start) * 1e3
            self.state.requests_total.labels(path, str(status["code"])).inc()
            log.info(json.dumps({"request_id": request_id, "method": scope["method"], "path": path,
                                 "status": status["code"], "latency_ms": round(ms, 1)}))


def build_app(engine, settings: Settings) -> FastAPI:
    state = ServerState(engine, settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        # Here, not after uvicorn returns: uvicorn re-raises SIGTERM once it has drained, which
        # would end the process before any later cleanup and orphan the engine processes.
        engine.shutdown()

    app = FastAPI(title="vllm-sambay", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.server = state
    errors.install(app)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])
    app.add_middleware(AuthAndAccessLog, state=state)

    @app.get("/health")
    async def health(deep: bool = False):
        try:
            await engine.check_health()
            if deep:
                await asyncio.wait_for(_one_token(state), timeout=60)
        except Exception as exc:  # engine dead or not answering
            return errors.error_response(503, f"engine unhealthy: {exc!r}")
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0,
                                            "owned_by": "vllm-sambay", "max_model_len": settings.max_model_len}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        tok = await state.get_tokenizer()
        _check_model(body, settings)
        if isinstance(body.prompt, list) and body.prompt and isinstance(body.prompt[0], str):
            if len(body.prompt) != 1:
                raise APIError(400, "batched string prompts are not supported; send one prompt", "prompt")
            text = body.prompt[0]
        else:
            text = body.prompt
        # Tokenizing a long prompt takes milliseconds: off the event loop, so other streams keep flowing.
        if isinstance(text, list):
            ids = list(text)
        else:
            ids = await asyncio.to_thread(tok.encode, text, add_special_tokens=False)
        if not ids:
            raise APIError(400, "prompt is empty", "prompt")
        if isinstance(text, list) and any(not 0 <= t < len(tok) for t in ids):
            raise APIError(400, "prompt token id out of the vocabulary", "prompt")
        return await _serve(state, request, body, ids, chat=False, logprobs=body.logprobs)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        tok = await state.get_tokenizer()
        _check_model(body, settings)
        try:
            messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        except ValueError as exc:
            raise APIError(400, str(exc), "messages") from None
        ids = await asyncio.to_thread(
            tok.apply_chat_template, messages, tokenize=True, add_generation_prompt=body.add_generation_prompt
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        lp = (body.top_logprobs or 0) if body.logprobs else None
        return await _serve(state, request, body, list(ids), chat=True, logprobs=lp)

    return app


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _check_model(body: SamplingFields, settings: Settings) -> None:
    if body.model != settings.model_name:
        raise APIError(404, f"model '{body.model}' not found; this server serves '{settings.model_name}'", "model")


async def _one_token(state: ServerState) -> None:
    from vllm import SamplingParams, TokensPrompt

    params = SamplingParams(max_tokens=1, temperature=0.0)
    async for _ in state.engine.generate(TokensPrompt(prompt_token_ids=[0]), params, f"health-{uuid.uuid4().hex}"):
        pass


def _sampling_params(body: SamplingFields, prompt_len: int, max_len: int, logprobs: int | None, stream: bool):
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    room = max_len - prompt_len
    if room <= 0:
        raise APIError(400, f"prompt has {prompt_len} tokens; the model's context is {max_len} tokens", "messages")
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is None:
        max_tokens = room
    elif max_tokens > room:
        raise APIError(400, f"prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) exceeds the model's "
                            f"context of {max_len} tokens", "max_tokens")
    if body.min_tokens > max_tokens:
        raise APIError(400, "min_tokens must not exceed max_tokens", "min_tokens")
    return SamplingParams(
        n=body.n, temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p, top_k=body.top_k or 0,
        max_tokens=max_tokens, min_tokens=body.min_tokens, stop=body.stop, seed=body.seed,
        presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty,
        ignore_eos=body.ignore_eos, logprobs=logprobs,
        output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
    )


async def _serve(state: ServerState, request: Request, body, ids: list[int], *, chat: bool, logprobs):
    from vllm import TokensPrompt

    settings = state.settings
    params = _sampling_params(body, len(ids), settings.max_model_len, logprobs, body.stream)
    if state.in_flight >= settings.max_pending:
        raise APIError(429, f"server busy: {state.in_flight} requests in flight", headers={"Retry-After": "1"})
    state.admit(request.scope)
    request_id = request.scope.get("state", {}).get("request_id") or uuid.uuid4().hex
    kind = "chatcmpl" if chat else "cmpl"
    rid = f"{kind}-{request_id}"
    stream = state.engine.generate(TokensPrompt(prompt_token_ids=ids), params, rid)
    created = int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        gen = _sse(state, stream, body, rid, created, len(ids), chat, include_usage)
        # no-cache / no proxy buffering: an nginx-style proxy would otherwise hold chunks back (TTFT).
        return StreamingResponse(gen, media_type="text/event-stream", headers=SSE_HEADERS)
    final = await _collect_unless_disconnected(stream, request)
    if final is None:  # client went away; the engine request was aborted
        return Response(status_code=499)
    return JSONResponse(_full_response(state, body, final, rid, created, chat))


async def _collect_unless_disconnected(stream: AsyncIterator, request: Request):
    async def collect():
        last = None
        async for out in stream:
            last = out
        return last

    task = asyncio.ensure_future(collect())
    while not task.done():
        done, _ = await asyncio.wait({task}, timeout=0.5)
        if not done and await request.is_disconnected():
            task.cancel()  # closes the generator: AsyncLLM aborts the request
            await asyncio.gather(task, return_exceptions=True)
            await stream.aclose()
            return None
    return task.result()


def _reasoning_tokens(state: ServerState, token_ids) -> int:
    if state.end_think_id is not None and state.end_think_id in token_ids:
        return list(token_ids).index(state.end_think_id) + 1
    return 0


def _usage(state: ServerState, prompt_len: int, outputs) -> dict:
    completion = sum(len(o.token_ids) for o in outputs)
    return {"prompt_tokens": prompt_len, "completion_tokens": completion, "total_tokens": prompt_len + completion,
            "completion_tokens_details": {"reasoning_tokens": sum(_reasoning_tokens(state, o.token_ids)
                                                                  for o in outputs)}}


def _top(step: dict, k: int) -> list:
    """The k most likely tokens of one position, by rank (vLLM adds the sampled token too)."""
    ranked = sorted((lp.rank, t, lp) for t, lp in step.items() if lp.rank is not None and 1 <= lp.rank <= k)
    return [(t, lp) for _, t, lp in ranked]


def _chat_logprobs(tok, out, k: int) -> dict | None:
    if out.logprobs is None:
        return None
    content = []
    for tid, step in zip(out.token_ids, out.logprobs, strict=False):
        def entry(token_id, lp):
            text = tok.decode([token_id])
            return {"token": text, "logprob": lp.logprob, "bytes": list(text.encode())}

        item = entry(tid, step[tid])
        item["top_logprobs"] = [entry(t, lp) for t, lp in _top(step, k)]
        content.append(item)
    return {"content": content}


def _completion_logprobs(tok, out, k: int) -> dict | None:
    if out.logprobs is None:
        return None
    tokens, lps, tops = [], [], []
    for tid, step in zip(out.token_ids, out.logprobs, strict=False):
        tokens.append(tok.decode([tid]))
        lps.append(step[tid].logprob)
        tops.append({tok.decode([t]): lp.logprob for t, lp in _top(step, k)})
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": None}


def _full_response(state: ServerState, body, final, rid: str, created: int, chat: bool) -> dict:
    tok = state.tokenizer
    choices = []
    for out in final.outputs:
        if chat:
            message = {"role": "assistant", "content": out.text}
            if body.include_reasoning:
                r, c = reasoning.split(out.text)
                message.update(content=c, reasoning=r, reasoning_content=r)
            lp = _chat_logprobs(tok, out, body.top_logprobs or 0)
            choices.append({"index": out.index, "message": message, "logprobs": lp,
                            "finish_reason": out.finish_reason})
        else:
            lp = _completion_logprobs(tok, out, body.logprobs or 0)
            choices.append({"index": out.index, "text": out.text, "logprobs": lp, "finish_reason": out.finish_reason})
    return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
            "model": state.settings.model_name, "choices": choices,
            "usage": _usage(state, len(final.prompt_token_ids or []), final.outputs)}


async def _sse(state: ServerState, stream, body, rid, created, prompt_len, chat, include_usage):
    obj = "chat.completion.chunk" if chat else "text_completion"
    model = state.settings.model_name
    splitters = {i: reasoning.StreamSplitter() for i in range(body.n)}
    token_ids: dict[int, list[int]] = {i: [] for i in range(body.n)}

    def chunk(choices, usage=None) -> str:
        payload = {"id": rid, "object": obj, "created": created, "model": model, "choices": choices}
        if usage is not None:
            payload["usage"] = usage
        return f"data: {json.dumps(payload)}\n\n"

    try:
        if chat:
            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                          "finish_reason": None} for i in range(body.n)])
        async for out in stream:
            for o in out.outputs:
                token_ids[o.index].extend(o.token_ids)
                finished = o.finish_reason is not None
                if chat:
                    delta: dict = {}
                    if body.include_reasoning:
                        r, c = splitters[o.index].feed(o.text, final=finished)
                        if r:
                            delta.update(reasoning=r, reasoning_content=r)
                        if c:
                            delta["content"] = c
                    elif o.text:
                        delta["content"] = o.text
                    lp = _chat_logprobs(state.tokenizer, o, body.top_logprobs or 0)
                    if delta or lp or finished:
                        yield chunk([{"index": o.index, "delta": delta, "logprobs": lp,
                                      "finish_reason": o.finish_reason}])
                else:
                    yield chunk([{"index": o.index, "text": o.text,
                                  "logprobs": _completion_logprobs(state.tokenizer, o, body.logprobs or 0),
                                  "finish_reason": o.finish_reason}])
        if include_usage:
            completion = sum(len(t) for t in token_ids.values())
            usage = {"prompt_tokens": prompt_len, "completion_tokens": completion,
                     "total_tokens": prompt_len + completion,
                     "completion_tokens_details": {"reasoning_tokens": sum(_reasoning_tokens(state, t)
                                                                           for t in token_ids.values())}}
            yield chunk([], usage)
        yield "data: [DONE]\n\n"
    finally:
        await stream.aclose()  # on disconnect: closes the engine stream, which aborts the request
