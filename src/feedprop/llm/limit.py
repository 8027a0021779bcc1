"""A cap on how many calls run at once against one model, for threads and asyncio tasks alike.

A local server has a fixed number of slots and a remote endpoint has rate limits, so each
:class:`~feedprop.llm.LLM` owns one :class:`ConcurrencyLimit`. Threads block in
:meth:`ConcurrencyLimit.acquire`; asyncio tasks await :meth:`ConcurrencyLimit.aacquire`
without blocking their event loop. Both kinds share the same slots and wait in one FIFO queue:
a released slot is handed directly to the longest waiter, so nobody starves.

Example:
    >>> limit = ConcurrencyLimit(2)
    >>> with limit:
    ...     limit.in_use
    1
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from types import TracebackType

from feedprop.errors import ConfigurationError

__all__ = ["ConcurrencyLimit"]


class _Waiter:
    """A thread or task waiting for a slot; ``granted`` turns true when a slot is handed to it."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.granted = False
        self.loop = loop
        self.event = threading.Event() if loop is None else None
        self.future: asyncio.Future[None] | None = loop.create_future() if loop is not None else None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ConcurrencyLimit:
    """At most ``limit`` holders at once (``None``: unlimited, still counted).

    ``in_use`` is the number of current holders and ``max_in_use`` the highest it has been,
    which is what tests and capacity tuning look at.
    """

    def __init__(self, limit: int | None) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigurationError(f"max_concurrency must be a positive int or None (unlimited), got {limit!r}")
        self.limit = limit
        self.in_use = 0
        self.max_in_use = 0
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()

    def _try_take(self) -> bool:
        # Caller holds the lock. Queue order is respected: nobody jumps ahead of a waiter.
        if self._waiters or (self.limit is not None and self.in_use >= self.limit):
            return False
        self.in_use += 1
        self.max_in_use = max(self.max_in_use, self.in_use)
        return True

    def acquire(self) -> None:
        """Block the calling thread until a slot is free, then hold it."""
        with self._lock:
            if self._try_take():
                return
            waiter = _Waiter()
            self._waiters.append(waiter)
        assert waiter.event is not None
        try:
            waiter.event.wait()
        except BaseException:  # e.g. KeyboardInterrupt while waiting: give back whatever we got
            with self._lock:
                if waiter.granted:
                    self._release_locked()
                else:
                    self._waiters.remove(waiter)
            raise

    async def aacquire(self) -> None:
        """Wait (without blocking the event loop) until a slot is free, then hold it."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._try_take():
                return
            waiter = _Waiter(loop)
            self._waiters.append(waiter)
        assert waiter.future is not None
        try:
            await waiter.future
        except BaseException:  # cancelled while waiting: give the slot on if it was already ours
            with self._lock:
                if waiter.granted:
                    self._release_locked()
                else:
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give back a slot taken by :meth:`acquire` or :meth:`aacquire`."""
        with self._lock:
            self._release_locked()

    def _release_locked(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            # The slot passes straight to the waiter: in_use stays the same.
            if waiter.event is not None:
                waiter.granted = True
                waiter.event.set()
                return
            assert waiter.loop is not None and waiter.future is not None
            try:
                waiter.loop.call_soon_threadsafe(_resolve, waiter.future)
            except RuntimeError:  # its event loop is closed; that waiter is gone
                continue
            waiter.granted = True
            return
        if self.in_use <= 0:
            raise RuntimeError("ConcurrencyLimit.release() called more times than acquire()")
        self.in_use -= 1

    def __enter__(self) -> ConcurrencyLimit:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    async def __aenter__(self) -> ConcurrencyLimit:
        await self.aacquire()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"ConcurrencyLimit(limit={self.limit}, in_use={self.in_use}, max_in_use={self.max_in_use})"
