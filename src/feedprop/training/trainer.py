"""``train()``: the training loop in one call.

Each step takes a minibatch of the training set, runs the model on its items in parallel,
scores each output with the guide, and sends every item's feedback backwards through its own
graph (a workflow error becomes feedback too, scored 0). The feedback accumulates on the
parameters; the optimizer then proposes once for the whole batch.

Validation gating: every candidate update is applied, scored on the validation set, and
reverted. Which states are expanded and kept is the search strategy's choice
(:mod:`feedprop.training.search`: greedy, beam or a Pareto pool); a rejected update is
reverted exactly and recorded in the history with the reason.

The loop runs over named pieces: the options travel as one
:class:`~feedprop.training.config.TrainConfig`; the run's state, its checkpoint and its result
are a :class:`~feedprop.training.run.TrainingRun`; its minibatches come from a
:class:`~feedprop.training.schedule.Schedule`; its clock, usage, fingerprint and the scoring of
the validation and test sets are its bookkeeping (:mod:`feedprop.training.bookkeeping`, shared
with :func:`feedprop.joint.alternate`). After every step an atomic JSON checkpoint is written;
``resume=True`` continues a killed run from its last completed step, and a run its limits
stopped when it is given larger ones. Budgets (:class:`~feedprop.training.budget.Budget`) end
the run cleanly, keeping its best state.

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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from feedprop.errors import BudgetExhausted, ConfigurationError, InvalidInputError
from feedprop.llm.base import LLM
from feedprop.module import Module
from feedprop.optim import Optimizer
from feedprop.tracking import Tracker, track
from feedprop.training.bookkeeping import Span, Splits
from feedprop.training.budget import Budget
from feedprop.training.checkpoint import RunDirectory
from feedprop.training.config import TrainConfig
from feedprop.training.evaluation import ItemExecutor, LocalExecutor, mean, resolve_executor
from feedprop.training.progress import StepBar
from feedprop.training.result import TrainResult
from feedprop.training.run import TrainingRun
from feedprop.training.schedule import Position
from feedprop.training.search import Member, parameter_size, same_state

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
    stray = [name for name, p in optimizer.named_parameters() if id(p) not in owned]
    if stray:
        raise ConfigurationError(
            f"the optimizer owns parameters that are not in the model: {stray}; "
            "build it from model.parameters() so updates reach the model being trained"
        )


def _train(run: TrainingRun, resume: bool) -> TrainResult:
    """Start or resume ``run``, step until it stops, finish it; the model ends up holding the best state."""
    was_training = getattr(run.model, "training", True)
    try:
        _start(run, resume)
        if not run.finished:
            with StepBar(run.schedule.total_steps, run.step, enabled=run.cfg.progress) as bar:
                while (batch := _next_batch(run)) is not None:
                    if not _step(run, *batch):
                        break
                    bar.show(run.history[-1], run.meter)
            _finish(run)
        run.load(run.search.best())
        return run.result()
    finally:
        if isinstance(was_training, bool):
            run.model.train(was_training)
        run.log.close()


def _start(run: TrainingRun, resume: bool) -> None:
    """Resume the run saved in its directory, or score the initial state and save it as step 0."""
    if run.book.resume(run.dir, resume, "a training run", run.restore, extend=True):
        extended = run.book.extended
        if extended and run.finished:
            _reopen(run)
        run.log.emit(
            "resume",
            step=run.step,
            finished=run.finished,
            usage=run.meter.usage.to_dict(),
            **({"extended": extended} if extended else {}),
        )
        return
    run.initial_state = copy.deepcopy(run.model.state_dict())
    run.log.emit("start", config=run.config(), parameters=run.initial_state)
    run.test_before = run.test_score()
    val_scores: list[float] | None = None
    try:
        run.meter.check_time()
        val_scores = run.book.scores("val")
    except BudgetExhausted as exc:
        run.stop_reason = run.meter.stop_reason(exc)
    run.val_before = None if val_scores is None else mean(val_scores)
    size = parameter_size(run.initial_state)
    run.search.start(Member(run.initial_state, run.opt.state_dict(), run.val_before, size), val_scores)
    run.log.emit("evaluate", step=0, val_score=run.val_before, test_score=run.test_before)
    run.save()


def _reopen(run: TrainingRun) -> None:
    """A finished run resumed with other limits goes on under them from where it stopped.

    Every finished run stopped at a limit (its budget, ``max_steps`` or its epochs); with the
    new limits the loop decides again whether it stops. Its test score stays valid while the
    best parameters stay the same (:func:`_finish` then does not score the test set again).
    """
    run.finished = False
    run.stop_reason = ""
    run.tested_params = copy.deepcopy(run.search.best().params)


def _stop_reason(run: TrainingRun) -> str:
    """Why the run stops before its next step (empty while it goes on)."""
    if run.stop_reason:
        return run.stop_reason
    if run.cfg.max_steps is not None and run.step >= run.cfg.max_steps:
        return f"max_steps ({run.cfg.max_steps}) reached"
    return run.meter.exhausted() or ""


def _next_batch(run: TrainingRun) -> tuple[list[int], Position] | None:
    """The next minibatch and the schedule's position before it; ``None`` (with the reason set) when the run stops."""
    run.stop_reason = _stop_reason(run)
    if run.stop_reason:
        return None
    position = run.schedule.position()
    batch = run.schedule.next()
    if batch is None:
        run.stop_reason = f"completed {run.cfg.epochs} epoch(s)"
        return None
    return batch, position


def _step(run: TrainingRun, batch: list[int], position: Position) -> bool:
    """One step on ``batch``; ``False`` when the budget cut it short before any candidate was validated.

    Such a step is dropped whole (back to ``position``). A step whose budget ran out after it had
    validated a candidate keeps what it validated (the search says so in ``record["stopped"]``),
    is recorded and saved like any other, and the run then stops.
    """
    span = Span(run.meter)
    try:
        run.meter.check_time()
        record = {"batch": batch, **run.search.step(run, [run.train_items[i] for i in batch])}
        run.load(run.search.best())
    except BudgetExhausted as exc:
        run.schedule.rewind(position)
        run.load(run.search.best())
        run.opt.zero_feedback()
        run.stop_reason = run.meter.stop_reason(exc)
        run.log.emit("step_abandoned", step=run.step + 1, reason=run.stop_reason)
        return False
    except BaseException as exc:
        # Any other failure (a bug in a guide, an unreachable model, Ctrl-C) ends the call,
        # but the model still holds the best state, and the checkpoint can resume the run.
        run.load(run.search.best())
        run.opt.zero_feedback()
        run.log.emit("error", step=run.step + 1, error=f"{type(exc).__name__}: {exc}")
        raise
    record["usage"] = span.usage("calls", "prompt_tokens", "completion_tokens")
    record["seconds"] = span.seconds()
    run.schedule.advance()
    run.step += 1
    record["step"] = run.step
    record["epoch"] = run.schedule.epoch
    run.history.append(record)
    if record.get("stopped"):
        run.stop_reason = str(record["stopped"])
        record["reason"] = f"{record['reason']}; then the budget ran out ({run.stop_reason}): the step ends here"
    if record["accepted"]:
        run.best_step = run.step
    run.save()
    run.log.emit("step", **record)
    return True


def _finish(run: TrainingRun) -> None:
    """Score the best state on the test set, stop the clock and save the finished run."""
    best = run.search.best()
    run.load(best)
    if run.test_before is not None and same_state(best.params, run.initial_state):
        run.test_after = run.test_before  # nothing was learned: the same program, already scored
    elif run.tested_params is not None and same_state(best.params, run.tested_params):
        pass  # an extended run that found nothing better: its test score stands
    else:
        run.test_after = run.test_score()
    run.finished = True
    run.meter.stop()
    run.save()
    run.log.emit(
        "finish",
        step=run.step,
        stop_reason=run.stop_reason,
        val_before=run.val_before,
        val_after=best.val,
        test_before=run.test_before,
        test_after=run.test_after,
        usage=run.meter.usage.to_dict(),
    )


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
    follow_ups: int = 0,
    prefer_shorter: bool = True,
    max_workers: int | None = None,
    test_workers: int | None = None,
    teacher: LLM | None = None,
    progress: bool = True,
    plot: bool = True,
    executor: str | ItemExecutor = "local",
    tracker: str | Tracker | None = None,
) -> TrainResult:
    """Train ``model``'s parameters with ``optimizer`` so that ``guide`` scores its outputs higher.

    Args:
        model: a :class:`~feedprop.Module`; called as ``model(input)`` for each example. With
            ``async def forward`` the items of a batch run as tasks on one event loop
            (:mod:`feedprop.training.event_loop`; call models with ``ops.allm_call``).
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
            The limits may change: resumed with a larger ``budget``, ``max_steps`` or ``epochs``,
            a run that one of them stopped goes on from where it stopped, as one run with the
            new limits (its steps, pool, usage and clock continue; the ``resume`` event names
            the changed limits).
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
        follow_ups: with ``search="pareto"``, how many prompt candidates a step, turned away by
            the minibatch gate, get the trainable code after their LLM call rewritten for the
            replies they made the model write (0: none). Each rewrite is then gated on top of
            every turned-away prompt, screened on that prompt's recorded replies (no model
            call). A new prompt that changes the reply's form then gets code that reads the new
            form, instead of failing against code written for the old one.
        prefer_shorter: on a validation tie, keep the shorter parameters.
        max_workers: threads evaluating items in parallel (default 8; a model's own
            concurrency limit still caps its calls in flight).
        test_workers: threads scoring the test set (``None``: ``max_workers``); ``1`` scores one
            request at a time, so the scores repeat exactly on an engine whose parallel slots are
            not batch-invariant (llama.cpp's).
        teacher: a model that answers, in the student's place, the training items the workflow
            failed; its correct runs join the step's feedback, so ``BootstrapDemos`` can take them
            as demonstrations (its calls count as optimizer usage; local executor only).
        progress: show a progress bar. plot: write ``curve.png`` (needs matplotlib).
        executor: where minibatch, validation and test items run: ``"local"`` (threads here),
            ``"ray"`` (tasks on a Ray cluster, see :class:`~feedprop.training.distributed.RayExecutor`),
            or an :class:`~feedprop.training.evaluation.ItemExecutor`. The result is the same either way.
        tracker: an experiment tracker the run reports to: ``"mlflow"`` (its options, per-step scores,
            tokens and seconds, parameters and report, in ``mlflow.db`` of the checkpoint directory;
            see :class:`~feedprop.tracking.MLflowTracker`) or any :class:`~feedprop.tracking.Tracker`.

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
        follow_ups=follow_ups,
        prefer_shorter=prefer_shorter,
        max_workers=max_workers,
        test_workers=test_workers,
        teacher=teacher,
        progress=progress,
        plot=plot,
    )
    splits = Splits.read(train_set, val_set, test_set, val=False)
    if config.needs_validation and not splits.val:
        what = "beam_width > 1" if config.beam_width > 1 else f"search={config.search!r}"
        raise ConfigurationError(f"{what} ranks states by validation score; pass a val_set")
    if resume and checkpoint is None:
        raise ConfigurationError("resume=True needs checkpoint=<directory of the run to resume>")
    run_dir = RunDirectory(checkpoint) if checkpoint is not None else None
    runner, made_here = resolve_executor(executor)
    if teacher is not None and not isinstance(runner, LocalExecutor):
        if made_here:
            runner.close()
        raise ConfigurationError(
            f"teacher= needs the local executor (the teacher answers in this process); got {type(runner).__name__}"
        )
    run = TrainingRun(model, guide, optimizer, splits, config, run_dir, runner)
    try:
        with track(tracker, checkpoint, run.log) as tracked:
            return tracked.finish(_train(run, resume))
    finally:
        if made_here:
            runner.close()
