"""Run bookkeeping shared by fp.train and fp.joint.alternate: fingerprint, meter, saved state, scoring."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from train_toys import Suffix, exact

from feedprop.errors import CheckpointError, ConfigurationError
from feedprop.llm import MockLLM
from feedprop.optim import OptoPrime
from feedprop.training import Budget
from feedprop.training.bookkeeping import RunBook, Span, Splits
from feedprop.training.checkpoint import RunDirectory, StateFile
from feedprop.training.data import Item


def items(*pairs: tuple[str, str]) -> list[Item]:
    return [Item(i, t) for i, t in pairs]


SPLITS = Splits(items(("a", "a!")), val=items(("b", "b!"), ("c", "c?")), test=items(("d", "d!")))


def book(**kwargs: Any) -> RunBook:
    kwargs.setdefault("options", {"seed": 0})
    return RunBook(Suffix("!"), exact, SPLITS, Budget(calls=10), **kwargs)


def test_the_fingerprint_and_the_description_come_from_one_list_of_pieces() -> None:
    model = Suffix("!")
    opt = OptoPrime(model.parameters(), llm=MockLLM("{}"))
    run = RunBook(model, exact, SPLITS, Budget(), options={"seed": 3}, optimizer=opt)
    assert set(run.fingerprint) == {
        "model",
        "parameters",
        "optimizer",
        "optimizer_groups",
        "train_set",
        "val_set",
        "test_set",
        "seed",
    }
    assert run.fingerprint["model"] == "train_toys.Suffix" and run.fingerprint["parameters"] == ["suffix"]
    assert run.fingerprint["val_set"][0] == 2 and run.fingerprint["optimizer"].endswith(".OptoPrime")
    described = run.describe({"seed": 3})
    assert described == {
        "model": "Suffix",
        "optimizer": "OptoPrime",
        "train_size": 1,
        "val_size": 2,
        "test_size": 1,
        "seed": 3,
    }
    assert "optimizer" not in book().fingerprint, "a run without one optimizer (a joint run) leaves it out"


def test_splits_are_read_with_the_same_checks_for_every_entry_point() -> None:
    splits = Splits.read([("a", "b")], None, [("c", "d")], val=False)
    assert (len(splits.train), splits.val, len(splits.test)) == (1, [], 1)
    with pytest.raises(ConfigurationError, match="val_set is empty"):
        Splits.read([("a", "b")], [], None, val=False)
    with pytest.raises(ConfigurationError, match="val_set is required"):
        Splits.read([("a", "b")], None, None, val=True)


def test_scoring_a_split_counts_validation_against_the_budget_and_the_test_set_apart() -> None:
    echo = MockLLM(lambda messages, **params: messages[-1]["content"])
    run = RunBook(Suffix("!", llm=echo), exact, SPLITS, Budget(calls=10), options={})
    assert run.score("val") == 0.5 and run.score("test") == 1.0
    usage = run.meter.usage.to_dict()
    assert (usage["evaluation"]["calls"], usage["test"]["calls"]) == (2, 1)
    assert run.meter.remaining().calls == 8, "the test set never counts against the budget"
    assert RunBook(Suffix(), exact, Splits(items(("a", "a"))), Budget(), options={}).score("test") is None


@pytest.mark.parametrize(("test_workers", "most_at_once"), [(1, 1), (None, 4)])
def test_the_test_set_runs_on_its_own_number_of_workers(test_workers: int | None, most_at_once: int) -> None:
    lock, running, peak = threading.Lock(), [0], [0]

    def slow(messages: Any, **params: Any) -> str:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.03)
        with lock:
            running[0] -= 1
        return str(messages[-1]["content"])

    model = Suffix("!", llm=MockLLM(slow))
    splits = Splits(items(("a", "a!")), test=items(*[(f"t{i}", f"t{i}!") for i in range(8)]))
    run = RunBook(model, exact, splits, Budget(), options={}, max_workers=4, test_workers=test_workers)
    assert run.score("test") == 1.0 and peak[0] == most_at_once


def test_resume_checks_the_fingerprint_and_continues_the_usage_and_the_clock(tmp_path: Path) -> None:
    first = book()
    first.score("val")
    store = RunDirectory(tmp_path)
    first.save(store, {"step": 4, "finished": True})
    seen: list[dict[str, Any]] = []
    again = book()
    assert again.resume(store, True, "a training run", seen.append)
    assert seen[0]["step"] == 4 and again.meter.usage.to_dict() == first.meter.usage.to_dict()
    stopped = again.meter.elapsed()
    time.sleep(0.01)
    assert again.meter.elapsed() == stopped, "a finished run's clock stays where it stopped"
    with pytest.raises(CheckpointError, match="already holds a training run; pass resume=True"):
        book().resume(store, False, "a training run", seen.append)
    with pytest.raises(CheckpointError, match="different run configuration"):
        book(options={"seed": 1}).resume(store, True, "a training run", seen.append)
    assert not book().resume(None, True, "a training run", seen.append)
    assert not book().resume(RunDirectory(tmp_path / "empty"), True, "a training run", seen.append)


def test_a_malformed_saved_state_is_a_checkpoint_error(tmp_path: Path) -> None:
    store = StateFile(tmp_path, "run.json", "test/1")
    book().save(store, {"phase": 1})

    def restore(state: dict[str, Any]) -> None:
        int(state["missing"])

    with pytest.raises(CheckpointError, match="cannot be restored \\(KeyError"):
        book().resume(store, True, "a run", restore)
    (tmp_path / "run.json").write_text('{"format": "other/1"}')
    with pytest.raises(CheckpointError, match="cannot be read \\(format 'other/1'\\)"):
        book().resume(store, True, "a run", restore)


def test_a_span_measures_what_one_step_spent() -> None:
    run = book()
    span = Span(run.meter)
    run.meter.usage.add("evaluation", calls=3, cache_hits=1, completion_tokens=7)
    assert span.usage("calls", "cache_hits", "completion_tokens") == {
        "calls": 3,
        "cache_hits": 1,
        "completion_tokens": 7,
    }
    assert 0 <= span.seconds() < 5


def test_the_meter_gives_what_is_left_and_when_time_runs_out() -> None:
    run = RunBook(Suffix(), exact, SPLITS, Budget(calls=10, seconds=100.0), options={})
    run.meter.usage.add("evaluation", calls=4)
    left = run.meter.remaining()
    assert (left.calls, left.scope) == (6, "all") and left.seconds is not None and 99 < left.seconds <= 100
    deadline = run.meter.deadline()
    assert deadline is not None and 99 < deadline - time.monotonic() <= 100
    assert book().meter.deadline() is None
