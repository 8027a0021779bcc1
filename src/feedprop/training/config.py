"""``TrainConfig``: the options of one training run, checked once.

:func:`~feedprop.training.train` builds one from its keyword arguments; the run reads its schedule
and search from it, the checkpoint's fingerprint is :meth:`TrainConfig.fingerprint` (the options
a resumed run must share), and the report prints :meth:`TrainConfig.to_dict`.

Example:
    >>> config = TrainConfig(batch_size=2, beam_width=3)
    >>> config.strategy, config.fingerprint()["batch_size"]
    ('beam', 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm.base import LLM
from feedprop.training.budget import Budget

__all__ = ["SEARCHES", "TrainConfig"]

#: The candidate search strategies ``train(search=...)`` accepts.
SEARCHES = ("beam", "greedy", "pareto")


def _int(name: str, value: Any, *, low: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ConfigurationError(f"{name} must be >= {low}, got {value}")


@dataclass(frozen=True)
class TrainConfig:
    """What :func:`~feedprop.training.train` was asked to do, apart from the model, data, guide and optimizer.

    ``search`` chooses how candidates are searched: ``"greedy"`` (best-of-n: keep the best
    candidate if validation does not drop), ``"beam"`` (keep the ``beam_width`` best states;
    ``beam_width > 1`` with the default ``"greedy"`` means beam too) or ``"pareto"`` (a pool of
    programs, parents drawn from the per-validation-item Pareto front, a merge of two lineages
    every ``merge_every`` steps; 0 turns merging off; ``follow_ups`` prompt candidates a step
    that the minibatch gate turned away get the code after them rewritten for their replies).
    ``max_workers`` threads score items in parallel, ``test_workers`` the test set (``None``:
    ``max_workers``; ``1``: one request at a time). ``teacher``, a model, answers in the
    student's place each training item the workflow failed (every LLM call of the run,
    :func:`feedprop.ops.answered_by`); the runs it gets right join the step's feedback, so
    :class:`~feedprop.optim.BootstrapDemos` can take them as demonstrations (their calls count
    as optimizer usage). Every option is checked on construction, with a typed error saying what
    to pass instead.

    Example:
        >>> TrainConfig(search="pareto").strategy
        'pareto'
        >>> TrainConfig(search="annealing")
        Traceback (most recent call last):
        ...
        feedprop.errors.ConfigurationError: unknown search 'annealing'; choose one of 'beam', 'greedy', 'pareto'
    """

    epochs: int = 1
    batch_size: int = 4
    max_steps: int | None = None
    budget: Budget = field(default_factory=Budget)
    seed: int = 0
    search: str = "greedy"
    beam_width: int = 1
    merge_every: int = 3
    follow_ups: int = 0
    prefer_shorter: bool = True
    max_workers: int | None = None
    test_workers: int | None = None
    teacher: LLM | None = None
    progress: bool = True
    plot: bool = True

    def __post_init__(self) -> None:
        _int("epochs", self.epochs, low=1)
        _int("batch_size", self.batch_size, low=1)
        _int("max_steps", self.max_steps, low=1, allow_none=True)
        _int("beam_width", self.beam_width, low=1)
        _int("merge_every", self.merge_every, low=0)
        _int("follow_ups", self.follow_ups, low=0)
        _int("max_workers", self.max_workers, low=1, allow_none=True)
        _int("test_workers", self.test_workers, low=1, allow_none=True)
        if self.teacher is not None and not isinstance(self.teacher, LLM):
            raise InvalidInputError(f"teacher must be a feedprop.llm.LLM, got {type(self.teacher).__name__}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InvalidInputError(f"seed must be an int, got {self.seed!r}")
        if self.budget is None:
            object.__setattr__(self, "budget", Budget())
        elif not isinstance(self.budget, Budget):
            raise InvalidInputError(
                f"budget must be a fp.Budget(calls=..., tokens=..., seconds=...), got {self.budget!r}"
            )
        if not isinstance(self.search, str):
            raise InvalidInputError(f"search must be a name such as 'greedy' or 'pareto', got {self.search!r}")
        if self.search not in SEARCHES:
            choices = ", ".join(repr(s) for s in SEARCHES)
            raise ConfigurationError(f"unknown search {self.search!r}; choose one of {choices}")
        if self.search == "pareto" and self.beam_width > 1:
            raise ConfigurationError(
                "beam_width > 1 asks for beam search but search='pareto' keeps a pool instead; drop one of them"
            )

    @property
    def strategy(self) -> str:
        """The search that runs: ``"beam"`` whenever ``beam_width > 1``, else ``search``."""
        return "beam" if self.beam_width > 1 else self.search

    @property
    def needs_validation(self) -> bool:
        """Whether the search ranks states by validation score (so a ``val_set`` is required)."""
        return self.beam_width > 1 or self.search == "pareto"

    def fingerprint(self) -> dict[str, Any]:
        """The options a resumed run must share with the run that wrote the checkpoint."""
        options: dict[str, Any] = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "max_steps": self.max_steps,
            "seed": self.seed,
            "search": self.strategy,
            "beam_width": self.beam_width,
            "prefer_shorter": self.prefer_shorter,
            "budget": self.budget.to_dict(),
        }
        if self.strategy == "pareto":
            options["merge_every"] = self.merge_every
            if self.follow_ups:  # absent when off, so checkpoints written before the option still resume
                options["follow_ups"] = self.follow_ups
        return options

    def to_dict(self) -> dict[str, Any]:
        """Every option as JSON (for the report and :attr:`TrainResult.config`)."""
        session = {
            "max_workers": self.max_workers,
            "test_workers": self.test_workers,
            "teacher": None if self.teacher is None else self.teacher.model,
        }
        return {**self.fingerprint(), **session, "progress": self.progress, "plot": self.plot}
