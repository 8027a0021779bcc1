"""Run bookkeeping shared by :func:`~feedprop.training.train` and :func:`feedprop.joint.alternate`.

What every run keeps track of besides its own progress, held by one :class:`RunBook`:

- what the run is: its fingerprint (the model, its parameter names, the optimizer, the data
  splits and the options a resumed run must share) and its description for the report;
- what it has spent: a :class:`~feedprop.training.budget.RunMeter` (the clock over every session,
  LLM usage by phase, the budget), and a :class:`Span` for the part spent by one step or phase;
- its saved state: the bookkeeping part of a checkpoint, the check that a checkpoint belongs to
  the run, and the restore on resume (the run adds and restores its own fields);
- the scoring of its validation and test splits, the same way for both entry points
  (:class:`~feedprop.training.evaluation.RunScorer`; the test set on ``test_workers`` threads).

Example:
    >>> from feedprop.module import Module
    >>> from feedprop.node import Parameter
    >>> class Echo(Module):
    ...     def __init__(self):
    ...         self.suffix = Parameter("!", name="suffix")
    ...     def forward(self, x):
    ...         return x + self.suffix
    >>> splits = Splits([Item("a", "a!")], val=[Item("b", "b!"), Item("c", "c?")])
    >>> book = RunBook(Echo(), lambda out, target: out == target, splits, Budget(), options={"seed": 0})
    >>> book.score("val"), book.score("test")
    (0.5, None)
    >>> sorted(book.fingerprint), book.describe({"seed": 0})["val_size"]
    (['model', 'parameters', 'seed', 'test_set', 'train_set', 'val_set'], 2)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from feedprop.errors import CheckpointError, ConfigurationError, StateDictError
from feedprop.module import Module
from feedprop.optim import Optimizer
from feedprop.training.budget import Budget, RunMeter, RunUsage
from feedprop.training.checkpoint import check_fingerprint
from feedprop.training.data import Item, as_items, fingerprint_items
from feedprop.training.evaluation import ItemExecutor, LocalExecutor, Outcome, RunScorer, mean

__all__ = ["RunBook", "RunStore", "Span", "Splits", "type_name"]

#: The options that only say when a run stops: a checkpoint that differs in these alone is the
#: same run with other limits (``RunBook.resume(extend=True)`` lets it go on under the new ones).
LIMITS = ("budget", "max_steps", "epochs")

Split = Literal["val", "test"]
#: The usage phase each scored split counts as: validation is training work, the test set is measurement.
_PHASE_OF: dict[str, str] = {"val": "evaluation", "test": "test"}


def type_name(obj: Any, *, qualified: bool = False) -> str:
    """The name of ``obj``'s class, with its module when ``qualified``.

    Example:
        >>> type_name(Budget()), type_name(Budget(), qualified=True)
        ('Budget', 'feedprop.training.budget.Budget')
    """
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}" if qualified else cls.__qualname__


@dataclass(frozen=True)
class Splits:
    """The training, validation and test items of a run (the last two may be empty).

    Example:
        >>> Splits([Item("a", "b")]).sizes()
        {'train_size': 1, 'val_size': 0, 'test_size': 0}
    """

    train: list[Item]
    val: list[Item] = field(default_factory=list)
    test: list[Item] = field(default_factory=list)

    @classmethod
    def read(
        cls, train_set: Iterable[Any], val_set: Iterable[Any] | None, test_set: Iterable[Any] | None, *, val: bool
    ) -> Splits:
        """The splits of what a caller passed (:func:`~feedprop.training.data.as_items`).

        ``val`` says whether a ``val_set`` is required; one given but empty is an error either way.
        """
        train = as_items(train_set, "train_set")
        val_items = as_items(val_set, "val_set", required=val)
        if val_set is not None and not val_items:
            raise ConfigurationError("val_set is empty; pass at least one example or leave val_set=None")
        return cls(train, val_items, as_items(test_set, "test_set", required=False))

    def named(self) -> dict[str, list[Item]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def fingerprint(self) -> dict[str, list[Any]]:
        """``{"train_set": [size, hash], ...}``: a resumed run's data must hash the same."""
        return {f"{name}_set": [len(items), fingerprint_items(items)] for name, items in self.named().items()}

    def sizes(self) -> dict[str, int]:
        """``{"train_size": n, ...}`` for the report."""
        return {f"{name}_size": len(items) for name, items in self.named().items()}


class RunStore(Protocol):
    """Where a run saves its state: a :class:`~feedprop.training.checkpoint.RunDirectory` or a
    :class:`~feedprop.training.checkpoint.StateFile`; ``path`` is the run's directory."""

    path: Path

    def exists(self) -> bool:
        """Whether a saved state is there."""
        ...

    def load(self) -> dict[str, Any]:
        """The saved state (a damaged one raises :class:`~feedprop.errors.CheckpointError`)."""
        ...

    def save(self, state: Mapping[str, Any]) -> None:
        """Write ``state`` atomically."""
        ...


class Span:
    """The LLM usage and wall time a run spends from now on (one step, one phase).

    Example:
        >>> meter = RunMeter(Budget())
        >>> span = Span(meter)
        >>> meter.usage.add("optimizer", calls=2, prompt_tokens=30)
        >>> span.usage("calls", "prompt_tokens"), span.seconds() < 1
        ({'calls': 2, 'prompt_tokens': 30}, True)
    """

    def __init__(self, meter: RunMeter) -> None:
        self.meter = meter
        self.before = meter.usage.to_dict()["total"]
        self.started = time.monotonic()

    def usage(self, *counters: str) -> dict[str, int]:
        """How much of each usage counter (``calls``, ``cache_hits``, ``prompt_tokens``, ...) the span spent."""
        after = self.meter.usage.to_dict()["total"]
        return {name: int(after[name] - self.before[name]) for name in counters}

    def seconds(self) -> float:
        """Seconds since the span began, to the millisecond."""
        return round(time.monotonic() - self.started, 3)


class RunBook:
    """The bookkeeping of one run: fingerprint, meter, scorer, and the shared part of its saved state.

    ``options`` are the run's settings a resumed run must share (they join the fingerprint);
    ``optimizer``, when the run has one, is part of the fingerprint and the description.
    ``enforce_budget=False`` scores the splits without refusing calls beyond the budget (their
    usage still counts).
    """

    def __init__(
        self,
        model: Module,
        guide: Callable[..., Any],
        splits: Splits,
        budget: Budget,
        *,
        options: Mapping[str, Any],
        optimizer: Optimizer | None = None,
        executor: ItemExecutor | None = None,
        max_workers: int | None = None,
        test_workers: int | None = None,
        progress: bool = False,
        enforce_budget: bool = True,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.splits = splits
        self.meter = RunMeter(budget)
        self.scorer = RunScorer(
            model,
            guide,
            executor if executor is not None else LocalExecutor(),
            self.meter,
            max_workers=max_workers,
            test_workers=test_workers,
            progress=progress,
            enforce_budget=enforce_budget,
        )
        self.fingerprint: dict[str, Any] = self._fingerprint(options)
        #: After :meth:`resume`: the limits (``LIMITS``) the resumed run changed, old and new values.
        self.extended: dict[str, dict[str, Any]] = {}

    # -- what the run is -------------------------------------------------------------------------

    def _names(self, *, qualified: bool) -> dict[str, str]:
        names = {"model": type_name(self.model, qualified=qualified)}
        if self.optimizer is not None:
            names["optimizer"] = type_name(self.optimizer, qualified=qualified)
        return names

    def _fingerprint(self, options: Mapping[str, Any]) -> dict[str, Any]:
        identity: dict[str, Any] = {**self._names(qualified=True), "parameters": sorted(self.model.state_dict())}
        if self.optimizer is not None:
            identity["optimizer_groups"] = self.optimizer.state_dict().get("param_groups")
        fingerprint: dict[str, Any] = json.loads(json.dumps({**identity, **self.splits.fingerprint(), **options}))
        return fingerprint

    def describe(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The run as its report shows it: class names, split sizes, then ``options``."""
        return {**self._names(qualified=False), **self.splits.sizes(), **options}

    # -- scoring ----------------------------------------------------------------------------------

    def outcomes(self, split: Split) -> list[Outcome] | None:
        """Per-item outcomes of the model as it is on ``split`` (``None`` when the split is empty).

        Validation counts as ``evaluation`` usage (against the budget), the test set as ``test``
        (never against it).
        """
        items = self.splits.val if split == "val" else self.splits.test
        return self.scorer.outcomes(items, _PHASE_OF[split])

    def scores(self, split: Split) -> list[float] | None:
        """Per-item scores on ``split`` (``None`` when the split is empty)."""
        outcomes = self.outcomes(split)
        return None if outcomes is None else [o.score for o in outcomes]

    def score(self, split: Split) -> float | None:
        """The mean score on ``split`` (``None`` when the split is empty)."""
        scores = self.scores(split)
        return None if scores is None else mean(scores)

    # -- saved state ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The bookkeeping part of a saved state: fingerprint, usage and elapsed seconds."""
        return {
            "fingerprint": self.fingerprint,
            "usage": self.meter.usage.to_dict(),
            "elapsed_seconds": self.meter.elapsed(),
        }

    def save(self, store: RunStore | None, state: Mapping[str, Any]) -> None:
        """Save the run's own ``state`` with the bookkeeping to ``store`` (nothing without one)."""
        if store is not None:
            store.save({**self.state(), **state})

    def resume(
        self,
        store: RunStore | None,
        resume: bool,
        what: str,
        restore: Callable[[dict[str, Any]], None],
        *,
        extend: bool = False,
    ) -> bool:
        """Continue the run saved in ``store``; ``False`` when there is none (start anew).

        The usage and the clock continue (a finished run's clock stays where it stopped), and
        ``restore`` gets the saved state for the run's own fields. With ``extend``, the run may
        come back with other limits (``budget``, ``max_steps``, ``epochs``): :attr:`extended`
        then names them, with their old and new values, and the clock runs again (the caller
        decides whether a finished run goes on). Raises :class:`~feedprop.errors.CheckpointError`
        when ``store`` holds a run (``what``, e.g. ``"a training run"``) but ``resume`` is false,
        when the saved run is another (its fingerprint differs, beyond the limits ``extend``
        allows), or when the state is malformed.
        """
        self.extended = {}
        if store is None or not store.exists():
            return False
        if not resume:
            raise CheckpointError(
                f"{store.path} already holds {what}; pass resume=True to continue it (a finished run returns its "
                "result), or use an empty directory to start a new one"
            )
        state = store.load()
        saved = state.get("fingerprint", {})
        changed = check_fingerprint(saved, self.fingerprint, str(store.path), LIMITS, extend=extend)
        try:
            self.meter.usage = RunUsage.from_dict(state["usage"])
            finished = bool(state.get("finished", False))
            self.meter.restart(float(state["elapsed_seconds"]), running=not finished or bool(changed))
            restore(state)
        except (KeyError, TypeError, ValueError, StateDictError) as exc:
            raise CheckpointError(
                f"the checkpoint in {store.path} cannot be restored ({type(exc).__name__}: {exc}); it was edited "
                "or written by an incompatible version. Delete the directory to start over."
            ) from exc
        self.extended = {key: {"before": saved.get(key), "after": self.fingerprint.get(key)} for key in changed}
        return True
