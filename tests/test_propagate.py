"""Backward walk and minimal-subgraph propagation, checked against the set definition by brute force."""

from __future__ import annotations

import gc
import random
import sys
import weakref
from typing import Any

import pytest

from feedprop.errors import InvalidInputError
from feedprop.node import Feedback, MessageNode, Node, Op, Parameter
from feedprop.propagate import (
    MinimalSubgraph,
    Propagator,
    backward,
    minimal_subgraph,
    toposort,
)

JOIN = Op("join", lambda *xs: len(xs), (), "[join] a test op")


def random_dag(rng: random.Random) -> tuple[list[Node[Any]], list[Parameter[Any]]]:
    """Leaves (some trainable parameters, some frozen, some constants) then ops over earlier nodes."""
    nodes: list[Node[Any]] = []
    params: list[Parameter[Any]] = []
    for i in range(rng.randint(1, 6)):
        roll = rng.random()
        if roll < 0.5:
            p = Parameter(i, name=f"p{i}")
            params.append(p)
            nodes.append(p)
        elif roll < 0.65:
            nodes.append(Parameter(i, name=f"frozen{i}", trainable=False))
        else:
            nodes.append(Node(i, name=f"c{i}"))
    for _ in range(rng.randint(0, 25)):
        k = rng.randint(1, min(4, len(nodes)))
        parents = rng.sample(nodes, k)
        if rng.random() < 0.2:  # a repeated argument must not duplicate the edge
            parents.append(parents[0])
        inputs = tuple((f"a{j}", p) for j, p in enumerate(parents))
        nodes.append(MessageNode(0, op=JOIN, inputs=inputs))
    return nodes, params


def brute_subgraph(x: Node[Any], y: Node[Any], nodes: list[Node[Any]]) -> set[int]:
    """X ∪ {Y} ∪ {Z, P | Z ∈ ancestors(Y), Z ∈ descendants(X), P ∈ parents(Z) or P ∈ parents(Y)}."""

    def ancestors(n: Node[Any]) -> set[int]:
        out: set[int] = set()
        todo = list(n.parents)
        while todo:
            m = todo.pop()
            if id(m) not in out:
                out.add(id(m))
                todo.extend(m.parents)
        return out

    anc_y = ancestors(y)
    desc_x = {id(n) for n in nodes if id(x) in ancestors(n)}
    zs = [n for n in nodes if id(n) in anc_y and id(n) in desc_x]
    result = {id(x), id(y)}
    for z in zs:
        result.add(id(z))
        result.update(id(p) for p in z.parents)
    if zs or id(x) in anc_y:
        result.update(id(p) for p in y.parents)
    return result


@pytest.mark.parametrize("seed", range(400))
def test_minimal_subgraph_matches_the_set_definition(seed: int) -> None:
    rng = random.Random(seed)
    nodes, params = random_dag(rng)
    y = rng.choice(nodes)
    backward(y, Feedback("fb", score=0.5))
    anc_y = {id(n) for n in toposort(y)}
    for p in params:
        if id(p) in anc_y:
            assert len(p.feedback) == 1
            entry = p.feedback[0]
            assert entry.output is y and entry.feedback.text == "fb" and entry.output_feedback.score == 0.5
            got = entry.subgraph
            assert {id(n) for n in got} == brute_subgraph(p, y, nodes)
            assert len(got) == len({id(n) for n in got})
            position = {id(n): i for i, n in enumerate(got)}
            for n in got:  # topological: every parent in the subgraph comes first
                assert all(position[id(q)] < position[id(n)] for q in n.parents if id(q) in position)
        else:
            assert p.feedback == []
    for n in nodes:  # frozen parameters and constants never keep feedback; intermediates are freed
        if not n.trainable and n is not y:
            assert n.feedback == []


def test_feedback_accumulates_until_zero_feedback() -> None:
    x = Parameter(1.0, name="x")
    out1 = x * 2
    out2 = x + 1
    out1.backward("first")
    out2.backward(0.25)
    out1.backward(Feedback("third", extras={"k": 1}))
    assert [e.feedback.text for e in x.feedback] == ["first", "score: 0.25", "third"]
    assert all(e.output is o for e, o in zip(x.feedback, (out1, out2, out1), strict=True))
    assert x.feedback[1].feedback.score == 0.25
    assert x.feedback[2].feedback.extras == {"k": 1}
    assert out1.feedback[0].text == "first"  # the output keeps what it was given
    x.zero_feedback()
    assert x.feedback == []


def test_backward_on_a_parameter_itself() -> None:
    x = Parameter("text", name="x")
    x.backward("direct")
    assert x.feedback[0].subgraph == (x,)


def test_bad_feedback_and_propagator_are_typed_errors() -> None:
    x = Parameter(1, name="x")
    with pytest.raises(InvalidInputError, match="feedback must be"):
        x.backward(["not", "feedback"])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="bool"):
        x.backward(True)
    with pytest.raises(InvalidInputError, match="Propagator"):
        x.backward("ok", propagator=object())  # type: ignore[arg-type]


def test_retain_feedback_keeps_intermediate_feedback() -> None:
    x = Parameter(1, name="x")
    mid = x + 1
    out = mid * 2
    out.backward("keep", retain_feedback=True)
    assert [f.text for f in mid.feedback] == ["keep"]
    mid.zero_feedback()
    out.backward("drop")
    assert mid.feedback == []


def test_a_million_node_chain_has_no_recursion_limit() -> None:
    x = Parameter(0, name="x")
    node: Node[Any] = x
    op = Op("inc", None)
    for _ in range(1_000_000):
        node = MessageNode(0, op=op, inputs=(("x", node),))
    assert sys.getrecursionlimit() < 1_000_000
    node.backward("deep")
    assert len(x.feedback) == 1
    assert len(x.feedback[0].subgraph) == 1_000_001
    x.zero_feedback()
    # Dropping a long chain must not recurse either: unlink from the top down.
    del node
    gc.collect()


def test_the_graph_is_freed_when_the_output_is_dropped() -> None:
    x = Parameter(1, name="x")
    mid = x + 1
    out = mid * 3
    refs = [weakref.ref(mid), weakref.ref(out)]
    del mid, out
    gc.collect()
    assert all(r() is None for r in refs)
    # Feedback keeps the graph alive only until zero_feedback().
    out = (x + 1) * 3
    out.backward("fb")
    ref = weakref.ref(out)
    del out
    gc.collect()
    assert ref() is not None
    x.zero_feedback()
    gc.collect()
    assert ref() is None


def test_many_parameters_get_their_own_subgraph_lazily() -> None:
    params = [Parameter(i, name=f"w{i}") for i in range(50)]
    total: Node[Any] = params[0]
    for p in params[1:]:
        total = total + p
    total.backward("sum is wrong")
    sub = params[-1].feedback[0].subgraph
    assert {id(n) for n in sub} == {id(params[-1]), id(total), *(id(p) for p in total.parents)}
    first = minimal_subgraph(params[0], total)
    assert len(first) == 49 + 50  # the chain of 49 adds and every parameter feeding it


def test_a_custom_propagator_controls_what_parents_receive() -> None:
    class OnlyFirstParent(Propagator):
        def propagate(self, node, received, run):  # type: ignore[no-untyped-def]
            return [(node.parents[0], Feedback(f"via {node.name}"))] if node.parents else []

    a, b = Parameter(1, name="a"), Parameter(2, name="b")
    out = a + b
    out.backward("fb", propagator=OnlyFirstParent())
    assert a.feedback[0].feedback.text == f"via {out.name}"
    assert a.feedback[0].output_feedback.text == "fb"
    assert b.feedback == []
    assert isinstance(MinimalSubgraph(), Propagator)
