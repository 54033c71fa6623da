"""Reasoning parser ``phi4_flash``: Phi-4-mini-flash-reasoning thinks inside ``<think>…</think>``.

Registered by :func:`vllm_sambay.register`, so that ``vllm serve CKPT --reasoning-parser phi4_flash``
(and sambay-serve, which defaults to it) returns the thinking in ``message.reasoning`` /
``delta.reasoning``, counts ``usage.completion_tokens_details.reasoning_tokens``, and applies
``response_format`` / structured outputs to the answer.

Why our own parser and not vLLM's ``BaseThinkingReasoningParser``: that base finds the tags as single
token ids, and the published tokenizer has no such tokens. The model writes ``<think>`` and
``</think>`` as plain text, three BPE tokens each, and the tags merge with their neighbours
(``>\\n\\n`` after the closing tag, ``.</`` before it), so a tag boundary is not a token boundary.
Everything here therefore works on text: the whole-output split (:func:`locate`), the streaming
deltas (the same split of each longer prefix, so streaming equals the whole-text split however the
tokenizer cut the output), and, where vLLM asks with token ids (the structured-output gate, token
counting), on the ids' byte-level text, which spells the ASCII tags and whitespace exactly as the
decoded text does.

The rules, on the generated text of one assistant turn:

* The output opens a think block when, after optional ASCII whitespace, it starts with ``<think>``.
  Until enough text has arrived to tell (a prefix of ``<think>``), nothing is emitted.
* Inside the block, everything up to the first ``</think>`` is reasoning; everything after it is
  content (verbatim, newlines included). An unclosed block is all reasoning; a trailing piece of a
  closing tag (``<``, ``</th``, …) is held back and is not reasoning, in both paths alike.
* Output that does not open a think block is all content, a stray ``</think>`` included.
* The split applies to the generated text only: an assistant prefix prefilled in the prompt
  (``continue_final_message``) is not re-parsed.

Structured outputs: vLLM applies the grammar once the parser says the reasoning ended. With text
tags that cannot hold from the first token (an output that never opens a think block would pass its
first tokens unconstrained), so :meth:`Phi4FlashReasoningParser.adjust_request` rewrites the request's
constraint into one xgrammar structural tag, ``(<think> any text </think> up-to-8-whitespace)? answer``
(the think branch opens at the first character, as the model does), and tells
vLLM (its ``_grammar_from_parser`` mechanism, the one Mistral's parser uses) to apply it from the first
token. The answer is thus constrained after ``</think>``, and from the first token when the output
does not think, exactly where the split puts the content.
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from vllm.reasoning import ReasoningParser

from . import compat

logger = logging.getLogger(__name__)

OPEN, CLOSE = "<think>", "</think>"
ASSISTANT = "<|assistant|>"  # the chat template's turn marker: a generated turn starts after it
_WS = " \t\n\r\x0b\x0c"
_LEADING_WS = re.compile(f"[{re.escape(_WS)}]*")
# Between </think> and the answer: the model writes "\n\n". Bounded, so that a grammar-masked model
# cannot stall in whitespace there.
_GAP_REGEX = r"[ \t\r\n]{0,8}"
# Options of vLLM's own JSON grammar that a structural tag cannot express (xgrammar's
# max_whitespace_cnt must be positive, so not even disable_any_whitespace).
_UNWRAPPABLE_OPTIONS = ("disable_any_whitespace", "disable_additional_properties", "whitespace_pattern")


class Phase(enum.Enum):
    UNDECIDED = "undecided"  # empty, whitespace or a prefix of <think>: not yet known
    REASONING = "reasoning"  # inside an open think block
    ANSWER = "answer"  # after </think>, or the output never opened a think block


@dataclass(frozen=True)
class Split:
    """Where the parts of an output text lie: ``reasoning`` is the ``[start, end)`` span of the
    reasoning (None without a think block), ``content_start`` where the content begins (None while
    there is none)."""

    phase: Phase
    reasoning: tuple[int, int] | None = None
    content_start: int | None = None

    def parts(self, text: str) -> tuple[str | None, str | None]:
        """``(reasoning, content)`` as vLLM returns them: None for an empty part."""
        reasoning = text[self.reasoning[0] : self.reasoning[1]] if self.reasoning else ""
        content = text[self.content_start :] if self.content_start is not None else ""
        return reasoning or None, content or None


def _held_back(text: str, start: int) -> int:
    """Length of the longest suffix of ``text[start:]`` that is a proper prefix of ``</think>``."""
    for k in range(min(len(CLOSE) - 1, len(text) - start), 0, -1):
        if text.endswith(CLOSE[:k]):
            return k
    return 0


def locate(text: str, scan_from: int = 0) -> Split:
    """The split of an output text or of a prefix of one. ``scan_from`` only speeds up the search for
    ``</think>`` when the caller knows there is none before it (streaming: the previous text's end)."""
    i = _LEADING_WS.match(text).end()
    if text.startswith(OPEN, i):
        body = i + len(OPEN)
        end = text.find(CLOSE, max(body, scan_from))
        if end >= 0:
            return Split(Phase.ANSWER, (body, end), end + len(CLOSE))
        return Split(Phase.REASONING, (body, len(text) - _held_back(text, body)))
    if len(text) - i < len(OPEN) and OPEN.startswith(text[i:]):
        return Split(Phase.UNDECIDED)
    return Split(Phase.ANSWER, None, 0)


class _TurnScanner:
    """The phase of a generated turn, fed token by token through the tokens' byte-level text:
    constant work per token, for the engine's per-step structured-output gate."""

    def __init__(self) -> None:
        self.phase = Phase.UNDECIDED
        self._text = ""  # the turn so far while undecided; then the tail a closing tag may straddle

    def feed(self, piece: str) -> Phase:
        if self.phase is Phase.ANSWER or not piece:
            return self.phase
        if self.phase is Phase.UNDECIDED:
            text = (self._text + piece).lstrip(_WS)
            if text.startswith(OPEN):
                self.phase, self._text, piece = Phase.REASONING, "", text[len(OPEN) :]
            elif len(text) < len(OPEN) and OPEN.startswith(text):
                self._text = text
                return self.phase
            else:
                self.phase = Phase.ANSWER
                return self.phase
        tail = self._text + piece
        if CLOSE in tail:
            self.phase = Phase.ANSWER
        self._text = tail[-(len(CLOSE) - 1) :]
        return self.phase


@functools.lru_cache(maxsize=8)
def _byte_level_pieces(tokenizer) -> tuple[tuple[str, ...], int | None]:
    """Each token id's text in the tokenizer's byte-level alphabet with ASCII whitespace spelled as
    ASCII: the tags and whitespace read exactly as in the decoded text (other characters may take
    several byte characters, which the rules never look inside). ``""`` for ids without a token and
    for special tokens (vLLM's detokenizer skips those). Also the ``<|assistant|>`` id."""
    vocab = tokenizer.get_vocab()
    size = max(len(tokenizer), max(vocab.values()) + 1)
    pieces = [""] * size
    special = set(getattr(tokenizer, "all_special_ids", ()))
    # added tokens flagged special (<|user|>, <|end|>, ...): the detokenizer skips them too
    special |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
    added = {tok: i for tok, i in getattr(tokenizer, "get_added_vocab", dict)().items()}
    for token, i in vocab.items():
        if i in special:
            continue
        pieces[i] = _plain(_to_byte_level(token) if token in added else token)
    return tuple(pieces), vocab.get(ASSISTANT)


@functools.lru_cache(maxsize=1)
def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte-to-unicode map (the byte-level BPE alphabet): printable bytes map to themselves,
    the others (space, newline, …) to code points from 256 up."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _to_byte_level(text: str) -> str:
    alphabet = _byte_alphabet()
    return "".join(alphabet[b] for b in text.encode("utf-8"))


@functools.lru_cache(maxsize=1)
def _ws_table() -> dict[int, str]:
    """Translation from the byte-level spellings of ASCII whitespace back to the characters."""
    alphabet = _byte_alphabet()
    return str.maketrans({alphabet[ord(c)]: c for c in _WS})


def _plain(piece: str) -> str:
    """A byte-level piece with its whitespace spelled as ASCII again (tags are unchanged)."""
    return piece.translate(_ws_table())


class Phi4FlashReasoningParser(ReasoningParser):
    """``<think>`` reasoning ``</think>`` answer, found in text whatever the tokenization."""

    def __init__(self, tokenizer, *args, **kwargs) -> None:
        super().__init__(tokenizer, *args, **kwargs)
        self._pieces, self._assistant_id = _byte_level_pieces(tokenizer)
        self._streamed: tuple[int, Split] | None = None  # (len of the text split, its split)
        self._text_phase: tuple[int, Phase] | None = None  # (number of output ids, phase from text)
        self._scanner: _TurnScanner | None = None
        self._scanned = 0  # input ids fed to the scanner

    @property
    def reasoning_start_str(self) -> str:
        return OPEN

    @property
    def reasoning_end_str(self) -> str:
        return CLOSE

    # -- whole output ------------------------------------------------------------------------
    def extract_reasoning(self, model_output: str, request) -> tuple[str | None, str | None]:
        split = locate(model_output)
        if split.phase is Phase.UNDECIDED:  # the output ended before it could open a think block
            return None, model_output or None
        return split.parts(model_output)

    # -- streaming ---------------------------------------------------------------------------
    def extract_reasoning_streaming(
        self,
        previous_text: str,
        current_text: str,
        delta_text: str,
        previous_token_ids: Sequence[int],
        current_token_ids: Sequence[int],
        delta_token_ids: Sequence[int],
    ):
        """The difference between the split of ``current_text`` and that of ``previous_text``: held-back
        text comes out once a later delta decides what it is, so the deltas add up to the whole-text split."""
        if self._streamed is not None and self._streamed[0] == len(previous_text):
            before = self._streamed[1]
        else:
            before = locate(previous_text)
        scan_from = max(0, len(previous_text) - len(CLOSE) + 1) if before.phase is Phase.REASONING else 0
        now = locate(current_text, scan_from)
        self._streamed = (len(current_text), now)
        self._text_phase = (len(current_token_ids), now.phase)

        reasoning = ""
        if now.reasoning is not None:
            start = max(now.reasoning[0], before.reasoning[1] if before.reasoning else 0)
            reasoning = current_text[start : now.reasoning[1]]
        content = ""
        if now.content_start is not None:
            emitted = len(previous_text) if before.content_start is not None else now.content_start
            content = current_text[max(now.content_start, emitted) :]
        if not reasoning and not content:
            return None
        return compat.delta_message(reasoning=reasoning or None, content=content or None)

    def get_streaming_fallback_content(self, text: str, request) -> str | None:
        """At the end of a stream still undecided (``"<th"``, whitespace), that text is content, as in
        :meth:`extract_reasoning`. vLLM calls this when a stream ends with the reasoning not ended."""
        return text or None if locate(text).phase is Phase.UNDECIDED else None

    # -- token-id views ------------------------------------------------------------------------
    def _turn_start(self, input_ids: Sequence[int]) -> int:
        """Where the generated turn starts: after the last ``<|assistant|>`` (a rendered chat prompt,
        or the engine's prompt + output), else at the first id (output ids alone)."""
        if self._assistant_id is not None:
            for i in range(len(input_ids) - 1, -1, -1):
                if input_ids[i] == self._assistant_id:
                    return i + 1
        return 0

    def _piece(self, token_id: int) -> str:
        return self._pieces[token_id] if 0 <= token_id < len(self._pieces) else ""

    def _phase(self, input_ids: Sequence[int]) -> Phase:
        scanner = _TurnScanner()
        for token_id in input_ids[self._turn_start(input_ids) :]:
            if scanner.feed(self._piece(token_id)) is Phase.ANSWER:
                break
        return scanner.phase

    def is_reasoning_end(self, input_ids: Sequence[int]) -> bool:
        """Whether the turn in ``input_ids`` has reached its answer. A chat prompt ending in
        ``<|assistant|>`` has not: the generated turn may still open a think block."""
        return self._phase(input_ids) is Phase.ANSWER

    def is_reasoning_end_streaming(self, input_ids: Sequence[int], delta_ids) -> bool:
        """Per decode step; constant work per new token (the scanner keeps its place)."""
        text_phase = self._text_phase
        if text_phase is not None and text_phase[0] == len(input_ids):
            # The front end: the same step's text split decided, identical by construction.
            return text_phase[1] is Phase.ANSWER
        if self._scanner is None or len(input_ids) < self._scanned:  # first call, or a rollback
            self._scanner, self._scanned = _TurnScanner(), self._turn_start(input_ids)
        for token_id in input_ids[self._scanned :]:
            self._scanner.feed(self._piece(token_id))
        self._scanned = len(input_ids)
        return self._scanner.phase is Phase.ANSWER

    def extract_content_ids(self, input_ids: list[int]) -> list[int]:
        """The ids after the one that completed ``</think>`` (used where reasoning ends in a delta)."""
        scanner = _TurnScanner()
        for i, token_id in enumerate(input_ids):
            if scanner.feed(self._piece(token_id)) is Phase.ANSWER:
                return list(input_ids[i + 1 :])
        return []

    def count_reasoning_tokens(self, token_ids: Sequence[int]) -> int:
        """Tokens whose text overlaps the reasoning (a token that also carries a tag counts when part
        of it is reasoning, e.g. ``>\\n`` after ``<think>``)."""
        pieces = [self._piece(t) for t in token_ids]
        split = locate("".join(pieces))
        if split.reasoning is None or split.reasoning[0] == split.reasoning[1]:
            return 0
        start, end = split.reasoning
        count, pos = 0, 0
        for piece in pieces:
            if piece and pos < end and pos + len(piece) > start:
                count += 1
            pos += len(piece)
        return count

    # -- structured outputs --------------------------------------------------------------------
    def adjust_request(self, request):
        """Constrain the answer where the split puts it: see the module docstring."""
        params_of = getattr(request, "extract_structured_outputs", None)
        flag = compat.grammar_covers_reasoning_flag(request)
        params = params_of() if params_of is not None else None
        if params is None or getattr(request, "include_reasoning", True) is False:
            return request  # no constraint, or vLLM constrains from the first token itself
        to_format = compat.structured_outputs_to_format()
        if flag is None or to_format is None or not hasattr(request, "response_format"):
            _warn_unwrapped(type(request).__name__)
            return request
        used = [name for name in _UNWRAPPABLE_OPTIONS if getattr(params, name, None)]
        if used:
            raise ValueError(
                f"structured outputs option(s) {', '.join(used)} cannot be combined with the phi4_flash "
                "reasoning parser, which constrains the answer after the think block with one structural "
                "tag; drop them, or send the request without reasoning (include_reasoning: false)"
            )
        answer = to_format(params).model_dump(mode="json")
        think = {
            "type": "sequence",
            "elements": [
                {"type": "tag", "begin": OPEN, "content": {"type": "any_text"}, "end": CLOSE},
                {"type": "regex", "pattern": _GAP_REGEX},
                answer,
            ],
        }
        tag = {"type": "structural_tag", "format": {"type": "or", "elements": [think, answer]}}
        kinds = ("json", "regex", "choice", "grammar", "json_object")
        request.structured_outputs = replace(params, **dict.fromkeys(kinds), structural_tag=json.dumps(tag))
        request.response_format = None
        setattr(request, flag, True)
        return request


@functools.cache
def _warn_unwrapped(request_kind: str) -> None:
    logger.warning(
        "phi4_flash: this vLLM release cannot apply a grammar from the first token for %s; structured "
        "outputs are applied after </think> only (an answer without a think block is not constrained)",
        request_kind,
    )
