"""Every task loads by name; the package's public names."""

from __future__ import annotations

import pytest

import feedprop.tasks as tasks
from feedprop.errors import ConfigurationError


def test_every_named_task_loads_with_nonempty_test_split() -> None:
    assert len(tasks.TASK_NAMES) == len(set(tasks.TASK_NAMES)) == 19 + 4 + 4
    for name in tasks.TASK_NAMES:
        task = tasks.load_task(name)
        assert task.name == name
        assert task.test and all(isinstance(e, tasks.Example) for e in task.test)


def test_unknown_task_lists_the_choices() -> None:
    with pytest.raises(ConfigurationError, match="choose one of: bbh/causal_judgement"):
        tasks.load_task("bbh/boolean_expressions")


def test_public_names_exist_once() -> None:  # (their order is checked by ruff's RUF022)
    assert len(set(tasks.__all__)) == len(tasks.__all__)
    for name in tasks.__all__:
        assert hasattr(tasks, name), name
