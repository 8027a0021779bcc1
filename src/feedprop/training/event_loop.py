"""Async workflows: their items run as tasks on one event loop, driven from synchronous code.

A workflow whose ``forward`` is ``async def`` returns a coroutine when called. ``fp.train``,
``fp.evaluate`` and ``fp.joint.alternate`` recognise such a workflow (:func:`is_async`) and run
a set of its items as asyncio tasks on one event loop (:func:`gather_limited`), at most
``max_workers`` at once, with the same budgets, checkpoints and failure rules as threads. Inside
``forward``, ask models with :func:`feedprop.ops.allm_call`: it awaits the reply, so the other
items run meanwhile, where a blocking ``llm_call`` would hold every item on the loop up.

Each task runs in its own copy of the caller's :mod:`contextvars` context, so the tracing state
of concurrent items never mixes (a ``name_scope`` or ``no_trace`` in one item is not seen by
another), while the usage meters and budgets in that context, shared objects, count every
item's calls.

``train`` and ``evaluate`` are synchronous; :func:`run_sync` runs their loop. With no event loop
running in the calling thread it runs one there. Inside a running loop (a notebook cell, an
async web handler) it runs a fresh loop in a helper thread that sees a copy of the caller's
context, and the caller waits for it, as for any synchronous call; interrupting the caller
cancels the items. An object already bound to the caller's loop (an async client used there)
cannot be awaited on the helper loop; let ``forward`` make or fetch such objects itself.

A workflow that only *returns* a coroutine without declaring ``async def`` (a plain ``forward``
that calls an async sub-module) is run item by item with :func:`awaited`, and so is each item of
an async workflow on a Ray cluster (``executor="ray"``), in its task.

Example:
    >>> import asyncio
    >>> async def double(x):
    ...     await asyncio.sleep(0)
    ...     return 2 * x
    >>> is_async(double), run_sync(lambda: double(21))
    (True, 42)
    >>> jobs = [lambda i=i: double(i) for i in range(3)]
    >>> run_sync(lambda: gather_limited(jobs, limit=2))
    [0, 2, 4]
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar, cast

from feedprop.module import Module

__all__ = ["awaited", "gather_limited", "is_async", "run_sync"]

T = TypeVar("T")


def is_async(model: Any) -> bool:
    """Whether calling ``model`` returns a coroutine by declaration: an ``async def`` function, a
    :class:`~feedprop.module.Module` with ``async def forward``, or an object with ``async def __call__``.

    Example:
        >>> class Solver(Module):
        ...     async def forward(self, x):
        ...         return x
        >>> is_async(Solver()), is_async(str.upper)
        (True, False)
    """
    if inspect.iscoroutinefunction(model):
        return True
    if isinstance(model, Module) and inspect.iscoroutinefunction(getattr(model, "forward", None)):
        return True
    return callable(model) and inspect.iscoroutinefunction(type(model).__call__)


def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine ``make()`` to completion and return its result, from synchronous code.

    In a thread without a running event loop the loop runs here; inside a running loop it runs
    on a fresh loop in a helper thread, in a copy of this thread's context, while this thread
    waits. ``make`` is called on the thread that runs the coroutine.

    Example:
        >>> async def inner():
        ...     return run_sync(lambda: asyncio.sleep(0, result="ran beside the running loop"))
        >>> asyncio.run(inner())
        'ran beside the running loop'
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    return _HelperLoop(make).run()


def awaited(value: Any) -> Any:
    """``value``, or what it resolves to when it is awaitable (run to completion by :func:`run_sync`).

    Example:
        >>> async def answer():
        ...     return 42
        >>> awaited(answer()), awaited(7)
        (42, 7)
    """
    if not inspect.isawaitable(value):
        return value
    if inspect.iscoroutine(value):
        coroutine = value
        return run_sync(lambda: coroutine)

    async def wait() -> Any:
        return await value

    return run_sync(wait)


async def gather_limited(
    jobs: Sequence[Callable[[], Awaitable[T]]],
    *,
    limit: int,
    on_done: Callable[[T], None] | None = None,
) -> list[T]:
    """Await every job as its own task, at most ``limit`` at once; results in job order.

    Each task starts in a copy of the current context. ``on_done`` is called with each result
    as it arrives. The first failure stops jobs not yet started; jobs already running finish,
    and then the failure is raised (the rule :func:`~feedprop.training.evaluation.run_items`
    follows with threads). Cancelling the caller cancels every job.

    Example:
        >>> async def slow(x):
        ...     await asyncio.sleep(0.01 * (3 - x))
        ...     return x
        >>> asyncio.run(gather_limited([lambda x=x: slow(x) for x in range(3)], limit=3))
        [0, 1, 2]
    """
    gate = asyncio.Semaphore(max(1, limit))
    failures: list[BaseException] = []
    results: list[Any] = [None] * len(jobs)

    async def one(index: int, job: Callable[[], Awaitable[T]]) -> None:
        async with gate:
            if failures:  # another job failed first: this one never starts
                return
            try:
                result = await job()
                results[index] = result
                if on_done is not None:
                    on_done(result)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                failures.append(exc)

    tasks = [asyncio.create_task(one(i, job)) for i, job in enumerate(jobs)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    if failures:
        raise failures[0]
    return results


class _HelperLoop(Generic[T]):
    """A coroutine run on a fresh event loop in a helper thread, for callers inside a running loop."""

    def __init__(self, make: Callable[[], Coroutine[Any, Any, T]]) -> None:
        self.make = make
        self.context = contextvars.copy_context()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None
        self.started = threading.Event()
        self.finished = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None

    async def main(self) -> T:
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.started.set()
        return await self.make()

    def target(self) -> None:
        try:
            with asyncio.Runner() as runner:
                self.result = runner.run(self.main(), context=self.context)
        except BaseException as exc:  # handed to the waiting caller, who raises it
            self.error = exc
        finally:
            self.started.set()
            self.finished.set()

    def run(self) -> T:
        # Waiting on an event, not Thread.join: a join interrupted by Ctrl-C may count the thread as ended.
        threading.Thread(target=self.target, name="feedprop-event-loop", daemon=True).start()
        try:
            self.finished.wait()
        except BaseException:  # the caller was interrupted: cancel the work, then let it unwind
            self.started.wait()
            if self.loop is not None and self.task is not None:
                with contextlib.suppress(RuntimeError):  # the loop already closed: nothing left to cancel
                    self.loop.call_soon_threadsafe(self.task.cancel)
            self.finished.wait()
            raise
        if self.error is not None:
            raise self.error
        return cast(T, self.result)
