"""BIG-Bench Hard: 19 reasoning tasks with the published splits.

``load_bbh(task)`` reads ``bbh/bbh/<task>.json`` from the benchmarks root and splits it in file
order. ``protocol="textgrad"`` (default) takes the first 50 examples as train, the next 100 as
val and the rest as test; ``protocol="trace"`` takes 15 / 5 / rest. The three chain-of-thought
demonstrations of ``cot-prompts/<task>.txt`` become ``few_shot`` (target: the final answer;
``meta["rationale"]``: the worked answer).

Each task gets the guide its targets call for: :class:`~feedprop.training.guide.Numeric` for the
two arithmetic tasks, :class:`~feedprop.training.guide.MultipleChoice` for the ``(A)``-style tasks,
and :class:`~feedprop.training.guide.ExactMatch` on the final answer otherwise.

Example:
    >>> task = load_bbh("object_counting")
    >>> len(task.train), len(task.val), len(task.test)
    (50, 100, 100)
"""

from __future__ import annotations

import os
import re

from feedprop.errors import ConfigurationError
from feedprop.tasks.data import data_file, read_json
from feedprop.tasks.task import Example, Task
from feedprop.training.answers import final_answer
from feedprop.training.guide import ExactMatch, Guide, MultipleChoice, Numeric

__all__ = ["BBH_PROTOCOLS", "BBH_TASKS", "bbh_guide", "load_bbh"]

#: The BBH tasks in the benchmarks root (19 of the 27 published), by their file names.
BBH_TASKS = (
    "causal_judgement",
    "date_understanding",
    "disambiguation_qa",
    "dyck_languages",
    "formal_fallacies",
    "geometric_shapes",
    "hyperbaton",
    "logical_deduction_five_objects",
    "logical_deduction_seven_objects",
    "logical_deduction_three_objects",
    "movie_recommendation",
    "multistep_arithmetic_two",
    "navigate",
    "object_counting",
    "reasoning_about_colored_objects",
    "ruin_names",
    "salient_translation_error_detection",
    "snarks",
    "word_sorting",
)

#: Published splits as (train size, val size); the rest of the file is test.
BBH_PROTOCOLS = {"textgrad": (50, 100), "trace": (15, 5)}

# Chosen from the targets in the data: numbers, free text, or option letters.
_NUMERIC = {"object_counting", "multistep_arithmetic_two"}
_LABELS = {"causal_judgement", "navigate", "formal_fallacies"}  # Yes/No, valid/invalid: case does not matter
_TEXT = {"dyck_languages", "word_sorting"}


def bbh_guide(task: str) -> Guide:
    """The guide that scores answers of BBH ``task``.

    Example:
        >>> bbh_guide("navigate")
        ExactMatch(normalize_whitespace=True, ignore_case=True, extract=True)
    """
    _check_task(task)
    if task in _NUMERIC:
        return Numeric()
    if task in _LABELS:
        return ExactMatch(ignore_case=True, extract=True)
    if task in _TEXT:
        return ExactMatch(extract=True)
    return MultipleChoice()


def load_bbh(task: str, root: str | os.PathLike[str] | None = None, *, protocol: str = "textgrad") -> Task:
    """Load BBH ``task`` split by ``protocol`` (``"textgrad"``: 50/100/rest, ``"trace"``: 15/5/rest)."""
    _check_task(task)
    if protocol not in BBH_PROTOCOLS:
        raise ConfigurationError(f"unknown BBH protocol {protocol!r}; choose one of {', '.join(BBH_PROTOCOLS)}")
    data = read_json(data_file(f"bbh/bbh/{task}.json", root))
    rows = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ConfigurationError(f"bbh/bbh/{task}.json has no 'examples' list; restore it from its source")
    examples = [Example(row["input"], row["target"], {"task": task, "index": i}) for i, row in enumerate(rows)]
    n_train, n_val = BBH_PROTOCOLS[protocol]
    few_shot, description = _cot_prompt(task, root)
    return Task(
        name=f"bbh/{task}",
        train=tuple(examples[:n_train]),
        val=tuple(examples[n_train : n_train + n_val]),
        test=tuple(examples[n_train + n_val :]),
        guide=bbh_guide(task),
        few_shot=few_shot,
        description=description,
    )


def _check_task(task: str) -> None:
    if task not in BBH_TASKS:
        raise ConfigurationError(f"unknown BBH task {task!r}; choose one of: {', '.join(BBH_TASKS)}")


def _cot_prompt(task: str, root: str | os.PathLike[str] | None) -> tuple[tuple[Example, ...], str]:
    """The task's chain-of-thought demonstrations and one-line description, or nothing if absent."""
    try:
        text = data_file(f"bbh/cot-prompts/{task}.txt", root).read_text(encoding="utf-8")
    except ConfigurationError:
        return (), ""
    body = text.split("-----", 1)[-1].strip()
    parts = re.split(r"^Q: ", body, flags=re.MULTILINE)
    description = parts[0].strip()
    shots = []
    for block in parts[1:]:
        question, sep, answer = block.partition("\nA: ")
        if sep:
            answer = answer.strip()
            shots.append(Example(question.strip(), final_answer(answer), {"rationale": answer, "task": task}))
    return tuple(shots), description
