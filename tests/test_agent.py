"""run_agent: turns, tool calls and results as nodes; feedback on the answer reaches the prompts and descriptions."""

from __future__ import annotations

import asyncio
import json
import warnings
from typing import Any

import pytest

from feedprop import ops
from feedprop.agent import TOOL_CALL, TOOL_RESULT, arun_agent, call_tools, run_agent
from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm import Completion, MockLLM, ToolCall, replay
from feedprop.module import Module
from feedprop.node import Feedback, MessageNode, Node, Parameter
from feedprop.propagate import toposort
from feedprop.tool import Tool
from feedprop.training.evaluation import Outcome
from feedprop.training.screening import recorded_calls

PRICES = {"lantern": 12.0, "map": 15.0}
TASK = "What do 3 lanterns and 2 maps cost?"


def lookup(item: str) -> float:
    """The price of one item."""
    return PRICES[item]


def calc(expression: str) -> float:
    """Arithmetic on numbers."""
    allowed = set("0123456789.+-*/() ")
    if not set(expression) <= allowed:
        raise ValueError(f"calc understands numbers and + - * / only, not {expression!r}")
    return float(eval(expression))  # only digits and operators reach here


def weather(place: str) -> str:
    """Today's weather."""
    return "rain"


def calls(*pairs: tuple[str, dict[str, Any]]) -> Completion:
    return Completion("", tool_calls=tuple(ToolCall(f"c{i}", name, json.dumps(a)) for i, (name, a) in enumerate(pairs)))


def shopper(messages: list[dict[str, Any]], **params: Any) -> Completion | str:
    """Two lookups in one turn, then one calc, then the answer read from the calc result."""
    results = [m["content"] for m in messages if m["role"] == "tool"]
    if not results:
        return calls(("lookup", {"item": "lantern"}), ("lookup", {"item": "map"}))
    if len(results) == 2:
        return calls(("calc", {"expression": f"3 * {results[0]} + 2 * {results[1]}"}))
    return f"They cost {results[-1]} skell."


def make_tools() -> list[Tool]:
    return [Tool(lookup), Tool(calc), Tool(weather)]


def test_each_turn_call_and_result_is_a_node() -> None:
    system = Parameter("Use the tools to answer.", name="system")
    tools = make_tools()
    llm = MockLLM(shopper)
    answer = run_agent(system, TASK, tools=tools, llm=llm, temperature=0)
    assert answer.data == "They cost 66.0 skell." and answer.op is ops.LLM_CALL
    assert len(llm.calls) == 3
    graph = toposort(answer)
    turns = [n for n in graph if isinstance(n, MessageNode) and n.op is ops.LLM_CALL]
    tool_calls = [n for n in graph if isinstance(n, MessageNode) and n.op is TOOL_CALL]
    results = [n for n in graph if isinstance(n, MessageNode) and n.op is TOOL_RESULT]
    assert len(turns) == 3 and turns[-1] is answer
    assert [c.data for c in tool_calls] == [
        {"name": "lookup", "arguments": {"item": "lantern"}},
        {"name": "lookup", "arguments": {"item": "map"}},
        {"name": "calc", "arguments": {"expression": "3 * 12.0 + 2 * 15.0"}},
    ]
    assert [r.data for r in results] == ["12.0", "15.0", "66.0"]
    assert [r.parents for r in results] == [(c,) for c in tool_calls]
    assert [c.parents for c in tool_calls] == [(turns[0],), (turns[0],), (turns[1],)]
    names = [name for name, _ in answer.inputs]
    assert names == ["system", "user", "tools[0]", "tools[1]", "tools[2]", "turn[0]", "result[0]", "result[1]",
                     "turn[1]", "result[2]"]  # fmt: skip
    # what the model was sent: the transcript with the calls and their results, and every tool each turn
    last = llm.calls[-1]
    assert [m["role"] for m in last.messages] == ["system", "user", "assistant", "tool", "tool", "assistant", "tool"]
    assert [m.get("tool_call_id") for m in last.messages if m["role"] == "tool"] == ["c0", "c1", "c0"]
    assert last.messages[2]["tool_calls"][1]["function"]["arguments"] == '{"item": "map"}'
    assert all(c.params["temperature"] == 0 for c in llm.calls)
    assert [t["function"]["name"] for t in last.params["tools"]] == ["lookup", "calc", "weather"]
    assert answer.info is not None and answer.info["params"]["tools"] == last.params["tools"]


def test_feedback_on_the_answer_reaches_the_system_prompt_and_the_tool_descriptions() -> None:
    system = Parameter("Use the tools to answer.", name="system")
    lookup_tool, calc_tool, weather_tool = make_tools()
    not_offered = Tool(weather, name="forecast")
    answer = run_agent(system, TASK, tools=[lookup_tool, calc_tool, weather_tool], llm=MockLLM(shopper))
    answer.backward(Feedback("Wrong: the answer must be a bare number.", score=0.0))
    for param in (system, lookup_tool.description, calc_tool.description):
        assert [e.feedback.text for e in param.feedback] == ["Wrong: the answer must be a bare number."]
    results = {id(n): n for n in toposort(answer) if isinstance(n, MessageNode) and n.op is TOOL_RESULT}
    lookup_subgraph = [n for n in lookup_tool.description.feedback[0].subgraph if id(n) in results]
    assert [n.data for n in lookup_subgraph] == ["12.0", "15.0", "66.0"]  # through its results and what followed
    # the model read the description of the tool it did not call, so that text shaped the calls too
    assert len(weather_tool.description.feedback) == 1
    assert not_offered.description.feedback == []


def test_tool_failures_are_results_the_model_reads() -> None:
    def model(messages: list[dict[str, Any]], **params: Any) -> Completion | str:
        if messages[-1]["role"] == "tool":
            return "Sorry: " + " | ".join(m["content"] for m in messages if m["role"] == "tool")
        return Completion(
            "",
            tool_calls=(
                ToolCall("a", "calc", '{"expression": "3 * lantern"}'),
                ToolCall("b", "lookup", '{"item": "anchor"}'),
                ToolCall("c", "lookup", "{item: map}"),
                ToolCall("d", "teleport", "{}"),
                ToolCall("e", "lookup", '{"thing": "map"}'),
            ),
        )

    answer = run_agent(None, TASK, tools=make_tools(), llm=MockLLM(model))
    results = [n for n in toposort(answer) if isinstance(n, MessageNode) and n.op is TOOL_RESULT]
    assert [r.info["error"] for r in results if r.info] == [True] * 5
    texts = [r.data for r in results]
    assert texts[0] == "error: ValueError: calc understands numbers and + - * / only, not '3 * lantern'"
    assert texts[1] == "error: KeyError: 'anchor'"
    assert texts[2].startswith("error: the arguments are not valid JSON")
    assert texts[3] == "error: there is no tool 'teleport'; the tools are lookup, calc, weather"
    assert texts[4] == "error: unknown argument 'thing'; missing argument 'item'; lookup takes (item)"
    assert answer.data == "Sorry: " + " | ".join(texts)
    assert tuple(r.info["id"] for r in results if r.info) == ("a", "b", "c", "d", "e")


def test_max_turns_bounds_the_model_calls() -> None:
    forever = MockLLM(lambda messages, **params: calls(("lookup", {"item": "map"})))
    last = run_agent(None, TASK, tools=make_tools(), llm=forever, max_turns=3)
    assert len(forever.calls) == 3
    assert last.info is not None and last.info["tool_calls"] == [ToolCall("c0", "lookup", '{"item": "map"}').to_dict()]
    results = [n for n in toposort(last) if isinstance(n, MessageNode) and n.op is TOOL_RESULT]
    assert len(results) == 2  # the last turn's call was not run: no model would read its result
    once = MockLLM(lambda messages, **params: calls(("lookup", {"item": "map"})))
    single = run_agent(None, TASK, tools=make_tools(), llm=once, max_turns=1)
    assert len(once.calls) == 1 and [name for name, _ in single.inputs] == ["user", "tools[0]", "tools[1]", "tools[2]"]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"tools": []}, "non-empty list of feedprop.Tool"),
        ({"tools": Tool(lookup)}, "non-empty list of feedprop.Tool"),
        ({"tools": [lookup]}, r"tools\[0\] must be a feedprop.Tool"),
        ({"tools": [Tool(lookup), Tool(calc, name="lookup")]}, "two tools are named 'lookup'"),
        ({"tools": [Tool(lookup)], "max_turns": 0}, "max_turns must be an int >= 1"),
        ({"tools": [Tool(lookup)], "max_turns": True}, "max_turns must be an int >= 1"),
    ],
)
def test_bad_arguments_are_typed_errors_before_any_call(kwargs: dict[str, Any], fragment: str) -> None:
    llm = MockLLM("never")
    with pytest.raises(InvalidInputError, match=fragment):
        run_agent(None, TASK, llm=llm, **kwargs)
    assert llm.calls == []


def test_call_tools_needs_an_llm_call_node_and_a_model_that_serves_tools() -> None:
    with pytest.raises(InvalidInputError, match="node of an llm_call"):
        call_tools(Node("text"), make_tools())  # type: ignore[arg-type]
    plain = ops.llm_call(None, TASK, llm=MockLLM("66"))
    assert call_tools(plain, make_tools()) == []
    with pytest.raises(ConfigurationError, match="supports_tools is False"):
        run_agent(None, TASK, tools=make_tools(), llm=MockLLM("66", tools=False))


def test_a_tool_returning_a_node_joins_the_graph() -> None:
    rate = Parameter(1.5, name="rate")

    def convert(amount: float) -> Node[Any]:
        """Skell to marks."""
        return rate * amount

    def model(messages: list[dict[str, Any]], **params: Any) -> Completion | str:
        if messages[-1]["role"] == "tool":
            return messages[-1]["content"]
        return calls(("convert", {"amount": 10}))

    answer = run_agent(None, "10 skell in marks?", tools=[Tool(convert)], llm=MockLLM(model))
    assert answer.data == "15.0"
    answer.backward("Should be 20.")
    assert [e.feedback.text for e in rate.feedback] == ["Should be 20."]


def test_the_async_agent_records_the_same_graph() -> None:
    system = Parameter("Use the tools.", name="system")
    tools = make_tools()
    answer = asyncio.run(arun_agent(system, TASK, tools=tools, llm=MockLLM(shopper)))
    assert answer.data == "They cost 66.0 skell."
    sync = run_agent(system, TASK, tools=tools, llm=MockLLM(shopper))
    shape = [[(k, getattr(v, "op", None)) for k, v in n.inputs] for n in (answer, sync)]
    assert shape[0] == shape[1]


class Shopper(Module):
    def __init__(self) -> None:
        self.system = Parameter("Use the tools to answer.", name="system")
        self.tools = make_tools()

    def forward(self, task: str) -> MessageNode[str]:
        return run_agent(self.system, task, tools=self.tools, llm=MockLLM(shopper))


def test_a_module_trains_its_prompt_and_descriptions_without_missed_feedback() -> None:
    agent = Shopper()
    assert [name for name, _ in agent.named_parameters()] == [
        "system",
        "tools.0.description",
        "tools.1.description",
        "tools.2.description",
    ]
    state = agent.state_dict()
    assert state["tools.1.description"] == "Arithmetic on numbers."
    agent.load_state_dict({**state, "tools.1.description": "Evaluate + - * / over numbers."})
    assert agent.tools[1].schema()["function"]["description"] == "Evaluate + - * / over numbers."
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a parameter the forward used but feedback missed would warn
        agent(TASK).backward("Right.")
    assert all(p.feedback for p in agent.parameters())


def test_recorded_turns_replay_with_their_tool_calls() -> None:
    system = Parameter("Use the tools to answer.", name="system")
    tools = make_tools()
    answer = run_agent(system, TASK, tools=tools, llm=MockLLM(shopper))
    records = recorded_calls([Outcome(0, answer, Feedback("ok", score=1.0))])
    assert [len(r.tool_calls) for r in records] == [2, 1, 0]
    silent = MockLLM("a live call")
    with replay(records) as session:
        again = run_agent(system, TASK, tools=tools, llm=silent)
    assert again.data == answer.data and silent.calls == [] and session.hits == 3
    tools[1].description = "A changed description is another request."
    with replay(records):
        changed = run_agent(system, TASK, tools=tools, llm=silent)
    assert changed.data == "a live call" and len(silent.calls) == 1
