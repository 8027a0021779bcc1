"""Harvesting fine-tuning examples from the student's calls in successful runs."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from feedprop import ops
from feedprop.agent import run_agent
from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.joint.sft import SFTExample
from feedprop.joint.student import Student
from feedprop.joint.traces import collect_examples, llm_calls
from feedprop.llm import Completion, MockLLM, ToolCall
from feedprop.module import Module
from feedprop.node import Node, Parameter
from feedprop.tool import Tool

ANSWERS = {"one plus one": "2", "two plus two": "4", "three plus three": "6"}
DATA = [(q, a) for q, a in ANSWERS.items()]


class Pipeline(Module):
    """Student answers; a separate checker model is also called (its calls must not be harvested)."""

    def __init__(self, checker: MockLLM) -> None:
        self.instruction = Parameter("Reply with the number only.", name="instruction")
        self.student = Student("qwen2.5-coder-0.5b", cache=False)
        self.checker = checker

    def forward(self, question: str) -> Node[Any]:
        reply = ops.llm_call(self.instruction, question, llm=self.student, temperature=0)
        verdict = ops.llm_call(None, "Is this plausible?", reply, llm=self.checker)
        return ops.strip(ops.replace(reply, verdict, ""))  # the output depends on both calls


def exact(output: Any, target: Any) -> float:
    return float(output == target)


def teacher_that_misses_six(messages: Any, **params: Any) -> str:
    answer = ANSWERS[messages[-1]["content"]]
    return " 7 " if answer == "6" else f" {answer} "


def test_only_the_students_calls_in_successful_runs_become_examples() -> None:
    model = Pipeline(MockLLM("yes.", model="checker"))
    harvest = collect_examples(model, DATA, exact, model.student, teacher=MockLLM(teacher_that_misses_six))
    assert harvest.runs == 3 and harvest.successes == 2 and harvest.success_rate == pytest.approx(2 / 3)
    assert harvest.scores == [[1.0, 1.0, 0.0]]
    assert harvest.other_calls == 2  # the checker's calls in the two successful runs
    system = {"role": "system", "content": "Reply with the number only."}
    assert harvest.examples == [
        SFTExample.from_messages([system, {"role": "user", "content": "one plus one"}], " 2 "),
        SFTExample.from_messages([system, {"role": "user", "content": "two plus two"}], " 4 "),
    ]
    assert harvest.summary()["examples"] == 2


def test_on_done_sees_every_run_of_every_sample() -> None:
    model = Pipeline(MockLLM("yes.", model="checker"))
    seen: list[float] = []
    teacher = MockLLM(teacher_that_misses_six)
    collect_examples(
        model,
        DATA,
        exact,
        model.student,
        teacher=teacher,
        samples=2,
        temperature=0.5,
        on_done=lambda o: seen.append(o.score),
    )
    assert sorted(seen) == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]


def test_without_a_teacher_the_students_own_replies_are_used(fake_engine: Any) -> None:
    fake_engine.handler = staticmethod(lambda engine, messages, params: ANSWERS[messages[-1]["content"]])
    model = Pipeline(MockLLM("yes"))
    harvest = collect_examples(model, DATA, exact, model.student)
    assert harvest.successes == 3
    assert [e.response for e in harvest.examples] == ["2", "4", "6"]
    assert model.training is True  # collection ran in eval mode and restored the mode


def test_several_samples_at_a_temperature_and_duplicates_dropped() -> None:
    counter = itertools.count()

    def varied(messages: Any, **params: Any) -> str:
        assert params["temperature"] == 0.9  # the override reached the model
        n = next(counter)
        answer = ANSWERS[messages[-1]["content"]]
        return answer if n % 2 == 0 else f"{answer}\n"

    model = Pipeline(MockLLM("yes"))
    harvest = collect_examples(
        model, DATA[:1], exact, model.student, teacher=MockLLM(varied), samples=4, temperature=0.9
    )
    assert harvest.runs == 4 and harvest.successes == 4
    assert sorted(e.response for e in harvest.examples) == ["2", "2\n"]


def test_bad_arguments() -> None:
    model = Pipeline(MockLLM("yes"))
    with pytest.raises(InvalidInputError, match="Student"):
        collect_examples(model, DATA, exact, MockLLM("x"))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="temperature"):
        collect_examples(model, DATA, exact, model.student, samples=2)
    with pytest.raises(ConfigurationError, match="samples"):
        collect_examples(model, DATA, exact, model.student, samples=0)


def test_llm_calls_walks_deep_graphs_without_recursion() -> None:
    node: Node[Any] = ops.llm_call(None, "start", llm=MockLLM("x"))
    first = node
    for _ in range(5000):
        node = node + "y"
    assert llm_calls(node) == [first]


class ToolUser(Module):
    """The student answers in a conversation with a tool: its turns are not role/text examples."""

    def __init__(self) -> None:
        self.student = Student("qwen2.5-coder-0.5b", cache=False)
        self.tools = [Tool(lambda question: ANSWERS[question], "The answer.", name="answer")]

    def forward(self, question: str) -> Node[Any]:
        return ops.strip(run_agent(None, question, tools=self.tools, llm=self.student, temperature=0))


def test_turns_that_offered_tools_are_not_harvested() -> None:
    def teacher(messages: Any, **params: Any) -> str | Completion:
        if messages[-1]["role"] == "tool":
            return messages[-1]["content"]
        question = json.dumps({"question": messages[-1]["content"]})
        return Completion("", tool_calls=(ToolCall("c", "answer", question),))

    model = ToolUser()
    harvest = collect_examples(model, DATA, exact, model.student, teacher=MockLLM(teacher))
    assert harvest.successes == 3 and harvest.other_calls == 0 and harvest.examples == []
