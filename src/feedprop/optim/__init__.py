"""Optimizers: turn propagated feedback into new parameter values.

* :class:`OptoPrime` — one call sees the whole traced problem and rewrites every parameter.
* :class:`Hindsight` — OptoPrime that learns across steps which edits help (trust, step size,
  back-off, recurring feedback).
* :class:`TextualGradientDescent` — TextGrad-style, one call per parameter, with momentum.
* :class:`OPRO` — a scored history of values, no graph.
* :class:`Compose` — several optimizers as one, each for its own parameters.
* :func:`recommended` — the default: demonstrations, rewrites and structured values, each to its own.
* :class:`BootstrapDemos` — fills :class:`~feedprop.node.Demos` parameters from well-scored runs
  (and labelled training items); no model call.
* :class:`Reflect` — for small models: per parameter, one diagnosis, then n plain rewrites.

All share :class:`Optimizer`: ``propose()`` returns a :class:`Proposal` of validated
:class:`Candidate` updates without touching the parameters, ``apply()`` sets one, ``step()``
does both. Those that ask a model do it through a :class:`Conversation`.

Example:
    >>> from feedprop.node import Parameter
    >>> from feedprop.llm import MockLLM
    >>> x = Parameter(1.0, name="x")
    >>> (x * 2).backward("the output should be larger by 4")
    >>> opt = OptoPrime([x], llm=MockLLM('{"reasoning": "y = 2x", "suggestion": {"x": 3.0}}'))
    >>> proposal = opt.propose(); x.data
    1.0
    >>> opt.apply(proposal); x.data
    3.0
"""

from feedprop.optim.bootstrap import BootstrapDemos
from feedprop.optim.compose import Compose
from feedprop.optim.conversation import Conversation
from feedprop.optim.hindsight import Hindsight
from feedprop.optim.keys import KeyMatch, match_key
from feedprop.optim.opro import OPRO
from feedprop.optim.optimizer import COMMON_DEFAULTS, Candidate, Optimizer, Proposal, Rejection
from feedprop.optim.optoprime import OptoPrime
from feedprop.optim.recommended import recommended
from feedprop.optim.reflect import Reflect
from feedprop.optim.replies import Reply, parse_reply
from feedprop.optim.tgd import TextualGradientDescent

__all__ = [
    "COMMON_DEFAULTS",
    "OPRO",
    "BootstrapDemos",
    "Candidate",
    "Compose",
    "Conversation",
    "Hindsight",
    "KeyMatch",
    "Optimizer",
    "OptoPrime",
    "Proposal",
    "Reflect",
    "Rejection",
    "Reply",
    "TextualGradientDescent",
    "match_key",
    "parse_reply",
    "recommended",
]
