"""The minibatch schedule of a training run: which training items each step sees.

Every epoch shuffles the training items with the run's seeded RNG and cuts them into batches of
``batch_size``. The schedule's position (epoch, batch, order and RNG state) goes into the
checkpoint, so a resumed run sees exactly the batches an uninterrupted one would; a step cut
short goes back to the position before it (:meth:`Schedule.rewind`). The same RNG draws the
Pareto search's parents, so it is the run's one source of randomness.

Example:
    >>> schedule = Schedule(5, batch_size=2, epochs=2, seed=0)
    >>> schedule.total_steps
    6
    >>> batches = []
    >>> while (batch := schedule.next()) is not None:
    ...     batches.append(batch)
    ...     schedule.advance()
    >>> [len(b) for b in batches], sorted(batches[0] + batches[1] + batches[2])
    ([2, 2, 1, 2, 2, 1], [0, 1, 2, 3, 4])
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from feedprop.errors import CheckpointError
from feedprop.training.checkpoint import rng_from_json, rng_to_json

__all__ = ["Position", "Schedule"]


@dataclass(frozen=True)
class Position:
    """Where a schedule stands: epoch, batch within it, the epoch's order and the RNG state."""

    epoch: int
    batch_index: int
    order: tuple[int, ...]
    rng: tuple[Any, ...]


class Schedule:
    """The batches of ``size`` training items over ``epochs`` epochs (at most ``max_steps`` of them)."""

    def __init__(self, size: int, *, batch_size: int, epochs: int, seed: int, max_steps: int | None = None) -> None:
        self.size = size
        self.batch_size = batch_size
        self.epochs = epochs
        self.max_steps = max_steps
        self.rng = random.Random(seed)
        self.epoch = 0
        self.batch_index = 0
        self.order = self._shuffled()

    def _shuffled(self) -> list[int]:
        order = list(range(self.size))
        self.rng.shuffle(order)
        return order

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.size / self.batch_size)

    @property
    def total_steps(self) -> int:
        """The steps of the whole run: every epoch's batches, capped by ``max_steps``."""
        total = self.steps_per_epoch * self.epochs
        return min(total, self.max_steps) if self.max_steps is not None else total

    def next(self) -> list[int] | None:
        """The item indices of the next batch (a new epoch, newly shuffled, when one ends); ``None`` at the end."""
        if self.batch_index >= self.steps_per_epoch:
            if self.epoch + 1 >= self.epochs:
                return None
            self.epoch += 1
            self.batch_index = 0
            self.order = self._shuffled()
        start = self.batch_index * self.batch_size
        return self.order[start : start + self.batch_size]

    def advance(self) -> None:
        """The batch :meth:`next` gave was trained on: move past it."""
        self.batch_index += 1

    def position(self) -> Position:
        return Position(self.epoch, self.batch_index, tuple(self.order), self.rng.getstate())

    def rewind(self, position: Position) -> None:
        """Go back to ``position`` (taken before a step that was then dropped)."""
        self.epoch, self.batch_index, self.order = position.epoch, position.batch_index, list(position.order)
        self.rng.setstate(position.rng)

    def state_dict(self) -> dict[str, Any]:
        """The position as JSON, as the checkpoint keeps it (``epoch``, ``batch_index``, ``order``, ``rng``)."""
        return {"epoch": self.epoch, "batch_index": self.batch_index, "order": self.order, "rng": rng_to_json(self.rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (a malformed one raises ``KeyError``, ``ValueError`` or
        :class:`~feedprop.errors.CheckpointError`)."""
        order = [int(i) for i in state["order"]]
        if len(order) != self.size:
            raise CheckpointError("the checkpoint's batch order is malformed; delete the directory to start over")
        self.epoch = int(state["epoch"])
        self.batch_index = int(state["batch_index"])
        self.order = order
        self.rng.setstate(rng_from_json(state["rng"]))
