"""textgrad TGD, used the documented way, for the comparison.

The workflow is ``tg.BlackboxLLM(student_engine, system_prompt)`` with the system prompt a
``tg.Variable(requires_grad=True)``. Each minibatch item's answer is scored by the task's guide
inside a ``tg.autograd.StringBasedFunction`` (textgrad's documented way to evaluate with code),
the losses are summed with ``tg.sum``, ``backward()`` asks the backward engine for textual
gradients, and ``tg.TGD`` rewrites the prompt. Both engines are ``ChatExternalClient`` over the
``openai`` SDK, pointed at the counting proxy's ports: every gradient and update call counts as
an optimizer call. textgrad's response cache is switched off, as every system's is.

Runs in the bench environment only (``worker.py``).
"""

from __future__ import annotations

import time
from importlib import metadata
from typing import Any

import textgrad as tg
from common import RunData, budget_reason, evaluate_items, feedback_for, is_budget_refusal, score_test_set, train_tokens
from loop import gated_loop
from openai import OpenAI
from protocol import PROMPT_DESCRIPTION, RunSpec
from proxy import fetch_usage
from textgrad.engine.local_model_openai_api import ChatExternalClient

__all__ = ["run_textgrad"]


class UncachedClient(ChatExternalClient):  # type: ignore[misc]
    """``ChatExternalClient`` without its response cache: every call reaches the endpoint and is counted."""

    def _check_cache(self, prompt: str) -> None:
        return None

    def _save_cache(self, prompt: str, response: str) -> None:
        return None


def run_textgrad(spec: RunSpec, data: RunData, job: dict[str, Any]) -> dict[str, Any]:
    preset = spec.preset
    models = job.get("models") or {"student": job["model"], "optimizer": job["model"]}
    model = models["student"]
    urls = job["urls"]
    timeout = preset.max_run_seconds
    student_engine = UncachedClient(
        client=OpenAI(base_url=urls["student"], api_key="none", timeout=timeout), model_string=model
    )
    optimizer_engine = UncachedClient(
        client=OpenAI(base_url=urls["optimizer"], api_key="none", timeout=timeout), model_string=models["optimizer"]
    )
    tg.set_backward_engine(optimizer_engine, override=True)
    system_prompt = tg.Variable(spec.start_prompt, requires_grad=True, role_description=PROMPT_DESCRIPTION)
    workflow = tg.BlackboxLLM(student_engine, system_prompt)
    optimizer = tg.TGD(parameters=[system_prompt], engine=optimizer_engine)

    def ask(question: Any) -> str:
        # What BlackboxLLM's forward sends, without building a graph (evaluation needs no gradients).
        return str(
            student_engine(str(question), system_prompt=system_prompt.value, max_tokens=preset.student_max_tokens)
        )

    usage_url = job["usage_url"]
    started = time.monotonic()

    def step(batch: list[Any]) -> None:
        optimizer.zero_grad()
        losses = []
        for example in batch:
            question = tg.Variable(str(example.input), requires_grad=False, role_description="question to the LLM")
            prediction = workflow(question)
            _score, feedback = feedback_for(data.guide, prediction.value, example)
            truth = tg.Variable(str(example.target), requires_grad=False, role_description="correct answer")
            check = tg.autograd.StringBasedFunction(
                lambda prediction, ground_truth, _fb=feedback: _fb,
                function_purpose="The test that scores the prediction against the correct answer",
            )
            losses.append(check(inputs={"prediction": prediction, "ground_truth": truth}))
        total = tg.sum(losses)
        total.backward()
        optimizer.step()

    def set_state(value: str) -> None:
        system_prompt.set_value(value)

    def validate() -> float:
        return float(evaluate_items(ask, data.val, data.guide)["score"])

    train_started = time.monotonic()
    log = gated_loop(
        data.train,
        batch_size=preset.batch_size,
        epochs=preset.epochs,
        seed=spec.seed,
        step=step,
        get_state=lambda: str(system_prompt.value),
        set_state=set_state,
        validate=validate,
        budget_reason=budget_reason(usage_url, preset),
        is_budget_error=is_budget_refusal,
        tokens_used=lambda: train_tokens(fetch_usage(usage_url)),
    )
    train_seconds = time.monotonic() - train_started
    unchanged = system_prompt.value == spec.start_prompt
    after = None if unchanged else score_test_set(ask, data, preset, usage_url)
    return {
        "test_after": after,
        "unchanged": unchanged,
        "curve": log["curve"],
        "val_before": log["val_before"],
        "val_after": log["val_after"],
        "final_prompt": system_prompt.value,
        "stop_reason": log["stop_reason"],
        "steps": log["steps"],
        "accepted_steps": sum(bool(s.get("accepted")) for s in log["steps"]),
        "train_seconds": round(train_seconds, 3),
        "run_seconds": round(time.monotonic() - started, 3),
        "config": {
            "optimizer": "textgrad.TGD (defaults), backward engine = optimizer engine",
            "engines": "textgrad ChatExternalClient(OpenAI(base_url=proxy port)), response cache off",
            "loss": "tg.sum of StringBasedFunction losses returning the guide's feedback",
            "loop": "harness gated loop (loop.py): shuffled minibatches, validation-gated like fp.train",
            "student": {"temperature": 0.0, "max_tokens": preset.student_max_tokens},
        },
        "versions": {"textgrad": metadata.version("textgrad")},
    }
