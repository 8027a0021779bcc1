"""@bundle: traced functions and methods, hidden dependencies, trainable code, execution errors."""

from __future__ import annotations

import gc
import inspect
import weakref
from typing import Any

import pytest

from feedprop.bundle import Bundle, bundle, function_source
from feedprop.errors import ExecutionError, HiddenDependencyError, InvalidInputError
from feedprop.node import ExceptionNode, MessageNode, Node, Parameter
from feedprop.sandbox import CodeFailure, Executor, InProcessExecutor
from feedprop.tracing import no_trace

SECRET = Parameter("hidden value", name="secret")


@bundle
def combine(a: str, b: str, sep: str = " ") -> str:
    """Join two strings."""
    return a + sep + b


@bundle
def peek(x: str) -> str:
    return x + SECRET.data  # reads a node it was not given


@bundle(allow_external_dependencies=True)
def peek_allowed(x: str) -> str:
    return x + SECRET.data


@bundle(trainable=True)
def parse_number(text: str) -> int:
    """Read the last word as an integer."""
    words = text.split()
    return int(words[-1])


class Solver:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    @bundle(trainable=True)
    def scale(self, x: int) -> int:
        return x * self.factor

    @bundle
    def frozen(self, x: int) -> int:
        return x + 1


def test_node_arguments_become_parents_and_the_function_sees_values() -> None:
    a, b = Node("hello", name="a"), Parameter("world", name="b")
    out = combine(a, b, sep="-")
    assert isinstance(out, MessageNode) and out.data == "hello-world"
    assert out.op is combine and isinstance(combine, Bundle)
    assert out.parents[0] is a and out.parents[1] is b
    assert [name for name, _ in out.inputs] == ["a", "b", "sep"] and out.inputs[2][1] == "-"
    assert out.description == "[combine] Join two strings."
    assert inspect.signature(combine) == inspect.signature(combine.__wrapped__)  # type: ignore[attr-defined]
    assert combine.__name__ == "combine" and combine.__doc__ == "Join two strings."


def test_bad_arguments_are_typed_errors() -> None:
    with pytest.raises(InvalidInputError, match="combine"):
        combine("only one")


def test_hidden_dependency_is_an_error_unless_allowed() -> None:
    with pytest.raises(HiddenDependencyError, match="'secret'"):
        peek(Node("x", name="x"))
    out = peek_allowed(Node("x", name="x"))
    assert any(p is SECRET for p in out.parents)
    assert out.info is not None and out.info["hidden"] == ["secret"]
    out.backward("fb")
    assert SECRET.feedback[-1].output is out
    SECRET.zero_feedback()


def test_nested_bundles_report_hidden_reads_to_the_outer_one() -> None:
    inner = bundle(lambda s: s.upper(), name="inner")

    @bundle
    def outer(x: str) -> str:
        return inner(SECRET).data + x  # passes a node it was never given

    with pytest.raises(HiddenDependencyError, match="outer"):
        outer(Node("x", name="x"))

    @bundle
    def fine(x: str) -> str:
        made = Node(x) + "!"  # nodes made inside the call are not hidden
        return made.data

    assert fine(Node("a", name="a")).data == "a!"


def test_containers_of_nodes_are_unwrapped_and_recorded() -> None:
    @bundle
    def total(xs: list[int], *rest: int, **named: int) -> int:
        return sum(xs) + sum(rest) + sum(named.values())

    a, b, c, d = (Node(i, name=f"n{i}") for i in range(1, 5))
    out = total([a, b], c, 10, k=d)
    assert out.data == 1 + 2 + 3 + 10 + 4
    assert [p.name for p in out.parents] == ["n1", "n2", "n3", "n4"]
    assert [name for name, _ in out.inputs] == ["xs[0]", "xs[1]", "rest[0]", "rest[1]", "k"]


def test_trainable_function_code_is_a_parameter_whose_updates_take_effect() -> None:
    code = parse_number.parameter
    assert code is not None and code.kind == "code" and code.name == "parse_number"
    assert code.data.startswith("def parse_number(text: str) -> int:") and "@bundle" not in code.data
    assert code.data == function_source(parse_number.__wrapped__)  # type: ignore[attr-defined]
    original = code.data
    try:
        out = parse_number(Node("the answer is 42", name="text"))
        assert out.data == 42 and any(p is code for p in out.parents)
        code.data = "def parse_number(text: str) -> int:\n    return len(text)\n"
        assert parse_number(Node("abc", name="t")).data == 3
        assert inspect.signature(parse_number).parameters["text"].annotation in ("str", str)
    finally:
        code.data = original


def test_exceptions_in_trainable_code_map_onto_its_lines() -> None:
    code = parse_number.parameter
    assert code is not None
    text = Node("no number here", name="text")
    with pytest.raises(ExecutionError) as info:
        parse_number(text)
    node = info.value.node
    assert isinstance(node, ExceptionNode) and isinstance(node.data, ValueError)
    assert node.code is code and node.lineno == 4
    assert "line 4: return int(words[-1])" in node.traceback
    assert "line 4 of the code of parse_number" in str(info.value)
    assert {id(p) for p in node.parents} == {id(text), id(code)}
    node.backward(str(info.value))
    entry = code.feedback[-1]
    assert entry.output is node and "ValueError" in entry.feedback.text
    assert {id(n) for n in entry.subgraph} == {id(code), id(text), id(node)}
    code.zero_feedback()


def test_catch_execution_error_false_reraises_the_original() -> None:
    @bundle(catch_execution_error=False)
    def boom(x: int) -> int:
        raise KeyError(x)

    with pytest.raises(KeyError):
        boom(Node(1, name="one"))

    @bundle
    def boom2(x: int) -> int:
        return {}[x]  # type: ignore[no-any-return]

    with pytest.raises(ExecutionError) as info:
        boom2(Node(1, name="one"))
    assert isinstance(info.value.node.data, KeyError)
    assert "in boom2" in info.value.node.traceback.splitlines()[1]


def test_methods_get_one_code_parameter_per_instance() -> None:
    s1, s2 = Solver(2), Solver(3)
    p1, p2 = s1.scale.parameter, s2.scale.parameter
    assert p1 is not None and p2 is not None and p1 is not p2 and s1.scale.parameter is p1
    assert p1.name == "scale" and "def scale(self, x: int) -> int:" in p1.data
    assert s1.scale(Node(5, name="x")).data == 10
    p1.data = "def scale(self, x):\n    return x * self.factor + 1\n"
    assert s1.scale(Node(5, name="x")).data == 11
    assert s2.scale(Node(5, name="x")).data == 15  # the other instance is unchanged
    out = s2.scale(5)
    assert [p.name for p in out.parents] == ["scale"] and out.parents[0] is p2
    assert s1.frozen.parameter is None and s1.frozen(Node(1, name="one")).data == 2
    assert Solver.scale(s1, 1).data == 3  # called through the class
    assert list(inspect.signature(s1.scale).parameters) == ["x"]


def test_trainable_code_runs_through_the_given_executor() -> None:
    calls: list[str] = []

    class Recording(Executor):
        def run(
            self, source: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], globals_: dict[str, Any]
        ) -> Any:
            calls.append(name)
            return InProcessExecutor().run(source, name, args, kwargs, globals_)

    offset = 100

    @bundle(trainable=True, executor=Recording())
    def shifted(x: int) -> int:
        return x + offset  # a closure variable reaches the executed code

    assert shifted(Node(1, name="one")).data == 101
    assert calls == ["shifted"]

    class Failing(Executor):
        def run(
            self, source: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], globals_: dict[str, Any]
        ) -> Any:
            raise CodeFailure("TimeoutError", "took longer than 1 s", 'File "<feedprop-code>", line 2, in f\n', 2)

    @bundle(trainable=True, executor=Failing())
    def slow(x: int) -> int:
        return x

    with pytest.raises(ExecutionError, match="TimeoutError") as info:
        slow(Node(1, name="one"))
    assert info.value.node.lineno == 2 and "line 2: return x" in info.value.node.traceback


def test_trainable_code_with_a_syntax_error_is_feedback() -> None:
    @bundle(trainable=True)
    def f(x: int) -> int:
        return x

    assert f.parameter is not None
    f.parameter.data = "def f(x):\n    return x +\n"
    with pytest.raises(ExecutionError, match="SyntaxError"):
        f(Node(1, name="one"))


def test_untrainable_sources_are_refused_clearly() -> None:
    with pytest.raises(InvalidInputError, match="lambda"):
        bundle(trainable=True)(lambda x: x)

    async def coro(x: int) -> int:
        return x

    with pytest.raises(InvalidInputError, match="coroutine"):
        bundle(coro)
    with pytest.raises(InvalidInputError):
        bundle(3)  # type: ignore[call-overload]


def test_bundles_under_no_trace_have_no_parents() -> None:
    with no_trace():
        out = combine(Node("a", name="a"), "b")
    assert out.data == "a b" and out.parents == ()


def test_graphs_made_by_bundles_and_errors_are_freed() -> None:
    s = Solver(2)
    x = Node(3, name="x")
    out = s.scale(x)
    failing = Node("no digits", name="text")
    try:
        parse_number(failing)
    except ExecutionError as e:
        error_node = weakref.ref(e.node)
    refs = [weakref.ref(out), weakref.ref(x), weakref.ref(failing)]
    del out, x, failing
    gc.collect()
    assert all(r() is None for r in refs) and error_node() is None
