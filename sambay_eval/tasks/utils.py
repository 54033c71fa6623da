"""Prompt and scoring functions the task YAMLs point at (``!function utils.<name>``)."""

from __future__ import annotations

from sambay_eval.answers import final_answer, is_equivalent

# The instruction reasoning models are evaluated with on these sets (MATH-500 / AIME, 0-shot chat).
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def _field(doc: dict, name: str):
    """MATH-500 spells its fields in lower case, the AIME 2024 set capitalised."""
    return doc[name] if name in doc else doc[name.capitalize()]


def doc_to_text(doc: dict) -> str:
    return f"{_field(doc, 'problem')}\n\n{INSTRUCTION}"


def doc_to_target(doc: dict) -> str:
    return str(_field(doc, "answer"))


def process_results(doc: dict, results: list[str]) -> dict[str, int]:
    """``accuracy``: the final answer is math-verify-equivalent to the reference; ``answered``: the
    response had a final answer at all (a think block cut off by the budget has none)."""
    answer = final_answer(results[0])
    return {"accuracy": int(is_equivalent(answer, doc_to_target(doc))), "answered": int(answer is not None)}
