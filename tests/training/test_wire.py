"""Workflows and outcomes as JSON: rebuilt graphs give the optimizer exactly what the originals give."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from distributed_toys import Pipeline, answer, exact, optimizer_llm

from feedprop.errors import ConfigurationError, ExecutionError, InvalidInputError
from feedprop.llm import MockLLM, set_default
from feedprop.module import Module
from feedprop.node import ExceptionNode, Feedback, Node, Parameter
from feedprop.ops import llm_call
from feedprop.optim import OptoPrime
from feedprop.report import render_problem
from feedprop.training.data import as_items
from feedprop.training.evaluation import Outcome, run_items
from feedprop.training.screening import recorded_calls
from feedprop.training.wire import (
    NOT_SENT,
    Opaque,
    Rebuilder,
    build_workflow,
    decode_value,
    encode_graph,
    encode_outcome,
    encode_value,
    workflow_spec,
)


@pytest.fixture(autouse=True)
def workflow_model() -> Iterator[None]:
    set_default(MockLLM(answer))
    yield
    set_default(None)


def backward(outcomes: list[Outcome]) -> None:
    for o in outcomes:
        (o.error.node if o.error is not None else o.output).backward(o.feedback)


def over_the_wire(outcomes: list[Outcome], sender: Module, receiver: Module) -> list[Outcome]:
    """What a worker sends (as JSON text) and the driver rebuilds around its own model."""
    rebuild = Rebuilder(receiver)
    texts = [json.dumps(encode_outcome(o, sender, with_graph=True)) for o in outcomes]
    return [rebuild.outcome(json.loads(t)) for t in texts]


DATA = [("q1", "q1!"), ("q7", "q7!"), ("q2", "q2?"), ("q3", "q3!")]


def test_rebuilt_graphs_render_the_same_problem_and_prompt() -> None:
    local, sender, driver = Pipeline(), Pipeline(), Pipeline()
    items = as_items(DATA, "data")
    backward(run_items(local, items, exact))
    rebuilt = over_the_wire(run_items(sender, items, exact), sender, driver)
    assert any(o.error is not None for o in rebuilt), "the item with a 7 fails inside the bundled method"
    backward(rebuilt)
    expected = render_problem(list(local.parameters())).render()
    assert render_problem(list(driver.parameters())).render() == expected
    assert "#Definitions" in expected and "separator" in expected and "ValueError: cannot clean" in expected
    prompts = []
    for model in (local, driver):
        opt = OptoPrime(model.parameters(), llm=optimizer_llm())
        opt.propose()
        prompts.append([call.messages for call in opt.llm.calls])  # type: ignore[attr-defined]
    assert prompts[0] == prompts[1]


def test_rebuilt_llm_calls_are_ops_llm_call_so_their_replies_can_be_replayed() -> None:
    sender, driver = Pipeline(), Pipeline()
    outcomes = run_items(sender, as_items(DATA, "data"), exact)
    rebuilt = over_the_wire(outcomes, sender, driver)
    local = recorded_calls(outcomes)
    assert len(local) == 4, "one call per item, the failing one included"
    assert [(c.key, c.text) for c in recorded_calls(rebuilt)] == [(c.key, c.text) for c in local]


def test_parameters_and_held_nodes_are_the_receivers_own() -> None:
    sender, driver = Pipeline(), Pipeline()
    out = sender("q1")
    copy = Rebuilder(driver).graph(json.loads(json.dumps(encode_graph(out, sender))))
    reached = set()
    stack = [copy]
    while stack:
        node = stack.pop()
        reached.add(id(node))
        stack.extend(node.parents)
    for held in (driver.instruction, driver.suffix, driver.separator, dict(driver.named_parameters())["clean"]):
        assert id(held) in reached
    assert copy.data == out.data == "q1?"


def test_ops_shared_by_items_stay_one_op() -> None:
    sender, driver = Pipeline(), Pipeline()
    rebuild = Rebuilder(driver)
    a = rebuild.graph(json.loads(json.dumps(encode_graph(sender("q1"), sender))))
    b = rebuild.graph(json.loads(json.dumps(encode_graph(sender("q2"), sender))))
    assert a.op is b.op and a is not b


def test_values_outside_every_subgraph_are_not_sent() -> None:
    class Side(Module):
        def __init__(self) -> None:
            self.p = Parameter("x", name="p")

        def forward(self, text: str) -> Node[Any]:
            big = Node("a long document", name="doc")
            summary = big + "!"  # computed from the document only: no parameter below it
            return summary + self.p

    model = Side()
    data = encode_graph(model("q"), model)
    copy = Rebuilder(model).graph(data)
    doc = copy.parents[0].parents[0]
    assert doc.name == "doc" and doc.data is NOT_SENT
    assert copy.parents[0].data == "a long document!", "a parent of a node on the path is sent"


def test_eval_mode_sends_only_the_output() -> None:
    sender, driver = Pipeline(), Pipeline()
    outcome = run_items(sender.eval(), as_items([("q1", "q1?")], "data"), exact)[0]
    data = encode_outcome(outcome, sender, with_graph=False)
    assert len(data["graph"]["nodes"]) == 1
    copy = Rebuilder(driver).outcome(data)
    assert isinstance(copy.output, Node) and copy.output.data == "q1?" and copy.score == 1.0


def test_errors_come_back_as_exception_nodes_with_the_original_name() -> None:
    sender, driver = Pipeline(), Pipeline()
    outcome = run_items(sender, as_items([("q7", "x")], "data"), exact)[0]
    assert outcome.error is not None
    copy = Rebuilder(driver).outcome(json.loads(json.dumps(encode_outcome(outcome, sender, with_graph=True))))
    assert isinstance(copy.error, ExecutionError) and str(copy.error) == str(outcome.error)
    node = copy.error.node
    assert isinstance(node, ExceptionNode) and node.message == outcome.error.node.message
    assert type(node.data).__name__ == "ValueError" and repr(node.data) == repr(outcome.error.node.data)
    assert node.code is dict(driver.named_parameters())["clean"]
    assert copy.feedback == outcome.feedback


def test_values_that_are_not_json_travel_as_their_repr() -> None:
    for value in ({1, 2}, b"xy", object):
        data = encode_value(value)
        assert "r" in data
        back = decode_value(json.loads(json.dumps(data)))
        assert isinstance(back, Opaque) and repr(back) == repr(value)
    assert decode_value(encode_value((1, "a"))) == (1, "a")  # not yet through JSON text
    assert decode_value(json.loads(json.dumps(encode_value((1, "a"))))) == [1, "a"]


def test_feedback_extras_survive_the_trip() -> None:
    class Plain(Module):
        def forward(self, x: str) -> str:
            return x

    fb = Feedback("ok", score=0.5, extras={"tests": ["a"], "raw": {1, 2}})
    data = json.loads(json.dumps(encode_outcome(Outcome(0, "out", fb), Plain(), with_graph=True)))
    back = Rebuilder(Plain()).outcome(data)
    assert back.output == "out" and back.feedback.text == "ok" and back.feedback.score == 0.5
    assert back.feedback.extras["tests"] == ["a"] and repr(back.feedback.extras["raw"]) == "{1, 2}"


def test_a_workflow_travels_as_class_path_and_state() -> None:
    model = Pipeline()
    model.suffix.data = "!!"
    model.eval()
    spec = workflow_spec(model)
    assert spec["class"] == "distributed_toys:Pipeline"
    assert spec["state"]["suffix"] == "!!" and spec["training"] is False
    json.dumps(spec)
    cache: dict[str, Module] = {}
    rebuilt = build_workflow(spec, cache)
    assert isinstance(rebuilt, Pipeline) and rebuilt.suffix.data == "!!" and not rebuilt.training
    assert build_workflow({**spec, "state": {**spec["state"], "suffix": "?"}}, cache) is rebuilt
    assert rebuilt.suffix.data == "?"


def test_workflows_that_cannot_travel_are_refused_with_the_fix() -> None:
    class Local(Module):
        pass

    with pytest.raises(ConfigurationError, match="move it to a module"):
        workflow_spec(Local())
    with pytest.raises(InvalidInputError, match=r"feedprop\.Module"):
        workflow_spec(str.upper)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="JSON"):
        workflow_spec(Pipeline(), {"llm": object()})
    with pytest.raises(ConfigurationError, match=r"not a feedprop\.Module"):
        build_workflow({"class": "json:JSONDecoder", "state": {}})


def test_a_node_the_receiver_does_not_hold_is_a_clear_error() -> None:
    sender = Pipeline()
    data = encode_graph(sender("q1"), sender)
    data["nodes"][0] = {"k": "held", "path": "missing.thing"}
    with pytest.raises(ConfigurationError, match=r"missing\.thing"):
        Rebuilder(Pipeline()).graph(data)


class Branching(Module):
    """Keeps the model's reply or falls back to the question, with a plain ``if`` on a second call."""

    def __init__(self) -> None:
        self.answer_prompt = Parameter("Repeat the question.", name="answer_prompt")
        self.check_prompt = Parameter("Is it a question?", name="check_prompt")

    def forward(self, question: str) -> Node[Any]:
        reply = llm_call(self.answer_prompt, question)
        check = llm_call(self.check_prompt, reply)
        return reply if "q" in check.data else check


def test_control_parents_survive_the_trip() -> None:
    local, sender, driver = Branching(), Branching(), Branching()
    items = as_items(DATA[:2], "data")
    backward(run_items(local, items, exact))
    rebuilt = over_the_wire(run_items(sender, items, exact), sender, driver)
    backward(rebuilt)
    for outcome in rebuilt:
        assert isinstance(outcome.output, Node) and outcome.output.op is not None
        assert outcome.output.op.name == "return"
        assert [n.name for n in outcome.output.control_parents] == [outcome.output.parents[1].name]
    expected = render_problem(list(local.parameters())).render()
    assert "# control: the program read" in expected
    assert render_problem(list(driver.parameters())).render() == expected
