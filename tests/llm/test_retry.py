"""Backoff arithmetic and which errors are retried."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from feedprop.errors import (
    AuthenticationError,
    ConfigurationError,
    RateLimitError,
    RetriesExhaustedError,
    TransientLLMError,
)
from feedprop.llm import MockLLM, RetryPolicy
from feedprop.llm.retry import acall_with_retries, call_with_retries

ASK = [{"role": "user", "content": "hi"}]


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_delay=0.5, multiplier=2, max_delay=3, jitter=0)
    assert [policy.backoff(k) for k in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_stays_within_its_band_and_varies() -> None:
    policy = RetryPolicy(initial_delay=1.0, jitter=0.25)
    waits = [policy.backoff(0) for _ in range(200)]
    assert all(0.75 <= w <= 1.25 for w in waits)
    assert len(set(waits)) > 100


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(initial_delay=10, jitter=0, max_retry_after=5)
    assert policy.delay(0, RateLimitError("slow down", retry_after=0.25)) == 0.25
    assert policy.delay(0, RateLimitError("slow down", retry_after=60)) == 5
    assert policy.delay(0, RateLimitError("slow down")) == 10  # no header: plain backoff
    assert policy.delay(1, TransientLLMError("500")) == 20


def test_transient_errors_are_retried_then_succeed() -> None:
    attempts = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise TransientLLMError("503")
        return "ok"

    assert call_with_retries(flaky, RetryPolicy(max_retries=2, initial_delay=0)) == "ok"
    assert len(attempts) == 3


def test_exhausted_retries_raise_with_the_last_error() -> None:
    def always() -> str:
        raise TransientLLMError("503 again")

    with pytest.raises(RetriesExhaustedError, match="failed 3 time") as info:
        call_with_retries(always, RetryPolicy(max_retries=2, initial_delay=0))
    assert isinstance(info.value.last_error, TransientLLMError)
    assert "max_retries" in str(info.value)


def test_final_errors_are_not_retried() -> None:
    attempts = []

    def refused() -> str:
        attempts.append(1)
        raise AuthenticationError("bad key")

    with pytest.raises(AuthenticationError):
        call_with_retries(refused, RetryPolicy(max_retries=5, initial_delay=0))
    assert len(attempts) == 1


def test_async_retries() -> None:
    attempts = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 2:
            raise RateLimitError("429", retry_after=0.01)
        return "ok"

    assert asyncio.run(acall_with_retries(flaky, RetryPolicy(max_retries=1))) == "ok"
    assert len(attempts) == 2


def test_mock_handler_errors_go_through_the_same_retries() -> None:
    script: list[Any] = [TransientLLMError("blip"), TransientLLMError("blip"), "done"]

    def handler(messages: Any, **params: Any) -> str:
        item = script.pop(0)
        if isinstance(item, Exception):
            raise item
        return str(item)

    llm = MockLLM(handler)
    assert llm.complete(ASK).text == "done"
    assert len(llm.calls) == 3


@pytest.mark.parametrize(
    "kwargs",
    [{"max_retries": -1}, {"max_retries": 1.5}, {"initial_delay": -1}, {"jitter": 2}],
)
def test_bad_policies_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**kwargs)
