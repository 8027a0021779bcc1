"""Training budgets in LLM calls, tokens and seconds, and the usage a run has spent.

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

Example:
    >>> budget = Budget(calls=100, tokens=50_000)
    >>> usage = RunUsage()
    >>> usage.add("optimizer", calls=3, prompt_tokens=900, completion_tokens=100, seconds=1.5)
    >>> budget.remaining_calls(usage), budget.remaining_tokens(usage)
    (97, 49000)
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from feedprop.errors import BudgetExhausted, ConfigurationError, InvalidInputError
from feedprop.llm import track_usage

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


def _zero_phases() -> dict[str, dict[str, float]]:
    return {p: {c: 0.0 if c == "seconds" else 0 for c in _COUNTERS} for p in PHASES}


@dataclass
class RunUsage:
    """LLM usage of a run, split by phase: ``optimizer``, ``evaluation`` (training-time), ``test``.

    JSON round trip with :meth:`to_dict` / :meth:`from_dict`, so a resumed run keeps counting.

    Example:
        >>> u = RunUsage()
        >>> u.add("evaluation", calls=2, prompt_tokens=10, completion_tokens=4)
        >>> u.total("calls"), u.total_tokens
        (2, 14)
    """

    phases: dict[str, dict[str, float]] = field(default_factory=lambda: _zero_phases())

    def add(self, phase: str, **counts: float) -> None:
        """Add ``counts`` (any of calls, cache_hits, prompt_tokens, completion_tokens, seconds) to ``phase``."""
        if phase not in self.phases:
            raise ConfigurationError(f"unknown usage phase {phase!r}; use one of {list(PHASES)}")
        for name, value in counts.items():
            if name not in _COUNTERS:
                raise ConfigurationError(f"unknown usage counter {name!r}; use one of {list(_COUNTERS)}")
            self.phases[phase][name] += value

    def get(self, phase: str, counter: str) -> float:
        return self.phases[phase][counter]

    def total(self, counter: str) -> float:
        """``counter`` summed over every phase."""
        return sum(p[counter] for p in self.phases.values())

    @property
    def total_tokens(self) -> int:
        return int(self.total("prompt_tokens") + self.total("completion_tokens"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {p: dict(c) for p, c in self.phases.items()}
        out["total"] = {c: self.total(c) for c in _COUNTERS}
        out["total"]["tokens"] = self.total_tokens
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunUsage:
        usage = cls()
        for phase in PHASES:
            for counter in _COUNTERS:
                value = data.get(phase, {}).get(counter, 0)
                usage.phases[phase][counter] = int(value) if counter != "seconds" else float(value)
        return usage


class RunMeter:
    """What a run has spent against its :class:`Budget`: LLM usage by phase and wall-clock time.

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
                self.usage.add(
                    name,
                    calls=meter.calls,
                    cache_hits=meter.cache_hits,
                    prompt_tokens=meter.prompt_tokens,
                    completion_tokens=meter.completion_tokens,
                    seconds=meter.seconds,
                )
