"""Reading answers out of a model's output: the final answer, the last number or option, the code.

Pure functions, shared by the guides and the task loaders.

Example:
    >>> final_answer("3 + 4 = 7. So the answer is 7."), last_number("It costs $1,250.50."), last_choice("(B)")
    ('7', 1250.5, 'B')
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["as_text", "extract_code", "final_answer", "last_choice", "last_number"]

_ANSWER_IS = re.compile(r"\b(?:the\s+(?:final\s+)?answer\s+is\s*:?|(?:final\s+)?answer\s*:)", re.IGNORECASE)
# Thousands separators only in groups of three, so "1,2,3" reads as three numbers, not 123.
# A minus counts as a sign only when it does not follow a word character ("10-3" is 10 and 3).
_NUMBER = re.compile(r"(?<![\w.])[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|(?<![\w.])[-−]?\.\d+")
_CHOICE = re.compile(r"\(([A-Za-z])\)")
_BARE_CHOICE = re.compile(r"^\W*([A-Za-z])\W*$")
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def final_answer(text: str) -> str:
    """The final answer in a chain-of-thought reply: what follows the last "the answer is".

    Without such a phrase the whole text (stripped) is the answer.

    Example:
        >>> final_answer("Let's think step by step. 2 + 2 = 4. So the answer is 4.")
        '4'
    """
    matches = list(_ANSWER_IS.finditer(text))
    answer = text[matches[-1].end() :] if matches else text
    if matches:
        answer = answer.strip().split("\n", 1)[0]
    previous = None
    while answer != previous:  # peel "**Yes**." layer by layer: markup, quotes, a final period
        previous = answer
        answer = answer.strip().strip("*_`\"'").removesuffix(".")
    return answer


def last_number(text: str) -> float | None:
    """The last number written in ``text`` (commas as thousands separators allowed), or ``None``.

    Example:
        >>> last_number("She pays $1,250.50 in total, i.e. 1250.5")
        1250.5
    """
    for match in reversed(_NUMBER.findall(text)):
        try:
            return float(match.replace(",", "").replace("−", "-"))
        except ValueError:  # pragma: no cover - the pattern only matches valid literals
            continue
    return None


def last_choice(text: str) -> str | None:
    """The letter of the last ``(X)`` option in ``text``, upper-cased; a bare ``"B"`` also counts.

    Example:
        >>> last_choice("(A) is tempting, but the answer is (C).")
        'C'
    """
    found = _CHOICE.findall(text)
    if found:
        return str(found[-1]).upper()
    bare = _BARE_CHOICE.match(final_answer(text)) if len(text) < 1000 else None
    return bare.group(1).upper() if bare else None


def extract_code(text: str, entry_point: str | None = None) -> str:
    """The code in a model's reply: the fenced block defining ``entry_point``, else the first block.

    A reply without fences is taken as code as it is; an unclosed fence (a reply cut off
    mid-block) still yields the code after it.

    Example:
        >>> extract_code("Here:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
        'def f():\\n    return 1\\n'
    """
    blocks = [body for lang, body in _FENCE.findall(text) if lang.lower() in ("", "python", "py", "python3")]
    if not blocks:
        return text
    if entry_point:
        for body in blocks:
            if re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", body, re.MULTILINE):
                return str(body)
    return str(blocks[0])


def as_text(value: Any) -> str | None:
    """``value`` as text, or ``None`` when it has none (``None``, or a ``__str__`` that raises).

    Example:
        >>> as_text(b"caf\\xc3\\xa9"), as_text(42), as_text(None)
        ('café', '42', None)
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    try:
        return str(value)
    except Exception:
        return None
