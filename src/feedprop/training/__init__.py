"""Training: ``train()`` runs the whole loop, ``evaluate()`` scores a model, ``Budget`` caps the spend,
and the guides (the loss functions) score one output against its target. Items run in local threads
or, with ``executor="ray"`` (:class:`RayExecutor`), as tasks on a Ray cluster.

Example:
    >>> from feedprop.training import Budget, ExactMatch
    >>> Budget(calls=200, scope="optimizer").calls, ExactMatch()("42", "42").score
    (200, 1.0)
"""

from feedprop.training.budget import Budget, RunUsage
from feedprop.training.config import TrainConfig
from feedprop.training.distributed import RayExecutor
from feedprop.training.evaluation import Evaluation, ItemExecutor, LocalExecutor, evaluate
from feedprop.training.guide import ExactMatch, Guide, MultipleChoice, Numeric
from feedprop.training.judge import LLMJudge
from feedprop.training.screening import Screening, screen
from feedprop.training.trainer import TrainResult, train
from feedprop.training.unit_test import UnitTest

__all__ = [
    "Budget",
    "Evaluation",
    "ExactMatch",
    "Guide",
    "ItemExecutor",
    "LLMJudge",
    "LocalExecutor",
    "MultipleChoice",
    "Numeric",
    "RayExecutor",
    "RunUsage",
    "Screening",
    "TrainConfig",
    "TrainResult",
    "UnitTest",
    "evaluate",
    "screen",
    "train",
]
