"""dspy GEPA, MIPROv2 (auto="light"), BootstrapFewShot and COPRO, used the documented way, and
dspy's ChainOfThought as an unoptimized row, for the comparison.

The program every optimizer starts from is the one-call program every system starts from:
``dspy.Predict`` over the signature ``question -> answer`` whose instructions are the task's
starting prompt, rendered by :class:`OneCallAdapter` as the system message (the instructions),
each demonstration as a user turn (its question) and an assistant turn (its answer), then the
question; the whole reply is the answer. So its requests before training are the same bytes as
the shared baseline's, and what dspy's optimizers change (instructions, demonstrations) is what
they change in any dspy program. Signatures other than ``question -> answer`` (the optimizers'
own proposal programs, ChainOfThought) are rendered by dspy's ``ChatAdapter`` as usual.

The student ``dspy.LM("openai/<name>", api_base=<student port>)`` runs at temperature 0; the
optimizer's model (``reflection_lm`` for GEPA, ``prompt_model`` for COPRO and MIPROv2, the
teacher for BootstrapFewShot) is another ``dspy.LM`` on the optimizer port, at dspy's own
sampling settings. dspy's caches are off, as every system's are.

dspy's optimizers run their own loops, so the budget (training tokens of both roles) is turned
into their own knobs where they have one, and any overshoot is recorded by the harness:

- GEPA: ``max_metric_calls`` = 60% of the budget over the task's tokens per student call (the
  rest is left for the reflection calls); its candidates' validation scores, with the training
  tokens spent when each was found, are the run's curve.
- COPRO: the largest ``breadth`` (2 to 4) and ``depth`` (<= 3) whose proposal calls fit
  (:func:`copro_shape`).
- MIPROv2 ``auto="light"``: dspy's preset, as named (not stoppable at a budget).
- BootstrapFewShot: runs to completion (a handful of teacher calls).

Systems without a separate validation loop (COPRO, BootstrapFewShot) get the validation items
appended to their training set, so every system sees the same labelled data.

Runs in the bench environment only (``worker.py``).
"""

from __future__ import annotations

import importlib
import json
import time
from importlib import metadata
from typing import Any

import dspy
from common import RunData, feedback_for, score_test_set, train_tokens
from protocol import TEST_ITEM_TOKENS, Preset, RunSpec, copro_shape
from proxy import fetch_usage

from feedprop.tasks import Example, reference_solution

__all__ = ["OneCallAdapter", "gepa_metric_calls", "run_dspy"]

#: Share of the budget GEPA's metric calls (student rollouts) may take; the rest is for reflection.
GEPA_STUDENT_SHARE = 0.6


class OneCallAdapter(dspy.ChatAdapter):  # type: ignore[misc]
    """``question -> answer`` as one plain call: system = instructions, demos as turns, reply = answer."""

    @staticmethod
    def _one_call(signature: Any) -> bool:
        return list(signature.input_fields) == ["question"] and list(signature.output_fields) == ["answer"]

    def format(self, signature: Any, demos: list[dict[str, Any]], inputs: dict[str, Any]) -> list[dict[str, Any]]:
        if not self._one_call(signature):
            return list(super().format(signature, demos, inputs))
        messages = [{"role": "system", "content": str(signature.instructions)}]
        for demo in demos:
            if demo.get("question") is not None and demo.get("answer") is not None:
                messages.append({"role": "user", "content": str(demo["question"])})
                messages.append({"role": "assistant", "content": str(demo["answer"])})
        messages.append({"role": "user", "content": str(inputs["question"])})
        return messages

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        if not self._one_call(signature):
            return dict(super().parse(signature, completion))
        return {"answer": completion}


def gepa_metric_calls(preset: Preset, task: str) -> int:
    """GEPA's ``max_metric_calls`` for the budget: its share of the tokens over one student call's."""
    prompt, completion = TEST_ITEM_TOKENS.get(task, (100.0, 250.0))
    return max(2 * preset.val, int(GEPA_STUDENT_SHARE * preset.train_tokens / (prompt + completion)))


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


def _optimizer(spec: RunSpec, metric: Any, feedback_metric: Any, prompt_lm: Any, student_lm: Any) -> Any:
    system, preset, seed = spec.system, spec.preset, spec.seed
    if system == "dspy-gepa":
        return dspy.GEPA(
            metric=feedback_metric,
            reflection_lm=prompt_lm,
            max_metric_calls=gepa_metric_calls(preset, spec.task),
            num_threads=4,
            track_stats=True,
            seed=seed,
        )
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
    models = job.get("models") or {"student": job["model"], "optimizer": job["model"]}
    urls = job["urls"]
    usage_url = job["usage_url"]
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    # A loaded machine can take many minutes per call: a client timeout would only make it ask again.
    timeout = preset.max_run_seconds
    student_lm = dspy.LM(
        f"openai/{models['student']}",
        api_base=urls["student"],
        api_key="none",
        temperature=0.0,
        max_tokens=preset.student_max_tokens,
        cache=False,
        timeout=timeout,
    )
    prompt_lm = dspy.LM(
        f"openai/{models['optimizer']}",
        api_base=urls["optimizer"],
        api_key="none",
        max_tokens=preset.optimizer_max_tokens,
        cache=False,
        timeout=timeout,
    )
    dspy.configure(lm=student_lm, adapter=OneCallAdapter())
    signature = dspy.Signature("question -> answer", spec.start_prompt)
    started = time.monotonic()

    def answerer(prog: Any) -> Any:
        def answer(question: Any) -> str:
            with dspy.context(lm=student_lm):
                return str(prog(question=str(question)).answer)

        return answer

    if spec.system == "dspy-cot":  # a program choice, reported as it is: no optimizer, no training
        program = dspy.ChainOfThought(signature)
        after = score_test_set(answerer(program), data, preset, usage_url)
        return {
            "test_after": after,
            "unchanged": False,
            "curve": None,
            "final_prompt": spec.start_prompt,
            "final_state": {"program": "ChainOfThought", "demos": 0},
            "stop_reason": "not trained (an unoptimized program)",
            "steps": [],
            "train_seconds": 0.0,
            "run_seconds": round(time.monotonic() - started, 3),
            "config": {
                "program": "dspy.ChainOfThought('question -> answer'), instructions = starting prompt, ChatAdapter",
                "student": {"temperature": 0.0, "max_tokens": preset.student_max_tokens},
            },
            "versions": {"dspy": metadata.version("dspy"), "litellm": metadata.version("litellm")},
        }

    program = dspy.Predict(signature)
    labelled = data.train + data.val
    train_examples = _dspy_examples(data.train)
    val_examples = _dspy_examples(data.val, offset=len(data.train))
    metric_log: list[tuple[int, int]] = []  # (metric calls so far, training tokens then)

    def metric(example: Any, prediction: Any, trace: Any = None) -> float:
        score, _text = feedback_for(data.guide, getattr(prediction, "answer", ""), labelled[example.item])
        return score

    def feedback_metric(
        example: Any, prediction: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
    ) -> Any:
        score, text = feedback_for(data.guide, getattr(prediction, "answer", ""), labelled[example.item])
        metric_log.append((len(metric_log) + 1, train_tokens(fetch_usage(usage_url))))
        return dspy.Prediction(score=score, feedback=text)

    start_state = _state(program)
    optimizer = _optimizer(spec, metric, feedback_metric, prompt_lm, student_lm)
    train_started = time.monotonic()
    if spec.system in ("dspy-miprov2-light", "dspy-gepa"):
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

    unchanged = _state(compiled) == start_state
    after = None if unchanged else score_test_set(answerer(compiled), data, preset, usage_url)

    predictor = compiled.predictors()[0]
    config: dict[str, Any] = {
        "program": "dspy.Predict('question -> answer'), instructions = starting prompt, OneCallAdapter "
        "(system = instructions, demos as turns, reply = answer)",
        "optimizer": type(optimizer).__name__,
        "data": data_note,
        "student": {"temperature": 0.0, "max_tokens": preset.student_max_tokens},
        "prompt_model": {"max_tokens": preset.optimizer_max_tokens, "temperature": "dspy default"},
    }
    curve = None
    if spec.system == "dspy-gepa":
        config["max_metric_calls"] = gepa_metric_calls(preset, spec.task)
        curve = _gepa_curve(compiled, metric_log)
    if spec.system == "dspy-copro":
        config["breadth"], config["depth"] = copro_shape(preset)
    if spec.system == "dspy-miprov2-light":
        config["auto"] = "light"
    demos = getattr(predictor, "demos", []) or []
    return {
        "test_after": after,
        "unchanged": unchanged,
        "curve": curve,
        "val_before": curve[0]["val_score"] if curve else None,
        "val_after": max((p["val_score"] for p in curve), default=None) if curve else None,
        "final_prompt": str(predictor.signature.instructions),
        "final_state": {
            "instructions": str(predictor.signature.instructions),
            "demos": len(demos),
            "demo_inputs": [str(d.get("question", ""))[:200] for d in demos],
        },
        "stop_reason": f"{type(optimizer).__name__}.compile returned",
        "steps": [],
        "accepted_steps": None,
        "train_seconds": round(train_seconds, 3),
        "run_seconds": round(time.monotonic() - started, 3),
        "config": config,
        "versions": {"dspy": metadata.version("dspy"), "litellm": metadata.version("litellm")},
    }


def _state(program: Any) -> str:
    """What an optimizer may change in the program (instructions and demonstrations), as comparable text."""
    parts = []
    for predictor in program.predictors():
        demos = [{k: str(v) for k, v in dict(d).items()} for d in getattr(predictor, "demos", []) or []]
        parts.append({"instructions": str(predictor.signature.instructions), "demos": demos})
    return json.dumps(parts, sort_keys=True)


def _gepa_curve(compiled: Any, metric_log: list[tuple[int, int]]) -> list[dict[str, Any]] | None:
    """Best validation score so far against the training tokens spent when each candidate was found."""
    results = getattr(compiled, "detailed_results", None)
    if results is None:
        return None
    tokens_at = dict(metric_log)
    points: list[dict[str, Any]] = []
    best = None
    order = sorted(range(len(results.val_aggregate_scores)), key=lambda i: results.discovery_eval_counts[i])
    for step, i in enumerate(order):
        score = float(results.val_aggregate_scores[i])
        accepted = best is None or score > best
        best = score if best is None else max(best, score)
        calls = int(results.discovery_eval_counts[i])
        points.append(
            {
                "step": step,
                "metric_calls": calls,
                "tokens": tokens_at.get(calls) if calls else 0,
                "val_score": best,
                "accepted": accepted,
            }
        )
    return points
