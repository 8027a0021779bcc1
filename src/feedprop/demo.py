"""The flagship demo: a two-stage BBH workflow trained end to end on the embedded model.

The workflow answers BIG-Bench Hard ``object_counting`` questions ("I have a flute, two pianos
and a cow. How many musical instruments do I have?") in two stages, both trainable:

1. an LLM call whose system prompt (``instruction``) is a text parameter;
2. ``extract_answer``, ordinary Python whose *source code* is a code parameter, turning the
   model's reply into the final answer that downstream code consumes (exactly the number).

The starting program is a plausible first draft: a bare instruction and an extractor that takes
the first number in the reply, which is wrong whenever the model works through the question
before answering (it usually does: "1. Trumpet 2. Clarinet ... so you have 11").

The guide is strict exact match, as a program consuming the answer would be. Training runs
:func:`feedprop.train` with :class:`~feedprop.optim.OptoPrime` on minibatches of the published
training split, sampling a few proposals per step and keeping one only if the validation
score does not drop; accuracy is measured on held-out test questions before and after. Run it
with ``make demo`` or ``feedprop demo``.

The optimizer is the embedded 1.5B model unless ``FEEDPROP_BASE_URL`` points elsewhere. It fixes
small, local defects; a larger model behind an OpenAI-compatible endpoint makes bolder edits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedprop import llm as llm_module
from feedprop import ops
from feedprop.bundle import bundle
from feedprop.module import Module
from feedprop.node import MessageNode, Node, Parameter
from feedprop.optim import OptoPrime
from feedprop.tasks import load_bbh
from feedprop.train import Budget, ExactMatch, TrainResult, train

__all__ = ["CountingSolver", "DemoConfig", "run_demo"]


class CountingSolver(Module):
    """Answer a counting question with one LLM call, then extract the final answer in Python."""

    def __init__(self) -> None:
        self.instruction = Parameter(
            "Answer the question.",
            name="instruction",
            description="system prompt of the model that answers the question",
        )

    @bundle(trainable=True, description="turns the model's reply into the final answer (just the number)")
    def extract_answer(self, response: str) -> str:
        import re

        numbers = re.findall(r"\d+", response)
        return numbers[0] if numbers else response.strip()

    def forward(self, question: Any) -> Node[Any]:
        response: MessageNode[str] = ops.llm_call(self.instruction, question, temperature=0.0, max_tokens=256)
        out: Node[Any] = self.extract_answer(response)
        return out


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo run: made to finish within 15 minutes on two CPU cores.

    ``minutes`` caps training (initial scoring included); the held-out test scoring after it is
    not capped. ``n_candidates`` proposals per step are sampled at ``temperature`` and the
    validation gate keeps the best one, which makes a small optimizer model far more useful
    than one greedy proposal.
    """

    task: str = "object_counting"
    n_train: int = 24
    n_val: int = 12
    n_test: int = 30
    batch_size: int = 4
    steps: int = 4
    n_candidates: int = 2
    temperature: float = 0.7
    minutes: float = 8.0
    run_dir: str = "runs"
    optimizer_tokens: int = 60_000


def _fresh_directory(parent: Path, stem: str) -> Path:
    """``parent/stem``, or ``parent/stem-2``, ``-3``... whichever does not exist yet."""
    candidate, n = parent / stem, 1
    while candidate.exists():
        n += 1
        candidate = parent / f"{stem}-{n}"
    return candidate


def _percent(score: float | None) -> str:
    return "n/a" if score is None else f"{100 * score:.1f}%"


def run_demo(config: DemoConfig | None = None, *, progress: bool = True) -> TrainResult:
    """Train :class:`CountingSolver` on BBH ``object_counting`` and print a readable result."""
    cfg = config or DemoConfig()
    task = load_bbh(cfg.task)
    train_set = list(task.train[: cfg.n_train])
    val_set = list(task.val[: cfg.n_val])
    test_set = list(task.test[: cfg.n_test])

    print(f"feedprop demo: BBH {cfg.task}, {len(train_set)} train / {len(val_set)} val / {len(test_set)} test")
    started = time.monotonic()
    model = llm_module.default()
    print(f"model: {model.model} (ready in {time.monotonic() - started:.0f} s)")

    solver = CountingSolver()
    optimizer = OptoPrime(
        solver.parameters(),
        n_candidates=cfg.n_candidates,
        temperature=cfg.temperature,
        candidate_temperature=cfg.temperature,
    )
    # A fresh directory per run: earlier runs (their reports and learned parameters) are never overwritten.
    run_dir = _fresh_directory(Path(cfg.run_dir), time.strftime("demo-%Y%m%d-%H%M%S"))
    result = train(
        solver,
        train_set,
        ExactMatch(),
        optimizer,
        val_set=val_set,
        test_set=test_set,
        batch_size=cfg.batch_size,
        max_steps=cfg.steps,
        budget=Budget(tokens=cfg.optimizer_tokens, seconds=60 * cfg.minutes, scope="optimizer"),
        checkpoint=run_dir,
        progress=progress,
    )
    _print_result(result, time.monotonic() - started)
    return result


def _print_result(result: TrainResult, seconds: float) -> None:
    usage = result.usage
    print()
    print("=" * 72)
    print(f"held-out test accuracy: {_percent(result.test_before)} before -> {_percent(result.test_after)} after")
    print(f"validation accuracy:    {_percent(result.val_before)} before -> {_percent(result.val_after)} after")
    print(f"steps: {result.steps}, accepted updates: {result.accepted}, stop: {result.stop_reason}")
    print(f"LLM usage: {_usage_line(usage)}")
    print(f"wall time: {seconds / 60:.1f} min")
    print("learned parameters:")
    for name, value in result.best_state.items():
        text = value if isinstance(value, str) else repr(value)
        print(f"--- {name}\n{text.rstrip()}")
    for label, path in (
        ("report", result.report_path),
        ("plot", result.plot_path),
        ("event log", result.log_path),
        ("parameters", result.parameters_path),
    ):
        if path is not None:
            print(f"{label}: {path}")
    print("=" * 72)


def _usage_line(usage: dict[str, Any]) -> str:
    total = usage.get("total", usage)
    if not isinstance(total, dict):
        return str(usage)
    return (
        f"{total.get('calls', 0)} calls, {total.get('prompt_tokens', 0):,} prompt + "
        f"{total.get('completion_tokens', 0):,} completion tokens"
    )
