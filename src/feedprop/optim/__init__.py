"""Optimizers: turn propagated feedback into new parameter values.

Example:
    >>> from feedprop.optim import Optimizer, Proposal
    >>> issubclass(Optimizer, object) and Proposal().candidates == []
    True
"""

from feedprop.optim.keys import KeyMatch, match_key
from feedprop.optim.optimizer import Candidate, Optimizer, Proposal, Rejection

__all__ = ["Candidate", "KeyMatch", "Optimizer", "Proposal", "Rejection", "match_key"]
