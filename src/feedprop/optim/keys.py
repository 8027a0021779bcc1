"""Tolerant matching of the keys a model writes to the parameter names it was shown.

Small models rarely copy a name exactly: asked for ``__code0`` they write ``code0``; asked
for ``solver.instruction`` they write ``instruction`` or ``Instruction``. A strict lookup
silently drops such a fix. :func:`match_key` accepts, in this order: the exact name; the
name compared case-insensitively with underscores and punctuation ignored; a unique prefix;
a unique suffix. Anything ambiguous or unknown is reported, never guessed.

Example:
    >>> match_key("code0", ["__code0", "instruction"]).name
    '__code0'
    >>> match_key("Instr", ["__code0", "instruction"]).name
    'instruction'
    >>> match_key("x", ["x1", "x2"]).name is None
    True
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["KeyMatch", "match_key", "normalize_key"]

_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def normalize_key(key: str) -> str:
    """Lower-case ``key`` and drop everything but letters and digits: ``"__Code_0"`` → ``"code0"``."""
    return _NOT_ALNUM.sub("", key.lower())


@dataclass(frozen=True)
class KeyMatch:
    """The outcome of matching one key: ``name`` when it resolved, else ``None`` and a ``reason``."""

    key: str
    name: str | None
    how: str  # "exact", "normalized", "prefix", "suffix", "ambiguous" or "unknown"
    reason: str = ""


def _fits(how: str, name: str, key: str) -> bool:
    if how == "normalized":
        return name == key
    return name.startswith(key) if how == "prefix" else name.endswith(key)


def match_key(key: str, names: Iterable[str]) -> KeyMatch:
    """Resolve ``key`` to exactly one of ``names``, or explain why it cannot be resolved.

    A prefix or suffix only counts on the normalised forms and only when it is unique, and a
    key shorter than two characters never matches by prefix or suffix (one letter is a guess).

    Example:
        >>> match_key("solver_instruction", ["solver.instruction"]).how
        'normalized'
        >>> match_key("instruction", ["solver.instruction", "solver.examples"]).how
        'suffix'
    """
    pool = list(dict.fromkeys(names))
    if key in pool:
        return KeyMatch(key, key, "exact")
    norm = normalize_key(key)
    if not norm:
        return KeyMatch(key, None, "unknown", f"{key!r} is not a name")
    normalized = {name: normalize_key(name) for name in pool}
    for how in ("normalized", "prefix", "suffix"):
        if how != "normalized" and len(norm) < 2:
            break
        hits = [name for name, n in normalized.items() if _fits(how, n, norm)]
        if len(hits) == 1:
            return KeyMatch(key, hits[0], how)
        if len(hits) > 1:
            shown = ", ".join(repr(h) for h in hits[:6])
            return KeyMatch(key, None, "ambiguous", f"{key!r} could mean any of {shown}; write the full name")
    return KeyMatch(key, None, "unknown", f"{key!r} is not one of the names shown")
