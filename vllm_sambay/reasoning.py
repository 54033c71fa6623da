"""Reasoning parser ``phi4_flash``: Phi-4-mini-flash-reasoning thinks inside ``<think>…</think>``.

Registered by :func:`vllm_sambay.register` so that stock ``vllm serve CKPT --reasoning-parser
phi4_flash`` returns the thinking in ``message.reasoning`` / ``delta.reasoning`` and counts
``usage.completion_tokens_details.reasoning_tokens``, exactly like vLLM's own parsers. All the
splitting logic is vLLM's ``BaseThinkingReasoningParser`` (present in every release we support,
0.26 .. 0.33): the model writes the opening tag itself, as DeepSeek-R1-style models do, and both
tags are single tokens of its tokenizer, which is what that base class requires.
"""

from __future__ import annotations

from collections.abc import Sequence

from vllm.reasoning.basic_parsers import BaseThinkingReasoningParser


class Phi4FlashReasoningParser(BaseThinkingReasoningParser):
    """``<think>`` reasoning ``</think>`` answer; the tags are special tokens, never shown as content."""

    @property
    def start_token(self) -> str:
        return "<think>"

    @property
    def end_token(self) -> str:
        return "</think>"

    def extract_reasoning(self, model_output: str, request) -> tuple[str | None, str | None]:
        """No leading ``<think>``: all answer, no reasoning.

        The base class treats an output without the opening tag as reasoning up to a closing tag
        (for models whose template opens the block), while its streaming path calls the same text
        content; this model opens the block itself, so answering content keeps both paths equal.
        """
        if not model_output.lstrip().startswith(self.start_token):
            return None, model_output
        return super().extract_reasoning(model_output, request)

    def extract_reasoning_streaming(
        self,
        previous_text: str,
        current_text: str,
        delta_text: str,
        previous_token_ids: Sequence[int],
        current_token_ids: Sequence[int],
        delta_token_ids: Sequence[int],
    ):
        """Before any ``<think>``, everything (a stray ``</think>`` too) is content, as in the whole-text path."""
        if self.start_token_id not in current_token_ids:
            return self._delta(content=delta_text) if delta_text else None
        return super().extract_reasoning_streaming(
            previous_text, current_text, delta_text, previous_token_ids, current_token_ids, delta_token_ids
        )

    @staticmethod
    def _delta(**fields):
        try:  # 0.32, 0.33
            from vllm.entrypoints.generate.base.protocol import DeltaMessage
        except ImportError:  # pragma: no cover - 0.26 (read in its wheel)
            from vllm.entrypoints.openai.engine.protocol import DeltaMessage
        return DeltaMessage(**fields)
