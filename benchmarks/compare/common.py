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

from protocol import PRESETS, Preset, RunSpec, item_records, truncate
from proxy import fetch_usage

from feedprop.tasks import Example, Task, load_task

__all__ = ["RunData", "budget_reason", "evaluate_items", "feedback_for", "is_budget_refusal", "load_run_data"]

#: Parallel requests during evaluation (the model server's slots).
WORKERS = 4

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

    def one(example: Example) -> tuple[Any, float, str | None]:
        try:
            output = answer(example.input)
        except Exception as exc:  # the system failed on this item: it scores 0, the run goes on
            return "", 0.0, f"{type(exc).__name__}: {truncate(str(exc), 300)}"
        score, _text = feedback_for(guide, output, example)
        return output, score, None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
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
        "items": item_records(idx, outputs, scores, errors),
    }


def budget_reason(usage_url: str, preset: Preset) -> Callable[[], str | None]:
    """A check, for loops in another process, of the optimizer budget as the proxy counts it.

    No new step starts once the optimizer's calls or tokens reach the budget (tokens are known
    only after a call, so the last step may end above the token budget, as in ``feedprop.train``).
    """

    def reason() -> str | None:
        used = fetch_usage(usage_url)["optimizer"]
        if used["started"] >= preset.optimizer_calls:
            return f"budget: calls ({used['started']}/{preset.optimizer_calls})"
        if used["tokens"] >= preset.optimizer_tokens:
            return f"budget: tokens ({used['tokens']}/{preset.optimizer_tokens})"
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
