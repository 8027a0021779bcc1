"""``recommended()``: the optimizer feedprop recommends, one per parameter kind, as one.

Each kind of parameter gets the optimizer that works for it with a small model:

- demonstrations (:class:`~feedprop.node.Demos`) → :class:`~feedprop.optim.BootstrapDemos`:
  chosen from runs the guide scored well (and labelled training items), no model call;
- prompts and code → :class:`~feedprop.optim.Reflect`: one diagnosis, then several plain rewrites
  (half of a prompt's rewrites with a tip on another way of asking);
- numbers and JSON values → :class:`~feedprop.optim.OptoPrime` (JSON-schema replies where the
  model supports them).

They are joined by :class:`~feedprop.optim.Compose`, so one ``propose()`` pools every part's
candidates. Pair it with ``fp.train(..., search="pareto", follow_ups=2)``: candidates are
screened on the minibatch's recorded inputs first, the search keeps and merges the best per item,
and a new prompt the minibatch gate turns away gets the code after it rewritten for its replies.

Example:
    >>> from feedprop.node import Demos, Parameter
    >>> opt = recommended([Parameter("Answer.", name="instruction"), Demos(name="shots"), Parameter(0.5, name="t")])
    >>> [(type(part).__name__, [name for name, _ in part.named_parameters()]) for part in opt.parts]
    [('BootstrapDemos', ['shots']), ('Reflect', ['instruction']), ('OptoPrime', ['t'])]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm import LLM
from feedprop.node import Parameter
from feedprop.optim.bootstrap import BootstrapDemos
from feedprop.optim.compose import Compose
from feedprop.optim.optimizer import Optimizer, kind_of
from feedprop.optim.optoprime import OptoPrime
from feedprop.optim.reflect import REFLECT_KINDS, Reflect

__all__ = ["recommended"]


def recommended(
    params: Iterable[Parameter[Any]],
    llm: LLM | None = None,
    *,
    n_candidates: int = 4,
    labelled: bool = True,
    seed: int = 0,
    **reflect_options: Any,
) -> Compose:
    """The recommended optimizer for ``params``: each kind to the optimizer that suits it.

    Args:
        params: the parameters to train, e.g. ``model.parameters()``.
        llm: the model that diagnoses and rewrites (default: :func:`feedprop.llm.default`).
        n_candidates: demonstration sets and rewrites proposed per step (per part).
        labelled: where too few runs succeed, fill demonstrations with training items (the
            call's question and the item's target). Turn it off when a call's reply is not the
            item's target (an intermediate step, a plan, code checked by tests).
        seed: seeds the choice of demonstration sets.
        reflect_options: further options for :class:`~feedprop.optim.Reflect` (``max_tokens``,
            ``params_per_step``, ``max_cases`` ...).
    """
    if isinstance(params, Parameter) or not isinstance(params, Iterable):
        raise InvalidInputError(
            f"params must be an iterable of parameters, e.g. model.parameters(); got {type(params).__name__}"
        )
    by_kind: dict[str, list[Parameter[Any]]] = {"demos": [], "rewrite": [], "structured": []}
    for p in params:
        if not isinstance(p, Parameter):
            raise InvalidInputError(f"recommended() takes Parameter objects, got {type(p).__name__}")
        kind = kind_of(p)
        by_kind["demos" if kind == "demos" else "rewrite" if kind in REFLECT_KINDS else "structured"].append(p)
    parts: list[Optimizer] = []
    if by_kind["demos"]:
        parts.append(BootstrapDemos(by_kind["demos"], n_candidates=n_candidates, labelled=labelled, seed=seed))
    if by_kind["rewrite"]:
        parts.append(Reflect(by_kind["rewrite"], llm, n_candidates=n_candidates, **reflect_options))
    if by_kind["structured"]:
        parts.append(OptoPrime(by_kind["structured"], llm))
    if not parts:
        raise ConfigurationError("recommended() got an empty parameter list; pass model.parameters()")
    return Compose(*parts)
