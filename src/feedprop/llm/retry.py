"""Retrying transient model failures with exponential backoff and jitter.

Only :class:`~feedprop.errors.TransientLLMError` (timeouts, 429, 5xx, dropped connections) is
retried; every other error is final at once. A :class:`~feedprop.errors.RateLimitError` that
carries the server's Retry-After waits that long instead of the computed backoff. When the
retries run out, the backend decides which error to raise (see ``give_up``), so that "nothing is
listening" can be told apart from "the server keeps failing".

Example:
    >>> policy = RetryPolicy(max_retries=3, initial_delay=0.5, jitter=0.0)
    >>> [policy.backoff(attempt) for attempt in range(3)]
    [0.5, 1.0, 2.0]
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from feedprop.errors import ConfigurationError, LLMError, RateLimitError, RetriesExhaustedError, TransientLLMError

__all__ = ["RetryPolicy", "acall_with_retries", "call_with_retries", "retries_exhausted"]

T = TypeVar("T")
logger = logging.getLogger("feedprop.llm")

GiveUp = Callable[[list[TransientLLMError]], LLMError]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry transient failures.

    The wait before retry ``k`` (0-based) is ``min(max_delay, initial_delay * multiplier**k)``,
    scaled by a random factor in ``[1 - jitter, 1 + jitter]`` so that many clients failing
    together do not retry in lockstep. A 429 with Retry-After waits that long instead (at most
    ``max_retry_after``).

    Example:
        >>> RetryPolicy(max_retries=0).max_retries   # no retries: the first failure is final
        0
    """

    max_retries: int = 4
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.25
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigurationError(f"max_retries must be a non-negative int, got {self.max_retries!r}")
        for name in ("initial_delay", "multiplier", "max_delay", "max_retry_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:  # NaN fails too
                raise ConfigurationError(f"RetryPolicy.{name} must be a non-negative number, got {value!r}")
        if isinstance(self.jitter, bool) or not isinstance(self.jitter, int | float) or not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"RetryPolicy.jitter must be a number between 0 and 1, got {self.jitter!r}")

    def backoff(self, attempt: int) -> float:
        """The jittered wait before retry number ``attempt`` (0-based)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier**attempt)
        return base * (1 + self.jitter * random.uniform(-1.0, 1.0)) if self.jitter else base

    def delay(self, attempt: int, error: TransientLLMError) -> float:
        """The wait before retry ``attempt`` after ``error``, honouring a server's Retry-After."""
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.max_retry_after)
        return self.backoff(attempt)


def retries_exhausted(errors: list[TransientLLMError]) -> LLMError:
    """The default error once retries run out: :class:`RetriesExhaustedError` wrapping the last failure."""
    last = errors[-1]
    return RetriesExhaustedError(
        f"the model call failed {len(errors)} time(s) in a row; last error: {last}. "
        "Check that the endpoint is healthy, or allow more retries with retry=RetryPolicy(max_retries=...)",
        last_error=last,
    )


def call_with_retries(fn: Callable[[], T], policy: RetryPolicy, give_up: GiveUp = retries_exhausted) -> T:
    """Call ``fn``; retry it on :class:`TransientLLMError` as ``policy`` says, then raise ``give_up(errors)``."""
    errors: list[TransientLLMError] = []
    while True:
        try:
            return fn()
        except TransientLLMError as exc:
            errors.append(exc)
            if len(errors) > policy.max_retries:
                raise give_up(errors) from exc
            wait = policy.delay(len(errors) - 1, exc)
            logger.info("transient LLM error (%s); retry %d/%d in %.2fs", exc, len(errors), policy.max_retries, wait)
        time.sleep(wait)


async def acall_with_retries(
    fn: Callable[[], Awaitable[T]], policy: RetryPolicy, give_up: GiveUp = retries_exhausted
) -> T:
    """Async form of :func:`call_with_retries`."""
    errors: list[TransientLLMError] = []
    while True:
        try:
            return await fn()
        except TransientLLMError as exc:
            errors.append(exc)
            if len(errors) > policy.max_retries:
                raise give_up(errors) from exc
            wait = policy.delay(len(errors) - 1, exc)
            logger.info("transient LLM error (%s); retry %d/%d in %.2fs", exc, len(errors), policy.max_retries, wait)
        await asyncio.sleep(wait)
