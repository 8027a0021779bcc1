"""Joint strategies, run by ``alternate()``: prompts and weights optimized in the order a string names.

A strategy such as ``"p -> w -> p"`` names the phases in order:

- ``p`` (prompts): :func:`feedprop.train` with any feedprop optimizer over the model's trainable
  text, code and value parameters (validation-gated, as always);
- ``w`` (weights): collect the student's calls from the workflow's successful runs on the
  training set (:func:`~feedprop.joint.traces.collect_examples`), fine-tune a LoRA adapter on
  them with peft (:func:`~feedprop.joint.finetune.finetune_lora`), export it to GGUF and load it
  into the embedded engine: the workflow's next calls run on the fast engine with the new weights.

After each phase the program is scored on the validation set (and, for the record, on the test
set). Each phase starts from the best program so far, and at the end the model holds the best
one: a phase that lowers the validation score is reported but not kept. A weight phase is kept
only if it raises the score (an unchanged score keeps the simpler program).

Budgets and checkpoints work as in the trainer: ``budget`` covers the whole run (each prompt
phase gets what is left; a weight phase stops fine-tuning when the time is up), and with
``checkpoint=<dir>`` every phase saves its progress there — prompt phases as trainer runs,
weight phases as the collected examples plus a resumable fine-tuning checkpoint, adapters under
``adapters/`` — so ``resume=True`` continues a killed run where it stopped.

Example:
    >>> parse_strategy("p -> w -> p")
    ['p', 'w', 'p']
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from feedprop.errors import BudgetExhausted, CheckpointError, ConfigurationError, InvalidInputError
from feedprop.joint.finetune import FinetuneConfig, finetune_lora
from feedprop.joint.sft import SFTExample
from feedprop.joint.student import Student
from feedprop.joint.torch_model import load_base
from feedprop.joint.traces import collect_examples
from feedprop.llm.base import LLM
from feedprop.module import Module
from feedprop.node import Parameter
from feedprop.optim import Optimizer, OptoPrime
from feedprop.tracking import Tracker, resolve_tracker, track
from feedprop.training.bookkeeping import RunBook, Span, Splits
from feedprop.training.budget import Budget, RunUsage
from feedprop.training.checkpoint import StateFile, write_json_atomic
from feedprop.training.evaluation import mean
from feedprop.training.run_files import log_outcomes, record_graph
from feedprop.training.trainer import train

__all__ = ["JointResult", "PhaseResult", "WeightOptions", "alternate", "parse_strategy"]

logger = logging.getLogger("feedprop.joint")

PHASE_NAMES = {"p": "prompts", "w": "weights"}
_STATE_FILE = "joint.json"
_FORMAT = "feedprop.joint/1"
# train() options a prompt phase may set; the rest are managed by alternate().
_PROMPT_OPTIONS = (
    "epochs",
    "batch_size",
    "max_steps",
    "search",
    "beam_width",
    "merge_every",
    "follow_ups",
    "prefer_shorter",
    "max_workers",
    "teacher",
)

OptimizerSpec = Optimizer | Callable[[list[Parameter[Any]]], Optimizer] | None


def parse_strategy(strategy: str) -> list[str]:
    """The phases of a strategy string: ``"p -> w -> p"`` is ``["p", "w", "p"]``.

    Example:
        >>> parse_strategy("w"), parse_strategy("p->p->w")
        (['w'], ['p', 'p', 'w'])
    """
    if not isinstance(strategy, str):
        raise InvalidInputError(f"strategy must be a string such as 'p -> w -> p', got {type(strategy).__name__}")
    phases = [part.strip().lower() for part in strategy.split("->")]
    bad = [p for p in phases if p not in PHASE_NAMES]
    if bad or not phases:
        raise ConfigurationError(
            f"strategy {strategy!r} has unknown phases {bad}; write phases 'p' (prompts) and 'w' (weights) "
            "joined by '->', e.g. 'p -> w -> p'"
        )
    return phases


@dataclass(frozen=True)
class WeightOptions:
    """How weight phases run.

    ``finetune``: the LoRA shape and schedule (:class:`~feedprop.joint.finetune.FinetuneConfig`);
    ``min_score``: a run's score needed for its calls to become examples; ``teacher``: an LLM
    answering in the student's place while examples are collected; ``samples`` and
    ``temperature``: rollouts per training example; ``warm_start``: continue from the student's
    current adapter rather than from the base weights; ``scale``: the adapter's strength in the
    engine; ``min_examples``: fewer examples than this skip the phase.

    Example:
        >>> WeightOptions(samples=2, temperature=0.7).to_dict()["samples"]
        2
    """

    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    min_score: float = 1.0
    teacher: LLM | None = None
    samples: int = 1
    temperature: float | None = None
    warm_start: bool = True
    scale: float = 1.0
    min_examples: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.finetune, FinetuneConfig):
            raise InvalidInputError(f"WeightOptions.finetune must be a FinetuneConfig, got {self.finetune!r}")
        if self.teacher is not None and not isinstance(self.teacher, LLM):
            raise InvalidInputError(f"WeightOptions.teacher must be a feedprop LLM, got {type(self.teacher).__name__}")
        for name in ("samples", "min_examples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"WeightOptions.{name} must be an int >= 1, got {value!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, int | float) or not self.scale > 0:
            raise ConfigurationError(f"WeightOptions.scale must be a number > 0, got {self.scale!r}")
        if self.samples > 1 and self.temperature is None:
            raise ConfigurationError(
                "WeightOptions.samples > 1 needs a temperature, or every rollout repeats the first"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "finetune": self.finetune.to_dict(),
            "min_score": self.min_score,
            "teacher": None if self.teacher is None else self.teacher.model,
            "samples": self.samples,
            "temperature": self.temperature,
            "warm_start": self.warm_start,
            "scale": self.scale,
            "min_examples": self.min_examples,
        }


@dataclass
class PhaseResult:
    """One phase of a joint run: its ``kind`` (``"p"`` or ``"w"``), validation and test scores after
    it, whether it became the best program (``kept``), its LLM usage (``calls`` that reached a model,
    ``cache_hits`` answered from the response cache, tokens) and wall time, and ``detail``
    (the trainer's steps for a prompt phase; examples, fine-tuning figures and the adapter file
    for a weight phase). ``skipped`` says why a phase did not run."""

    index: int
    kind: str
    val: float | None = None
    test: float | None = None
    kept: bool = False
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def label(self) -> str:
        return f"{self.index}:{self.kind}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "val": self.val,
            "test": self.test,
            "kept": self.kept,
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": self.seconds,
            "detail": self.detail,
            "skipped": self.skipped,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PhaseResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class JointResult:
    """What :func:`alternate` returns; the model already holds ``best_state``.

    ``phases`` lists every phase in order; ``best_phase`` is the index of the phase whose program
    was kept (0: the initial program). Scores are mean guide scores (``None`` without that set).

    Example:
        >>> r = JointResult("p", [PhaseResult(1, "p", val=0.5, test=0.4, kept=True)], 0.25, 0.2, 1, {}, 0.0, "")
        >>> r.val_after, r.test_after
        (0.5, 0.4)
    """

    strategy: str
    phases: list[PhaseResult]
    val_before: float | None
    test_before: float | None
    best_phase: int
    best_state: dict[str, Any]
    seconds: float
    stop_reason: str
    usage: dict[str, Any] = field(default_factory=dict)
    checkpoint_path: Path | None = None

    @property
    def val_after(self) -> float | None:
        return self.val_before if self.best_phase == 0 else self.phases[self.best_phase - 1].val

    @property
    def test_after(self) -> float | None:
        return self.test_before if self.best_phase == 0 else self.phases[self.best_phase - 1].test

    def table(self) -> str:
        """A markdown table: one row per phase with scores, usage and time."""
        rows = [
            "| phase | val | test | kept | LLM calls (+cached) | tokens | seconds | notes |",
            "|---|---|---|---|---|---|---|---|",
            f"| start | {_fmt(self.val_before)} | {_fmt(self.test_before)} | {'yes' if self.best_phase == 0 else ''} "
            "| | | | |",
        ]
        for phase in self.phases:
            rows.append(
                f"| {phase.label} ({PHASE_NAMES[phase.kind]}) | {_fmt(phase.val)} | {_fmt(phase.test)} | "
                f"{'yes' if phase.kept else ''} | {phase.calls} (+{phase.cache_hits}) | {phase.tokens} | "
                f"{phase.seconds:.0f} | "
                f"{phase.skipped or _notes(phase)} |"
            )
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "phases": [p.to_dict() for p in self.phases],
            "val_before": self.val_before,
            "test_before": self.test_before,
            "val_after": self.val_after,
            "test_after": self.test_after,
            "best_phase": self.best_phase,
            "best_state": self.best_state,
            "seconds": self.seconds,
            "stop_reason": self.stop_reason,
            "usage": self.usage,
        }


def _fmt(score: float | None) -> str:
    return "-" if score is None else f"{score:.3f}"


def _notes(phase: PhaseResult) -> str:
    d = phase.detail
    if phase.kind == "p":
        changed = d.get("changed") or []
        return f"{d.get('steps', 0)} steps, {d.get('accepted', 0)} accepted" + (
            f"; changed: {', '.join(changed)}" if changed else ""
        )
    ft = d.get("finetune") or {}
    loss = ""
    if ft.get("first_loss") is not None:
        loss = f", loss {ft['first_loss']:.3f} -> {ft['last_loss']:.3f}"
    return f"{d.get('examples', 0)} examples, {ft.get('steps', 0)} LoRA steps{loss}"


def find_student(model: Module) -> Student:
    """The one :class:`Student` inside ``model`` (error if there are none or several)."""
    found = [m for m in model.modules() if isinstance(m, Student)]
    if len(found) != 1:
        raise ConfigurationError(
            f"weight phases need exactly one feedprop.joint.Student in the model, found {len(found)}; "
            "assign one as an attribute (self.student = Student(...)) or pass student=..."
        )
    return found[0]


def _prompt_optimizer(spec: OptimizerSpec, model: Module) -> Optimizer:
    params = [p for p in model.parameters() if p.trainable]
    if not params:
        raise ConfigurationError("a prompt phase needs trainable parameters in the model; it has none")
    if spec is None:
        return OptoPrime(params)
    if isinstance(spec, Optimizer):
        return spec
    if callable(spec):
        made = spec(params)
        if not isinstance(made, Optimizer):
            raise InvalidInputError(f"optimizer factory returned {type(made).__name__}, not a feedprop Optimizer")
        return made
    raise InvalidInputError(
        f"optimizer must be a feedprop Optimizer, a function params -> Optimizer, or None, got {type(spec).__name__}"
    )


class _JointRun:
    """The state of one :func:`alternate` call; its clock, usage, fingerprint, saved state and the
    scoring of the validation and test sets are the run bookkeeping it shares with the trainer."""

    def __init__(
        self,
        model: Module,
        phases: list[str],
        strategy: str,
        splits: Splits,
        guide: Callable[..., Any],
        *,
        optimizer: OptimizerSpec,
        student: Student | None,
        prompt: dict[str, Any],
        weights: WeightOptions,
        budget: Budget,
        directory: Path | None,
        seed: int,
        progress: bool,
        max_workers: int | None,
        test_workers: int | None = 1,
        tracker: Tracker | None = None,
    ) -> None:
        self.tracker = tracker or Tracker()
        self.model = model
        self.phases_todo = phases
        self.strategy = strategy
        self.train_items = splits.train
        self.guide = guide
        self.optimizer = optimizer
        self.student = student
        self.prompt = prompt
        self.weights = weights
        self.dir = directory
        self.store = None if directory is None else StateFile(directory, _STATE_FILE, _FORMAT)
        self.seed = seed
        self.progress = progress
        self.max_workers = max_workers
        options = {
            "strategy": phases,
            # A teacher model is recorded by its name (the fingerprint is JSON).
            "prompt": {k: getattr(v, "model", v) if k == "teacher" else v for k, v in prompt.items()},
            "weights": weights.to_dict(),
            "budget": budget.to_dict(),
            "seed": seed,
        }
        # Scoring between phases is counted but never refused: a phase's scores are always complete.
        self.book = RunBook(
            model,
            guide,
            splits,
            budget,
            options=options,
            max_workers=max_workers,
            test_workers=test_workers,
            progress=progress,
            enforce_budget=False,
        )
        self.meter = self.book.meter
        self.results: list[PhaseResult] = []
        self.val_before: float | None = None
        self.test_before: float | None = None
        self.best: dict[str, Any] = {}
        self.phase_budgets: dict[str, dict[str, Any]] = {}
        self.stop_reason = ""

    # -- saved state ---------------------------------------------------------------------------

    def save(self) -> None:
        state = {
            "results": [r.to_dict() for r in self.results],
            "val_before": self.val_before,
            "test_before": self.test_before,
            "best": self.best,
            "phase_budgets": self.phase_budgets,
            "stop_reason": self.stop_reason,
        }
        self.book.save(self.store, state)

    def restore(self, state: dict[str, Any]) -> None:
        """Take up a saved run (what :meth:`save` wrote)."""
        self.results = [PhaseResult.from_dict(r) for r in state["results"]]
        self.val_before, self.test_before = state["val_before"], state["test_before"]
        self.best = state["best"]
        self.phase_budgets = state.get("phase_budgets", {})
        self.stop_reason = str(state.get("stop_reason", ""))

    # -- the run -------------------------------------------------------------------------------

    def run(self, resume: bool) -> JointResult:
        if self.book.resume(self.store, resume, "a joint run", self.restore):
            logger.info("resuming joint run in %s after %d phase(s)", self.dir, len(self.results))
            self.tracker.on_resume(run_dir=self.dir)
        else:
            self.tracker.on_start(self.book.fingerprint, self.model.state_dict(), run_dir=self.dir)
            self.test_before = self.test_score()
            self.val_before = self.book.score("val")
            self.best = {"phase": 0, "state": self.model.state_dict(), "val": self.val_before}
            self.save()
        for index in range(len(self.results) + 1, len(self.phases_todo) + 1):
            if self.stop_reason:
                break
            reason = self.meter.exhausted()
            if reason:
                self.stop_reason = reason
                break
            self.model.load_state_dict(copy.deepcopy(self.best["state"]))
            kind = self.phases_todo[index - 1]
            result = self.prompt_phase(index) if kind == "p" else self.weight_phase(index)
            self.finish_phase(result)
        if not self.stop_reason:
            self.stop_reason = f"completed strategy {self.strategy!r}"
        self.model.load_state_dict(copy.deepcopy(self.best["state"]))
        self.save()
        return JointResult(
            strategy=self.strategy,
            phases=self.results,
            val_before=self.val_before,
            test_before=self.test_before,
            best_phase=int(self.best["phase"]),
            best_state=copy.deepcopy(self.best["state"]),
            seconds=self.meter.elapsed(),
            stop_reason=self.stop_reason,
            usage=self.meter.usage.to_dict(),
            checkpoint_path=self.dir,
        )

    def test_score(self) -> float | None:
        """The test score of the model as it is; for the run page, its graph and per-item outcomes
        (tagged 0 for the start, ``i`` after phase ``i``) go into the run directory."""
        outcomes = self.book.outcomes("test")
        if outcomes is None:
            return None
        if self.dir is not None:
            record_graph(self.dir, outcomes)
            log_outcomes(self.dir, "test", outcomes, joint_phase=len(self.results) + 1 if self.best else 0)
        return mean([o.score for o in outcomes])

    def finish_phase(self, result: PhaseResult) -> None:
        if not result.skipped:
            result.test = self.test_score()
            best_val = self.best.get("val")
            improves = result.val is not None and (best_val is None or result.val > best_val)
            ties = result.val is not None and best_val is not None and result.val == best_val
            # A prompt phase's tie was already settled by the trainer; a weight phase must earn its keep.
            if improves or (ties and result.kind == "p"):
                result.kept = True
                self.best = {"phase": result.index, "state": self.model.state_dict(), "val": result.val}
        self.results.append(result)
        self.save()
        self.tracker.on_event({"event": "phase", "step": result.index, **result.to_dict()})
        if self.progress:
            tqdm.write(
                f"joint phase {result.label} ({PHASE_NAMES[result.kind]}): val {_fmt(result.val)}, "
                f"test {_fmt(result.test)}, {'kept' if result.kept else 'not kept'}"
                f"{'; skipped: ' + result.skipped if result.skipped else ''}"
            )

    def phase_dir(self, index: int, kind: str) -> Path | None:
        return None if self.dir is None else self.dir / f"phase-{index}-{kind}"

    def prompt_phase(self, index: int) -> PhaseResult:
        key = str(index)
        if key not in self.phase_budgets:  # fixed once, so a resumed phase matches its checkpoint
            self.phase_budgets[key] = self.meter.remaining().to_dict()
            self.save()
        spec = self.phase_budgets[key]
        budget = Budget(calls=spec["calls"], tokens=spec["tokens"], seconds=spec["seconds"], scope=spec["scope"])
        optimizer = _prompt_optimizer(self.optimizer, self.model)
        directory = self.phase_dir(index, "p")
        options = {"max_steps": 4, "batch_size": 4, "max_workers": self.max_workers, **self.prompt}
        result = train(
            self.model,
            self.train_items,
            self.guide,
            optimizer,
            val_set=self.book.splits.val,
            budget=budget,
            checkpoint=directory,
            resume=directory is not None,
            seed=self.seed + index,
            progress=self.progress,
            plot=False,
            **options,
        )
        self.meter.usage.merge(RunUsage.from_dict(result.usage), ("optimizer", "evaluation"))
        total = result.usage.get("total", {})
        return PhaseResult(
            index=index,
            kind="p",
            val=result.val_after,
            calls=int(total.get("calls", 0)),
            cache_hits=int(total.get("cache_hits", 0)),
            prompt_tokens=int(total.get("prompt_tokens", 0)),
            completion_tokens=int(total.get("completion_tokens", 0)),
            seconds=round(result.elapsed_seconds, 3),
            detail={
                "steps": result.steps,
                "accepted": result.accepted,
                "stop_reason": result.stop_reason,
                "changed": [n for n in result.best_state if result.best_state[n] != result.initial_state.get(n)],
                "screening": {
                    key: sum(int((h.get("screening") or {}).get(key, 0)) for h in result.history)
                    for key in ("calls", "saved")
                },
            },
        )

    def weight_phase(self, index: int) -> PhaseResult:
        span = Span(self.meter)
        student = self.student if self.student is not None else find_student(self.model)
        opts = self.weights
        directory = self.phase_dir(index, "w")
        result = PhaseResult(index=index, kind="w")
        try:
            examples, harvest = self.harvest(student, directory)
            result.detail.update(harvest)
            result.detail["examples"] = len(examples)
            if len(examples) < opts.min_examples:
                result.skipped = (
                    f"{len(examples)} example(s) from successful runs, fewer than min_examples={opts.min_examples}"
                )
                return result
            base = load_base(student.base)
            init = student.adapter_weights() if opts.warm_start else None
            tuned = finetune_lora(
                base,
                examples,
                opts.finetune,
                init=init,
                checkpoint=None if directory is None else directory / "finetune",
                resume=directory is not None,
                deadline=self.meter.deadline(),
                progress=self.progress,
            )
            result.detail["finetune"] = tuned.summary()
            if tuned.steps == 0:
                result.skipped = tuned.stop_reason
                return result
            adapters = self.dir / "adapters" if self.dir is not None else None
            path = student.save_adapter(tuned.adapter, adapters)
            if opts.scale != 1.0:
                student.load_adapter(path, scale=opts.scale)
            result.detail["adapter"] = str(path)
            result.val = self.book.score("val")
        except BudgetExhausted as exc:
            result.skipped = f"budget: {exc}"
            self.stop_reason = self.meter.stop_reason(exc)
        finally:
            spent = span.usage("calls", "cache_hits", "prompt_tokens", "completion_tokens")
            result.calls, result.cache_hits = spent["calls"], spent["cache_hits"]
            result.prompt_tokens, result.completion_tokens = spent["prompt_tokens"], spent["completion_tokens"]
            result.seconds = span.seconds()
        return result

    def harvest(self, student: Student, directory: Path | None) -> tuple[list[SFTExample], dict[str, Any]]:
        """The phase's training examples: collected now, or read back when resuming the phase."""
        saved = None if directory is None else directory / "examples.json"
        if saved is not None and saved.is_file():
            data = json.loads(saved.read_text(encoding="utf-8"))
            return [SFTExample.from_dict(e) for e in data["examples"]], data["harvest"]
        opts = self.weights
        bar = None
        if self.progress:
            bar = tqdm(total=len(self.train_items) * opts.samples, desc="collecting examples", unit="run", leave=False)
        with self.meter.phase("evaluation"):
            try:
                found = collect_examples(
                    self.model,
                    self.train_items,
                    self.guide,
                    student,
                    min_score=opts.min_score,
                    teacher=opts.teacher,
                    samples=opts.samples,
                    temperature=opts.temperature,
                    max_workers=self.max_workers,
                    on_done=(lambda _outcome: bar.update(1)) if bar is not None else None,
                )
            finally:
                if bar is not None:
                    bar.close()
        summary = found.summary()
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(saved, {"examples": [e.to_dict() for e in found.examples], "harvest": summary})
        return found.examples, summary


def alternate(
    model: Module,
    train_set: Iterable[Any],
    guide: Callable[..., Any],
    strategy: str = "p -> w -> p",
    *,
    val_set: Iterable[Any],
    test_set: Iterable[Any] | None = None,
    optimizer: OptimizerSpec = None,
    student: Student | None = None,
    prompt: Mapping[str, Any] | None = None,
    weights: WeightOptions | None = None,
    budget: Budget | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
    max_workers: int | None = None,
    test_workers: int | None = 1,
    tracker: str | Tracker | None = None,
) -> JointResult:
    """Optimize ``model``'s prompts and its student's weights in the order ``strategy`` names.

    Args:
        model: a :class:`~feedprop.Module` whose workflow calls a :class:`Student` (needed only
            for ``w`` phases; found inside the model unless ``student`` is given). Its ``forward``
            may be ``async def`` (see :mod:`feedprop.training.event_loop`).
        train_set, val_set, test_set: ``(input, target)`` pairs. Validation scores every phase
            and decides what is kept; the test set is only measured.
        guide: ``guide(output, target)`` -> ``Feedback``/number/bool, as for :func:`feedprop.train`.
        strategy: phases joined by ``->``: ``p`` prompts, ``w`` weights (e.g. ``"p -> w -> p"``).
        optimizer: the prompt optimizer: an :class:`~feedprop.optim.Optimizer`, a function
            ``params -> Optimizer`` (called afresh for each prompt phase), or ``None`` for
            :class:`~feedprop.optim.OptoPrime` on the default model.
        prompt: options for prompt phases, passed to :func:`feedprop.train` (``max_steps``
            default 4, ``batch_size`` default 4, ``epochs``, ``search``, ``beam_width``,
            ``merge_every``, ``follow_ups``, ``prefer_shorter``, ``max_workers``, ``teacher``: a model that answers the
            failed training items in the student's place, see :func:`feedprop.train`).
        weights: :class:`WeightOptions` for weight phases.
        budget: :class:`~feedprop.Budget` for the whole run (see the module docs).
        checkpoint, resume: a directory for the run's files, and whether to continue it.
        seed: seeds every phase. progress: show progress bars and a line per phase.
        max_workers: parallel evaluation threads.
        test_workers: parallel threads scoring the test set; the default, one request at a time,
            makes the scores repeat exactly (llama.cpp's parallel slots are not batch-invariant).
            ``None`` uses ``max_workers``.
        tracker: an experiment tracker (``"mlflow"`` or a :class:`~feedprop.tracking.Tracker`): each
            phase's validation and test scores, usage and time, and the final parameters and table.

    Returns:
        :class:`JointResult`; the model holds the best program found.

    Example:
        >>> from feedprop.llm import MockLLM
        >>> from feedprop.module import Module
        >>> from feedprop.node import Parameter
        >>> from feedprop.optim import OptoPrime
        >>> class M(Module):
        ...     def __init__(self):
        ...         self.word = Parameter("no", name="word")
        ...     def forward(self, x):
        ...         return x + self.word
        >>> m = M()
        >>> make = lambda params: OptoPrime(params, llm=MockLLM('{"reasoning": "", "suggestion": {"word": "yes"}}'))
        >>> r = alternate(m, [("", "yes")], lambda out, t: out == t, "p", val_set=[("", "yes")],
        ...               optimizer=make, progress=False)
        >>> r.val_before, r.val_after, m.word.data
        (0.0, 1.0, 'yes')
    """
    if not isinstance(model, Module):
        raise InvalidInputError(f"model must be a feedprop.Module, got {type(model).__name__}")
    if not callable(guide):
        raise InvalidInputError(f"guide must be callable (output, target) -> Feedback, got {type(guide).__name__}")
    phases = parse_strategy(strategy)
    if student is not None and not isinstance(student, Student):
        raise InvalidInputError(f"student must be a feedprop.joint.Student, got {type(student).__name__}")
    if "w" in phases and student is None:
        student = find_student(model)
    if student is not None and not any(m is student for m in model.modules()):
        raise ConfigurationError(
            "the student must be part of the model (an attribute such as self.student = Student(...)), so that its "
            "adapter is saved, checkpointed and restored with the rest of the model's state"
        )
    splits = Splits.read(train_set, val_set, test_set, val=True)
    options = dict(prompt or {})
    unknown = [k for k in options if k not in _PROMPT_OPTIONS]
    if unknown:
        raise ConfigurationError(f"prompt options {unknown} are not allowed; use any of {list(_PROMPT_OPTIONS)}")
    if weights is not None and not isinstance(weights, WeightOptions):
        raise InvalidInputError(f"weights must be a WeightOptions, got {type(weights).__name__}")
    if budget is not None and not isinstance(budget, Budget):
        raise InvalidInputError(f"budget must be a fp.Budget(...), got {budget!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidInputError(f"seed must be an int, got {seed!r}")
    if test_workers is not None and (isinstance(test_workers, bool) or not isinstance(test_workers, int)):
        raise InvalidInputError(f"test_workers must be an int or None, got {test_workers!r}")
    if test_workers is not None and test_workers < 1:
        raise ConfigurationError(f"test_workers must be >= 1 (1 scores one request at a time), got {test_workers}")
    if resume and checkpoint is None:
        raise ConfigurationError("resume=True needs checkpoint=<directory of the run to resume>")
    directory = None
    if checkpoint is not None:
        directory = Path(checkpoint)
        if directory.exists() and not directory.is_dir():
            raise CheckpointError(f"checkpoint={str(directory)!r} is a file; give a directory for the run's files")
        directory.mkdir(parents=True, exist_ok=True)
    run = _JointRun(
        model,
        phases,
        strategy,
        splits,
        guide,
        optimizer=optimizer,
        student=student,
        prompt=options,
        weights=weights if weights is not None else WeightOptions(),
        budget=budget if budget is not None else Budget(),
        directory=directory,
        seed=seed,
        progress=progress,
        max_workers=max_workers,
        test_workers=test_workers,
        tracker=resolve_tracker(tracker),
    )
    with track(run.tracker, directory) as tracked:
        return tracked.finish(run.run(resume))
