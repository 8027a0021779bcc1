"""The training loop the harness drives for peers that have no loop of their own (trace-opt, textgrad).

It mirrors what ``fp.train`` does for the feedprop systems, so the comparison measures
the optimizers and not the loops: shuffled minibatches for a number of epochs (seeded), one
optimizer step per minibatch, and validation gating — an update is kept only if the validation
score does not drop, and on a tie only if the prompt does not get longer. A step that fails
(for instance because the proxy refused a call over budget) is dropped whole and the
parameters go back to their state before it. The budget is checked before every step and
again before the step's validation (a step the budget cuts off is dropped, as ``fp.train``
drops it). With ``tokens_used``, each step records the cumulative training tokens and the loop
returns the validation curve (``curve``: validation score against tokens, step 0 the start).

Example:
    >>> state = {"p": "a"}
    >>> def step(batch):
    ...     state["p"] = state["p"] + "b"
    >>> log = gated_loop(
    ...     list(range(4)), batch_size=2, epochs=1, seed=0, step=step,
    ...     get_state=lambda: state["p"], set_state=lambda v: state.update(p=v),
    ...     validate=lambda: len(state["p"]) / 10, budget_reason=lambda: None,
    ... )
    >>> state["p"], log["stop_reason"], [s["accepted"] for s in log["steps"]]
    ('abb', 'completed 1 epoch(s)', [True, True])
    >>> [point["val_score"] for point in log["curve"]]
    [0.1, 0.2, 0.3]
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["gated_loop"]

#: Consecutive failed steps after which the loop gives up.
MAX_FAILED_STEPS = 3


def gated_loop(
    train: Sequence[Any],
    *,
    batch_size: int,
    epochs: int,
    seed: int,
    step: Callable[[list[Any]], Any],
    get_state: Callable[[], str],
    set_state: Callable[[str], None],
    validate: Callable[[], float],
    budget_reason: Callable[[], str | None],
    is_budget_error: Callable[[BaseException], bool] = lambda exc: False,
    tokens_used: Callable[[], int] | None = None,
) -> dict[str, Any]:
    """Train with validation gating; returns ``{"steps", "stop_reason", "val_before", "val_after", "curve"}``.

    ``step(batch)`` runs the workflow on the batch, sends the feedback back and lets the
    optimizer update the parameter; ``get_state``/``set_state`` read and restore the parameter;
    ``validate()`` scores the current parameter on the validation set; ``budget_reason()`` says
    why no further step may start (``None`` while budget remains); ``is_budget_error(exc)`` tells
    a refused-over-budget failure from others; ``tokens_used()`` reads the training tokens spent
    so far (for the curve).
    """
    rng = random.Random(seed)
    steps: list[dict[str, Any]] = []
    best = get_state()
    best_val = validate()
    val_before = best_val
    curve: list[dict[str, Any]] = [
        {"step": 0, "tokens": tokens_used() if tokens_used else None, "val_score": best_val, "accepted": True}
    ]
    failures = 0
    stop_reason = f"completed {epochs} epoch(s)"
    done = False
    for epoch in range(epochs):
        order = list(range(len(train)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            reason = budget_reason()
            if reason:
                stop_reason, done = reason, True
                break
            indices = order[start : start + batch_size]
            batch = [train[i] for i in indices]
            record: dict[str, Any] = {"step": len(steps) + 1, "epoch": epoch, "batch": indices}
            started = time.monotonic()
            try:
                step(batch)
            except Exception as exc:
                set_state(best)
                record.update(
                    accepted=False,
                    error=f"{type(exc).__name__}: {str(exc)[:500]}",
                    seconds=round(time.monotonic() - started, 3),
                )
                steps.append(record)
                if is_budget_error(exc):
                    stop_reason, done = budget_reason() or f"budget: a call was refused ({exc})", True
                    break
                failures += 1
                if failures >= MAX_FAILED_STEPS:
                    stop_reason, done = f"{failures} steps failed in a row", True
                    break
                continue
            failures = 0
            new = get_state()
            record["proposal"] = new
            if new == best:
                record.update(accepted=False, reason="the update left the prompt unchanged")
            elif budget_reason():
                set_state(best)
                stop_reason, done = budget_reason() or "budget", True
                record.update(accepted=False, reason=f"dropped unvalidated: {stop_reason}")
            else:
                val = validate()
                record["val_score"] = val
                keep = val > best_val or (val == best_val and len(new) <= len(best))
                record["accepted"] = keep
                record["reason"] = (
                    f"val {best_val:.4f} -> {val:.4f}" if keep else f"reverted: val {best_val:.4f} -> {val:.4f}"
                )
                if keep:
                    best, best_val = new, val
                else:
                    set_state(best)
            record["seconds"] = round(time.monotonic() - started, 3)
            if tokens_used is not None:
                record["tokens"] = tokens_used()
            steps.append(record)
            curve.append(
                {
                    "step": record["step"],
                    "tokens": record.get("tokens"),
                    "val_score": best_val,
                    "accepted": bool(record.get("accepted")),
                }
            )
            if done:
                break
        if done:
            break
    set_state(best)
    return {"steps": steps, "stop_reason": stop_reason, "val_before": val_before, "val_after": best_val, "curve": curve}
