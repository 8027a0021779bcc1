"""Parallel evaluation with a guide."""

from __future__ import annotations

import threading
import time

import pytest

from feedprop.errors import BudgetExhausted, InvalidInputError
from feedprop.llm import MockLLM, track_usage
from feedprop.node import Feedback
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
