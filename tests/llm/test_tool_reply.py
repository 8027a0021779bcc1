"""Tool replies constrained to one call or a final answer, and calls written as text."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from feedprop.agent import run_agent
from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm import Completion, EndpointPool, Message, OpenAICompatible, ResponseCache, RetryPolicy, ToolCall
from feedprop.llm.spec import from_spec, spec_of
from feedprop.llm.tool_calls import find_tool_calls
from feedprop.llm.tool_reply import ANSWER_TOOL, ToolReplyFormat
from feedprop.tool import Tool

from .fakes import FakeOpenAIServer, calls, ok

LOOKUP: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "The price of one item.",
        "parameters": {"type": "object", "properties": {"item": {"type": "string"}}, "required": ["item"]},
    },
}
CALC: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "calc",
        "description": "Arithmetic.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}
ASK: list[Message] = [{"role": "user", "content": "What do two maps cost?"}]
Factory = Callable[..., FakeOpenAIServer]


def reply_format(**params: Any) -> ToolReplyFormat:
    found = ToolReplyFormat.for_request({"tools": [LOOKUP, CALC], **params})
    assert found is not None
    return found


# -- calls written as text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "lookup", "arguments": {"item": "map"}}\n</tool_call>',  # the template's own form
        '<response>{"name": "lookup", "arguments": {"item": "map"}}</response>',  # seen from the 1.5B model
        '```json\n{\n  "name": "lookup",\n  "arguments": {\n    "item": "map"\n  }\n}\n```',  # seen too
        '{{"name": "lookup", "arguments": {"item": "map"}}}',  # the template's example, braces doubled
        '{"name": "lookup", "arguments": "{\\"item\\": \\"map\\"}"}',  # arguments as JSON text
        '{"tool_call": {"name": "lookup", "arguments": {"item": "map"}}}',  # wrapped in another object
    ],
)
def test_a_call_is_read_in_every_wrapper_a_model_writes(text: str) -> None:
    assert find_tool_calls(text, ["lookup"]) == ("", [("lookup", '{"item": "map"}')])


def test_text_keeps_the_prose_before_the_first_call_and_finds_every_call() -> None:
    text = (
        "I will look both up.\n<tool_call>\n"
        '{"name": "lookup", "arguments": {"item": "map"}}\n</tool_call>\n<tool_call>\n'
        '{"name": "lookup", "arguments": {"item": "lantern"}}\n</tool_call>'
    )
    prose, found = find_tool_calls(text, ["lookup"])
    assert prose == "I will look both up."
    assert found == [("lookup", '{"item": "map"}'), ("lookup", '{"item": "lantern"}')]


@pytest.mark.parametrize(
    "text",
    [
        "A map costs 15 skell.",
        '{"name": "weather", "arguments": {}}',  # not an offered tool
        json.dumps(LOOKUP),  # an echoed tool schema: a name, but parameters, not arguments
        '{"name": "lookup", "arguments": ["map"]}',  # arguments that are no object
        '{"name": "lookup", "arguments": {"item": "ma',  # cut short
        "{" * 50,
    ],
)
def test_text_without_a_call_stays_text(text: str) -> None:
    assert find_tool_calls(text, ["lookup"]) == (text, [])


# -- the format of a request -------------------------------------------------------------------------


def test_a_request_offers_the_answer_tool_and_a_schema_of_one_call() -> None:
    sent = reply_format().request({"tools": [LOOKUP, CALC], "temperature": 0, "tool_choice": "auto"})
    assert [t["function"]["name"] for t in sent["tools"]] == ["lookup", "calc", ANSWER_TOOL]
    assert sent["temperature"] == 0 and "tool_choice" not in sent
    schema = sent["response_format"]["json_schema"]["schema"]
    assert [alt["properties"]["name"] for alt in schema["anyOf"]] == [
        {"const": "lookup"},
        {"const": "calc"},
        {"const": ANSWER_TOOL},
    ]
    assert schema["anyOf"][0]["properties"]["arguments"] == LOOKUP["function"]["parameters"]


def test_the_schema_admits_exactly_the_calls_of_offered_tools_and_the_answer() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = reply_format().schema()
    good = [
        {"name": "lookup", "arguments": {"item": "map"}},
        {"name": "calc", "arguments": {"expression": "2 * 15"}},
        {"name": ANSWER_TOOL, "arguments": {"answer": "30"}},
    ]
    bad = [
        {"name": "weather", "arguments": {}},
        {"name": "lookup", "arguments": {}},  # a required argument missing
        {"name": "lookup", "arguments": {"item": 3}},  # of the wrong type
        {"name": "lookup", "arguments": {"item": "map"}, "why": "..."},
        {"answer": "30"},
        "30",
    ]
    assert all(jsonschema.Draft202012Validator(schema).is_valid(v) for v in good)
    assert not any(jsonschema.Draft202012Validator(schema).is_valid(v) for v in bad)


def test_tool_choice_shapes_the_schema() -> None:
    required = reply_format(tool_choice="required")
    assert required.answer is None and required.callable == ("lookup", "calc")
    named = reply_format(tool_choice={"type": "function", "function": {"name": "calc"}})
    assert named.answer is None and [alt["properties"]["name"] for alt in named.schema()["anyOf"]] == [
        {"const": "calc"}
    ]
    assert ToolReplyFormat.for_request({"tools": [LOOKUP], "tool_choice": "none"}) is None
    assert ToolReplyFormat.for_request({"temperature": 0}) is None
    with pytest.raises(InvalidInputError, match=r"naming an offered tool \(lookup, calc\)"):
        reply_format(tool_choice={"type": "function", "function": {"name": "weather"}})


def test_the_answer_tool_takes_a_name_no_offered_tool_has() -> None:
    taken = {"type": "function", "function": {"name": ANSWER_TOOL, "parameters": {"type": "object"}}}
    found = ToolReplyFormat.for_request({"tools": [taken]})
    assert found is not None and found.answer == f"{ANSWER_TOOL}_2"
    reply = found.read(Completion(f'{{"name": "{ANSWER_TOOL}", "arguments": {{}}}}'), ASK)
    assert reply.tool_calls == (ToolCall("call_0", ANSWER_TOOL, "{}"),)  # the user's own tool


def test_a_request_with_its_own_response_format_is_sent_as_it_is() -> None:
    params = {"tools": [LOOKUP], "response_format": {"type": "json_object"}}
    found = ToolReplyFormat.for_request(params)
    assert found is not None and not found.constrained and found.request(params) == params
    text = '{"name": "lookup", "arguments": {"item": "map"}}'
    assert found.read(Completion(text), ASK).tool_calls == (ToolCall("call_0", "lookup", '{"item": "map"}'),)
    assert found.read(Completion('{"city": "Rome"}'), ASK).text == '{"city": "Rome"}'


# -- reading a reply -----------------------------------------------------------------------------------


def test_a_call_gets_an_id_counting_the_calls_before_it() -> None:
    earlier = ToolCall("call_0", "lookup", '{"item": "map"}')
    transcript: list[Message] = [
        *ASK,
        {"role": "assistant", "content": "", "tool_calls": [earlier.to_message()]},
        {"role": "tool", "tool_call_id": "call_0", "content": "15"},
    ]
    reply = reply_format().read(Completion('{"name": "calc", "arguments": {"expression": "2 * 15"}}'), transcript)
    assert reply.tool_calls == (ToolCall("call_1", "calc", '{"expression": "2 * 15"}'),)
    assert reply.finish_reason == "tool_calls" and reply.text == ""


def test_an_answer_becomes_text() -> None:
    reply = reply_format().read(Completion(f'{{"name": "{ANSWER_TOOL}", "arguments": {{"answer": "30 skell"}}}}'), ASK)
    assert (reply.text, reply.tool_calls, reply.finish_reason) == ("30 skell", (), "stop")


def test_calls_the_server_read_keep_their_ids_and_an_answer_call_is_text() -> None:
    server_read = Completion("", tool_calls=(ToolCall("x7", "lookup", '{"item": "map"}'),))
    assert reply_format().read(server_read, ASK).tool_calls == server_read.tool_calls
    answer = Completion("", tool_calls=(ToolCall("x8", ANSWER_TOOL, '{"answer": "30"}'),))
    assert reply_format().read(answer, ASK).text == "30"


def test_a_reply_cut_short_keeps_what_it_said() -> None:
    cut = Completion(f'{{"name": "{ANSWER_TOOL}", "arguments": {{"answer": "Two maps cost 3', finish_reason="length")
    assert reply_format().read(cut, ASK).text == "Two maps cost 3"
    half_call = Completion('{"name": "calc", "arguments": {"expression": "2 *', finish_reason="length")
    assert reply_format().read(half_call, ASK) == half_call


# -- through an OpenAI-compatible client ------------------------------------------------------------------


def client(server: FakeOpenAIServer, **kwargs: Any) -> OpenAICompatible:
    kwargs.setdefault("cache", False)
    kwargs.setdefault("json_schema", True)
    kwargs.setdefault("constrain_tools", True)
    return OpenAICompatible(server.base_url, model="fake-model", retry=RetryPolicy(max_retries=0), **kwargs)


def test_constrain_tools_needs_a_server_that_enforces_schemas(fake_server: Factory) -> None:
    with pytest.raises(ConfigurationError, match="json_schema=True too"):
        client(fake_server(), json_schema=False)
    with pytest.raises(ConfigurationError, match="constrain_tools must be True or False"):
        client(fake_server(), constrain_tools="yes")


def test_a_constrained_client_reads_calls_sync_and_async(fake_server: Factory) -> None:
    fenced = '```json\n{"name": "lookup", "arguments": {"item": "map"}}\n```'
    server = fake_server([ok(fenced)])
    llm = client(server)
    assert llm.complete(ASK, tools=[LOOKUP]).tool_calls == (ToolCall("call_0", "lookup", '{"item": "map"}'),)

    async def main() -> Completion:
        return await llm.acomplete(ASK, tools=[LOOKUP], temperature=0)

    assert asyncio.run(main()).tool_calls[0].name == "lookup"
    assert all(r["response_format"]["type"] == "json_schema" for r in server.requests)
    plain = llm.complete(ASK)  # no tools: nothing changes
    assert plain.text == fenced and "response_format" not in server.requests[-1]


def test_an_unconstrained_client_sends_tools_as_they_are(fake_server: Factory) -> None:
    server = fake_server([ok('{"name": "lookup", "arguments": {}}')])
    llm = client(server, constrain_tools=False)
    reply = llm.complete(ASK, tools=[LOOKUP])
    assert reply.tool_calls == () and server.requests[0]["tools"] == [LOOKUP]


def test_constrained_replies_are_cached_apart_from_unconstrained_ones(fake_server: Factory, tmp_path: Any) -> None:
    store = ResponseCache(tmp_path / "cache.sqlite")
    server = fake_server([ok("plain text"), ok('{"name": "lookup", "arguments": {"item": "map"}}')])
    unconstrained = client(server, cache=store, constrain_tools=False)
    constrained = client(server, cache=store)
    assert unconstrained.complete(ASK, tools=[LOOKUP]).text == "plain text"
    assert constrained.complete(ASK, tools=[LOOKUP]).tool_calls[0].name == "lookup"
    assert constrained.complete(ASK, tools=[LOOKUP]).cached and len(server.requests) == 2
    again = unconstrained.complete(ASK, tools=[LOOKUP])
    assert again.cached and again.text == "plain text" and len(server.requests) == 2


def test_specs_and_pools_carry_the_option(fake_server: Factory) -> None:
    server = fake_server([ok('{"name": "lookup", "arguments": {"item": "map"}}')])
    spec = spec_of(client(server))
    assert spec["constrain_tools"] is True and from_spec(spec).constrain_tools
    pool = EndpointPool([server.base_url], model="fake-model", json_schema=True, constrain_tools=True, cache=False)
    assert pool.constrain_tools and pool.complete(ASK, tools=[LOOKUP]).tool_calls[0].name == "lookup"
    assert not EndpointPool([server.base_url], model="fake-model").constrain_tools


def test_a_server_reply_with_native_calls_still_works(fake_server: Factory) -> None:
    native = [{"id": "n1", "type": "function", "function": {"name": "lookup", "arguments": '{"item": "map"}'}}]
    llm = client(fake_server([calls(native)]))
    assert llm.complete(ASK, tools=[LOOKUP]).tool_calls == (ToolCall("n1", "lookup", '{"item": "map"}'),)


def test_an_agent_on_a_constrained_client_calls_tools_until_it_answers(fake_server: Factory) -> None:
    # The replies of a model that fences its calls (as the embedded 1.5B does) in a three-turn conversation.
    def lookup(item: str) -> float:
        return {"map": 15.0}[item]

    def calc(expression: str) -> float:
        return 2 * 15.0 if expression == "2 * 15.0" else -1.0

    server = fake_server(
        [
            ok('```json\n{"name": "lookup", "arguments": {"item": "map"}}\n```'),
            ok('{"name": "calc", "arguments": {"expression": "2 * 15.0"}}'),
            ok(f'{{"name": "{ANSWER_TOOL}", "arguments": {{"answer": "Two maps cost 30.0 skell."}}}}'),
        ]
    )
    tools = [Tool(lookup, "The price of one item."), Tool(calc, "Arithmetic.")]
    answer = run_agent("Answer with the tools.", ASK[0]["content"], tools=tools, llm=client(server), temperature=0)
    assert answer.data == "Two maps cost 30.0 skell." and len(server.requests) == 3
    last = server.requests[-1]["messages"]
    assert [m["role"] for m in last] == ["system", "user", "assistant", "tool", "assistant", "tool"]
    assert [m["content"] for m in last if m["role"] == "tool"] == ["15.0", "30.0"]
    assert [m["tool_calls"][0]["id"] for m in last if m["role"] == "assistant"] == ["call_0", "call_1"]
