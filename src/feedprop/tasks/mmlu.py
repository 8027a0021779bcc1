"""MMLU multiple-choice questions for the subjects in the benchmarks root.

Each subject has 5 dev questions (the standard 5-shot demonstrations) and its test questions.
MMLU has no published split for optimizing prompts: the dev questions serve as both
``few_shot`` and ``train``, ``val`` is empty, and ``test`` is every test question in file order.
An input lists the options as ``(A) ...`` lines; the target is the letter as ``"(C)"``.

Example:
    >>> task = load_mmlu("machine_learning")
    >>> len(task.train), len(task.test), task.test[0].target in ("(A)", "(B)", "(C)", "(D)")
    (5, 105, True)
"""

from __future__ import annotations

import os

from feedprop.errors import ConfigurationError
from feedprop.tasks.data import data_file, read_csv
from feedprop.tasks.task import Example, Task
from feedprop.training.guide import MultipleChoice

__all__ = ["MMLU_SUBJECTS", "load_mmlu"]

#: The subjects whose files are in the benchmarks root.
MMLU_SUBJECTS = ("college_physics", "formal_logic", "high_school_mathematics", "machine_learning")


def load_mmlu(subject: str, root: str | os.PathLike[str] | None = None) -> Task:
    """Load MMLU ``subject``: dev (5) as train and few-shot, all test questions as test."""
    if subject not in MMLU_SUBJECTS:
        raise ConfigurationError(f"unknown MMLU subject {subject!r}; choose one of: {', '.join(MMLU_SUBJECTS)}")
    dev = _examples(subject, "dev", root)
    return Task(
        name=f"mmlu/{subject}",
        train=dev,
        val=(),
        test=_examples(subject, "test", root),
        guide=MultipleChoice(),
        few_shot=dev,
        description=f"Answer the multiple-choice question about {subject.replace('_', ' ')}; end with (X).",
    )


def _examples(subject: str, split: str, root: str | os.PathLike[str] | None) -> tuple[Example, ...]:
    relative = f"mmlu/{split}/{subject}_{split}.csv"
    out = []
    for i, row in enumerate(read_csv(data_file(relative, root), header=False)):
        if len(row) != 6 or row[5].strip() not in ("A", "B", "C", "D"):
            raise ConfigurationError(f"{relative} row {i + 1} is not 'question,A,B,C,D,answer'; restore the file")
        question, *options, answer = (cell.strip() for cell in row)
        lines = [f"({letter}) {option}" for letter, option in zip("ABCD", options, strict=True)]
        text = "\n".join([question, *lines])
        out.append(Example(text, f"({answer})", {"subject": subject, "split": split, "index": i}))
    return tuple(out)
