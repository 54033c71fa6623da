"""A reply too large to build on the event loop is refused up front (400 naming the limit and the product).

vLLM builds a non-streamed reply in one piece on the server's only event loop: one pydantic object
per log-probability entry, then ``model_dump`` and ``json.dumps`` of the whole. A 22 MB logprobs
reply (``max_tokens`` x ``top_logprobs``) held that loop for 6.5 s (7.9 s measured here), and with
it ``/health``: liveness probes failed and Kubernetes would restart a healthy pod. Moving the build
off the loop would mean replacing vLLM's response handlers (a thread does not help: the build is
pydantic and ``json`` C calls that hold the GIL); a streamed reply is built a step at a time and
never stalls. So the bound is on what a reply *can* hold, judged from the request before any work:

- generated tokens' entries (non-streamed only): sequences x max output tokens x (top-k + 1);
- prompt entries (``prompt_logprobs``, ``echo``; streamed or not, they are built at once): prompt
  tokens x (top-k + 1), prompt tokens estimated from the prompt's length in characters (an o200k
  token is at least one character for text; token-id prompts are counted exactly).

Past ``--max-reply-logprobs`` the answer is 400 with the product spelled out and what to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import routes
from .asgi import Receive, Scope, Send, exchange, send_error
from .fan_out import prompts_in, sequences
from .policy import Policy
from .settings import Option, SettingsError

# Measured with benchmarks/health_under_large_reply.py (results/cpu/2026-12-03/health-large-reply): on a
# 2-core CPU host a 252000-entry reply held /health 7.9 s; the largest reply this default admits, 33 ms.
DEFAULT_MAX_REPLY_LOGPROBS = 4096
FALLBACK_MAX_MODEL_LEN = 131072
FALLBACK_VOCAB = 200064  # the published checkpoint's head, for top-k -1 ("every token")
CHAT_PATHS = ("/v1/chat/completions", "/v1/chat/completions/batch")
COMPLETION_PATHS = ("/v1/completions",)
RESPONSES_PATHS = ("/v1/responses",)


@dataclass
class Product:
    """How many log-probability entries a reply can hold, and the factors that say why."""

    entries: int = 0
    terms: list[str] = field(default_factory=list)
    param: str | None = None  # the field of the largest term: what the client should change
    largest: int = 0

    def add(self, entries: int, term: str, param: str) -> None:
        self.entries += entries
        self.terms.append(f"{term} = {entries}")
        self.param = param if self.param is None or entries > self.largest else self.param
        self.largest = max(self.largest, entries)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text_length(value: Any) -> int:
    """Characters of text anywhere in a prompt or message list (an upper bound on its tokens)."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


def _tokens_of(prompt: Any) -> int:
    """One prompt's tokens: a token-id list exactly, text by characters (+ a chat template's few tokens)."""
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    return _text_length(prompt) + 16


def _prompt_tokens(data: dict, max_model_len: int) -> int:
    """Tokens of the longest single prompt, at most the context."""
    prompt = data.get("prompt", data.get("messages", data.get("input")))
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        if all(isinstance(p, str) for p in prompt) or all(isinstance(p, list) for p in prompt):
            longest = max(_tokens_of(p) for p in prompt)  # a batch: one engine request per entry
            return min(longest, max_model_len)
    return min(_tokens_of(prompt), max_model_len)


def _top_k(value: int, vocab: int) -> int:
    return vocab if value == -1 else max(value, 0)


def reply_product(path: str, data: dict, max_model_len: int, vocab: int) -> Product:
    """The log-probability entries a reply to ``data`` on ``path`` can hold."""
    product = Product()
    streamed = data.get("stream") is True
    seqs = sequences(path, data)
    prompts = prompts_in(path, data)
    prompt_tokens = _prompt_tokens(data, max_model_len)

    def prompt_entries(copies: int, k: int, name: str, param: str) -> None:
        entries = copies * prompt_tokens * (_top_k(k, vocab) + 1)
        product.add(entries, f"{copies} x {prompt_tokens} prompt tokens x ({name} {k} + 1)", param)

    if path in COMPLETION_PATHS:
        k = _int(data.get("logprobs"))
        max_out = _int(data.get("max_tokens"))
        max_out_name = "max_tokens"
        if max_out is None:
            max_out, max_out_name = 16, "max_tokens (default 16)"  # vLLM's completions default
        if k is not None and data.get("echo") is True:  # each choice repeats the prompt with its logprobs
            prompt_entries(seqs, k, "echo with logprobs", "echo")
    elif path in CHAT_PATHS:
        k = _int(data.get("top_logprobs")) or 0 if data.get("logprobs") is True else None
        token_ids = data.get("logprob_token_ids")
        if k is not None and isinstance(token_ids, list):
            k = max(k, len(token_ids))
        max_out = _int(data.get("max_completion_tokens"))
        max_out_name = "max_completion_tokens"
        if max_out is None:
            max_out, max_out_name = _int(data.get("max_tokens")), "max_tokens"
        if data.get("echo") is True and data.get("prompt_logprobs") is None and k is not None:
            prompt_entries(prompts, k, "echo with top_logprobs", "echo")
    elif path in RESPONSES_PATHS:
        k = _int(data.get("top_logprobs"))
        max_out, max_out_name = _int(data.get("max_output_tokens")), "max_output_tokens"
    else:
        return product
    if max_out is None:
        max_out, max_out_name = max_model_len, f"no {max_out_name} (up to the {max_model_len}-token context)"
    max_out = min(max(max_out, 0), max_model_len)
    if k is not None and not streamed:
        kk = _top_k(k, vocab)
        term = f"{seqs} sequences x {max_out_name} {max_out} x (top {k} + 1)"
        product.add(seqs * max_out * (kk + 1), term, "stream")
    p = _int(data.get("prompt_logprobs"))
    if p is not None:
        prompt_entries(prompts, p, "prompt_logprobs", "prompt_logprobs")
    return product


def _engine_limits(scope: Scope, settings) -> tuple[int, int]:
    """(max_model_len, vocabulary size) of the served model, from vLLM's app state where it has them."""
    state = getattr(scope.get("app"), "state", None)
    model_config = getattr(getattr(state, "vllm_config", None), "model_config", None)
    max_model_len = getattr(model_config, "max_model_len", None) or settings.max_model_len or FALLBACK_MAX_MODEL_LEN
    try:
        vocab = model_config.get_vocab_size()
    except Exception:  # noqa: BLE001 - no model config here (tests, embedders): the published head
        vocab = FALLBACK_VOCAB
    return int(max_model_len), int(vocab)


class ReplySize(Policy):
    options = (
        Option(
            "max_reply_logprobs",
            DEFAULT_MAX_REPLY_LOGPROBS,
            "most log-probability entries a reply built in one piece may hold (tokens x (top-k + 1), over "
            "every sequence); larger gets 400 naming the product. Streamed generations do not count: they "
            f"are built a token at a time (default {DEFAULT_MAX_REPLY_LOGPROBS}; 0 turns the check off)",
            type=int,
        ),
        Option("max_model_len", None, "", flag=None),
    )

    @classmethod
    def enabled(cls, settings) -> bool:
        return settings.max_reply_logprobs > 0

    @classmethod
    def check(cls, settings) -> None:
        if settings.max_reply_logprobs < 0:
            raise SettingsError(f"--max-reply-logprobs must be 0 (off) or positive (got {settings.max_reply_logprobs})")

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        data = exchange(scope).data
        if not isinstance(data, dict) or not routes.is_admitted(scope):
            return await self.app(scope, receive, send)
        max_model_len, vocab = _engine_limits(scope, self.settings)
        product = reply_product(scope["path"], data, max_model_len, vocab)
        limit = self.settings.max_reply_logprobs
        if product.entries > limit:
            message = (
                f"a reply to this request can hold {product.entries} log-probabilities ({'; '.join(product.terms)}), "
                f"more than this server builds in one piece (--max-reply-logprobs {limit}): ask with "
                "stream=true (a streamed reply is built token by token), or lower max_tokens / top_logprobs / n"
            )
            return await send_error(send, 400, message, product.param)
        await self.app(scope, receive, send)
