"""MMLU: dev as few-shot and train, test in file order, option letters as targets."""

from __future__ import annotations

import csv

import pytest

from feedprop.errors import ConfigurationError
from feedprop.tasks import MMLU_SUBJECTS, benchmarks_root, load_mmlu


@pytest.mark.parametrize("subject", MMLU_SUBJECTS)
def test_splits_follow_the_files(subject: str) -> None:
    with (benchmarks_root() / "mmlu" / "test" / f"{subject}_test.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    task = load_mmlu(subject)
    assert len(task.few_shot) == len(task.train) == 5 and task.val == ()
    assert len(task.test) == len(rows)
    first = task.test[0]
    assert first.input.startswith(rows[0][0].strip()) and f"(A) {rows[0][1].strip()}" in first.input
    assert first.target == f"({rows[0][5]})"
    assert task.guide(f"The answer is {first.target}.", first.target).score == 1.0


def test_unknown_subject() -> None:
    with pytest.raises(ConfigurationError, match="machine_learning"):
        load_mmlu("astronomy")
