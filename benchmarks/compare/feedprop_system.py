"""The feedprop systems training the one-call workflow with ``fp.train``.

- ``feedprop-recommended``: the default, ``fp.optim.recommended(params)`` (demonstrations,
  rewrites) with ``fp.train(..., search="pareto", follow_ups=2)``, the README's example (the
  follow-ups act on trainable code, which this one-call workflow has none of); the workflow also has an (empty at start)
  ``fp.Demos`` parameter, rendered between the system prompt and the question, so its starting
  requests are the same bytes as every other system's;
- ``feedprop-hindsight`` and ``feedprop-optoprime``: one optimizer, greedy validation gating.

The workflow is the one every system trains: a system prompt (the trainable parameter, starting
from the task's starting prompt) and the question as the user message, answered by the student
model at temperature 0. The student and the optimizer are ``OpenAICompatible`` clients of the
counting proxy's two ports (the real-run code path; the smoke run only swaps the server behind
the proxy). ``fp.train`` runs shuffled minibatches with validation gating and stops on its
own :class:`~feedprop.Budget`: the run's training tokens, student and optimizer (feedprop
counts them from the server's usage figures, as the proxy does).

Example:
    >>> SYSTEM_OPTIMIZERS["feedprop-optoprime"].__name__
    'OptoPrime'
    >>> unavailable("feedprop-optoprime") is None
    True
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

from common import RunData, score_test_set, train_tokens, truncate
from protocol import PROMPT_DESCRIPTION, RunSpec

import feedprop as fp
from feedprop.optim import Hindsight, Optimizer, OptoPrime

__all__ = ["SYSTEM_OPTIMIZERS", "Solver", "run_feedprop", "unavailable"]

SYSTEM_OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "feedprop-optoprime": OptoPrime,
    "feedprop-hindsight": Hindsight,
    "feedprop-recommended": lambda params, llm: fp.optim.recommended(params, llm),
}
#: fp.train options per system (beyond the shared ones).
TRAIN_OPTIONS: dict[str, dict[str, Any]] = {"feedprop-recommended": {"search": "pareto", "follow_ups": 2}}
#: Systems whose workflow has a demonstrations parameter.
WITH_DEMOS = {"feedprop-recommended"}


def unavailable(system: str) -> str | None:
    """Why ``system`` cannot run with this checkout's feedprop, or ``None`` when it can."""
    if system == "feedprop-recommended":
        if not hasattr(fp.optim, "recommended"):
            return "fp.optim.recommended is not in this feedprop; run it once it has landed"
        if "search" not in inspect.signature(fp.train).parameters:
            return "fp.train does not accept search= yet (search='pareto' lands on main soon); run it once it has"
    return None


class Solver(fp.Module):
    """Ask the student model: the trainable system prompt, (the demonstrations,) then the question."""

    def __init__(self, start_prompt: str, llm: fp.LLM, max_tokens: int, *, demos: bool = False) -> None:
        self.instruction = fp.Parameter(start_prompt, name="instruction", description=PROMPT_DESCRIPTION)
        self.demos = fp.Demos(name="demos", description="worked examples shown before the question") if demos else None
        self.llm = llm
        self.max_tokens = max_tokens

    def forward(self, question: Any) -> fp.Node[str]:
        return fp.ops.llm_call(
            self.instruction,
            question,
            demos=self.demos,
            llm=self.llm,
            temperature=0.0,
            max_tokens=self.max_tokens,
        )


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


def curve_of(result: fp.TrainResult, spent: int) -> list[dict[str, Any]]:
    """Validation score against cumulative training tokens after every step, from the run's history.

    ``spent`` is the run's training tokens in all; the tokens before step 1 (scoring the start on
    the validation set) are what the steps' own usage does not account for.

    Example:
        >>> from types import SimpleNamespace
        >>> used = {"prompt_tokens": 60, "completion_tokens": 40}
        >>> history = [{"step": 1, "val_score": 0.5, "accepted": True, "usage": used}]
        >>> points = curve_of(SimpleNamespace(history=history, val_before=0.25), 300)
        >>> [(p["step"], p["tokens"], p["val_score"]) for p in points]
        [(0, 200, 0.25), (1, 300, 0.5)]
    """
    per_step = [
        int((h.get("usage") or {}).get("prompt_tokens", 0)) + int((h.get("usage") or {}).get("completion_tokens", 0))
        for h in result.history
    ]
    tokens = spent - sum(per_step)
    points = [{"step": 0, "tokens": tokens, "val_score": result.val_before, "accepted": True}]
    for h, used in zip(result.history, per_step, strict=True):
        tokens += used
        points.append(
            {
                "step": h.get("step"),
                "tokens": tokens,
                "val_score": h.get("val_score"),
                "accepted": bool(h.get("accepted")),
            }
        )
    return points


def run_feedprop(
    spec: RunSpec,
    data: RunData,
    urls: dict[str, str],
    models: dict[str, str],
    usage: Callable[[], dict[str, Any]],
    set_phase: Callable[[str], None],
) -> dict[str, Any]:
    """Run one feedprop system; returns the runner part of the result file (see ``run.py``).

    The test pass runs only if training changed the program; otherwise ``test_after`` is
    ``None`` and ``unchanged`` true (the harness reuses the shared baseline: scoring repeats).
    """
    preset = spec.preset
    why = unavailable(spec.system)
    if why:
        raise RuntimeError(why)
    # A loaded machine can take many minutes per call: a client timeout would only make it ask again.
    timeout = preset.max_run_seconds
    student = fp.OpenAICompatible(
        urls["student"], model=models["student"], api_key="none", timeout=timeout, cache=False, max_concurrency=4
    )
    optimizer_llm = fp.OpenAICompatible(
        urls["optimizer"], model=models["optimizer"], api_key="none", timeout=timeout, cache=False, max_concurrency=1
    )
    solver = Solver(spec.start_prompt, student, preset.student_max_tokens, demos=spec.system in WITH_DEMOS)
    start_state = json.dumps(solver.state_dict(), sort_keys=True)
    started = time.monotonic()
    train_started = time.monotonic()

    optimizer = SYSTEM_OPTIMIZERS[spec.system](solver.parameters(), optimizer_llm)
    budget = fp.Budget(tokens=preset.train_tokens, seconds=preset.max_run_seconds)
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
        **TRAIN_OPTIONS.get(spec.system, {}),
    )
    train_seconds = time.monotonic() - train_started
    spent = train_tokens(usage())

    solver.eval()
    unchanged = json.dumps(solver.state_dict(), sort_keys=True) == start_state
    set_phase("test")
    after = None if unchanged else score_test_set(_answer(solver), data, preset, None)
    student.close()
    optimizer_llm.close()
    demos = solver.demos.data if solver.demos is not None else None
    return {
        "test_after": after,
        "unchanged": unchanged,
        "curve": curve_of(result, spent),
        "val_before": result.val_before,
        "val_after": result.val_after,
        "final_prompt": solver.instruction.data,
        "final_state": {"demos": len(demos or []), "demo_inputs": [truncate(d.get("input"), 200) for d in demos or []]},
        "stop_reason": result.stop_reason,
        "steps": _history(result),
        "accepted_steps": result.accepted,
        "train_seconds": round(train_seconds, 3),
        "run_seconds": round(time.monotonic() - started, 3),
        "self_reported_usage": result.usage,
        "config": {
            "optimizer": spec.system.removeprefix("feedprop-"),
            "optimizer_options": {
                k: v for k, v in getattr(optimizer, "defaults", {}).items() if isinstance(v, int | float | str)
            },
            "train_options": TRAIN_OPTIONS.get(spec.system, {}),
            "loop": "fp.train: shuffled minibatches, validation-gated (ties keep the shorter prompt)",
            "budget": budget.to_dict(),
            "student": {"temperature": 0.0, "max_tokens": preset.student_max_tokens},
        },
        "versions": {"feedprop": metadata.version("feedprop")},
    }
