"""Token estimation: the one rule used wherever a size must be known before a model counts it."""

from __future__ import annotations

from collections.abc import Sequence

from feedprop.llm.base import Message

__all__ = ["estimate_prompt_tokens", "estimate_tokens"]


def estimate_tokens(text: str) -> int:
    """A deterministic token estimate: one token per four characters, rounded up.

    Example:
        >>> estimate_tokens("abcdefgh"), estimate_tokens("abcde"), estimate_tokens("")
        (2, 2, 0)
    """
    return (len(text) + 3) // 4


def estimate_prompt_tokens(messages: Sequence[Message]) -> int:
    """Estimated prompt size: each message's content plus 4 tokens of chat framing.

    Example:
        >>> estimate_prompt_tokens([{"role": "user", "content": "abcdefgh"}])
        6
    """
    return sum(estimate_tokens(m["content"]) + 4 for m in messages)
