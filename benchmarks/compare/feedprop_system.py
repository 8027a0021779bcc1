"""The feedprop systems: OptoPrime and Hindsight training a one-call workflow with ``feedprop.train``.

The workflow is the one every system trains: a system prompt (the trainable parameter, starting
from the task's starting prompt) and the question as the user message, answered by the student
model at temperature 0. The student and the optimizer are ``OpenAICompatible`` clients of the
counting proxy's two ports (the real-run code path; the smoke run only swaps the server behind
the proxy). ``feedprop.train`` runs shuffled minibatches with validation gating and stops on its
own :class:`~feedprop.Budget` of optimizer calls and tokens.

Example:
    >>> SYSTEM_OPTIMIZERS["feedprop-optoprime"].__name__
    'OptoPrime'
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

from common import RunData, evaluate_items
from protocol import PROMPT_DESCRIPTION, RunSpec, truncate

import feedprop as fp
from feedprop.optim import Hindsight, Optimizer, OptoPrime

__all__ = ["SYSTEM_OPTIMIZERS", "Solver", "run_feedprop"]

SYSTEM_OPTIMIZERS: dict[str, type[Optimizer]] = {
    "feedprop-optoprime": OptoPrime,
    "feedprop-hindsight": Hindsight,
}


class Solver(fp.Module):
    """Ask the student model: the trainable system prompt, then the question."""

    def __init__(self, start_prompt: str, llm: fp.LLM, max_tokens: int) -> None:
        self.instruction = fp.Parameter(start_prompt, name="instruction", description=PROMPT_DESCRIPTION)
        self.llm = llm
        self.max_tokens = max_tokens

    def forward(self, question: Any) -> fp.Node[str]:
        return fp.ops.llm_call(self.instruction, question, llm=self.llm, temperature=0.0, max_tokens=self.max_tokens)


def _answer(solver: Solver) -> Callable[[Any], str]:
    def answer(question: Any) -> str:
        with fp.no_trace():
            out = solver(question)
        return str(out.data if isinstance(out, fp.Node) else out)

    return answer


def _history(result: fp.TrainResult) -> list[dict[str, Any]]:
    steps = []
    for h in result.history:
        steps.append(
            {
                "step": h.get("step"),
                "train_score": h.get("train_score"),
                "val_score": h.get("val_score"),
                "accepted": h.get("accepted"),
                "reason": h.get("reason"),
                "proposals": [
                    {
                        "updates": {k: truncate(v, 1500) for k, v in (c.get("updates") or {}).items()},
                        "val_score": c.get("val_score"),
                        "error": c.get("error"),
                    }
                    for c in h.get("candidates", [])
                ],
                "rejected_suggestions": [  # what the optimizer refused and asked again for, and why
                    {
                        "parameter": r.get("parameter"),
                        "value": truncate(r.get("value"), 300),
                        "reason": truncate(r.get("reason"), 300),
                    }
                    for r in h.get("rejected_suggestions") or []
                ],
                "usage": h.get("usage"),
                "seconds": h.get("seconds"),
            }
        )
    return steps


def run_feedprop(
    spec: RunSpec, data: RunData, urls: dict[str, str], model: str, usage: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Run one feedprop system; returns the runner part of the result file (see ``run.py``)."""
    preset = spec.preset
    # A loaded machine can take many minutes per call: a client timeout would only make it ask again.
    timeout = preset.max_run_seconds
    student = fp.OpenAICompatible(
        urls["student"], model=model, api_key="none", timeout=timeout, cache=False, max_concurrency=4
    )
    optimizer_llm = fp.OpenAICompatible(
        urls["optimizer"], model=model, api_key="none", timeout=timeout, cache=False, max_concurrency=1
    )
    solver = Solver(spec.start_prompt, student, preset.student_max_tokens)
    answer = _answer(solver)
    marks: dict[str, Any] = {"start": usage()}
    started = time.monotonic()

    solver.eval()
    before = evaluate_items(answer, data.test, data.guide, indices=data.indices["test"])
    marks["after_test_before"] = usage()
    train_started = time.monotonic()

    optimizer = SYSTEM_OPTIMIZERS[spec.system](solver.parameters(), llm=optimizer_llm)
    budget = fp.Budget(
        calls=preset.optimizer_calls, tokens=preset.optimizer_tokens, seconds=preset.max_run_seconds, scope="optimizer"
    )
    result = fp.train(
        solver,
        data.train,
        data.guide,
        optimizer,
        val_set=data.val,
        epochs=preset.epochs,
        batch_size=preset.batch_size,
        budget=budget,
        seed=spec.seed,
        max_workers=4,
        progress=False,
        plot=False,
    )
    train_seconds = time.monotonic() - train_started
    marks["after_train"] = usage()

    solver.eval()
    after = evaluate_items(answer, data.test, data.guide, indices=data.indices["test"])
    marks["end"] = usage()
    student.close()
    optimizer_llm.close()
    return {
        "test_before": before,
        "test_after": after,
        "val_before": result.val_before,
        "val_after": result.val_after,
        "final_prompt": solver.instruction.data,
        "stop_reason": result.stop_reason,
        "steps": _history(result),
        "accepted_steps": result.accepted,
        "train_seconds": round(train_seconds, 3),
        "run_seconds": round(time.monotonic() - started, 3),
        "marks": marks,
        "self_reported_usage": result.usage,
        "config": {
            "optimizer": spec.system.removeprefix("feedprop-"),
            "optimizer_options": {k: v for k, v in optimizer.defaults.items() if isinstance(v, int | float | str)},
            "loop": "feedprop.train: shuffled minibatches, validation-gated (ties keep the shorter prompt)",
            "budget": budget.to_dict(),
            "student": {"temperature": 0.0, "max_tokens": preset.student_max_tokens},
        },
        "versions": {"feedprop": metadata.version("feedprop")},
    }
