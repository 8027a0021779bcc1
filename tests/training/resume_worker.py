"""A small deterministic training run, used by the resume tests in and out of process.

``python resume_worker.py <checkpoint dir> <result json> [async]`` trains with ``resume=True``
and writes what the run ended with; the tests kill it with SIGKILL part way and run it again.
With ``async`` the workflow's ``forward`` is ``async def`` (its items run on an event loop).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from train_toys import AsyncSuffix, Suffix, exact, hashed_suggestions

from feedprop.llm import MockLLM
from feedprop.optim import OptoPrime
from feedprop.training import TrainResult, train

# Endings with a clear ranking on the validation set ("a" best, "h" worst), so a run climbs
# through several accepted updates and rejects many others.
ENDINGS = list("abcdefgh")
TRAIN = [(f"t{i}", f"t{i}{ENDINGS[i % 5]}") for i in range(16)]
VAL = [(f"v{j}_{k}", f"v{j}_{k}{e}") for j, e in enumerate(ENDINGS) for k in range(len(ENDINGS) - j)]


def run(
    checkpoint: str | Path, latency: float = 0.01, asynchronous: bool = False, **options: Any
) -> tuple[TrainResult, dict[str, Any]]:
    """Train (resuming whatever ``checkpoint`` holds) and return the result and the final optimizer state.

    ``options`` go to ``train`` (e.g. ``max_steps``, ``test_set``; ``epochs`` replaces the 2 epochs).
    """
    workflow = MockLLM(lambda messages, **params: messages[-1]["content"], latency=latency, model="workflow-mock")
    model = (AsyncSuffix if asynchronous else Suffix)("z", llm=workflow)
    opt = OptoPrime(model.parameters(), llm=hashed_suggestions(ENDINGS, latency=latency, model="optimizer-mock"))
    result = train(
        model,
        TRAIN,
        exact,
        opt,
        val_set=VAL,
        batch_size=2,
        seed=7,
        checkpoint=checkpoint,
        resume=True,
        progress=False,
        plot=False,
        **{"epochs": 2, **options},
    )
    return result, opt.state_dict()


def summary(result: TrainResult, opt_state: dict[str, Any]) -> dict[str, Any]:
    """What must be identical between an interrupted-and-resumed run and an uninterrupted one."""
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in result.history]
    return {
        "best_state": result.best_state,
        "val_after": result.val_after,
        "history": history,
        "optimizer": opt_state,
        "usage": without_seconds(result.usage),
        "stop_reason": result.stop_reason,
    }


def without_seconds(value: Any) -> Any:
    """``value`` with every ``seconds`` entry dropped, at any depth (wall-clock time is all a resume may change)."""
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k != "seconds"}
    return value


if __name__ == "__main__":
    result, opt_state = run(sys.argv[1], asynchronous=sys.argv[3:] == ["async"])
    Path(sys.argv[2]).write_text(json.dumps(summary(result, opt_state), sort_keys=True))
