"""Benchmark tasks with their published splits and scorers.

Example:
    >>> from feedprop.tasks import load_gsm8k
    >>> task = load_gsm8k()
    >>> task.guide("... so she makes 18 dollars.", task.test[0].target).score
    1.0
"""

from feedprop.tasks.bbh import BBH_PROTOCOLS, BBH_TASKS, bbh_guide, load_bbh
from feedprop.tasks.code import MBPP_KNOWN_ISSUES, MBPP_SPLITS, load_humaneval, load_mbpp, reference_solution
from feedprop.tasks.data import ENV_VAR, benchmarks_root
from feedprop.tasks.game24 import Game24, load_game24, solve24
from feedprop.tasks.gsm8k import load_gsm8k
from feedprop.tasks.mmlu import MMLU_SUBJECTS, load_mmlu
from feedprop.tasks.registry import TASK_NAMES, load_task
from feedprop.tasks.task import SPLITS, Example, Task

__all__ = [
    "BBH_PROTOCOLS",
    "BBH_TASKS",
    "ENV_VAR",
    "MBPP_KNOWN_ISSUES",
    "MBPP_SPLITS",
    "MMLU_SUBJECTS",
    "SPLITS",
    "TASK_NAMES",
    "Example",
    "Game24",
    "Task",
    "bbh_guide",
    "benchmarks_root",
    "load_bbh",
    "load_game24",
    "load_gsm8k",
    "load_humaneval",
    "load_mbpp",
    "load_mmlu",
    "load_task",
    "reference_solution",
    "solve24",
]
