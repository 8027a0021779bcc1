"""Guides: scores and feedback texts on right, wrong and strange outputs."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.node import Feedback, Node
from feedprop.training.guide import ExactMatch, Guide, MultipleChoice, Numeric

# --------------------------------------------------------------------------------------------
# exact match, numbers, options


def test_exact_match_texts() -> None:
    guide = ExactMatch()
    right = guide("  hello   world ", "hello world")
    assert (right.score, right.text) == (1.0, "Correct.")
    wrong = guide("hello", "world")
    assert wrong.score == 0.0
    assert wrong.text == "Wrong: expected 'world', got 'hello'."
    # A right answer wrapped in prose says so: the wrapping is what must change.
    wrapped = guide("So, the total is \\boxed{11}.", "11")
    assert wrapped.score == 0.0
    assert "contains the answer but also other text" in wrapped.text
    assert "contains the answer" in guide("The answer is (B).", "(B)").text
    # ...but not for a number that is only part of another number or word.
    assert "contains" not in guide("I have 110 apples.", "11").text
    assert "contains" not in guide("Version 1.11 here.", "11").text
    assert "contains" not in guide("cat", "cat").text
    assert ExactMatch(normalize_whitespace=False)(" a", "a").score == 0.0
    assert ExactMatch()("Valid", "valid").score == 0.0
    assert ExactMatch(ignore_case=True)("Valid", "valid").score == 1.0
    assert ExactMatch(extract=True)("Step 1... So the answer is ] ).", "] )").score == 1.0
    assert "empty answer" in ExactMatch()("   ", "x").text


def test_exact_match_rejects_a_target_without_text() -> None:
    with pytest.raises(InvalidInputError, match="fix the dataset"):
        ExactMatch()("x", None)


def test_numeric_scores_the_last_number() -> None:
    guide = Numeric()
    assert guide("First 12, then 30, so the answer is 42.", "42").score == 1.0
    wrong = guide("The total is 41 apples.", "42")
    assert (wrong.score, wrong.text) == (0.0, "Wrong: expected 42, got 41.")
    assert guide("She earns $1,080 a week.", "1,080").score == 1.0
    assert guide(42, 42).score == 1.0
    assert guide(41.9999999, "42").score == 1.0
    assert Numeric(abs_tol=0.5)(41.6, 42).score == 1.0
    assert Numeric(rel_tol=0.01)(99.5, 100).score == 1.0
    assert Numeric(rel_tol=0.001)(99.5, 100).score == 0.0
    none = guide("I do not know.", 7)
    assert none.score == 0.0
    assert "contains no number" in none.text and "expected 7" in none.text


def test_numeric_configuration_and_targets() -> None:
    with pytest.raises(ConfigurationError):
        Numeric(abs_tol=-1)
    with pytest.raises(InvalidInputError, match="number as target"):
        Numeric()("1", "seven")


def test_multiple_choice() -> None:
    guide = MultipleChoice()
    assert guide("It cannot be (A); the answer is (B).", "(B)").score == 1.0
    assert guide("B", "(B)").score == 1.0
    assert guide("(b)", "B").score == 1.0
    wrong = guide("So the answer is (C).", "(B)")
    assert (wrong.score, wrong.text) == (0.0, "Wrong: expected (B), got (C).")
    assert "names no option" in guide("I refuse.", "(A)").text
    # A few published BBH items have an option's text as target: compared as the final answer.
    assert guide("So the answer is Monsters, Inc.", "Monsters, Inc").score == 1.0
    assert guide("So the answer is (A).", "Monsters, Inc").score == 0.0


# --------------------------------------------------------------------------------------------
# the base class and nodes


def test_guides_accept_nodes_and_report_exceptions() -> None:
    assert Numeric()(Node("so 42"), Node("42")).score == 1.0
    failed = Numeric()(ValueError("boom"), "42")
    assert failed.score == 0.0
    assert failed.text.startswith("No answer: the workflow raised ValueError: boom")


def test_custom_guide_overrides_forward() -> None:
    class Shorter(Guide):
        def forward(self, output: Any, target: Any, *, example: Any = None) -> Feedback:
            ok = len(str(output)) <= target
            return Feedback("Correct." if ok else f"Too long: keep it under {target} characters.", float(ok))

    assert Shorter()("short", 10).score == 1.0
    assert Shorter()("far too long for this", 10).text == "Too long: keep it under 10 characters."
    with pytest.raises(NotImplementedError, match="forward"):
        Guide()("x", "y")


class _BadStr:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


WEIRD: list[Any] = [
    None,
    "",
    " ",
    "x" * 2_000_000,
    "9" * 100_000,
    "(" * 50_000,
    "\x00\x01 binary \ud800",
    b"\xff\xfe bytes",
    0,
    -1,
    True,
    float("nan"),
    float("inf"),
    10**5000,
    [1, 2, 3],
    {"answer": 41},  # (42 in it would rightly count as the answer)
    object(),
    _BadStr(),
    KeyError("k"),
]


@pytest.mark.parametrize(
    ("guide", "target"),
    [
        (ExactMatch(), "yes"),
        (ExactMatch(extract=True, ignore_case=True), "No"),
        (Numeric(), "42"),
        (MultipleChoice(), "(B)"),
        (MultipleChoice(), "Monsters, Inc"),
    ],
)
def test_weird_outputs_score_zero_without_raising(guide: Guide, target: str) -> None:
    for output in WEIRD:
        fb = guide(output, target)
        assert isinstance(fb, Feedback) and fb.text, output
        assert fb.score == 0.0, (guide, repr(output)[:80], fb)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary(), st.integers(), st.floats(), st.none(), st.lists(st.integers())))
def test_arbitrary_outputs_never_raise(output: Any) -> None:
    for guide, target in ((ExactMatch(extract=True), "x"), (Numeric(), 7), (MultipleChoice(), "(A)")):
        fb = guide(output, target)
        assert fb.score is not None and 0.0 <= fb.score <= 1.0
        assert isinstance(fb.text, str) and fb.text
