"""Screening a candidate on its parent's minibatch: unchanged LLM calls are replayed, never re-asked."""

from __future__ import annotations

import re
from typing import Any

import pytest

from feedprop import ops
from feedprop.bundle import bundle
from feedprop.errors import BudgetExhausted, InvalidInputError
from feedprop.llm import LLM, MockLLM, track_usage
from feedprop.module import Module
from feedprop.node import Feedback, MessageNode, Node, Parameter
from feedprop.sandbox import InProcessExecutor, SandboxExecutor, default_executor
from feedprop.training import LocalExecutor, Screening, screen
from feedprop.training.data import as_items
from feedprop.training.evaluation import Outcome, run_items
from feedprop.training.screening import recorded_calls

IN_PROCESS = InProcessExecutor()

QUESTIONS = {
    "I have a flute and two pianos. How many instruments?": 3,
    "I have a cow, a goat and four hens. How many animals?": 6,
    "I have a pear. How many fruits?": 1,
}
ITEMS = as_items([(q, str(n)) for q, n in QUESTIONS.items()], "items")

LAST_NUMBER = """def extract_answer(self, response):
    import re

    numbers = re.findall(r"\\d+", response)
    return numbers[-1] if numbers else response.strip()"""


def counting_model(messages: list[dict[str, str]], **params: Any) -> str:
    """Works through the question (so the first number is wrong), or answers tersely if told to."""
    question = messages[-1]["content"]
    count = QUESTIONS.get(question)
    if count is None:
        return "I cannot tell."
    if "number only" in messages[0]["content"]:
        return str(count)
    return f"1. one thing 2. another thing, so {count}"


def exact(output: Any, target: Any) -> Feedback:
    return Feedback("Correct." if output == target else f"Expected {target}.", score=float(output == target))


class Counter(Module):
    """An LLM call answers, then trainable code extracts the number (the first one: wrong)."""

    def __init__(self, llm: LLM) -> None:
        self.instruction = Parameter("Answer the question.", name="instruction", description="system prompt")
        self.llm = llm

    @bundle(trainable=True)
    def extract_answer(self, response: str) -> str:
        import re

        numbers = re.findall(r"\d+", response)
        return numbers[0] if numbers else response.strip()

    def forward(self, question: Any) -> Node[Any]:
        response: MessageNode[str] = ops.llm_call(self.instruction, question, llm=self.llm, temperature=0.0)
        out: Node[Any] = self.extract_answer(response)
        return out


class InProcessCounter(Counter):
    """The same workflow, its code run in this process (fast), raising when the reply holds no number."""

    @bundle(trainable=True, executor=IN_PROCESS)
    def extract_answer(self, response: str) -> str:
        return str(re.findall(r"\d+", response)[0])


class TwoCalls(Module):
    """Two LLM calls in a row (a rewrite, then the answer), then the extractor."""

    def __init__(self, llm: LLM) -> None:
        self.rewrite = Parameter("Repeat the question.", name="rewrite", description="first system prompt")
        self.instruction = Parameter("Answer the question.", name="instruction", description="second system prompt")
        self.llm = llm

    @bundle(trainable=True, executor=IN_PROCESS)
    def extract_answer(self, response: str) -> str:
        return str(re.findall(r"\d+", response)[-1])

    def forward(self, question: Any) -> Node[Any]:
        restated = ops.llm_call(self.rewrite, question, llm=self.llm, temperature=0.0)
        response = ops.llm_call(self.instruction, restated, llm=self.llm, temperature=0.0)
        out: Node[Any] = self.extract_answer(response)
        return out


def two_call_model(messages: list[dict[str, str]], **params: Any) -> str:
    system, user = messages[0]["content"], messages[-1]["content"]
    if system.startswith("Repeat"):
        return user  # the restated question is the question
    if system.startswith("Restate"):
        return user + " Count carefully."
    return counting_model([{"role": "system", "content": system}, {"role": "user", "content": user.split(" Count")[0]}])


def test_screening_a_changed_extractor_makes_zero_llm_calls_and_scores_it() -> None:
    llm = MockLLM(counting_model)
    model = Counter(llm)
    assert isinstance(default_executor(), SandboxExecutor)  # the candidate's code runs sandboxed
    with track_usage() as parent_usage:
        parent = run_items(model, ITEMS, exact)
    assert [o.score for o in parent] == [0.0, 0.0, 1.0]  # the first number is wrong on two of three
    assert parent_usage.calls == 3 == len(llm.calls)

    model.extract_answer.parameter.set(LAST_NUMBER)
    with track_usage() as usage:
        result = screen(model, ITEMS, exact, parent)
    assert isinstance(result, Screening)
    assert result.scores == [1.0, 1.0, 1.0] and result.score == 1.0
    assert (result.calls, result.saved) == (0, 3)
    assert len(llm.calls) == 3  # not one more
    assert (usage.calls, usage.total_tokens, usage.replayed) == (0, 0, 3)
    assert [o.output.data for o in result.outcomes] == ["3", "6", "1"]
    # the outcomes are traced graphs like any run's: feedback reaches the candidate's code
    assert model.extract_answer.parameter in result.outcomes[0].output.parents


def test_screening_a_changed_prompt_asks_the_model_for_the_changed_calls_only() -> None:
    llm = MockLLM(counting_model)
    model = InProcessCounter(llm)
    parent = run_items(model, ITEMS, exact)
    assert len(llm.calls) == 3

    model.instruction.set("Answer the question with the number only.")
    with track_usage() as usage:
        result = screen(model, ITEMS, exact, parent)
    assert result.scores == [1.0, 1.0, 1.0]
    assert (result.calls, result.saved) == (3, 0) == (usage.calls, usage.replayed)
    assert len(llm.calls) == 6
    assert all("number only" in call.messages[0]["content"] for call in llm.calls[3:])


def test_only_the_calls_a_changed_prompt_reaches_are_made_again() -> None:
    llm = MockLLM(two_call_model)
    model = TwoCalls(llm)
    parent = run_items(model, ITEMS, exact)
    assert len(llm.calls) == 6 and [o.score for o in parent] == [1.0, 1.0, 1.0]

    # the second prompt changed: the first calls replay, the second ones are new
    model.instruction.set("Answer with the number only.")
    changed_second = screen(model, ITEMS, exact, parent)
    assert (changed_second.calls, changed_second.saved) == (3, 3)
    assert changed_second.scores == [1.0, 1.0, 1.0]

    # the first prompt changed: its calls are new, and so are the second calls they feed a new input
    model.instruction.set("Answer the question.")
    model.rewrite.set("Restate the question.")
    changed_first = screen(model, ITEMS, exact, parent)
    assert (changed_first.calls, changed_first.saved) == (6, 0)

    # a prompt changed back to the parent's: everything replays
    model.rewrite.set("Repeat the question.")
    same = screen(model, ITEMS, exact, parent)
    assert (same.calls, same.saved) == (0, 6)
    assert len(llm.calls) == 6 + 3 + 6


def test_a_workflow_error_in_the_parent_run_still_replays() -> None:
    llm = MockLLM(counting_model)
    model = InProcessCounter(llm)
    items = as_items([*[(i.input, i.target) for i in ITEMS], ("How many stars are there?", "I cannot tell.")], "items")
    parent = run_items(model, items, exact)
    assert parent[3].error is not None and parent[3].output is None  # no number: the code raised
    assert len(llm.calls) == 4

    model.extract_answer.parameter.set(LAST_NUMBER)
    result = screen(model, items, exact, parent)
    assert (result.calls, result.saved) == (0, 4)
    assert result.scores == [1.0, 1.0, 1.0, 1.0] and result.outcomes[3].error is None
    assert len(llm.calls) == 4


def test_a_candidate_that_raises_is_scored_zero_without_calls() -> None:
    llm = MockLLM(counting_model)
    model = InProcessCounter(llm)
    parent = run_items(model, ITEMS, exact)
    model.extract_answer.parameter.set("def extract_answer(self, response):\n    return 1 / 0")
    result = screen(model, ITEMS, exact, parent)
    assert result.scores == [0.0, 0.0, 0.0] and all(o.error is not None for o in result.outcomes)
    assert (result.calls, result.saved) == (0, 3)


def test_real_calls_count_in_the_callers_meters_and_budget() -> None:
    llm = MockLLM(counting_model)
    model = InProcessCounter(llm)
    parent = run_items(model, ITEMS, exact)
    model.instruction.set("Answer the question with the number only.")
    with track_usage(max_calls=1), pytest.raises(BudgetExhausted):
        screen(model, ITEMS, exact, parent, max_workers=1)
    model.extract_answer.parameter.set(LAST_NUMBER)
    model.instruction.set("Answer the question.")
    with track_usage(max_calls=0) as usage:  # a screening that makes no call needs no budget
        result = screen(model, ITEMS, exact, parent, executor=LocalExecutor(), max_workers=2)
    assert result.score == 1.0 and usage.replayed == 3


def test_records_come_from_every_llm_call_of_the_outcomes_graphs() -> None:
    llm = MockLLM(two_call_model)
    parent = run_items(TwoCalls(llm), ITEMS[:1], exact)
    calls = recorded_calls(parent)
    assert [c.messages[0]["content"] for c in calls] == ["Repeat the question.", "Answer the question."]
    assert all(c.model == "mock" and c.params == {"temperature": 0} for c in calls)
    question = ITEMS[0].input
    assert [c.text for c in calls] == [question, "1. one thing 2. another thing, so 3"]
    assert calls[1].messages[-1]["content"] == question  # the second call read the first one's reply


def test_outcomes_without_a_graph_hold_no_records() -> None:
    plain = Outcome(0, "3", Feedback("ok", score=1.0))
    assert recorded_calls([plain]) == []
    with pytest.raises(InvalidInputError, match="Outcome"):
        recorded_calls(["3"])  # type: ignore[list-item]
