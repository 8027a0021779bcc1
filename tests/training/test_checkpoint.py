"""Atomic JSON checkpoints, the previous checkpoint, RNG state, fingerprints."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from feedprop.errors import CheckpointError, InvalidInputError
from feedprop.training.checkpoint import (
    RunDirectory,
    check_fingerprint,
    rng_from_json,
    rng_to_json,
    write_json_atomic,
)


def test_save_rotates_the_previous_checkpoint(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    run.save({"step": 1})
    assert not run.file(RunDirectory.PREVIOUS).exists()
    run.save({"step": 2})
    assert json.loads(run.file(RunDirectory.PREVIOUS).read_text())["step"] == 1
    assert RunDirectory(tmp_path / "run").load()["step"] == 2
    assert not list((tmp_path / "run").glob("*.tmp")), "no temporary files are left behind"


def test_corrupt_checkpoint_is_a_clear_error_and_the_previous_is_kept(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    run.save({"step": 1})
    run.save({"step": 2})
    prev_bytes = run.file(RunDirectory.PREVIOUS).read_bytes()
    run.file(RunDirectory.CHECKPOINT).write_text('{"step": 2, "format": "feedprop.checkp')
    with pytest.raises(CheckpointError, match=r"corrupt.*previous checkpoint .*step 1"):
        RunDirectory(tmp_path).load()
    assert run.file(RunDirectory.PREVIOUS).read_bytes() == prev_bytes
    run.file(RunDirectory.CHECKPOINT).write_text('{"step": 3}')
    with pytest.raises(CheckpointError, match="not a feedprop checkpoint"):
        RunDirectory(tmp_path).load()
    run.file(RunDirectory.CHECKPOINT).unlink()
    with pytest.raises(CheckpointError, match="Copy"):
        RunDirectory(tmp_path).load()


def test_non_json_state_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    run.save({"step": 1})
    with pytest.raises(CheckpointError, match="JSON"):
        run.save({"step": 2, "thing": object()})
    assert run.load()["step"] == 1


def test_paths_are_checked(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        RunDirectory(tmp_path / "file")
    with pytest.raises(InvalidInputError):
        RunDirectory(42)  # type: ignore[arg-type]


def test_rng_state_round_trips_through_json(tmp_path: Path) -> None:
    rng = random.Random(123)
    rng.random()
    path = tmp_path / "rng.json"
    write_json_atomic(path, rng_to_json(rng))
    expected = [rng.random() for _ in range(5)]
    other = random.Random()
    other.setstate(rng_from_json(json.loads(path.read_text())))
    assert [other.random() for _ in range(5)] == expected
    with pytest.raises(CheckpointError):
        rng_from_json([1, 2])


def test_fingerprint_mismatch_names_the_fields() -> None:
    check_fingerprint({"a": 1, "b": [1]}, {"a": 1, "b": [1]}, "here")
    with pytest.raises(CheckpointError, match=r"(?s)b: checkpoint has \[1\], this run has \[2\].*new checkpoint"):
        check_fingerprint({"a": 1, "b": [1]}, {"a": 1, "b": [2]}, "here")


def test_a_run_may_change_only_its_limits_and_only_where_it_can_be_extended() -> None:
    saved, longer = {"seed": 0, "max_steps": 2, "budget": {"calls": 5}}, {"seed": 0, "max_steps": 4, "budget": None}
    limits = ("max_steps", "budget")
    assert check_fingerprint(saved, saved, "here", limits, extend=True) == []
    assert check_fingerprint(saved, longer, "here", limits, extend=True) == ["budget", "max_steps"]
    with pytest.raises(CheckpointError, match=r"(?s)Only its limits differ \(budget, max_steps\).*another checkpoint"):
        check_fingerprint(saved, longer, "here", limits)
    with pytest.raises(CheckpointError, match=r"(?s)seed: checkpoint has 0, this run has 1.*silently mix two runs"):
        check_fingerprint(saved, {**longer, "seed": 1}, "here", limits, extend=True)


def test_loading_removes_the_temporaries_a_crash_left_beside_the_runs_own_files(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    run.save({"step": 1})
    dead = 999_999_999  # no such process
    left = [run.path / f".{name}.{dead}.a1b2c3d4.tmp" for name in ("checkpoint.json", "graph.json", "report.md")]
    live = run.path / f".graph.json.{os.getpid()}.live0001.tmp"  # a write of this process may still finish
    users = run.path / f".notes.json.{dead}.a1b2c3d4.tmp"  # not a file of the run: left alone
    for path in [*left, live, users]:
        path.write_text("{", encoding="utf-8")
    assert RunDirectory(tmp_path / "run").load()["step"] == 1
    assert not any(p.exists() for p in left) and live.exists() and users.exists()
