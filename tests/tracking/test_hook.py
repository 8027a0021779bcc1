"""How train() and alternate() call a tracker: start or resume, events, then finish or error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from feedprop.errors import CheckpointError, ConfigurationError, InvalidInputError
from feedprop.joint import alternate
from feedprop.node import Parameter
from feedprop.optim import Optimizer
from feedprop.tracking import Tracker, resolve_tracker
from feedprop.training import train

from .toys import DATA, VAL, FailingGuide, Recorder, Suffix, exact, optimizer, scripted


def test_train_reports_its_start_every_event_and_its_result(tmp_path: Path) -> None:
    tracker = Recorder()
    model = Suffix()
    run_dir = tmp_path / "run"
    result = train(
        model, DATA, exact, optimizer(model), val_set=VAL, batch_size=2, checkpoint=run_dir, progress=False,
        plot=False, tracker=tracker,
    )  # fmt: skip
    hooks = tracker.hooks()
    assert hooks[0] == "start" and hooks[-1] == "finish"
    assert "error" not in hooks and "resume" not in hooks
    start = tracker.calls[0][1]
    assert start["config"]["batch_size"] == 2 and start["config"]["train_size"] == 6
    assert start["parameters"] == {"suffix": "?"} and start["run_dir"] == run_dir
    # The tracker sees the records of the event log, in order; start and resume have hooks of their own.
    logged = [e for e in result.events if e["event"] not in ("start", "resume")]
    assert [detail for hook, detail in tracker.calls if hook == "event"] == logged
    assert [e["step"] for e in tracker.events("step")] == [1, 2, 3]
    before = tracker.events("evaluate")[0]
    assert before["step"] == 0 and before["val_score"] == 0.0
    finished, where = tracker.calls[-1][1]
    assert finished is result and where == run_dir


def test_a_run_without_a_checkpoint_has_no_run_dir() -> None:
    tracker = Recorder()
    model = Suffix()
    train(model, DATA[:2], exact, optimizer(model), progress=False, tracker=tracker)
    assert tracker.calls[0][1]["run_dir"] is None and tracker.calls[-1][1][1] is None


def test_an_error_is_reported_and_resume_continues_with_on_resume(tmp_path: Path) -> None:
    first = Recorder()
    model = Suffix()
    options: dict[str, Any] = {"val_set": VAL, "batch_size": 2, "checkpoint": tmp_path, "progress": False}
    # Calls 1-2 score the validation set, 3-6 are step 1 (minibatch, then the candidate on validation).
    guide = FailingGuide(fail_at=7, error=RuntimeError("guide crashed"))
    with pytest.raises(RuntimeError, match="guide crashed"):
        train(model, DATA, guide, optimizer(model), max_workers=1, tracker=first, **options)
    assert first.hooks()[0] == "start" and first.hooks()[-1] == "error" and "finish" not in first.hooks()
    assert str(first.calls[-1][1]) == "guide crashed"
    assert [e["step"] for e in first.events("step")] == [1]

    second = Recorder()
    model = Suffix()
    result = train(model, DATA, exact, optimizer(model), resume=True, tracker=second, **options)
    assert second.hooks()[0] == "resume" and second.calls[0][1] == tmp_path
    assert "start" not in second.hooks() and second.hooks()[-1] == "finish"
    assert [e["step"] for e in second.events("step")] == [2, 3]
    assert second.calls[-1][1][0] is result


def test_a_refused_run_never_starts_the_tracker(tmp_path: Path) -> None:
    model = Suffix()
    train(model, DATA[:2], exact, optimizer(model), checkpoint=tmp_path, progress=False)
    tracker = Recorder()
    with pytest.raises(CheckpointError, match="resume=True"):
        train(model, DATA[:2], exact, optimizer(model), checkpoint=tmp_path, progress=False, tracker=tracker)
    assert tracker.hooks() == ["error"]  # told that the call failed, but no run was started


def test_tracker_argument_checks() -> None:
    model = Suffix()
    opt = optimizer(model)
    with pytest.raises(ConfigurationError, match="unknown tracker 'tensorboard'"):
        train(model, DATA, exact, opt, progress=False, tracker="tensorboard")
    with pytest.raises(InvalidInputError, match="subclass it"):
        train(model, DATA, exact, opt, progress=False, tracker=object())  # type: ignore[arg-type]
    assert model.suffix.data == "?"
    tracker = Tracker()
    assert resolve_tracker(tracker) is tracker and type(resolve_tracker(None)) is Tracker


def test_alternate_reports_each_phase_and_the_final_parameters(tmp_path: Path) -> None:
    tracker = Recorder()
    model = Suffix()
    result = alternate(
        model, DATA, exact, "p -> p", val_set=VAL, test_set=DATA[2:4], optimizer=scripted,
        prompt={"max_steps": 1, "batch_size": 2}, checkpoint=tmp_path, progress=False, tracker=tracker,
    )  # fmt: skip
    assert tracker.hooks() == ["start", "event", "event", "finish"]
    start = tracker.calls[0][1]
    assert start["config"]["strategy"] == ["p", "p"] and start["parameters"] == {"suffix": "?"}
    assert start["run_dir"] == tmp_path
    phases = tracker.events("phase")
    assert [p["step"] for p in phases] == [1, 2] and [p["kind"] for p in phases] == ["p", "p"]
    assert [(p["val"], p["test"], p["kept"]) for p in phases] == [(r.val, r.test, r.kept) for r in result.phases]
    finished, where = tracker.calls[-1][1]
    assert finished is result and finished.best_state == {"suffix": "!"} and where == tmp_path


def test_alternate_resumed_after_an_interruption_calls_on_resume(tmp_path: Path) -> None:
    made: list[int] = []

    def interrupted_second_time(params: list[Parameter[Any]]) -> Optimizer:
        made.append(1)
        if len(made) == 2:
            raise KeyboardInterrupt
        return scripted(params)

    run: dict[str, Any] = {"val_set": VAL, "prompt": {"max_steps": 1}, "checkpoint": tmp_path, "progress": False}
    first = Recorder()
    with pytest.raises(KeyboardInterrupt):
        alternate(Suffix(), DATA, exact, "p -> p", optimizer=interrupted_second_time, tracker=first, **run)
    assert first.hooks() == ["start", "event", "error"] and isinstance(first.calls[-1][1], KeyboardInterrupt)
    second = Recorder()
    alternate(Suffix(), DATA, exact, "p -> p", optimizer=scripted, resume=True, tracker=second, **run)
    assert second.hooks() == ["resume", "event", "finish"] and second.events("phase")[0]["step"] == 2
