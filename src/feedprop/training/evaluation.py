"""Running a model over examples in parallel and scoring each output with a guide.

Items run in a bounded pool of threads that see the caller's context (usage meters, budgets,
tracing state), so every LLM call counts. How many calls reach one model at once is still
capped by that model's own concurrency limit; the pool only bounds the threads waiting on it.
The items of a workflow with ``async def forward`` run instead as tasks on one event loop, as
many at once as there would be threads (:mod:`feedprop.training.event_loop`); a guide may be
``async def`` too.

Where the items run is pluggable: an :class:`ItemExecutor` runs them, by default the
:class:`LocalExecutor` (threads in this process); ``executor="ray"`` runs each item as a task on
a Ray cluster (:class:`~feedprop.training.distributed.RayExecutor`, needs the ``distributed`` extra).

A workflow that raises :class:`~feedprop.errors.ExecutionError` does not stop an evaluation:
the error becomes that item's feedback with score 0. Errors that are not about the workflow's
answer — a budget running out, a model that cannot be reached — stop it.

Example:
    >>> class Upper:  # any callable model works for evaluation
    ...     def __call__(self, x):
    ...         return x.upper()
    >>> result = evaluate(Upper(), [("a", "A"), ("b", "c")], lambda out, target: float(out == target))
    >>> result.score, result.scores
    (0.5, [1.0, 0.0])
"""

from __future__ import annotations

import inspect
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import Any, ClassVar, Self

from tqdm.auto import tqdm

from feedprop.errors import BudgetExhausted, ConfigurationError, ExecutionError, InvalidInputError, LLMError
from feedprop.llm import ContextThreadPoolExecutor, track_usage
from feedprop.node import Feedback, Node
from feedprop.training.budget import RunMeter
from feedprop.training.data import Item, as_items
from feedprop.training.event_loop import awaited, gather_limited, is_async, run_sync

__all__ = [
    "DEFAULT_WORKERS",
    "Evaluation",
    "ItemExecutor",
    "LocalExecutor",
    "Outcome",
    "RunScorer",
    "evaluate",
    "mean",
    "resolve_executor",
    "run_items",
    "to_feedback",
]

#: Threads per evaluation unless told otherwise. Calls beyond a model's own concurrency limit
#: wait for a slot, so this only needs to be at least that limit.
DEFAULT_WORKERS = 8

GuideFn = Callable[..., Any]


@dataclass
class Outcome:
    """What one item produced: the ``output`` (a Node while training), its ``feedback``, and any ``error``."""

    index: int
    output: Any
    feedback: Feedback
    error: ExecutionError | None = None

    @property
    def score(self) -> float:
        assert self.feedback.score is not None  # to_feedback guarantees a score
        return float(self.feedback.score)

    @property
    def solved(self) -> bool:
        """Whether the item ran without error and got the full score."""
        return self.error is None and self.score >= 1.0


@dataclass
class Evaluation:
    """Scores of a model on a dataset: per-item ``scores``, ``outputs`` and ``feedback``; ``score`` is the mean.

    Example:
        >>> Evaluation(scores=[1.0, 0.0], outputs=["4", "5"], feedback=[]).score
        0.5
    """

    scores: list[float]
    outputs: list[Any]
    feedback: list[Feedback]
    errors: int = 0
    seconds: float = 0.0
    usage: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0

    def __len__(self) -> int:
        return len(self.scores)


def _accepts_example(guide: GuideFn) -> bool:
    try:
        params = inspect.signature(guide).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: call them plainly
        return False
    return any(p.name == "example" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def to_feedback(result: Any, guide: Any) -> Feedback:
    """Turn what a guide returned into :class:`Feedback` with a finite score.

    A guide returns ``Feedback`` (with a score), a number, or a bool; anything else is a bug in
    the guide and raises :class:`InvalidInputError` saying so.
    """
    name = getattr(guide, "__name__", type(guide).__name__)
    if isinstance(result, Feedback):
        if result.score is None:
            raise InvalidInputError(
                f"guide {name} returned Feedback without a score; the trainer ranks updates by score, "
                "so return Feedback(text, score=...) with a number (e.g. 1.0 correct, 0.0 wrong)"
            )
        score = result.score
        fb = result
    elif isinstance(result, bool):
        score = 1.0 if result else 0.0
        fb = Feedback("Correct." if result else "Incorrect.", score=score)
    elif isinstance(result, int | float):
        score = float(result)
        fb = Feedback(f"Score: {score:g}", score=score)
    else:
        raise InvalidInputError(
            f"guide {name} returned {type(result).__name__}; a guide must return Feedback(text, score=...), "
            "a number or a bool"
        )
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise InvalidInputError(f"guide {name} returned score {score!r}; scores must be finite numbers")
    return fb


def _fatal_cause(exc: BaseException) -> BaseException | None:
    """A budget or LLM failure hidden inside an ExecutionError: those stop the run, not score 0."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BudgetExhausted | LLMError):
            return current
        current = current.__cause__ or current.__context__
    node_error = getattr(getattr(exc, "node", None), "data", None)
    if isinstance(node_error, BudgetExhausted | LLMError):
        return node_error
    return None


def error_feedback(error: ExecutionError) -> Feedback:
    """The feedback a workflow error becomes: its message, scored 0."""
    return Feedback(f"The workflow raised an error instead of answering: {error}", score=0.0)


class _Skipped(Exception):
    """Internal: an item not started because another one failed first."""


def _run_one(
    model: Callable[[Any], Any],
    item: Item,
    index: int,
    guide: GuideFn,
    pass_example: bool,
    check: Callable[[], None] | None,
    stop: threading.Event,
) -> Outcome:
    if stop.is_set():
        raise _Skipped
    try:
        return _score_one(model, item, index, guide, pass_example, check)
    except BaseException:
        stop.set()  # at once, so items about to start in other threads do not
        raise


def _score_one(
    model: Callable[[Any], Any],
    item: Item,
    index: int,
    guide: GuideFn,
    pass_example: bool,
    check: Callable[[], None] | None,
) -> Outcome:
    if check is not None:
        check()
    try:
        output = awaited(model(item.input))
    except ExecutionError as exc:
        return _failed(exc, index)
    return Outcome(index, output, to_feedback(awaited(_judge(output, item, guide, pass_example)), guide))


async def _ascore_one(
    model: Callable[[Any], Any],
    item: Item,
    index: int,
    guide: GuideFn,
    pass_example: bool,
    check: Callable[[], None] | None,
) -> Outcome:
    """:func:`_score_one` for an async workflow (and guide), as a task on the running event loop."""
    if check is not None:
        check()
    try:
        output = model(item.input)
        if inspect.isawaitable(output):
            output = await output
    except ExecutionError as exc:
        return _failed(exc, index)
    result = _judge(output, item, guide, pass_example)
    if inspect.isawaitable(result):
        result = await result
    return Outcome(index, output, to_feedback(result, guide))


def _failed(exc: ExecutionError, index: int) -> Outcome:
    fatal = _fatal_cause(exc)
    if fatal is not None:
        raise fatal from exc
    return Outcome(index, None, error_feedback(exc), exc)


def _judge(output: Any, item: Item, guide: GuideFn, pass_example: bool) -> Any:
    value = output.data if isinstance(output, Node) else output
    return guide(value, item.target, example=item.example) if pass_example else guide(value, item.target)


def run_items(
    model: Callable[[Any], Any],
    items: Sequence[Item],
    guide: GuideFn,
    *,
    max_workers: int | None = None,
    check: Callable[[], None] | None = None,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run ``model`` on every item in parallel and score it; outcomes come back in item order.

    ``check`` runs before each item starts (the trainer raises ``BudgetExhausted`` from it when
    time is up). The first failure other than a workflow error cancels the items not yet started
    and is raised once the running ones finish. An async workflow's items run as tasks on one
    event loop instead of threads (:func:`~feedprop.training.event_loop.run_sync` says where
    that loop runs), under the same rules.
    """
    if not callable(guide):
        raise InvalidInputError(f"guide must be callable (output, target) -> Feedback, got {type(guide).__name__}")
    workers = max(1, min(max_workers or DEFAULT_WORKERS, len(items)))
    pass_example = _accepts_example(guide)
    if is_async(model):
        jobs = [partial(_ascore_one, model, item, i, guide, pass_example, check) for i, item in enumerate(items)]
        return run_sync(lambda: gather_limited(jobs, limit=workers, on_done=on_done))
    stop = threading.Event()
    outcomes: list[Outcome | None] = [None] * len(items)
    with ContextThreadPoolExecutor(max_workers=workers, thread_name_prefix="feedprop-eval") as pool:
        futures: list[Future[Outcome]] = [
            pool.submit(_run_one, model, item, i, guide, pass_example, check, stop) for i, item in enumerate(items)
        ]
        pending: set[Future[Outcome]] = set(futures)
        failure: BaseException | None = None
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                if fut.cancelled():
                    continue
                exc = fut.exception()
                if isinstance(exc, _Skipped):
                    continue
                if exc is not None:
                    if failure is None:
                        failure = exc
                        stop.set()
                        for other in pending:
                            other.cancel()
                    continue
                outcome = fut.result()
                outcomes[outcome.index] = outcome
                if on_done is not None:
                    on_done(outcome)
        if failure is not None:
            raise failure
    return [o for o in outcomes if o is not None]


class ItemExecutor:
    """Where the items of an evaluation or a training step run. Subclasses override :meth:`run_items`.

    A subclass that sets ``name`` can be chosen by that name (``executor="ray"``). Whatever runs
    the items, the outcomes must be what :func:`run_items` would return here: same order, same
    feedback, outputs whose graphs lead to ``model``'s parameters, and the LLM usage added to the
    caller's active meters.

    Example:
        >>> isinstance(resolve_executor("local")[0], LocalExecutor)
        True
    """

    #: The name ``executor=`` accepts for this class ("" for none).
    name: ClassVar[str] = ""
    _by_name: ClassVar[dict[str, type[ItemExecutor]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            ItemExecutor._by_name[cls.name] = cls

    def run_items(
        self,
        model: Callable[[Any], Any],
        items: Sequence[Item],
        guide: GuideFn,
        *,
        max_workers: int | None = None,
        check: Callable[[], None] | None = None,
        on_done: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Run ``model`` on every item and score it with ``guide``; see :func:`run_items`."""
        raise NotImplementedError(f"{type(self).__name__} must implement run_items()")

    def close(self) -> None:
        """Release what the executor holds. ``train`` and ``evaluate`` call it for executors they made from a name."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class LocalExecutor(ItemExecutor):
    """Runs items in a pool of threads in this process (:func:`run_items`)."""

    name = "local"

    def run_items(
        self,
        model: Callable[[Any], Any],
        items: Sequence[Item],
        guide: GuideFn,
        *,
        max_workers: int | None = None,
        check: Callable[[], None] | None = None,
        on_done: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        return run_items(model, items, guide, max_workers=max_workers, check=check, on_done=on_done)


def resolve_executor(executor: str | ItemExecutor | None) -> tuple[ItemExecutor, bool]:
    """The executor ``executor`` names, and whether it was made here (so the caller closes it).

    Example:
        >>> runner, made_here = resolve_executor(None)
        >>> type(runner).__name__, made_here
        ('LocalExecutor', True)
    """
    if executor is None:
        return LocalExecutor(), True
    if isinstance(executor, ItemExecutor):
        return executor, False
    if isinstance(executor, str):
        cls = ItemExecutor._by_name.get(executor)
        if cls is None:
            raise ConfigurationError(
                f"unknown executor {executor!r}; choose one of {sorted(ItemExecutor._by_name)} or pass an ItemExecutor"
            )
        return cls(), True
    raise InvalidInputError(
        f"executor must be a name such as 'local' or 'ray', or an ItemExecutor, got {type(executor).__name__}"
    )


class RunScorer:
    """Runs and scores items for a run: counted by the run's meter, on its executor.

    Minibatches run in training mode, validation and test sets in eval mode (the model's mode is
    restored afterwards); with ``progress`` a transient per-item bar shows a set's scoring as it
    goes. The test set runs on ``test_workers`` threads (``None``: ``max_workers``), the rest on
    ``max_workers``. ``enforce_budget=False`` counts the usage without refusing calls or stopping
    at the time limit.

    Example:
        >>> from feedprop.module import Module
        >>> class Upper(Module):
        ...     def forward(self, x):
        ...         return x.upper()
        >>> from feedprop.training.budget import Budget
        >>> scorer = RunScorer(Upper(), lambda out, t: out == t, LocalExecutor(), RunMeter(Budget()), test_workers=1)
        >>> scorer.scores([Item("a", "A"), Item("b", "c")], "evaluation"), scorer.workers("test")
        ([1.0, 0.0], 1)
    """

    def __init__(
        self,
        model: Any,
        guide: GuideFn,
        executor: ItemExecutor,
        meter: RunMeter,
        *,
        max_workers: int | None = None,
        test_workers: int | None = None,
        progress: bool = False,
        enforce_budget: bool = True,
    ) -> None:
        self.model = model
        self.guide = guide
        self.executor = executor
        self.meter = meter
        self.max_workers = max_workers
        self.test_workers = test_workers
        self.progress = progress
        self.enforce_budget = enforce_budget

    def workers(self, phase: str) -> int | None:
        """The threads items of ``phase`` run on (``None``: the executor's default)."""
        if phase == "test" and self.test_workers is not None:
            return self.test_workers
        return self.max_workers

    def run(
        self,
        items: Sequence[Item],
        *,
        training: bool = False,
        check: bool = True,
        desc: str | None = None,
        phase: str = "evaluation",
    ) -> list[Outcome]:
        """Run and score ``items`` (``check``: stop when the run's time is up; ``desc``: the bar's label)."""
        was_training = getattr(self.model, "training", None)
        self.model.train(training)
        bar = tqdm(total=len(items), desc=desc, unit="item", leave=False) if self.progress and desc else None
        try:
            return self.executor.run_items(
                self.model,
                items,
                self.guide,
                max_workers=self.workers(phase),
                check=self.meter.check_time if check and self.enforce_budget else None,
                on_done=None if bar is None else (lambda _outcome: bar.update(1)),
            )
        finally:
            if bar is not None:
                bar.close()
            if isinstance(was_training, bool):
                self.model.train(was_training)

    def scores(self, items: Sequence[Item], phase: str) -> list[float] | None:
        """Per-item scores in eval mode, counted as ``phase`` (``None`` without items); a test set ignores the time."""
        outcomes = self.outcomes(items, phase)
        return None if outcomes is None else [o.score for o in outcomes]

    def outcomes(self, items: Sequence[Item], phase: str) -> list[Outcome] | None:
        """Per-item outcomes in eval mode, counted as ``phase`` (``None`` without items)."""
        if not items:
            return None
        with self.meter.phase(phase, enforce=self.enforce_budget):
            desc = "scoring test set" if phase == "test" else "scoring validation set"
            return self.run(items, check=phase != "test", desc=desc, phase=phase)


def mean(values: Sequence[float]) -> float:
    """The mean of ``values`` (0.0 for none).

    Example:
        >>> mean([1.0, 0.0, 0.5]), mean([])
        (0.5, 0.0)
    """
    return sum(values) / len(values) if values else 0.0


def evaluate(
    model: Callable[[Any], Any],
    dataset: Iterable[Any],
    guide: GuideFn,
    *,
    max_workers: int | None = None,
    progress: bool = False,
    executor: str | ItemExecutor = "local",
) -> Evaluation:
    """Score ``model`` on ``dataset`` with ``guide``, running items in parallel.

    ``dataset`` holds ``(input, target)`` pairs (or objects with ``.input``/``.target``, or
    mappings with those keys). ``guide(output, target)`` returns ``Feedback`` with a score, a
    number or a bool. A workflow that raises ``ExecutionError`` scores 0 on that item.
    The LLM usage of the evaluation is in ``result.usage``. ``executor`` says where items run:
    ``"local"`` (threads here), ``"ray"`` (tasks on a Ray cluster; see
    :class:`~feedprop.training.distributed.RayExecutor` for its options), or an :class:`ItemExecutor`.
    An async workflow (``async def forward``, or an ``async def`` function) runs its items as
    tasks on one event loop, also when called inside a running loop such as a notebook's
    (:mod:`feedprop.training.event_loop`); it asks models with :func:`feedprop.ops.allm_call`.

    Example:
        >>> evaluate(str.upper, [("a", "A"), ("b", "B")], lambda out, target: out == target).score
        1.0
        >>> import asyncio
        >>> async def shout(x):
        ...     await asyncio.sleep(0)
        ...     return x.upper()
        >>> evaluate(shout, [("a", "A"), ("b", "c")], lambda out, target: out == target).scores
        [1.0, 0.0]
    """
    if not callable(model):
        raise InvalidInputError(
            f"model must be callable (input) -> output, a feedprop.Module or a function; got {type(model).__name__}"
        )
    if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(max_workers, int)):
        raise InvalidInputError(f"max_workers must be an int or None, got {max_workers!r}")
    if max_workers is not None and max_workers < 1:
        raise ConfigurationError(f"max_workers must be >= 1 (or None for the default), got {max_workers}")
    items = as_items(dataset, "dataset")
    runner, made_here = resolve_executor(executor)
    bar = tqdm(total=len(items), desc="evaluate", leave=False) if progress else None
    started = time.monotonic()
    with track_usage() as meter:
        try:
            outcomes = runner.run_items(
                model, items, guide, max_workers=max_workers, on_done=(lambda _o: bar.update(1)) if bar else None
            )
        finally:
            if bar is not None:
                bar.close()
            if made_here:
                runner.close()
    return Evaluation(
        scores=[o.score for o in outcomes],
        outputs=[o.output.data if isinstance(o.output, Node) else o.output for o in outcomes],
        feedback=[o.feedback for o in outcomes],
        errors=sum(o.error is not None for o in outcomes),
        seconds=time.monotonic() - started,
        usage=meter.to_dict(),
    )
