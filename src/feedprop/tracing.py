"""Tracing state, kept in :mod:`contextvars` so every thread and asyncio task traces on its own.

Four pieces of state decide what running Python records:

- whether tracing is on (:func:`no_trace` turns it off for a block),
- the current name scope (:func:`name_scope` prefixes the names of nodes made inside it),
- the record of nodes an op read while it ran (:func:`recording_reads`), which is how a bundled
  function that reads a node it was not given is caught,
- the current forward call (:func:`forward_scope`, opened by ``Module.__call__``), which records
  the values user code reads to decide what to run: its control dependencies.

The control rule is conservative: inside a traced forward, reading a node's value from user code
(``node.data``, ``bool(node)``, ``len(node)``, ``x in node``) makes that node a control parent of
every op output made after the read in the same forward call (nested modules share their
caller's forward), and of the forward's result. Reads made by ops themselves do not count, nor
reads under :func:`no_trace`, outside any forward, or in a thread that did not inherit the
forward's context.

There is no global graph: a node holds its parents, and that is the whole graph. A new thread
starts with tracing on and no scope; an asyncio task starts with a copy of its creator's state.

Example:
    >>> with no_trace():
    ...     is_tracing()
    False
    >>> with name_scope("solver"):
    ...     scoped("llm_call")
    'solver/llm_call'
    >>> with forward_scope() as (forward, outermost):
    ...     note_read("a node")
    ...     forward.control.parents, outermost
    (('a node',), True)
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, NamedTuple

from feedprop.errors import ConfigurationError

__all__ = [
    "Control",
    "Forward",
    "ReadRecord",
    "TraceState",
    "counter",
    "current_scope",
    "forward_scope",
    "is_tracing",
    "name_scope",
    "next_index",
    "no_trace",
    "note_created",
    "note_input",
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
    forward: Forward | None = None


# One variable for all four, so an op reads its whole state with a single ``get``.
_INITIAL = TraceState(tracing=True, scope="", reads=None, forward=None)
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
    """Record that ``node``'s value was read (called by ``Node.data``).

    Inside an op the read belongs to the op's record; otherwise, inside a traced forward, it is
    a control read (see the module docs).
    """
    current = _STATE.get()
    record = current.reads
    if record is not None:
        record.read(node)
    elif current.forward is not None and current.tracing:
        current.forward.read(node)


def note_input(node: Any) -> None:
    """Record that an op read ``node`` as one of its inputs (never a control read)."""
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


class Control(NamedTuple):
    """The control parents of the nodes made at one point of a forward call, and that call.

    Nodes made between the same two reads share one ``Control``: ``parents`` are the values read
    so far (first-read order); ``forward`` is ``None`` for nodes rebuilt from another process.
    """

    parents: tuple[Any, ...]
    forward: Forward | None


class Forward:
    """One forward call: the values user code read in it and the trainable parameters it used.

    ``control`` is the current :class:`Control` (replaced at each new read, so nodes made before
    keep theirs); ``used`` maps ``id`` to each trainable parameter an op of the forward was given
    or user code read; ``result`` is a weak reference to what the outermost call returned, set
    by ``Module.__call__``; ``warned`` says whether backward already warned about this call.
    The nodes made in the forward hold it through their ``Control``, so it lives as long as they do.
    """

    __slots__ = ("_lock", "_seen", "control", "result", "used", "warned")

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._lock = threading.Lock()
        self.control = Control((), self)
        self.used: dict[int, Any] = {}
        self.result: weakref.ref[Any] | None = None
        self.warned = False

    def read(self, node: Any) -> None:
        """Make ``node`` a control parent of every node made from now on in this forward."""
        if id(node) in self._seen:
            return
        with self._lock:  # threads sharing the forward's context may read at the same time
            if id(node) not in self._seen:
                self._seen.add(id(node))
                self.control = Control((*self.control.parents, node), self)
        if getattr(node, "trainable", False):
            self.used.setdefault(id(node), node)

    def use(self, nodes: tuple[Any, ...]) -> None:
        """Note the trainable parameters among ``nodes`` (the parents of a node made in this forward)."""
        for node in nodes:
            if node.trainable:
                self.used.setdefault(id(node), node)


@contextlib.contextmanager
def forward_scope() -> Iterator[tuple[Forward, bool]]:
    """Run a block as one forward call; yields ``(forward, outermost)``.

    A scope opened inside another forward joins it (``outermost`` is False), so the values the
    caller read also control what a nested module makes, and the other way round.

    Example:
        >>> with forward_scope() as (outer, _), forward_scope() as (inner, outermost):
        ...     inner is outer, outermost
        (True, False)
    """
    current = _STATE.get()
    if current.forward is not None:
        yield current.forward, False
        return
    forward = Forward()
    token = _STATE.set(current._replace(forward=forward))
    try:
        yield forward, True
    finally:
        _STATE.reset(token)
        # The current Control points back at the forward and holds the nodes read, which point at
        # the forward too: dropping it after the call leaves no reference cycle, so the graph is
        # freed as soon as its nodes are.
        forward.control = Control((), None)
