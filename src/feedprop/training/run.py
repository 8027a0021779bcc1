"""The state of one training run: its pieces, what it saves after every step, and what it returns.

A :class:`TrainingRun` holds the model and optimizer with the run's named pieces — its
:class:`~feedprop.training.config.TrainConfig`, its bookkeeping
(:class:`~feedprop.training.bookkeeping.RunBook`: fingerprint, budget meter, scoring of the
validation and test sets), its minibatch :class:`~feedprop.training.schedule.Schedule`, its
search strategy and its event log — and its own progress (steps, history, scores, why it
stopped). It is the :class:`~feedprop.training.search.SearchRun` a strategy works through; its
:meth:`~TrainingRun.snapshot` is the checkpoint, :meth:`~TrainingRun.restore` takes one up again,
and :meth:`~TrainingRun.result` is the :class:`~feedprop.training.result.TrainResult`. The loop
that drives it is :mod:`feedprop.training.trainer`.

Example:
    >>> from feedprop.llm import MockLLM
    >>> from feedprop.module import Module
    >>> from feedprop.node import Parameter
    >>> from feedprop.optim import OptoPrime
    >>> from feedprop.training.data import Item
    >>> from feedprop.training.evaluation import LocalExecutor
    >>> class Echo(Module):
    ...     def __init__(self):
    ...         self.suffix = Parameter("?", name="suffix")
    ...     def forward(self, x):
    ...         return x + self.suffix
    >>> model = Echo()
    >>> opt = OptoPrime(model.parameters(), llm=MockLLM("{}"))
    >>> splits = Splits([Item("a", "a!")], val=[Item("b", "b!")])
    >>> run = TrainingRun(model, lambda out, t: out == t, opt, splits, TrainConfig(), None, LocalExecutor())
    >>> run.val_scores(), run.snapshot()["step"], run.config()["val_size"]
    ([0.0], 0, 1)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from feedprop.module import Module
from feedprop.ops import answered_by
from feedprop.optim import Optimizer, Proposal
from feedprop.training.bookkeeping import RunBook, Splits
from feedprop.training.checkpoint import RunDirectory
from feedprop.training.config import TrainConfig
from feedprop.training.data import Item
from feedprop.training.evaluation import ItemExecutor, Outcome, mean
from feedprop.training.events import EventLog, item_outcomes
from feedprop.training.result import TrainResult
from feedprop.training.run_files import record_graph
from feedprop.training.schedule import Schedule
from feedprop.training.search import Member, make_strategy

__all__ = ["TrainingRun"]


class TrainingRun:
    """The state of one training run, the services it gives the search strategy, and its result.

    :func:`~feedprop.training.train` builds one and runs its loop over it.
    """

    def __init__(
        self,
        model: Module,
        guide: Callable[..., Any],
        optimizer: Optimizer,
        splits: Splits,
        config: TrainConfig,
        run_dir: RunDirectory | None,
        executor: ItemExecutor,
    ) -> None:
        self.model = model
        self.guide = guide
        self.opt = optimizer
        self.train_items, self.val_items = splits.train, splits.val
        self.cfg = config
        self.dir = run_dir
        self.executor = executor
        self.book = RunBook(
            model,
            guide,
            splits,
            config.budget,
            options=config.fingerprint(),
            optimizer=optimizer,
            executor=executor,
            max_workers=config.max_workers,
            test_workers=config.test_workers,
            progress=config.progress,
        )
        self.meter = self.book.meter
        self.log = EventLog(run_dir.file(RunDirectory.EVENTS) if run_dir else None)
        self.search = make_strategy(config)
        self.schedule = Schedule(
            len(splits.train),
            batch_size=config.batch_size,
            epochs=config.epochs,
            seed=config.seed,
            max_steps=config.max_steps,
        )
        self.rng = self.schedule.rng
        # The run's own state (all of it goes into the checkpoint, with the schedule's position).
        self.history: list[dict[str, Any]] = []
        self.step = 0
        self.initial_state: dict[str, Any] = {}
        self.best_step = 0
        self.val_before: float | None = None
        self.test_before: float | None = None
        self.test_after: float | None = None
        self.finished = False
        self.stop_reason = ""
        # Not saved: the best parameters whose test score a finished run, now extended, already has.
        self.tested_params: dict[str, Any] | None = None

    def config(self) -> dict[str, Any]:
        """The run's description for the report and :attr:`TrainResult.config`."""
        return self.book.describe({**self.cfg.to_dict(), "checkpoint": str(self.dir.path) if self.dir else None})

    def test_score(self) -> float | None:
        """Mean score on the test set (``None`` without one), outside any budget; per-item outcomes to the log."""
        outcomes = self.book.outcomes("test")
        if outcomes is None:
            return None
        self.log.emit_items("test", item_outcomes(outcomes), step=self.step)
        return mean([o.score for o in outcomes])

    # -- what the search strategy uses (SearchRun) ------------------------------------------

    def minibatch(self, items: Sequence[Item]) -> list[Outcome]:
        with self.meter.phase("evaluation"):
            outcomes = self.book.scorer.run(items, training=True)
        if self.dir is not None:  # the workflow's graph for the run page, once per run
            record_graph(self.dir.path, outcomes)
        return outcomes

    def teach(self, items: Sequence[Item]) -> list[tuple[Outcome, Item]]:
        teacher = self.cfg.teacher
        if teacher is None or not items:
            return []
        with self.meter.phase("optimizer"), answered_by(teacher):
            taught = self.book.scorer.run(items, training=True)
        return [(o, item) for o, item in zip(taught, items, strict=True) if o.solved]

    def propose(self) -> Proposal:
        with self.meter.phase("optimizer"):
            return self.opt.propose()

    def val_scores(self) -> list[float]:
        return self.book.scores("val") or []

    def load(self, member: Member) -> None:
        self.model.load_state_dict(copy.deepcopy(member.params))
        self.opt.load_state_dict(copy.deepcopy(member.opt))

    def load_params(self, params: dict[str, Any]) -> None:
        self.model.load_state_dict(copy.deepcopy(params))

    # -- state -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The run's own state for the checkpoint (the book adds fingerprint, usage and time)."""
        return {
            "config": self.config(),
            "step": self.step,
            **self.schedule.state_dict(),
            "parameters": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "search": self.search.state_dict(),
            "initial_state": self.initial_state,
            "best_step": self.best_step,
            "history": self.history,
            "scores": {"val_before": self.val_before, "test_before": self.test_before, "test_after": self.test_after},
            "finished": self.finished,
            "stop_reason": self.stop_reason,
        }

    def save(self) -> None:
        if self.dir is None:
            return
        self.book.save(self.dir, self.snapshot())
        self.dir.save_best(self.search.best().params)

    def restore(self, state: dict[str, Any]) -> None:
        """Take up the saved ``state`` (what :meth:`snapshot` wrote)."""
        self.finished = bool(state["finished"])
        self.step = int(state["step"])
        self.schedule.load_state_dict(state)
        self.search.load_state_dict(state["search"])
        self.initial_state = dict(state["initial_state"])
        self.best_step = int(state["best_step"])
        self.history = list(state["history"])
        scores = state["scores"]
        self.val_before = scores["val_before"]
        self.test_before = scores["test_before"]
        self.test_after = scores.get("test_after")
        self.stop_reason = str(state["stop_reason"])
        self.model.load_state_dict(copy.deepcopy(state["parameters"]))
        self.opt.load_state_dict(copy.deepcopy(state["optimizer"]))

    # -- the result ------------------------------------------------------------------------

    def result(self) -> TrainResult:
        """What :func:`~feedprop.training.train` returns; the report (and plot) go into the run's directory."""
        result = TrainResult(
            history=self.history,
            best_state=copy.deepcopy(self.search.best().params),
            initial_state=copy.deepcopy(self.initial_state),
            best_step=self.best_step,
            val_before=self.val_before,
            val_after=self.search.best().val,
            test_before=self.test_before,
            test_after=self.test_after,
            usage=self.meter.usage.to_dict(),
            stop_reason=self.stop_reason,
            elapsed_seconds=self.meter.elapsed(),
            config=self.config(),
            events=list(self.log.events),
            pool=self.search.summary(),
        )
        if self.dir is not None:
            result.write_files(self.dir, plot=self.cfg.plot)
        return result
