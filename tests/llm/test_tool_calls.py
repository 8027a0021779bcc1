"""Tool calls through the call path: checks, the cache, replays and the mock."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm import Completion, MockLLM, RecordedCall, ResponseCache, ToolCall, check_messages, replay
from feedprop.llm.cache import cache_key, canonical_json
from feedprop.llm.tool_calls import check_tools

LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "The price of one item.",
        "parameters": {"type": "object", "properties": {"item": {"type": "string"}}, "required": ["item"]},
    },
}
CALL = ToolCall("c1", "lookup", '{"item": "map"}')
ASK = [{"role": "user", "content": "What does a map cost?"}]
TRANSCRIPT = [
    *ASK,
    {"role": "assistant", "content": "", "tool_calls": [CALL.to_message()]},
    {"role": "tool", "tool_call_id": "c1", "content": "15"},
]


def calling(messages: list[dict[str, Any]], **params: Any) -> Completion | str:
    if messages[-1]["role"] == "tool":
        return f"It costs {messages[-1]['content']}."
    return Completion("", tool_calls=(CALL,))


def test_a_tool_call_round_trips_through_its_forms() -> None:
    assert ToolCall.from_dict(CALL.to_dict()) == CALL
    assert ToolCall.from_message(CALL.to_message()) == CALL
    assert CALL.to_message() == {
        "id": "c1",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"item": "map"}'},
    }
    with pytest.raises(InvalidInputError, match="name must name the tool"):
        ToolCall("c1", "")
    with pytest.raises(InvalidInputError, match="arguments must be a str"):
        ToolCall("c1", "lookup", {"item": "map"})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"'function': \{'name'"):
        ToolCall.from_message({"id": "c1", "name": "lookup"})


@pytest.mark.parametrize(
    ("tools", "fragment"),
    [
        ([], "non-empty list"),
        ("lookup", "non-empty list"),
        ([{"name": "lookup"}], r"tools\[0\] must be"),
        ([{"type": "function", "function": {"description": "x"}}], r"\['name'\] must be a non-empty str"),
        ([LOOKUP, LOOKUP], "two tools are named 'lookup'"),
        ([{"type": "function", "function": {"name": "f", "parameters": "none"}}], "must be a JSON schema"),
    ],
)
def test_malformed_tools_are_refused_before_any_call(tools: Any, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        check_tools(tools)
    llm = MockLLM("never")
    with pytest.raises(InvalidInputError, match=fragment):
        llm.complete(ASK, tools=tools)
    assert llm.calls == []


def test_transcripts_keep_tool_calls_and_ids_and_refuse_malformed_ones() -> None:
    checked = check_messages(TRANSCRIPT)
    assert checked[1]["tool_calls"] == [CALL.to_message()] and checked[2]["tool_call_id"] == "c1"
    with pytest.raises(InvalidInputError, match="without a 'tool_call_id'"):
        check_messages([*ASK, {"role": "tool", "content": "15"}])
    with pytest.raises(InvalidInputError, match="only assistant messages make calls"):
        check_messages([{"role": "user", "content": "x", "tool_calls": [CALL.to_message()]}])
    with pytest.raises(InvalidInputError, match=r"messages\[1\]\['tool_calls'\]\[0\]"):
        check_messages([*ASK, {"role": "assistant", "content": "", "tool_calls": [{"id": "c1"}]}])
    with pytest.raises(InvalidInputError, match="non-empty list of tool calls"):
        check_messages([*ASK, {"role": "assistant", "content": "", "tool_calls": []}])


def test_the_mock_answers_with_tool_calls_and_reads_the_results() -> None:
    llm = MockLLM(calling)
    first = llm.complete(ASK, tools=[LOOKUP])
    assert first.tool_calls == (CALL,) and first.finish_reason == "tool_calls" and first.text == ""
    assert llm.calls[0].params["tools"] == [LOOKUP]
    assert llm.complete(TRANSCRIPT, tools=[LOOKUP]).text == "It costs 15."
    assert llm.calls[1].messages[1]["tool_calls"] == [CALL.to_message()]


def test_a_backend_without_tools_says_so_before_calling() -> None:
    llm = MockLLM("never", tools=False)
    with pytest.raises(ConfigurationError, match="supports_tools is False"):
        llm.complete(ASK, tools=[LOOKUP])
    assert llm.calls == [] and llm.complete(ASK).text == "never"
    with pytest.raises(ConfigurationError, match="tools must be True or False"):
        MockLLM("x", tools="yes")  # type: ignore[arg-type]


def test_plain_messages_keep_their_cache_keys_and_tool_keys_change_them() -> None:
    old_layout = {"v": 1, "model": "m", "messages": ASK, "params": {}, "salt": None}
    assert cache_key("m", ASK, {}) == hashlib.sha256(canonical_json(old_layout).encode()).hexdigest()
    base = cache_key("m", TRANSCRIPT, {})
    other_id = [*TRANSCRIPT[:2], {**TRANSCRIPT[2], "tool_call_id": "c2"}]
    other_call = [
        ASK[0],
        {**TRANSCRIPT[1], "tool_calls": [ToolCall("c1", "lookup", '{"item": "lantern"}').to_message()]},
    ]
    assert len({base, cache_key("m", other_id, {}), cache_key("m", [*other_call, TRANSCRIPT[2]], {})}) == 3
    described = {**LOOKUP, "function": {**LOOKUP["function"], "description": "Another description."}}
    assert cache_key("m", ASK, {"tools": [LOOKUP]}) != cache_key("m", ASK, {"tools": [described]})


def test_cached_replies_keep_their_tool_calls(tmp_path: Path) -> None:
    llm = MockLLM(calling, cache=ResponseCache(tmp_path / "cache.sqlite"))
    first = llm.complete(ASK, tools=[LOOKUP])
    again = llm.complete(ASK, tools=[LOOKUP])
    assert again.cached and again.tool_calls == first.tool_calls == (CALL,) and len(llm.calls) == 1


def test_replayed_calls_answer_with_their_tool_calls() -> None:
    record = RecordedCall.from_request("mock", ASK, {"tools": [LOOKUP]}, "", (CALL,))
    assert RecordedCall.from_dict(record.to_dict()) == record
    assert record.to_dict()["tool_calls"] == [CALL.to_dict()]
    transcript_record = RecordedCall("mock", TRANSCRIPT, {}, "It costs 15.")
    assert RecordedCall.from_dict(transcript_record.to_dict()).key == transcript_record.key
    llm = MockLLM("live")
    with replay([record]):
        reply = llm.complete(ASK, tools=[LOOKUP])
    assert reply.tool_calls == (CALL,) and reply.finish_reason == "tool_calls" and llm.calls == []
    with pytest.raises(InvalidInputError, match="must be ToolCall objects"):
        RecordedCall("mock", ASK, {}, "", tool_calls=[CALL.to_dict()])  # type: ignore[list-item]
