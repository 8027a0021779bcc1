"""Every task by name, so benchmarks and the command line can say ``"bbh/navigate"``.

Example:
    >>> load_task("bbh/object_counting").name
    'bbh/object_counting'
"""

from __future__ import annotations

import os

from feedprop.errors import ConfigurationError
from feedprop.tasks.bbh import BBH_TASKS, load_bbh
from feedprop.tasks.code import load_humaneval, load_mbpp
from feedprop.tasks.game24 import load_game24
from feedprop.tasks.gsm8k import load_gsm8k
from feedprop.tasks.mmlu import MMLU_SUBJECTS, load_mmlu
from feedprop.tasks.task import Task

__all__ = ["TASK_NAMES", "load_task"]

#: Every name :func:`load_task` accepts.
TASK_NAMES = (
    *(f"bbh/{t}" for t in BBH_TASKS),
    "game24",
    "gsm8k",
    "humaneval",
    "mbpp",
    *(f"mmlu/{s}" for s in MMLU_SUBJECTS),
)


def load_task(name: str, root: str | os.PathLike[str] | None = None) -> Task:
    """Load the task called ``name`` (one of :data:`TASK_NAMES`) with its default protocol.

    ``root`` is the benchmarks root for the tasks read from it (HumanEval and Game of 24 come
    from installed packages and ignore it).
    """
    family, _, member = name.partition("/")
    if family == "bbh" and member in BBH_TASKS:
        return load_bbh(member, root)
    if family == "mmlu" and member in MMLU_SUBJECTS:
        return load_mmlu(member, root)
    if name == "gsm8k":
        return load_gsm8k(root)
    if name == "mbpp":
        return load_mbpp(root)
    if name == "humaneval":
        return load_humaneval()
    if name == "game24":
        return load_game24()
    raise ConfigurationError(f"unknown task {name!r}; choose one of: {', '.join(TASK_NAMES)}")
