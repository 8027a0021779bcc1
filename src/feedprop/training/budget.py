"""Training budgets in LLM calls, tokens and seconds, and the usage a run has spent, by phase and by model.

A :class:`Budget` caps a run. By default it covers every LLM call training makes: the
workflow's own calls on minibatches and on the validation set, an LLM guide's calls, and
the optimizer's calls (``scope="all"``). Benchmarks compare optimizers at equal optimizer
spend, so ``scope="optimizer"`` counts only the calls made while the optimizer proposes.
Evaluation of the test set (the before/after figures of the report) is measurement, not
training, and never counts against the budget.

Calls are enforced exactly: the LLM layer refuses a call before it starts once the limit
is reached, so a run never makes more calls than allowed. Tokens are known only after a
call returns, so no new call starts once the tokens used reach the limit (the last call
may end above it). Seconds are checked before every step, candidate and evaluated item.
When the budget runs out inside a step, the step keeps the candidates it had already
validated (the search decides between them and the parents as usual, and the step's record
says ``"stopped"``); a step cut off before any candidate was validated is dropped whole.

Example:
    >>> budget = Budget(calls=100, tokens=50_000)
    >>> usage = RunUsage()
    >>> usage.add("optimizer", "gpt-4o", calls=3, prompt_tokens=900, completion_tokens=100, seconds=1.5)
    >>> budget.remaining_calls(usage), budget.remaining_tokens(usage)
    (97, 49000)
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from feedprop.errors import BudgetExhausted, ConfigurationError, InvalidInputError
from feedprop.llm import track_usage
from feedprop.llm.usage import UNKNOWN_MODEL

__all__ = ["Budget", "RunMeter", "RunUsage"]

Scope = Literal["all", "optimizer"]
_SCOPES = ("all", "optimizer")
#: The phases a run spends LLM calls in; ``scope="optimizer"`` budgets only the first.
PHASES = ("optimizer", "evaluation", "test")
_COUNTERS = ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "seconds")


@dataclass(frozen=True)
class Budget:
    """Limits for a training run; ``None`` means unlimited.

    ``calls`` and ``tokens`` count LLM calls and prompt + completion tokens; ``seconds`` is
    wall-clock time of the run (summed over resumed sessions). ``scope`` chooses what counts:
    ``"all"`` (default) every training call, ``"optimizer"`` only the optimizer's.

    Example:
        >>> Budget(calls=50, scope="optimizer").scope
        'optimizer'
    """

    calls: int | None = None
    tokens: int | None = None
    seconds: float | None = None
    scope: Scope = "all"

    def __post_init__(self) -> None:
        for name in ("calls", "tokens"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInputError(f"Budget({name}=...) must be an int or None, got {value!r}")
            if value < 0:
                raise ConfigurationError(f"Budget({name}={value}) must be >= 0")
        if self.seconds is not None:
            if isinstance(self.seconds, bool) or not isinstance(self.seconds, int | float):
                raise InvalidInputError(f"Budget(seconds=...) must be a number or None, got {self.seconds!r}")
            if not math.isfinite(self.seconds) or self.seconds < 0:
                raise ConfigurationError(f"Budget(seconds={self.seconds}) must be a finite number >= 0")
        if self.scope not in _SCOPES:
            raise ConfigurationError(f"Budget(scope={self.scope!r}) must be one of {list(_SCOPES)}")

    def counts(self, phase: str) -> bool:
        """Whether calls made in ``phase`` ("optimizer", "evaluation", "test") count against the budget."""
        if phase == "test":
            return False
        return self.scope == "all" or phase == "optimizer"

    def _spent(self, usage: RunUsage, counter: str) -> float:
        phases = ("optimizer",) if self.scope == "optimizer" else ("optimizer", "evaluation")
        return sum(usage.get(p, counter) for p in phases)

    def remaining_calls(self, usage: RunUsage) -> int | None:
        """Calls still allowed (never negative), or ``None`` when calls are unlimited."""
        if self.calls is None:
            return None
        return max(0, self.calls - int(self._spent(usage, "calls")))

    def remaining_tokens(self, usage: RunUsage) -> int | None:
        """Tokens still allowed (never negative), or ``None`` when tokens are unlimited."""
        if self.tokens is None:
            return None
        spent = int(self._spent(usage, "prompt_tokens") + self._spent(usage, "completion_tokens"))
        return max(0, self.tokens - spent)

    def exhausted(self, usage: RunUsage, elapsed: float) -> str | None:
        """The reason no more work may start (e.g. ``"budget: calls (100/100)"``), or ``None``."""
        if self.remaining_calls(usage) == 0:
            return f"budget: calls ({int(self._spent(usage, 'calls'))}/{self.calls})"
        if self.remaining_tokens(usage) == 0:
            tokens = int(self._spent(usage, "prompt_tokens") + self._spent(usage, "completion_tokens"))
            return f"budget: tokens ({tokens}/{self.tokens})"
        if self.seconds is not None and elapsed >= self.seconds:
            return f"budget: seconds ({elapsed:.1f}/{self.seconds:g})"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "tokens": self.tokens, "seconds": self.seconds, "scope": self.scope}


def _zero() -> dict[str, float]:
    return {c: 0.0 if c == "seconds" else 0 for c in _COUNTERS}


def _zero_phases() -> dict[str, dict[str, float]]:
    return {p: _zero() for p in PHASES}


def _counters(data: Any) -> dict[str, float]:
    """The counters of a saved usage entry (missing ones are 0)."""
    counts = data if isinstance(data, Mapping) else {}
    return {c: float(counts.get(c, 0.0)) if c == "seconds" else int(counts.get(c, 0)) for c in _COUNTERS}


@dataclass
class RunUsage:
    """LLM usage of a run, split by phase (``optimizer``, ``evaluation`` (training-time), ``test``) and by model.

    ``models`` maps each model's name (what its :class:`~feedprop.llm.LLM` reports as ``model``)
    to its usage in each phase; for every phase the models add up to the phase. It is ``None``
    for a run recorded before usage was counted by model, whose split is unknown.

    JSON round trip with :meth:`to_dict` / :meth:`from_dict`, so a resumed run keeps counting.

    Example:
        >>> u = RunUsage()
        >>> u.add("evaluation", "small", calls=2, prompt_tokens=10, completion_tokens=4)
        >>> u.add("optimizer", "large", calls=1, prompt_tokens=50, completion_tokens=20)
        >>> u.total("calls"), u.total_tokens, u.model_total("small")["calls"]
        (3, 84, 2)
        >>> sorted(u.to_dict()["by_model"]), u.to_dict()["by_model"]["large"]["tokens"]
        (['large', 'small'], 70)
    """

    phases: dict[str, dict[str, float]] = field(default_factory=lambda: _zero_phases())
    models: dict[str, dict[str, dict[str, float]]] | None = field(default_factory=dict)

    def add(self, phase: str, model: str = UNKNOWN_MODEL, **counts: float) -> None:
        """Add ``counts`` (any of calls, cache_hits, prompt_tokens, completion_tokens, seconds) to ``phase``,
        spent by ``model``."""
        if phase not in self.phases:
            raise ConfigurationError(f"unknown usage phase {phase!r}; use one of {list(PHASES)}")
        for name in counts:
            if name not in _COUNTERS:
                raise ConfigurationError(f"unknown usage counter {name!r}; use one of {list(_COUNTERS)}")
        targets = [self.phases[phase]]
        if self.models is not None:
            targets.append(self.models.setdefault(model, {}).setdefault(phase, _zero()))
        for target in targets:
            for name, value in counts.items():
                target[name] += value

    def merge(self, other: RunUsage, phases: Iterable[str] = PHASES) -> None:
        """Add ``other``'s usage in ``phases`` (a part of the run counted on its own, e.g. a joint run's phase)."""
        if other.models is None:
            self.models = None  # the part's split is unknown, so the whole's is too
        for phase in phases:
            if self.models is None or other.models is None:
                self.add(phase, UNKNOWN_MODEL, **other.phases[phase])
                continue
            for model, by_phase in other.models.items():
                if phase in by_phase:
                    self.add(phase, model, **by_phase[phase])

    def get(self, phase: str, counter: str) -> float:
        return self.phases[phase][counter]

    def total(self, counter: str) -> float:
        """``counter`` summed over every phase."""
        return sum(p[counter] for p in self.phases.values())

    def model_total(self, model: str) -> dict[str, float]:
        """``model``'s counters summed over every phase (zeros for a model that made no call)."""
        totals = _zero()
        for counts in (self.models or {}).get(model, {}).values():
            for c in _COUNTERS:
                totals[c] += counts[c]
        return totals

    @property
    def total_tokens(self) -> int:
        return int(self.total("prompt_tokens") + self.total("completion_tokens"))

    def to_dict(self) -> dict[str, Any]:
        """Each phase's counters, their ``total`` (with ``tokens``) and, when counted, ``by_model``: each
        model's totals (with ``tokens``) and its counters per phase (``phases``)."""
        out: dict[str, Any] = {p: dict(c) for p, c in self.phases.items()}
        out["total"] = {c: self.total(c) for c in _COUNTERS}
        out["total"]["tokens"] = self.total_tokens
        if self.models is not None:
            out["by_model"] = {}
            for model in sorted(self.models):
                totals = self.model_total(model)
                tokens = int(totals["prompt_tokens"] + totals["completion_tokens"])
                phases = {p: dict(self.models[model][p]) for p in PHASES if p in self.models[model]}
                out["by_model"][model] = {**totals, "tokens": tokens, "phases": phases}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunUsage:
        """Read :meth:`to_dict`'s output; a record without ``by_model`` that spent anything has ``models=None``."""
        usage = cls()
        for phase in PHASES:
            usage.phases[phase] = _counters(data.get(phase))
        by_model = data.get("by_model")
        if isinstance(by_model, Mapping):
            models: dict[str, dict[str, dict[str, float]]] = {}
            for model, entry in by_model.items():
                saved = entry.get("phases") if isinstance(entry, Mapping) else None
                by_phase = saved if isinstance(saved, Mapping) else {}
                models[str(model)] = {p: _counters(c) for p, c in by_phase.items() if p in PHASES}
            usage.models = models
        elif any(value for counts in usage.phases.values() for value in counts.values()):
            usage.models = None  # written before usage was counted by model: the split is unknown
        return usage


class RunMeter:
    """What a run has spent against its :class:`Budget`: LLM usage by phase and model, and wall-clock time.

    The clock sums the time of every session of a resumed run (:meth:`restart` sets the time
    spent before this session; a finished run's clock stands still); :meth:`phase` counts the
    LLM usage inside a block and lets no call start beyond the budget's remaining calls and tokens.

    Example:
        >>> meter = RunMeter(Budget(calls=3))
        >>> with meter.phase("optimizer"):
        ...     pass
        >>> meter.exhausted(), meter.usage.total("calls"), meter.remaining().calls
        (None, 0, 3)
        >>> meter.restart(12.5, running=False)
        >>> meter.elapsed()
        12.5
    """

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.usage = RunUsage()
        self.elapsed_before = 0.0
        self.session_start = time.monotonic()
        self.running = True

    def elapsed(self) -> float:
        """Seconds the run has taken, over all its sessions."""
        if not self.running:
            return self.elapsed_before
        return self.elapsed_before + (time.monotonic() - self.session_start)

    def restart(self, elapsed_before: float, *, running: bool = True) -> None:
        """Continue the clock from ``elapsed_before`` seconds (a resumed run); ``running=False`` stops it there."""
        self.elapsed_before = elapsed_before
        self.session_start = time.monotonic()
        self.running = running

    def stop(self) -> None:
        """Stop the clock where it is: a finished run, resumed later, reports the same time."""
        self.restart(self.elapsed(), running=False)

    def exhausted(self) -> str | None:
        """Why no more work may start (e.g. ``"budget: calls (100/100)"``), or ``None``."""
        return self.budget.exhausted(self.usage, self.elapsed())

    def stop_reason(self, exc: BudgetExhausted) -> str:
        """Why ``exc`` stopped the run: the meter's account, else the error's, always starting with ``"budget"``.

        Example:
            >>> RunMeter(Budget(calls=3)).stop_reason(BudgetExhausted("calls (3/3)"))
            'budget: calls (3/3)'
        """
        text = str(exc)
        return self.exhausted() or (text if text.startswith("budget") else f"budget: {text}")

    def check_time(self) -> None:
        """Raise ``BudgetExhausted`` when the seconds budget is spent (run before each unit of work)."""
        if self.budget.seconds is not None and self.elapsed() >= self.budget.seconds:
            raise BudgetExhausted(f"budget: seconds ({self.elapsed():.1f}/{self.budget.seconds:g})")

    def remaining(self) -> Budget:
        """What is left of the budget, as a budget (with the same scope) for a part of the run."""
        seconds = None if self.budget.seconds is None else max(0.0, self.budget.seconds - self.elapsed())
        return Budget(
            calls=self.budget.remaining_calls(self.usage),
            tokens=self.budget.remaining_tokens(self.usage),
            seconds=seconds,
            scope=self.budget.scope,
        )

    def deadline(self) -> float | None:
        """The ``time.monotonic()`` value at which the seconds budget runs out (``None``: no time limit)."""
        if self.budget.seconds is None:
            return None
        return time.monotonic() + max(0.0, self.budget.seconds - self.elapsed())

    @contextmanager
    def phase(self, name: str, *, enforce: bool = True) -> Iterator[None]:
        """Count LLM usage inside the block as ``name``, with the budget's remaining limits if it counts.

        ``enforce=False`` only counts: no call is refused, whatever is left of the budget.
        """
        counted = enforce and self.budget.counts(name)
        max_calls = self.budget.remaining_calls(self.usage) if counted else None
        max_tokens = self.budget.remaining_tokens(self.usage) if counted else None
        with track_usage(max_calls=max_calls, max_tokens=max_tokens) as meter:
            try:
                yield
            finally:
                for model, counts in meter.to_dict()["by_model"].items():
                    self.usage.add(name, model, **{c: counts[c] for c in _COUNTERS})
