"""Crash recovery: kill -9 at random points of a training run, including inside checkpoint writes.

Every resume succeeds, no completed step is lost, no checkpoint file is ever half-written, and the
run ends exactly like an uninterrupted one. ``make test`` kills three times (one of each kind: a
random point, between a checkpoint's temporary file and its rename, half-way through writing the
temporary file); ``benchmarks/reliability.py`` runs 20+ kills.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from feedprop.training.checkpoint import RunDirectory

from .crash import MODES, inspect, reference_run, run_chain


@pytest.mark.slow
def test_kill_9_at_random_points_and_inside_checkpoint_writes(tmp_path: Path) -> None:
    seed = random.randrange(1_000_000)
    reference = reference_run(tmp_path / "uninterrupted")
    assert len(reference["history"]) == 20 and reference["val_after"] > reference["val_before"]
    chain = run_chain(tmp_path / "killed", reference, kills=3, rng=random.Random(seed))
    where = f"(seed {seed}; kills: {chain.kills})"
    assert not chain.problems, f"{chain.problems} {where}"
    assert len(chain.kills) == 3 and {k.mode for k in chain.kills} == set(MODES), where
    for kill in chain.kills:
        assert not kill.problems, f"{kill.problems} {where}"
        assert kill.checkpoint_step >= kill.completed, f"a completed step was lost {where}"
    assert chain.matches_uninterrupted and chain.lost_states == 0, where


def test_inspect_flags_a_half_written_checkpoint_and_a_temp_file_posing_as_one(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.json").write_text('{"step": 3, "hist', encoding="utf-8")
    (tmp_path / "best.json.tmp").write_text("{}", encoding="utf-8")
    (tmp_path / ".checkpoint.json.123.tmp").write_text("{", encoding="utf-8")
    step, temps, problems = inspect(tmp_path, [])
    assert step == -1 and temps == [".checkpoint.json.123.tmp", "best.json.tmp"]
    assert any("checkpoint.json does not parse" in p for p in problems)
    assert any("best.json.tmp could be taken for a checkpoint" in p for p in problems)
    assert len(problems) == 2


def test_resuming_removes_only_temporary_files_whose_writer_is_gone(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    run.save({"step": 1, "fingerprint": {}})
    dead, alive = tmp_path / ".checkpoint.json.999999999.tmp", tmp_path / f".best.json.{os.getpid()}.tmp"
    other = tmp_path / ".notes.json.999999999.tmp"
    for path in (dead, alive, other):
        path.write_text("{", encoding="utf-8")
    assert RunDirectory(tmp_path).load()["step"] == 1
    assert not dead.exists() and alive.exists() and other.exists()
