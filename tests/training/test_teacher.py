"""A teacher answers in the student's place the items the workflow failed; its correct runs become demonstrations."""

from __future__ import annotations

from typing import Any

import pytest

from feedprop import ops
from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm import MockLLM
from feedprop.module import Module
from feedprop.node import Demos, Parameter
from feedprop.optim import BootstrapDemos
from feedprop.training import train
from feedprop.training.evaluation import ItemExecutor, LocalExecutor


class Adder(Module):
    def __init__(self, llm: Any) -> None:
        self.instruction = Parameter("Add the numbers.", name="instruction", trainable=False)
        self.shots = Demos(name="shots", max_demos=2)
        self.llm = llm

    def forward(self, question: Any) -> Any:
        return ops.strip(ops.llm_call(self.instruction, question, demos=self.shots, llm=self.llm))


def total(question: str) -> str:
    a, b = question.removeprefix("add ").split(" and ")
    return str(int(a) + int(b))


def student(messages: list[dict[str, str]], **params: Any) -> str:
    """Right only once it has seen a demonstration (an assistant turn before the question)."""
    shown = any(m["role"] == "assistant" for m in messages)
    return total(messages[-1]["content"]) if shown else "I do not know"


def teacher(messages: list[dict[str, str]], **params: Any) -> str:
    return total(messages[-1]["content"])


def items(start: int, n: int) -> list[tuple[str, str]]:
    return [(f"add {i} and {i + 1}", str(2 * i + 1)) for i in range(start, start + n)]


def exact(output: str, target: str) -> float:
    return float(output == target)


def test_the_teachers_correct_runs_become_the_students_demonstrations() -> None:
    model, tutor = Adder(MockLLM(student)), MockLLM(teacher)
    opt = BootstrapDemos([model.shots], labelled=False, n_candidates=2)
    train_set, val_set, test_set = items(0, 4), items(100, 3), items(200, 3)
    result = train(
        model, train_set, exact, opt, val_set=val_set, test_set=test_set, batch_size=2, teacher=tutor, progress=False
    )
    assert (result.test_before, result.test_after) == (0.0, 1.0)
    assert result.history[0]["teacher"] == {"failed": 2, "right": 2}
    demos = model.shots.data
    assert demos and all(d["output"] == total(d["input"]) for d in demos)
    assert {d["input"] for d in demos} <= {q for q, _ in train_set}, "never a validation or test item"
    assert len(tutor.calls) == 2, "the teacher answered the failed minibatch items only"
    assert result.config["teacher"] == tutor.model
    assert result.usage["optimizer"]["calls"] == 2, "the teacher's calls count as optimizer usage"


def test_without_a_teacher_the_failed_runs_give_no_demonstration() -> None:
    model = Adder(MockLLM(student))
    opt = BootstrapDemos([model.shots], labelled=False, n_candidates=2)
    result = train(model, items(0, 4), exact, opt, val_set=items(100, 3), batch_size=2, progress=False)
    assert model.shots.data == [] and result.val_after == 0.0
    assert "teacher" not in result.history[0]


def test_a_teacher_must_be_a_model_and_needs_the_local_executor() -> None:
    model = Adder(MockLLM(student))
    opt = BootstrapDemos([model.shots], labelled=False)
    with pytest.raises(InvalidInputError, match=r"teacher must be a feedprop\.llm\.LLM"):
        train(model, items(0, 2), exact, opt, teacher="gpt-4", progress=False)  # type: ignore[arg-type]

    class Elsewhere(ItemExecutor):
        def run_items(self, *args: Any, **kwargs: Any) -> Any:
            return LocalExecutor().run_items(*args, **kwargs)

    with pytest.raises(ConfigurationError, match="teacher= needs the local executor"):
        train(model, items(0, 2), exact, opt, teacher=MockLLM(teacher), executor=Elsewhere(), progress=False)


def test_answered_by_replaces_every_call_and_only_inside_its_block() -> None:
    student_llm, tutor = MockLLM("student"), MockLLM("teacher")
    with ops.answered_by(tutor):
        inside = ops.llm_call("Say who you are.", "who?", llm=student_llm)
    outside = ops.llm_call("Say who you are.", "who?", llm=student_llm)
    assert (inside.data, inside.info["answered_by"]) == ("teacher", tutor.model)
    assert outside.data == "student" and "answered_by" not in outside.info
    with pytest.raises(InvalidInputError), ops.answered_by("teacher"):  # type: ignore[arg-type]
        pass
