"""The minibatch schedule: shuffled epochs, a resumable position, a dropped step rewound."""

from __future__ import annotations

import pytest

from feedprop.errors import CheckpointError
from feedprop.training.schedule import Schedule


def batches(schedule: Schedule) -> list[list[int]]:
    out = []
    while (batch := schedule.next()) is not None:
        out.append(batch)
        schedule.advance()
    return out


def test_every_epoch_covers_every_item_in_its_own_order() -> None:
    schedule = Schedule(7, batch_size=3, epochs=3, seed=1)
    got = batches(schedule)
    assert [len(b) for b in got] == [3, 3, 1] * 3 and schedule.total_steps == 9
    epochs = [[i for batch in got[start : start + 3] for i in batch] for start in (0, 3, 6)]
    assert all(sorted(e) == list(range(7)) for e in epochs) and epochs[0] != epochs[1]
    assert batches(Schedule(7, batch_size=3, epochs=3, seed=1)) == got, "the seed fixes every batch"
    assert Schedule(7, batch_size=3, epochs=3, seed=1, max_steps=4).total_steps == 4


def test_a_resumed_schedule_continues_with_the_same_batches() -> None:
    whole = batches(Schedule(5, batch_size=2, epochs=2, seed=4))
    first = Schedule(5, batch_size=2, epochs=2, seed=4)
    done = []
    for _ in range(4):  # into the second epoch
        done.append(first.next())
        first.advance()
    resumed = Schedule(5, batch_size=2, epochs=2, seed=4)
    resumed.load_state_dict(first.state_dict())
    assert done + batches(resumed) == whole


def test_rewind_goes_back_to_before_a_dropped_step() -> None:
    schedule = Schedule(4, batch_size=2, epochs=2, seed=0)
    for _ in range(2):
        schedule.next()
        schedule.advance()
    position = schedule.position()
    dropped = schedule.next()  # starts the second epoch: a new shuffle
    schedule.rewind(position)
    assert schedule.next() == dropped and schedule.epoch == 1


def test_a_malformed_order_is_a_checkpoint_error() -> None:
    state = Schedule(4, batch_size=2, epochs=1, seed=0).state_dict()
    with pytest.raises(CheckpointError, match="batch order is malformed"):
        Schedule(5, batch_size=2, epochs=1, seed=0).load_state_dict(state)
