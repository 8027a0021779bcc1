"""``train()``: the training loop in one call.

Each step takes a minibatch of the training set, runs the model on its items in parallel,
scores each output with the guide, and sends every item's feedback backwards through its own
graph (a workflow error becomes feedback too, scored 0). The feedback accumulates on the
parameters; the optimizer then proposes once for the whole batch.

Validation gating: every candidate update is applied, scored on the validation set, and
reverted. The step keeps the best candidate only if the validation score does not drop
(an equal score keeps the update unless it makes the parameters longer — ties go to the
shorter parameters). A rejected update is reverted exactly and recorded in the history
with the reason. With ``beam_width=k`` the trainer keeps the ``k`` best parameter states
and expands each one every step (beam search); with ``k=1`` (the default) and an optimizer
offering several candidates (``n_candidates``) it is best-of-n.

After every step an atomic JSON checkpoint is written; ``resume=True`` continues a killed
run from its last completed step. Budgets (:class:`~feedprop.train.budget.Budget`) end the
run cleanly, keeping its best state.

Example:
    >>> from feedprop.llm import MockLLM
    >>> from feedprop.module import Module
    >>> from feedprop.node import Parameter
    >>> from feedprop.optim import OptoPrime
    >>> from feedprop.train import train
    >>> class Echo(Module):
    ...     def __init__(self):
    ...         self.suffix = Parameter("?", name="suffix")
    ...     def forward(self, x):
    ...         return x + self.suffix
    >>> model = Echo()
    >>> reply = '{"reasoning": "targets end with !", "suggestion": {"suffix": "!"}}'
    >>> opt = OptoPrime(model.parameters(), llm=MockLLM(reply))
    >>> guide = lambda out, target: float(out == target)
    >>> data = [("hi", "hi!"), ("yo", "yo!")]
    >>> result = train(model, data, guide, opt, val_set=data, batch_size=2, progress=False)
    >>> result.val_before, result.val_after, model.suffix.data
    (0.0, 1.0, '!')
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from feedprop.errors import (
    BudgetExhausted,
    CheckpointError,
    ConfigurationError,
    InvalidInputError,
    ReplyParseError,
    StateDictError,
    SuggestionError,
)
from feedprop.llm import track_usage
from feedprop.module import Module
from feedprop.node import Node
from feedprop.optim import Optimizer
from feedprop.train.budget import Budget, RunUsage
from feedprop.train.checkpoint import RunDirectory, check_fingerprint, rng_from_json, rng_to_json
from feedprop.train.data import Item, as_items, fingerprint_items
from feedprop.train.evaluation import ItemExecutor, Outcome, resolve_executor
from feedprop.train.events import EventLog
from feedprop.train.summary import plot_curve, render_report

__all__ = ["TrainResult", "train"]


def parameter_size(state: dict[str, Any]) -> int:
    """How long a parameter state is: characters of text values, JSON length of the rest."""
    total = 0
    for value in state.values():
        total += len(value) if isinstance(value, str) else len(json.dumps(value, sort_keys=True, default=repr))
    return total


def _key(state: dict[str, Any]) -> str:
    return json.dumps(state, sort_keys=True, default=repr)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@dataclass
class _Member:
    """One state in the beam: parameters, optimizer state, and its validation score."""

    params: dict[str, Any]
    opt: dict[str, Any]
    val: float | None
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params, "opt": self.opt, "val": self.val, "size": self.size}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _Member:
        return cls(data["params"], data["opt"], data["val"], int(data["size"]))


@dataclass
class TrainResult:
    """What :func:`train` returns. The model already holds ``best_state`` when you get this.

    ``history`` has one entry per step (scores, candidates, accepted or not and why, usage);
    ``val_before``/``val_after`` and ``test_before``/``test_after`` are mean guide scores
    (``None`` without that set); ``usage`` is the LLM usage by phase; the ``*_path`` fields
    point into the checkpoint directory (``None`` when training ran without one).

    Example:
        >>> r = TrainResult(history=[], best_state={"p": "x"}, initial_state={"p": "x"})
        >>> r.steps, r.accepted
        (0, 0)
    """

    history: list[dict[str, Any]]
    best_state: dict[str, Any]
    initial_state: dict[str, Any]
    best_step: int = 0
    val_before: float | None = None
    val_after: float | None = None
    test_before: float | None = None
    test_after: float | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    stop_reason: str = ""
    elapsed_seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    report_path: Path | None = None
    plot_path: Path | None = None
    log_path: Path | None = None
    parameters_path: Path | None = None
    checkpoint_path: Path | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.history)

    @property
    def accepted(self) -> int:
        """How many steps changed the best parameters."""
        return sum(bool(h.get("accepted")) for h in self.history)

    def report(self) -> str:
        """The markdown report (the same text as ``report.md``)."""
        return render_report(self)


def _check_model(model: Any, optimizer: Any) -> None:
    if not isinstance(model, Module):
        raise InvalidInputError(
            f"model must be a feedprop.Module (with parameters and state_dict), got {type(model).__name__}; "
            "use fp.evaluate() to score a plain callable"
        )
    if not isinstance(optimizer, Optimizer):
        raise InvalidInputError(
            f"optimizer must be a feedprop.optim.Optimizer, got {type(optimizer).__name__}; "
            "e.g. fp.optim.OptoPrime(model.parameters())"
        )
    owned = {id(p) for p in model.parameters()}
    stray = [name for name, p in optimizer.named_parameters().items() if id(p) not in owned]
    if stray:
        raise ConfigurationError(
            f"the optimizer owns parameters that are not in the model: {stray}; "
            "build it from model.parameters() so updates reach the model being trained"
        )


def _positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ConfigurationError(f"{name} must be >= 1, got {value}")


class _Run:
    """The state of one training run; :func:`train` builds one and calls :meth:`run`."""

    def __init__(
        self,
        model: Module,
        train_items: list[Item],
        guide: Callable[..., Any],
        optimizer: Optimizer,
        *,
        val_items: list[Item],
        test_items: list[Item],
        epochs: int,
        batch_size: int,
        max_steps: int | None,
        budget: Budget,
        run_dir: RunDirectory | None,
        seed: int,
        beam_width: int,
        prefer_shorter: bool,
        max_workers: int | None,
        progress: bool,
        plot: bool,
        executor: ItemExecutor,
    ) -> None:
        self.model = model
        self.train_items = train_items
        self.val_items = val_items
        self.test_items = test_items
        self.guide = guide
        self.opt = optimizer
        self.epochs = epochs
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.budget = budget
        self.dir = run_dir
        self.seed = seed
        self.beam_width = beam_width
        self.prefer_shorter = prefer_shorter
        self.max_workers = max_workers
        self.progress = progress
        self.plot = plot
        self.executor = executor
        self.log = EventLog(run_dir.file(RunDirectory.EVENTS) if run_dir else None)
        # Run state (all of it goes into the checkpoint).
        self.rng = random.Random(seed)
        self.usage = RunUsage()
        self.history: list[dict[str, Any]] = []
        self.step = 0
        self.epoch = 0
        self.batch_index = 0
        self.order: list[int] = []
        self.beam: list[_Member] = []
        self.initial_state: dict[str, Any] = {}
        self.best_step = 0
        self.val_before: float | None = None
        self.test_before: float | None = None
        self.test_after: float | None = None
        self.finished = False
        self.stop_reason = ""
        self.elapsed_before = 0.0
        self.session_start = time.monotonic()
        self.bar: Any = None
        self._fingerprint = self.fingerprint()

    # -- configuration -------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a checkpoint to belong to this run."""
        opt_sd = self.opt.state_dict()
        model_sd = self.model.state_dict()
        return {
            "model": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            "parameters": sorted(model_sd),
            "optimizer": f"{type(self.opt).__module__}.{type(self.opt).__qualname__}",
            "optimizer_groups": opt_sd.get("param_groups"),
            "train_set": [len(self.train_items), fingerprint_items(self.train_items)],
            "val_set": [len(self.val_items), fingerprint_items(self.val_items)],
            "test_set": [len(self.test_items), fingerprint_items(self.test_items)],
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "max_steps": self.max_steps,
            "seed": self.seed,
            "beam_width": self.beam_width,
            "prefer_shorter": self.prefer_shorter,
            "budget": self.budget.to_dict(),
        }

    def config(self) -> dict[str, Any]:
        return {
            "model": type(self.model).__qualname__,
            "optimizer": type(self.opt).__qualname__,
            "train_size": len(self.train_items),
            "val_size": len(self.val_items),
            "test_size": len(self.test_items),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "max_steps": self.max_steps,
            "seed": self.seed,
            "beam_width": self.beam_width,
            "prefer_shorter": self.prefer_shorter,
            "budget": self.budget.to_dict(),
            "checkpoint": str(self.dir.path) if self.dir else None,
        }

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_items) / self.batch_size)

    @property
    def total_steps(self) -> int:
        total = self.steps_per_epoch * self.epochs
        return min(total, self.max_steps) if self.max_steps is not None else total

    def elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.session_start)

    # -- budget ----------------------------------------------------------------------------

    def check_time(self) -> None:
        """Raise ``BudgetExhausted`` when the seconds budget is spent (run before each unit of work)."""
        if self.budget.seconds is not None and self.elapsed() >= self.budget.seconds:
            raise BudgetExhausted(f"budget: seconds ({self.elapsed():.1f}/{self.budget.seconds:g})")

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count LLM usage inside the block as ``name``, with the budget's remaining limits if it counts."""
        counted = self.budget.counts(name)
        max_calls = self.budget.remaining_calls(self.usage) if counted else None
        max_tokens = self.budget.remaining_tokens(self.usage) if counted else None
        with track_usage(max_calls=max_calls, max_tokens=max_tokens) as meter:
            try:
                yield
            finally:
                self.usage.add(
                    name,
                    calls=meter.calls,
                    cache_hits=meter.cache_hits,
                    prompt_tokens=meter.prompt_tokens,
                    completion_tokens=meter.completion_tokens,
                    seconds=meter.seconds,
                )

    # -- evaluation ----------------------------------------------------------------------

    def outcomes(
        self, items: Sequence[Item], check: bool = True, training: bool = False, desc: str | None = None
    ) -> list[Outcome]:
        """Run and score ``items``: minibatches in training mode, validation and test in eval mode.

        With ``desc`` and progress on, a transient per-item bar shows the scoring as it goes.
        """
        self.model.train(training)
        bar = tqdm(total=len(items), desc=desc, unit="item", leave=False) if self.progress and desc else None
        try:
            return self.executor.run_items(
                self.model,
                items,
                self.guide,
                max_workers=self.max_workers,
                check=self.check_time if check else None,
                on_done=None if bar is None else (lambda _outcome: bar.update(1)),
            )
        finally:
            if bar is not None:
                bar.close()

    def score(self, items: Sequence[Item], phase: str) -> float | None:
        """Mean guide score on ``items`` (``None`` without items); test scoring ignores the time budget."""
        if not items:
            return None
        with self.phase(phase):
            desc = "scoring test set" if phase == "test" else "scoring validation set"
            return _mean([o.score for o in self.outcomes(items, check=phase != "test", desc=desc)])

    # -- state -----------------------------------------------------------------------------

    def load_member(self, member: _Member) -> None:
        self.model.load_state_dict(copy.deepcopy(member.params))
        self.opt.load_state_dict(copy.deepcopy(member.opt))

    def snapshot(self) -> dict[str, Any]:
        return {
            "fingerprint": self._fingerprint,
            "config": self.config(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_index": self.batch_index,
            "order": self.order,
            "parameters": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "beam": [m.to_dict() for m in self.beam],
            "initial_state": self.initial_state,
            "best_step": self.best_step,
            "rng": rng_to_json(self.rng),
            "history": self.history,
            "usage": self.usage.to_dict(),
            "scores": {"val_before": self.val_before, "test_before": self.test_before, "test_after": self.test_after},
            "elapsed_seconds": self.elapsed_before if self.finished else self.elapsed(),
            "finished": self.finished,
            "stop_reason": self.stop_reason,
        }

    def save(self) -> None:
        if self.dir is None:
            return
        self.dir.save(self.snapshot())
        self.dir.save_best(self.beam[0].params)

    def restore(self, state: dict[str, Any]) -> None:
        try:
            self.step = int(state["step"])
            self.epoch = int(state["epoch"])
            self.batch_index = int(state["batch_index"])
            self.order = [int(i) for i in state["order"]]
            self.beam = [_Member.from_dict(m) for m in state["beam"]]
            self.initial_state = dict(state["initial_state"])
            self.best_step = int(state["best_step"])
            self.rng.setstate(rng_from_json(state["rng"]))
            self.history = list(state["history"])
            self.usage = RunUsage.from_dict(state["usage"])
            scores = state["scores"]
            self.val_before = scores["val_before"]
            self.test_before = scores["test_before"]
            self.test_after = scores.get("test_after")
            self.elapsed_before = float(state["elapsed_seconds"])
            self.finished = bool(state["finished"])
            self.stop_reason = str(state["stop_reason"])
            self.model.load_state_dict(copy.deepcopy(state["parameters"]))
            self.opt.load_state_dict(copy.deepcopy(state["optimizer"]))
        except (KeyError, TypeError, ValueError, StateDictError) as exc:
            raise CheckpointError(
                f"the checkpoint in {self.dir.path if self.dir else '?'} cannot be restored ({type(exc).__name__}: "
                f"{exc}); it was edited or written by an incompatible version. Delete the directory to start over."
            ) from exc
        if not self.beam or len(self.order) != len(self.train_items):
            raise CheckpointError(
                "the checkpoint's beam or batch order is malformed; delete the directory to start over"
            )
        self.session_start = time.monotonic()

    # -- the loop -------------------------------------------------------------------------

    def start(self, resume: bool) -> None:
        if self.dir is not None and self.dir.exists():
            if not resume:
                raise CheckpointError(
                    f"{self.dir.path} already holds a training run; pass resume=True to continue it "
                    "(a finished run returns its result), or use an empty directory to start a new one"
                )
            state = self.dir.load()
            check_fingerprint(state.get("fingerprint", {}), self._fingerprint, str(self.dir.path))
            self.restore(state)
            self.log.emit("resume", step=self.step, finished=self.finished, usage=self.usage.to_dict())
            return
        self.initial_state = copy.deepcopy(self.model.state_dict())
        self.order = list(range(len(self.train_items)))
        self.rng.shuffle(self.order)
        self.log.emit("start", config=self.config(), parameters=self.initial_state)
        self.test_before = self.score(self.test_items, "test")
        try:
            self.check_time()
            self.val_before = self.score(self.val_items, "evaluation")
        except BudgetExhausted as exc:
            self.stop_reason = self.budget.exhausted(self.usage, self.elapsed()) or _reason(exc)
            self.val_before = None
        self.beam = [
            _Member(self.initial_state, self.opt.state_dict(), self.val_before, parameter_size(self.initial_state))
        ]
        self.log.emit("evaluate", step=0, val_score=self.val_before, test_score=self.test_before)
        self.save()

    def next_batch(self) -> list[int] | None:
        """The indices of the next minibatch, starting a new epoch (new shuffle) when one ends."""
        if self.batch_index >= self.steps_per_epoch:
            if self.epoch + 1 >= self.epochs:
                return None
            self.epoch += 1
            self.batch_index = 0
            self.order = list(range(len(self.train_items)))
            self.rng.shuffle(self.order)
        start = self.batch_index * self.batch_size
        return self.order[start : start + self.batch_size]

    def stop_check(self) -> str | None:
        if self.stop_reason:
            return self.stop_reason
        if self.max_steps is not None and self.step >= self.max_steps:
            return f"max_steps ({self.max_steps}) reached"
        return self.budget.exhausted(self.usage, self.elapsed())

    def run(self, resume: bool) -> TrainResult:
        was_training = getattr(self.model, "training", True)
        try:
            return self._run(resume)
        finally:
            if isinstance(was_training, bool):
                self.model.train(was_training)
            self.log.close()

    def _run(self, resume: bool) -> TrainResult:
        self.start(resume)
        if not self.finished:
            self.bar = (
                tqdm(total=self.total_steps, initial=min(self.step, self.total_steps), desc="train", unit="step")
                if self.progress
                else None
            )
            try:
                self.loop()
            finally:
                if self.bar is not None:
                    self.bar.close()
            self.finish()
        self.load_member(self.beam[0])
        return self.result()

    def loop(self) -> None:
        while True:
            reason = self.stop_check()
            if reason:
                self.stop_reason = reason
                return
            saved = (self.epoch, self.batch_index, list(self.order), self.rng.getstate())
            batch = self.next_batch()
            if batch is None:
                self.stop_reason = f"completed {self.epochs} epoch(s)"
                return
            started = time.monotonic()
            before = self.usage.to_dict()["total"]
            try:
                self.check_time()
                record = self.train_step(batch)
            except BudgetExhausted as exc:
                # The step is dropped whole: back to the last completed step's state.
                self.epoch, self.batch_index, self.order = saved[0], saved[1], saved[2]
                self.rng.setstate(saved[3])
                self.load_member(self.beam[0])
                self.opt.zero_feedback()
                self.stop_reason = self.budget.exhausted(self.usage, self.elapsed()) or _reason(exc)
                self.log.emit("step_abandoned", step=self.step + 1, reason=self.stop_reason)
                return
            except BaseException as exc:
                # Any other failure (a bug in a guide, an unreachable model, Ctrl-C) ends the call,
                # but the model still holds the best state, and the checkpoint can resume the run.
                self.load_member(self.beam[0])
                self.opt.zero_feedback()
                self.log.emit("error", step=self.step + 1, error=f"{type(exc).__name__}: {exc}")
                raise
            after = self.usage.to_dict()["total"]
            record["usage"] = {k: after[k] - before[k] for k in ("calls", "prompt_tokens", "completion_tokens")}
            record["seconds"] = round(time.monotonic() - started, 3)
            self.batch_index += 1
            self.step += 1
            record["step"] = self.step
            record["epoch"] = self.epoch
            self.history.append(record)
            if record["accepted"]:
                self.best_step = self.step
            self.save()
            self.log.emit("step", **record)
            self.show(record)

    def show(self, record: dict[str, Any]) -> None:
        if self.bar is None:
            return
        val = record.get("val_score")
        self.bar.update(1)
        self.bar.set_postfix(
            train=f"{record['train_score']:.2f}",
            val="-" if val is None else f"{val:.2f}",
            tokens=self.usage.total_tokens,
            time=f"{self.elapsed():.0f}s",
            refresh=True,
        )

    def train_step(self, batch: list[int]) -> dict[str, Any]:
        """One minibatch: forward and backward for each item, propose, gate on validation."""
        items = [self.train_items[i] for i in batch]
        children: list[tuple[_Member, dict[str, Any]]] = []
        candidates_log: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        notes: list[str] = []
        train_scores: list[float] = []
        errors = 0
        # Each parent continues with the optimizer state it has after proposing (it saw this batch);
        # the beam itself changes only once the whole step has succeeded.
        parents: list[_Member] = []
        for m_index, member in enumerate(self.beam):
            if len(self.beam) > 1:
                self.load_member(member)
            self.opt.zero_feedback()
            with self.phase("evaluation"):
                outcomes = self.outcomes(items, training=True)
            errors += sum(o.error is not None for o in outcomes)
            self.backward(outcomes)
            train_scores.append(_mean([o.score for o in outcomes]))
            self.check_time()
            try:
                with self.phase("optimizer"):
                    proposal = self.opt.propose()
            except ReplyParseError as exc:
                notes.append(f"the optimizer's reply could not be read: {exc}")
                self.opt.zero_feedback()
                parents.append(_Member(member.params, self.opt.state_dict(), member.val, member.size))
                continue
            self.opt.zero_feedback()
            after_propose = self.opt.state_dict()
            parents.append(_Member(member.params, after_propose, member.val, member.size))
            rejected.extend(_jsonable(r) for r in proposal.rejected)
            if proposal.errors and not any(c.updates for c in proposal.candidates):
                # Every reply was unreadable, retries included: the step is skipped, and the history says why.
                notes.append(f"the optimizer's reply could not be read: {proposal.errors[-1]}")
            for c_index, candidate in enumerate(proposal.candidates):
                entry: dict[str, Any] = {
                    "member": m_index,
                    "index": c_index,
                    "updates": _jsonable(candidate.updates),
                    "reasoning": candidate.reasoning,
                }
                candidates_log.append(entry)
                try:
                    self.opt.apply(candidate)
                except SuggestionError as exc:
                    entry["error"] = str(exc)
                    continue
                params = copy.deepcopy(self.model.state_dict())
                child = _Member(params, self.opt.state_dict(), None, parameter_size(params))
                entry["size"] = child.size
                if _key(child.params) == _key(member.params):
                    entry["error"] = "the update leaves every parameter as it was"
                else:
                    if self.val_items:
                        self.check_time()
                        child.val = self.score(self.val_items, "evaluation")
                    entry["val_score"] = child.val
                    children.append((child, entry))
                # Revert exactly: parameters to the parent's, optimizer to its state after proposing.
                self.model.load_state_dict(copy.deepcopy(member.params))
                self.opt.load_state_dict(copy.deepcopy(after_propose))
        new_beam, reason = self.select(parents, children)
        if not children:
            reason = "; ".join(notes) if notes else _no_update(rejected)
        accepted = not any(new_beam[0] is p for p in parents)
        for child, entry in children:
            entry["kept"] = any(child is m for m in new_beam)
        self.beam = new_beam
        self.load_member(self.beam[0])
        return {
            "batch": batch,
            "train_score": _mean(train_scores),
            "val_score": self.beam[0].val,
            "val_previous": parents[0].val,
            "accepted": accepted,
            "reason": reason,
            "candidates": candidates_log,
            "rejected_suggestions": rejected,
            "workflow_errors": errors,
        }

    def backward(self, outcomes: list[Outcome]) -> None:
        """Send each item's feedback into its own graph, in item order (so runs are reproducible)."""
        for outcome in outcomes:
            if outcome.error is not None:
                outcome.error.node.backward(outcome.feedback)
            elif isinstance(outcome.output, Node):
                outcome.output.backward(outcome.feedback)
            else:
                raise InvalidInputError(
                    f"the model returned a plain {type(outcome.output).__name__}, not a Node, so feedback cannot "
                    "reach its parameters; build the output with feedprop ops (fp.ops, @fp.bundle, llm_call)"
                )

    def select(
        self, parents: list[_Member], children: list[tuple[_Member, dict[str, Any]]]
    ) -> tuple[list[_Member], str]:
        """The next beam and why: best validation score first, then shorter, then the update over the old."""
        if not children:
            return parents, ""
        if not self.val_items:
            return [children[0][0]], "accepted without validation (no val_set given)"
        pool = [(self.rank(m, is_parent=True, order=i), m) for i, m in enumerate(parents)]
        pool += [(self.rank(c, is_parent=False, order=i), c) for i, (c, _e) in enumerate(children)]
        pool.sort(key=lambda entry: entry[0])
        beam: list[_Member] = []
        seen: set[str] = set()
        for _rank, member in pool:
            key = _key(member.params)
            if key not in seen:
                seen.add(key)
                beam.append(member)
            if len(beam) == self.beam_width:
                break
        top = min((c for c, _e in children), key=lambda c: self.rank(c, is_parent=False, order=0))
        accepted = not any(beam[0] is p for p in parents)
        return beam, _verdict(parents[0], top, accepted, self.prefer_shorter)

    def rank(self, member: _Member, *, is_parent: bool, order: int) -> tuple[float, int, int, int]:
        val = -round(member.val, 9) if member.val is not None else math.inf
        size = member.size if self.prefer_shorter else 0
        # On an equal score and size the update wins: "does not drop" keeps it.
        return (val, size, 1 if is_parent else 0, order)

    def finish(self) -> None:
        best = self.beam[0]
        self.load_member(best)
        if self.test_before is not None and _key(best.params) == _key(self.initial_state):
            self.test_after = self.test_before  # nothing was learned: the same program, already scored
        else:
            self.test_after = self.score(self.test_items, "test")
        self.finished = True
        # From here on the run's clock is frozen: a finished run resumed later reports the same time.
        self.elapsed_before = self.elapsed()
        self.session_start = time.monotonic()
        self.save()
        self.log.emit(
            "finish",
            step=self.step,
            stop_reason=self.stop_reason,
            val_before=self.val_before,
            val_after=best.val,
            test_before=self.test_before,
            test_after=self.test_after,
            usage=self.usage.to_dict(),
        )

    def result(self) -> TrainResult:
        result = TrainResult(
            history=self.history,
            best_state=copy.deepcopy(self.beam[0].params),
            initial_state=copy.deepcopy(self.initial_state),
            best_step=self.best_step,
            val_before=self.val_before,
            val_after=self.beam[0].val,
            test_before=self.test_before,
            test_after=self.test_after,
            usage=self.usage.to_dict(),
            stop_reason=self.stop_reason,
            elapsed_seconds=self.elapsed_before,
            config=self.config(),
            events=list(self.log.events),
        )
        if self.dir is not None:
            result.checkpoint_path = self.dir.file(RunDirectory.CHECKPOINT)
            result.parameters_path = self.dir.file(RunDirectory.BEST)
            result.log_path = self.dir.file(RunDirectory.EVENTS)
            result.report_path = self.dir.file(RunDirectory.REPORT)
            result.report_path.write_text(render_report(result), encoding="utf-8")
            if self.plot:
                result.plot_path = plot_curve(result, self.dir.file(RunDirectory.PLOT))
        return result


def _verdict(old: _Member, top: _Member, accepted: bool, prefer_shorter: bool) -> str:
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


def _no_update(refused: Sequence[dict[str, Any]]) -> str:
    """Why a step changed nothing although the optimizer replied: with the refusals (as recorded), if any."""
    if not refused:
        return "the optimizer proposed no valid update"
    reasons = list(dict.fromkeys(str(r.get("reason")) for r in refused))
    more = f" (and {len(reasons) - 1} other reason(s))" if len(reasons) > 1 else ""
    return f"the optimizer proposed no valid update: {len(refused)} suggestion(s) refused, {reasons[0]}{more}"


def _reason(exc: BudgetExhausted) -> str:
    text = str(exc)
    return text if text.startswith("budget") else f"budget: {text}"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return repr(value)


def train(
    model: Module,
    train_set: Iterable[Any],
    guide: Callable[..., Any],
    optimizer: Optimizer,
    *,
    val_set: Iterable[Any] | None = None,
    test_set: Iterable[Any] | None = None,
    epochs: int = 1,
    batch_size: int = 4,
    max_steps: int | None = None,
    budget: Budget | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    seed: int = 0,
    beam_width: int = 1,
    prefer_shorter: bool = True,
    max_workers: int | None = None,
    progress: bool = True,
    plot: bool = True,
    executor: str | ItemExecutor = "local",
) -> TrainResult:
    """Train ``model``'s parameters with ``optimizer`` so that ``guide`` scores its outputs higher.

    Args:
        model: a :class:`~feedprop.Module`; called as ``model(input)`` for each example.
        train_set, val_set, test_set: sequences of ``(input, target)`` pairs (or objects with
            ``.input``/``.target``, or mappings with those keys). ``val_set`` gates updates
            (without one, every valid update is applied and the last state counts as best);
            ``test_set`` is scored before and after training, outside any budget.
        guide: the loss: ``guide(output, target)`` (optionally ``example=``) returning
            ``Feedback(text, score)``, a number or a bool. A workflow raising
            :class:`~feedprop.errors.ExecutionError` gets the error as feedback, scored 0.
        optimizer: an :class:`~feedprop.optim.Optimizer` over ``model.parameters()``.
        epochs, batch_size, max_steps: the schedule; one optimizer proposal per minibatch.
        budget: :class:`Budget` of LLM calls, tokens and seconds. By default it covers every
            training call (minibatches, validation, optimizer); ``Budget(scope="optimizer")``
            counts only the optimizer's. Test-set scoring is never counted. When it runs out,
            the step in progress is dropped and the run ends with its best state.
        checkpoint: a directory for the checkpoint (written after every step), the best
            parameters (``best.json``), the event log, the report and the plot.
        resume: continue the run in ``checkpoint`` from its last completed step (a finished run
            just returns its result; no checkpoint yet starts a new run). Resuming with a
            different model, optimizer, data or options raises :class:`~feedprop.errors.CheckpointError`.
        seed: seeds the shuffling of the training set.
        beam_width: how many parameter states to keep and expand each step (1: greedy best-of-n).
        prefer_shorter: on a validation tie, keep the shorter parameters.
        max_workers: threads evaluating items in parallel (default 8; a model's own
            concurrency limit still caps its calls in flight).
        progress: show a progress bar. plot: write ``curve.png`` (needs matplotlib).
        executor: where minibatch, validation and test items run: ``"local"`` (threads here),
            ``"ray"`` (tasks on a Ray cluster, see :class:`~feedprop.train.distributed.RayExecutor`),
            or an :class:`~feedprop.train.evaluation.ItemExecutor`. The result is the same either way.

    Returns:
        :class:`TrainResult`; the model holds the best parameters found.

    Example:
        >>> from feedprop.llm import MockLLM
        >>> from feedprop.module import Module
        >>> from feedprop.node import Parameter
        >>> from feedprop.optim import OptoPrime
        >>> class M(Module):
        ...     def __init__(self):
        ...         self.word = Parameter("no", name="word")
        ...     def forward(self, x):
        ...         return x + self.word
        >>> m = M()
        >>> opt = OptoPrime(m.parameters(), llm=MockLLM('{"reasoning": "", "suggestion": {"word": "yes"}}'))
        >>> r = train(m, [("", "yes")], lambda out, t: out == t, opt, val_set=[("", "yes")], progress=False)
        >>> r.val_after, m.word.data
        (1.0, 'yes')
    """
    _check_model(model, optimizer)
    if not callable(guide):
        raise InvalidInputError(f"guide must be callable (output, target) -> Feedback, got {type(guide).__name__}")
    _positive_int("epochs", epochs)
    _positive_int("batch_size", batch_size)
    _positive_int("max_steps", max_steps, allow_none=True)
    _positive_int("beam_width", beam_width)
    _positive_int("max_workers", max_workers, allow_none=True)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidInputError(f"seed must be an int, got {seed!r}")
    if budget is None:
        budget = Budget()
    elif not isinstance(budget, Budget):
        raise InvalidInputError(f"budget must be a fp.Budget(calls=..., tokens=..., seconds=...), got {budget!r}")
    train_items = as_items(train_set, "train_set")
    val_items = as_items(val_set, "val_set", required=False)
    test_items = as_items(test_set, "test_set", required=False)
    if val_set is not None and not val_items:
        raise ConfigurationError("val_set is empty; pass at least one example or leave val_set=None")
    if beam_width > 1 and not val_items:
        raise ConfigurationError("beam_width > 1 ranks states by validation score; pass a val_set")
    if resume and checkpoint is None:
        raise ConfigurationError("resume=True needs checkpoint=<directory of the run to resume>")
    run_dir = RunDirectory(checkpoint) if checkpoint is not None else None
    runner, made_here = resolve_executor(executor)
    run = _Run(
        model,
        train_items,
        guide,
        optimizer,
        val_items=val_items,
        test_items=test_items,
        epochs=epochs,
        batch_size=batch_size,
        max_steps=max_steps,
        budget=budget,
        run_dir=run_dir,
        seed=seed,
        beam_width=beam_width,
        prefer_shorter=prefer_shorter,
        max_workers=max_workers,
        progress=progress,
        plot=plot,
        executor=runner,
    )
    try:
        return run.run(resume)
    finally:
        if made_here:
            runner.close()
