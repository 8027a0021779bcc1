"""Candidate search: which parameter states a training step expands and which it keeps.

Every strategy implements :class:`SearchStrategy`: :meth:`~SearchStrategy.start` with the
initial state, :meth:`~SearchStrategy.step` once per minibatch (returning the step's history
record), :meth:`~SearchStrategy.best` for the state the model holds between steps, and
``state_dict``/``load_state_dict`` for the checkpoint. The run gives a strategy its services
through :class:`SearchRun` (run a minibatch, propose, score the validation set), so a strategy
holds only its own state and decisions.

- :class:`BeamSearch` (``search="greedy"``, ``"beam"``): keeps the ``width`` best states by
  validation score; with width 1 and an optimizer offering several candidates it is best-of-n.

Example:
    >>> make_strategy(TrainConfig()).width
    1
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from feedprop.errors import ConfigurationError, InvalidInputError, ReplyParseError, SuggestionError
from feedprop.module import Module
from feedprop.node import Feedback, Node
from feedprop.optim import Candidate, Optimizer, Proposal
from feedprop.train.budget import RunMeter
from feedprop.train.config import TrainConfig
from feedprop.train.data import Item
from feedprop.train.evaluation import Outcome

__all__ = [
    "BeamSearch",
    "Expansion",
    "Member",
    "SearchRun",
    "SearchStrategy",
    "apply_candidate",
    "backward",
    "expand",
    "make_strategy",
    "parameter_size",
    "same_state",
    "with_target",
]


def parameter_size(state: dict[str, Any]) -> int:
    """How long a parameter state is: characters of text values, JSON length of the rest.

    Example:
        >>> parameter_size({"prompt": "abc", "k": 12})
        5
    """
    total = 0
    for value in state.values():
        total += len(value) if isinstance(value, str) else len(json.dumps(value, sort_keys=True, default=repr))
    return total


def state_key(state: dict[str, Any]) -> str:
    """A canonical text of a parameter state, equal for equal states."""
    return json.dumps(state, sort_keys=True, default=repr)


def same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two parameter states hold the same values.

    Example:
        >>> same_state({"a": 1, "b": "x"}, {"b": "x", "a": 1})
        True
    """
    return state_key(a) == state_key(b)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def jsonable(value: Any) -> Any:
    """``value`` as JSON data (through ``to_dict`` when it has one), or its repr when it is not JSON."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return repr(value)


@dataclass
class Member:
    """One parameter state a search holds: parameters, optimizer state, validation score, size."""

    params: dict[str, Any]
    opt: dict[str, Any]
    val: float | None
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params, "opt": self.opt, "val": self.val, "size": self.size}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Member:
        return cls(data["params"], data["opt"], data["val"], int(data["size"]))


class SearchRun(Protocol):
    """What a training run offers its search strategy."""

    model: Module
    opt: Optimizer
    val_items: list[Item]
    rng: random.Random
    step: int
    meter: RunMeter

    def minibatch(self, items: Sequence[Item]) -> list[Outcome]:
        """Run and score ``items`` with the model as it is, in training mode (counted as evaluation)."""
        ...

    def propose(self) -> Proposal:
        """The optimizer's proposal from the feedback on the parameters (counted as optimizer usage)."""
        ...

    def val_scores(self) -> list[float]:
        """Per-item scores of the model as it is on the validation set (counted as evaluation)."""
        ...

    def load(self, member: Member) -> None:
        """Load a member's parameters and optimizer state into the model and optimizer."""

    def load_params(self, params: dict[str, Any]) -> None:
        """Load parameter values into the model (the optimizer keeps its state)."""


@dataclass
class Expansion:
    """A parent's minibatch run and the optimizer's proposal from its feedback.

    ``proposal`` is ``None`` when the optimizer's reply could not be read (``note`` says so);
    ``opt_state`` is the optimizer's state after proposing (it has seen this minibatch).
    """

    outcomes: list[Outcome]
    proposal: Proposal | None
    opt_state: dict[str, Any]
    notes: list[str]

    @property
    def errors(self) -> int:
        return sum(o.error is not None for o in self.outcomes)

    @property
    def train_score(self) -> float:
        return mean([o.score for o in self.outcomes])


def with_target(feedback: Feedback, item: Item) -> Feedback:
    """``feedback`` with the item's target in ``extras["target"]`` (when the target is JSON data).

    Optimizers that learn from labelled examples read it there; a target that is not JSON
    (an object, a function) is left out rather than turned into text.

    Example:
        >>> with_target(Feedback("Wrong", score=0.0), Item("2+2", "4")).extras
        {'target': '4'}
        >>> with_target(Feedback("Wrong"), Item("x", object())).extras
        {}
    """
    try:
        target = json.loads(json.dumps(item.target, allow_nan=False))
    except (TypeError, ValueError):
        return feedback
    return Feedback(feedback.text, feedback.score, {**feedback.extras, "target": target})


def backward(outcomes: Sequence[Outcome], items: Sequence[Item]) -> None:
    """Send each item's feedback, with its target, into its own graph, in item order (runs repeat)."""
    for outcome, item in zip(outcomes, items, strict=True):
        feedback = with_target(outcome.feedback, item)
        if outcome.error is not None:
            outcome.error.node.backward(feedback)
        elif isinstance(outcome.output, Node):
            outcome.output.backward(feedback)
        else:
            raise InvalidInputError(
                f"the model returned a plain {type(outcome.output).__name__}, not a Node, so feedback cannot "
                "reach its parameters; build the output with feedprop ops (fp.ops, @fp.bundle, llm_call)"
            )


def expand(run: SearchRun, items: Sequence[Item]) -> Expansion:
    """Run the model as it is on ``items``, send the feedback backward and ask the optimizer to propose."""
    run.opt.zero_feedback()
    outcomes = run.minibatch(items)
    backward(outcomes, items)
    run.meter.check_time()
    notes: list[str] = []
    proposal: Proposal | None
    try:
        proposal = run.propose()
    except ReplyParseError as exc:
        notes.append(f"the optimizer's reply could not be read: {exc}")
        proposal = None
    run.opt.zero_feedback()
    if proposal is not None and proposal.errors and not any(c.updates for c in proposal.candidates):
        # Every reply was unreadable, retries included: the step is skipped, and the history says why.
        notes.append(f"the optimizer's reply could not be read: {proposal.errors[-1]}")
    return Expansion(outcomes, proposal, run.opt.state_dict(), notes)


def apply_candidate(
    run: SearchRun, candidate: Candidate, parent: dict[str, Any], entry: dict[str, Any]
) -> dict[str, Any] | None:
    """Apply ``candidate`` to the model (holding ``parent``) and return the new parameter state.

    Returns ``None``, with ``entry["error"]`` saying why, when the update is invalid (nothing
    changed) or leaves every parameter as it was. The caller restores ``parent`` when done.
    """
    try:
        run.opt.apply(candidate)
    except SuggestionError as exc:
        entry["error"] = str(exc)
        return None
    params = copy.deepcopy(run.model.state_dict())
    entry["size"] = parameter_size(params)
    if same_state(params, parent):
        entry["error"] = "the update leaves every parameter as it was"
        return None
    return params


class SearchStrategy:
    """How a run searches parameter states. Subclasses set ``name`` and implement every method.

    Example:
        >>> sorted(SearchStrategy.by_name)
        ['beam', 'greedy']
    """

    name: ClassVar[str] = ""
    by_name: ClassVar[dict[str, type[SearchStrategy]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for alias in cls.aliases():
            SearchStrategy.by_name[alias] = cls

    @classmethod
    def aliases(cls) -> tuple[str, ...]:
        """The names ``train(search=...)`` accepts for this strategy."""
        return (cls.name,) if cls.name else ()

    @classmethod
    def from_config(cls, config: TrainConfig) -> SearchStrategy:
        """The strategy with the options of ``config``."""
        raise NotImplementedError(f"{cls.__name__} must implement from_config()")

    def start(self, initial: Member, scores: list[float] | None) -> None:
        """Begin from the initial state (``scores``: its per-item validation scores, if scored)."""
        raise NotImplementedError(f"{type(self).__name__} must implement start()")

    def step(self, run: SearchRun, items: Sequence[Item]) -> dict[str, Any]:
        """One training step on the minibatch ``items``; returns the step's history record.

        The record holds at least ``train_score``, ``val_score`` (the best state's, after the
        step), ``accepted`` (whether the best state changed) and ``reason``. The strategy's own
        state changes only when the step returns, so an interrupted step leaves it as it was.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement step()")

    def best(self) -> Member:
        """The state the model holds between steps and at the end of the run."""
        raise NotImplementedError(f"{type(self).__name__} must implement best()")

    def state_dict(self) -> dict[str, Any]:
        """The strategy's state as JSON, for the checkpoint."""
        raise NotImplementedError(f"{type(self).__name__} must implement state_dict()")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_state_dict()")


class BeamSearch(SearchStrategy):
    """Keep the ``width`` best states by validation score and expand each one every step.

    With ``width=1`` (``search="greedy"``) the step keeps its best candidate only if the
    validation score does not drop (an equal score keeps the update unless it makes the
    parameters longer and ``prefer_shorter``): best-of-n over the optimizer's candidates.

    Example:
        >>> beam = BeamSearch(width=2)
        >>> beam.start(Member({"p": "x"}, {}, 0.5, 1), None)
        >>> beam.best().val, beam.state_dict()["beam"][0]["params"]
        (0.5, {'p': 'x'})
    """

    name = "beam"

    @classmethod
    def aliases(cls) -> tuple[str, ...]:
        return ("beam", "greedy")

    def __init__(self, width: int = 1, *, prefer_shorter: bool = True) -> None:
        self.width = width
        self.prefer_shorter = prefer_shorter
        self.beam: list[Member] = []

    @classmethod
    def from_config(cls, config: TrainConfig) -> BeamSearch:
        return cls(config.beam_width, prefer_shorter=config.prefer_shorter)

    def start(self, initial: Member, scores: list[float] | None) -> None:
        self.beam = [initial]

    def best(self) -> Member:
        return self.beam[0]

    def state_dict(self) -> dict[str, Any]:
        return {"beam": [m.to_dict() for m in self.beam]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        beam = [Member.from_dict(m) for m in state["beam"]]
        if not beam:
            raise ValueError("the beam is empty")
        self.beam = beam

    def step(self, run: SearchRun, items: Sequence[Item]) -> dict[str, Any]:
        children: list[tuple[Member, dict[str, Any]]] = []
        candidates_log: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        notes: list[str] = []
        train_scores: list[float] = []
        errors = 0
        # Each parent continues with the optimizer state it has after proposing (it saw this batch);
        # the beam itself changes only once the whole step has succeeded.
        parents: list[Member] = []
        for m_index, member in enumerate(self.beam):
            if len(self.beam) > 1:
                run.load(member)
            expansion = expand(run, items)
            errors += expansion.errors
            train_scores.append(expansion.train_score)
            notes.extend(expansion.notes)
            parents.append(Member(member.params, expansion.opt_state, member.val, member.size))
            if expansion.proposal is None:
                continue
            rejected.extend(jsonable(r) for r in expansion.proposal.rejected)
            for c_index, candidate in enumerate(expansion.proposal.candidates):
                entry: dict[str, Any] = {
                    "member": m_index,
                    "index": c_index,
                    "updates": jsonable(candidate.updates),
                    "reasoning": candidate.reasoning,
                }
                candidates_log.append(entry)
                params = apply_candidate(run, candidate, member.params, entry)
                if params is not None:
                    # apply() sets parameters only, so the child shares the parent's optimizer state.
                    child = Member(params, expansion.opt_state, None, entry["size"])
                    if run.val_items:
                        run.meter.check_time()
                        child.val = mean(run.val_scores())
                    entry["val_score"] = child.val
                    children.append((child, entry))
                run.load_params(member.params)
        new_beam, reason = self.select(parents, children, bool(run.val_items))
        if not children:
            reason = "; ".join(notes) if notes else no_update(rejected)
        for child, entry in children:
            entry["kept"] = any(child is m for m in new_beam)
        self.beam = new_beam
        return {
            "train_score": mean(train_scores),
            "val_score": self.beam[0].val,
            "val_previous": parents[0].val,
            "accepted": not any(new_beam[0] is p for p in parents),
            "reason": reason,
            "candidates": candidates_log,
            "rejected_suggestions": rejected,
            "workflow_errors": errors,
        }

    def select(
        self, parents: list[Member], children: list[tuple[Member, dict[str, Any]]], validated: bool
    ) -> tuple[list[Member], str]:
        """The next beam and why: best validation score first, then shorter, then the update over the old."""
        if not children:
            return parents, ""
        if not validated:
            return [children[0][0]], "accepted without validation (no val_set given)"
        pool = [(self.rank(m, is_parent=True, order=i), m) for i, m in enumerate(parents)]
        pool += [(self.rank(c, is_parent=False, order=i), c) for i, (c, _e) in enumerate(children)]
        pool.sort(key=lambda entry: entry[0])
        beam: list[Member] = []
        seen: set[str] = set()
        for _rank, member in pool:
            key = state_key(member.params)
            if key not in seen:
                seen.add(key)
                beam.append(member)
            if len(beam) == self.width:
                break
        top = min((c for c, _e in children), key=lambda c: self.rank(c, is_parent=False, order=0))
        accepted = not any(beam[0] is p for p in parents)
        return beam, verdict(parents[0], top, accepted, self.prefer_shorter)

    def rank(self, member: Member, *, is_parent: bool, order: int) -> tuple[float, int, int, int]:
        val = -round(member.val, 9) if member.val is not None else math.inf
        size = member.size if self.prefer_shorter else 0
        # On an equal score and size the update wins: "does not drop" keeps it.
        return (val, size, 1 if is_parent else 0, order)


def verdict(old: Member, top: Member, accepted: bool, prefer_shorter: bool) -> str:
    """Why the best candidate was kept or reverted, in words for the history and report."""
    o, n = old.val, top.val
    if o is None or n is None:
        return "accepted" if accepted else "rejected"
    if accepted:
        if n > o:
            return f"accepted: val rose {o:.4f} -> {n:.4f}"
        if prefer_shorter and top.size < old.size:
            return f"accepted: val tied at {n:.4f} and the update is shorter ({top.size} < {old.size} chars)"
        return f"accepted: val kept at {n:.4f}"
    if n < o:
        return f"rejected and reverted: val would drop {o:.4f} -> {n:.4f}"
    return f"rejected and reverted: val tied at {n:.4f} but the update is longer ({top.size} > {old.size} chars)"


def no_update(refused: Sequence[dict[str, Any]]) -> str:
    """Why a step changed nothing although the optimizer replied: with the refusals (as recorded), if any."""
    if not refused:
        return "the optimizer proposed no valid update"
    reasons = list(dict.fromkeys(str(r.get("reason")) for r in refused))
    more = f" (and {len(reasons) - 1} other reason(s))" if len(reasons) > 1 else ""
    return f"the optimizer proposed no valid update: {len(refused)} suggestion(s) refused, {reasons[0]}{more}"


def make_strategy(config: TrainConfig) -> SearchStrategy:
    """The strategy a run with ``config`` searches with.

    Example:
        >>> make_strategy(TrainConfig(beam_width=3)).width
        3
    """
    cls = SearchStrategy.by_name.get(config.strategy)
    if cls is None:
        raise ConfigurationError(f"unknown search {config.strategy!r}; choose one of {sorted(SearchStrategy.by_name)}")
    return cls.from_config(config)
