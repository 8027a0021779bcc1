"""Fitting text into a prompt: the longest run of blocks that stays within a token budget.

Sizes are the deterministic estimate of :func:`feedprop.llm.tokens.estimate_tokens` (one token
per four characters), so a budget behaves the same in tests and in production. Long single
values are cut with :func:`feedprop._text.truncate_middle` before they become blocks.

Example:
    >>> [block.split()[0] for block in fit_blocks(["new " * 10, "old " * 10, "oldest " * 10], max_tokens=25)]
    ['new', 'old']
"""

from __future__ import annotations

from feedprop.llm.tokens import estimate_tokens

__all__ = ["fit_blocks"]


def fit_blocks(blocks: list[str], max_tokens: int) -> list[str]:
    """The longest prefix of ``blocks`` whose total estimated size fits ``max_tokens``.

    Callers order blocks by importance (newest memory first, best history entry first).

    Example:
        >>> fit_blocks(["a" * 40, "b" * 40, "c" * 40], 25)
        ['aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb']
    """
    out: list[str] = []
    used = 0
    for block in blocks:
        cost = estimate_tokens(block) + 1
        if used + cost > max_tokens:
            break
        out.append(block)
        used += cost
    return out
