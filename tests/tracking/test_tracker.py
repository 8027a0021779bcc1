"""The Tracker base class and the records any tracker can keep (options flattened, parameter files)."""

from __future__ import annotations

import json
from pathlib import Path

from feedprop.tracking import Tracker, flatten, parameter_files
from feedprop.training import TrainResult


def test_the_base_tracker_accepts_every_hook_and_does_nothing(tmp_path: Path) -> None:
    tracker = Tracker()
    result = TrainResult(history=[], best_state={"p": "x"}, initial_state={"p": "x"})
    assert tracker.on_start({"a": 1}, {"p": "x"}, run_dir=tmp_path) is None
    assert tracker.on_resume(run_dir=None) is None
    assert tracker.on_event({"event": "step", "step": 1}) is None
    assert tracker.on_finish(result, run_dir=tmp_path) is None
    assert tracker.on_error(RuntimeError("x")) is None
    assert list(tmp_path.iterdir()) == []


def test_flatten_keeps_leaves_and_empty_mappings() -> None:
    assert flatten({"a": {"b": {"c": 1}, "d": []}, "e": {}}) == {"a.b.c": 1, "a.d": [], "e": {}}


def test_parameter_files_hold_every_value_as_json_and_as_text() -> None:
    state = {
        "instruction": "Answer.\nThink first.",
        "solver.demos": [{"input": "1+1", "output": "2"}],
        "solver.demos.txt": "ends like a file name",
        "x/y": 0.5,
        "x_y": "collides after sanitising",
    }
    files = parameter_files(state)
    assert json.loads(files["params.json"]) == state
    assert files["instruction.txt"] == "Answer.\nThink first."
    assert json.loads(files["solver.demos.txt"]) == [{"input": "1+1", "output": "2"}]
    assert files["solver.demos.txt.txt"] == "ends like a file name"
    assert files["x_y.txt"] == "0.5" and files["x_y-2.txt"] == "collides after sanitising"
    assert len(files) == len(state) + 1  # one file per parameter, none overwritten
