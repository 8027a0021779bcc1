"""Kill -9 trials: start ``crash_worker.py``, SIGKILL it at a random point, inspect the run directory, resume.

One *chain* is one run directory: the worker is killed ``kills`` times — at random points after a
random completed step, or inside a checkpoint write (between the temporary file and ``os.replace``,
or half-way through the temporary file) — and then allowed to finish. After every kill:

* every ``*.json`` file in the directory parses (no checkpoint is ever half-written);
* no file that a reader could take for a checkpoint is a leftover temporary file;
* the checkpoint holds at least every step the worker reported completed (no completed step lost),
  and its history is the beginning of the uninterrupted run's history.

At the end the resumed run's result must equal the uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKER = HERE / "crash_worker.py"
CHECKPOINT_NAMES = ("checkpoint.json", "checkpoint.prev.json", "best.json")
MODES = ("random", "in-write:replace", "in-write:write")


@dataclass
class Kill:
    """What one SIGKILL found."""

    mode: str
    completed: int  # the last step the worker reported as saved
    checkpoint_step: int  # the step in checkpoint.json after the kill
    temp_files: list[str]
    problems: list[str] = field(default_factory=list)


@dataclass
class Chain:
    """One run directory killed ``len(kills)`` times, then finished."""

    kills: list[Kill] = field(default_factory=list)
    finished_before_kill: int = 0
    matches_uninterrupted: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def lost_states(self) -> int:
        return sum(k.checkpoint_step < k.completed for k in self.kills) + (not self.matches_uninterrupted)


class Worker:
    """A running ``crash_worker.py`` whose stdout lines are collected by a thread."""

    def __init__(self, directory: Path, out: Path, pause_at: int = 0, pause_mode: str = "replace") -> None:
        command = [sys.executable, str(WORKER), str(directory), str(out)]
        if pause_at:
            command += ["--pause-at", str(pause_at), "--pause-mode", pause_mode]
        env = {**os.environ, "FEEDPROP_CACHE": "0", "PYTHONPATH": _pythonpath()}
        # stderr goes to a file: a pipe nobody reads until the end could fill up and stall the worker.
        self.stderr_path = directory.with_name(directory.name + ".stderr")
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=env, text=True)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.strip())
                self._changed.notify_all()
        with self._changed:
            self.lines.append("EOF")
            self._changed.notify_all()

    def wait_for(self, prefix: str, count: int = 1, timeout: float = 600.0) -> bool:
        """Wait until ``count`` lines start with ``prefix``; False if the worker ended first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(line.startswith(prefix) for line in self.lines) < count:
                if "EOF" in self.lines:
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the worker made no progress in {timeout:.0f}s: {self.lines[-5:]}")
                self._changed.wait(left)
        return True

    def completed(self) -> int:
        steps = [int(line.split()[1]) for line in list(self.lines) if line.startswith("SAVED")]
        return max(steps, default=-1)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._reader.join(timeout=10)

    def finish(self, timeout: float = 900.0) -> str:
        """Wait for the worker to end; returns its stderr."""
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


def _pythonpath() -> str:
    src = str(HERE.parents[1] / "src")
    return os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)


def inspect(directory: Path, reference: list[dict[str, Any]]) -> tuple[int, list[str], list[str]]:
    """(checkpoint step, leftover temporary files, problems) of a run directory just after a kill."""
    problems: list[str] = []
    temps = sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))
    for name in temps:
        if name.endswith(".json") or name in CHECKPOINT_NAMES or not name.startswith("."):
            problems.append(f"temporary file {name} could be taken for a checkpoint")
    parsed: dict[str, Any] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            parsed[path.name] = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(f"{path.name} does not parse: {exc}")
    step = -1
    if "checkpoint.json" in parsed:
        try:
            state = parsed["checkpoint.json"]
            step = int(state["step"])
            history = [{k: v for k, v in h.items() if k != "seconds"} for h in state["history"]]
            if history != reference[: len(history)]:
                problems.append(f"the checkpoint's history (step {step}) is not the uninterrupted run's")
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"checkpoint.json is not a usable checkpoint: {exc}")
    elif not (directory / "checkpoint.json").exists() and (directory / "checkpoint.prev.json").exists():
        problems.append("checkpoint.json is missing but checkpoint.prev.json exists")
    return step, temps, problems


def reference_run(directory: Path) -> dict[str, Any]:
    """The uninterrupted run's summary (run in a worker too, so both sides are the same program)."""
    out = directory.with_suffix(".json")
    err = Worker(directory, out).finish()
    if not out.exists():
        raise AssertionError(f"the uninterrupted run failed: {err[-3000:]}")
    return dict(json.loads(out.read_text(encoding="utf-8")))


def run_chain(directory: Path, reference: dict[str, Any], kills: int, rng: random.Random) -> Chain:
    """Kill a run ``kills`` times at random points (see the module docstring), then let it finish."""
    chain = Chain()
    out = directory.with_suffix(".json")
    steps = len(reference["history"])
    attempts = 0
    offset = rng.randrange(len(MODES))
    while len(chain.kills) < kills:
        attempts += 1
        if attempts > 4 * kills + 10:
            chain.problems.append(f"only {len(chain.kills)} of {kills} kills landed")
            break
        mode = MODES[(len(chain.kills) + offset) % len(MODES)]  # every kind of kill, in turn
        done = _checkpoint_step(directory)
        if mode == "random":
            worker = Worker(directory, out)
            target = rng.randint(max(done, 0) + 1, steps) if done < steps else steps
            landed = worker.wait_for("SAVED", count=_saves_until(target, done))
            if landed:
                time.sleep(rng.uniform(0.0, 0.15))
        else:
            # Each save writes checkpoint.prev.json (after the first), checkpoint.json and best.json.
            worker = Worker(directory, out, pause_at=rng.randint(1, 9), pause_mode=mode.split(":")[1])
            landed = worker.wait_for("PAUSE")
        if not landed or worker.proc.poll() is not None:
            err = worker.finish()
            if not out.exists():
                chain.problems.append(f"a worker died on its own: {err[-2000:]}")
                return chain
            chain.finished_before_kill += 1
            out.unlink()
            _restart_if_finished(directory)
            continue
        worker.kill()
        step, temps, problems = inspect(directory, reference["history"])
        chain.kills.append(Kill(mode, worker.completed(), step, temps, problems))
    err = Worker(directory, out).finish()
    if not out.exists():
        chain.problems.append(f"the final resume failed: {err[-3000:]}")
        return chain
    resumed = json.loads(out.read_text(encoding="utf-8"))
    chain.matches_uninterrupted = resumed == reference
    left = sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))
    if left:
        chain.problems.append(f"temporary files outlived the resume: {left}")
    if not chain.matches_uninterrupted:
        differ = sorted(k for k in reference if resumed.get(k) != reference[k])
        chain.problems.append(f"the resumed run differs from the uninterrupted one in {differ}")
    return chain


def _checkpoint_step(directory: Path) -> int:
    try:
        return int(json.loads((directory / "checkpoint.json").read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError):
        return -1


def _saves_until(target: int, done: int) -> int:
    """How many SAVED lines a worker resuming after step ``done`` prints before step ``target`` is saved."""
    first = 0 if done < 0 else done + 1  # a new run saves step 0 (the baseline) first
    return max(1, target - first + 1)


def _restart_if_finished(directory: Path) -> None:
    """A chain whose run finished before the next kill starts over in the same directory."""
    for path in directory.iterdir():
        path.unlink()
