"""A deterministic training run to be killed with SIGKILL and resumed (used by ``crash.py``).

``python crash_worker.py <run dir> <result json> [--pause-at N] [--pause-mode replace|write]``

Trains with ``resume=True`` (so a second start continues the first) and writes the result's summary
to ``<result json>`` when done. It reports on stdout, one line each, flushed at once:

* ``SAVED <step>`` once a checkpoint write has returned — that step is completed and must survive;
* ``PAUSE <n> <file>`` when it stops inside its ``n``-th atomic file write and waits to be killed:
  with ``--pause-mode replace`` after the temporary file is complete but before ``os.replace``
  puts it in place, with ``--pause-mode write`` half-way through writing the temporary file.

The pause is made by wrapping, in this process only, the ``os`` and ``open`` names that
``feedprop._files`` (every atomic write of the checkpoint) writes through; the writer's own code
runs unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import types
from pathlib import Path
from typing import IO, Any

from feedprop import _files as files_module
from feedprop.llm import MockLLM
from feedprop.module import Module
from feedprop.node import Feedback, Node, Parameter
from feedprop.optim import OptoPrime
from feedprop.training import TrainResult, train
from feedprop.training import checkpoint as checkpoint_module

ENDINGS = list("abcdefgh")
TRAIN = [(f"t{i}", f"t{i}{ENDINGS[i % 5]}") for i in range(20)]
VAL = [(f"v{j}_{k}", f"v{j}_{k}{e}") for j, e in enumerate(ENDINGS) for k in range(len(ENDINGS) - j)]
PAUSE_SECONDS = 60.0  # long enough for any parent to kill us


class Suffix(Module):
    """output = (the workflow model's echo of the input) + suffix."""

    def __init__(self, llm: MockLLM) -> None:
        self.suffix = Parameter("z", name="suffix", description="appended to every answer")
        self.llm = llm

    def forward(self, x: str) -> Node[Any]:
        return self.llm.complete([{"role": "user", "content": x}]).text + self.suffix


def exact(output: Any, target: Any) -> Feedback:
    return Feedback(
        "Correct." if output == target else f"Wrong: expected {target!r}, got {output!r}.", float(output == target)
    )


def suggest_by_hash(messages: Any, **params: Any) -> str:
    """An optimizer reply that is a pure function of its prompt: one of the endings, by hash."""
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).digest()
    ending = ENDINGS[int.from_bytes(digest[:8], "big") % len(ENDINGS)]
    return json.dumps({"reasoning": "by hash", "suggestion": {"suffix": ending}})


def run(directory: str | Path, latency: float = 0.005) -> tuple[TrainResult, dict[str, Any]]:
    workflow = MockLLM(lambda messages, **params: messages[-1]["content"], latency=latency, model="workflow-mock")
    model = Suffix(workflow)
    opt = OptoPrime(model.parameters(), llm=MockLLM(suggest_by_hash, latency=latency, model="optimizer-mock"))
    result = train(
        model,
        TRAIN,
        exact,
        opt,
        val_set=VAL,
        batch_size=2,
        epochs=2,
        seed=5,
        checkpoint=directory,
        resume=True,
        progress=False,
        plot=False,
    )
    return result, opt.state_dict()


def summary(result: TrainResult, opt_state: dict[str, Any]) -> dict[str, Any]:
    """What an interrupted-and-resumed run must share with an uninterrupted one (wall-clock time aside)."""
    return {
        "best_state": result.best_state,
        "val_before": result.val_before,
        "val_after": result.val_after,
        "history": [strip_history(h) for h in result.history],
        "optimizer": opt_state,
        "usage": without_seconds(result.usage),
        "stop_reason": result.stop_reason,
    }


def without_seconds(value: Any) -> Any:
    """``value`` with every ``seconds`` entry dropped, at any depth (wall-clock time is all a resume may change)."""
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k != "seconds"}
    return value


def strip_history(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "seconds"}


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def install_pause(pause_at: int, mode: str) -> None:
    """Stop inside the ``pause_at``-th atomic file write (see the module docstring)."""
    real_replace, real_open = os.replace, open
    writes = {"n": 0}

    def replace(src: Any, dst: Any) -> None:
        if mode == "replace":
            writes["n"] += 1
            if writes["n"] == pause_at:
                say(f"PAUSE {pause_at} {Path(dst).name}")
                time.sleep(PAUSE_SECONDS)
        real_replace(src, dst)

    class HalfWriter:
        def __init__(self, fh: IO[bytes]) -> None:
            self.fh = fh

        def write(self, data: bytes) -> int:
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            say(f"PAUSE {pause_at} {Path(self.fh.name).name}")
            time.sleep(PAUSE_SECONDS)
            return self.fh.write(data[len(data) // 2 :])

        def __getattr__(self, name: str) -> Any:
            return getattr(self.fh, name)

        def __enter__(self) -> HalfWriter:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

    def open_(file: Any, mode_: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = real_open(file, mode_, *args, **kwargs)
        if mode == "write" and "w" in mode_:
            writes["n"] += 1
            if writes["n"] == pause_at:
                return HalfWriter(fh)
        return fh

    shim = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
    shim.replace = replace
    files_module.os = shim  # type: ignore[attr-defined]
    files_module.open = open_  # type: ignore[attr-defined]


def report_saves() -> None:
    original = checkpoint_module.RunDirectory.save

    def save(self: checkpoint_module.RunDirectory, state: Any) -> None:
        original(self, state)
        say(f"SAVED {state['step']}")

    checkpoint_module.RunDirectory.save = save  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("result")
    parser.add_argument("--pause-at", type=int, default=0)
    parser.add_argument("--pause-mode", choices=("replace", "write"), default="replace")
    args = parser.parse_args()
    report_saves()
    if args.pause_at:
        install_pause(args.pause_at, args.pause_mode)
    result, opt_state = run(args.directory)
    Path(args.result).write_text(json.dumps(summary(result, opt_state), sort_keys=True), encoding="utf-8")
    say("DONE")


if __name__ == "__main__":
    main()
