"""Counting what LLM calls cost, and stopping them when a budget runs out.

A :class:`UsageMeter` counts calls, cache hits, replayed answers, tokens and seconds, in all
and per model (``by_model``, keyed by the name each :class:`~feedprop.llm.LLM` reports as its
``model``). ``track_usage()`` makes one active for the code inside its ``with`` block: every LLM
call made in that block — by any :class:`~feedprop.llm.LLM`, the mock included — adds to every
active meter, so nested scopes all count.

Which calls belong to a block (the mechanism):

* The active meters live in a :mod:`contextvars` variable. The block's own thread sees them, and
  so does every asyncio task it creates (tasks copy the context), ``asyncio.to_thread`` included.
* A thread started inside the block inherits the meters active where it was *started*. The first
  ``track_usage()`` of the process wraps :meth:`threading.Thread.start` (and so every
  ``Thread``, ``Timer`` and subclass): a thread started while meters are active runs its
  ``run()`` with exactly those meters; a thread started with none runs untouched. Plain threads
  do not copy contexts, so this is the only way a meter can follow them; no meter was ever active
  before the wrapper is installed, so threads started earlier rightly count nowhere.
* A task submitted to any :class:`~concurrent.futures.ThreadPoolExecutor` runs with the meters
  of the code that *submitted* it (the first ``track_usage()`` wraps ``submit`` too), not those
  of whoever happened to start the pool's worker thread, so a pool shared by two concurrent runs
  charges each task to its own run.
* A call made in a thread that :mod:`threading` did not start (``_thread.start_new_thread``, a
  thread of a native library) cannot be attributed. If meters are open anywhere in the process,
  such a call raises :class:`~feedprop.errors.UnattributedCallError` instead of going uncounted;
  the message says how to carry the meters over (``contextvars.copy_context().run``).

So two runs in two threads each count only their own calls, and a meter is never silently
skipped. A thread that outlives the block it was started in keeps counting into that block's
meter (and its limits keep applying); join threads before leaving the block to read final counts.

A meter may carry limits. Once ``max_calls`` calls have started, or ``max_tokens`` tokens have
been used, the next call raises :class:`~feedprop.errors.BudgetExhausted` *before* it starts.
The call limit is exact even under concurrency (a call reserves its slot atomically); the token
limit stops new calls once the count reaches it (calls already running may finish above it).

Example:
    >>> import threading
    >>> from feedprop.llm import MockLLM, track_usage
    >>> llm = MockLLM(["yes", "no"])
    >>> with track_usage(max_calls=2) as usage:
    ...     _ = llm.complete([{"role": "user", "content": "ok?"}])
    ...     worker = threading.Thread(target=llm.complete, args=([{"role": "user", "content": "and?"}],))
    ...     worker.start(); worker.join()
    >>> usage.calls
    2
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from feedprop.errors import BudgetExhausted, ConfigurationError, UnattributedCallError

__all__ = [
    "ContextThreadPoolExecutor",
    "UsageCounts",
    "UsageMeter",
    "active_meters",
    "add_usage",
    "thread_map",
    "track_usage",
]

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")

_ACTIVE: contextvars.ContextVar[tuple[UsageMeter, ...]] = contextvars.ContextVar("feedprop_usage_meters", default=())
# One lock for every meter: reserving a call must check and update all active meters at once.
_LOCK = threading.Lock()
# How many track_usage() blocks are open in the whole process (any thread); guarded by _LOCK.
_open_blocks = 0
_hooks_lock = threading.Lock()
_hooks_installed = False
_original_thread_start = threading.Thread.start
_original_pool_submit = ThreadPoolExecutor.submit


def _install_thread_hooks() -> None:
    """Make threads and thread-pool tasks inherit the meters of the code that started them (once per process)."""
    global _hooks_installed
    with _hooks_lock:
        if _hooks_installed:
            return
        threading.Thread.start = _start_with_meters  # type: ignore[method-assign]
        ThreadPoolExecutor.submit = _submit_with_meters  # type: ignore[method-assign,assignment]
        _hooks_installed = True


def _start_with_meters(self: threading.Thread) -> None:
    meters = _ACTIVE.get()
    if meters:
        run = self.run

        def run_with_meters() -> None:
            _ACTIVE.set(meters)  # the new thread's own context: nothing else sees it
            run()

        self.run = run_with_meters  # type: ignore[method-assign]
    _original_thread_start(self)


def _submit_with_meters(self: ThreadPoolExecutor, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
    # Always wrapped, even without meters: a reused worker thread must not charge this task
    # to the meters of whichever block started that thread.
    return _original_pool_submit(self, _run_with_meters, _ACTIVE.get(), fn, *args, **kwargs)


def _run_with_meters(meters: tuple[UsageMeter, ...], fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    token = _ACTIVE.set(meters)
    try:
        return fn(*args, **kwargs)
    finally:
        _ACTIVE.reset(token)


def _unattributed() -> UnattributedCallError | None:
    """The error for a call from a thread :mod:`threading` did not start while meters are open elsewhere."""
    if not _open_blocks or not isinstance(threading.current_thread(), _DUMMY_THREAD):
        return None
    return UnattributedCallError(
        "an LLM call was made in a thread that threading did not start (for instance _thread.start_new_thread "
        "or a native library's thread) while a track_usage() meter or training budget is active, so it cannot "
        "be counted. Start the thread with threading.Thread or a ThreadPoolExecutor, or capture "
        "ctx = contextvars.copy_context() inside the with block and make the call through ctx.run(...)"
    )


_DUMMY_THREAD: type = getattr(threading, "_DummyThread", type(None))


def _check_limit(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{name} must be a non-negative int or None, got {value!r}")
    return value


#: The model that usage measured elsewhere is charged to when it does not say (see :func:`add_usage`).
UNKNOWN_MODEL = "unknown"


class UsageCounts:
    """Calls, cache hits, replayed answers, errors, tokens and seconds: what a meter counts, in all and per model.

    ``calls`` counts calls that reached a model (started, whether or not they succeeded);
    ``cache_hits`` counts answers served from the response cache and ``replayed`` answers served
    from a recording (:func:`~feedprop.llm.replay`); neither costs anything, so neither is in
    ``calls`` or the token counts. ``errors`` counts calls that ended in an exception;
    ``seconds`` sums the time calls spent in the model (retries included, waiting for a
    concurrency slot excluded).

    Example:
        >>> counts = UsageCounts()
        >>> counts.add({"calls": 2, "prompt_tokens": 10, "completion_tokens": 3})
        >>> counts.calls, counts.total_tokens, counts.to_dict()["seconds"]
        (2, 13, 0.0)
    """

    def __init__(self) -> None:
        self.calls = 0
        self.cache_hits = 0
        self.replayed = 0
        self.errors = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.seconds = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, counts: Mapping[str, Any]) -> None:
        """Add ``counts`` (keys of :meth:`to_dict`; missing ones count 0, ``total_tokens`` and others are ignored)."""
        self.calls += int(counts.get("calls", 0))
        self.cache_hits += int(counts.get("cache_hits", 0))
        self.replayed += int(counts.get("replayed", 0))
        self.errors += int(counts.get("errors", 0))
        self.prompt_tokens += int(counts.get("prompt_tokens", 0))
        self.completion_tokens += int(counts.get("completion_tokens", 0))
        self.seconds += float(counts.get("seconds", 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "replayed": self.replayed,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "seconds": self.seconds,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(calls={self.calls}, cache_hits={self.cache_hits}, replayed={self.replayed}, "
            f"errors={self.errors}, prompt_tokens={self.prompt_tokens}, completion_tokens={self.completion_tokens}, "
            f"seconds={self.seconds:.3f})"
        )


class UsageMeter(UsageCounts):
    """Counts of LLM calls in a scope (see :class:`UsageCounts`), per model too, with optional limits.

    ``by_model`` maps each model's name (its :attr:`LLM.model <feedprop.llm.LLM.model>`) to the
    :class:`UsageCounts` of its calls; the counts of all models add up to the meter's own.

    Example:
        >>> meter = UsageMeter(max_calls=3)
        >>> meter.remaining_calls, meter.by_model
        (3, {})
    """

    def __init__(self, max_calls: int | None = None, max_tokens: int | None = None) -> None:
        super().__init__()
        self.max_calls = _check_limit("max_calls", max_calls)
        self.max_tokens = _check_limit("max_tokens", max_tokens)
        self.by_model: dict[str, UsageCounts] = {}

    def _model(self, name: str) -> UsageCounts:
        """The counts of model ``name``, created at zero on first use (the caller holds ``_LOCK``)."""
        counts = self.by_model.get(name)
        if counts is None:
            counts = self.by_model[name] = UsageCounts()
        return counts

    @property
    def remaining_calls(self) -> int | None:
        """Calls left before the call limit, or ``None`` without one."""
        return None if self.max_calls is None else max(0, self.max_calls - self.calls)

    @property
    def remaining_tokens(self) -> int | None:
        """Tokens left before the token limit, or ``None`` without one."""
        return None if self.max_tokens is None else max(0, self.max_tokens - self.total_tokens)

    def exhausted_reason(self) -> str | None:
        """Why no further call may start, or ``None`` if one may."""
        if self.max_calls is not None and self.calls >= self.max_calls:
            return (
                f"the LLM call budget is used up: {self.calls} of max_calls={self.max_calls} calls made; "
                "raise max_calls or stop making calls"
            )
        if self.max_tokens is not None and self.total_tokens >= self.max_tokens:
            return (
                f"the LLM token budget is used up: {self.total_tokens} of max_tokens={self.max_tokens} tokens used; "
                "raise max_tokens or stop making calls"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        """The counts (see :class:`UsageCounts`) with ``by_model``: each model's counts, by name.

        Example:
            >>> from feedprop.llm import MockLLM
            >>> with track_usage() as meter:
            ...     _ = MockLLM("hi", model="small").complete([{"role": "user", "content": "hello"}])
            >>> meter.to_dict()["by_model"]["small"]["calls"]
            1
        """
        with _LOCK:
            out = super().to_dict()
            out["by_model"] = {name: counts.to_dict() for name, counts in sorted(self.by_model.items())}
            return out

    def __repr__(self) -> str:
        d = self.to_dict()
        limits = "".join(
            f", {k}={v}" for k, v in (("max_calls", self.max_calls), ("max_tokens", self.max_tokens)) if v is not None
        )
        return (
            f"UsageMeter(calls={d['calls']}, cache_hits={d['cache_hits']}, replayed={d['replayed']}, "
            f"errors={d['errors']}, "
            f"prompt_tokens={d['prompt_tokens']}, completion_tokens={d['completion_tokens']}, "
            f"seconds={d['seconds']:.3f}{limits})"
        )


@contextmanager
def track_usage(max_calls: int | None = None, max_tokens: int | None = None) -> Iterator[UsageMeter]:
    """Count every LLM call made inside the ``with`` block (and enforce optional limits).

    Example:
        >>> from feedprop.llm import MockLLM
        >>> with track_usage() as outer, track_usage() as inner:
        ...     _ = MockLLM("hi").complete([{"role": "user", "content": "hello"}])
        >>> (outer.calls, inner.calls)
        (1, 1)
    """
    global _open_blocks
    _install_thread_hooks()
    meter = UsageMeter(max_calls=max_calls, max_tokens=max_tokens)
    token = _ACTIVE.set((*_ACTIVE.get(), meter))
    with _LOCK:
        _open_blocks += 1
    try:
        yield meter
    finally:
        with _LOCK:
            _open_blocks -= 1
        _ACTIVE.reset(token)


def active_meters() -> tuple[UsageMeter, ...]:
    """The meters counting calls made in the current context, outermost first."""
    return _ACTIVE.get()


def reserve_call(model: str) -> tuple[UsageMeter, ...]:
    """Count a call to ``model`` as started in every active meter, or raise ``BudgetExhausted`` if any forbids it.

    Check and update happen under one lock, so concurrent callers can never exceed ``max_calls``.
    Returns the meters that the finished call must be recorded in.
    """
    meters = _ACTIVE.get()
    if not meters:
        error = _unattributed()
        if error is not None:
            raise error
        return meters
    with _LOCK:
        for meter in meters:
            reason = meter.exhausted_reason()
            if reason is not None:
                raise BudgetExhausted(reason)
        for meter in meters:
            meter.calls += 1
            meter._model(model).calls += 1
    return meters


def record_call(
    meters: tuple[UsageMeter, ...],
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    seconds: float,
    failed: bool,
) -> None:
    """Add a finished call's cost to ``meters`` (as returned by :func:`reserve_call`), in all and for ``model``."""
    if not meters:
        return
    with _LOCK:
        for meter in meters:
            for counts in (meter, meter._model(model)):
                counts.prompt_tokens += prompt_tokens
                counts.completion_tokens += completion_tokens
                counts.seconds += seconds
                counts.errors += int(failed)


def add_usage(counts: Mapping[str, Any]) -> None:
    """Add usage measured elsewhere (say, by a meter in a worker process) to every active meter.

    ``counts`` has the keys of :meth:`UsageMeter.to_dict` (missing ones count 0). Its
    ``by_model`` entries are added to the meters' models; without ``by_model`` the usage is
    charged to the model :data:`UNKNOWN_MODEL`, so the models still add up to the whole. Limits
    are not checked: the calls already happened; a meter over its limit refuses the next call as usual.

    Example:
        >>> with track_usage() as meter:
        ...     add_usage({"calls": 2, "prompt_tokens": 10, "completion_tokens": 3})
        >>> meter.calls, meter.total_tokens, meter.by_model["unknown"].calls
        (2, 13, 2)
    """
    meters = _ACTIVE.get()
    if not meters:
        return
    by_model = counts.get("by_model")
    models = dict(by_model) if isinstance(by_model, Mapping) else {UNKNOWN_MODEL: counts}
    with _LOCK:
        for meter in meters:
            meter.add(counts)
            for name, model_counts in models.items():
                meter._model(str(name)).add(model_counts)


def record_cache_hit(model: str) -> None:
    """Count an answer from ``model``'s cache in every active meter."""
    meters = _ACTIVE.get()
    if not meters:
        return
    with _LOCK:
        for meter in meters:
            meter.cache_hits += 1
            meter._model(model).cache_hits += 1


def record_replay(model: str) -> None:
    """Count an answer for ``model`` served from a recording (:func:`~feedprop.llm.replay`) in every active meter."""
    meters = _ACTIVE.get()
    if not meters:
        return
    with _LOCK:
        for meter in meters:
            meter.replayed += 1
            meter._model(model).replayed += 1


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A thread pool whose tasks run in a copy of the submitting thread's context.

    Every thread pool charges a task's LLM calls to the submitter's meters (see the module
    docstring); this one also copies the rest of the caller's context (tracing state, a
    :func:`~feedprop.llm.replay` recording, everything in :mod:`contextvars`) into each task.

    Example:
        >>> from feedprop.llm import MockLLM
        >>> llm = MockLLM("ok")
        >>> with track_usage() as usage, ContextThreadPoolExecutor(4) as pool:
        ...     _ = list(pool.map(lambda q: llm.complete([{"role": "user", "content": q}]), ["a", "b", "c"]))
        >>> usage.calls
        3
    """

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        context = contextvars.copy_context()
        return super().submit(lambda: context.run(fn, *args, **kwargs))


def thread_map(fn: Callable[[T], R], items: Iterable[T], max_workers: int | None = None) -> list[R]:
    """``[fn(x) for x in items]`` run in threads that see the caller's context; results in order.

    The first exception raised by ``fn`` is re-raised here.

    Example:
        >>> thread_map(lambda x: x * x, [1, 2, 3], max_workers=2)
        [1, 4, 9]
    """
    with ContextThreadPoolExecutor(max_workers=max_workers) as pool:
        return list(pool.map(fn, items))
