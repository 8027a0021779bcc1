"""Training data for the weights, from the workflow's own successful traces.

Running the workflow records a graph; the LLM calls of the student are nodes in it, each holding
the messages sent and the reply received (:func:`feedprop.ops.llm_calls` finds them; the
:class:`~feedprop.optim.BootstrapDemos` optimizer reads the same records to fill demonstrations).
:func:`collect_examples` runs the workflow over a dataset, scores each output with the guide,
and keeps the student's calls from the runs whose final output scored at least ``min_score``:
those replies led to a good answer, so they are worth learning (the idea of bootstrapped
fine-tuning). A ``teacher`` may answer in the
student's place while collecting (distillation), and ``samples > 1`` with a temperature draws
several rollouts per example (rejection sampling); duplicates are dropped.

Example:
    >>> from feedprop import ops
    >>> from feedprop.llm import MockLLM
    >>> from feedprop.node import Node
    >>> out = ops.strip(ops.llm_call("Be brief.", "2+2?", llm=MockLLM(" 4 ")))
    >>> [(n.info["response"], n.info["messages"][0]["content"]) for n in llm_calls(out)]
    [(' 4 ', 'Be brief.')]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.joint.sft import SFTExample
from feedprop.joint.student import Rollout, Student
from feedprop.llm.base import LLM
from feedprop.module import Module
from feedprop.node import Node
from feedprop.ops import llm_calls
from feedprop.training.data import Item, as_items
from feedprop.training.evaluation import Outcome, run_items

__all__ = ["Harvest", "collect_examples", "llm_calls"]


@dataclass
class Harvest:
    """What :func:`collect_examples` found: the ``examples``, the per-item ``scores`` of every
    rollout, how many runs succeeded, and the LLM calls skipped for not being the student's."""

    examples: list[SFTExample]
    scores: list[list[float]] = field(default_factory=list)
    runs: int = 0
    successes: int = 0
    other_calls: int = 0

    @property
    def success_rate(self) -> float:
        return self.successes / self.runs if self.runs else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "examples": len(self.examples),
            "runs": self.runs,
            "successes": self.successes,
            "success_rate": round(self.success_rate, 4),
            "other_calls": self.other_calls,
        }


def collect_examples(
    model: Module | Callable[[Any], Any],
    dataset: Iterable[Any],
    guide: Callable[..., Any],
    student: Student,
    *,
    min_score: float = 1.0,
    teacher: LLM | None = None,
    samples: int = 1,
    temperature: float | None = None,
    max_workers: int | None = None,
    on_done: Callable[[Outcome], None] | None = None,
) -> Harvest:
    """Run ``model`` on ``dataset`` and turn the student's calls in well-scored runs into examples.

    Args:
        model: the workflow (called as ``model(input)``; it must call ``student`` to be harvested).
        dataset: ``(input, target)`` pairs, as for :func:`feedprop.train`.
        guide: scores an output against its target.
        student: the :class:`Student` whose calls are collected.
        min_score: a run counts as successful when its score is at least this.
        teacher: answers in the student's place while collecting (the examples are its replies).
        samples: rollouts per example; with ``temperature`` each is sampled afresh.
        temperature: overrides the workflow's temperature while collecting.
        max_workers: parallel runs (as for evaluation).
        on_done: called with each run's outcome as it finishes (e.g. to advance a progress bar).
    """
    if not isinstance(student, Student):
        raise InvalidInputError(f"student must be a feedprop.joint.Student, got {type(student).__name__}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigurationError(f"samples must be an int >= 1, got {samples!r}")
    if samples > 1 and temperature is None:
        raise ConfigurationError("samples > 1 needs a temperature > 0, or every rollout repeats the first")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, int | float)):
        raise InvalidInputError(f"temperature must be a number, got {temperature!r}")
    items: list[Item] = as_items(dataset, "dataset")
    overrides = {"temperature": float(temperature)} if temperature is not None else None
    harvest = Harvest(examples=[])
    seen: set[SFTExample] = set()
    was_training = getattr(model, "training", None)
    if isinstance(model, Module):
        model.eval()
    try:
        for sample in range(samples):
            with student.rollout(Rollout(teacher=teacher, overrides=overrides, salt=sample)) as name:
                outcomes = run_items(model, items, guide, max_workers=max_workers, on_done=on_done)
            harvest.scores.append([o.score for o in outcomes])
            for outcome in outcomes:
                harvest.runs += 1
                if outcome.error is not None or not isinstance(outcome.output, Node) or outcome.score < min_score:
                    continue
                harvest.successes += 1
                for node in llm_calls(outcome.output):
                    info = node.info or {}
                    if info.get("model") != name:
                        harvest.other_calls += 1
                        continue
                    example = _example(info)
                    if example is not None and example not in seen:
                        seen.add(example)
                        harvest.examples.append(example)
    finally:
        if isinstance(model, Module) and isinstance(was_training, bool):
            model.train(was_training)
    return harvest


def _example(info: dict[str, Any]) -> SFTExample | None:
    messages: Sequence[Any] = info.get("messages") or []
    response = info.get("response")
    if not messages or not isinstance(response, str) or not response.strip():
        return None
    if info.get("tool_calls") or "tools" in (info.get("params") or {}):
        return None  # an SFT example holds role and text only: it would teach the turn without its tools
    return SFTExample.from_messages(messages, response)
