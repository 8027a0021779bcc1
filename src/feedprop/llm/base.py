"""The one protocol every language model implements.

An :class:`LLM` turns a list of chat messages into a :class:`Completion`. Backends override
``_complete`` (and optionally ``_acomplete``); everything else — caching, retries, usage
metering, concurrency limits — wraps that single method.

Example:
    >>> from feedprop.llm import MockLLM
    >>> llm = MockLLM(lambda messages, **params: "4")
    >>> llm.complete([{"role": "user", "content": "2+2?"}]).text
    '4'
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, TypedDict

from feedprop.errors import InvalidInputError

__all__ = ["LLM", "Completion", "Message", "Usage", "check_messages"]


class Message(TypedDict):
    """One chat message: ``{"role": "system" | "user" | "assistant", "content": str}``."""

    role: str
    content: str


@dataclass(frozen=True)
class Usage:
    """What one call cost."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cached: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": self.seconds,
            "cached": self.cached,
        }


@dataclass(frozen=True)
class Completion:
    """A model's reply: its ``text``, the ``model`` that wrote it, and the ``usage`` it cost."""

    text: str
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "model": self.model,
            "usage": self.usage.to_dict(),
            "finish_reason": self.finish_reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Completion:
        return cls(
            text=data["text"],
            model=data.get("model", ""),
            usage=Usage(**data.get("usage", {})),
            finish_reason=data.get("finish_reason", "stop"),
        )


_ROLES = frozenset({"system", "user", "assistant", "tool"})


def check_messages(messages: Any) -> list[Message]:
    """Validate a chat transcript, raising :class:`InvalidInputError` with a fix-it message."""
    if isinstance(messages, str):
        raise InvalidInputError(
            "messages must be a list of {'role', 'content'} dicts, not a string; "
            "wrap it as [{'role': 'user', 'content': text}]"
        )
    if not isinstance(messages, list | tuple) or not messages:
        raise InvalidInputError("messages must be a non-empty list of {'role', 'content'} dicts")
    out: list[Message] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InvalidInputError(f"messages[{i}] must be a dict with 'role' and 'content', got {m!r:.80}")
        if m["role"] not in _ROLES:
            raise InvalidInputError(f"messages[{i}]['role'] must be one of {sorted(_ROLES)}, got {m['role']!r}")
        if not isinstance(m["content"], str):
            raise InvalidInputError(f"messages[{i}]['content'] must be a str, got {type(m['content']).__name__}")
        out.append(Message(role=m["role"], content=m["content"]))
    return out


class LLM:
    """Base class of every language model. Subclasses override :meth:`_complete`.

    Sampling parameters (``temperature``, ``max_tokens``, ``stop``, ``seed``,
    ``response_format={"type": "json_object"}``) pass through ``**params`` unchanged.
    """

    #: A name that identifies the model; part of every cache key.
    model: str = "llm"

    def complete(self, messages: list[Message], **params: Any) -> Completion:
        """Send ``messages`` and return the model's :class:`Completion`."""
        return self._complete(check_messages(messages), **params)

    async def acomplete(self, messages: list[Message], **params: Any) -> Completion:
        """Async form of :meth:`complete`."""
        return await self._acomplete(check_messages(messages), **params)

    def _complete(self, messages: list[Message], **params: Any) -> Completion:
        raise NotImplementedError

    async def _acomplete(self, messages: list[Message], **params: Any) -> Completion:
        # Default: run the blocking call in a worker thread so the event loop stays free.
        return await asyncio.to_thread(self._complete, messages, **params)
