"""The comparison protocol shared by every system: tasks, sizes, budgets, and the result files.

This module is imported by the harness (feedprop's environment) and by the peer workers
(``.venv-bench``), so it uses the standard library only.

One *run* is a (system, task, seed) triple. Every system in a run sees the same published
splits, the same subsamples of them, the same starting prompt, the same budget of optimizer
calls and tokens, and is scored by the same guide. A run writes one JSON file,
``<results>/runs/<system>/<task>/seed<seed>.json``, atomically.

Every task also has a *baseline*: the starting one-call program scored once on the test items,
one request at a time (``<results>/baselines/<task>.json``; the test items do not depend on the
seed, so one baseline serves every seed). Every system's "before" is that baseline, and its
per-item outcomes are copied into every run file.

Example:
    >>> spec = RunSpec("feedprop-optoprime", "bbh/object_counting", 0, PRESETS["pilot"])
    >>> spec.result_path(Path("out")).as_posix()
    'out/runs/feedprop-optoprime/bbh__object_counting/seed0.json'
    >>> len(spec.indices("test", 100)), spec.indices("test", 100) == spec.indices("test", 100)
    (10, True)
    >>> spec.baseline_path(Path("out")).as_posix()
    'out/baselines/bbh__object_counting.json'
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import tempfile
from collections.abc import Mapping
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
    "estimate_seconds",
    "machine_info",
    "read_json",
    "source_revision",
    "subsample",
]

#: Version of the result file layout.
SCHEMA = "feedprop-compare/2"

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
        TaskSpec("bbh/navigate", "Answer the question."),
        TaskSpec("gsm8k", "Answer the question."),
        TaskSpec("mbpp", "Write the Python function described below.", "MBPP, published id-based split"),
    )
}


@dataclass(frozen=True)
class SystemSpec:
    """One system under comparison: which environment runs it and what it is.

    ``trains`` is false for a program reported as it is (no optimizer: only a test pass).
    """

    name: str
    kind: str  # "feedprop" (in the harness process) or "peer" (a worker in the bench environment)
    package: str  # the distribution whose version is recorded
    description: str
    trains: bool = True


SYSTEMS: dict[str, SystemSpec] = {
    spec.name: spec
    for spec in (
        SystemSpec(
            "feedprop-recommended",
            "feedprop",
            "feedprop",
            "feedprop default: fp.optim.recommended(params), fp.train(search='pareto')",
        ),
        SystemSpec("feedprop-hindsight", "feedprop", "feedprop", "feedprop Hindsight, fp.train with validation gating"),
        SystemSpec("feedprop-optoprime", "feedprop", "feedprop", "feedprop OptoPrime, fp.train with validation gating"),
        SystemSpec("trace-optoprime", "peer", "trace-opt", "trace-opt OptoPrime on a bundled LLM call, gated loop"),
        SystemSpec("textgrad-tgd", "peer", "textgrad", "textgrad TGD on a BlackboxLLM system prompt, gated loop"),
        SystemSpec(
            "dspy-gepa", "peer", "dspy", "dspy GEPA, reflection model = the optimizer's, on the one-call program"
        ),
        SystemSpec("dspy-miprov2-light", "peer", "dspy", "dspy MIPROv2 auto='light' on the one-call program"),
        SystemSpec("dspy-bootstrap", "peer", "dspy", "dspy BootstrapFewShot on the one-call program"),
        SystemSpec("dspy-copro", "peer", "dspy", "dspy COPRO on the one-call program"),
        SystemSpec(
            "dspy-cot",
            "peer",
            "dspy",
            "dspy ChainOfThought('question -> answer') with the starting instruction, unoptimized (a program choice)",
            trains=False,
        ),
    )
}


@dataclass(frozen=True)
class Preset:
    """Sizes, budget and field of one matrix.

    ``train``/``val``/``test`` are how many items are drawn from the published splits (the whole
    split when it is smaller). ``train_tokens`` is **the** budget: every token of the training
    phase, student and optimizer, counted at the proxy, the same for every system (a system that
    cannot be stopped at it is recorded with its overshoot). ``optimizer_calls`` and
    ``optimizer_tokens`` only shape COPRO (:func:`copro_shape`). The ``*_max_tokens`` caps are
    applied by the proxy to every request of that role, for every system alike; ``request_seed``
    is set on every student request; ``test_params`` are added to every student request of the test
    pass (``cache_prompt: false`` makes llama.cpp compute each reply from scratch, so what came
    before cannot change it). ``test_workers`` is how many test requests run at once (1: scores
    repeat bit for bit). ``batch_size`` and ``epochs`` shape the loops the harness drives;
    ``max_run_seconds`` ends a run which hangs. ``systems``/``tasks``/``seeds`` are the matrix
    (empty: every known one), ``second_seed`` the seeds run again for the two best systems of each
    task. ``student_model``/``optimizer_model`` name the embedded models the two roles use.
    """

    name: str
    train: int
    val: int
    test: int
    train_tokens: int
    optimizer_calls: int = 16
    optimizer_tokens: int = 8_000
    batch_size: int = 3
    epochs: int = 3
    student_max_tokens: int = 512
    optimizer_max_tokens: int = 1024
    max_run_seconds: float = 3600.0
    seeds: tuple[int, ...] = (0,)
    second_seed: tuple[int, ...] = ()
    systems: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    request_seed: int = 0
    test_workers: int = 1
    test_params: dict[str, Any] = field(default_factory=dict)
    student_model: str = "qwen2.5-coder-1.5b"
    optimizer_model: str = "qwen2.5-coder-1.5b"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("seeds", "second_seed", "systems", "tasks"):
            out[key] = list(getattr(self, key))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preset:
        values = dict(data)
        for key in ("seeds", "second_seed", "systems", "tasks"):
            if key in values:
                values[key] = tuple(values[key])
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})

    @property
    def field_systems(self) -> list[str]:
        return list(self.systems) or list(SYSTEMS)

    @property
    def field_tasks(self) -> list[str]:
        return list(self.tasks) or list(TASKS)


#: The v2 field: every peer the issue names, the feedprop default and Hindsight, and dspy's
#: ChainOfThought as an unoptimized row. textgrad and feedprop OptoPrime are added with --systems.
V2_SYSTEMS = (
    "feedprop-recommended",
    "feedprop-hindsight",
    "trace-optoprime",
    "dspy-gepa",
    "dspy-miprov2-light",
    "dspy-bootstrap",
    "dspy-cot",
)
#: Three BBH answer kinds (a number, an option letter, a Yes/No label) and GSM8K (worked arithmetic).
#: word_sorting (a line of words) is the fourth kind but its replies are the longest of BBH (about
#: 290 tokens a test item): add it with --tasks when there is time.
V2_TASKS = ("bbh/object_counting", "bbh/date_understanding", "bbh/navigate", "gsm8k")

PRESETS: dict[str, Preset] = {
    # Seconds, against the scripted fake endpoint: keeps the harness from rotting.
    "smoke": Preset(
        "smoke",
        train=4,
        val=2,
        test=3,
        train_tokens=20_000,
        optimizer_calls=8,
        optimizer_tokens=100_000,
        batch_size=2,
        epochs=1,
        max_run_seconds=300.0,
        test_params={"cache_prompt": False},
    ),
    # One tiny real run per system to check each adapter end to end.
    "pilot": Preset(
        "pilot",
        train=6,
        val=4,
        test=10,
        train_tokens=12_000,
        optimizer_calls=8,
        optimizer_tokens=6_000,
        batch_size=2,
        epochs=1,
        max_run_seconds=14_400.0,
        test_params={"cache_prompt": False},
        student_model="qwen2.5-coder-0.5b",
    ),
    # The comparison v2 (issue: paired statistics, deterministic scoring, one budget): 100 test
    # items a task (the whole BBH test split), the embedded 0.5B student with the 1.5B optimizer,
    # one budget of 16k training tokens (student + optimizer) per run. `run.py --dry-run` prints
    # the time estimate (about 11 hours; see estimate_seconds).
    "v2": Preset(
        "v2",
        train=15,
        val=8,
        test=100,
        train_tokens=16_000,
        optimizer_calls=16,
        optimizer_tokens=8_000,
        batch_size=3,
        epochs=2,
        max_run_seconds=5_400.0,
        seeds=(0,),
        second_seed=(1,),
        systems=V2_SYSTEMS,
        tasks=V2_TASKS,
        test_params={"cache_prompt": False},
        student_model="qwen2.5-coder-0.5b",
        optimizer_model="qwen2.5-coder-1.5b",
    ),
    # The first matrix (benchmarks/results/matrix, 35 runs, 15.4 hours), kept so its files read back.
    "matrix": Preset(
        "matrix",
        train=10,
        val=5,
        test=20,
        train_tokens=30_000,
        optimizer_calls=16,
        optimizer_tokens=8_000,
        batch_size=3,
        epochs=2,
        max_run_seconds=14_400.0,
        systems=(
            "feedprop-optoprime",
            "feedprop-hindsight",
            "trace-optoprime",
            "textgrad-tgd",
            "dspy-copro",
            "dspy-miprov2-light",
            "dspy-bootstrap",
        ),
        tasks=("bbh/object_counting", "bbh/word_sorting", "bbh/date_understanding", "gsm8k", "mbpp"),
    ),
}


# -- the time estimate ---------------------------------------------------------------------------

#: Nominal single-request rates on this 2-core machine (DESIGN.md section 4): (prompt, completion)
#: tokens per second.
MODEL_RATES: dict[str, tuple[float, float]] = {
    "qwen2.5-coder-1.5b": (55.0, 19.0),
    "qwen2.5-coder-0.5b": (120.0, 33.0),
}
#: Measured / nominal time. In the first matrix (benchmarks/results/matrix, the one-call systems'
#: test passes on 4 parallel slots) long replies (GSM8K, word sorting: ~300 tokens) took what one
#: slot's nominal rate predicts, 0.95-1.05x with no parallel gain, and short ones (object counting)
#: 0.7-0.9x of it (the slots' gain). The nominal rates were measured one request at a time, as the
#: test pass now runs; 1.1 adds the harness's and the peers' own load.
SLOWDOWN = 1.1
#: Share of runs that ended with the starting program in the first matrix (the gate kept it), which
#: then skip their test pass: trace-opt and textgrad 5 of 5, Hindsight 5 of 5, OptoPrime 4 of 5.
UNCHANGED_RATE = {"trace-optoprime": 1.0, "textgrad-tgd": 1.0, "feedprop-hindsight": 1.0, "feedprop-optoprime": 0.8}
#: Student tokens of one test item with the one-call program, (prompt, completion), means over the
#: first matrix's one-call systems (feedprop, trace-opt, textgrad; 1.5B student). The 0.5B student
#: is assumed to write replies of the same length.
TEST_ITEM_TOKENS: dict[str, tuple[float, float]] = {
    "bbh/object_counting": (62.0, 62.0),
    "bbh/word_sorting": (52.0, 291.0),
    "bbh/date_understanding": (136.0, 205.0),
    "bbh/navigate": (90.0, 160.0),  # not in the first matrix: a guess between object counting and dates
    "gsm8k": (72.0, 308.0),
    "mbpp": (147.0, 350.0),
}
#: Share of completion tokens in training traffic, per role (the first matrix: the student's
#: minibatches and validation are mostly replies, the optimizer's calls mostly prompt).
COMPLETION_SHARE = {"student": 0.6, "optimizer": 0.2}
#: Share of the training budget spent by each role (the first matrix's feedprop runs: about half each).
STUDENT_SHARE = 0.5
#: Systems that cannot be stopped at the budget spend about this multiple of it (the first
#: matrix: MIPROv2 light used 2-5x the others' training tokens).
OVERSHOOT = {"dspy-miprov2-light": 2.5, "dspy-copro": 3.0}
#: Fixed cost of a run (peer imports, model warm-up), seconds.
RUN_OVERHEAD = 60.0
#: Runs that leave the program unchanged skip their test pass (the baseline is reused); the
#: estimate does not count on it.


def _seconds(model: str, prompt: float, completion: float, parallel: float = 1.0) -> float:
    p_rate, c_rate = MODEL_RATES.get(model, MODEL_RATES["qwen2.5-coder-1.5b"])
    return SLOWDOWN * (prompt / p_rate + completion / (c_rate * parallel))


def estimate_seconds(preset: Preset, system: str | None, task: str, *, expected: bool = False) -> float:
    """Estimated machine seconds of one run (``system=None``: the task's baseline test pass).

    ``expected=True`` discounts the test pass by the share of the first matrix's runs of the
    system that left the program unchanged (:data:`UNCHANGED_RATE`); the default assumes every
    trained program changes (the worst case).

    A test pass is ``preset.test`` sequential student requests of the task's measured size; a
    training phase spends ``preset.train_tokens`` (times the overshoot of systems that cannot be
    stopped), split between the student (0.5B, 4 slots) and the optimizer (1.5B, one at a time).

    Example:
        >>> round(estimate_seconds(PRESETS["v2"], None, "bbh/object_counting") / 60, 1)
        4.4
        >>> estimate_seconds(PRESETS["v2"], "dspy-cot", "gsm8k") > estimate_seconds(PRESETS["v2"], None, "gsm8k")
        True
    """
    prompt, completion = TEST_ITEM_TOKENS.get(task, (100.0, 250.0))
    test_pass = preset.test * _seconds(preset.student_model, prompt, completion)
    if system is None:
        return test_pass
    spec = SYSTEMS[system]
    if not spec.trains:
        # A different program (ChainOfThought writes a reasoning field, then the answer): about
        # twice the reply, and dspy's field markers in the prompt.
        return RUN_OVERHEAD + preset.test * _seconds(preset.student_model, prompt + 150, 2 * completion)
    tokens = preset.train_tokens * OVERSHOOT.get(system, 1.0)
    student = tokens * STUDENT_SHARE
    optimizer = tokens - student
    c_student, c_opt = COMPLETION_SHARE["student"], COMPLETION_SHARE["optimizer"]
    train = _seconds(preset.student_model, student * (1 - c_student), student * c_student, parallel=1.7)
    train += _seconds(preset.optimizer_model, optimizer * (1 - c_opt), optimizer * c_opt)
    unchanged = UNCHANGED_RATE.get(system, 0.0) if expected else 0.0
    return RUN_OVERHEAD + train + (1 - unchanged) * test_pass


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

    def baseline_path(self, results: Path) -> Path:
        """Where the task's shared baseline (the starting program's test pass) is stored.

        The test items and the starting program do not depend on the seed, and the test pass is
        deterministic, so one baseline serves every seed of the task.
        """
        return results / "baselines" / f"{self.task.replace('/', '__')}.json"

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
