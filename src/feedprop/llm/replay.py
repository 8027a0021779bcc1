"""Answering LLM calls from recorded replies, so re-running recorded work costs no model call.

A :class:`RecordedCall` is one request a model answered (model name, messages, sampling
parameters, cache salt) and the reply's text (and the tool calls it asked for, if any). Inside
``with replay(records):`` every :class:`~feedprop.llm.LLM` answers a request equal to a recorded
one from the record: no backend call, no concurrency slot, nothing counted as a call or as
tokens in the usage meters (they count it under ``replayed``), and no budget spent. Any other
request goes to the model as usual.

Two requests are equal exactly when the response cache would treat them as one entry: the
key is :func:`~feedprop.llm.cache.cache_key` of the model name, the messages, every sampling
parameter (``temperature=0.7`` is not ``temperature=0``) and ``cache_salt``. The model name is
the one the request is sent under (:attr:`LLM.model`), which the embedded model and the mock
also write into their replies. When several records share a key, the first one answers.
A call's ``cache=False`` skips the response cache only; a replay still answers it.

The active replays live in a :mod:`contextvars` variable: asyncio tasks see them, and so do
threads started through :class:`~feedprop.llm.ContextThreadPoolExecutor` or
:func:`~feedprop.llm.thread_map` (as every feedprop evaluation does). Ray workers
(``executor="ray"``) receive the active records with each item (:func:`active_records`).

Example:
    >>> from feedprop.llm import MockLLM, RecordedCall, replay, track_usage
    >>> llm = MockLLM("a fresh reply")
    >>> ask = [{"role": "user", "content": "2+2?"}]
    >>> recorded = RecordedCall("mock", ask, {"temperature": 0}, "4")
    >>> with replay([recorded]) as session, track_usage() as usage:
    ...     llm.complete(ask, temperature=0).text, llm.complete(ask, temperature=0.7).text
    ('4', 'a fresh reply')
    >>> session.hits, usage.replayed, usage.calls, len(llm.calls)
    (1, 1, 1, 1)
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from feedprop.errors import InvalidInputError
from feedprop.llm.cache import cache_key, message_key
from feedprop.llm.tool_calls import ToolCall

__all__ = ["RecordedCall", "Replay", "active_records", "is_replayed", "replay", "replayed_call"]

#: The keyword arguments of ``LLM.complete`` that are feedprop's own, not sampling parameters.
_OWN_OPTIONS = ("cache", "cache_salt")


@dataclass(frozen=True)
class RecordedCall:
    """One answered request: the ``model`` name it was sent under, its ``messages``, its sampling
    ``params`` and ``salt`` (``cache_salt``), the reply's ``text`` and its ``tool_calls``.

    Example:
        >>> call = RecordedCall.from_request(
        ...     "m", [{"role": "user", "content": "hi"}], {"temperature": 0.7, "cache_salt": 2}, "hello"
        ... )
        >>> call.params, call.salt, call.text
        ({'temperature': 0.7}, 2, 'hello')
        >>> RecordedCall.from_dict(call.to_dict()) == call
        True
    """

    model: str
    messages: Sequence[Mapping[str, Any]]
    params: Mapping[str, Any] = field(default_factory=dict)
    text: str = ""
    salt: Any = None
    tool_calls: Sequence[ToolCall] = ()

    def __post_init__(self) -> None:
        calls = self.tool_calls
        if isinstance(calls, str) or not isinstance(calls, Sequence) or not all(isinstance(c, ToolCall) for c in calls):
            raise InvalidInputError(
                f"RecordedCall.tool_calls must be ToolCall objects, got {self.tool_calls!r:.80}; "
                "build them with ToolCall.from_dict"
            )
        object.__setattr__(self, "tool_calls", tuple(self.tool_calls))
        if not isinstance(self.model, str):
            raise InvalidInputError(f"RecordedCall.model must be the model's name (a str), got {self.model!r:.80}")
        if not isinstance(self.text, str):
            raise InvalidInputError(f"RecordedCall.text must be the reply's text (a str), got {self.text!r:.80}")
        if isinstance(self.messages, str) or not isinstance(self.messages, Sequence) or not self.messages:
            raise InvalidInputError("RecordedCall.messages must be the non-empty list of chat messages the model read")
        for i, m in enumerate(self.messages):
            if (
                not isinstance(m, Mapping)
                or not isinstance(m.get("role"), str)
                or not isinstance(m.get("content"), str)
            ):
                raise InvalidInputError(
                    f"RecordedCall.messages[{i}] must be a dict with 'role' and 'content' strings, got {m!r:.80}"
                )
        if not isinstance(self.params, Mapping):
            raise InvalidInputError(
                f"RecordedCall.params must be a dict of sampling parameters, got {self.params!r:.80}"
            )
        own = [name for name in _OWN_OPTIONS if name in self.params]
        if own:
            raise InvalidInputError(
                f"RecordedCall.params holds {own}, which are not sampling parameters; "
                "build it with RecordedCall.from_request(...), which separates them"
            )
        _ = self.key  # values that are not JSON fail here, not in the middle of a run

    @classmethod
    def from_request(
        cls,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any],
        text: str,
        tool_calls: Sequence[ToolCall] = (),
    ) -> RecordedCall:
        """The record of ``complete(messages, **params)`` answered with ``text`` (and ``tool_calls``).

        ``params`` are the keyword arguments as passed to :meth:`LLM.complete`: ``cache_salt``
        becomes the record's ``salt`` and ``cache`` (which does not change the reply) is dropped.
        """
        if not isinstance(params, Mapping):
            raise InvalidInputError(f"params must be a dict of keyword arguments, got {params!r:.80}")
        sampling = {k: v for k, v in params.items() if k not in _OWN_OPTIONS}
        return cls(model, list(messages), sampling, text, params.get("cache_salt"), tuple(tool_calls))

    @property
    def key(self) -> str:
        """The request's key: the response cache's key of the same request."""
        return cache_key(self.model, self.messages, self.params, self.salt)

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (see :meth:`from_dict`)."""
        data = {
            "model": self.model,
            "messages": [message_key(m) for m in self.messages],
            "params": dict(self.params),
            "text": self.text,
            "salt": self.salt,
        }
        if self.tool_calls:
            data["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordedCall:
        """The record :meth:`to_dict` wrote."""
        if not isinstance(data, Mapping) or "model" not in data or "messages" not in data:
            raise InvalidInputError(f"a recorded call needs at least 'model' and 'messages', got {data!r:.80}")
        calls = data.get("tool_calls") or ()
        if isinstance(calls, str) or not isinstance(calls, Sequence):
            raise InvalidInputError(f"a recorded call's tool_calls must be a list, got {calls!r:.80}")
        return cls(
            data["model"],
            data["messages"],
            data.get("params", {}),
            data.get("text", ""),
            data.get("salt"),
            tuple(ToolCall.from_dict(call) for call in calls),
        )


class Replay:
    """Recorded replies by request key, and ``hits``: how many calls they answered so far.

    Usually made by :func:`replay`; one object may be activated several times, and its count
    keeps growing. Safe to share between threads.

    Example:
        >>> ask = [{"role": "user", "content": "hi"}]
        >>> session = Replay([RecordedCall("m", ask, {}, "one"), RecordedCall("m", ask, {}, "two")])
        >>> len(session), session.lookup(RecordedCall("m", ask).key).text, session.hits
        (1, 'one', 1)
    """

    def __init__(self, records: Iterable[RecordedCall] = ()) -> None:
        self._records: dict[str, RecordedCall] = {}
        self._lock = threading.Lock()
        self.hits = 0
        for i, record in enumerate(records):
            if not isinstance(record, RecordedCall):
                raise InvalidInputError(
                    f"records[{i}] must be a RecordedCall, got {type(record).__name__}; "
                    "build one with RecordedCall.from_request(model, messages, params, text)"
                )
            self._records.setdefault(record.key, record)

    @property
    def records(self) -> list[RecordedCall]:
        """The records, one per request key, in the order they were given."""
        return list(self._records.values())

    def holds(self, key: str) -> bool:
        """Whether a record answers the request with ``key`` (not counted as a hit)."""
        return key in self._records

    def lookup(self, key: str) -> RecordedCall | None:
        """The record answering the request with ``key`` (counted as a hit), or ``None``."""
        record = self._records.get(key)
        if record is not None:
            with self._lock:
                self.hits += 1
        return record

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"Replay(records={len(self)}, hits={self.hits})"


_ACTIVE: contextvars.ContextVar[tuple[Replay, ...]] = contextvars.ContextVar("feedprop_replays", default=())


@contextmanager
def replay(records: Iterable[RecordedCall] | Replay) -> Iterator[Replay]:
    """Answer requests equal to ``records`` from them inside the ``with`` block (see the module docs).

    Yields the :class:`Replay`, whose ``hits`` says how many calls it answered. Replays nest;
    the innermost one that holds a request answers it.

    Example:
        >>> from feedprop.llm import MockLLM
        >>> ask = [{"role": "user", "content": "hi"}]
        >>> llm = MockLLM("live")
        >>> with replay([RecordedCall("mock", ask, {}, "recorded")]):
        ...     llm.complete(ask).text
        'recorded'
        >>> llm.complete(ask).text, len(llm.calls)
        ('live', 1)
    """
    session = records if isinstance(records, Replay) else Replay(records)
    token = _ACTIVE.set((*_ACTIVE.get(), session))
    try:
        yield session
    finally:
        _ACTIVE.reset(token)


def replayed_call(
    model: str, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any], salt: Any
) -> RecordedCall | None:
    """The record answering this request in the active replays (innermost first), or ``None``.

    Example:
        >>> ask = [{"role": "user", "content": "hi"}]
        >>> with replay([RecordedCall("m", ask, {"seed": 1}, "hello")]):
        ...     replayed_call("m", ask, {"seed": 1}, None).text, replayed_call("m", ask, {"seed": 2}, None)
        ('hello', None)
    """
    active = _ACTIVE.get()
    if not active:
        return None
    key = cache_key(model, messages, params, salt)
    for session in reversed(active):
        record = session.lookup(key)
        if record is not None:
            return record
    return None


def is_replayed(model: str, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any], salt: Any) -> bool:
    """Whether an active replay answers this request (a check only: no hit is counted).

    Example:
        >>> ask = [{"role": "user", "content": "hi"}]
        >>> with replay([RecordedCall("m", ask, {}, "hello")]) as session:
        ...     is_replayed("m", ask, {}, None), is_replayed("m", ask, {"seed": 1}, None), session.hits
        (True, False, 0)
    """
    active = _ACTIVE.get()
    if not active:
        return False
    key = cache_key(model, messages, params, salt)
    return any(session.holds(key) for session in active)


def active_records() -> list[RecordedCall]:
    """The records of every active replay, innermost replay first (so, kept first-per-key, they answer alike).

    What a process that cannot see this one's context (a Ray worker) needs to replay the same calls.

    Example:
        >>> ask = [{"role": "user", "content": "hi"}]
        >>> with replay([RecordedCall("m", ask, {}, "outer")]), replay([RecordedCall("m", ask, {}, "inner")]):
        ...     [r.text for r in active_records()]
        ['inner', 'outer']
        >>> active_records()
        []
    """
    return [record for session in reversed(_ACTIVE.get()) for record in session.records]
