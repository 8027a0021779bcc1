"""Counting what LLM calls cost, and stopping them when a budget runs out.

A :class:`UsageMeter` counts calls, cache hits, replayed answers, tokens and seconds.
``track_usage()`` makes one active for the code inside its ``with`` block: every LLM call made
in that context — by any :class:`~feedprop.llm.LLM`, the mock included — adds to every active
meter, so nested scopes all count. Active meters live in a :mod:`contextvars` variable, which
asyncio tasks inherit automatically. Raw threads do **not** inherit it: run work through
:class:`ContextThreadPoolExecutor` or :func:`thread_map` (or ``contextvars.copy_context().run``)
so calls made in worker threads are counted.

A meter may carry limits. Once ``max_calls`` calls have started, or ``max_tokens`` tokens have
been used, the next call raises :class:`~feedprop.errors.BudgetExhausted` *before* it starts.
The call limit is exact even under concurrency (a call reserves its slot atomically); the token
limit stops new calls once the count reaches it (calls already running may finish above it).

Example:
    >>> from feedprop.llm import MockLLM, track_usage
    >>> llm = MockLLM(["yes", "no"])
    >>> with track_usage(max_calls=1) as usage:
    ...     _ = llm.complete([{"role": "user", "content": "ok?"}])
    >>> usage.calls
    1
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from feedprop.errors import BudgetExhausted, ConfigurationError

__all__ = [
    "ContextThreadPoolExecutor",
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


def _check_limit(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{name} must be a non-negative int or None, got {value!r}")
    return value


class UsageMeter:
    """Counts of LLM calls in a scope, with optional limits.

    ``calls`` counts calls that reached a model (started, whether or not they succeeded);
    ``cache_hits`` counts answers served from the response cache and ``replayed`` answers served
    from a recording (:func:`~feedprop.llm.replay`); neither costs anything, so neither is in
    ``calls`` or the token counts. ``errors`` counts calls that ended in an exception;
    ``seconds`` sums the time calls spent in the model (retries included, waiting for a
    concurrency slot excluded).

    Example:
        >>> meter = UsageMeter(max_calls=3)
        >>> meter.remaining_calls
        3
    """

    def __init__(self, max_calls: int | None = None, max_tokens: int | None = None) -> None:
        self.max_calls = _check_limit("max_calls", max_calls)
        self.max_tokens = _check_limit("max_tokens", max_tokens)
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
        with _LOCK:
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
    meter = UsageMeter(max_calls=max_calls, max_tokens=max_tokens)
    token = _ACTIVE.set((*_ACTIVE.get(), meter))
    try:
        yield meter
    finally:
        _ACTIVE.reset(token)


def active_meters() -> tuple[UsageMeter, ...]:
    """The meters counting calls made in the current context, outermost first."""
    return _ACTIVE.get()


def reserve_call() -> tuple[UsageMeter, ...]:
    """Count a call as started in every active meter, or raise ``BudgetExhausted`` if any forbids it.

    Check and update happen under one lock, so concurrent callers can never exceed ``max_calls``.
    Returns the meters that the finished call must be recorded in.
    """
    meters = _ACTIVE.get()
    if not meters:
        return meters
    with _LOCK:
        for meter in meters:
            reason = meter.exhausted_reason()
            if reason is not None:
                raise BudgetExhausted(reason)
        for meter in meters:
            meter.calls += 1
    return meters


def record_call(
    meters: tuple[UsageMeter, ...], prompt_tokens: int, completion_tokens: int, seconds: float, failed: bool
) -> None:
    """Add a finished call's cost to ``meters`` (as returned by :func:`reserve_call`)."""
    if not meters:
        return
    with _LOCK:
        for meter in meters:
            meter.prompt_tokens += prompt_tokens
            meter.completion_tokens += completion_tokens
            meter.seconds += seconds
            meter.errors += int(failed)


def add_usage(counts: Mapping[str, float]) -> None:
    """Add usage measured elsewhere (say, by a meter in a worker process) to every active meter.

    ``counts`` has the keys of :meth:`UsageMeter.to_dict` (missing ones count 0). Limits are not
    checked: the calls already happened; a meter over its limit refuses the next call as usual.

    Example:
        >>> with track_usage() as meter:
        ...     add_usage({"calls": 2, "prompt_tokens": 10, "completion_tokens": 3})
        >>> meter.calls, meter.total_tokens
        (2, 13)
    """
    meters = _ACTIVE.get()
    if not meters:
        return
    with _LOCK:
        for meter in meters:
            meter.calls += int(counts.get("calls", 0))
            meter.cache_hits += int(counts.get("cache_hits", 0))
            meter.replayed += int(counts.get("replayed", 0))
            meter.errors += int(counts.get("errors", 0))
            meter.prompt_tokens += int(counts.get("prompt_tokens", 0))
            meter.completion_tokens += int(counts.get("completion_tokens", 0))
            meter.seconds += float(counts.get("seconds", 0.0))


def record_cache_hit() -> None:
    """Count an answer served from the cache in every active meter."""
    meters = _ACTIVE.get()
    if not meters:
        return
    with _LOCK:
        for meter in meters:
            meter.cache_hits += 1


def record_replay() -> None:
    """Count an answer served from a recording (:func:`~feedprop.llm.replay`) in every active meter."""
    meters = _ACTIVE.get()
    if not meters:
        return
    with _LOCK:
        for meter in meters:
            meter.replayed += 1


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A thread pool whose tasks run in a copy of the submitting thread's context.

    Worker threads of a plain :class:`~concurrent.futures.ThreadPoolExecutor` start with an empty
    context, so LLM calls made there escape ``track_usage()`` meters and budgets. This pool copies
    the caller's context (meters, tracing state, everything in :mod:`contextvars`) into each task.

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
