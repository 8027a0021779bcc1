"""GSM8K grade-school math with the published split.

Train is shuffled with ``random.Random(0)``; its first 200 problems are train and the next 300
val. Test is the 1,319 test problems in file order. The target is the number after ``####``
(thousands separators removed); ``meta["solution"]`` keeps the worked solution.

Example:
    >>> task = load_gsm8k()
    >>> len(task.train), len(task.val), len(task.test)
    (200, 300, 1319)
"""

from __future__ import annotations

import os
import random
from typing import Any

from feedprop.errors import ConfigurationError
from feedprop.tasks.data import data_file, read_jsonl
from feedprop.tasks.task import Example, Task
from feedprop.training.guide import Numeric

__all__ = ["load_gsm8k"]

TRAIN_SIZE = 200
VAL_SIZE = 300


def load_gsm8k(root: str | os.PathLike[str] | None = None, *, seed: int = 0) -> Task:
    """Load GSM8K: 200 train / 300 val from the shuffled train file, the 1,319 test problems."""
    train_rows = _examples(read_jsonl(data_file("gsm8k/train.jsonl", root)), "train")
    test_rows = _examples(read_jsonl(data_file("gsm8k/test.jsonl", root)), "test")
    random.Random(seed).shuffle(train_rows)
    return Task(
        name="gsm8k",
        train=tuple(train_rows[:TRAIN_SIZE]),
        val=tuple(train_rows[TRAIN_SIZE : TRAIN_SIZE + VAL_SIZE]),
        test=tuple(test_rows),
        guide=Numeric(),
        description="Solve the grade-school math word problem; end with the numeric answer.",
    )


def _examples(rows: list[dict[str, Any]], split: str) -> list[Example]:
    out = []
    for i, row in enumerate(rows):
        answer = row.get("answer", "")
        if "####" not in answer:
            raise ConfigurationError(f"gsm8k/{split}.jsonl row {i} has no '#### <number>' answer; restore the file")
        number = answer.rpartition("####")[2]
        out.append(
            Example(row["question"], number.strip().replace(",", ""), {"index": i, "split": split, "solution": answer})
        )
    return out
