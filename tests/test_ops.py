"""Built-in ops: identity by object, values, recorded inputs, and llm_call's record of the call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from feedprop import ops
from feedprop.errors import ExecutionError, InvalidInputError
from feedprop.joint import traces
from feedprop.llm import Completion, MockLLM, ToolCall, cache_key, set_default
from feedprop.node import Demos, MessageNode, Node, Op, Parameter
from feedprop.tool import Tool


@pytest.mark.parametrize(
    ("op", "args", "kwargs", "expected"),
    [
        (ops.format, ("{} + {x}", 1), {"x": 2}, "1 + 2"),
        (ops.concat, ("a", 1, "b"), {}, "a1b"),
        (ops.join, (", ", "a", "b"), {}, "a, b"),
        (ops.split, ("a b  c",), {}, ["a", "b", "c"]),
        (ops.split, ("a,b", ","), {}, ["a", "b"]),
        (ops.strip, ("  x ",), {}, "x"),
        (ops.lower, ("AbC",), {}, "abc"),
        (ops.upper, ("AbC",), {}, "ABC"),
        (ops.replace, ("aXa", "X", "-"), {}, "a-a"),
        (ops.json_loads, ('{"a": [1]}',), {}, {"a": [1]}),
        (ops.json_dumps, ({"a": "é"},), {}, '{"a": "é"}'),
        (ops.len_, ([1, 2, 3],), {}, 3),
        (ops.contains, ([1, 2], 2), {}, True),
        (ops.keys, ({"a": 1},), {}, ["a"]),
        (ops.values, ({"a": 1},), {}, [1]),
        (ops.items, ({"a": 1},), {}, [("a", 1)]),
        (ops.make_list, (1, 2), {}, [1, 2]),
        (ops.make_tuple, (1, 2), {}, (1, 2)),
        (ops.make_dict, (), {"a": 1}, {"a": 1}),
        (ops.getattr_, ("text", "upper"), {}, "text".upper),
        (ops.call, (max, 3, 7), {}, 7),
        (ops.not_, (0,), {}, True),
        (ops.to_str, (5,), {}, "5"),
        (ops.to_int, ("5",), {}, 5),
        (ops.to_float, ("0.5",), {}, 0.5),
        (ops.getitem, ([4, 5], 1), {}, 5),
        (ops.add, (1, 2), {}, 3),
        (ops.abs_, (-2,), {}, 2),
    ],
)
def test_each_op_computes_and_is_its_own_identity(
    op: Op, args: tuple[Any, ...], kwargs: dict[str, Any], expected: Any
) -> None:
    wrapped = tuple(Node(a, name=f"in{i}") for i, a in enumerate(args))
    out = op(*wrapped, **kwargs)
    assert isinstance(out, MessageNode)
    assert out.data == expected
    assert out.op is op and out.op.name and out.description.startswith(f"[{op.name}]")
    assert all(any(p is w for p in out.parents) for w in wrapped)


def test_python_operators_use_the_same_op_objects() -> None:
    a = Node(1, name="a")
    assert (a + 1).op is ops.add and (a - 1).op is ops.sub and (a * 1).op is ops.mul
    assert (a < 1).op is ops.lt and (a == 1).op is ops.eq and Node([1], name="l")[0].op is ops.getitem


def test_format_records_argument_names() -> None:
    t = Parameter("Q: {question}\nA:", name="template")
    q = Node("2+2?", name="question")
    out = ops.format(t, question=q)
    assert out.data == "Q: 2+2?\nA:"
    assert [n for n, _ in out.inputs] == ["template", "question"]


def test_op_errors_become_execution_errors() -> None:
    with pytest.raises(ExecutionError, match="json_loads raised JSONDecodeError"):
        ops.json_loads(Node("not json", name="reply"))


def test_iterate() -> None:
    xs = Node(["a", "b"], name="xs")
    items = ops.iterate(xs)
    assert [i.data for i in items] == ["a", "b"] and all(i.parents[0] is xs for i in items)
    with pytest.raises(InvalidInputError):
        ops.iterate([1, 2])  # type: ignore[arg-type]


def test_llm_call_records_prompts_response_and_usage() -> None:
    llm = MockLLM(lambda messages, **params: f"echo {messages[-1]['content']} t={params.get('temperature')}")
    system = Parameter("You are terse.", name="system")
    question = Node("2+2?", name="question")
    out = ops.llm_call(system, question, "Be brief.", llm=llm, temperature=0.0)
    assert out.data == "echo 2+2?\n\nBe brief. t=0.0"
    assert out.op is ops.LLM_CALL and out.name.startswith("llm_call:")
    assert [n for n, _ in out.inputs] == ["system", "user[0]", "user[1]"]
    assert out.parents[0] is system and out.parents[1] is question
    assert out.info is not None
    assert out.info["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "2+2?\n\nBe brief."},
    ]
    assert out.info["response"] == out.data and out.info["params"] == {"temperature": 0.0}
    assert out.info["usage"]["prompt_tokens"] > 0 and out.info["usage"]["completion_tokens"] > 0
    assert llm.calls[0].params == {"temperature": 0.0}
    out.backward("too long")
    assert system.feedback[0].output is out


def test_llm_call_uses_the_default_model_and_checks_prompts() -> None:
    set_default(MockLLM("from default"))
    try:
        out = ops.llm_call(None, "hi")
        assert out.data == "from default" and [n for n, _ in out.inputs] == ["user"]
    finally:
        set_default(None)
    llm = MockLLM("x")
    with pytest.raises(InvalidInputError, match="user message"):
        ops.llm_call("sys", llm=llm)
    with pytest.raises(InvalidInputError, match="must be text"):
        ops.llm_call("sys", Node(3, name="three"), llm=llm)
    with pytest.raises(InvalidInputError, match=r"feedprop\.llm\.LLM"):
        ops.llm_call("sys", "u", llm=object())  # type: ignore[arg-type]


def test_allm_call() -> None:
    llm = MockLLM(lambda messages, **params: messages[-1]["content"].upper())

    async def main() -> list[str]:
        outs = await asyncio.gather(*(ops.allm_call("s", Node(f"q{i}", name=f"q{i}"), llm=llm) for i in range(5)))
        return [o.data for o in outs]

    assert asyncio.run(main()) == [f"Q{i}" for i in range(5)]


def test_llm_call_renders_demos_between_system_and_question() -> None:
    llm = MockLLM(lambda messages, **params: "ok")
    shots = Demos([{"input": "1+1?", "output": "2"}, {"input": "2+3?", "output": "5"}], name="shots")
    question = Node("3+3?", name="question")
    out = ops.llm_call("Answer with a number.", question, demos=shots, llm=llm)
    expected = [
        {"role": "system", "content": "Answer with a number."},
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "2+3?"},
        {"role": "assistant", "content": "5"},
        {"role": "user", "content": "3+3?"},
    ]
    assert out.info is not None and out.info["messages"] == expected
    assert llm.calls[0].messages == expected
    assert [n for n, _ in out.inputs] == ["system", "demos", "user"]
    assert dict(out.inputs)["demos"] is shots and shots in out.parents and question in out.parents
    out.backward("wrong")
    assert len(shots.feedback) == 1 and shots.feedback[0].output is out


def test_llm_call_without_demos_sends_and_records_what_it_always_did() -> None:
    llm = MockLLM("ok")
    plain = ops.llm_call("sys", "q", llm=llm, temperature=0)
    explicit = ops.llm_call("sys", "q", demos=None, llm=llm, temperature=0)
    for out in (plain, explicit):
        assert out.info is not None
        assert out.info["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"}]
        assert [n for n, _ in out.inputs] == ["system", "user"]
    before = [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"}]  # what calls always sent
    key = cache_key("mock", before, {"temperature": 0})
    assert plain.info is not None and explicit.info is not None
    assert cache_key("mock", plain.info["messages"], {"temperature": 0}) == key
    assert cache_key("mock", explicit.info["messages"], {"temperature": 0}) == key
    # An empty Demos parameter sends the same messages, and is still linked so it can be filled later.
    empty = Demos(name="empty")
    out = ops.llm_call("sys", "q", demos=empty, llm=llm, temperature=0)
    assert out.info is not None and cache_key("mock", out.info["messages"], {"temperature": 0}) == key
    assert empty in out.parents


def test_llm_call_takes_plain_demos_and_refuses_malformed_ones() -> None:
    llm = MockLLM(lambda messages, **params: str(len(messages)))
    out = ops.llm_call(None, "q", demos=[{"input": "a", "output": "b"}], llm=llm)
    assert out.data == "3" and out.parents == ()
    for bad in ("a: b", [{"input": "a"}], [{"input": "a", "output": 1}], [("a", "b")], Node(3, name="three")):
        with pytest.raises(InvalidInputError, match="demos"):
            ops.llm_call("sys", "q", demos=bad, llm=llm)
    assert len(llm.calls) == 1  # a refused call never reaches the model


def test_allm_call_renders_demos() -> None:
    llm = MockLLM(lambda messages, **params: "|".join(m["content"] for m in messages))
    shots = Demos([{"input": "a", "output": "A"}], name="shots")
    out = asyncio.run(ops.allm_call("s", "b", demos=shots, llm=llm))
    assert out.data == "s|a|A|b" and shots in out.parents


def test_llm_calls_lists_every_call_inputs_first_and_joint_shares_it() -> None:
    llm = MockLLM(lambda messages, **params: messages[-1]["content"] + "!")
    first = ops.llm_call(None, "a", llm=llm)
    second = ops.llm_call(None, ops.concat(first, first), llm=llm)
    assert ops.llm_calls(ops.upper(second)) == [first, second]
    assert ops.llm_calls(Node("x", name="x")) == []
    assert traces.llm_calls is ops.llm_calls and "llm_calls" in ops.__all__


def test_llm_call_offers_tools_and_records_the_calls_asked_for() -> None:
    def lookup(item: str) -> float:
        return 15.0

    tool = Tool(lookup, "The price of one item.")
    call = ToolCall("c1", "lookup", '{"item": "map"}')
    llm = MockLLM(Completion("", tool_calls=(call,)))
    system = Parameter("Use the tools.", name="system")
    out = ops.llm_call(system, "What does a map cost?", tools=[tool], llm=llm, temperature=0)
    assert out.data == "" and out.info is not None and out.info["tool_calls"] == [call.to_dict()]
    assert out.inputs[-1] == ("tools[0]", tool.description) and out.parents == (system, tool.description)
    assert llm.calls[0].params == {"temperature": 0, "tools": [tool.schema()]}
    assert out.info["params"] == llm.calls[0].params
    plain = ops.llm_call(system, "Hi", llm=MockLLM("Hello"))
    assert plain.info is not None and "tool_calls" not in plain.info and "tools" not in plain.info["params"]
    with pytest.raises(InvalidInputError, match=r"tools\[0\] must be a feedprop.Tool"):
        ops.llm_call(system, "Hi", tools=[lookup], llm=llm)
    with pytest.raises(InvalidInputError, match=r"non-empty list of feedprop\.Tool"):
        ops.llm_call(system, "Hi", tools=tool, llm=llm)  # type: ignore[arg-type]


def test_llm_chat_sends_a_transcript_and_records_the_nodes_it_was_made_from() -> None:
    persona = Parameter("You are terse.", name="persona")
    first = ops.llm_call(persona, "Name a colour.", llm=MockLLM("Red."))
    assert first.info is not None
    transcript = [
        *first.info["messages"],
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": "More"},
    ]
    llm = MockLLM("Blue.")
    second = ops.llm_chat(transcript, [("system", persona), ("turn[0]", first)], llm=llm)
    assert second.op is ops.LLM_CALL and second.parents == (persona, first)
    assert llm.calls[0].messages == transcript and second.info is not None and second.info["messages"] == transcript
    assert asyncio.run(ops.allm_chat(transcript, llm=MockLLM("Green."))).data == "Green."
    with pytest.raises(InvalidInputError, match=r"inputs\[0\] must be a \(name, node\) pair"):
        ops.llm_chat(transcript, [persona], llm=llm)  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="list of"):
        ops.llm_chat("Hi", llm=llm)  # type: ignore[arg-type]
