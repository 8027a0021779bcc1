"""Text shortening: the one rule for quoting a long value in a prompt, a report or a log line."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["show", "truncate_middle"]

#: Below this many kept characters the marker is dropped for a bare "...".
_MIN_KEPT = 10


def truncate_middle(text: str, limit: int) -> str:
    """``text`` unchanged if it has at most ``limit`` characters, else its two ends around a marker.

    The marker says how many characters went (a bare ``...`` when the limit leaves too little room
    for it); the result never exceeds ``limit`` (nor 3 characters when ``limit`` is smaller).

    Example:
        >>> truncate_middle("0123456789" * 10, 40)
        '0123456...[truncated 87 chars]...456789'
        >>> truncate_middle("short", 40)
        'short'
        >>> truncate_middle("abcdefghijklmnopqrstuvwxy", 20)
        'abcdefghi...rstuvwxy'
    """
    if len(text) <= limit:
        return text
    keep = limit - len(f"...[truncated {len(text):,} chars]...")
    if keep < _MIN_KEPT:  # too short a limit for the marker: a bare ellipsis
        keep = max(0, limit - 3)
        head, tail = keep - keep // 2, keep // 2
        return f"{text[:head]}...{text[len(text) - tail :] if tail else ''}"
    head, tail = keep - keep // 2, keep // 2
    return f"{text[:head]}...[truncated {len(text) - keep:,} chars]...{text[len(text) - tail :]}"


def show(value: Any, limit: int, *, one_line: bool = False) -> str:
    """``value`` as text of at most about ``limit`` characters: strings as they are, other values as
    JSON (``repr`` where JSON cannot say them), long ones cut in the middle.

    ``one_line=True`` writes newlines as ``\\n`` (for tables and log lines).

    Example:
        >>> show({"b": 1, "a": [1, 2]}, 80)
        '{"b": 1, "a": [1, 2]}'
        >>> show("two\\nlines", 80, one_line=True)
        'two\\\\nlines'
        >>> show(object, 80)
        "<class 'object'>"
    """
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    if one_line:
        text = text.replace("\n", "\\n")
    return truncate_middle(text, limit)
