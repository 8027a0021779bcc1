"""What every system's runner shares: the run's data, the scorer, and the held-out evaluation.

Imported by the harness and by the peer workers (with feedprop's ``src`` on ``sys.path``), so
every system is scored by the same code: feedprop's guide for the task, called on the text the
system's trained program produced for each held-out question.

Example:
    >>> spec = RunSpec("feedprop-optoprime", "bbh/object_counting", 0, PRESETS["pilot"])
    >>> data = load_run_data(spec)
    >>> len(data.train), len(data.val), len(data.test)
    (6, 4, 10)
    >>> result = evaluate_items(lambda q: "The answer is 0.", data.test[:2], data.guide)
    >>> len(result["items"]), 0.0 <= result["score"] <= 1.0
    (2, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from protocol import PRESETS, Preset, RunSpec
from proxy import fetch_usage, set_phase

from feedprop.tasks import Example, Task, load_task
from feedprop.training.events import ItemOutcome, item_outcome

__all__ = [
    "RunData",
    "budget_reason",
    "evaluate_items",
    "feedback_for",
    "is_budget_refusal",
    "item_records",
    "load_run_data",
    "score_test_set",
    "train_tokens",
    "truncate",
]

#: Parallel requests during training-time evaluation (the model server's slots). The test pass
#: uses the preset's ``test_workers`` (1: one request at a time, so scores repeat).
WORKERS = 4


def truncate(text: Any, limit: int = 400) -> str:
    """``text`` as a string of at most ``limit`` characters (the middle elided), for result files."""
    s = text if isinstance(text, str) else repr(text)
    if len(s) <= limit:
        return s
    half = (limit - 5) // 2
    return s[:half] + " ... " + s[-half:]


def item_records(
    indices: Sequence[int],
    outputs: Sequence[Any],
    scores: Sequence[float],
    errors: Sequence[str | None],
    feedback: Sequence[str | None] | None = None,
) -> list[ItemOutcome]:
    """Per-item outcomes of an evaluation, in the schema the trainer's event log uses."""
    texts = list(feedback) if feedback is not None else [None] * len(scores)
    return [
        item_outcome(i, s, o, error=e, feedback=f)
        for i, o, s, e, f in zip(indices, outputs, scores, errors, texts, strict=True)
    ]


_ = PRESETS  # re-exported for the doctest above


@dataclass
class RunData:
    """The items a run uses, drawn from the task's published splits, and the task's guide."""

    task: Task
    train: list[Example]
    val: list[Example]
    test: list[Example]
    indices: dict[str, list[int]]

    @property
    def guide(self) -> Any:
        return self.task.guide

    def protocol(self) -> dict[str, Any]:
        """The split sizes and the exact items used, for the result file."""
        return {
            "published_sizes": {s: len(self.task.split(s)) for s in ("train", "val", "test")},
            "indices": self.indices,
            "sizes": {s: len(self.indices[s]) for s in ("train", "val", "test")},
        }


def load_run_data(spec: RunSpec) -> RunData:
    """Load ``spec.task`` and draw the run's train, validation and test items."""
    task = load_task(spec.task)
    indices = {s: spec.indices(s, len(task.split(s))) for s in ("train", "val", "test")}
    picked = {s: [task.split(s)[i] for i in indices[s]] for s in indices}
    return RunData(task, picked["train"], picked["val"], picked["test"], indices)


def feedback_for(guide: Any, output: Any, example: Example) -> tuple[float, str]:
    """(score, feedback text) of ``output`` for ``example`` by the task's guide."""
    fb = guide(output, example.target, example=example)
    return float(fb.score or 0.0), str(fb.text)


def evaluate_items(
    answer: Callable[[Any], Any],
    examples: Sequence[Example],
    guide: Any,
    *,
    indices: Sequence[int] | None = None,
    workers: int = WORKERS,
) -> dict[str, Any]:
    """Run ``answer(input)`` on each example in parallel and score each output with ``guide``.

    An exception while answering scores 0 for that item and is recorded. Returns the mean
    ``score``, per-item records and the seconds it took.
    """
    started = time.monotonic()

    def one(example: Example) -> tuple[Any, float, str | None, str | None]:
        try:
            output = answer(example.input)
        except Exception as exc:  # the system failed on this item: it scores 0, the run goes on
            return "", 0.0, f"{type(exc).__name__}: {truncate(str(exc), 300)}", None
        score, text = feedback_for(guide, output, example)
        return output, score, None, text

    if workers <= 1:  # one request at a time, in item order
        results = [one(example) for example in examples]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, examples))
    outputs = [r[0] for r in results]
    scores = [r[1] for r in results]
    errors = [r[2] for r in results]
    idx = list(indices) if indices is not None else list(range(len(examples)))
    return {
        "score": sum(scores) / len(scores) if scores else 0.0,
        "n": len(scores),
        "errors": sum(e is not None for e in errors),
        "seconds": round(time.monotonic() - started, 3),
        "items": item_records(idx, outputs, scores, errors, [r[3] for r in results]),
    }


def score_test_set(
    answer: Callable[[Any], Any], data: RunData, preset: Preset, usage_url: str | None
) -> dict[str, Any]:
    """The held-out pass after training: the proxy counts it as the test phase; requests as the preset says.

    With ``usage_url`` (a worker in another process) the proxy is told the phase over HTTP; the
    harness's in-process systems set it on the proxy themselves and pass ``None``.
    """
    if usage_url is not None:
        set_phase(usage_url, "test")
    return evaluate_items(answer, data.test, data.guide, indices=data.indices["test"], workers=preset.test_workers)


def train_tokens(usage: dict[str, Any]) -> int:
    """Tokens of the training phase, student and optimizer, from a proxy's usage (the budget's measure)."""
    phase = (usage.get("phases") or {}).get("train") or {}
    return int(sum(phase.get(role, {}).get("tokens", 0) for role in ("student", "optimizer")))


def budget_reason(usage_url: str, preset: Preset) -> Callable[[], str | None]:
    """A check, for loops in another process, of the training budget as the proxy counts it.

    No new step (and no validation of a step) starts once the training phase's tokens, student
    and optimizer, reach ``preset.train_tokens`` (tokens are known only after a call, so the last
    step may end above the budget, as in ``fp.train``; the overshoot is recorded).
    """

    def reason() -> str | None:
        used = train_tokens(fetch_usage(usage_url))
        if used >= preset.train_tokens:
            return f"budget: tokens ({used}/{preset.train_tokens})"
        return None

    return reason


def is_budget_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the proxy refusing a call over budget."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if "budget exhausted" in str(seen) or "budget_exhausted" in str(seen):
            return True
        attempt = getattr(seen, "last_attempt", None)  # tenacity's RetryError wraps the last failure
        inner = attempt.exception() if attempt is not None and hasattr(attempt, "exception") else None
        seen = inner or seen.__cause__ or seen.__context__
    return False
