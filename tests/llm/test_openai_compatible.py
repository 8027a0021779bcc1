"""OpenAICompatible against a real HTTP server on a loopback port that injects faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from feedprop.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContextLengthExceededError,
    EndpointUnreachableError,
    RateLimitError,
    RetriesExhaustedError,
    TransientLLMError,
)
from feedprop.llm import OpenAICompatible, RetryPolicy, ToolCall, track_usage

from .fakes import FakeOpenAIServer, calls, drop, free_port, ok, status, timeout

ASK = [{"role": "user", "content": "hello"}]
FAST = RetryPolicy(max_retries=3, initial_delay=0.01, jitter=0)

Factory = Callable[..., FakeOpenAIServer]


def client(server: FakeOpenAIServer, **kwargs: object) -> OpenAICompatible:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("cache", False)
    return OpenAICompatible(server.base_url, model="fake-model", api_key="k", **kwargs)  # type: ignore[arg-type]


def test_a_plain_call_returns_text_usage_and_model(fake_server: Factory) -> None:
    server = fake_server([ok("Paris")])
    llm = client(server)
    with track_usage() as usage:
        reply = llm.complete(ASK, temperature=0, max_tokens=5, stop=["\n"], seed=3)
    assert reply.text == "Paris" and reply.model == "fake-model" and reply.finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (7, 3)
    assert reply.latency > 0
    assert (usage.calls, usage.total_tokens) == (1, 10)
    sent = server.requests[0]
    assert sent["messages"] == ASK and sent["model"] == "fake-model"
    assert (sent["temperature"], sent["max_tokens"], sent["stop"], sent["seed"]) == (0, 5, ["\n"], 3)


def test_json_mode_and_unknown_sampling_parameters_pass_through(fake_server: Factory) -> None:
    server = fake_server([ok('{"a": 1}')])
    client(server).complete(ASK, response_format={"type": "json_object"}, top_k=20, repeat_penalty=1.1)
    sent = server.requests[0]
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["top_k"] == 20 and sent["repeat_penalty"] == 1.1


def test_server_errors_are_retried_until_success(fake_server: Factory) -> None:
    server = fake_server([status(500), status(502), ok("fine")])
    assert client(server).complete(ASK).text == "fine"
    assert len(server.requests) == 3


def test_persistent_500_exhausts_retries(fake_server: Factory) -> None:
    server = fake_server([status(500, "model crashed")])
    with pytest.raises(RetriesExhaustedError, match="model crashed") as info:
        client(server).complete(ASK)
    assert isinstance(info.value.last_error, TransientLLMError)
    assert len(server.requests) == 4  # one try and three retries
    assert "endpoint is healthy" in str(info.value)


def test_429_honours_retry_after(fake_server: Factory) -> None:
    server = fake_server([status(429, "slow down", {"Retry-After": "1"}), ok("after the wait")])
    llm = client(server, retry=RetryPolicy(max_retries=2, initial_delay=0, jitter=0))
    start = time.perf_counter()
    assert llm.complete(ASK).text == "after the wait"
    assert time.perf_counter() - start >= 1.0


def test_429_retry_after_ms(fake_server: Factory) -> None:
    server = fake_server([status(429, "slow down", {"retry-after-ms": "300"}), ok("done")])
    llm = client(server, retry=RetryPolicy(max_retries=1, initial_delay=0, jitter=0))
    start = time.perf_counter()
    assert llm.complete(ASK).text == "done"
    assert time.perf_counter() - start >= 0.3


def test_persistent_429_ends_as_retries_exhausted_with_the_rate_limit_inside(fake_server: Factory) -> None:
    server = fake_server([status(429, "quota", {"Retry-After": "0"})])
    with pytest.raises(RetriesExhaustedError) as info:
        client(server, retry=RetryPolicy(max_retries=1, initial_delay=0)).complete(ASK)
    assert isinstance(info.value.last_error, RateLimitError)
    assert info.value.last_error.retry_after == 0


def test_timeouts_are_retried(fake_server: Factory) -> None:
    server = fake_server([timeout(1.0), ok("quick")])
    llm = client(server, timeout=0.3)
    assert llm.complete(ASK).text == "quick"
    assert len(server.requests) == 2


def test_timeouts_every_time_exhaust_retries_with_advice(fake_server: Factory) -> None:
    server = fake_server([timeout(1.0)])
    with pytest.raises(RetriesExhaustedError, match=r"within 0\.2s"):
        client(server, timeout=0.2, retry=RetryPolicy(max_retries=1, initial_delay=0)).complete(ASK)


def test_dropped_connections_are_retried(fake_server: Factory) -> None:
    server = fake_server([drop(), drop(), ok("reconnected")])
    assert client(server).complete(ASK).text == "reconnected"
    assert len(server.requests) == 3


def test_401_is_an_authentication_error_at_once(fake_server: Factory) -> None:
    server = fake_server([status(401, "invalid api key")])
    with pytest.raises(AuthenticationError, match="FEEDPROP_API_KEY"):
        client(server).complete(ASK)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "message",
    [
        "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens",
        "request (9030 tokens) exceeds the available context size (2048 tokens), try increasing it",
    ],
)
def test_400_about_context_length(fake_server: Factory, message: str) -> None:
    server = fake_server([status(400, message)])
    with pytest.raises(ContextLengthExceededError, match="shorten the prompt"):
        client(server).complete(ASK)
    assert len(server.requests) == 1


@pytest.mark.parametrize("code", [400, 404, 422])
def test_other_client_errors_are_bad_requests_not_retried(fake_server: Factory, code: int) -> None:
    server = fake_server([status(code, "nope")])
    with pytest.raises(BadRequestError) as info:
        client(server).complete(ASK)
    assert not isinstance(info.value, ContextLengthExceededError)
    assert len(server.requests) == 1
    assert f"HTTP {code}: nope" in str(info.value)


def test_nothing_listening_is_endpoint_unreachable() -> None:
    llm = OpenAICompatible(f"http://127.0.0.1:{free_port()}/v1", model="m", retry=FAST, cache=False)
    with track_usage() as usage, pytest.raises(EndpointUnreachableError, match="server is running"):
        llm.complete(ASK)
    assert usage.calls == 1 and usage.errors == 1


def test_model_name_is_asked_from_the_server(fake_server: Factory) -> None:
    server = fake_server(models=("only-one",))
    assert OpenAICompatible(server.base_url).model == "only-one"
    several = fake_server(models=("a", "b"))
    with pytest.raises(ConfigurationError, match="choose one with model="):
        OpenAICompatible(several.base_url)
    with pytest.raises(EndpointUnreachableError, match="pass model="):
        OpenAICompatible(f"http://127.0.0.1:{free_port()}/v1")


def test_async_calls_work_and_share_the_fault_handling(fake_server: Factory) -> None:
    server = fake_server([status(503), ok("async ok")])
    llm = client(server)

    async def main() -> str:
        return (await llm.acomplete(ASK)).text

    assert asyncio.run(main()) == "async ok"
    assert asyncio.run(main()) == "async ok"  # a second event loop gets its own connection pool
    assert len(server.requests) == 3


def test_the_default_cache_is_on_for_endpoints(fake_server: Factory) -> None:
    server = fake_server([ok("once")])
    llm = OpenAICompatible(server.base_url, model="fake-model", retry=FAST)
    with track_usage() as usage:
        assert llm.complete(ASK).text == llm.complete(ASK).text == "once"
    assert len(server.requests) == 1 and usage.cache_hits == 1


def test_default_concurrency_is_settable() -> None:
    assert OpenAICompatible("http://127.0.0.1:1/v1", model="m").limit.limit == OpenAICompatible.default_max_concurrency
    assert OpenAICompatible("http://127.0.0.1:1/v1", model="m", max_concurrency=None).limit.limit is None


def test_bad_arguments() -> None:
    with pytest.raises(ConfigurationError, match="http"):
        OpenAICompatible("localhost:8080", model="m")
    with pytest.raises(ConfigurationError, match="timeout"):
        OpenAICompatible("http://127.0.0.1:1/v1", model="m", timeout=0)
    llm = OpenAICompatible("http://127.0.0.1:1/v1", model="m")
    with pytest.raises(ConfigurationError, match="cache_salt"):
        llm.complete(ASK, n=3)


def test_json_schema_support_is_declared_and_the_schema_passes_through(fake_server: Factory) -> None:
    assert not OpenAICompatible("http://127.0.0.1:1/v1", model="m").supports_json_schema
    server = fake_server([ok('{"a": 1}')])
    llm = client(server, cache=False, json_schema=True)
    assert llm.supports_json_schema
    fmt = {"type": "json_schema", "json_schema": {"name": "reply", "schema": {"type": "object"}}}
    llm.complete(ASK, response_format=fmt)
    assert server.requests[0]["response_format"] == fmt
    with pytest.raises(ConfigurationError, match="json_schema"):
        OpenAICompatible("http://127.0.0.1:1/v1", model="m", json_schema="yes")  # type: ignore[arg-type]


LOOKUP = {
    "type": "function",
    "function": {"name": "lookup", "description": "The price of one item.", "parameters": {"type": "object"}},
}


def test_tools_go_out_and_tool_calls_come_back(fake_server: Factory) -> None:
    wire = [
        {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": '{"item": "map"}'}},
        {"type": "function", "function": {"name": "lookup", "arguments": {"item": "lantern"}}},  # no id, an object
    ]
    server = fake_server([calls(wire), ok("15 and 12")])
    llm = client(server)
    reply = llm.complete(ASK, tools=[LOOKUP], tool_choice="auto")
    assert reply.tool_calls == (
        ToolCall("call_a", "lookup", '{"item": "map"}'),
        ToolCall("call_1", "lookup", '{"item": "lantern"}'),
    )
    assert reply.finish_reason == "tool_calls" and reply.text == ""
    assert server.requests[0]["tools"] == [LOOKUP] and server.requests[0]["tool_choice"] == "auto"
    transcript = [
        *ASK,
        {"role": "assistant", "content": "", "tool_calls": [c.to_message() for c in reply.tool_calls]},
        {"role": "tool", "tool_call_id": "call_a", "content": "15"},
        {"role": "tool", "tool_call_id": "call_1", "content": "12"},
    ]
    final = llm.complete(transcript, tools=[LOOKUP])
    assert final.text == "15 and 12" and final.tool_calls == ()
    assert server.requests[1]["messages"] == transcript


def test_a_malformed_tool_call_is_retried_as_a_garbled_reply(fake_server: Factory) -> None:
    nameless = [{"id": "c", "type": "function", "function": {"arguments": "{}"}}]
    good = [{"id": "c", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]
    server = fake_server([calls(nameless), calls(good)])
    reply = client(server).complete(ASK, tools=[LOOKUP])
    assert reply.tool_calls == (ToolCall("c", "lookup", "{}"),) and len(server.requests) == 2
