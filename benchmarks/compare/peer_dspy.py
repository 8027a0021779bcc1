"""dspy COPRO, MIPROv2 (auto="light") and BootstrapFewShot, used the documented way, for the comparison.

The program is ``dspy.ChainOfThought`` over the signature ``question -> answer`` whose
instructions are the task's starting prompt; its ``answer`` field is what the guide scores. The
student ``dspy.LM("openai/<name>", api_base=<student port>)`` runs at temperature 0; the
optimizer's model (``prompt_model`` for COPRO and MIPROv2, the teacher for BootstrapFewShot) is
another ``dspy.LM`` on the optimizer port, at dspy's own sampling settings. dspy's caches are
off, as every system's are.

dspy's optimizers run their own loops, so the budget is turned into their own knobs:

- COPRO: the largest ``breadth`` (2 to 4) and ``depth`` (<= 3) whose proposal calls,
  ``(breadth - 1) + (depth - 1) * breadth``, fit the budget (see :func:`copro_shape`); the proxy does not refuse calls
  (COPRO cannot survive a refused call), so the counted usage may exceed the token budget, and
  the result file says so.
- MIPROv2 ``auto="light"``: dspy's preset, as named; its ~15 proposal calls are not scaled to
  the budget, so it may spend more than the others, which the result file records.
- BootstrapFewShot: the teacher's calls are refused by the proxy once the budget is spent, and
  dspy skips those examples (``max_errors`` is raised so refusals do not abort it).

Systems without a separate validation loop (COPRO, BootstrapFewShot) get the validation items
appended to their training set, so every system sees the same labelled data.

Runs in the bench environment only (``worker.py``).
"""

from __future__ import annotations

import importlib
import time
from importlib import metadata
from typing import Any

import dspy
from common import RunData, evaluate_items, feedback_for
from protocol import Preset, RunSpec, copro_shape
from proxy import fetch_usage

from feedprop.tasks import Example, reference_solution

__all__ = ["run_dspy"]


def _label(example: Example) -> str:
    """The label a labelled demonstration shows: the final answer, or for code the reference solution."""
    if isinstance(example.target, dict):
        return reference_solution(example)
    return str(example.target)


# dspy imports litellm on the first call; import it now, so the run's clock does not count it.
importlib.import_module("litellm")


def _dspy_examples(examples: list[Example], offset: int = 0) -> list[Any]:
    return [
        dspy.Example(question=str(e.input), answer=_label(e), item=offset + i).with_inputs("question")
        for i, e in enumerate(examples)
    ]


def _optimizer(system: str, preset: Preset, metric: Any, prompt_lm: Any, student_lm: Any, seed: int) -> Any:
    if system == "dspy-copro":
        breadth, depth = copro_shape(preset)
        return dspy.COPRO(prompt_model=prompt_lm, metric=metric, breadth=breadth, depth=depth)
    if system == "dspy-miprov2-light":
        return dspy.MIPROv2(
            metric=metric,
            prompt_model=prompt_lm,
            task_model=student_lm,
            auto="light",
            num_threads=4,
            seed=seed,
            verbose=False,
        )
    if system == "dspy-bootstrap":
        return dspy.BootstrapFewShot(metric=metric, teacher_settings={"lm": prompt_lm}, max_errors=10_000)
    raise ValueError(f"not a dspy system: {system}")


def run_dspy(spec: RunSpec, data: RunData, job: dict[str, Any]) -> dict[str, Any]:
    preset = spec.preset
    model = job["model"]
    urls = job["urls"]
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    # A loaded machine can take many minutes per call: a client timeout would only make it ask again.
    timeout = preset.max_run_seconds
    student_lm = dspy.LM(
        f"openai/{model}",
        api_base=urls["student"],
        api_key="none",
        temperature=0.0,
        max_tokens=preset.student_max_tokens,
        cache=False,
        timeout=timeout,
    )
    prompt_lm = dspy.LM(
        f"openai/{model}",
        api_base=urls["optimizer"],
        api_key="none",
        max_tokens=preset.optimizer_max_tokens,
        cache=False,
        timeout=timeout,
    )
    dspy.configure(lm=student_lm)
    signature = dspy.Signature("question -> answer", spec.start_prompt)
    program = dspy.ChainOfThought(signature)

    labelled = data.train + data.val
    train_examples = _dspy_examples(data.train)
    val_examples = _dspy_examples(data.val, offset=len(data.train))

    def metric(example: Any, prediction: Any, trace: Any = None) -> float:
        score, _text = feedback_for(data.guide, getattr(prediction, "answer", ""), labelled[example.item])
        return score

    def answerer(prog: Any) -> Any:
        def answer(question: Any) -> str:
            with dspy.context(lm=student_lm):
                return str(prog(question=str(question)).answer)

        return answer

    usage_url = job["usage_url"]
    marks: dict[str, Any] = {"start": fetch_usage(usage_url)}
    started = time.monotonic()
    before = evaluate_items(answerer(program), data.test, data.guide, indices=data.indices["test"])
    marks["after_test_before"] = fetch_usage(usage_url)

    optimizer = _optimizer(spec.system, preset, metric, prompt_lm, student_lm, spec.seed)
    train_started = time.monotonic()
    if spec.system == "dspy-miprov2-light":
        compiled = optimizer.compile(program, trainset=train_examples, valset=val_examples)
        data_note = "trainset = train items, valset = validation items"
    elif spec.system == "dspy-copro":
        compiled = optimizer.compile(
            program, trainset=train_examples + val_examples, eval_kwargs={"num_threads": 4, "display_progress": False}
        )
        data_note = "trainset = train + validation items"
    else:
        compiled = optimizer.compile(program, trainset=train_examples + val_examples)
        data_note = "trainset = train + validation items"
    train_seconds = time.monotonic() - train_started
    marks["after_train"] = fetch_usage(usage_url)
    after = evaluate_items(answerer(compiled), data.test, data.guide, indices=data.indices["test"])
    marks["end"] = fetch_usage(usage_url)

    predictor = compiled.predictors()[0]
    config: dict[str, Any] = {
        "program": "dspy.ChainOfThought('question -> answer'), instructions = starting prompt",
        "optimizer": type(optimizer).__name__,
        "data": data_note,
        "student": {"temperature": 0.0, "max_tokens": preset.student_max_tokens},
        "prompt_model": {"max_tokens": preset.optimizer_max_tokens, "temperature": "dspy default"},
    }
    if spec.system == "dspy-copro":
        config["breadth"], config["depth"] = copro_shape(preset)
    if spec.system == "dspy-miprov2-light":
        config["auto"] = "light"
    return {
        "test_before": before,
        "test_after": after,
        "val_before": None,
        "val_after": None,
        "final_prompt": str(predictor.signature.instructions),
        "final_state": {
            "instructions": str(predictor.signature.instructions),
            "demos": len(getattr(predictor, "demos", []) or []),
        },
        "stop_reason": f"{type(optimizer).__name__}.compile returned",
        "steps": [],
        "accepted_steps": None,
        "train_seconds": round(train_seconds, 3),
        "run_seconds": round(time.monotonic() - started, 3),
        "marks": marks,
        "config": config,
        "versions": {"dspy": metadata.version("dspy"), "litellm": metadata.version("litellm")},
    }
