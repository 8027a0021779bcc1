"""trace-opt (Microsoft Trace) OptoPrime, used the documented way, for the comparison.

The workflow is a ``trace.bundle`` function that sends the trainable system prompt (a trainable
``trace.node``) and the question to the student model. The optimizer is trace-opt's
``OptoPrime`` with ``LiteLLM(model="openai/<name>")``, reaching the optimizer port of the
counting proxy through ``OPENAI_API_BASE`` (set by the harness). A minibatch's outputs are joined
by a bundled ``batchify`` and its guide feedback listed item by item (trace's minibatch recipe),
back-propagated once, then one ``step()``; the harness's gated loop
(``loop.py``, the same rule as ``fp.train``) keeps or reverts the update.

Runs in the bench environment only (``worker.py``).
"""

from __future__ import annotations

import os
import time
from importlib import metadata
from typing import Any

import litellm  # type: ignore[import-not-found, unused-ignore]
import openai
from common import RunData, budget_reason, evaluate_items, feedback_for, is_budget_refusal, score_test_set, train_tokens
from loop import gated_loop
from opto import trace
from opto.optimizers import OptoPrime
from opto.utils.llm import LiteLLM
from protocol import PROMPT_DESCRIPTION, RunSpec
from proxy import fetch_usage

__all__ = ["run_trace"]


def run_trace(spec: RunSpec, data: RunData, job: dict[str, Any]) -> dict[str, Any]:
    preset = spec.preset
    models = job.get("models") or {"student": job["model"], "optimizer": job["model"]}
    model = models["student"]
    if os.environ.get("OPENAI_API_BASE") != job["urls"]["optimizer"]:
        raise RuntimeError("OPENAI_API_BASE must point at the proxy's optimizer port (the harness sets it)")
    client = openai.OpenAI(base_url=job["urls"]["student"], api_key="none", timeout=preset.max_run_seconds)

    def ask(system: str, question: str) -> str:
        response = client.chat.completions.create(
            model=model,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
            temperature=0.0,
            max_tokens=preset.student_max_tokens,
        )
        return response.choices[0].message.content or ""

    instruction = trace.node(spec.start_prompt, name="instruction", trainable=True, description=PROMPT_DESCRIPTION)

    @trace.bundle()  # type: ignore[untyped-decorator]
    def answer_question(instruction: str, question: str) -> str:
        """Ask the language model: the instruction is its system prompt, the question its user message."""
        return ask(instruction, question)

    # A loaded machine can take many minutes per call: a client timeout would only make it ask again.
    litellm.request_timeout = preset.max_run_seconds
    optimizer = OptoPrime([instruction], llm=LiteLLM(model=f"openai/{models['optimizer']}"))
    usage_url = job["usage_url"]
    started = time.monotonic()

    @trace.bundle()  # type: ignore[untyped-decorator]
    def batchify(*items: str) -> str:
        """Concatenate the minibatch's outputs, each labelled with its ID."""
        return "".join(f"ID [{i}]: {item}\n" for i, item in enumerate(items))

    def step(batch: list[Any]) -> None:
        # trace-opt propagates one feedback per graph, so the minibatch's outputs are joined into one
        # node and their feedback into one text, item by item (trace's own minibatch recipe).
        optimizer.zero_feedback()
        outputs, feedbacks = [], []
        for example in batch:
            question = trace.node(example.input, name="question", trainable=False)
            output = answer_question(instruction, question)
            outputs.append(output)
            feedbacks.append(feedback_for(data.guide, output.data, example)[1])
        joined = batchify(*outputs)
        optimizer.backward(joined, "".join(f"ID [{i}]: {fb}\n" for i, fb in enumerate(feedbacks)))
        optimizer.step()

    def set_state(value: str) -> None:
        instruction._data = value

    def validate() -> float:
        result = evaluate_items(lambda q: ask(instruction.data, q), data.val, data.guide)
        return float(result["score"])

    train_started = time.monotonic()
    log = gated_loop(
        data.train,
        batch_size=preset.batch_size,
        epochs=preset.epochs,
        seed=spec.seed,
        step=step,
        get_state=lambda: str(instruction.data),
        set_state=set_state,
        validate=validate,
        budget_reason=budget_reason(usage_url, preset),
        is_budget_error=is_budget_refusal,
        tokens_used=lambda: train_tokens(fetch_usage(usage_url)),
    )
    train_seconds = time.monotonic() - train_started
    unchanged = instruction.data == spec.start_prompt
    after = None if unchanged else score_test_set(lambda q: ask(instruction.data, q), data, preset, usage_url)
    return {
        "test_after": after,
        "unchanged": unchanged,
        "curve": log["curve"],
        "val_before": log["val_before"],
        "val_after": log["val_after"],
        "final_prompt": instruction.data,
        "stop_reason": log["stop_reason"],
        "steps": log["steps"],
        "accepted_steps": sum(bool(s.get("accepted")) for s in log["steps"]),
        "train_seconds": round(train_seconds, 3),
        "run_seconds": round(time.monotonic() - started, 3),
        "config": {
            "optimizer": "opto.optimizers.OptoPrime (defaults)",
            "llm": f"opto.utils.llm.LiteLLM(model='openai/{models['optimizer']}') via OPENAI_API_BASE",
            "loop": "harness gated loop (loop.py): shuffled minibatches, validation-gated like fp.train",
            "student": {"temperature": 0.0, "max_tokens": preset.student_max_tokens},
        },
        "versions": {"trace-opt": metadata.version("trace-opt"), "litellm": metadata.version("litellm")},
    }
