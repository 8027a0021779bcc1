"""The comparison protocol shared by every system: tasks, sizes, budgets, and the result files.

This module is imported by the harness (feedprop's environment) and by the peer workers
(``.venv-bench``), so it uses the standard library only.

One *run* is a (system, task, seed) triple. Every system in a run sees the same published
splits, the same subsamples of them, the same starting prompt, the same budget of optimizer
calls and tokens, and is scored by the same guide. A run writes one JSON file,
``<results>/runs/<system>/<task>/seed<seed>.json``, atomically.

Example:
    >>> spec = RunSpec("feedprop-optoprime", "bbh/object_counting", 0, PRESETS["pilot"])
    >>> spec.result_path(Path("out")).as_posix()
    'out/runs/feedprop-optoprime/bbh__object_counting/seed0.json'
    >>> len(spec.indices("test", 100)), spec.indices("test", 100) == spec.indices("test", 100)
    (10, True)
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "COPRO_MAX_BREADTH",
    "COPRO_TOKENS_PER_CALL",
    "PRESETS",
    "SCHEMA",
    "SYSTEMS",
    "TASKS",
    "TEST_SUBSAMPLE_SEED",
    "Preset",
    "RunSpec",
    "SystemSpec",
    "TaskSpec",
    "atomic_write_json",
    "copro_shape",
    "machine_info",
    "read_json",
    "source_revision",
    "subsample",
]

#: Version of the result file layout.
SCHEMA = "feedprop-compare/1"

#: The test subsample is drawn with this seed, whatever the run's seed: every system and every
#: seed is scored on the same held-out items.
TEST_SUBSAMPLE_SEED = 0

#: Description of the trainable prompt, given to every system that takes one.
PROMPT_DESCRIPTION = "system prompt of the language model that answers the question"


@dataclass(frozen=True)
class TaskSpec:
    """A benchmark task as the comparison uses it: feedprop's loader name and the starting prompt."""

    name: str
    start_prompt: str
    note: str = ""


#: The tasks of the comparison (published splits from ``feedprop.tasks``; SOURCES.md).
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("bbh/object_counting", "Answer the question."),
        TaskSpec("bbh/word_sorting", "Answer the question."),
        TaskSpec("bbh/date_understanding", "Answer the question."),
        TaskSpec("gsm8k", "Answer the question."),
        TaskSpec("mbpp", "Write the Python function described below.", "MBPP, published id-based split"),
    )
}


@dataclass(frozen=True)
class SystemSpec:
    """One system under comparison: which environment runs it and what it is."""

    name: str
    kind: str  # "feedprop" (in the harness process) or "peer" (a worker in the bench environment)
    package: str  # the distribution whose version is recorded
    description: str


SYSTEMS: dict[str, SystemSpec] = {
    spec.name: spec
    for spec in (
        SystemSpec("feedprop-optoprime", "feedprop", "feedprop", "feedprop OptoPrime, fp.train with validation gating"),
        SystemSpec("feedprop-hindsight", "feedprop", "feedprop", "feedprop Hindsight, fp.train with validation gating"),
        SystemSpec("trace-optoprime", "peer", "trace-opt", "trace-opt OptoPrime on a bundled LLM call, gated loop"),
        SystemSpec("textgrad-tgd", "peer", "textgrad", "textgrad TGD on a BlackboxLLM system prompt, gated loop"),
        SystemSpec("dspy-copro", "peer", "dspy", "dspy COPRO on ChainOfThought"),
        SystemSpec("dspy-miprov2-light", "peer", "dspy", "dspy MIPROv2 auto='light' on ChainOfThought"),
        SystemSpec("dspy-bootstrap", "peer", "dspy", "dspy BootstrapFewShot on ChainOfThought"),
    )
}


@dataclass(frozen=True)
class Preset:
    """Sizes and budget of one run.

    ``train``/``val``/``test`` are how many items are drawn from the published splits (the whole
    split when it is smaller); ``optimizer_calls``/``optimizer_tokens`` is the budget, counted at
    the endpoint on the optimizer's traffic only; the ``*_max_tokens`` caps are applied by the
    counting proxy to every request of that role, for every system alike; ``batch_size`` and
    ``epochs`` shape the loops the harness drives (feedprop, trace-opt, textgrad);
    ``max_run_seconds`` is a safety limit that ends a run which hangs.
    """

    name: str
    train: int
    val: int
    test: int
    optimizer_calls: int
    optimizer_tokens: int
    batch_size: int = 3
    epochs: int = 3
    student_max_tokens: int = 512
    optimizer_max_tokens: int = 1024
    max_run_seconds: float = 3600.0
    seeds: tuple[int, ...] = (0,)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seeds"] = list(self.seeds)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preset:
        values = dict(data)
        values["seeds"] = tuple(values.get("seeds", (0,)))
        return cls(**values)


PRESETS: dict[str, Preset] = {
    # Seconds, against the scripted fake endpoint: keeps the harness from rotting.
    "smoke": Preset(
        "smoke",
        train=4,
        val=2,
        test=3,
        optimizer_calls=8,
        optimizer_tokens=100_000,
        batch_size=2,
        epochs=1,
        max_run_seconds=300.0,
    ),
    # One tiny real run per system to check each adapter end to end: about three OptoPrime calls'
    # worth of tokens, and enough calls for one textgrad step (2 gradients per item + 1 update).
    "pilot": Preset(
        "pilot",
        train=6,
        val=4,
        test=10,
        optimizer_calls=8,
        optimizer_tokens=6_000,
        batch_size=2,
        epochs=1,
        max_run_seconds=14_400.0,
    ),
    # The matrix: 35 runs sized for about four hours on two idle cores (~6-7 min a run at the model's
    # nominal 55 prompt / 19 completion tokens per second); measured, the 35 runs took 15.4
    # hours (student traffic dominates: test passes, candidate scoring; benchmarks/results/matrix).
    # Tokens are the binding limit for most systems; the call limit leaves room for textgrad's many
    # short calls.
    "matrix": Preset(
        "matrix",
        train=10,
        val=5,
        test=20,
        optimizer_calls=16,
        optimizer_tokens=8_000,
        batch_size=3,
        epochs=2,
        max_run_seconds=14_400.0,
        seeds=(0,),
    ),
}


#: What one COPRO proposal call costs, roughly (prompt and reply), to turn the token budget into calls.
COPRO_TOKENS_PER_CALL = 600
#: Candidates per COPRO round at most (each is scored by the student on the whole training set).
COPRO_MAX_BREADTH = 4


def copro_shape(preset: Preset) -> tuple[int, int]:
    """(breadth, depth) for COPRO so that its proposal calls fit the budget.

    COPRO makes ``(breadth - 1) + (depth - 1) * breadth`` proposal calls; the budget allows
    ``min(calls, tokens // COPRO_TOKENS_PER_CALL)``. Breadth is capped at :data:`COPRO_MAX_BREADTH`
    because every candidate is scored on the whole training set by the student, which dominates
    the run's time on two cores.

    Example:
        >>> copro_shape(PRESETS["pilot"]), copro_shape(PRESETS["matrix"])
        ((3, 3), (4, 3))
    """
    calls = min(preset.optimizer_calls, max(2, preset.optimizer_tokens // COPRO_TOKENS_PER_CALL))
    for depth in (3, 2, 1):
        # (breadth - 1) + (depth - 1) * breadth <= calls  <=>  breadth <= (calls + 1) / depth
        breadth = min(COPRO_MAX_BREADTH, (calls + 1) // depth)
        if breadth >= 2:
            return breadth, depth
    return 2, 1


def subsample(n_total: int, k: int, seed: int) -> list[int]:
    """``k`` distinct indices of ``range(n_total)``, drawn with ``seed``, in increasing order.

    Example:
        >>> subsample(10, 3, 0) == subsample(10, 3, 0), len(subsample(2, 5, 0))
        (True, 2)
    """
    if k >= n_total:
        return list(range(n_total))
    return sorted(random.Random(seed).sample(range(n_total), k))


@dataclass(frozen=True)
class RunSpec:
    """One (system, task, seed) run under a preset."""

    system: str
    task: str
    seed: int
    preset: Preset
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.system not in SYSTEMS:
            raise ValueError(f"unknown system {self.system!r}; choose from {', '.join(SYSTEMS)}")
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose from {', '.join(TASKS)}")

    def indices(self, split: str, n_total: int) -> list[int]:
        """Which items of the published ``split`` this run uses (the test ones do not depend on the seed)."""
        k = {"train": self.preset.train, "val": self.preset.val, "test": self.preset.test}[split]
        # Train and validation subsamples vary with the seed (the same for every system); test is fixed.
        seed = TEST_SUBSAMPLE_SEED if split == "test" else 1000 * self.seed + {"train": 1, "val": 2}[split]
        return subsample(n_total, k, seed)

    def result_path(self, results: Path) -> Path:
        return results / "runs" / self.system / self.task.replace("/", "__") / f"seed{self.seed}.json"

    @property
    def start_prompt(self) -> str:
        return TASKS[self.task].start_prompt

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "task": self.task,
            "seed": self.seed,
            "preset": self.preset.to_dict(),
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        return cls(
            data["system"],
            data["task"],
            int(data["seed"]),
            Preset.from_dict(data["preset"]),
            dict(data.get("extra", {})),
        )


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so that a reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def machine_info() -> dict[str, Any]:
    """The machine a run ran on (CPU model and count, OS, Python)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    return {
        "cpu": cpu,
        "cores": cores,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def source_revision() -> dict[str, Any] | None:
    """The commit of the checkout the harness runs from, and whether tracked files had local changes.

    ``None`` outside a git checkout (or without git), so a result file never claims a commit it
    was not made from.
    """
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True)
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "local_changes": bool(changed)}


def truncate(text: Any, limit: int = 400) -> str:
    """``text`` as a string of at most ``limit`` characters (the middle elided), for result files."""
    s = text if isinstance(text, str) else repr(text)
    if len(s) <= limit:
        return s
    half = (limit - 5) // 2
    return s[:half] + " ... " + s[-half:]


def item_records(
    indices: Sequence[int], outputs: Sequence[Any], scores: Sequence[float], errors: Sequence[str | None]
) -> list[dict[str, Any]]:
    """Per-item records of an evaluation, for the result file."""
    return [
        {"index": i, "score": s, "output": truncate(o), **({"error": e} if e else {})}
        for i, o, s, e in zip(indices, outputs, scores, errors, strict=True)
    ]
