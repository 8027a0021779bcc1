"""A scripted model for deterministic tests, run offline through the same call path as real ones.

Example:
    >>> llm = MockLLM(lambda messages, **params: messages[-1]["content"][::-1])
    >>> llm.complete([{"role": "user", "content": "abc"}]).text
    'cba'
    >>> llm.calls[0].messages[-1]["content"]
    'abc'
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm.base import LLM, Completion, Message, Usage
from feedprop.llm.cache import ResponseCache
from feedprop.llm.retry import RetryPolicy
from feedprop.llm.tokens import estimate_prompt_tokens, estimate_tokens

__all__ = ["MockCall", "MockLLM", "estimate_prompt_tokens", "estimate_tokens"]

Reply = str | Completion
Handler = Callable[..., Reply]

#: Retries without waiting, so tests that inject transient errors stay fast and deterministic.
NO_WAIT_RETRY = RetryPolicy(max_retries=4, initial_delay=0.0, jitter=0.0)


@dataclass(frozen=True)
class MockCall:
    """One request a :class:`MockLLM` received (cache hits never reach it)."""

    messages: list[Message]
    params: dict[str, Any]


class MockLLM(LLM):
    """A model whose replies come from ``handler(messages, **params)`` or a list of canned replies.

    ``handler`` returns a ``str`` or a :class:`Completion`; if it raises a feedprop error (say a
    ``TransientLLMError``), the call path treats it exactly like a real backend's failure.
    A list of replies is served in order; once used up, the next call raises
    :class:`~feedprop.errors.ConfigurationError` unless ``cycle=True``. A single string is the
    reply to every call. ``latency`` seconds are slept per call. Token counts are estimated
    with :func:`estimate_tokens`, so usage accounting is reproducible.

    Unlike the real backends, the mock does not cache unless given ``cache=`` (a test's mock
    must never answer from another test's entries). Retries do not wait. ``json_schema=True``
    makes it claim schema support (``supports_json_schema``), so tests can check what a caller
    sends to such a model; the replies are still whatever the handler returns.

    Tool calls: the handler sees the offered tools in ``params["tools"]`` and asks for calls by
    returning a :class:`Completion` with ``tool_calls``; the tools' results come back in the next
    request as ``"tool"`` messages. ``tools=False`` makes it a backend without tool support
    (``supports_tools``), so offering tools raises :class:`~feedprop.errors.ConfigurationError`.

    Example:
        >>> llm = MockLLM(["a", "b"], cycle=True)
        >>> [llm.complete([{"role": "user", "content": "?"}]).text for _ in range(3)]
        ['a', 'b', 'a']
        >>> from feedprop.llm.tool_calls import ToolCall
        >>> def agent(messages, **params):
        ...     if messages[-1]["role"] == "tool":
        ...         return "The map costs " + messages[-1]["content"] + " skell."
        ...     return Completion("", tool_calls=(ToolCall("c1", "lookup", '{"item": "map"}'),))
        >>> lookup = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
        >>> reply = MockLLM(agent).complete([{"role": "user", "content": "Price of a map?"}], tools=[lookup])
        >>> reply.tool_calls[0].name, reply.finish_reason
        ('lookup', 'tool_calls')
    """

    def __init__(
        self,
        handler: Handler | Sequence[Reply] | str,
        *,
        model: str = "mock",
        cycle: bool = False,
        latency: float = 0.0,
        cache: ResponseCache | bool | None = False,
        retry: RetryPolicy | None = None,
        max_concurrency: int | None = None,
        json_schema: bool = False,
        tools: bool = True,
    ) -> None:
        super().__init__(cache=cache, retry=retry or NO_WAIT_RETRY, max_concurrency=max_concurrency)
        for label, flag in (("json_schema", json_schema), ("tools", tools)):
            if not isinstance(flag, bool):
                raise ConfigurationError(f"{label} must be True or False, got {flag!r}")
        self.supports_json_schema = json_schema
        self.supports_tools = tools
        self._handler: Handler | None = None
        self._replies: list[Reply] | None = None
        if isinstance(handler, str | Completion):
            self._replies = [handler]
            cycle = True
        elif callable(handler):
            self._handler = handler
        elif isinstance(handler, Sequence):
            self._replies = list(handler)
            if not self._replies:
                raise ConfigurationError("MockLLM needs at least one canned reply")
            for i, reply in enumerate(self._replies):
                if not isinstance(reply, str | Completion):
                    raise InvalidInputError(f"MockLLM replies[{i}] must be a str or Completion, got {reply!r:.80}")
        else:
            raise InvalidInputError(
                f"MockLLM takes a handler(messages, **params), a list of replies or a string, got {handler!r:.80}"
            )
        if not isinstance(latency, int | float) or latency < 0:
            raise ConfigurationError(f"latency must be a non-negative number of seconds, got {latency!r}")
        self.model = model
        self.cycle = cycle
        self.latency = float(latency)
        self.calls: list[MockCall] = []
        self._lock = threading.Lock()

    def _next(self, messages: list[Message], params: dict[str, Any]) -> Reply:
        with self._lock:
            index = len(self.calls)
            self.calls.append(MockCall(messages=list(messages), params=dict(params)))
            if self._replies is not None:
                if index >= len(self._replies) and not self.cycle:
                    raise ConfigurationError(
                        f"MockLLM ran out of canned replies: call {index + 1} but only {len(self._replies)} "
                        "given; add replies or pass cycle=True"
                    )
                return self._replies[index % len(self._replies)]
        assert self._handler is not None
        return self._handler(messages, **params)

    def _to_completion(self, reply: Reply, messages: list[Message]) -> Completion:
        if isinstance(reply, Completion):
            if not reply.model:
                reply = replace(reply, model=self.model)
            if reply.tool_calls and reply.finish_reason == "stop":
                reply = replace(reply, finish_reason="tool_calls")
            return reply
        if not isinstance(reply, str):
            raise InvalidInputError(f"the MockLLM handler must return a str or Completion, got {type(reply).__name__}")
        usage = Usage(prompt_tokens=estimate_prompt_tokens(messages), completion_tokens=estimate_tokens(reply))
        return Completion(text=reply, model=self.model, usage=usage)

    def _complete(self, messages: list[Message], **params: Any) -> Completion:
        if self.latency:
            time.sleep(self.latency)
        return self._to_completion(self._next(messages, params), messages)

    async def _acomplete(self, messages: list[Message], **params: Any) -> Completion:
        if self.latency:
            await asyncio.sleep(self.latency)
        return self._to_completion(self._next(messages, params), messages)

    def __repr__(self) -> str:
        return f"MockLLM(model={self.model!r}, calls={len(self.calls)})"
