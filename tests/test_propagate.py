"""Backward walk and minimal-subgraph propagation, checked against the set definition by brute force."""

from __future__ import annotations

import gc
import random
import sys
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from feedprop.bundle import bundle
from feedprop.errors import FeedbackWarning, InvalidInputError
from feedprop.module import Module
from feedprop.node import RETURN, Feedback, MessageNode, Node, Op, Parameter
from feedprop.propagate import (
    MinimalSubgraph,
    Propagator,
    backward,
    minimal_subgraph,
    toposort,
)
from feedprop.tracing import no_trace

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


# -- control dependencies: branching on values inside a forward call ---------------------------------

LIST_JOIN = Op("list_join", lambda *xs: [len(xs) % 3] * (1 + len(xs) % 2), (), "[list_join] a test op")


@bundle
def peek(x: list[int]) -> list[int]:
    """A bundled op: what it reads of its argument is its own business, never a control read."""
    return [x[0] + 1] if x else [0]


class ControlProgram:
    """A random program run inside a forward call, and the rule written out independently of feedprop.

    The rule: a value read by user code (``.data``, ``bool``, ``len``, ``in``) in the forward call
    is a control parent of every node made after the read; the call's result comes back through
    the ``return`` op when reads happened after it was made. ``parents[i]`` and ``control[i]`` are
    what the rule says node ``i`` depends on; ``used`` the trainable parameters the call used.
    """

    def __init__(self, rng: random.Random, leaves: list[Node[Any]]) -> None:
        self.rng = rng
        self.nodes: list[Node[Any]] = list(leaves)
        self.lists: list[Node[Any]] = list(leaves)  # the nodes holding lists, which the program reads and joins
        self.parents: dict[int, set[int]] = {id(n): set() for n in leaves}
        self.control: dict[int, set[int]] = {id(n): set() for n in leaves}
        self.made_after: dict[int, int] = {}  # node -> number of reads before it was made
        self.reads: list[Node[Any]] = []
        self.used: dict[int, Node[Any]] = {}

    def made(self, node: Node[Any], data: list[Node[Any]]) -> Node[Any]:
        self.nodes.append(node)
        if isinstance(node._data, list):
            self.lists.append(node)
        self.parents[id(node)] = {id(p) for p in data} | {id(r) for r in self.reads}
        self.control[id(node)] = {id(r) for r in self.reads}
        self.made_after[id(node)] = len(self.reads)
        self.used.update((id(p), p) for p in data if p.trainable)
        return node

    def read(self, node: Node[Any]) -> None:
        if all(r is not node for r in self.reads):
            self.reads.append(node)
        if node.trainable:
            self.used[id(node)] = node

    def op(self) -> None:
        args = self.rng.sample(self.lists, self.rng.randint(1, min(3, len(self.lists))))
        if self.rng.random() < 0.5:
            self.made(LIST_JOIN(*args), args)
        else:  # the generic constructor (what bundles and llm_call use)
            inputs = tuple((f"a{i}", a) for i, a in enumerate(args))
            self.made(MessageNode([len(args)], op=LIST_JOIN, inputs=inputs), args)

    def branch(self) -> None:
        node = self.rng.choice(self.lists)
        how = self.rng.randrange(4)
        if how == 0:
            taken = node.data[0] == 0
        elif how == 1:
            taken = bool(node)
        elif how == 2:
            taken = len(node) > 1
        else:
            taken = 1 in node
        self.read(node)
        self.op()
        if taken:
            self.op()

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.45:
            self.op()
        elif roll < 0.7:
            self.branch()
        elif roll < 0.77:  # traced iteration is not a read
            source = self.rng.choice(self.lists)
            for item in source:
                self.made(item, [source])
                self.made(LIST_JOIN(item), [item])
        elif roll < 0.84:  # reads under no_trace record nothing
            with no_trace():
                _ = self.rng.choice(self.lists).data
        elif roll < 0.91:  # an op reading its argument
            arg = self.rng.choice(self.lists)
            self.made(peek(arg), [arg])
        else:  # a nested module joins the caller's forward call
            self.call(lambda: self.rng.random() < 0.5 or self.branch(), self.rng.randint(0, 2))

    def call(self, body: Callable[[], object], steps: int) -> Node[Any]:
        """Call a module whose forward runs ``body`` and ``steps`` steps, then returns a random node."""
        chosen: list[Node[Any]] = []

        def forward() -> Node[Any]:
            body()
            for _ in range(steps):
                self.step()
            chosen.append(self.rng.choice(self.lists))
            return chosen[0]

        out = _Run(forward)()
        # The rule: the result comes back through the return op when a read came after it was made.
        wrapped = bool(self.reads) and self.made_after.get(id(chosen[0]), -1) < len(self.reads)
        if wrapped:
            assert out.op is RETURN and out.parents[0] is chosen[0]
            self.made(out, [chosen[0]])
        else:
            assert out is chosen[0]
        return out


class _Run(Module):
    def __init__(self, body: Callable[[], Node[Any]]) -> None:
        self.body = body

    def forward(self) -> Node[Any]:
        return self.body()


def brute_ancestors(n: Node[Any], parents: dict[int, set[int]]) -> set[int]:
    out: set[int] = set()
    todo = list(parents[id(n)])
    while todo:
        m = todo.pop()
        if m not in out:
            out.add(m)
            todo.extend(parents[m])
    return out


def brute_control_subgraph(x: Node[Any], y: Node[Any], program: ControlProgram) -> set[int]:
    """The set definition of the minimal subgraph over the rule's data and control edges."""
    parents = program.parents
    anc_y = brute_ancestors(y, parents)
    desc_x = {id(n) for n in program.nodes if id(x) in brute_ancestors(n, parents)}
    zs = [id(n) for n in program.nodes if id(n) in anc_y and id(n) in desc_x]
    result = {id(x), id(y)}
    for z in zs:
        result.add(z)
        result.update(parents[z])
    if zs or id(x) in anc_y:
        result.update(parents[id(y)])
    return result


@pytest.mark.parametrize("seed", range(300))
def test_minimal_subgraph_follows_control_dependencies_like_brute_force_reachability(seed: int) -> None:
    rng = random.Random(seed)
    leaves: list[Node[Any]] = []
    for i in range(rng.randint(1, 5)):
        roll = rng.random()
        if roll < 0.6:
            leaves.append(Parameter([i % 2] * (1 + i % 2), name=f"p{i}"))
        elif roll < 0.75:
            leaves.append(Parameter([i], name=f"frozen{i}", trainable=False))
        else:
            leaves.append(Node([i % 3], name=f"c{i}"))
    program = ControlProgram(rng, leaves)
    _ = rng.choice(leaves).data  # outside any forward call: records nothing
    out = program.call(lambda: None, rng.randint(0, 12))
    for n in program.nodes:  # the graph holds exactly the rule's edges
        assert {id(p) for p in n.parents} == program.parents[id(n)], n.name
        assert {id(p) for p in n.control_parents} == program.control[id(n)], n.name
        assert len(n.parents) == len({id(p) for p in n.parents})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out.backward("fb")
    reaching = brute_ancestors(out, program.parents) | {id(out)}
    for p in leaves:
        if not p.trainable:
            assert p.feedback == [] or p is out  # an output keeps the feedback it was given
        elif id(p) in reaching:
            assert len(p.feedback) == 1
            assert {id(n) for n in p.feedback[0].subgraph} == brute_control_subgraph(p, out, program)
        else:
            assert p.feedback == []
    # Backward warns about used parameters it missed when the call made its result (not a leaf it returned).
    missed = [p for i, p in program.used.items() if i not in reaching] if out.op is not None else []
    warned = [w for w in caught if issubclass(w.category, FeedbackWarning)]
    assert len(warned) == (1 if missed else 0)
    if missed:
        named = {p.name for p in leaves if repr(p.name) in str(warned[0].message)}
        assert named == {p.name for p in missed}


def test_a_name_that_moved_out_says_where_it_is_now() -> None:
    with pytest.raises(ImportError, match=r"from feedprop\.textual_gradient import TextualGradient"):
        from feedprop.propagate import TextualGradient  # noqa: F401
    import feedprop.propagate as propagate_module

    assert not hasattr(propagate_module, "no_such_name")
