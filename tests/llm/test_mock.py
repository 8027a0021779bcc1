"""MockLLM: scripted replies, recorded calls, deterministic token counts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm import Completion, MockLLM, Usage, estimate_tokens

ASK = [{"role": "user", "content": "ping"}]


def test_handler_sees_messages_and_sampling_parameters() -> None:
    seen: list[tuple[Any, dict[str, Any]]] = []

    def handler(messages: Any, **params: Any) -> str:
        seen.append((messages, params))
        return "pong"

    llm = MockLLM(handler)
    assert llm.complete(ASK, temperature=0.3, max_tokens=9).text == "pong"
    assert seen == [(ASK, {"temperature": 0.3, "max_tokens": 9})]
    assert llm.calls[0].messages == ASK and llm.calls[0].params == {"temperature": 0.3, "max_tokens": 9}


def test_canned_replies_in_order_then_a_clear_error() -> None:
    llm = MockLLM(["one", "two"])
    assert [llm.complete(ASK).text for _ in range(2)] == ["one", "two"]
    with pytest.raises(ConfigurationError, match=r"ran out of canned replies.*cycle=True"):
        llm.complete(ASK)


def test_cycled_replies_and_a_single_string() -> None:
    cycled = MockLLM(["a", "b"], cycle=True)
    assert [cycled.complete(ASK).text for _ in range(5)] == ["a", "b", "a", "b", "a"]
    always = MockLLM("same")
    assert {always.complete(ASK).text for _ in range(3)} == {"same"}


def test_a_completion_reply_keeps_its_usage() -> None:
    reply = Completion("custom", usage=Usage(prompt_tokens=100, completion_tokens=50), finish_reason="length")
    out = MockLLM([reply]).complete(ASK)
    assert (out.text, out.model, out.finish_reason) == ("custom", "mock", "length")
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (100, 50)


def test_token_estimates_are_deterministic() -> None:
    out = MockLLM("x" * 10).complete([{"role": "system", "content": "s" * 8}, {"role": "user", "content": "u"}])
    assert out.usage.prompt_tokens == (2 + 4) + (1 + 4)
    assert out.usage.completion_tokens == estimate_tokens("x" * 10) == 3


def test_latency_is_slept_sync_and_async() -> None:
    llm = MockLLM("slow", latency=0.05)
    start = time.perf_counter()
    llm.complete(ASK)
    assert time.perf_counter() - start >= 0.05

    async def main() -> float:
        start = time.perf_counter()
        await asyncio.gather(llm.acomplete(ASK), llm.acomplete(ASK), llm.acomplete(ASK))
        return time.perf_counter() - start

    assert 0.05 <= asyncio.run(main()) < 0.15 * 3  # concurrent, not serial


def test_model_name_is_settable() -> None:
    assert MockLLM("x", model="tiny").complete(ASK).model == "tiny"


@pytest.mark.parametrize("bad", [[], [1, 2], 42, None])
def test_bad_handlers_are_rejected(bad: Any) -> None:
    with pytest.raises((ConfigurationError, InvalidInputError)):
        MockLLM(bad)


def test_handler_returning_the_wrong_type() -> None:
    with pytest.raises(InvalidInputError, match="str or Completion"):
        MockLLM(lambda messages, **params: 42).complete(ASK)


def test_negative_latency_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="latency"):
        MockLLM("x", latency=-1)
