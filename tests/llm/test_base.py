"""The LLM base class: validation, the shared call path, and backends that only write _complete."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm import LLM, Completion, Message, ResponseCache, Usage, check_messages, track_usage
from feedprop.llm.base import check_params

ASK = [{"role": "user", "content": "hi"}]


class Echo(LLM):
    """A backend that skips super().__init__(): the class defaults must carry it."""

    model = "echo"

    def __init__(self) -> None:
        self.closed = False

    def _complete(self, messages: list[Message], **params: Any) -> Completion:
        return Completion(messages[-1]["content"], model=self.model, usage=Usage(prompt_tokens=1, completion_tokens=1))

    def close(self) -> None:
        self.closed = True


def test_a_minimal_backend_gets_metering_and_a_limit() -> None:
    llm = Echo()
    with track_usage() as usage:
        assert llm.complete(ASK).text == "hi"
        assert asyncio.run(llm.acomplete(ASK)).text == "hi"  # default _acomplete runs in a thread
    assert usage.calls == 2 and usage.total_tokens == 4
    assert llm.limit.limit is None and llm.cache is None


def test_context_manager_closes() -> None:
    with Echo() as llm:
        pass
    assert llm.closed


def test_backend_must_return_a_completion() -> None:
    class Broken(LLM):
        def _complete(self, messages: list[Message], **params: Any) -> Completion:
            return "text"  # type: ignore[return-value]

    with pytest.raises(InvalidInputError, match="must return a Completion"):
        Broken().complete(ASK)


def test_a_backend_without_complete_says_what_to_implement() -> None:
    with pytest.raises(NotImplementedError, match="_complete"):
        LLM().complete(ASK)


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ("hi", "not a string"),
        ([], "non-empty list"),
        ([{"content": "x"}], "'role' and 'content'"),
        ([{"role": "robot", "content": "x"}], "must be one of"),
        ([{"role": "user", "content": 3}], "must be a str"),
    ],
)
def test_bad_messages_say_how_to_fix_them(messages: Any, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        check_messages(messages)
    with pytest.raises(InvalidInputError, match=fragment):
        Echo().complete(messages)


def test_parameters_must_be_json_like_and_single_reply() -> None:
    assert check_params({"temperature": 0.2, "stop": ["x"]}) == {"temperature": 0.2, "stop": ["x"]}
    with pytest.raises(ConfigurationError, match="cache_salt"):
        check_params({"n": 2})
    with pytest.raises(ConfigurationError, match="stream"):
        check_params({"stream": True})
    with pytest.raises(InvalidInputError, match=r"sampling parameter logit_bias.*JSON-like"):
        Echo().complete(ASK, logit_bias={"1": object()})
    with pytest.raises(InvalidInputError, match="keys must be strings"):
        Echo().complete(ASK, logit_bias={1: 5})
    with pytest.raises(InvalidInputError, match="cache must be True or False"):
        Echo().complete(ASK, cache="yes")


def test_constructor_options_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="cache must be"):
        LLM(cache="disk")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="RetryPolicy"):
        LLM(retry=3)  # type: ignore[arg-type]


def test_completion_round_trips_through_a_dict(tmp_path: Any) -> None:
    completion = Completion("t", model="m", usage=Usage(3, 4, 0.5), finish_reason="length")
    assert Completion.from_dict(completion.to_dict()) == completion
    assert completion.latency == 0.5 and not completion.cached
    store = ResponseCache(tmp_path / "c.sqlite")
    store.put("k", completion.to_dict())
    assert Completion.from_dict(store.get("k") or {}) == completion
