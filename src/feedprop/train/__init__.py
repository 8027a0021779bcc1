"""Training: ``train()`` runs the whole loop, ``evaluate()`` scores a model, ``Budget`` caps the spend.

Example:
    >>> from feedprop.train import Budget
    >>> Budget(calls=200, scope="optimizer").calls
    200
"""

from feedprop.train.budget import Budget, RunUsage
from feedprop.train.evaluate import Evaluation, evaluate
from feedprop.train.trainer import TrainResult, train

__all__ = ["Budget", "Evaluation", "RunUsage", "TrainResult", "evaluate", "train"]
