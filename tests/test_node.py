"""Nodes, parameters and the operators traced on them."""

from __future__ import annotations

import math
import threading
import types
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from feedprop.bundle import bundle
from feedprop.errors import ExecutionError, FeedbackWarning, GraphError, InvalidInputError, SuggestionError
from feedprop.llm import MockLLM
from feedprop.module import Module
from feedprop.node import (
    ADD,
    EQ,
    GETITEM,
    KINDS,
    RETURN,
    Demos,
    ExceptionNode,
    Feedback,
    MessageNode,
    Node,
    Op,
    Parameter,
    as_feedback,
    demos_problem,
    infer_kind,
    run_forward,
)
from feedprop.ops import iterate, llm_call
from feedprop.propagate import toposort


def test_parameter_kinds_are_inferred() -> None:
    assert Parameter("hi").kind == "text"
    assert Parameter(3).kind == "number"
    assert Parameter(0.5).kind == "number"
    assert Parameter({"a": [1, 2]}).kind == "json"
    assert Parameter([1, "x"]).kind == "json"
    assert Parameter(True).kind == "json"
    assert Parameter("def f(x):\n    return x\n", kind="code").kind == "code"


def test_infer_kind() -> None:
    assert [infer_kind(v) for v in ("a", 1, 2.5, True, [1], {"a": 1}, None)] == [
        "text",
        "number",
        "number",
        "json",
        "json",
        "json",
        "json",
    ]


def test_parameter_names_are_the_users_or_unique() -> None:
    assert Parameter("a", name="instruction").name == "instruction"
    a, b = Parameter("a"), Parameter("b")
    assert a.name != b.name and a.name.startswith("param:")


@pytest.mark.parametrize(
    ("value", "kwargs", "error"),
    [
        (object(), {}, InvalidInputError),
        ({"a": {1, 2}}, {}, InvalidInputError),
        (float("nan"), {}, InvalidInputError),
        ("x", {"kind": "prompt"}, InvalidInputError),
        (3, {"kind": "text"}, InvalidInputError),
        ("x", {"bounds": (0, 1)}, InvalidInputError),
        (0.5, {"bounds": (1, 0)}, InvalidInputError),
        (5, {"bounds": (0, 1)}, InvalidInputError),
        ("x", {"trainable": "no"}, InvalidInputError),
        ("a\ud800", {}, InvalidInputError),
        ("x", {"name": ""}, InvalidInputError),
    ],
)
def test_bad_parameters_raise_typed_errors(value: Any, kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Parameter(value, **kwargs)


def test_setting_a_parameter_keeps_its_type() -> None:
    text = Parameter("a", name="t")
    text.data = "b"
    assert text.data == "b"
    with pytest.raises(InvalidInputError, match="holds a str"):
        text.set(3)
    n = Parameter(3, name="n", bounds=(0, 10))
    n.set(4.0)
    assert n.data == 4 and isinstance(n.data, int)
    with pytest.raises(SuggestionError, match="integer"):
        n.set(4.5)
    with pytest.raises(SuggestionError, match=r"within \[0, 10\]"):
        n.set(11)
    with pytest.raises(InvalidInputError):
        n.set("4")
    with pytest.raises(InvalidInputError):
        n.set(True)
    f = Parameter(0.5, name="f")
    f.set(2)
    assert f.data == 2
    j = Parameter({"k": 1}, name="j")
    j.set({"k": 2})
    with pytest.raises(InvalidInputError, match="holds a dict"):
        j.set([1])
    with pytest.raises(InvalidInputError, match="JSON"):
        j.set({"k": object()})


def test_computed_nodes_cannot_be_assigned() -> None:
    out = Node(1, name="one") + 1
    with pytest.raises(GraphError, match="only a Parameter"):
        out.data = 5


def test_feedback_is_validated() -> None:
    assert as_feedback("x") == Feedback("x")
    assert as_feedback(1).score == 1.0
    fb = Feedback("t", score=1, extras={"a": 1})
    assert isinstance(fb.score, float)
    with pytest.raises(InvalidInputError):
        Feedback(3)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        Feedback("t", score=math.inf)
    with pytest.raises(InvalidInputError):
        Feedback("t", extras=[1])  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        fb.text = "changed"  # type: ignore[misc]


def test_operators_route_to_op_objects() -> None:
    a = Parameter(6, name="a")
    b = Node(3, name="b")
    cases = {
        "add": (a + b, 9),
        "sub": (a - b, 3),
        "mul": (a * b, 18),
        "truediv": (a / b, 2.0),
        "floordiv": (a // 4, 1),
        "mod": (a % 4, 2),
        "pow": (a**2, 36),
        "neg": (-a, -6),
        "pos": (+a, 6),
        "abs": (abs(-a), 6),
        "lt": (a < b, False),
        "le": (a <= 6, True),
        "gt": (a > b, True),
        "ge": (a >= 7, False),
        "eq": (a == 6, True),
        "ne": (a != 6, False),
    }
    for name, (node, value) in cases.items():
        assert isinstance(node, MessageNode)
        assert node.op is not None and node.op.name == name
        assert node.data == value
    assert (10 - a).data == 4 and (10 - a).inputs[0] == ("lhs", 10)
    assert (a == 6).op is EQ
    s = Node("ab", name="s") + "c"
    assert s.data == "abc" and s.op is ADD


def test_indexing_iteration_and_truthiness() -> None:
    items = Node([10, 20, 30], name="items")
    first = items[0]
    assert first.op is GETITEM and first.data == 10 and first.parents[0] is items
    assert [x.data for x in items] == [10, 20, 30]
    assert all(x.parents[0] is items for x in items)
    d = Node({"a": 1, "b": 2}, name="d")
    keys = list(d)
    assert [k.data for k in keys] == ["a", "b"]
    assert d["b"].data == 2
    assert len(items) == 3 and 20 in items and Node(20) in items
    assert bool(Node(0)) is False and bool(Node("x")) is True
    with pytest.raises(InvalidInputError, match="cannot iterate"):
        iter(Node("text"))
    # Identity hashing: nodes work as dict keys and set members despite traced ==.
    assert len({items, first, items}) == 2


def test_calling_a_node_traces_a_call() -> None:
    fn = Node(len, name="len")
    out = fn(Node([1, 2], name="xs"))
    assert out.data == 2 and out.op is not None and out.op.name == "call"
    with pytest.raises(InvalidInputError, match="not callable"):
        Node(3, name="three")()


def test_errors_inside_ops_become_exception_nodes() -> None:
    x = Parameter(0, name="x")
    with pytest.raises(ExecutionError) as info:
        _ = 1 / x
    node = info.value.node
    assert isinstance(node, ExceptionNode)
    assert isinstance(node.data, ZeroDivisionError)
    assert node.parents[0] is x and "ZeroDivisionError" in str(info.value)
    assert node.message.startswith("ZeroDivisionError")
    node.backward(str(info.value))
    assert x.feedback[0].output is node


def test_op_identity_and_names() -> None:
    double = Op("double", lambda v: 2 * v, ("v",))
    outs = [double(i) for i in range(3)]
    assert all(o.op is double for o in outs)
    assert len({o.name for o in outs}) == 3 and all(o.name.startswith("double:") for o in outs)
    with pytest.raises(GraphError):
        Op("label")(1)


def test_repr_is_short() -> None:
    assert repr(Parameter("x" * 500, name="long")).count("x") < 100


def test_demos_is_a_parameter_kind_with_a_cap() -> None:
    empty = Demos()
    assert isinstance(empty, Parameter) and empty.kind == "demos" and empty.data == [] and empty.max_demos == 4
    assert empty.trainable and "demos" in KINDS
    given = [{"input": "q", "output": "a"}]
    shots = Demos(given, name="shots", description="examples", max_demos=2)
    assert shots.data == given and shots.data is not given and shots.data[0] is not given[0]
    shots.data = [{"input": "q1", "output": "a1"}, {"input": "q2", "output": "a2"}]
    assert [d["input"] for d in shots.data] == ["q1", "q2"]
    assert repr(shots) == "Demos(name='shots', demos=2, max_demos=2)"
    assert Parameter([{"input": "q", "output": "a"}], kind="demos").kind == "demos"


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("q -> a", "a list of"),
        ({"input": "q", "output": "a"}, "a list of"),
        (["q"], "must be a dict"),
        ([{"input": "q"}], "exactly the keys"),
        ([{"input": "q", "output": "a", "note": "x"}], "exactly the keys"),
        ([{"input": "q", "output": 4}], "'output' must be a str"),
        ([{"input": None, "output": "a"}], "'input' must be a str"),
        ([{"input": str(i), "output": "a"} for i in range(3)], "at most 2 demonstrations"),
    ],
)
def test_bad_demos_raise_typed_errors(value: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        Demos(value, max_demos=2)
    shots = Demos([{"input": "q", "output": "a"}], max_demos=2)
    with pytest.raises(InvalidInputError, match=match):
        shots.data = value
    assert shots.data == [{"input": "q", "output": "a"}]


@pytest.mark.parametrize("max_demos", [0, -1, 1.5, True, "4"])
def test_demos_refuses_a_bad_cap(max_demos: Any) -> None:
    with pytest.raises(InvalidInputError, match="max_demos"):
        Demos(max_demos=max_demos)


def test_demos_problem_says_what_is_wrong() -> None:
    assert demos_problem([]) is None and demos_problem(({"input": "q", "output": "a"},)) is None
    problem = demos_problem([{"input": "q", "output": "a"}] * 3, max_demos=2)
    assert problem is not None and "at most 2" in problem


def test_node_makes_a_node_or_a_parameter_as_in_trace() -> None:
    import feedprop as fp

    x = fp.node(1)
    assert type(x) is Node and x.data == 1 and not x.trainable
    p = fp.node(0.5, name="w", trainable=True, description="a weight", bounds=(0, 1))
    assert type(p) is Parameter and p.trainable and p.name == "w" and p.bounds == (0, 1)
    assert fp.node(p) is p and fp.node(x) is x
    assert "node" in fp.__all__ and callable(fp.node)


def test_the_node_module_stays_a_module() -> None:
    import feedprop as fp
    import feedprop.node as n
    from feedprop.node import Node as Imported
    from feedprop.node import node as function

    assert n is fp.node and isinstance(n, types.ModuleType) and n.Node is Imported is Node
    assert function(2).data == 2 and n(3).data == 3


# -- control dependencies: values read inside a forward call --------------------------------------


@pytest.mark.parametrize(
    "read",
    [lambda n: n.data == [1, 2], lambda n: bool(n), lambda n: len(n) == 2, lambda n: 2 in n],
    ids=["data", "bool", "len", "in"],
)
def test_each_way_of_reading_a_value_makes_it_a_control_parent(read: Callable[[Node[Any]], bool]) -> None:
    xs, other = Node([1, 2], name="xs"), Node(5, name="other")

    def forward() -> Node[Any]:
        before = other + 1
        assert read(xs)
        after = other + 2
        assert before.control_parents == () and before.parents == (other,)
        assert after.control_parents == (xs,) and after.parents == (other, xs)
        return after

    out = run_forward(forward)
    assert out.op is ADD and out.data == 7


def test_iterating_and_ops_reading_their_inputs_are_not_control_reads() -> None:
    xs, prompt = Node([1, 2], name="xs"), Parameter("Be brief.", name="prompt")

    @bundle
    def total(values: list[int]) -> int:
        return sum(values)

    def forward() -> Node[Any]:
        items = [x for x in xs] + iterate(xs)  # (list(xs) would call len(xs): a read)
        answer = llm_call(prompt, "2+2?", llm=MockLLM("4"))
        summed = total(xs)
        return ADD(summed, answer.op is not None) + items[0]

    out = run_forward(forward)
    assert all(n.control_parents == () for n in toposort(out))


def test_reads_outside_a_forward_call_record_nothing() -> None:
    route = Node("SEARCH", name="route")
    out = Node(1, name="x") + 1 if route.data == "SEARCH" else None
    assert out is not None and out.control_parents == () and all(p is not route for p in out.parents)


def test_a_result_made_before_the_last_read_comes_back_through_the_return_op() -> None:
    answer, ok = Node("Paris", name="answer"), Node("yes", name="ok")
    route = Node("SEARCH", name="route")

    def forward() -> Node[Any]:
        _ = route.data
        draft = answer + "."
        return draft if ok.data == "yes" else answer

    out = run_forward(forward)
    assert out.op is RETURN and out.data == "Paris."
    assert out.control_parents == (route, ok) and out.parents[1:] == (route, ok)
    draft = out.parents[0]
    assert draft.control_parents == (route,)


def test_a_result_made_after_the_last_read_and_plain_results_come_back_as_they_are() -> None:
    ok = Node("yes", name="ok")

    def made_after() -> Node[Any]:
        return ok + "!" if ok.data == "yes" else ok

    out = run_forward(made_after)
    assert out.op is ADD and out.control_parents == (ok,)
    assert run_forward(lambda: ok.data) == "yes"
    assert run_forward(lambda: ok).op is None  # nothing was read, so there is nothing to record


class _Checked(Module):
    """Answers, with a check that decides whether to keep the answer or ask again."""

    def __init__(self, *, read_in_a_thread: bool) -> None:
        self.check_prompt = Parameter("Is the answer right?", name="check_prompt")
        self.answer_prompt = Parameter("Answer.", name="answer_prompt")
        self.read_in_a_thread = read_in_a_thread

    def forward(self, question: str) -> Node[Any]:
        answer = llm_call(self.answer_prompt, question, llm=MockLLM("4"))
        check = llm_call(self.check_prompt, answer, llm=MockLLM("yes"))
        if self.read_in_a_thread:  # a thread started this way does not inherit the forward's context
            box: list[bool] = []
            worker = threading.Thread(target=lambda: box.append(check.data == "yes"))
            worker.start()
            worker.join()
            keep = box[0]
        else:
            keep = check.data == "yes"
        return answer if keep else llm_call(self.answer_prompt, question, llm=MockLLM("5"))


def test_the_prompt_that_chose_the_branch_receives_feedback_without_a_warning() -> None:
    model = _Checked(read_in_a_thread=False)
    out = model("2+2?")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeedbackWarning)
        out.backward("Correct.")
    assert out.op is RETURN
    assert len(model.check_prompt.feedback) == 1 and len(model.answer_prompt.feedback) == 1


def test_backward_warns_once_about_a_used_parameter_whose_read_was_not_recorded() -> None:
    model = _Checked(read_in_a_thread=True)
    out = model("2+2?")
    with pytest.warns(FeedbackWarning, match=r"gave no feedback to 'check_prompt', which the forward call used"):
        out.backward("Correct.")
    assert model.check_prompt.feedback == [] and len(model.answer_prompt.feedback) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeedbackWarning)
        out.backward("Still correct.")  # once per forward call
        model("2+2?").parents[0].backward("an intermediate node: not the call's result")
