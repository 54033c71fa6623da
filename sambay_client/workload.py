"""What each request asks for: prompt text, lengths and sampling fields — the ONE definition of
request shapes that ``sambay-bench`` and the Locust load tests share, with the paper's preset.

Lengths are drawn per request from N(mean, jitter * mean), clipped to at least one token, as the
paper's client does (shared/design/benchmark.md section 7). Lengths are in tokens but prompts are
built from words (about one token per common English word for BPE tokenizers), so no tokenizer
runs in the request loop; the server's ``usage`` reports the real counts. Every generated prompt
starts with a random tag and is a fresh random word sequence, so prefix caching cannot turn the
load into cache hits.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

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


# Microsoft's throughput claim for Phi-4-mini-flash-reasoning, as its benchmark client ran it:
# ~2000-token prompts, ~32000 generated tokens (ignore_eos), both with 30 % Gaussian jitter,
# temperature 1.0, top_p 0.9; one warm-up request per client, then 4C + 32 requests per level.
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


def paper_requests(concurrency: int) -> int:
    """Measured requests per concurrency level in the paper's method."""
    return 4 * concurrency + 32


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


def word_salad(n_words: int, rng: random.Random) -> str:
    """About ``n_words`` tokens of text no other request shares, not even its first words."""
    tag = f"{rng.getrandbits(48):012x}"
    return f"Request {tag}: " + " ".join(rng.choices(WORDS, k=max(0, n_words - 2)))


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


class RequestFactory:
    """Builds request bodies; all randomness comes from the caller's ``rng`` (one per user)."""

    def __init__(self, workload: Workload, model: str) -> None:
        self.workload, self.model = workload, model
        self.prompts = load_prompts(workload.prompts_file) if workload.prompts_file else None

    def body(self, rng: random.Random) -> dict[str, Any]:
        wl = self.workload
        prompt_tokens, max_tokens = wl.lengths(rng)
        if self.prompts is not None:
            item = rng.choice(self.prompts)
            messages = item.get("messages") or [{"role": "user", "content": item["prompt"]}]
            max_tokens = int(item.get("max_tokens") or max_tokens)
        else:
            text = word_salad(prompt_tokens, rng)
            messages = [{"role": "user", "content": text}]
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
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
        return body
