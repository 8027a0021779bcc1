"""Tracing state in contextvars: threads and asyncio tasks each trace their own graph."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
import time
import weakref
from typing import Any

import pytest

from feedprop.errors import ConfigurationError
from feedprop.node import Node, Parameter
from feedprop.propagate import toposort
from feedprop.tracing import (
    current_scope,
    forward_scope,
    is_tracing,
    name_scope,
    no_trace,
    note_input,
    recording_reads,
    scoped,
    state,
)


def test_no_trace_and_scopes_nest_and_restore() -> None:
    assert is_tracing() and current_scope() == ""
    with no_trace():
        assert not is_tracing()
        with no_trace():
            assert not is_tracing()
        assert not is_tracing()
    assert is_tracing()
    with name_scope("a"):
        with name_scope("b"):
            assert scoped("add") == "a/b/add"
        assert current_scope() == "a"
    assert current_scope() == ""


def test_name_scope_rejects_bad_names() -> None:
    for bad in ("", "a/b", 3):
        with pytest.raises(ConfigurationError, match="name_scope"), name_scope(bad):  # type: ignore[arg-type]
            pass


def test_ops_under_no_trace_have_no_parents() -> None:
    x = Parameter(2, name="x")
    with no_trace():
        y = x * 3
    assert y.data == 6 and y.parents == () and y.inputs == ()
    y.backward("fb")
    assert x.feedback == []


def test_reads_are_recorded_minus_nodes_made_inside() -> None:
    a, b = Node(1, name="a"), Node(2, name="b")
    with recording_reads() as outer:
        _ = a.data
        with recording_reads() as inner:
            _ = b.data
            made = Node(3)
            _ = made.data
        _ = a.data
    assert outer.nodes() == [a]
    assert inner.nodes() == [b]


def _trace_own_graph(i: int, use_no_trace: bool) -> tuple[int, bool, list[str]]:
    """Build a small graph in a scope, yielding the GIL between ops; check everything is ours."""
    with name_scope(f"w{i}"):
        p = Parameter(i, name=f"p{i}")
        node: Any = p
        with recording_reads() as record:
            for k in range(20):
                if use_no_trace and k == 10:
                    with no_trace():
                        assert not is_tracing()
                        time.sleep(0.0005)
                node = node + 1
                _ = p.data
                time.sleep(0.0001)
        assert record.nodes() == [p]
        assert node.data == i + 20
        node.backward(f"feedback {i}")
        names = [n.name for n in p.feedback[0].subgraph]
        own = all(n == f"p{i}" or n.startswith(f"w{i}/") for n in names)
        ok = own and len(names) == 21 and [e.feedback.text for e in p.feedback] == [f"feedback {i}"]
        return i, ok and is_tracing(), names


def test_sixteen_threads_trace_their_own_graphs() -> None:
    results: dict[int, tuple[int, bool, list[str]]] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = _trace_own_graph(i, use_no_trace=i % 2 == 0)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(results) == list(range(16))
    assert all(ok for _, ok, _ in results.values())


def test_two_hundred_asyncio_tasks_trace_their_own_graphs() -> None:
    async def work(i: int) -> tuple[int, bool]:
        with name_scope(f"task{i}"):
            p = Parameter(float(i), name=f"q{i}")
            node: Any = p
            for k in range(10):
                if i % 3 == 0 and k == 5:
                    with no_trace():
                        await asyncio.sleep(0)
                        assert not is_tracing()
                node = node * 1 + 1
                await asyncio.sleep(0)
            node.backward(Node(0).name)  # any string
            sub = p.feedback[0].subgraph
            own = all(n is p or n.name.startswith(f"task{i}/") for n in sub)
            chain = [n for n in toposort(node) if isinstance(n, Parameter)]
            return i, own and len(sub) == 21 and len(chain) == 1 and chain[0] is p and is_tracing()

    async def main() -> list[tuple[int, bool]]:
        return await asyncio.gather(*(work(i) for i in range(200)))

    results = asyncio.run(main())
    assert [i for i, _ in results] == list(range(200))
    assert all(ok for _, ok in results)


# -- forward calls: the values user code reads to decide what to run ---------------------------------


def test_a_forward_records_each_value_read_once_in_first_read_order() -> None:
    a, b = Node(1, name="a"), Node(2, name="b")
    _ = a.data  # outside any forward call: nothing records it
    with forward_scope() as (forward, outermost):
        assert outermost and forward.control.parents == ()
        before = forward.control
        _ = b.data
        _ = a.data
        _ = b.data
        assert forward.control.parents == (b, a)
        assert before.parents == ()  # nodes made before the reads keep what held then
        assert forward.control.forward is forward
    assert state().forward is None
    assert forward.control == ((), None)  # closed: it no longer holds what points back at it


def test_reads_by_ops_under_no_trace_or_as_inputs_are_not_control_reads() -> None:
    a, b, c = Node(1, name="a"), Node(2, name="b"), Node(3, name="c")
    with forward_scope() as (forward, _):
        with recording_reads() as record:  # what a bundle does while its function runs
            _ = a.data
        with no_trace():
            _ = b.data
        note_input(c)
        assert forward.control.parents == ()
        assert record.nodes() == [a]


def test_a_nested_forward_joins_its_caller() -> None:
    a, b = Node(1, name="a"), Node(2, name="b")
    with forward_scope() as (outer, _):
        _ = a.data
        with forward_scope() as (inner, outermost):
            assert inner is outer and not outermost
            _ = b.data
        assert outer.control.parents == (a, b)


def test_trainable_values_read_count_as_used() -> None:
    p, frozen = Parameter("x", name="p"), Parameter("y", name="frozen", trainable=False)
    with forward_scope() as (forward, _):
        _ = p.data, frozen.data
    assert list(forward.used.values()) == [p]


def test_a_thread_that_did_not_inherit_the_context_records_no_control_read() -> None:
    a, b = Node(1, name="a"), Node(2, name="b")
    with forward_scope() as (forward, _):
        worker = threading.Thread(target=lambda: a.data)
        worker.start()
        worker.join()
        context = contextvars.copy_context()
        carried = threading.Thread(target=context.run, args=(lambda: b.data,))
        carried.start()
        carried.join()
        assert forward.control.parents == (b,)


def test_asyncio_tasks_started_in_a_forward_share_it() -> None:
    a = Node(1, name="a")

    async def read() -> None:
        _ = a.data

    async def main() -> tuple[Any, ...]:
        with forward_scope() as (forward, _):
            await asyncio.gather(read(), read())
            return forward.control.parents

    assert asyncio.run(main()) == (a,)


def test_a_graph_made_in_a_forward_is_freed_without_the_cycle_collector() -> None:
    x = Parameter(1, name="x")
    gc.disable()
    try:
        with forward_scope():
            mid = x + 1
            _ = mid.data
            out = mid * 2
        refs = [weakref.ref(mid), weakref.ref(out)]
        del mid, out
        assert all(r() is None for r in refs)
    finally:
        gc.enable()
