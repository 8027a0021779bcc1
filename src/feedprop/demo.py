"""The flagship demo: a two-stage BBH workflow trained end to end — prompts, code and weights.

The workflow answers BIG-Bench Hard ``object_counting`` questions ("I have a flute, two pianos
and a cow. How many musical instruments do I have?") in two stages, all trainable:

1. an LLM call whose system prompt (``instruction``) is a text parameter and whose few-shot
   ``demos`` (a :class:`~feedprop.node.Demos` parameter) are shown before the question;
2. ``extract_answer``, ordinary Python whose *source code* is a code parameter, turning the
   model's reply into the final answer that downstream code consumes (exactly the number).

The starting program is a plausible first draft: a bare instruction, no demonstrations and an
extractor that takes the first number in the reply, which is wrong whenever the model works
through the question before answering ("1. Trumpet 2. Clarinet ... so you have 11"). The guide
is strict exact match, as a program consuming the answer would be.

The model that answers is the small embedded model (Qwen2.5-Coder-0.5B), a
:class:`~feedprop.joint.Student` whose LoRA weights are a parameter of the workflow too. Training
is :func:`feedprop.joint.alternate` with the strategy ``"p -> w"``:

- ``p``: :func:`feedprop.optim.recommended`, run by the larger embedded model (1.5B), proposes
  demonstration sets (from the training runs the guide scored well, and labelled training items)
  and plain rewrites of the instruction and the extractor; ``fp.train(search="pareto")`` screens
  each on the minibatch, replaying the recorded calls it does not change, and validates those that
  beat their parent;
- ``w``: the larger model answers the training questions in the student's place; the calls of
  the runs the *whole workflow* got right (extractor included) become fine-tuning data for a
  LoRA adapter, which is exported to GGUF and loaded into the student's engine. It is kept only
  if the validation score rises.

Accuracy is measured on held-out test questions before and after, one request at a time so the
scores repeat. Run it with ``make demo`` or ``feedprop demo``. Expected output: progress bars,
then a summary such as (measured on two CPU cores from a fresh clone, ``benchmarks/results/demo/``;
the prompt phase kept a new instruction and extractor, the weight phase did not raise validation;
the optimizer samples, so another run may find less)::

    held-out test accuracy: 20.0% before -> 50.0% after
    validation accuracy:    5.0% before -> 47.5% after
    ...
    wall time: 13.3 min

With ``FEEDPROP_BASE_URL`` set, the optimizer and teacher are that endpoint's model; the student
stays the embedded one (its weights are what the ``w`` phase trains).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedprop import llm as llm_module
from feedprop import ops
from feedprop.bundle import bundle
from feedprop.errors import ConfigurationError
from feedprop.joint import FinetuneConfig, JointResult, LoRAConfig, Student, WeightOptions, alternate, parse_strategy
from feedprop.joint.summary import plot_phases, render_joint_report
from feedprop.llm import LLM
from feedprop.module import Module
from feedprop.node import Demos, MessageNode, Node, Parameter
from feedprop.optim import recommended
from feedprop.run_page import write_run_page
from feedprop.tasks import load_bbh
from feedprop.training import Budget, ExactMatch
from feedprop.training.checkpoint import write_json_atomic

__all__ = ["CountingSolver", "DemoConfig", "DemoResult", "run_demo"]


class CountingSolver(Module):
    """Answer a counting question with one LLM call, then extract the final answer in Python.

    ``student`` answers (a :class:`~feedprop.joint.Student` makes its weights trainable too);
    ``None`` means the default model.

    Example:
        >>> sorted(CountingSolver().state_dict())
        ['demos', 'extract_answer', 'instruction']
    """

    def __init__(self, student: LLM | None = None, max_tokens: int = 200) -> None:
        self.instruction = Parameter(
            "Answer the question.",
            name="instruction",
            description="system prompt of the model that answers the question",
        )
        self.demos = Demos(
            name="demos", max_demos=4, description="worked examples shown to the model before the question"
        )
        self.student = student
        self.max_tokens = max_tokens

    @bundle(trainable=True, description="turns the model's reply into the final answer (just the number)")
    def extract_answer(self, response: str) -> str:
        import re

        numbers = re.findall(r"\d+", response)
        return numbers[0] if numbers else response.strip()

    def forward(self, question: Any) -> Node[Any]:
        response: MessageNode[str] = ops.llm_call(
            self.instruction,
            question,
            demos=self.demos,
            llm=self.student,
            temperature=0.0,
            seed=0,
            max_tokens=self.max_tokens,
        )
        out: Node[Any] = self.extract_answer(response)
        return out


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo run: made to finish within 15 minutes on two CPU cores.

    ``strategy`` orders the phases (``p`` prompts and code, ``w`` the student's weights);
    ``steps`` optimizer steps of ``batch_size`` questions per prompt phase; ``samples`` answers
    per training question in a weight phase, written by the optimizer's model when ``teacher``
    is true (else by the student), at ``temperature``. ``minutes`` caps the run (test scoring
    is outside it). ``student`` names the embedded model that answers; ``None`` uses the default
    model (then there are no weights to train, so only ``p`` phases can run).
    """

    task: str = "object_counting"
    n_train: int = 24
    n_val: int = 40
    n_test: int = 40
    strategy: str = "p -> w"
    batch_size: int = 4
    steps: int = 3
    n_candidates: int = 4
    search: str = "pareto"
    follow_ups: int = 2
    temperature: float = 0.7
    samples: int = 2
    teacher: bool = True
    lora_epochs: int = 3
    student: str | None = "qwen2.5-coder-0.5b"
    minutes: float = 13.0
    run_dir: str = "runs"
    optimizer_tokens: int = 60_000


@dataclass
class DemoResult:
    """What :func:`run_demo` returns: the joint run and the files it wrote."""

    run: JointResult
    report_path: Path
    plot_path: Path | None
    parameters_path: Path
    initial_state: dict[str, Any] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        """The run's own directory: report, plot, parameters, checkpoints and adapters."""
        return self.report_path.parent

    @property
    def test_before(self) -> float | None:
        return self.run.test_before

    @property
    def test_after(self) -> float | None:
        return self.run.test_after

    @property
    def best_state(self) -> dict[str, Any]:
        return self.run.best_state


def _fresh_directory(parent: Path, stem: str) -> Path:
    """``parent/stem``, or ``parent/stem-2``, ``-3``... whichever does not exist yet."""
    candidate, n = parent / stem, 1
    while candidate.exists():
        n += 1
        candidate = parent / f"{stem}-{n}"
    return candidate


def _percent(score: float | None) -> str:
    return "n/a" if score is None else f"{100 * score:.1f}%"


def run_demo(config: DemoConfig | None = None, *, progress: bool = True) -> DemoResult:
    """Train :class:`CountingSolver` on BBH ``object_counting`` and print a readable result."""
    cfg = config or DemoConfig()
    if "w" in parse_strategy(cfg.strategy) and cfg.student is None:
        raise ConfigurationError(
            f"strategy {cfg.strategy!r} trains weights, which needs a student model: set DemoConfig.student"
        )
    task = load_bbh(cfg.task)
    train_set = list(task.train[: cfg.n_train])
    val_set = list(task.val[: cfg.n_val])
    test_set = list(task.test[: cfg.n_test])

    print(f"feedprop demo: BBH {cfg.task}, {len(train_set)} train / {len(val_set)} val / {len(test_set)} test")
    print(
        f"strategy {cfg.strategy!r}: p = demonstrations, instruction and extractor (fp.optim.recommended, "
        f"{cfg.search} search), w = the student's LoRA weights"
    )
    started = time.monotonic()
    optimizer_llm = llm_module.default()
    # One decoding slot: a request is never batched with another, so every score repeats.
    student = Student(cfg.student, n_parallel=1, n_ctx=2048) if cfg.student is not None else None
    print(f"optimizer: {optimizer_llm.model}; student: {student.model if student else optimizer_llm.model}")
    solver = CountingSolver(student)
    initial = solver.state_dict()
    weights = WeightOptions(
        finetune=FinetuneConfig(epochs=cfg.lora_epochs, batch_size=4, lr=1e-3, lora=LoRAConfig(r=8, alpha=16)),
        samples=cfg.samples,
        temperature=cfg.temperature,
        teacher=optimizer_llm if cfg.teacher else None,
    )
    # A fresh directory per run: earlier runs (their reports and learned parameters) are never overwritten.
    run_dir = _fresh_directory(Path(cfg.run_dir), time.strftime("demo-%Y%m%d-%H%M%S"))
    try:
        run = alternate(
            solver,
            train_set,
            ExactMatch(),
            cfg.strategy,
            val_set=val_set,
            test_set=test_set,
            optimizer=lambda params: recommended(
                params, llm=optimizer_llm, n_candidates=cfg.n_candidates, candidate_temperature=cfg.temperature
            ),
            prompt={
                "max_steps": cfg.steps,
                "batch_size": cfg.batch_size,
                "search": cfg.search,
                "follow_ups": cfg.follow_ups,
            },
            weights=weights if student is not None else None,
            budget=Budget(tokens=cfg.optimizer_tokens, seconds=60 * cfg.minutes, scope="optimizer"),
            checkpoint=run_dir,
            progress=progress,
        )
    finally:
        if student is not None:
            student.close()
    result = _write_outputs(run, initial, run_dir, cfg)
    _print_result(result, time.monotonic() - started)
    print(f"run page: {write_run_page(run_dir)}  (open it in a browser, or: feedprop view {run_dir} --serve)")
    return result


def _write_outputs(run: JointResult, initial: dict[str, Any], run_dir: Path, cfg: DemoConfig) -> DemoResult:
    run_dir.mkdir(parents=True, exist_ok=True)
    report = run_dir / "report.md"
    title = f"feedprop demo: BBH {cfg.task}, strategy {cfg.strategy!r}"
    report.write_text(render_joint_report(run, initial, title=title), encoding="utf-8")
    parameters = run_dir / "parameters.json"
    write_json_atomic(parameters, run.best_state)
    plot = plot_phases(run, run_dir / "curve.png")
    return DemoResult(run, report, plot, parameters, initial)


def _print_result(result: DemoResult, seconds: float) -> None:
    run = result.run
    print()
    print("=" * 72)
    print(f"held-out test accuracy: {_percent(run.test_before)} before -> {_percent(run.test_after)} after")
    print(f"validation accuracy:    {_percent(run.val_before)} before -> {_percent(run.val_after)} after")
    print(f"kept: {'the start' if run.best_phase == 0 else f'phase {run.best_phase}'}; stop: {run.stop_reason}")
    print(run.table())
    for phase in run.phases:
        screening = phase.detail.get("screening") or {}
        if phase.kind == "p" and screening:
            print(
                f"phase {phase.label}: screening candidates on the minibatch answered {screening.get('saved', 0)} "
                f"calls from the recorded runs and made {screening.get('calls', 0)}"
            )
    print(f"LLM usage: {_usage_line(run.usage)}")
    print(f"wall time: {seconds / 60:.1f} min")
    print("learned parameters:")
    for name, value in run.best_state.items():
        if name in result.initial_state and result.initial_state[name] == value:
            print(f"--- {name} (as it started)")
            continue
        text = value if isinstance(value, str) else json.dumps(value, indent=1, ensure_ascii=False)
        print(f"--- {name} (learned)\n{text.rstrip()}")
    print(f"report: {result.report_path}")
    if result.plot_path is not None:
        print(f"plot: {result.plot_path}")
    print(f"parameters: {result.parameters_path}")
    print("=" * 72)


def _usage_line(usage: dict[str, Any]) -> str:
    total = usage.get("total", usage)
    if not isinstance(total, dict):
        return str(usage)
    return (
        f"{total.get('calls', 0)} calls, {total.get('prompt_tokens', 0):,} prompt + "
        f"{total.get('completion_tokens', 0):,} completion tokens"
    )
