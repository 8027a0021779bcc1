"""Tracing state, kept in :mod:`contextvars` so every thread and asyncio task traces on its own.

Three pieces of state decide what running Python records:

- whether tracing is on (:func:`no_trace` turns it off for a block),
- the current name scope (:func:`name_scope` prefixes the names of nodes made inside it),
- the record of nodes an op read while it ran (:func:`recording_reads`), which is how a bundled
  function that reads a node it was not given is caught.

There is no global graph: a node holds its parents, and that is the whole graph. A new thread
starts with tracing on and no scope; an asyncio task starts with a copy of its creator's state.

Example:
    >>> with no_trace():
    ...     is_tracing()
    False
    >>> with name_scope("solver"):
    ...     scoped("llm_call")
    'solver/llm_call'
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, NamedTuple

from feedprop.errors import ConfigurationError

__all__ = [
    "ReadRecord",
    "TraceState",
    "counter",
    "current_scope",
    "is_tracing",
    "name_scope",
    "next_index",
    "no_trace",
    "note_created",
    "note_read",
    "recording_reads",
    "scoped",
    "state",
]


class TraceState(NamedTuple):
    """The tracing state of one thread or task; replaced as a whole, never mutated."""

    tracing: bool
    scope: str
    reads: ReadRecord | None


# One variable for all three, so an op reads its whole state with a single ``get``.
_INITIAL = TraceState(tracing=True, scope="", reads=None)
_STATE: ContextVar[TraceState] = ContextVar("feedprop_tracing", default=_INITIAL)


def state() -> TraceState:
    """The current :class:`TraceState` (for code that needs several parts of it at once)."""
    return _STATE.get()


def is_tracing() -> bool:
    """True unless inside :func:`no_trace` (in this thread or task)."""
    return _STATE.get().tracing


@contextlib.contextmanager
def no_trace() -> Iterator[None]:
    """Run a block without recording a graph: ops still compute, their outputs have no parents.

    Example:
        >>> with no_trace():
        ...     is_tracing()
        False
        >>> is_tracing()
        True
    """
    token = _STATE.set(_STATE.get()._replace(tracing=False))
    try:
        yield
    finally:
        _STATE.reset(token)


def current_scope() -> str:
    """The current name scope, ``"outer/inner"``, or ``""`` outside any scope."""
    return _STATE.get().scope


@contextlib.contextmanager
def name_scope(name: str) -> Iterator[str]:
    """Prefix the names of nodes made inside the block with ``name/``; scopes nest.

    Example:
        >>> with name_scope("a"), name_scope("b"):
        ...     current_scope()
        'a/b'
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigurationError(f"name_scope needs a non-empty name without '/', got {name!r}")
    current = _STATE.get()
    scope = f"{current.scope}/{name}" if current.scope else name
    token = _STATE.set(current._replace(scope=scope))
    try:
        yield scope
    finally:
        _STATE.reset(token)


def scoped(name: str) -> str:
    """``name`` prefixed with the current scope."""
    scope = _STATE.get().scope
    return f"{scope}/{name}" if scope else name


# One counter per base name, so op outputs read "llm_call:0", "llm_call:1", ... Counters only ever
# grow by one entry per distinct op name; ``next`` on an itertools.count is atomic under the GIL.
_COUNTERS: dict[str, itertools.count[int]] = {}


def counter(base: str) -> itertools.count[int]:
    """The process-wide counter of ``base`` (ops keep it to number their outputs cheaply)."""
    found = _COUNTERS.get(base)
    return found if found is not None else _COUNTERS.setdefault(base, itertools.count())


def next_index(base: str) -> int:
    """A process-wide increasing number for ``base``, used to keep node names unique."""
    return next(counter(base))


class ReadRecord:
    """The nodes an op read while it ran, minus the nodes it made itself.

    Identity-keyed (``id``) because nodes overload ``==``; the record holds the nodes it saw, so
    their ids stay valid for as long as the record lives.
    """

    __slots__ = ("_created", "_read")

    def __init__(self) -> None:
        self._read: dict[int, Any] = {}
        self._created: set[int] = set()

    def read(self, node: Any) -> None:
        self._read.setdefault(id(node), node)

    def created(self, node: Any) -> None:
        self._created.add(id(node))

    def nodes(self) -> list[Any]:
        """Nodes read but not created during the recording, in first-read order."""
        return [n for i, n in self._read.items() if i not in self._created]


def note_read(node: Any) -> None:
    """Record that ``node``'s value was read (called by ``Node.data``)."""
    record = _STATE.get().reads
    if record is not None:
        record.read(node)


def note_created(node: Any) -> None:
    """Record that ``node`` was made inside the current recording (so reading it is not hidden)."""
    record = _STATE.get().reads
    if record is not None:
        record.created(node)


@contextlib.contextmanager
def recording_reads() -> Iterator[ReadRecord]:
    """Record every node read inside the block (nested recordings each see their own reads).

    Example:
        >>> with recording_reads() as record:
        ...     pass
        >>> record.nodes()
        []
    """
    record = ReadRecord()
    token = _STATE.set(_STATE.get()._replace(reads=record))
    try:
        yield record
    finally:
        _STATE.reset(token)
