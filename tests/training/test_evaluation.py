"""Parallel evaluation with a guide."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from feedprop import ops
from feedprop.bundle import bundle
from feedprop.errors import BudgetExhausted, InvalidInputError
from feedprop.llm import MockLLM, track_usage
from feedprop.module import Module
from feedprop.node import Feedback, Node, Parameter
from feedprop.ops import llm_calls
from feedprop.tracing import name_scope, no_trace
from feedprop.training.data import as_items
from feedprop.training.evaluation import evaluate, run_items, to_feedback


def test_scores_and_outputs_come_back_in_order() -> None:
    def model(x: int) -> int:
        time.sleep(0.01 * (5 - x))  # later items finish first
        return x * 2

    result = evaluate(model, [(i, i * 2 if i % 2 == 0 else -1) for i in range(5)], lambda out, t: out == t)
    assert result.outputs == [0, 2, 4, 6, 8]
    assert result.scores == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert result.score == pytest.approx(0.6)
    assert len(result) == 5


def test_items_run_in_parallel_and_every_call_is_metered() -> None:
    llm = MockLLM(lambda messages, **params: messages[-1]["content"].upper(), latency=0.2)

    def model(x: str) -> str:
        return llm.complete([{"role": "user", "content": x}]).text

    data = [(f"q{i}", f"Q{i}") for i in range(16)]
    started = time.monotonic()
    with track_usage() as outer:
        result = evaluate(model, data, lambda out, t: out == t, max_workers=16)
    elapsed = time.monotonic() - started
    assert result.score == 1.0
    assert elapsed < 0.5 * 16 * 0.2, f"16 items of 0.2 s took {elapsed:.2f} s: not parallel"
    assert result.usage["calls"] == 16 and outer.calls == 16


def test_guides_may_take_the_example_and_return_feedback() -> None:
    seen: list[object] = []

    def guide(output: str, target: str, *, example: object = None) -> Feedback:
        seen.append(example)
        return Feedback("ok" if output == target else f"expected {target}", score=float(output == target))

    data = [{"input": "a", "target": "a", "id": 1}]
    result = evaluate(lambda x: x, data, guide)
    assert result.feedback[0].text == "ok" and seen == [data[0]]


def test_bad_guide_results_are_typed_errors() -> None:
    with pytest.raises(InvalidInputError, match="without a score"):
        to_feedback(Feedback("no score"), "g")
    with pytest.raises(InvalidInputError, match="must return"):
        to_feedback("great", "g")
    with pytest.raises(InvalidInputError, match="callable"):
        evaluate(lambda x: x, [("a", "a")], "not a guide")  # type: ignore[arg-type]
    assert to_feedback(0.25, "g").score == 0.25
    assert to_feedback(True, "g").text == "Correct."


def test_a_failure_stops_the_rest() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def model(x: int) -> int:
        with lock:
            started.append(x)
        if x == 0:
            raise RuntimeError("boom")
        time.sleep(0.05)
        return x

    with pytest.raises(RuntimeError, match="boom"):
        run_items(model, as_items([(i, i) for i in range(50)], "d"), lambda o, t: 1.0, max_workers=2)
    assert len(started) < 50, "items not yet started are cancelled after a failure"


def test_check_runs_before_each_item() -> None:
    calls = {"n": 0}

    def check() -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise BudgetExhausted("budget: seconds")

    with pytest.raises(BudgetExhausted):
        run_items(lambda x: x, as_items([(i, i) for i in range(10)], "d"), lambda o, t: 1.0, max_workers=1, check=check)
    assert calls["n"] == 4


# -- async workflows -------------------------------------------------------------------------------


class AsyncSolver(Module):
    """Asks its model with ops.allm_call; counts how many items are inside forward at once, and on which threads."""

    def __init__(self, llm: MockLLM) -> None:
        self.instruction = Parameter("Repeat the question.", name="instruction")
        self.llm = llm
        self.running = 0
        self.peak = 0
        self.threads: set[int] = set()

    async def forward(self, question: str) -> Node[Any]:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.threads.add(threading.get_ident())
        try:
            return await ops.allm_call(self.instruction, question, llm=self.llm)
        finally:
            self.running -= 1


def echo(latency: float = 0.05) -> MockLLM:
    return MockLLM(lambda messages, **params: messages[-1]["content"], latency=latency)


def test_an_async_workflows_items_run_concurrently_on_one_event_loop() -> None:
    model = AsyncSolver(echo())
    data = [(f"q{i}", f"q{i}" if i % 2 == 0 else "-") for i in range(8)]
    with track_usage() as outer:
        result = evaluate(model, data, lambda out, t: out == t, max_workers=4)
    assert result.outputs == [f"q{i}" for i in range(8)] and result.scores == [1.0, 0.0] * 4
    assert model.peak == 4, "max_workers items at once"
    assert len(model.threads) == 1, "all on one event loop, not in threads"
    assert result.usage["calls"] == 8 and outer.calls == 8


def test_concurrent_items_each_trace_in_their_own_context() -> None:
    llm = echo(latency=0.02)

    class Scoped(Module):
        def __init__(self) -> None:
            self.instruction = Parameter("Repeat.", name="instruction")

        async def forward(self, question: str) -> Any:
            with name_scope(question):
                if question == "quiet":  # no graph for this item, while the others trace theirs
                    with no_trace():
                        await asyncio.sleep(0.01)
                        return await ops.allm_call(self.instruction, question, llm=llm)
                first = await ops.allm_call(self.instruction, question, llm=llm)
                return await ops.allm_call(self.instruction, first, llm=llm)

    questions = ["a", "quiet", "b", "c"]
    outcomes = run_items(Scoped(), as_items([(q, q) for q in questions], "d"), lambda o, t: o == t, max_workers=4)
    for question, outcome in zip(questions, outcomes, strict=True):
        calls = llm_calls(outcome.output)
        if question == "quiet":
            assert calls == [outcome.output] and outcome.output.parents == (), "untraced: a leaf"
            continue
        assert [c.info["messages"][-1]["content"] for c in calls] == [question, question]
        assert all(c.name.startswith(f"{question}/") for c in calls), [c.name for c in calls]


def test_an_async_workflow_evaluates_inside_a_running_event_loop() -> None:
    async def notebook_cell() -> Any:
        return evaluate(AsyncSolver(echo(0.0)), [("a", "a"), ("b", "c")], lambda out, t: out == t)

    assert asyncio.run(notebook_cell()).scores == [1.0, 0.0]


def test_async_guides_and_plain_callables_returning_coroutines_are_awaited() -> None:
    inner = AsyncSolver(echo(0.0))

    class Wrapper(Module):  # a plain forward that calls an async sub-module
        def __init__(self) -> None:
            self.inner = inner

        def forward(self, question: str) -> Any:
            return self.inner(question)

    async def guide(output: str, target: str) -> float:
        await asyncio.sleep(0)
        return float(output == target)

    assert evaluate(Wrapper(), [("a", "a"), ("b", "c")], guide).scores == [1.0, 0.0]
    assert evaluate(inner, [("a", "a"), ("b", "c")], guide).scores == [1.0, 0.0]


def test_an_async_workflow_error_is_feedback_and_other_failures_stop_the_rest() -> None:
    @bundle()
    def parse(text: str) -> int:
        return int(text)

    class Parser(Module):
        async def forward(self, x: str) -> Any:
            await asyncio.sleep(0)
            if x == "stop":
                raise RuntimeError("not about the answer")
            return parse(x)

    result = evaluate(Parser(), [("1", 1), ("x", 1)], lambda out, t: out == t)
    assert result.scores == [1.0, 0.0] and result.errors == 1
    assert "invalid literal" in result.feedback[1].text
    with pytest.raises(RuntimeError, match="not about the answer"):
        evaluate(Parser(), [("stop", 0)] + [("1", 1)] * 5, lambda out, t: out == t, max_workers=1)


def test_check_runs_before_each_async_item() -> None:
    calls = {"n": 0}

    def check() -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise BudgetExhausted("budget: seconds")

    items = as_items([(f"q{i}", f"q{i}") for i in range(10)], "d")
    with pytest.raises(BudgetExhausted):
        run_items(AsyncSolver(echo(0.0)), items, lambda o, t: 1.0, max_workers=1, check=check)
    assert calls["n"] == 4


def test_a_call_budget_holds_exactly_for_concurrent_async_items() -> None:
    model = AsyncSolver(echo(0.01))
    data = [(f"q{i}", f"q{i}") for i in range(8)]
    with track_usage(max_calls=5) as meter, pytest.raises(BudgetExhausted):
        evaluate(model, data, lambda out, t: out == t, max_workers=8)
    assert meter.calls == 5
