"""``train()``: the training loop in one call.

Each step takes a minibatch of the training set, runs the model on its items in parallel,
scores each output with the guide, and sends every item's feedback backwards through its own
graph (a workflow error becomes feedback too, scored 0). The feedback accumulates on the
parameters; the optimizer then proposes once for the whole batch.

Validation gating: every candidate update is applied, scored on the validation set, and
reverted. Which states are expanded and kept is the search strategy's choice
(:mod:`feedprop.training.search`): by default (``search="greedy"``) the step keeps the best
candidate only if the validation score does not drop (an equal score keeps the update unless
it makes the parameters longer — ties go to the shorter parameters); ``beam_width=k`` keeps
the ``k`` best states (beam search); ``search="pareto"`` keeps a pool of programs and draws
parents from the per-validation-item Pareto front. A rejected update is reverted exactly and
recorded in the history with the reason. The options travel as one
:class:`~feedprop.training.config.TrainConfig`.

After every step an atomic JSON checkpoint is written; ``resume=True`` continues a killed
run from its last completed step. Budgets (:class:`~feedprop.training.budget.Budget`) end the
run cleanly, keeping its best state.

Example:
    >>> import feedprop as fp
    >>> class Echo(fp.Module):
    ...     def __init__(self):
    ...         self.suffix = fp.Parameter("?", name="suffix")
    ...     def forward(self, x):
    ...         return x + self.suffix
    >>> model = Echo()
    >>> reply = '{"reasoning": "targets end with !", "suggestion": {"suffix": "!"}}'
    >>> opt = fp.optim.OptoPrime(model.parameters(), llm=fp.llm.MockLLM(reply))
    >>> data = [("hi", "hi!"), ("yo", "yo!")]
    >>> result = train(model, data, lambda out, target: out == target, opt, val_set=data, progress=False)
    >>> result.val_before, result.val_after, model.suffix.data
    (0.0, 1.0, '!')
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from feedprop.errors import BudgetExhausted, CheckpointError, ConfigurationError, InvalidInputError, StateDictError
from feedprop.module import Module
from feedprop.optim import Optimizer, Proposal
from feedprop.training.budget import Budget, RunMeter, RunUsage
from feedprop.training.checkpoint import RunDirectory, check_fingerprint, rng_from_json, rng_to_json
from feedprop.training.config import TrainConfig
from feedprop.training.data import Item, as_items, fingerprint_items
from feedprop.training.evaluation import ItemExecutor, Outcome, RunScorer, resolve_executor
from feedprop.training.events import EventLog, item_outcome
from feedprop.training.result import TrainResult
from feedprop.training.run_files import record_graph
from feedprop.training.search import Member, make_strategy, mean, parameter_size, same_state

__all__ = ["TrainResult", "train"]


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


class _Run:
    """The state of one training run; :func:`train` builds one and calls :meth:`run`."""

    def __init__(
        self,
        model: Module,
        guide: Callable[..., Any],
        optimizer: Optimizer,
        data: tuple[list[Item], list[Item], list[Item]],
        config: TrainConfig,
        run_dir: RunDirectory | None,
        executor: ItemExecutor,
    ) -> None:
        self.model = model
        self.guide = guide
        self.opt = optimizer
        self.train_items, self.val_items, self.test_items = data
        self.cfg = config
        self.meter = RunMeter(config.budget)
        self.dir = run_dir
        self.executor = executor
        self.scorer = RunScorer(
            model, guide, executor, self.meter, max_workers=config.max_workers, progress=config.progress
        )
        self.log = EventLog(run_dir.file(RunDirectory.EVENTS) if run_dir else None)
        self.search = make_strategy(config)
        # Run state (all of it goes into the checkpoint).
        self.rng = random.Random(config.seed)
        self.history: list[dict[str, Any]] = []
        self.step = 0
        self.epoch = 0
        self.batch_index = 0
        self.order: list[int] = []
        self.initial_state: dict[str, Any] = {}
        self.best_step = 0
        self.val_before: float | None = None
        self.test_before: float | None = None
        self.test_after: float | None = None
        self.finished = False
        self.stop_reason = ""
        self.bar: Any = None
        self._fingerprint = self.fingerprint()

    # -- configuration -------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a checkpoint to belong to this run."""
        return {
            "model": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            "parameters": sorted(self.model.state_dict()),
            "optimizer": f"{type(self.opt).__module__}.{type(self.opt).__qualname__}",
            "optimizer_groups": self.opt.state_dict().get("param_groups"),
            "train_set": [len(self.train_items), fingerprint_items(self.train_items)],
            "val_set": [len(self.val_items), fingerprint_items(self.val_items)],
            "test_set": [len(self.test_items), fingerprint_items(self.test_items)],
            **self.cfg.fingerprint(),
        }

    def config(self) -> dict[str, Any]:
        return {
            "model": type(self.model).__qualname__,
            "optimizer": type(self.opt).__qualname__,
            "train_size": len(self.train_items),
            "val_size": len(self.val_items),
            "test_size": len(self.test_items),
            **self.cfg.to_dict(),
            "checkpoint": str(self.dir.path) if self.dir else None,
        }

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_items) / self.cfg.batch_size)

    @property
    def total_steps(self) -> int:
        total = self.steps_per_epoch * self.cfg.epochs
        return min(total, self.cfg.max_steps) if self.cfg.max_steps is not None else total

    # -- evaluation ----------------------------------------------------------------------

    def test_score(self) -> float | None:
        """Mean score on the test set (``None`` without one), outside any budget; per-item outcomes to the log."""
        outcomes = self.scorer.outcomes(self.test_items, "test")
        if outcomes is None:
            return None
        records = [
            item_outcome(
                o.index,
                o.score,
                getattr(o.output, "data", o.output),
                feedback=o.feedback.text,
                error=str(o.error) if o.error is not None else None,
            )
            for o in outcomes
        ]
        self.log.emit_items("test", records, step=self.step)
        return mean([o.score for o in outcomes])

    # -- what the search strategy uses (SearchRun) ------------------------------------------

    def minibatch(self, items: Sequence[Item]) -> list[Outcome]:
        with self.meter.phase("evaluation"):
            outcomes = self.scorer.run(items, training=True)
        if self.dir is not None:  # the workflow's graph for the run page, once per run
            record_graph(self.dir.path, outcomes)
        return outcomes

    def propose(self) -> Proposal:
        with self.meter.phase("optimizer"):
            return self.opt.propose()

    def val_scores(self) -> list[float]:
        return self.scorer.scores(self.val_items, "evaluation") or []

    def load(self, member: Member) -> None:
        self.model.load_state_dict(copy.deepcopy(member.params))
        self.opt.load_state_dict(copy.deepcopy(member.opt))

    def load_params(self, params: dict[str, Any]) -> None:
        self.model.load_state_dict(copy.deepcopy(params))

    # -- state -----------------------------------------------------------------------------

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
            "search": self.search.state_dict(),
            "initial_state": self.initial_state,
            "best_step": self.best_step,
            "rng": rng_to_json(self.rng),
            "history": self.history,
            "usage": self.meter.usage.to_dict(),
            "scores": {"val_before": self.val_before, "test_before": self.test_before, "test_after": self.test_after},
            "elapsed_seconds": self.meter.elapsed_before if self.finished else self.meter.elapsed(),
            "finished": self.finished,
            "stop_reason": self.stop_reason,
        }

    def save(self) -> None:
        if self.dir is None:
            return
        self.dir.save(self.snapshot())
        self.dir.save_best(self.search.best().params)

    def restore(self, state: dict[str, Any]) -> None:
        try:
            self.step = int(state["step"])
            self.epoch = int(state["epoch"])
            self.batch_index = int(state["batch_index"])
            self.order = [int(i) for i in state["order"]]
            self.search.load_state_dict(state["search"])
            self.initial_state = dict(state["initial_state"])
            self.best_step = int(state["best_step"])
            self.rng.setstate(rng_from_json(state["rng"]))
            self.history = list(state["history"])
            self.meter.usage = RunUsage.from_dict(state["usage"])
            scores = state["scores"]
            self.val_before = scores["val_before"]
            self.test_before = scores["test_before"]
            self.test_after = scores.get("test_after")
            elapsed = float(state["elapsed_seconds"])
            self.finished = bool(state["finished"])
            self.stop_reason = str(state["stop_reason"])
            self.model.load_state_dict(copy.deepcopy(state["parameters"]))
            self.opt.load_state_dict(copy.deepcopy(state["optimizer"]))
        except (KeyError, TypeError, ValueError, StateDictError) as exc:
            raise CheckpointError(
                f"the checkpoint in {self.dir.path if self.dir else '?'} cannot be restored ({type(exc).__name__}: "
                f"{exc}); it was edited or written by an incompatible version. Delete the directory to start over."
            ) from exc
        if len(self.order) != len(self.train_items):
            raise CheckpointError("the checkpoint's batch order is malformed; delete the directory to start over")
        self.meter.restart(elapsed)

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
            self.log.emit("resume", step=self.step, finished=self.finished, usage=self.meter.usage.to_dict())
            return
        self.initial_state = copy.deepcopy(self.model.state_dict())
        self.order = list(range(len(self.train_items)))
        self.rng.shuffle(self.order)
        self.log.emit("start", config=self.config(), parameters=self.initial_state)
        self.test_before = self.test_score()
        val_scores: list[float] | None = None
        try:
            self.meter.check_time()
            val_scores = self.scorer.scores(self.val_items, "evaluation")
        except BudgetExhausted as exc:
            self.stop_reason = self.meter.exhausted() or _reason(exc)
        self.val_before = None if val_scores is None else mean(val_scores)
        size = parameter_size(self.initial_state)
        self.search.start(Member(self.initial_state, self.opt.state_dict(), self.val_before, size), val_scores)
        self.log.emit("evaluate", step=0, val_score=self.val_before, test_score=self.test_before)
        self.save()

    def next_batch(self) -> list[int] | None:
        """The indices of the next minibatch, starting a new epoch (new shuffle) when one ends."""
        if self.batch_index >= self.steps_per_epoch:
            if self.epoch + 1 >= self.cfg.epochs:
                return None
            self.epoch += 1
            self.batch_index = 0
            self.order = list(range(len(self.train_items)))
            self.rng.shuffle(self.order)
        start = self.batch_index * self.cfg.batch_size
        return self.order[start : start + self.cfg.batch_size]

    def stop_check(self) -> str | None:
        if self.stop_reason:
            return self.stop_reason
        if self.cfg.max_steps is not None and self.step >= self.cfg.max_steps:
            return f"max_steps ({self.cfg.max_steps}) reached"
        return self.meter.exhausted()

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
                if self.cfg.progress
                else None
            )
            try:
                self.loop()
            finally:
                if self.bar is not None:
                    self.bar.close()
            self.finish()
        self.load(self.search.best())
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
                self.stop_reason = f"completed {self.cfg.epochs} epoch(s)"
                return
            started = time.monotonic()
            before = self.meter.usage.to_dict()["total"]
            try:
                self.meter.check_time()
                record = {"batch": batch, **self.search.step(self, [self.train_items[i] for i in batch])}
                self.load(self.search.best())
            except BudgetExhausted as exc:
                # The step is dropped whole: back to the last completed step's state.
                self.epoch, self.batch_index, self.order = saved[0], saved[1], saved[2]
                self.rng.setstate(saved[3])
                self.load(self.search.best())
                self.opt.zero_feedback()
                self.stop_reason = self.meter.exhausted() or _reason(exc)
                self.log.emit("step_abandoned", step=self.step + 1, reason=self.stop_reason)
                return
            except BaseException as exc:
                # Any other failure (a bug in a guide, an unreachable model, Ctrl-C) ends the call,
                # but the model still holds the best state, and the checkpoint can resume the run.
                self.load(self.search.best())
                self.opt.zero_feedback()
                self.log.emit("error", step=self.step + 1, error=f"{type(exc).__name__}: {exc}")
                raise
            after = self.meter.usage.to_dict()["total"]
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
            tokens=self.meter.usage.total_tokens,
            time=f"{self.meter.elapsed():.0f}s",
            refresh=True,
        )

    def finish(self) -> None:
        best = self.search.best()
        self.load(best)
        if self.test_before is not None and same_state(best.params, self.initial_state):
            self.test_after = self.test_before  # nothing was learned: the same program, already scored
        else:
            self.test_after = self.test_score()
        self.finished = True
        # From here on the run's clock is frozen: a finished run resumed later reports the same time.
        self.meter.restart(self.meter.elapsed())
        self.save()
        self.log.emit(
            "finish",
            step=self.step,
            stop_reason=self.stop_reason,
            val_before=self.val_before,
            val_after=best.val,
            test_before=self.test_before,
            test_after=self.test_after,
            usage=self.meter.usage.to_dict(),
        )

    def result(self) -> TrainResult:
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
            elapsed_seconds=self.meter.elapsed_before,
            config=self.config(),
            events=list(self.log.events),
            pool=self.search.summary(),
        )
        if self.dir is not None:
            result.write_files(self.dir, plot=self.cfg.plot)
        return result


def _reason(exc: BudgetExhausted) -> str:
    text = str(exc)
    return text if text.startswith("budget") else f"budget: {text}"


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
    search: str = "greedy",
    beam_width: int = 1,
    merge_every: int = 3,
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
        seed: seeds the shuffling of the training set (and the Pareto search's parent draws).
        search: how candidates are searched (:mod:`feedprop.training.search`): ``"greedy"``
            (default: keep the best candidate if validation does not drop), ``"beam"``, or
            ``"pareto"`` (a pool of programs; parents drawn from the per-validation-item Pareto
            front, weighted by the items each wins; a child is validated only if it beats its
            parent on the minibatch; needs a ``val_set``). Each Pareto step's history record
            names its ``parent``, every candidate's ``minibatch`` scores (parent vs child) and
            whether it was ``admitted`` and why, the ``pool_size`` and the ``best`` program.
        beam_width: how many parameter states to keep and expand each step (1: greedy best-of-n;
            more than 1 means beam search).
        merge_every: with ``search="pareto"``, every this many steps try to merge two programs of
            different lineages that changed different parameters (0: never).
        prefer_shorter: on a validation tie, keep the shorter parameters.
        max_workers: threads evaluating items in parallel (default 8; a model's own
            concurrency limit still caps its calls in flight).
        progress: show a progress bar. plot: write ``curve.png`` (needs matplotlib).
        executor: where minibatch, validation and test items run: ``"local"`` (threads here),
            ``"ray"`` (tasks on a Ray cluster, see :class:`~feedprop.training.distributed.RayExecutor`),
            or an :class:`~feedprop.training.evaluation.ItemExecutor`. The result is the same either way.

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

        The Pareto search records which program each step grew from and the minibatch gate:

        >>> m = M()
        >>> opt = OptoPrime(m.parameters(), llm=MockLLM('{"reasoning": "", "suggestion": {"word": "yes"}}'))
        >>> data = [("", "yes")]
        >>> r = train(m, data, lambda out, t: out == t, opt, val_set=data, search="pareto", progress=False)
        >>> step = r.history[0]
        >>> step["parent"], step["candidates"][0]["minibatch"], step["candidates"][0]["admitted"], m.word.data
        (0, {'parent': 0.0, 'child': 1.0, 'calls': 0, 'saved': 0}, True, 'yes')
    """
    _check_model(model, optimizer)
    if not callable(guide):
        raise InvalidInputError(f"guide must be callable (output, target) -> Feedback, got {type(guide).__name__}")
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        max_steps=max_steps,
        budget=budget if budget is not None else Budget(),
        seed=seed,
        search=search,
        beam_width=beam_width,
        merge_every=merge_every,
        prefer_shorter=prefer_shorter,
        max_workers=max_workers,
        progress=progress,
        plot=plot,
    )
    train_items = as_items(train_set, "train_set")
    val_items = as_items(val_set, "val_set", required=False)
    test_items = as_items(test_set, "test_set", required=False)
    if val_set is not None and not val_items:
        raise ConfigurationError("val_set is empty; pass at least one example or leave val_set=None")
    if config.needs_validation and not val_items:
        what = "beam_width > 1" if config.beam_width > 1 else f"search={config.search!r}"
        raise ConfigurationError(f"{what} ranks states by validation score; pass a val_set")
    if resume and checkpoint is None:
        raise ConfigurationError("resume=True needs checkpoint=<directory of the run to resume>")
    run_dir = RunDirectory(checkpoint) if checkpoint is not None else None
    runner, made_here = resolve_executor(executor)
    run = _Run(model, guide, optimizer, (train_items, val_items, test_items), config, run_dir, runner)
    try:
        return run.run(resume)
    finally:
        if made_here:
            runner.close()
