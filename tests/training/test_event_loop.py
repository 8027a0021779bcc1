"""Async workflows: recognising them, bounded tasks on one loop, and running a loop from synchronous code."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import signal
import threading
from typing import Any

import pytest

from feedprop.module import Module
from feedprop.training.event_loop import awaited, gather_limited, is_async, run_sync

CALLER = contextvars.ContextVar("caller", default="none")


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


class AsyncForward(Module):
    async def forward(self, x: int) -> int:
        return await double(x)


class SyncForward(Module):
    def forward(self, x: int) -> int:
        return x


class AsyncCall:
    async def __call__(self, x: int) -> int:
        return await double(x)


def test_async_workflows_are_recognised_by_declaration() -> None:
    assert is_async(double) and is_async(functools.partial(double, 1))
    assert is_async(AsyncForward()) and is_async(AsyncCall())
    assert not is_async(SyncForward()) and not is_async(str.upper) and not is_async(lambda x: double(x))


def test_run_sync_runs_the_loop_here_without_a_running_loop() -> None:
    async def where() -> int:
        return threading.get_ident()

    assert run_sync(where) == threading.get_ident()


def test_inside_a_running_loop_run_sync_uses_a_helper_thread_that_sees_the_callers_context() -> None:
    async def seen() -> tuple[str, int]:
        return CALLER.get(), threading.get_ident()

    async def notebook_cell() -> tuple[str, int, int]:
        CALLER.set("the cell")
        value, ident = run_sync(seen)  # a synchronous call, as fp.train makes one
        return value, ident, threading.get_ident()

    value, helper, caller = asyncio.run(notebook_cell())
    assert value == "the cell" and helper != caller


def test_errors_of_the_helper_loop_are_raised_to_the_caller() -> None:
    async def broken() -> None:
        raise ValueError("inside the helper loop")

    async def cell() -> None:
        run_sync(broken)

    with pytest.raises(ValueError, match="inside the helper loop"):
        asyncio.run(cell())


def test_interrupting_the_caller_cancels_the_helper_loops_work() -> None:
    # A notebook's interrupt is SIGINT to the main thread, a KeyboardInterrupt while it waits.
    cancelled = threading.Event()
    main = threading.main_thread().ident
    assert threading.get_ident() == main and main is not None

    async def forever() -> None:
        try:
            await asyncio.wait_for(asyncio.Event().wait(), timeout=30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def cell() -> None:
        threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGINT)).start()
        run_sync(forever)

    loop = asyncio.new_event_loop()  # no SIGINT handler of its own, like a notebook kernel's
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(cell())
    finally:
        loop.close()
    assert cancelled.is_set(), "the work on the helper loop was cancelled, not left running"


def test_awaited_resolves_awaitables_and_passes_values_through() -> None:
    async def cell() -> Any:
        return awaited(double(4))  # inside a running loop: resolved beside it

    assert awaited(double(2)) == 4 and awaited("plain") == "plain"
    assert asyncio.run(cell()) == 8


def test_gather_limited_keeps_order_and_the_limit() -> None:
    running, peak = 0, 0

    async def job(x: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01 * (6 - x))
        running -= 1
        return x

    done: list[int] = []
    jobs = [functools.partial(job, x) for x in range(6)]
    assert asyncio.run(gather_limited(jobs, limit=3, on_done=done.append)) == list(range(6))
    assert peak == 3 and sorted(done) == list(range(6))


def test_the_first_failure_stops_new_jobs_lets_running_ones_finish_and_is_raised() -> None:
    started: list[int] = []
    finished: list[int] = []

    async def job(x: int) -> int:
        started.append(x)
        if x == 0:
            await asyncio.sleep(0.01)  # job 1 is running by then
            raise RuntimeError("boom")
        await asyncio.sleep(0.05)
        finished.append(x)
        return x

    jobs = [functools.partial(job, x) for x in range(20)]
    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(gather_limited(jobs, limit=2))
    assert started == [0, 1] and finished == [1], "job 1 was running and finished; no other job started"


def test_cancelling_the_caller_cancels_every_job() -> None:
    cancelled: list[int] = []

    async def job(x: int) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(x)
            raise

    async def caller() -> None:
        task = asyncio.create_task(gather_limited([functools.partial(job, x) for x in range(3)], limit=3))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(caller())
    assert sorted(cancelled) == [0, 1, 2]
