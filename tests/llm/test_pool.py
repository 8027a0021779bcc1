"""EndpointPool: load balancing, failover, resting endpoints that went down, one metered call per call."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from feedprop.errors import (
    BadRequestError,
    ConfigurationError,
    EndpointUnreachableError,
    RateLimitError,
    TransientLLMError,
)
from feedprop.llm import MockLLM, RetryPolicy, track_usage
from feedprop.llm.pool import EndpointPool

from .fakes import FakeOpenAIServer, free_port, ok, status

ASK = [{"role": "user", "content": "hi"}]
NO_WAIT = RetryPolicy(max_retries=2, initial_delay=0.0, jitter=0.0)


def failing(error: Exception) -> Callable[..., str]:
    def handler(messages: Any, **params: Any) -> str:
        raise error

    return handler


def test_calls_are_spread_in_turn_over_idle_endpoints() -> None:
    a, b, c = MockLLM("a"), MockLLM("b"), MockLLM("c")
    pool = EndpointPool([a, b, c], model="m", cache=False)
    texts = [pool.complete(ASK).text for _ in range(6)]
    assert texts == ["a", "b", "c", "a", "b", "c"]
    assert [s["calls"] for s in pool.status()] == [2, 2, 2]


def test_the_least_busy_endpoint_gets_the_next_call() -> None:
    release = threading.Event()

    def slow(messages: Any, **params: Any) -> str:
        release.wait(10)
        return "slow"

    pool = EndpointPool([MockLLM(slow), MockLLM("fast")], model="m", cache=False)
    hold = threading.Thread(target=pool.complete, args=(ASK,))
    hold.start()
    deadline = time.monotonic() + 5
    while pool.status()[0]["in_flight"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [pool.complete(ASK).text for _ in range(3)] == ["fast"] * 3
    release.set()
    hold.join(10)


def test_a_failing_endpoint_fails_over_at_once_and_rests() -> None:
    down = MockLLM(failing(TransientLLMError("connection reset")))
    up = MockLLM("up")
    pool = EndpointPool([down, up], model="m", cache=False, cooldown=60, max_failures=1, retry=NO_WAIT)
    with track_usage() as usage:
        assert [pool.complete(ASK).text for _ in range(4)] == ["up"] * 4
    assert usage.calls == 4 and usage.errors == 0, "a call counts once however many endpoints it tried"
    assert len(down.calls) == 1, "after its failure the endpoint is out of rotation"
    assert [s["up"] for s in pool.status()] == [False, True]


def test_a_rested_endpoint_gets_one_call_to_prove_itself() -> None:
    answers = iter([TransientLLMError("503"), "back"])

    def flaky(messages: Any, **params: Any) -> str:
        item = next(answers)
        if isinstance(item, Exception):
            raise item
        return item

    first = MockLLM(flaky)
    pool = EndpointPool([first, MockLLM("other")], model="m", cache=False, cooldown=0.05, max_failures=1)
    assert pool.complete(ASK).text == "other"
    assert pool.status()[0]["up"] is False
    time.sleep(0.1)
    assert pool.complete(ASK).text == "back"
    assert pool.status()[0] == {"endpoint": "MockLLM(mock) #0", "up": True, "in_flight": 0, "calls": 2, "failures": 0}


def test_rate_limits_move_the_call_on_without_resting_the_endpoint() -> None:
    busy = MockLLM(failing(RateLimitError("429")))
    pool = EndpointPool([busy, MockLLM("free")], model="m", cache=False, max_failures=1)
    assert pool.complete(ASK).text == "free"
    assert pool.status()[0]["up"] is True


def test_when_every_endpoint_fails_the_retry_policy_applies() -> None:
    pool = EndpointPool(
        [MockLLM(failing(TransientLLMError("500"))), MockLLM(failing(TransientLLMError("500")))],
        model="m",
        cache=False,
        cooldown=0,
        retry=NO_WAIT,
    )
    with pytest.raises(Exception, match="failed 3 time"):
        pool.complete(ASK)


def test_errors_that_are_not_transient_are_raised_as_they_are() -> None:
    bad = MockLLM(failing(BadRequestError("bad temperature")))
    pool = EndpointPool([bad, MockLLM("ok")], model="m", cache=False)
    with pytest.raises(BadRequestError, match="bad temperature"):
        pool.complete(ASK)
    assert pool.status()[0]["up"] is True


def test_real_endpoints_one_of_them_down(fake_server: Callable[..., FakeOpenAIServer]) -> None:
    server = fake_server([ok("alive")])
    dead = f"http://127.0.0.1:{free_port()}/v1"
    pool = EndpointPool([dead, server.base_url], model="fake-model", cache=False, cooldown=60, retry=NO_WAIT)
    assert [pool.complete(ASK).text for _ in range(3)] == ["alive"] * 3
    dead_status = pool.status()[0]
    assert dead_status["up"] is False and dead_status["calls"] == 1, "a refused connection rests it at once"
    assert len(server.requests) == 3


def test_all_endpoints_unreachable_says_so(fake_server: Callable[..., FakeOpenAIServer]) -> None:
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    pool = EndpointPool(urls, model="m", cache=False, retry=NO_WAIT)
    with pytest.raises(EndpointUnreachableError, match="no endpoint of the pool answers"):
        pool.complete(ASK)


def test_a_server_error_rests_an_endpoint_after_max_failures(fake_server: Callable[..., FakeOpenAIServer]) -> None:
    sick = fake_server([status(500, "overloaded")])
    healthy = fake_server([ok("fine")])
    pool = EndpointPool([sick.base_url, healthy.base_url], model="fake-model", cache=False, max_failures=2)
    texts = [pool.complete(ASK).text for _ in range(6)]
    assert texts == ["fine"] * 6
    assert len(sick.requests) == 2 and pool.status()[0]["up"] is False


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="non-empty list"):
        EndpointPool([])
    with pytest.raises(ConfigurationError, match="non-empty list"):
        EndpointPool("http://127.0.0.1:1/v1")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="model="):
        EndpointPool(["http://127.0.0.1:1/v1"])
    with pytest.raises(ConfigurationError, match="cooldown"):
        EndpointPool([MockLLM("a")], cooldown=-1)
    with pytest.raises(ConfigurationError, match="max_failures"):
        EndpointPool([MockLLM("a")], max_failures=0)
    with pytest.raises(ConfigurationError, match="base URL or an LLM"):
        EndpointPool([MockLLM("a"), 3])  # type: ignore[list-item]


def test_a_pool_enforces_json_schemas_only_if_every_endpoint_does() -> None:
    both = [MockLLM("a", json_schema=True), MockLLM("b", json_schema=True)]
    assert EndpointPool(both, model="m").supports_json_schema
    assert not EndpointPool([MockLLM("a", json_schema=True), MockLLM("b")], model="m").supports_json_schema
