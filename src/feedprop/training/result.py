"""``TrainResult``: what a training run returns, and what its report is made from.

Example:
    >>> r = TrainResult(history=[{"accepted": True}], best_state={"p": "y"}, initial_state={"p": "x"})
    >>> r.steps, r.accepted
    (1, 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedprop._files import atomic_write
from feedprop._text import show, truncate_middle
from feedprop.training.checkpoint import RunDirectory
from feedprop.training.summary import plot_curve, render_report

__all__ = ["TrainResult"]

#: How many parameters, and how much of each value, ``repr(TrainResult)`` shows.
_SHOWN_PARAMETERS = 8
_SHOWN_CHARS = 40


def _short(value: Any) -> str:
    return repr(truncate_middle(value, _SHOWN_CHARS)) if isinstance(value, str) else show(value, _SHOWN_CHARS)


def _score(value: float | None) -> str:
    return "None" if value is None else f"{value:.4g}"


@dataclass
class TrainResult:
    """What :func:`train` returns. The model already holds ``best_state`` when you get this.

    ``history`` has one entry per step (scores, candidates, accepted or not and why, usage);
    ``val_before``/``val_after`` and ``test_before``/``test_after`` are mean guide scores
    (``None`` without that set); ``usage`` is the LLM usage by phase; the ``*_path`` fields
    point into the checkpoint directory (``None`` when training ran without one); ``pool``
    lists the programs a ``search="pareto"`` run kept (id, parents, step, origin, validation
    score and per-item scores, size, parameters; empty for the other searches).

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
    pool: list[dict[str, Any]] = field(default_factory=list)

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

    def __repr__(self) -> str:
        """The outcome on one screen; ``history``, ``events`` and :meth:`report` hold the detail.

        Example:
            >>> r = TrainResult(history=[{"accepted": True}] * 500, best_state={"p": "y" * 500}, initial_state={})
            >>> text = repr(r)
            >>> text[:48], len(text) < 400
            ('TrainResult(steps=500, accepted=500, best_step=0', True)
        """
        names = list(self.best_state)
        values = ", ".join(f"{name!r}: {_short(self.best_state[name])}" for name in names[:_SHOWN_PARAMETERS])
        more = f", ... ({len(names) - _SHOWN_PARAMETERS} more)" if len(names) > _SHOWN_PARAMETERS else ""
        total = self.usage.get("total", {})
        scores = ", ".join(
            f"{name}={_score(getattr(self, name))}" for name in ("val_before", "val_after", "test_before", "test_after")
        )
        return (
            f"TrainResult(steps={self.steps}, accepted={self.accepted}, best_step={self.best_step}, {scores}, "
            f"stop_reason={truncate_middle(self.stop_reason, 200)!r}, calls={total.get('calls', 0)}, "
            f"tokens={total.get('tokens', 0)}, elapsed_seconds={self.elapsed_seconds:.1f}, "
            f"best_state={{{values}{more}}}, events={len(self.events)}, report_path={self.report_path!r})"
        )

    def write_files(self, run_dir: RunDirectory, *, plot: bool = True) -> None:
        """Write ``report.md`` (and ``curve.png`` with ``plot``) into ``run_dir``; the ``*_path`` fields point there."""
        self.checkpoint_path = run_dir.file(RunDirectory.CHECKPOINT)
        self.parameters_path = run_dir.file(RunDirectory.BEST)
        self.log_path = run_dir.file(RunDirectory.EVENTS)
        self.report_path = run_dir.file(RunDirectory.REPORT)
        atomic_write(self.report_path, render_report(self))
        if plot:
            self.plot_path = plot_curve(self, run_dir.file(RunDirectory.PLOT))
