"""The Example and Task shapes."""

from __future__ import annotations

import json

import pytest

from feedprop.errors import InvalidInputError
from feedprop.tasks import Example, Task
from feedprop.training.guide import ExactMatch, Numeric


def test_example_unpacks_and_round_trips_through_json() -> None:
    example = Example("2+2?", "4", {"id": 7})
    question, answer = example
    assert (question, answer) == ("2+2?", "4")
    data = json.loads(json.dumps(example.to_dict()))
    assert Example.from_dict(data) == example
    assert Example("q", "a").meta == {}
    with pytest.raises(InvalidInputError, match="'input' and 'target'"):
        Example.from_dict({"input": "q"})


def test_task_holds_tuples_and_checks_its_parts() -> None:
    task = Task("toy", train=[Example("a", "1")], val=[], test=[Example("b", "2"), Example("c", "3")], guide=Numeric())
    assert isinstance(task.train, tuple) and len(task.split("test")) == 2
    assert repr(task) == "Task('toy', train=1, val=0, test=2, guide=Numeric(abs_tol=1e-06, rel_tol=0.0))"
    with pytest.raises(InvalidInputError, match="choose one of train, val, test"):
        task.split("dev")
    with pytest.raises(InvalidInputError, match="must be a Guide"):
        Task("t", (), (), (), guide=lambda o, t: 1.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"Task.train\[0\] is a tuple, not an Example"):
        Task("t", [("q", "a")], (), (), guide=ExactMatch())  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="sequence of Example"):
        Task("t", "abc", (), (), guide=ExactMatch())  # type: ignore[arg-type]
