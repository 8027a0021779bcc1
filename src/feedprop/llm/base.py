"""The one protocol every language model implements.

An :class:`LLM` turns a list of chat messages into a :class:`Completion`. Backends override
``_complete`` (and optionally ``_acomplete``); everything else wraps that single method, in
the same order for every backend, the mock included:

1. validate the messages and parameters;
2. answer from an active recording (:func:`~feedprop.llm.replay`) if it holds the request
   (counted as replayed);
3. answer from the response cache if the request is there (counted as a cache hit);
4. reserve the call in every active usage meter (in all and under this model's name), raising
   ``BudgetExhausted`` if a limit is reached;
5. wait for a slot of the model's concurrency limit;
6. call the backend, retrying transient failures with backoff;
7. record tokens and seconds in the meters, and store the reply in the cache.

Example:
    >>> from feedprop.llm import MockLLM
    >>> llm = MockLLM(lambda messages, **params: "4")
    >>> llm.complete([{"role": "user", "content": "2+2?"}]).text
    '4'
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, ClassVar, NotRequired, Self, TypedDict

from feedprop.errors import ConfigurationError, InvalidInputError, LLMError, TransientLLMError
from feedprop.llm.cache import ResponseCache, cache_enabled, cache_key, canonical_json, default_cache
from feedprop.llm.limit import ConcurrencyLimit
from feedprop.llm.replay import replayed_call
from feedprop.llm.retry import RetryPolicy, acall_with_retries, call_with_retries, retries_exhausted
from feedprop.llm.tool_calls import ToolCall, check_message_tool_calls, check_tools
from feedprop.llm.usage import record_cache_hit, record_call, record_replay, reserve_call

__all__ = [
    "LLM",
    "Completion",
    "Message",
    "ToolCall",
    "Usage",
    "check_messages",
    "check_params",
    "check_tools",
    "valid_unicode",
]


class Message(TypedDict):
    """One chat message: ``{"role": "system" | "user" | "assistant" | "tool", "content": str}``.

    An assistant message may carry the ``tool_calls`` it made (OpenAI wire form, see
    :meth:`ToolCall.to_message`); a ``"tool"`` message, a tool's result, names the call it
    answers in ``tool_call_id``.
    """

    role: str
    content: str
    tool_calls: NotRequired[list[dict[str, Any]]]
    tool_call_id: NotRequired[str]


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
    """A model's reply: its ``text``, the ``model`` that wrote it, and the ``usage`` it cost.

    ``tool_calls`` are the :class:`ToolCall` objects the model asked for when the request
    offered ``tools`` (the text is then often empty).

    Example:
        >>> reply = Completion("", tool_calls=(ToolCall("c1", "calc", '{"expression": "2+2"}'),))
        >>> Completion.from_dict(reply.to_dict()) == reply, reply.to_dict()["tool_calls"][0]["name"]
        (True, 'calc')
    """

    text: str
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"
    tool_calls: tuple[ToolCall, ...] = ()

    @property
    def latency(self) -> float:
        """Seconds the call took; for a cache hit, the time of the lookup."""
        return self.usage.seconds

    @property
    def cached(self) -> bool:
        """Whether this reply cost no model call: it came from the response cache or a replay."""
        return self.usage.cached

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "text": self.text,
            "model": self.model,
            "usage": self.usage.to_dict(),
            "finish_reason": self.finish_reason,
        }
        if self.tool_calls:
            data["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Completion:
        return cls(
            text=data["text"],
            model=data.get("model", ""),
            usage=Usage(**data.get("usage", {})),
            finish_reason=data.get("finish_reason", "stop"),
            tool_calls=tuple(ToolCall.from_dict(call) for call in data.get("tool_calls", ())),
        )


_ROLES = frozenset({"system", "user", "assistant", "tool"})


def valid_unicode(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (split surrogate pairs are joined).

    A reply may carry invalid Unicode (a JSON ``"\\ud800"`` escape decodes to one); such a
    string cannot be written as UTF-8, so it would break the next prompt, the cache or a saved file.

    Example:
        >>> valid_unicode("ok " + chr(0xD800) + "!") == "ok \ufffd!"
        True
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def check_messages(messages: Any) -> list[Message]:
    """Validate a chat transcript, raising :class:`InvalidInputError` with a fix-it message.

    Keys other than ``role`` and ``content`` are dropped, except an assistant message's
    ``tool_calls`` and a tool message's ``tool_call_id`` (which a tool message must have).

    Example:
        >>> call = ToolCall("c1", "calc", '{"expression": "2+2"}')
        >>> turns = check_messages([
        ...     {"role": "user", "content": "2+2?", "name": "ada"},
        ...     {"role": "assistant", "content": "", "tool_calls": [call.to_message()]},
        ...     {"role": "tool", "tool_call_id": "c1", "content": "4"},
        ... ])
        >>> [sorted(m) for m in turns]
        [['content', 'role'], ['content', 'role', 'tool_calls'], ['content', 'role', 'tool_call_id']]
    """
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
        message = Message(role=m["role"], content=m["content"])
        if "tool_calls" in m:
            if m["role"] != "assistant":
                raise InvalidInputError(
                    f"messages[{i}] has tool_calls but its role is {m['role']!r}; only assistant messages make calls"
                )
            message["tool_calls"] = check_message_tool_calls(m["tool_calls"], f"messages[{i}]")
        if m["role"] == "tool":
            if not isinstance(m.get("tool_call_id"), str):
                raise InvalidInputError(
                    f"messages[{i}] is a tool result without a 'tool_call_id' str; set it to the id of the call it "
                    "answers"
                )
            message["tool_call_id"] = m["tool_call_id"]
        out.append(message)
    return out


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """Validate sampling parameters, raising :class:`ConfigurationError` with a fix-it message.

    Parameters pass through to the backend unchanged; they must be JSON-like because they are
    part of the cache key. One reply per call: for several samples call again with ``cache_salt=i``.
    """
    n = params.get("n", 1)
    if n != 1:
        raise ConfigurationError(
            f"n={n!r} is not supported: a call returns one reply. For several samples, call complete() "
            "once per sample with cache_salt=0, 1, ... (and temperature > 0)"
        )
    if params.get("stream"):
        raise ConfigurationError("stream=True is not supported; complete() returns the whole reply")
    if "tools" in params:
        check_tools(params["tools"])
    for name, value in params.items():  # raises InvalidInputError naming the offending parameter
        canonical_json(value, name=f"sampling parameter {name}")
    return params


class LLM:
    """Base class of every language model. Subclasses override :meth:`_complete`.

    Sampling parameters (``temperature``, ``max_tokens``, ``stop``, ``seed``,
    ``response_format={"type": "json_object"}``) pass through ``**params`` unchanged.
    Two keyword arguments are feedprop's own and never reach the backend: ``cache=False`` skips the
    response cache for this call, and ``cache_salt`` makes otherwise identical requests distinct
    cache entries (use the sample index when drawing several samples of one prompt).

    ``supports_json_schema`` says whether the backend honours
    ``response_format={"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}``,
    constraining the reply to the schema (llama.cpp compiles it into a grammar). Optimizers that
    need JSON pass a schema only to models that say so; to others they send the plain request.

    ``tools=[...]`` (the OpenAI tools format, checked by :func:`check_tools`) offers functions to
    the model, which may answer with :attr:`Completion.tool_calls`; ``supports_tools`` says
    whether the backend accepts them (a backend that does not raises
    :class:`~feedprop.errors.ConfigurationError` before any call). ``constrain_tools`` says
    whether the backend constrains such a reply to one call or a final answer (see
    :mod:`feedprop.llm.tool_reply`); those replies are cached apart from unconstrained ones.

    Constructor options shared by every backend:

    - ``cache``: ``True`` for the default on-disk cache, ``False``/``None`` for none, or a
      :class:`~feedprop.llm.ResponseCache`;
    - ``retry``: a :class:`~feedprop.llm.RetryPolicy` for transient failures;
    - ``max_concurrency``: how many calls may run at once (``None``: unlimited).

    Example:
        >>> class Shout(LLM):
        ...     model = "shout"
        ...     def _complete(self, messages, **params):
        ...         return Completion(messages[-1]["content"].upper(), model=self.model)
        >>> Shout().complete([{"role": "user", "content": "hi"}]).text
        'HI'
    """

    #: A name that identifies the model; part of every cache key.
    model: str = "llm"
    #: Whether ``response_format`` may carry a JSON schema that the backend enforces.
    supports_json_schema: bool = False
    #: Whether the backend accepts ``tools=[...]`` and returns the model's tool calls.
    supports_tools: bool = True
    #: Whether a reply to a request offering tools is constrained to one call or a final answer.
    constrain_tools: bool = False
    #: What to do when a call offers tools and ``supports_tools`` is false (ends the error's message).
    _without_tools: str = "use a backend that serves the OpenAI tools format, or leave tools out"

    # Class-level defaults so that a subclass which skips ``super().__init__()`` still works.
    retry: RetryPolicy = RetryPolicy()
    _cache_option: ResponseCache | bool | None = False
    _max_concurrency: int | None = None
    _limit: ConcurrencyLimit | None = None
    _limit_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        *,
        cache: ResponseCache | bool | None = False,
        retry: RetryPolicy | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        if not (cache is None or isinstance(cache, bool | ResponseCache)):
            raise InvalidInputError(f"cache must be True, False, None or a ResponseCache, got {cache!r}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidInputError(f"retry must be a RetryPolicy, got {retry!r}")
        self._cache_option = cache
        if retry is not None:
            self.retry = retry
        self._limit = ConcurrencyLimit(max_concurrency)
        self._max_concurrency = max_concurrency

    # -- the pieces of the call path ---------------------------------------------------------

    @property
    def limit(self) -> ConcurrencyLimit:
        """This model's concurrency limit (shared by threads and asyncio tasks)."""
        if self._limit is None:
            with self._limit_lock:
                if self._limit is None:
                    self._limit = ConcurrencyLimit(self._max_concurrency)
        return self._limit

    @property
    def cache(self) -> ResponseCache | None:
        """The response cache this model uses now, or ``None`` (also ``None`` while caching is off globally)."""
        if not cache_enabled():
            return None
        option = self._cache_option
        if option is True:
            return default_cache()
        if isinstance(option, ResponseCache):
            return option
        return None

    def _prepare(
        self, messages: Any, params: dict[str, Any], use_cache: bool, salt: Any
    ) -> tuple[list[Message], ResponseCache | None, str | None]:
        if not isinstance(use_cache, bool):
            raise InvalidInputError(f"cache must be True or False, got {use_cache!r}")
        checked = check_messages(messages)
        check_params(params)
        if "tools" in params and not self.supports_tools:
            raise ConfigurationError(
                f"{self!r} cannot offer tools to its model (supports_tools is False): {self._without_tools}"
            )
        store = self.cache if use_cache else None
        # A constrained reply differs from the one the same request gets unconstrained: keep them apart.
        model = f"{self.model}|constrained-tools" if self.constrain_tools and "tools" in params else self.model
        key = cache_key(model, checked, params, salt) if store is not None else None
        return checked, store, key

    def _from_replay(
        self, messages: list[Message], params: dict[str, Any], salt: Any, started: float
    ) -> Completion | None:
        record = replayed_call(self.model, messages, params, salt)
        if record is None:
            return None
        record_replay(self.model)
        usage = Usage(seconds=time.perf_counter() - started, cached=True)
        finish = "tool_calls" if record.tool_calls else "stop"
        return Completion(record.text, record.model, usage, finish, tuple(record.tool_calls))

    def _from_cache(self, store: ResponseCache | None, key: str | None, started: float) -> Completion | None:
        if store is None or key is None:
            return None
        hit = store.get(key)
        if hit is None:
            return None
        record_cache_hit(self.model)
        completion = Completion.from_dict(hit)
        return replace(completion, usage=replace(completion.usage, cached=True, seconds=time.perf_counter() - started))

    def _give_up(self, errors: list[TransientLLMError]) -> LLMError:
        """The error to raise once transient failures outlast the retries. Backends may refine it."""
        return retries_exhausted(errors)

    @staticmethod
    def _finish(completion: Completion, seconds: float) -> Completion:
        if not isinstance(completion, Completion):
            raise InvalidInputError(f"a backend's _complete must return a Completion, got {type(completion).__name__}")
        if not isinstance(completion.text, str):
            raise InvalidInputError(f"a backend's Completion.text must be a str, got {type(completion.text).__name__}")
        calls = completion.tool_calls
        if not isinstance(calls, tuple | list) or not all(isinstance(c, ToolCall) for c in calls):
            raise InvalidInputError(f"a backend's Completion.tool_calls must be ToolCall objects, got {calls!r:.80}")
        usage = replace(completion.usage, seconds=seconds, cached=False)
        return replace(completion, text=valid_unicode(completion.text), usage=usage, tool_calls=tuple(calls))

    # -- public API ----------------------------------------------------------------------------

    def complete(
        self, messages: Sequence[Mapping[str, Any]], *, cache: bool = True, cache_salt: Any = None, **params: Any
    ) -> Completion:
        """Send ``messages`` (``[{"role": ..., "content": ...}, ...]``) and return the model's :class:`Completion`."""
        started = time.perf_counter()
        checked, store, key = self._prepare(messages, params, cache, cache_salt)
        hit = self._from_replay(checked, params, cache_salt, started) or self._from_cache(store, key, started)
        if hit is not None:
            return hit
        meters = reserve_call(self.model)
        with self.limit:
            started = time.perf_counter()
            try:
                completion = call_with_retries(lambda: self._complete(checked, **params), self.retry, self._give_up)
                completion = self._finish(completion, time.perf_counter() - started)
            except BaseException:
                record_call(meters, self.model, 0, 0, time.perf_counter() - started, failed=True)
                raise
        record_call(
            meters,
            self.model,
            completion.usage.prompt_tokens,
            completion.usage.completion_tokens,
            completion.usage.seconds,
            failed=False,
        )
        if store is not None and key is not None:
            store.put(key, completion.to_dict())
        return completion

    async def acomplete(
        self, messages: Sequence[Mapping[str, Any]], *, cache: bool = True, cache_salt: Any = None, **params: Any
    ) -> Completion:
        """Async form of :meth:`complete`: same cache, meters, budgets and concurrency limit."""
        started = time.perf_counter()
        checked, store, key = self._prepare(messages, params, cache, cache_salt)
        replayed = self._from_replay(checked, params, cache_salt, started)
        if replayed is not None:
            return replayed
        if store is not None:  # SQLite may wait on another writer: keep the event loop free
            hit = await asyncio.to_thread(self._from_cache, store, key, started)
            if hit is not None:
                return hit
        meters = reserve_call(self.model)
        async with self.limit:
            started = time.perf_counter()
            try:
                completion = await acall_with_retries(
                    lambda: self._acomplete(checked, **params), self.retry, self._give_up
                )
                completion = self._finish(completion, time.perf_counter() - started)
            except BaseException:
                record_call(meters, self.model, 0, 0, time.perf_counter() - started, failed=True)
                raise
        record_call(
            meters,
            self.model,
            completion.usage.prompt_tokens,
            completion.usage.completion_tokens,
            completion.usage.seconds,
            failed=False,
        )
        if store is not None and key is not None:
            await asyncio.to_thread(store.put, key, completion.to_dict())
        return completion

    # -- what backends implement -------------------------------------------------------------

    def _complete(self, messages: list[Message], **params: Any) -> Completion:
        raise NotImplementedError(f"{type(self).__name__} must implement _complete(messages, **params)")

    async def _acomplete(self, messages: list[Message], **params: Any) -> Completion:
        # Default: run the blocking call in a worker thread so the event loop stays free.
        return await asyncio.to_thread(self._complete, messages, **params)

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Release what the model holds (connections, a server). Safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"
