"""Candidate search: which parameter states a training step expands and which it keeps.

Every strategy implements :class:`SearchStrategy`: :meth:`~SearchStrategy.start` with the
initial state, :meth:`~SearchStrategy.step` once per minibatch (returning the step's history
record), :meth:`~SearchStrategy.best` for the state the model holds between steps, and
``state_dict``/``load_state_dict`` for the checkpoint. The run gives a strategy its services
through :class:`SearchRun` (run a minibatch, propose, score the validation set), so a strategy
holds only its own state and decisions.

- :class:`BeamSearch` (``search="greedy"``, ``"beam"``): keeps the ``width`` best states by
  validation score; with width 1 and an optimizer offering several candidates it is best-of-n.
- :class:`ParetoSearch` (``search="pareto"``): a pool of programs with their per-validation-item
  scores and lineage; parents are drawn from the per-item Pareto front (:func:`pareto_front`),
  a child must beat its parent on the minibatch (:func:`gate_scores`) before it is validated,
  and two lineages that changed different parameters are merged.

Example:
    >>> make_strategy(TrainConfig()).width
    1
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from feedprop.errors import BudgetExhausted, ConfigurationError, InvalidInputError, ReplyParseError, SuggestionError
from feedprop.module import Module
from feedprop.node import Feedback, Node
from feedprop.optim import Candidate, Optimizer, Proposal
from feedprop.optim.optimizer import kind_of
from feedprop.training.budget import RunMeter
from feedprop.training.config import TrainConfig
from feedprop.training.data import Item
from feedprop.training.evaluation import ItemExecutor, Outcome, mean
from feedprop.training.screening import Screening, screen

__all__ = [
    "BeamSearch",
    "Expansion",
    "Member",
    "Merge",
    "ParetoSearch",
    "Program",
    "SearchRun",
    "SearchStrategy",
    "apply_candidate",
    "backward",
    "dominates",
    "expand",
    "gate_scores",
    "make_strategy",
    "parameter_size",
    "pareto_front",
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
    cfg: TrainConfig
    guide: Callable[..., Any]
    executor: ItemExecutor

    def minibatch(self, items: Sequence[Item]) -> list[Outcome]:
        """Run and score ``items`` with the model as it is, in training mode (counted as evaluation)."""
        ...

    def teach(self, items: Sequence[Item]) -> list[tuple[Outcome, Item]]:
        """The runs of the run's teacher, answering ``items`` in the student's place, that it got
        right (none without a teacher; counted as optimizer usage)."""
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
    ``opt_state`` is the optimizer's state after proposing (it has seen this minibatch);
    ``teacher`` says, with a teacher, how many failed items it answered and got right.
    """

    outcomes: list[Outcome]
    proposal: Proposal | None
    opt_state: dict[str, Any]
    notes: list[str]
    teacher: dict[str, int] | None = None

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
    notes: list[str] = []
    teacher: dict[str, int] | None = None
    if run.cfg.teacher is not None:
        failed = [item for item, outcome in zip(items, outcomes, strict=True) if not outcome.solved]
        taught = run.teach(failed)
        backward([o for o, _ in taught], [item for _, item in taught])
        teacher = {"failed": len(failed), "right": len(taught)}
    run.meter.check_time()
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
    return Expansion(outcomes, proposal, run.opt.state_dict(), notes, teacher)


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
        ['beam', 'greedy', 'pareto']
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

    def summary(self) -> list[dict[str, Any]]:
        """The states the search holds, for :attr:`TrainResult.pool` and the report (none by default)."""
        return []

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
        taught: dict[str, int] = {}
        # Each parent continues with the optimizer state it has after proposing (it saw this batch);
        # the beam itself changes only once the whole step has succeeded.
        parents: list[Member] = []
        stopped: str | None = None
        for m_index, member in enumerate(self.beam):
            if len(self.beam) > 1:
                run.load(member)
            try:
                expansion = expand(run, items)
            except BudgetExhausted as exc:
                if not children:
                    raise  # nothing validated yet: the trainer drops the step whole
                stopped = run.meter.stop_reason(exc)
                parents.extend(self.beam[m_index:])  # the members not expanded stay as they were
                break
            errors += expansion.errors
            if expansion.teacher is not None:
                taught = {k: taught.get(k, 0) + v for k, v in expansion.teacher.items()}
            train_scores.append(expansion.train_score)
            notes.extend(expansion.notes)
            parents.append(Member(member.params, expansion.opt_state, member.val, member.size))
            if expansion.proposal is None:
                continue
            rejected.extend(jsonable(r) for r in expansion.proposal.rejected)
            proposed = expansion.proposal.candidates
            for c_index, candidate in enumerate(proposed):
                entry: dict[str, Any] = {
                    "member": m_index,
                    "index": c_index,
                    "updates": jsonable(candidate.updates),
                    "reasoning": candidate.reasoning,
                }
                candidates_log.append(entry)
                params = apply_candidate(run, candidate, member.params, entry)
                try:
                    if params is not None:
                        # apply() sets parameters only, so the child shares the parent's optimizer state.
                        child = Member(params, expansion.opt_state, None, entry["size"])
                        if run.val_items:
                            run.meter.check_time()
                            child.val = mean(run.val_scores())
                        entry["val_score"] = child.val
                        children.append((child, entry))
                except BudgetExhausted as exc:
                    if not children:
                        raise
                    stopped = cut_short(run, exc, entry, len(proposed) - c_index - 1)
                finally:
                    run.load_params(member.params)
                if stopped is not None:
                    break
            if stopped is not None:
                parents.extend(self.beam[m_index + 1 :])
                break
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
            **({"teacher": taught} if taught else {}),
            **({"stopped": stopped} if stopped is not None else {}),
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


def cut_short(run: SearchRun, exc: BudgetExhausted, entry: dict[str, Any], untried: int) -> str:
    """Mark ``entry`` as cut off by the budget (``untried`` candidates after it not tried); the stop reason."""
    reason = run.meter.stop_reason(exc)
    entry["admitted"] = False
    entry["reason"] = f"not finished: {reason}" + (f"; {untried} later candidate(s) not tried" if untried else "")
    return reason


def gate_scores(run: SearchRun, items: Sequence[Item], parent_outcomes: Sequence[Outcome]) -> Screening:
    """Screen the model as it is now on the minibatch: what a candidate must win to be validated.

    ``parent_outcomes`` is the parent's run on the same ``items``: every LLM call the candidate
    repeats is answered from it (:func:`~feedprop.training.screening.screen`), so a new extractor
    costs no model call at all. Counted as evaluation, in training mode.
    """
    with run.meter.phase("evaluation"):
        run.model.train(True)
        return screen(
            run.model,
            items,
            run.guide,
            parent_outcomes,
            executor=run.executor,
            max_workers=run.cfg.max_workers,
            check=run.meter.check_time,
        )


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether scores ``a`` are at least ``b`` on every item and above it on one.

    Example:
        >>> dominates([1, 1], [1, 0]), dominates([1, 0], [0, 1]), dominates([1, 1], [1, 1])
        (True, False, False)
    """
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def pareto_front(scores: Sequence[Sequence[float]]) -> dict[int, int]:
    """The per-item Pareto front of a pool of candidates, each given by its per-item scores.

    A candidate is on the front if it is best (ties included) on at least one item and no other
    candidate dominates it. Returns ``{candidate index: number of items it is best on}``, the
    weight with which a parent is drawn. Scores are compared rounded to 9 decimals.

    Example:
        >>> pareto_front([[1, 0, 0], [0, 1, 1], [0, 1, 0], [1, 1, 1]])
        {3: 3}
        >>> pareto_front([[1, 0, 1], [0, 1, 1], [0, 0, 0]])
        {0: 2, 1: 2}
    """
    rounded = [[round(float(x), 9) for x in row] for row in scores]
    if len({len(row) for row in rounded}) > 1:
        raise ConfigurationError("every candidate needs a score for every item; the score table is ragged")
    wins = [0] * len(rounded)
    for k in range(len(rounded[0]) if rounded else 0):
        best = max(row[k] for row in rounded)
        for i, row in enumerate(rounded):
            wins[i] += row[k] == best
    return {
        i: wins[i]
        for i, row in enumerate(rounded)
        if wins[i] and not any(dominates(other, row) for j, other in enumerate(rounded) if j != i)
    }


@dataclass
class Program:
    """A candidate in the Pareto pool: its parameters, per-validation-item scores and lineage.

    ``parents`` are pool ids (none for the start, one for a mutation, two for a merge);
    ``step`` is the training step that made it; ``origin`` is ``"start"``, ``"mutation"`` or
    ``"merge"``.
    """

    id: int
    params: dict[str, Any]
    scores: list[float]
    val: float | None
    size: int
    parents: list[int]
    step: int
    origin: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "params": self.params,
            "scores": self.scores,
            "val": self.val,
            "size": self.size,
            "parents": self.parents,
            "step": self.step,
            "origin": self.origin,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Program:
        return cls(
            int(data["id"]),
            dict(data["params"]),
            [float(x) for x in data["scores"]],
            None if data["val"] is None else float(data["val"]),
            int(data["size"]),
            [int(i) for i in data["parents"]],
            int(data["step"]),
            str(data["origin"]),
        )


@dataclass
class Merge:
    """Two pool members from different lineages and the state that takes each one's changes."""

    a: Program
    b: Program
    ancestor: Program
    from_a: list[str]
    from_b: list[str]
    params: dict[str, Any]


class ParetoSearch(SearchStrategy):
    """A pool of programs; parents drawn from the per-validation-item Pareto front (GEPA-style).

    Each step draws a parent from :func:`pareto_front` of the pool (weighted by the number of
    validation items it is best on, with the run's seeded RNG), runs the minibatch with it,
    sends the feedback backward and lets the optimizer propose. A candidate is admitted only if
    its minibatch score sum beats the parent's; an admitted candidate is scored on the whole
    validation set and joins the pool. Every ``merge_every`` steps (0: never), when two front
    members from different lineages changed different parameters since their latest common
    ancestor, the step instead tries their merge (each parameter from the member that changed
    it); it is admitted if its minibatch sum is at least its better parent's. The best program
    (mean validation score; ties to the shorter parameters with ``prefer_shorter``, then to the
    newer) is what the model holds. The optimizer keeps one state for the whole pool (it has
    seen every step's minibatch), where each beam member carries its own.

    Example:
        >>> pool = ParetoSearch()
        >>> pool.start(Member({"p": "x"}, {}, 0.5, 1), [1.0, 0.0])
        >>> pool.best().params, pool.state_dict()["pool"][0]["scores"]
        ({'p': 'x'}, [1.0, 0.0])
    """

    name = "pareto"

    def __init__(self, *, merge_every: int = 3, follow_ups: int = 0, prefer_shorter: bool = True) -> None:
        self.merge_every = merge_every
        self.follow_ups = follow_ups
        self.prefer_shorter = prefer_shorter
        self.pool: list[Program] = []
        self.opt_state: dict[str, Any] = {}
        self.tried_merges: list[list[int]] = []

    @classmethod
    def from_config(cls, config: TrainConfig) -> ParetoSearch:
        return cls(merge_every=config.merge_every, follow_ups=config.follow_ups, prefer_shorter=config.prefer_shorter)

    # -- state -----------------------------------------------------------------------------

    def start(self, initial: Member, scores: list[float] | None) -> None:
        self.pool = [Program(0, initial.params, list(scores or []), initial.val, initial.size, [], 0, "start")]
        self.opt_state = initial.opt

    def state_dict(self) -> dict[str, Any]:
        return {
            "pool": [p.to_dict() for p in self.pool],
            "optimizer": self.opt_state,
            "tried_merges": self.tried_merges,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pool = [Program.from_dict(p) for p in state["pool"]]
        if not pool or [p.id for p in pool] != list(range(len(pool))):
            raise ValueError("the pool is empty or its ids are not 0, 1, 2, ...")
        self.pool = pool
        self.opt_state = dict(state["optimizer"])
        self.tried_merges = [[int(i) for i in pair] for pair in state["tried_merges"]]

    def summary(self) -> list[dict[str, Any]]:
        return copy.deepcopy([p.to_dict() for p in self.pool])

    def best_program(self) -> Program:
        def rank(p: Program) -> tuple[float, int, int]:
            val = round(p.val, 9) if p.val is not None else -math.inf
            return (val, -p.size if self.prefer_shorter else 0, p.id)

        return max(self.pool, key=rank)

    def best(self) -> Member:
        top = self.best_program()
        return Member(top.params, self.opt_state, top.val, top.size)

    def front(self) -> dict[int, int]:
        """The pool's Pareto front: ``{pool id: validation items it is best on}``."""
        if not self.pool or any(len(p.scores) != len(self.pool[0].scores) for p in self.pool):
            return {}
        return pareto_front([p.scores for p in self.pool])

    def sample_parent(self, rng: random.Random) -> Program:
        """A front member drawn with weight = items it is best on (the best program if there is no front)."""
        front = self.front()
        if not front:
            return self.best_program()
        ids = sorted(front)
        return self.pool[rng.choices(ids, weights=[front[i] for i in ids])[0]]

    # -- merging -----------------------------------------------------------------------------

    def ancestors(self, pid: int) -> set[int]:
        seen: set[int] = set()
        todo = list(self.pool[pid].parents)
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(self.pool[current].parents)
        return seen

    def merge_of(self, a: Program, b: Program) -> Merge | None:
        """The merge of ``a`` and ``b``, if they are of different lineages and changed different parameters."""
        up_a, up_b = self.ancestors(a.id), self.ancestors(b.id)
        common = up_a & up_b
        if a.id in up_b or b.id in up_a or not common:
            return None
        ancestor = self.pool[max(common)]  # the latest common ancestor
        from_a = sorted(n for n in a.params if state_key({n: a.params[n]}) != state_key({n: ancestor.params.get(n)}))
        from_b = sorted(n for n in b.params if state_key({n: b.params[n]}) != state_key({n: ancestor.params.get(n)}))
        if not from_a or not from_b or set(from_a) & set(from_b):
            return None
        params = {**ancestor.params, **{n: a.params[n] for n in from_a}, **{n: b.params[n] for n in from_b}}
        if any(same_state(params, p.params) for p in self.pool):
            return None
        return Merge(a, b, ancestor, from_a, from_b, copy.deepcopy(params))

    def next_merge(self, rng: random.Random) -> Merge | None:
        """A merge of two front members not tried before, drawn uniformly (``None`` if there is none)."""
        ids = sorted(self.front())
        tried = {tuple(pair) for pair in self.tried_merges}
        merges = []
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                merge = None if (a, b) in tried else self.merge_of(self.pool[a], self.pool[b])
                if merge is not None:
                    merges.append(merge)
        return merges[rng.randrange(len(merges))] if merges else None

    # -- the step ------------------------------------------------------------------------------

    def step(self, run: SearchRun, items: Sequence[Item]) -> dict[str, Any]:
        number = run.step + 1
        if self.merge_every and number % self.merge_every == 0:
            merge = self.next_merge(run.rng)
            if merge is not None:
                return self.merge_step(run, items, merge, number)
        return self.mutation_step(run, items, number)

    def mutation_step(self, run: SearchRun, items: Sequence[Item], number: int) -> dict[str, Any]:
        before = self.best_program()
        parent = self.sample_parent(run.rng)
        run.load_params(parent.params)
        expansion = expand(run, items)
        parent_scores = [o.score for o in expansion.outcomes]
        new: list[Program] = []
        log: list[dict[str, Any]] = []
        proposal = expansion.proposal
        candidates = proposal.candidates if proposal is not None else []
        stopped: str | None = None
        missed: list[tuple[Candidate, dict[str, Any], Screening, int]] = []  # text candidates the gate turned away
        for c_index, candidate in enumerate(candidates):
            entry: dict[str, Any] = {"index": c_index, "updates": jsonable(candidate.updates)}
            entry["reasoning"] = candidate.reasoning
            log.append(entry)
            params = apply_candidate(run, candidate, parent.params, entry)
            try:
                if params is not None:
                    child = Program(
                        len(self.pool) + len(new), params, [], None, entry["size"], [parent.id], number, "mutation"
                    )
                    screening = self.admit(run, items, expansion.outcomes, sum(parent_scores), child, entry, new)
                    if (
                        self.follow_ups
                        and screening is not None
                        and not entry["admitted"]
                        and self.changes_text(run, candidate)
                    ):
                        missed.append((candidate, params, screening, c_index))
            except BudgetExhausted as exc:
                if not new:
                    raise  # nothing validated yet: the trainer drops the step whole
                stopped = cut_short(run, exc, entry, len(candidates) - c_index - 1)
                break
            finally:
                run.load_params(parent.params)
        if stopped is None and self.follow_ups and missed:
            stopped = self.follow_ups_of(run, items, (parent, sum(parent_scores), number), missed, log, new)
            # The follow-ups' proposals are not the step's: the optimizer keeps the state it proposed from.
            run.opt.load_state_dict(copy.deepcopy(expansion.opt_state))
        self.pool.extend(new)
        self.opt_state = expansion.opt_state
        record = self.record(before, parent_scores, log, new, expansion.notes)
        if stopped is not None:
            record["stopped"] = stopped
        record["parent"] = parent.id
        record["rejected_suggestions"] = [jsonable(r) for r in proposal.rejected] if proposal is not None else []
        record["workflow_errors"] = expansion.errors
        if expansion.teacher is not None:
            record["teacher"] = expansion.teacher
        if not log:
            record["reason"] = "; ".join(expansion.notes) or no_update(record["rejected_suggestions"])
        return record

    def merge_step(self, run: SearchRun, items: Sequence[Item], merge: Merge, number: int) -> dict[str, Any]:
        before = self.best_program()
        run.load_params(merge.a.params)
        outcomes = run.minibatch(items)
        run.load_params(merge.b.params)
        reference = max(sum(o.score for o in outcomes), sum(gate_scores(run, items, outcomes).scores))
        run.load_params(merge.params)
        entry: dict[str, Any] = {
            "index": 0,
            "merge": {"parents": [merge.a.id, merge.b.id], "ancestor": merge.ancestor.id},
            "updates": {n: merge.params[n] for n in merge.from_a + merge.from_b},
            "reasoning": f"#{merge.a.id} changed {merge.from_a}, #{merge.b.id} changed {merge.from_b} "
            f"since their common ancestor #{merge.ancestor.id}",
            "size": parameter_size(merge.params),
        }
        new: list[Program] = []
        parents = [merge.a.id, merge.b.id]
        child = Program(len(self.pool), merge.params, [], None, entry["size"], parents, number, "merge")
        self.admit(run, items, outcomes, reference, child, entry, new)
        self.pool.extend(new)
        self.tried_merges.append([merge.a.id, merge.b.id])
        record = self.record(before, [o.score for o in outcomes], [entry], new, [])
        record["parent"] = [merge.a.id, merge.b.id]
        record["rejected_suggestions"] = []
        record["workflow_errors"] = sum(o.error is not None for o in outcomes)
        return record

    def admit(
        self,
        run: SearchRun,
        items: Sequence[Item],
        parent_outcomes: Sequence[Outcome],
        reference: float,
        child: Program,
        entry: dict[str, Any],
        new: list[Program],
    ) -> Screening | None:
        """Gate ``child`` (the model holds it) on the minibatch; if it passes, validate it and add it to ``new``.

        Returns the minibatch screening (``None`` when the child was not screened).
        """
        # A mutation must beat its parent; a merge must reach the better of its two parents.
        strict = child.origin != "merge"
        twin = next((p for p in [*self.pool, *new] if same_state(p.params, child.params)), None)
        if twin is not None:
            entry["error"] = f"the same parameters as pool member #{twin.id}"
            return None
        if strict and parent_outcomes and all(o.solved for o in parent_outcomes):
            # No child can beat a parent that solves every item: screening it would spend calls for nothing.
            entry["admitted"] = False
            entry["reason"] = f"not screened: the parent solves all {len(parent_outcomes)} minibatch items"
            return None
        run.meter.check_time()
        screening = gate_scores(run, items, parent_outcomes)
        score = sum(screening.scores)
        entry["minibatch"] = {"parent": reference, "child": score, "calls": screening.calls, "saved": screening.saved}
        versus = "the parent's" if strict else "its better parent's"
        passed = round(score, 9) > round(reference, 9) if strict else round(score, 9) >= round(reference, 9)
        entry["admitted"] = passed
        if not passed:
            entry["reason"] = (
                f"minibatch score {score:g} does not {'beat' if strict else 'reach'} {versus} {reference:g}"
            )
            return screening
        run.meter.check_time()
        child.scores = run.val_scores()
        child.val = mean(child.scores)
        entry.update(id=child.id, val_score=child.val)
        entry["reason"] = f"minibatch score {score:g} {'beats' if strict else 'reaches'} {versus} {reference:g}"
        new.append(child)
        return screening

    def follow_ups_of(
        self,
        run: SearchRun,
        items: Sequence[Item],
        gate: tuple[Program, float, int],
        missed: list[tuple[Candidate, dict[str, Any], Screening, int]],
        log: list[dict[str, Any]],
        new: list[Program],
    ) -> str | None:
        """Code for the replies of the prompt candidates the gate turned away, each pairing gated.

        A new prompt often changes the form of the reply, and the code that reads the reply then
        fails where the prompt alone would have helped. So for the first ``follow_ups`` of these
        candidates (those proposed with a tip on another way of asking, ``extras["tip"]``, first:
        they are the ones that change the form of the reply)
        the optimizer rewrites the code after the call from their minibatch runs
        (:meth:`code_for`). Then every rewrite, on top of every turned-away prompt, is gated
        against the parent as any candidate is, screened on that prompt's recorded replies: no
        student call, so a rewrite written for one prompt's replies is tried on the others' too.
        ``gate`` is the parent, its minibatch score sum and the step's number. Returns the stop
        reason if the budget ran out after something was validated.
        """
        parent, reference, number = gate
        missed = sorted(missed, key=lambda m: not m[0].extras.get("tip"))
        rewrites: list[tuple[Candidate, int]] = []
        entry: dict[str, Any] | None = None  # the pairing being gated, if any
        try:
            for candidate, params, screening, follows in missed[: self.follow_ups]:
                for rewrite in self.code_for(run, items, candidate, params, screening):
                    if all(rewrite.updates != seen.updates for seen, _ in rewrites):
                        rewrites.append((rewrite, follows))
            for candidate, params, screening, follows in missed:
                for rewrite, written_for in rewrites:
                    entry = {
                        "index": len(log),
                        "follows": follows,
                        "written_for": written_for,
                        "updates": jsonable({**candidate.updates, **rewrite.updates}),
                        "reasoning": rewrite.reasoning,
                    }
                    log.append(entry)
                    run.load_params(params)
                    child_params = apply_candidate(run, rewrite, params, entry)
                    if child_params is None:
                        continue
                    pid, size = len(self.pool) + len(new), entry["size"]
                    child = Program(pid, child_params, [], None, size, [parent.id], number, "mutation")
                    self.admit(run, items, screening.outcomes, reference, child, entry, new)
        except BudgetExhausted as exc:
            if not new:
                raise  # nothing validated yet: the trainer drops the step whole
            # Out of budget while writing code, no pairing is cut short: the step's entries stand as judged.
            return run.meter.stop_reason(exc) if entry is None else cut_short(run, exc, entry, 0)
        finally:
            run.load_params(parent.params)
        return None

    @staticmethod
    def changes_text(run: SearchRun, candidate: Candidate) -> bool:
        """Whether ``candidate`` changes text only (a prompt), leaving trainable code that a follow-up can rewrite."""
        owned = dict(run.opt.named_parameters())
        kinds = {kind_of(owned[n]) for n in candidate.updates if n in owned}
        return kinds == {"text"} and any(kind_of(p) == "code" for p in owned.values())

    @staticmethod
    def code_for(
        run: SearchRun, items: Sequence[Item], candidate: Candidate, params: dict[str, Any], screening: Screening
    ) -> list[Candidate]:
        """The optimizer's rewrites of the code after ``candidate``'s call, for the replies it made the model write.

        The candidate's minibatch runs (``screening``'s outcomes) are sent backward with its
        ``params`` loaded, and the optimizer proposes from the feedback on the code parameters
        only (counted as optimizer usage).
        """
        owned = dict(run.opt.named_parameters())
        code = {n for n, p in owned.items() if kind_of(p) == "code" and n not in candidate.updates}
        if not code:  # a workflow without trainable code after the call: nothing to ask for
            return []
        run.load_params(params)
        run.opt.zero_feedback()
        backward(screening.outcomes, items)
        for n, p in owned.items():
            if n not in code:
                p.zero_feedback()
        try:
            proposal = run.propose()
        except ReplyParseError:
            return []
        finally:
            run.opt.zero_feedback()
        return [c for c in proposal.candidates if c.updates and set(c.updates) <= code]

    def record(
        self,
        before: Program,
        parent_scores: list[float],
        log: list[dict[str, Any]],
        new: list[Program],
        notes: list[str],
    ) -> dict[str, Any]:
        """The step's history record; the pool already holds the step's admitted programs."""
        after = self.best_program()
        accepted = after.id != before.id
        if accepted:
            old = Member(before.params, {}, before.val, before.size)
            reason = verdict(old, Member(after.params, {}, after.val, after.size), True, self.prefer_shorter)
            reason += f" (pool member #{after.id})"
        elif new:
            reason = f"admitted {len(new)} candidate(s) to the pool; the best stays #{after.id}"
        else:
            why = list(dict.fromkeys(str(e.get("reason") or e.get("error")) for e in log))
            reason = "no candidate admitted: " + "; ".join(why + notes)
        return {
            "train_score": mean(parent_scores),
            "val_score": after.val,
            "val_previous": before.val,
            "accepted": accepted,
            "reason": reason,
            "candidates": log,
            # What the minibatch gate cost and what replaying the parent's recorded calls saved.
            "screening": {
                "calls": sum(e["minibatch"]["calls"] for e in log if "minibatch" in e),
                "saved": sum(e["minibatch"]["saved"] for e in log if "minibatch" in e),
            },
            "pool_size": len(self.pool),
            "best": after.id,
            "front": [[i, w] for i, w in sorted(self.front().items())],
        }


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
