"""Checks that a suggested value is valid for its parameter before anything is applied.

One validator per parameter kind, chosen from ``param.kind`` (or inferred from the current
value), each returning the value to apply or raising :class:`~feedprop.errors.SuggestionError`
with a message written for the model that made the suggestion:

* ``text``   — a string; an empty string never replaces a non-empty one.
* ``code``   — parses as Python and still defines the function with the same name and
  parameters (``async`` included).
* ``number`` — parses as a finite number inside ``bounds``; an ``int`` stays an ``int``.
* ``json``   — valid JSON of the same shape as the current value (same keys, same types).
* ``demos``  — a list of demonstrations ``{"input": str, "output": str}`` (a JSON text of one is read).

Then the parameter's ``constraint`` is checked where it is checkable: a callable is called,
and common phrasings ("at most 50 words", "must contain 'Answer:'", "between 0 and 1",
"positive", "integer") are recognised; any other text is shown to the model but not enforced.

Example:
    >>> validate_value("number", 1.0, "2.5", bounds=(0, 10))
    2.5
    >>> validate_value("number", 1.0, 11, bounds=(0, 10))
    Traceback (most recent call last):
    ...
    feedprop.errors.SuggestionError: 11 is outside the bounds [0, 10]; suggest a number between 0 and 10
"""

from __future__ import annotations

import ast
import json
import math
import re
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from feedprop.errors import SuggestionError
from feedprop.node import KINDS, bound_text, demos_problem, infer_kind, outside_bounds
from feedprop.optim.replies import arithmetic

__all__ = [
    "check_constraint",
    "copied_passage",
    "infer_kind",
    "json_shape_problem",
    "strip_fences",
    "validate_value",
]

_FENCE = re.compile(r"^\s*```[^\n`]*\n(.*?)\n?```\s*$", re.DOTALL)


def strip_fences(text: str) -> str:
    """Remove one markdown code fence wrapping the whole of ``text``, if there is one."""
    m = _FENCE.match(text)
    return m.group(1) if m else text


def validate_value(
    kind: str,
    current: Any,
    suggested: Any,
    *,
    bounds: tuple[float | None, float | None] | None = None,
    constraint: Any = None,
    name: str = "",
) -> Any:
    """Return ``suggested`` converted for a parameter of ``kind`` now holding ``current``.

    Raises :class:`SuggestionError` (with ``parameter=name``) when it is invalid.

    Example:
        >>> validate_value("code", "def f(x):\\n    return x", "def f(x):\\n    return 2 * x")
        'def f(x):\\n    return 2 * x'
    """
    value: Any
    try:
        if kind == "text":
            value = _validate_text(current, suggested)
        elif kind == "code":
            value = _validate_code(current, suggested)
        elif kind == "number":
            value = _validate_number(current, suggested, bounds)
        elif kind == "json":
            value = _validate_json(current, suggested)
        elif kind == "demos":
            value = _validate_demos(suggested)
        else:
            raise SuggestionError(f"unknown parameter kind {kind!r}; expected one of {', '.join(KINDS)}")
        problem = check_constraint(constraint, value)
        if problem:
            raise SuggestionError(problem)
    except SuggestionError as e:
        raise SuggestionError(str(e), parameter=name, value=suggested) from None
    return value


def _validate_text(current: Any, suggested: Any) -> str:
    if isinstance(suggested, bool) or not isinstance(suggested, str | int | float):
        raise SuggestionError(f"expected a text value (a string), got {type(suggested).__name__}")
    value = str(suggested)
    if not value.strip() and isinstance(current, str) and current.strip():
        raise SuggestionError("the suggested text is empty; suggest the full new text, or leave the variable out")
    return value


_WORD = re.compile(r"\w+")


def copied_passage(
    suggested: str,
    sources: Iterable[str | Sequence[str]],
    *,
    current: str = "",
    min_words: int = 6,
    one_source_only: bool = False,
) -> str | None:
    """The first run of ``min_words`` or more words that ``suggested`` copies from one of ``sources``.

    A small optimizer model asked to improve an instruction often pastes in the example it was
    shown ("I have a chicken, a frog ... The total is 18."), which then answers every question
    with that example's answer. Words are compared case-insensitively; a passage the ``current``
    value already holds is not counted. A source is a text or a list of texts (one example's
    question, replies and so on); with ``one_source_only``, a passage found in two or more sources
    is the task's own wording, which every example shares ("If you follow these instructions, do
    you return to the starting point?"), not one example's, and is not counted either. ``None``
    when nothing is copied.

    Example:
        >>> copied_passage("Answer. I have a frog, a cat and two pigs here.", ["I have a frog, a cat and two pigs."])
        'I have a frog a cat and two pigs'
        >>> copied_passage("Count the animals, then answer.", ["I have a frog, a cat and two pigs."]) is None
        True
        >>> runs = [["I have a frog. How many animals do I have?"], ["I have two pigs. How many animals do I have?"]]
        >>> copied_passage("Answer: how many animals do I have?", runs, one_source_only=True) is None
        True
        >>> copied_passage("Answer: I have two pigs. How many animals", runs, one_source_only=True)
        'I have two pigs How many animals'
    """
    words = [w.lower() for w in _WORD.findall(suggested)]
    if len(words) < min_words:
        return None
    originals = _WORD.findall(suggested)
    known = {" ".join(g) for g in _ngrams([w.lower() for w in _WORD.findall(current)], min_words)}
    counts: Counter[str] = Counter()
    for source in sources:
        texts = [source] if isinstance(source, str) else source
        counts.update(
            {" ".join(g) for text in texts for g in _ngrams([w.lower() for w in _WORD.findall(text)], min_words)}
        )
    seen = {gram for gram, n in counts.items() if n == 1 or not one_source_only} - known
    if not seen:
        return None
    grams = [" ".join(g) for g in _ngrams(words, min_words)]
    for start, gram in enumerate(grams):
        if gram in seen:
            end = start
            while end + 1 < len(grams) and grams[end + 1] in seen:
                end += 1
            return " ".join(originals[start : end + min_words])
    return None


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def _function_defs(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def _signature(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    # The parameter list as written (names, kinds, annotations and defaults), minus the body.
    head = ast.unparse(fn.args)
    return f"{'async ' if isinstance(fn, ast.AsyncFunctionDef) else ''}def {fn.name}({head})"


def _signature_names(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[object, ...]:
    a = fn.args
    return (
        isinstance(fn, ast.AsyncFunctionDef),
        fn.name,
        tuple(x.arg for x in a.posonlyargs),
        tuple(x.arg for x in a.args),
        a.vararg.arg if a.vararg else None,
        tuple(x.arg for x in a.kwonlyargs),
        a.kwarg.arg if a.kwarg else None,
    )


def repair_string_newlines(source: str) -> str | None:
    """``source`` with line breaks inside one-line string literals re-escaped; ``None`` if it still fails.

    A model writing code inside a JSON string often writes ``"\\n"`` where Python needs ``\\n`` inside
    a string literal, so ``s.split("\\n")`` arrives split over two lines. The line Python reports
    as holding an unterminated string literal is joined to the next with an escaped newline, until
    the source parses (or nothing more can be joined).

    Example:
        >>> print(repair_string_newlines('def f(s):\\n    return s.split("\\n")\\n'))
        def f(s):
            return s.split("\\n")
        <BLANKLINE>
        >>> repair_string_newlines("def f(:\\n    pass\\n") is None
        True
    """
    lines = source.split("\n")
    for _ in range(min(len(lines), 50)):
        try:
            ast.parse("\n".join(lines))
        except SyntaxError as e:
            if not (e.msg or "").startswith("unterminated string literal") or not e.lineno or e.lineno >= len(lines):
                return None
            i = e.lineno - 1
            lines[i : i + 2] = [lines[i] + "\\n" + lines[i + 1]]
        except (ValueError, RecursionError, MemoryError):
            return None
        else:
            return "\n".join(lines)
    return None


def _parse(source: str) -> tuple[str, ast.Module]:
    """``source`` and its syntax tree; a source that fails only by line breaks inside one-line string
    literals comes back repaired (:func:`repair_string_newlines`)."""
    try:
        return source, ast.parse(source + "\n")
    except SyntaxError as e:
        repaired = repair_string_newlines(source)
        if repaired is not None:
            return repaired, ast.parse(repaired + "\n")
        where = f" at line {e.lineno}" if e.lineno else ""
        raise SuggestionError(f"the code does not parse: {e.msg}{where}; suggest complete, valid Python") from None
    except (ValueError, RecursionError, MemoryError) as e:  # null bytes, absurd nesting
        raise SuggestionError(f"the code cannot be parsed ({type(e).__name__}); suggest plain Python source") from None


def _validate_code(current: Any, suggested: Any) -> str:
    if not isinstance(suggested, str):
        raise SuggestionError(f"expected code as a string, got {type(suggested).__name__}")
    source = textwrap.dedent(strip_fences(suggested)).strip("\n")
    source, tree = _parse(source)
    new_defs = _function_defs(tree)
    try:
        old_defs = _function_defs(ast.parse(textwrap.dedent(str(current))))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        old_defs = {}  # the current code is itself broken: any parseable code is an improvement
    if not old_defs:
        return source if new_defs or source.strip() else _raise_empty()
    for name, old in old_defs.items():
        new = new_defs.get(name)
        if new is None:
            raise SuggestionError(
                f"the code must define the function {name!r} with the signature `{_signature(old)}`; "
                "suggest the whole function, not only its body"
            )
        if _signature_names(new) != _signature_names(old):
            raise SuggestionError(
                f"the signature changed from `{_signature(old)}` to `{_signature(new)}`; keep the signature "
                "and change only the body"
            )
        break  # the first function is the trainable one; others are helpers the model may rewrite
    return source


def _raise_empty() -> str:
    raise SuggestionError("the suggested code is empty; suggest the complete function")


def _as_number(value: Any) -> float | int:
    if isinstance(value, bool):
        raise SuggestionError(f"expected a number, got the boolean {value}")
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        text = value.strip().replace(",", "").replace("_", "")
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            pass
        computed = arithmetic(text)  # "6.75 + 0.45": the model did the sum in words, we finish it
        if computed is not None:
            return computed
        raise SuggestionError(f"{value!r:.60} is not a number; suggest a plain number such as 3.5")
    raise SuggestionError(f"expected a number, got {type(value).__name__}")


def _fmt_short(x: float) -> str:
    return "an integer too large for a float" if isinstance(x, int) and x.bit_length() > 1024 else str(x)


def _validate_number(current: Any, suggested: Any, bounds: tuple[float | None, float | None] | None) -> float | int:
    number = _as_number(suggested)
    try:
        finite = math.isfinite(number)
    except OverflowError:  # an int with hundreds of digits: no float can hold it
        finite = False
    if not finite:
        raise SuggestionError(f"{_fmt_short(number)} is not a finite number; suggest a finite value")
    if isinstance(current, int) and not isinstance(current, bool):
        if float(number) != int(number):
            raise SuggestionError(f"{number} is not an integer; this variable holds an integer")
        number = int(number)
    elif isinstance(current, float):
        number = float(number)
    problem = outside_bounds(number, bounds)
    if problem is not None and bounds is not None:
        lo_s, hi_s = bound_text(bounds[0], "-inf"), bound_text(bounds[1], "inf")
        raise SuggestionError(f"{problem}; suggest a number between {lo_s} and {hi_s}")
    return number


def _validate_json(current: Any, suggested: Any) -> Any:
    value = suggested
    if isinstance(suggested, str) and not isinstance(current, str):
        try:
            value = json.loads(strip_fences(suggested), strict=False)
        except (ValueError, RecursionError) as e:
            raise SuggestionError(f"the value is not valid JSON ({e}); suggest a JSON value") from None
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise SuggestionError(
            "the value is not JSON-serialisable (NaN and Infinity are not JSON); suggest plain JSON data"
        ) from None
    problem = json_shape_problem(current, value)
    if problem:
        raise SuggestionError(f"{problem}; keep the same structure as the current value")
    return value


def _validate_demos(suggested: Any) -> list[dict[str, str]]:
    value = suggested
    if isinstance(suggested, str):
        try:
            value = json.loads(strip_fences(suggested), strict=False)
        except (ValueError, RecursionError) as e:
            raise SuggestionError(f"the value is not valid JSON ({e}); suggest a JSON list of demonstrations") from None
    problem = demos_problem(value)
    if problem:
        raise SuggestionError(problem)
    return [{"input": d["input"], "output": d["output"]} for d in value]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _article(word: str) -> str:
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"


def json_shape_problem(old: Any, new: Any, path: str = "$") -> str | None:
    """Why ``new`` does not have the shape of ``old``, or ``None`` when it does.

    Objects must keep exactly their keys; arrays may change length but each element must have
    the shape of the first old element; scalars must keep their JSON type (``null`` accepts any).

    Example:
        >>> json_shape_problem({"a": 1, "b": [1]}, {"a": 2, "b": [3, 4]}) is None
        True
        >>> json_shape_problem({"a": 1}, {"a": "x"})
        '$.a should be a number, not a string'
    """
    if old is None:
        return None
    t_old, t_new = _json_type(old), _json_type(new)
    if t_old != t_new:
        return f"{path} should be {_article(t_old)} {t_old}, not {_article(t_new)} {t_new}"
    if isinstance(old, dict):
        missing = [k for k in old if k not in new]
        extra = [k for k in new if k not in old]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if extra:
                parts.append(f"unexpected keys {extra}")
            return f"{path} has {' and '.join(parts)}"
        for k in old:
            problem = json_shape_problem(old[k], new[k], f"{path}.{k}")
            if problem:
                return problem
    elif isinstance(old, list | tuple) and old:
        for i, item in enumerate(new):
            problem = json_shape_problem(old[0], item, f"{path}[{i}]")
            if problem:
                return problem
    return None


# ---------------------------------------------------------------------------------------------
# Constraints

_NUM = r"(-?\d+(?:\.\d+)?)"
_LENGTH = re.compile(
    r"\b(at most|no more than|maximum of|max(?:imum)?|up to|fewer than|less than|under|at least|no fewer than|"
    r"minimum of|min(?:imum)?|more than)\s+(\d[\d,]*)\s+(characters?|chars?|words?|lines?|sentences?)\b",
    re.IGNORECASE,
)
_QUOTED = r"""["'`‘“](.+?)["'`’”]"""
_CONTAIN = re.compile(r"\bmust\s+(not\s+)?(?:contain|include|mention|use)\s+" + _QUOTED, re.IGNORECASE)
_STARTS = re.compile(r"\b(?:start|begin)s?\s+with\s+" + _QUOTED, re.IGNORECASE)
_ENDS = re.compile(r"\bends?\s+with\s+" + _QUOTED, re.IGNORECASE)
_BETWEEN = re.compile(r"\bbetween\s+" + _NUM + r"\s+and\s+" + _NUM, re.IGNORECASE)
_COMPARE = re.compile(r"(>=|<=|>|<|≥|≤)\s*" + _NUM)


def _count(text: str, unit: str) -> int:
    unit = unit.lower()
    if unit.startswith("char"):
        return len(text)
    if unit.startswith("word"):
        return len(text.split())
    if unit.startswith("line"):
        return len(text.splitlines())
    return len([s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s])


def _text_constraint(text: str, value: str) -> str | None:
    for m in _LENGTH.finditer(text):
        word, limit, unit = m.group(1).lower(), int(m.group(2).replace(",", "")), m.group(3)
        n = _count(value, unit)
        strict = word in ("fewer than", "less than", "under", "more than")
        if word in ("at least", "no fewer than", "minimum of", "min", "minimum", "more than"):
            if n < limit or (strict and n == limit):
                return f"the constraint says {m.group(0)!r} but the value has {n} {unit}"
        elif n > limit or (strict and n == limit):
            return f"the constraint says {m.group(0)!r} but the value has {n} {unit}"
    for m in _CONTAIN.finditer(text):
        needle, negated = m.group(2), bool(m.group(1))
        if negated and needle in value:
            return f"the constraint says the value must not contain {needle!r}, but it does"
        if not negated and needle not in value:
            return f"the constraint says the value must contain {needle!r}, but it does not"
    for m in _STARTS.finditer(text):
        if not value.lstrip().startswith(m.group(1)):
            return f"the constraint says the value must start with {m.group(1)!r}"
    for m in _ENDS.finditer(text):
        if not value.rstrip().endswith(m.group(1)):
            return f"the constraint says the value must end with {m.group(1)!r}"
    return None


def _number_constraint(text: str, value: float) -> str | None:
    low = text.lower()
    checks: list[tuple[bool, str]] = [
        ("non-negative" in low or "nonnegative" in low, "value >= 0"),
        (re.search(r"(?<!non-)(?<!non)\bpositive\b", low) is not None, "value > 0"),
        (re.search(r"(?<!non-)(?<!non)\bnegative\b", low) is not None, "value < 0"),
        (re.search(r"\binteger\b", low) is not None, "value is an integer"),
    ]
    for applies, rule in checks:
        if not applies:
            continue
        ok = {
            "value >= 0": value >= 0,
            "value > 0": value > 0,
            "value < 0": value < 0,
            "value is an integer": float(value).is_integer(),
        }[rule]
        if not ok:
            return f"the constraint {text!r} requires {rule}, but {value} does not satisfy it"
    for m in _BETWEEN.finditer(text):
        lo, hi = sorted((float(m.group(1)), float(m.group(2))))
        if not lo <= value <= hi:
            return f"the constraint {text!r} requires a value between {lo:g} and {hi:g}, got {value}"
    ops: dict[str, Callable[[float, float], bool]] = {
        ">=": lambda a, b: a >= b,
        "≥": lambda a, b: a >= b,
        "<=": lambda a, b: a <= b,
        "≤": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        "<": lambda a, b: a < b,
    }
    for m in _COMPARE.finditer(text):
        if not ops[m.group(1)](value, float(m.group(2))):
            return f"the constraint {text!r} requires value {m.group(1)} {m.group(2)}, got {value}"
    return None


def check_constraint(constraint: Any, value: Any) -> str | None:
    """Check ``value`` against ``constraint`` where that is possible; return the problem or ``None``.

    A callable constraint is called with the value and may return ``True``/``None`` (fine),
    ``False`` (violated) or a string (the problem). A text constraint is checked for the
    phrasings this module recognises; the rest of it is advice for the model only.

    Example:
        >>> check_constraint("at most 3 words", "one two three four")
        "the constraint says 'at most 3 words' but the value has 4 words"
        >>> check_constraint(lambda v: v > 0, 5) is None
        True
    """
    if constraint is None:
        return None
    if callable(constraint):
        try:
            verdict = constraint(value)
        except Exception as e:  # the user's check raised: that is its verdict, reported to the model
            return f"the constraint check raised {type(e).__name__}: {e}"
        if verdict is False:
            name = getattr(constraint, "__name__", "constraint")
            return f"the value violates the constraint {name!r}"
        if isinstance(verdict, str) and verdict:
            return verdict
        return None
    if isinstance(constraint, Mapping) or not isinstance(constraint, str):
        return None
    if isinstance(value, str):
        return _text_constraint(constraint, value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number_constraint(constraint, float(value))
    return None
