"""OptoPrime on traced graphs: the report it sends, the keys it accepts, memory, budget, candidates."""

from __future__ import annotations

import json
from typing import Any

import pytest

from feedprop.bundle import bundle
from feedprop.errors import ConfigurationError, ExecutionError
from feedprop.llm import Message, MockLLM
from feedprop.node import Feedback, Node, Parameter
from feedprop.optim import OptoPrime


def reply(suggestion: dict[str, Any], reasoning: str = "because") -> str:
    return json.dumps({"reasoning": reasoning, "suggestion": suggestion})


def test_prompt_holds_the_report_and_the_legal_keys() -> None:
    x = Parameter(2.0, name="x", description="a weight", bounds=(-10.0, 10.0))
    b = Node(1.0, name="bias")
    (x * 3 + b).backward(Feedback("the output should be larger by 6", score=-6.0))
    llm = MockLLM(reply({"x": 4.0}))
    opt = OptoPrime([x], llm=llm)
    proposal = opt.step()
    assert x.data == 4.0 and proposal.usage.calls == 1
    user = llm.calls[0].messages[-1]["content"]
    for section in ("#Code", "#Definitions", "#Variables", "#Constraints", "#Inputs", "#Outputs", "#Feedback"):
        assert section in user
    assert "(number) x = 2.0" in user and "bias = 1.0" in user
    assert "the output should be larger by 6" in user
    assert "You may change only these variables: x" in user
    assert llm.calls[0].messages[0]["role"] == "system"


def test_fixes_a_code_parameter_under_a_sloppy_key_and_refuses_the_input() -> None:
    @bundle(trainable=True)
    def double(n: int) -> int:
        return n + n + 1

    code = double.parameter
    assert code is not None
    n = Node(3, name="n")
    out = double(n)
    out.backward(f"expected 6, got {out.data}")
    shown_name = code.name
    sloppy = shown_name.strip("_").upper()  # e.g. "__code0" written as "CODE0"
    llm = MockLLM(
        [reply({sloppy: "def double(n: int) -> int:\n    return n + n\n", "n": 5}), reply({})],
    )
    opt = OptoPrime([code], llm=llm)
    proposal = opt.step()
    assert double(Node(3, name="n")).data == 6
    refused = {r.key: r.reason for r in proposal.rejected}
    assert "not a trainable parameter (it is an input" in refused["n"]
    opt.zero_feedback()
    double(Node(4, name="n")).backward("now fine")
    opt.step()
    assert "'n': 'n' is not a trainable parameter" in llm.calls[1].messages[-1]["content"]


def test_exception_feedback_reaches_the_code() -> None:
    @bundle(trainable=True)
    def parse(text: str) -> int:
        return int(text.split("=")[2])

    code = parse.parameter
    assert code is not None
    try:
        parse(Node("x = 4", name="text"))
    except ExecutionError as e:
        e.node.backward(str(e))
    llm = MockLLM(reply({code.name: "def parse(text: str) -> int:\n    return int(text.split('=')[1])"}))
    OptoPrime([code], llm=llm).step()
    assert "IndexError" in llm.calls[0].messages[-1]["content"]
    assert parse(Node("x = 4", name="text")).data == 4


def test_signature_change_is_refused_then_fixed_on_retry() -> None:
    @bundle(trainable=True)
    def inc(v: int) -> int:
        return v

    code = inc.parameter
    assert code is not None
    inc(Node(1, name="v")).backward("should add one")
    llm = MockLLM(
        [
            reply({code.name: "def inc(v, step=1):\n    return v + step"}),
            reply({code.name: "def inc(v: int) -> int:\n    return v + 1"}),
        ]
    )
    proposal = OptoPrime([code], llm=llm).step()
    assert "signature changed" in proposal.rejected[0].reason
    assert "signature changed" in llm.calls[1].messages[-1]["content"]
    assert inc(Node(1, name="v")).data == 2


def test_minibatch_feedback_all_reaches_the_prompt() -> None:
    w = Parameter(1.0, name="w")
    for i, target in enumerate([2.0, 4.0, 6.0]):
        (w * Node(float(i + 1), name=f"x{i}")).backward(Feedback(f"expected {target}", score=-1.0))
    llm = MockLLM(reply({"w": 2.0}))
    OptoPrime([w], llm=llm).step()
    user = llm.calls[0].messages[-1]["content"]
    assert all(f"expected {t}" in user for t in (2.0, 4.0, 6.0))


def test_memory_is_bounded_and_shown() -> None:
    x = Parameter(0.0, name="x")
    values = iter([1.0, 2.0, 3.0, 4.0, 5.0])
    llm = MockLLM(lambda m, **p: reply({"x": next(values)}))
    opt = OptoPrime([x], llm=llm, memory_size=2)
    for _ in range(4):
        opt.zero_feedback()
        (x + 1).backward(Feedback(f"x={x.data} is too small", score=-1.0))
        opt.step()
    assert [e["values"]["x"] for e in opt.global_state["memory"]] == [2.0, 3.0]
    last = llm.calls[-1].messages[-1]["content"]
    assert "#Past steps" in last and "x=1.0 is too small" in last and "x=0.0 is too small" not in last


def test_no_feedback_means_no_call() -> None:
    llm = MockLLM(reply({"x": 1.0}))
    proposal = OptoPrime([Parameter(0.0, name="x")], llm=llm).step()
    assert proposal.candidates == [] and llm.calls == []


def test_large_graph_and_long_values_fit_the_budget() -> None:
    prompt = Parameter("Follow the rules. " * 400, name="prompt")
    node: Any = prompt
    for i in range(300):
        node = node + Node(f"chunk {i} " * 30, name=f"doc{i}")
    node.backward("the answer ignored the rules " * 50)
    llm = MockLLM(reply({"prompt": "Follow the rules strictly."}))
    opt = OptoPrime([prompt], llm=llm, max_prompt_tokens=2500)
    opt.step()
    messages = llm.calls[0].messages
    assert sum((len(m["content"]) + 3) // 4 + 4 for m in messages) <= 2500
    assert "[truncated" in messages[-1]["content"] or "omitted" in messages[-1]["content"]
    assert prompt.data == "Follow the rules strictly."


def test_budget_too_small_is_a_clear_error() -> None:
    x = Parameter(1.0, name="x")
    (x + 1).backward("bigger")
    with pytest.raises(ConfigurationError, match="max_prompt_tokens"):
        OptoPrime([x], llm=MockLLM(reply({})), max_prompt_tokens=200).step()


def test_candidates_are_proposed_not_applied() -> None:
    x = Parameter(0.0, name="x")
    (x * 2).backward(Feedback("larger by 4", score=-4.0))

    def handler(messages: list[Message], **p: Any) -> str:
        return reply({"x": 2.0 if p["temperature"] == 0 else 3.0})

    opt = OptoPrime([x], llm=MockLLM(handler), n_candidates=3)
    proposal = opt.propose()
    assert x.data == 0.0
    assert [c.updates["x"] for c in proposal.candidates] == [2.0, 3.0]
    opt.apply(proposal.candidates[1])
    assert x.data == 3.0


def test_xml_format_end_to_end() -> None:
    x = Parameter(1, name="count", bounds=(0, 100))
    (x + 1).backward("too few")
    llm = MockLLM('<reasoning>more</reasoning>\n<suggestion name="count">12</suggestion>')
    OptoPrime([x], llm=llm, reply_format="xml").step()
    assert x.data == 12 and isinstance(x.data, int)
    assert '<suggestion name="count">new number</suggestion>' in llm.calls[0].messages[-1]["content"]


def test_json_parameter_keeps_its_shape() -> None:
    cfg = Parameter({"k": 3, "stop": ["\n"]}, name="cfg")
    (cfg["k"] + 1).backward("k too small")
    llm = MockLLM([reply({"cfg": {"k": 5}}), reply({"cfg": {"k": 5, "stop": ["\n", "END"]}})])
    proposal = OptoPrime([cfg], llm=llm).step()
    assert "missing keys ['stop']" in proposal.rejected[0].reason
    assert cfg.data == {"k": 5, "stop": ["\n", "END"]}


def test_state_dict_round_trip_keeps_memory() -> None:
    x = Parameter(0.0, name="x")
    (x + 1).backward("bigger")
    opt = OptoPrime([x], llm=MockLLM(reply({"x": 1.0})), memory_size=4)
    opt.step()
    sd = json.loads(json.dumps(opt.state_dict()))
    fresh = OptoPrime([x], llm=MockLLM(reply({})), memory_size=4)
    fresh.load_state_dict(sd)
    assert fresh.memory.entries == opt.memory.entries and len(fresh.memory.entries) == 1


def test_answer_format_example_names_the_real_variables() -> None:
    @bundle(trainable=True)
    def clean(text: str) -> str:
        return text

    code = clean.parameter
    assert code is not None
    w = Parameter(0.5, name="weight")
    clean(Node(" a ", name="raw")).backward("strip the spaces")
    (w * 2).backward("larger")
    llm = MockLLM(reply({}))
    OptoPrime([code, w], llm=llm).step()
    user = llm.calls[0].messages[-1]["content"]
    assert f'"suggestion": {{"{code.name}": "<the whole new function>", "weight": <new number>}}' in user
    assert f"variable names from #Variables: {code.name}, weight" in user
