"""Reading a reasoning model's final answer, and judging it against the reference.

The answer is the content of the last ``\\boxed{...}`` in the text after the last ``</think>``: what
the model concluded, not what it tried while thinking. A response that opened a think block and never
closed it (cut off by the token budget) has no answer. With ``--reasoning-parser phi4_flash`` the
server already returns the part after ``</think>`` as ``content``; without it the whole text arrives
and the same rule applies.
"""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"
BOXED = ("\\boxed{", "\\fbox{")


def answer_region(response: str) -> str | None:
    """The text after the think block; None while a think block is still open."""
    if CLOSE in response:
        return response.rsplit(CLOSE, 1)[1]
    if response.lstrip().startswith(OPEN):
        return None
    return response


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (braces balanced), or None."""
    start = max(text.rfind(marker) for marker in BOXED)
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i : j - 1].strip() if depth == 0 else None


def final_answer(response: str) -> str | None:
    region = answer_region(response)
    return None if region is None else last_boxed(region)


def is_equivalent(answer: str | None, reference: str) -> bool:
    """Mathematical equivalence by math-verify (``\\frac12`` = ``0.5`` = ``1/2``, set and interval
    notation, units stripped); a missing answer is wrong."""
    if answer is None:
        return False
    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0)]
    gold = parse(f"\\boxed{{{reference}}}", extraction_config=config)
    pred = parse(f"\\boxed{{{answer}}}", extraction_config=config)
    return bool(gold and pred and verify(gold, pred))
