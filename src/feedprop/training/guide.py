"""Guides: the loss functions of feedprop.

A :class:`Guide` scores one output against the expected answer and says why, as a
:class:`~feedprop.node.Feedback` whose ``score`` lies in [0, 1] and whose ``text`` is written for
the optimizer that will read it ("Wrong: expected 42, got 41.").

Subclasses override one method, :meth:`Guide.forward`. ``__call__`` unwraps nodes, so a guide
accepts a traced output or a plain value alike. The built-in guides never raise on a strange
output (``None``, a huge string, a number where text was expected, an exception): they score it
0 and say what was wrong. A bad *target* is a bug in the data, so it raises
:class:`~feedprop.errors.InvalidInputError`.

This module holds the base class and the guides that compare answers (:class:`ExactMatch`,
:class:`Numeric`, :class:`MultipleChoice`); :class:`~feedprop.training.unit_test.UnitTest` runs
code against its tests, and :class:`~feedprop.training.judge.LLMJudge` has a model grade the output.

Example:
    >>> from feedprop.training.guide import Numeric
    >>> Numeric()("The total is 41 apples.", "42").text
    'Wrong: expected 42, got 41.'
"""

from __future__ import annotations

import math
import re
from typing import Any

from feedprop._text import truncate_middle
from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.node import Feedback, Node
from feedprop.training.answers import as_text, final_answer, last_choice, last_number

__all__ = ["SHOW_CHARS", "ExactMatch", "Guide", "MultipleChoice", "Numeric"]

#: How many characters of an output a feedback text quotes before eliding the middle.
SHOW_CHARS = 200


class Guide:
    """Base class of every guide. Subclasses override :meth:`forward`.

    Example:
        >>> class Shorter(Guide):
        ...     def forward(self, output, target, *, example=None):
        ...         ok = len(str(output)) <= target
        ...         return Feedback("Correct." if ok else f"Too long: keep it under {target} characters.", float(ok))
        >>> Shorter()("a short answer", 20).score
        1.0
    """

    def __call__(self, output: Any, target: Any, *, example: Any = None) -> Feedback:
        """Score ``output`` (a node or a plain value) against ``target``."""
        if isinstance(output, Node):
            output = output.data
        if isinstance(target, Node):
            target = target.data
        if isinstance(output, BaseException):
            # A workflow that raised produced no answer; say so rather than scoring the error's text.
            message = truncate_middle(as_text(output) or "", SHOW_CHARS)
            return Feedback(
                f"No answer: the workflow raised {type(output).__name__}: {message}",
                0.0,
                {"error": type(output).__name__},
            )
        return self.forward(output, target, example=example)

    def forward(self, output: Any, target: Any, *, example: Any = None) -> Feedback:
        """Score a plain ``output`` against ``target``; ``example`` is the dataset item, if any."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(output, target, *, example=None)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _fmt_number(x: float) -> str:
    return str(int(x)) if x.is_integer() and abs(x) < 1e16 else repr(x)


def _contains_token(text: str, needle: str) -> bool:
    """Whether ``needle`` appears in the longer ``text`` as a whole word (or as a bracketed token like ``(B)``)."""
    if not needle or len(text) <= len(needle):
        return False
    pattern = rf"(?<![\w.]){re.escape(needle)}(?![\w])" if needle[:1].isalnum() else re.escape(needle)
    return re.search(pattern, text) is not None


def _no_text(output: Any, expected: str) -> Feedback:
    kind = "nothing (None)" if output is None else f"a {type(output).__name__} that cannot be read as text"
    return Feedback(f"Wrong: expected {expected}, but the output was {kind}.", 0.0, {"expected": expected})


class ExactMatch(Guide):
    """Exact string match, after optional normalisation.

    ``normalize_whitespace`` collapses runs of whitespace and strips the ends; ``ignore_case``
    compares case-insensitively; ``extract=True`` first reads the final answer out of a
    chain-of-thought reply (see :func:`final_answer`).

    Example:
        >>> ExactMatch(ignore_case=True)("  Valid ", "valid").score
        1.0
    """

    def __init__(self, *, normalize_whitespace: bool = True, ignore_case: bool = False, extract: bool = False) -> None:
        self.normalize_whitespace = normalize_whitespace
        self.ignore_case = ignore_case
        self.extract = extract

    def normalize(self, text: str) -> str:
        if self.extract:
            text = final_answer(text)
        if self.normalize_whitespace:
            text = " ".join(text.split())
        if self.ignore_case:
            text = text.casefold()
        return text

    def forward(self, output: Any, target: Any, *, example: Any = None) -> Feedback:
        expected = as_text(target)
        if expected is None:
            raise InvalidInputError(f"ExactMatch needs a text target, got {type(target).__name__}; fix the dataset")
        text = as_text(output)
        if text is None:
            return _no_text(output, repr(expected))
        got, want = self.normalize(text), self.normalize(expected)
        extras = {"expected": expected, "got": truncate_middle(got, 1000)}
        if got == want:
            return Feedback("Correct.", 1.0, extras)
        if not got:
            return Feedback(f"Wrong: expected {expected!r}, got an empty answer.", 0.0, extras)
        if _contains_token(got, want):
            # The most useful thing to say about a right answer wrapped in prose: the wrapping is the problem.
            return Feedback(
                f"Wrong: expected exactly {expected!r}, got {truncate_middle(got, SHOW_CHARS)!r}, which contains the "
                "answer but also other text; the output must be the answer alone.",
                0.0,
                extras,
            )
        return Feedback(f"Wrong: expected {expected!r}, got {truncate_middle(got, SHOW_CHARS)!r}.", 0.0, extras)

    def __repr__(self) -> str:
        return (
            f"ExactMatch(normalize_whitespace={self.normalize_whitespace}, "
            f"ignore_case={self.ignore_case}, extract={self.extract})"
        )


class Numeric(Guide):
    """Compares the last number in the output with the target, within a tolerance.

    Correct when ``|got - expected| <= max(abs_tol, rel_tol * |expected|)``.

    Example:
        >>> Numeric()("2 + 3 = 5, so the answer is 5.", 5).score
        1.0
    """

    def __init__(self, *, abs_tol: float = 1e-6, rel_tol: float = 0.0) -> None:
        if abs_tol < 0 or rel_tol < 0:
            raise ConfigurationError("Numeric tolerances must be >= 0")
        self.abs_tol = abs_tol
        self.rel_tol = rel_tol

    def forward(self, output: Any, target: Any, *, example: Any = None) -> Feedback:
        expected = _target_number(target)
        shown = _fmt_number(expected)
        if isinstance(output, int | float) and not isinstance(output, bool):
            try:
                got: float | None = float(output)
            except OverflowError:  # an int too large for a float
                got = math.inf if output > 0 else -math.inf
        else:
            text = as_text(output)
            if text is None:
                return _no_text(output, shown)
            got = last_number(text)
        if got is None:
            return Feedback(
                f"Wrong: expected {shown}, but the output contains no number. End the answer with the number.",
                0.0,
                {"expected": expected},
            )
        extras = {"expected": expected, "got": got if math.isfinite(got) else str(got)}  # JSON has no inf/nan
        if math.isfinite(got) and abs(got - expected) <= max(self.abs_tol, self.rel_tol * abs(expected)):
            return Feedback("Correct.", 1.0, extras)
        return Feedback(f"Wrong: expected {shown}, got {_fmt_number(got)}.", 0.0, extras)

    def __repr__(self) -> str:
        return f"Numeric(abs_tol={self.abs_tol}, rel_tol={self.rel_tol})"


def _target_number(target: Any) -> float:
    if isinstance(target, int | float) and not isinstance(target, bool):
        return float(target)
    text = as_text(target)
    number = last_number(text) if text is not None else None
    if number is None:
        raise InvalidInputError(f"Numeric needs a number as target, got {target!r:.80}; fix the dataset")
    return number


class MultipleChoice(Guide):
    """Compares the last ``(X)`` option in the output with the target letter.

    The target is ``"(B)"`` or ``"B"``. A target that is not an option letter (a handful of
    published BBH items have the option's text instead) is compared as text with the final
    answer (see :func:`final_answer`), whitespace and case normalised.

    Example:
        >>> MultipleChoice()("It cannot be (A); the answer is (B).", "(B)").score
        1.0
    """

    def forward(self, output: Any, target: Any, *, example: Any = None) -> Feedback:
        expected_text = as_text(target)
        if expected_text is None:
            raise InvalidInputError(f"MultipleChoice needs a target like '(B)', got {type(target).__name__}")
        letter = _option_letter(expected_text)
        if letter is None:
            return ExactMatch(ignore_case=True, extract=True).forward(output, expected_text)
        expected = f"({letter})"
        text = as_text(output)
        if text is None:
            return _no_text(output, expected)
        got = last_choice(text)
        if got is None:
            return Feedback(
                f"Wrong: expected {expected}, but the output names no option. End the answer with the option as (X).",
                0.0,
                {"expected": expected},
            )
        extras = {"expected": expected, "got": f"({got})"}
        if got == letter:
            return Feedback("Correct.", 1.0, extras)
        return Feedback(f"Wrong: expected {expected}, got ({got}).", 0.0, extras)


def _option_letter(target: str) -> str | None:
    match = re.fullmatch(r"\s*\(?([A-Za-z])\)?\s*", target)
    return match.group(1).upper() if match else None
