"""The progress bar of a training run: one tick per step, with the step's scores, the tokens and the time.

Example:
    >>> from feedprop.training.budget import Budget, RunMeter
    >>> with StepBar(total=3, done=1, enabled=False) as bar:
    ...     bar.show({"train_score": 0.5, "val_score": None}, RunMeter(Budget()))
    >>> bar.bar is None
    True
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from tqdm.auto import tqdm

from feedprop.training.budget import RunMeter

__all__ = ["StepBar"]


class StepBar:
    """A bar over a run's ``total`` steps, ``done`` of them already (a resumed run); nothing unless ``enabled``."""

    def __init__(self, total: int, done: int, *, enabled: bool) -> None:
        self.bar: Any = tqdm(total=total, initial=min(done, total), desc="train", unit="step") if enabled else None

    def show(self, record: dict[str, Any], meter: RunMeter) -> None:
        """One more step done: its training and validation scores, and the run's tokens and time so far."""
        if self.bar is None:
            return
        val = record.get("val_score")
        self.bar.update(1)
        self.bar.set_postfix(
            train=f"{record['train_score']:.2f}",
            val="-" if val is None else f"{val:.2f}",
            tokens=meter.usage.total_tokens,
            time=f"{meter.elapsed():.0f}s",
            refresh=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
