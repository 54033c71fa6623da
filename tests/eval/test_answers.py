"""Answer extraction and judging of the math evaluation, on known strings (no server)."""

from __future__ import annotations

import pytest

from sambay_eval.answers import final_answer, is_equivalent

THINK = "<think>\nLet me try \\boxed{3}... no, 2+3 is 5.</think>\n\n"


@pytest.mark.parametrize(
    "response,answer",
    [
        (THINK + "The answer is \\boxed{5}.", "5"),  # after </think>, not the guess inside it
        ("The sum is \\boxed{5}.", "5"),  # the server's content (parser on): no tags left
        (THINK + "First \\boxed{4}, corrected: \\boxed{5}", "5"),  # the last box
        (THINK + "$\\boxed{\\frac{1}{\\sqrt{2}}}$", "\\frac{1}{\\sqrt{2}}"),  # nested braces
        ("\\fbox{7}", "7"),
        ("<think>\nI think \\boxed{5} but let me check", None),  # cut off while thinking: no answer
        (THINK + "five", None),  # no box
        ("\\boxed{5", None),  # unbalanced
    ],
)
def test_final_answer(response, answer):
    assert final_answer(response) == answer


@pytest.mark.parametrize(
    "answer,reference,equal",
    [
        ("\\frac{1}{2}", "0.5", True),
        ("\\dfrac12", "\\frac{1}{2}", True),
        ("(1, 2]", "(1,2]", True),
        ("5", "6", False),
        ("x^2 + 2x + 1", "(x+1)^2", True),
        (None, "5", False),
    ],
)
def test_math_verify_judges_equivalence(answer, reference, equal):
    assert is_equivalent(answer, reference) is equal
