"""Keeping prompts inside a token budget.

Token counts are the deterministic estimate the LLM layer uses (one token per four
characters), so a budget behaves the same in tests and in production. Long values are cut in
the middle — their start and end usually matter most — and the cut says how much was left out.

Example:
    >>> len(truncate_middle("x" * 1000, 60)) <= 60
    True
"""

from __future__ import annotations

from feedprop.llm.mock import estimate_tokens

__all__ = ["estimate_tokens", "fit_blocks", "truncate_middle"]


def truncate_middle(text: str, max_chars: int) -> str:
    """``text`` unchanged if it has at most ``max_chars`` characters, else its two ends around a marker.

    The result never exceeds ``max_chars`` unless even the marker alone would.

    Example:
        >>> truncate_middle("0123456789" * 10, 40)
        '0123456...[truncated 87 chars]...456789'
    """
    if len(text) <= max_chars:
        return text
    keep = max(0, max_chars - len(f"...[truncated {len(text):,} chars]..."))
    head, tail = keep - keep // 2, keep // 2
    return f"{text[:head]}...[truncated {len(text) - keep:,} chars]...{text[len(text) - tail :] if tail else ''}"


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
