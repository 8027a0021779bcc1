"""The concurrency limit holds for threads, asyncio tasks, and both at once."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from feedprop.errors import ConfigurationError
from feedprop.llm import ConcurrencyLimit, ContextThreadPoolExecutor, MockLLM

ASK = [{"role": "user", "content": "hi"}]


class InFlight:
    """A handler that measures how many calls are inside it at once."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.now = 0
        self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, messages: Any, **params: Any) -> str:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(self.delay)
        with self.lock:
            self.now -= 1
        return "ok"


def test_threads_never_exceed_the_limit_and_do_reach_it() -> None:
    probe = InFlight(0.02)
    llm = MockLLM(probe, max_concurrency=3)
    with ContextThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda _: llm.complete(ASK).text, range(36)))
    assert results == ["ok"] * 36
    assert probe.peak == 3
    assert llm.limit.max_in_use == 3 and llm.limit.in_use == 0


def test_asyncio_tasks_never_exceed_the_limit() -> None:
    llm = MockLLM("ok", latency=0.02, max_concurrency=2)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        for _ in range(40):
            peak = max(peak, llm.limit.in_use)
            await asyncio.sleep(0.005)

    async def main() -> list[str]:
        watcher = asyncio.create_task(watch())
        replies = await asyncio.gather(*(llm.acomplete(ASK) for _ in range(10)))
        await watcher
        return [r.text for r in replies]

    start = time.perf_counter()
    assert asyncio.run(main()) == ["ok"] * 10
    elapsed = time.perf_counter() - start
    assert peak == 2 and llm.limit.max_in_use == 2
    assert elapsed >= 5 * 0.02  # 10 calls, 2 at a time


def test_threads_and_tasks_share_one_limit() -> None:
    probe = InFlight(0.02)
    llm = MockLLM(probe, max_concurrency=2)

    def threads() -> None:
        with ContextThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda _: llm.complete(ASK), range(8)))

    async def tasks() -> None:
        await asyncio.gather(*(llm.acomplete(ASK) for _ in range(8)))

    t = threading.Thread(target=threads)
    t.start()
    asyncio.run(tasks())
    t.join()
    assert len(llm.calls) == 16
    assert probe.peak == 2


def test_unlimited_still_counts_in_flight() -> None:
    probe = InFlight(0.03)
    llm = MockLLM(probe)  # the mock is unlimited unless told otherwise
    with ContextThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda _: llm.complete(ASK), range(6)))
    assert llm.limit.limit is None
    assert llm.limit.max_in_use == probe.peak >= 2


def test_a_cancelled_waiter_gives_its_slot_on() -> None:
    limit = ConcurrencyLimit(1)

    async def main() -> None:
        await limit.aacquire()
        waiter = asyncio.create_task(limit.aacquire())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        limit.release()
        # The slot is free again: the cancelled waiter neither kept it nor blocks the queue.
        await asyncio.wait_for(limit.aacquire(), timeout=1)
        limit.release()

    asyncio.run(main())
    assert limit.in_use == 0


def test_waiters_are_served_in_arrival_order() -> None:
    limit = ConcurrencyLimit(1)
    order: list[int] = []
    limit.acquire()

    def waiter(i: int) -> None:
        with limit:
            order.append(i)

    threads = []
    for i in range(5):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(0.02)  # make the arrival order unambiguous
    limit.release()
    for t in threads:
        t.join()
    assert order == [0, 1, 2, 3, 4]


def test_release_without_acquire_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="more times"):
        ConcurrencyLimit(2).release()


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_limits_are_rejected(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        ConcurrencyLimit(bad)
