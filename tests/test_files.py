"""Atomic writes: whole or not at all, with the mode a plain write would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from feedprop._files import _umask, atomic_write, replacing


def test_a_write_replaces_the_file_whole_with_the_usual_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    atomic_write(target, "first")
    atomic_write(target, b"second")
    assert target.read_text(encoding="utf-8") == "second"
    assert sorted(os.listdir(target.parent)) == ["state.json"], "no temporary is left behind"
    plain = tmp_path / "plain.txt"
    plain.write_text("x", encoding="utf-8")
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~_umask()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "page.html"
    atomic_write(target, "old")
    with pytest.raises(RuntimeError), replacing(target) as temp:
        temp.write_text("half", encoding="utf-8")
        raise RuntimeError("the writer failed")
    assert target.read_text(encoding="utf-8") == "old" and os.listdir(tmp_path) == ["page.html"]


def test_a_directory_is_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.bin").write_bytes(b"0")
    with replacing(target, directory=True) as temp:
        (temp / "weights.bin").write_bytes(b"1")
    assert sorted(os.listdir(target)) == ["weights.bin"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~_umask()
