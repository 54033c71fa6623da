"""The ONE definition of a workload, shared by ``sambay-bench`` and the Locust load tests: how
long each request is (the lengths law), how it samples, which OpenAI route it goes to (the
endpoint style), what its prompt is made of (the prompt builder), and the paper's preset.

What the paper measured, with sources, is in docs/benchmark-method.md. Lengths are drawn per
request from N(mean, jitter * mean), clipped to at least one token, as the paper's client does.
Two prompt builders: ``WordPrompts`` for real tokenizers (about one token per common English word,
so no tokenizer runs in the request loop; the server's ``usage`` reports the real counts) and
``BenchmarkTokenPrompts`` for the benchmark tokenizer ``sambay-bench`` writes beside its configs
(one word ``t<id>`` per token id, so a prompt is exactly as long as drawn). Every generated prompt
is fresh random text, different from its first token on, so prefix caching cannot turn the load
into cache hits.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

WORDS = tuple(
    dict.fromkeys(
        """
time year people way day man thing woman life child world school state family student group country problem
hand part place case week company system program question work government number night point home water room
mother area money story fact month lot right study book eye job word business issue side kind head house
service friend father power hour game line end member law car city community name president team minute idea
kid body information back parent face others level office door health person art war history party result
change morning reason research girl guy moment air teacher force education river mountain garden window table
chair paper letter music picture voice color light field stone tree animal bird fish road bridge island ocean
cloud rain snow wind storm summer winter spring autumn forest valley desert village market street station
engine signal memory layer window token model answer number figure sample matrix vector kernel record channel
quickly slowly quietly carefully simply often always never rarely early later soon together almost perhaps
run walk read write build think speak listen move carry hold open close begin finish follow lead learn teach
green blue red small large bright dark warm cold young old new early strong simple clear heavy light quiet
""".split()
    )
)


@dataclass(frozen=True)
class Workload:
    """Lengths law and sampling fields of every request of a run."""

    prompt_tokens: int = 512
    output_tokens: int = 256
    prompt_jitter: float = 0.0  # standard deviation of the length as a fraction of its mean
    output_jitter: float = 0.0
    ignore_eos: bool = False  # vLLM extension: decode exactly max_tokens (needed for fixed lengths)
    temperature: float | None = None  # None: the server's default
    top_p: float | None = None
    prompts_file: str | None = None  # JSONL; replaces generated prompts
    extra_body: dict[str, Any] = field(default_factory=dict)  # merged into every request body

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lengths(self, rng: random.Random, max_model_len: int | None = None) -> tuple[int, int]:
        """(prompt, output) tokens of one request; with ``max_model_len`` both are clipped so the
        request fits (the prompt leaves room for at least one generated token)."""
        prompt = draw_length(self.prompt_tokens, self.prompt_jitter, rng)
        output = draw_length(self.output_tokens, self.output_jitter, rng)
        if max_model_len is not None:
            prompt = min(prompt, max_model_len - 1)
            output = min(output, max_model_len - prompt)
        return prompt, output

    def describe(self) -> str:
        """One line for help texts and docs, e.g. ``32 → 16 tokens, ignore_eos``: the help and the
        READMEs show this text, so no number of a preset is written twice."""
        parts = [f"{self.prompt_tokens} → {self.output_tokens} tokens"]
        if self.prompt_jitter == self.output_jitter and self.prompt_jitter:
            parts.append(f"Gaussian std {self.prompt_jitter * 100:g} %")
        else:
            for name, jitter in (("prompt", self.prompt_jitter), ("output", self.output_jitter)):
                if jitter:
                    parts.append(f"{name} Gaussian std {jitter * 100:g} %")
        if self.ignore_eos:
            parts.append("ignore_eos")
        if self.temperature is not None:
            parts.append(f"temperature {self.temperature}")
        if self.top_p is not None:
            parts.append(f"top_p {self.top_p}")
        return ", ".join(parts)


# Microsoft's throughput claim for Phi-4-mini-flash-reasoning, as its benchmark client ran it
# (docs/benchmark-method.md): the request shape, the concurrency levels, one unmeasured warm-up
# request per client, then 4C + 32 measured requests per level, and the generation lengths of the
# latency-vs-generation-length figure. Everything else derives from these names.
PAPER = Workload(
    prompt_tokens=2000,
    output_tokens=32000,
    prompt_jitter=0.3,
    output_jitter=0.3,
    ignore_eos=True,
    temperature=1.0,
    top_p=0.9,
)
PAPER_CONCURRENCY = (1, 2, 4, 8, 16)
PAPER_WARMUP_PER_CLIENT = 1
PAPER_REQUESTS_PER_CLIENT = 4
PAPER_EXTRA_REQUESTS = 32
PAPER_REQUESTS_RULE = f"{PAPER_REQUESTS_PER_CLIENT}C+{PAPER_EXTRA_REQUESTS}"
PAPER_GEN_LENS = (500, 2000, 4000, 8000, 16000, 32000)


def paper_requests(concurrency: int) -> int:
    """Measured requests per concurrency level in the paper's method (``PAPER_REQUESTS_RULE``)."""
    return PAPER_REQUESTS_PER_CLIENT * concurrency + PAPER_EXTRA_REQUESTS


PRESETS: dict[str, Workload] = {
    "paper": PAPER,
    "chat": Workload(prompt_tokens=512, output_tokens=256, prompt_jitter=0.3, output_jitter=0.3),
    "smoke": Workload(prompt_tokens=32, output_tokens=16, ignore_eos=True),
}


def resolve(preset: str | None = None, **given: Any) -> Workload:
    """Explicit values (not None) beat the preset, the preset beats the defaults."""
    values: dict[str, Any] = {}
    if preset:
        if preset not in PRESETS:
            raise ValueError(f"unknown workload {preset!r}; known: {', '.join(PRESETS)}")
        values.update(asdict(PRESETS[preset]))
    known = {f.name for f in fields(Workload)}
    unknown = set(given) - known
    if unknown:
        raise TypeError(f"unknown workload fields: {sorted(unknown)}")
    values.update({k: v for k, v in given.items() if v is not None})
    wl = Workload(**values)
    if wl.prompt_tokens < 1 or wl.output_tokens < 1:
        raise ValueError("prompt and output lengths must be at least 1")
    if not (0 <= wl.prompt_jitter < 1 and 0 <= wl.output_jitter < 1):
        raise ValueError("jitter (standard deviation / mean) is a fraction in [0, 1)")
    return wl


def draw_length(mean: int, jitter: float, rng: random.Random) -> int:
    """One draw from N(mean, jitter * mean), at least 1; exactly ``mean`` without jitter."""
    return max(1, round(rng.gauss(mean, jitter * mean))) if jitter else mean


# -- prompt builders -------------------------------------------------------------------------------


class PromptBuilder(Protocol):
    def text(self, n_tokens: int, rng: random.Random) -> str:
        """A prompt of ``n_tokens`` tokens (exactly or about, as the builder says), fresh each call."""
        ...


def word_salad(n_words: int, rng: random.Random) -> str:
    """About ``n_words`` tokens of text no other request shares, not even its first words."""
    tag = f"{rng.getrandbits(48):012x}"
    return f"Request {tag}: " + " ".join(rng.choices(WORDS, k=max(0, n_words - 2)))


@dataclass(frozen=True)
class WordPrompts:
    """Words for any real tokenizer: ``n`` words are about ``n`` tokens for English BPE vocabularies."""

    def text(self, n_tokens: int, rng: random.Random) -> str:
        return word_salad(n_tokens, rng)


# The benchmark tokenizer (``sambay_bench.models.write_tokenizer``): token id i is the word
# ``t<i>``; prompts use ids from BENCHMARK_FIRST_ID up, clear of the low ids tokenizers give to
# control tokens.
BENCHMARK_FIRST_ID = 10


def benchmark_token(token_id: int) -> str:
    """The benchmark tokenizer's word for ``token_id``."""
    return f"t{token_id}"


@dataclass(frozen=True)
class BenchmarkTokenPrompts:
    """Random token ids below ``vocab_size``: as ids for an offline engine, or as the benchmark
    tokenizer's words for a server, where ``n`` words are exactly ``n`` tokens."""

    vocab_size: int
    first_id: int = BENCHMARK_FIRST_ID

    def __post_init__(self) -> None:
        if self.vocab_size <= self.first_id:
            raise ValueError(f"vocab_size {self.vocab_size} leaves no prompt ids (they start at {self.first_id})")

    def ids(self, n_tokens: int, rng: random.Random) -> list[int]:
        return [rng.randrange(self.first_id, self.vocab_size) for _ in range(n_tokens)]

    def text(self, n_tokens: int, rng: random.Random) -> str:
        return " ".join(benchmark_token(i) for i in self.ids(n_tokens, rng))


# -- endpoint styles -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointStyle:
    """Which OpenAI route a request goes to and where its prompt sits in the body. Every request
    streams with ``stream_options.include_usage``: the clients time each SSE event, and token counts
    come from the server's usage, never from counting chunks."""

    name: str
    route: str  # under the API version prefix

    @property
    def path(self) -> str:
        """The default endpoint under a server's base URL."""
        return "/v1" + self.route

    def prompt_fields(self, item: dict[str, Any]) -> dict[str, Any]:
        """The body fields for a prompts-file item (``{"prompt": ...}`` or ``{"messages": [...]}``)."""
        if self.name == "chat":
            return {"messages": item.get("messages") or [{"role": "user", "content": item["prompt"]}]}
        if not isinstance(item.get("prompt"), str):
            raise ValueError("the completions endpoint needs a 'prompt' string, not 'messages'")
        return {"prompt": item["prompt"]}

    def models_path(self, endpoint: str) -> str:
        """``/v1/models`` beside ``endpoint`` (a gateway may put the API under another prefix)."""
        base = endpoint[: -len(self.route)] if endpoint.endswith(self.route) else "/v1"
        return f"{base}/models"


CHAT = EndpointStyle("chat", "/chat/completions")
COMPLETIONS = EndpointStyle("completions", "/completions")
STYLES: dict[str, EndpointStyle] = {s.name: s for s in (CHAT, COMPLETIONS)}


# -- request bodies --------------------------------------------------------------------------------


def load_prompts(path: str | Path) -> list[dict[str, Any]]:
    """JSONL, one request per line: ``{"prompt": "..."}`` or ``{"messages": [...]}``, optionally
    with its own ``"max_tokens"``."""
    items = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        item = json.loads(line)
        if "messages" not in item and not isinstance(item.get("prompt"), str):
            raise ValueError(f"{path}:{n}: needs 'prompt' (a string) or 'messages'")
        items.append(item)
    if not items:
        raise ValueError(f"{path}: no prompts")
    return items


@dataclass(frozen=True)
class Request:
    body: dict[str, Any]
    prompt_tokens: int | None  # as drawn (None: the prompt came from the prompts file)


class RequestFactory:
    """Builds request bodies from a workload, an endpoint style and a prompt builder; all randomness
    comes from the caller's ``rng`` (one per client). With ``max_model_len`` the drawn lengths are
    clipped to fit the server's context."""

    def __init__(
        self,
        workload: Workload,
        model: str,
        style: EndpointStyle = CHAT,
        prompts: PromptBuilder | None = None,
        max_model_len: int | None = None,
    ) -> None:
        self.workload, self.model, self.style, self.max_model_len = workload, model, style, max_model_len
        if workload.prompts_file and prompts is not None:
            raise ValueError("give a prompts file or a prompt builder, not both")
        self.prompts = prompts or WordPrompts()
        self.items = load_prompts(workload.prompts_file) if workload.prompts_file else None
        for n, item in enumerate(self.items or [], 1):
            try:
                style.prompt_fields(item)
            except ValueError as exc:
                raise ValueError(f"{workload.prompts_file}: prompt {n}: {exc}") from None

    def draw(self, rng: random.Random) -> Request:
        wl = self.workload
        prompt_tokens, max_tokens = wl.lengths(rng, self.max_model_len)
        if self.items is not None:
            item = rng.choice(self.items)
            prompt = self.style.prompt_fields(item)
            max_tokens = int(item.get("max_tokens") or max_tokens)
            drawn = None
        else:
            prompt = self.style.prompt_fields({"prompt": self.prompts.text(prompt_tokens, rng)})
            drawn = prompt_tokens
        body: dict[str, Any] = {
            "model": self.model,
            **prompt,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if wl.ignore_eos:
            body["ignore_eos"] = True  # sent only when asked: strict OpenAI servers reject unknown fields
        if wl.temperature is not None:
            body["temperature"] = wl.temperature
        if wl.top_p is not None:
            body["top_p"] = wl.top_p
        body.update(wl.extra_body)
        return Request(body, drawn)

    def body(self, rng: random.Random) -> dict[str, Any]:
        return self.draw(rng).body
