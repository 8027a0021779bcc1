"""``Compose``: several optimizers as one, each proposing for its own parameters.

Different parameter kinds want different optimizers: demonstrations are best *selected* from
successful runs (:class:`~feedprop.optim.BootstrapDemos`, no model call), prompts and code are
best *rewritten* in small plain steps (:class:`~feedprop.optim.Reflect`), numbers and JSON
values fit a structured reply (:class:`~feedprop.optim.OptoPrime`). ``Compose`` owns the union
of their parameters, asks each one to propose, and pools the candidates: each candidate still
changes only the parameters of the optimizer that wrote it, and the trainer's search picks among
them (a Pareto search also merges winners of different parts).

Example:
    >>> from feedprop.llm import MockLLM
    >>> from feedprop.node import Parameter
    >>> from feedprop.optim import OptoPrime
    >>> a, b = Parameter("x", name="a"), Parameter(1.0, name="b")
    >>> (a + "!").backward("say y")
    >>> (b * 2).backward("larger")
    >>> opt = Compose(
    ...     OptoPrime([a], llm=MockLLM('{"reasoning": "", "suggestion": {"a": "y"}}')),
    ...     OptoPrime([b], llm=MockLLM('{"reasoning": "", "suggestion": {"b": 2.0}}')),
    ... )
    >>> [c.updates for c in opt.propose().candidates]
    [{'a': 'y'}, {'b': 2.0}]
"""

from __future__ import annotations

import copy
from typing import Any

from feedprop.errors import ConfigurationError, InvalidInputError, StateDictError
from feedprop.optim.optimizer import Candidate, Optimizer, Proposal

__all__ = ["Compose"]


class Compose(Optimizer):
    """One optimizer made of several: ``propose()`` pools the candidates of every part.

    Each parameter belongs to exactly one part (a parameter in two parts is a
    :class:`~feedprop.errors.ConfigurationError`). ``state_dict()`` holds every part's state, so
    a checkpoint restores them all. ``parts`` lists the optimizers in the order given; their
    candidates come in that order too.
    """

    def __init__(self, *parts: Optimizer) -> None:
        if not parts:
            raise ConfigurationError("Compose needs at least one optimizer, e.g. Compose(BootstrapDemos(...), ...)")
        for part in parts:
            if not isinstance(part, Optimizer) or isinstance(part, Compose):
                raise InvalidInputError(
                    f"Compose takes feedprop optimizers (not another Compose), got {type(part).__name__}"
                )
        super().__init__([p for part in parts for p in part.parameters()])
        self.parts: tuple[Optimizer, ...] = parts

    def _propose(self) -> Proposal:
        pooled = Proposal()
        for part in self.parts:
            proposal = part.propose()
            # A part may name a parameter differently when names collide; updates use ours.
            names = {name: self.name_of(param) for name, param in part.named_parameters()}
            for candidate in proposal.candidates:
                updates = {names.get(k, k): v for k, v in candidate.updates.items()}
                extras = {**candidate.extras, "optimizer": type(part).__name__}
                pooled.candidates.append(Candidate(updates, candidate.reasoning, extras))
            pooled.rejected.extend(proposal.rejected)
            pooled.replies.extend(proposal.replies)
            pooled.errors.extend(proposal.errors)
        return pooled

    def state_dict(self) -> dict[str, Any]:
        """The state of ``Compose`` and of every part (``"parts"``), as plain JSON data."""
        state = super().state_dict()
        state["parts"] = [part.state_dict() for part in self.parts]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, every part included (all or nothing)."""
        parts = state_dict.get("parts") if isinstance(state_dict, dict) else None
        if not isinstance(parts, list) or len(parts) != len(self.parts):
            raise StateDictError(
                f"this Compose has {len(self.parts)} part(s); the state holds "
                f"{len(parts) if isinstance(parts, list) else 'no'} part states. Build it from the same optimizers"
            )
        saved = [copy.deepcopy(part.state_dict()) for part in self.parts]
        own = {k: v for k, v in state_dict.items() if k != "parts"}
        try:
            for part, part_state in zip(self.parts, parts, strict=True):
                part.load_state_dict(part_state)
            super().load_state_dict(own)
        except BaseException:
            for part, old in zip(self.parts, saved, strict=True):
                part.load_state_dict(old)
            raise
