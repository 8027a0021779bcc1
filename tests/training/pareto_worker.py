"""A small deterministic Pareto-search run, used by the resume test in and out of process.

``python pareto_worker.py <checkpoint dir> <result json>`` trains with ``search="pareto"`` and
``resume=True`` and writes what the run ended with (the pool included); the test kills it
with SIGKILL part way and runs it again.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from resume_worker import summary
from train_toys import exact, suggest

from feedprop.llm import LLM, MockLLM
from feedprop.module import Module
from feedprop.node import Node, Parameter
from feedprop.optim import OptoPrime
from feedprop.training import TrainResult, train

SEED = 13  # a seed whose run tries two merges: one admitted (step 2), one refused (step 12)
ENDINGS = list("abcdef")
# Items starting with "a" are answered with the parameter ``a``, the others with ``b``: two
# parameters that each fix a different part of the data, so lineages diverge and merge.
TRAIN = [(f"a{i}", f"a{i}{ENDINGS[i % 3]}") for i in range(8)] + [
    (f"b{i}", f"b{i}{ENDINGS[2 + i % 3]}") for i in range(8)
]
VAL = [(f"a{j}_{k}", f"a{j}_{k}{ENDINGS[j]}") for j in range(3) for k in range(3 - j)] + [
    (f"b{j}_{k}", f"b{j}_{k}{ENDINGS[2 + j]}") for j in range(3) for k in range(3 - j)
]


class TwoEnds(Module):
    """Echoes the input through a model call, then appends ``a`` or ``b`` by the input's first letter."""

    def __init__(self, llm: LLM) -> None:
        self.a = Parameter("z", name="a", description="appended to inputs starting with 'a'")
        self.b = Parameter("z", name="b", description="appended to the other inputs")
        self.llm = llm

    def forward(self, x: str) -> Node[Any]:
        echoed = self.llm.complete([{"role": "user", "content": x}]).text
        return echoed + (self.a if x.startswith("a") else self.b)


def two_key_suggestions(latency: float) -> MockLLM:
    """Suggest one parameter and ending as a pure function of the request (prompt and sampling)."""

    def handler(messages: Any, **params: Any) -> str:
        request = json.dumps([messages, sorted(params.items())], sort_keys=True, default=repr)
        digest = hashlib.sha256(request.encode()).digest()
        return suggest(**{"ab"[digest[0] % 2]: ENDINGS[digest[1] % len(ENDINGS)]})

    return MockLLM(handler, latency=latency)


def run(checkpoint: str | Path, latency: float = 0.01) -> tuple[TrainResult, dict[str, Any]]:
    """Train (resuming whatever ``checkpoint`` holds) and return the result and the final optimizer state."""
    model = TwoEnds(MockLLM(lambda messages, **params: messages[-1]["content"], latency=latency))
    opt = OptoPrime(model.parameters(), llm=two_key_suggestions(latency), n_candidates=3)
    result = train(
        model,
        TRAIN,
        exact,
        opt,
        val_set=VAL,
        batch_size=4,
        epochs=3,
        seed=SEED,
        search="pareto",
        merge_every=2,
        checkpoint=checkpoint,
        resume=True,
        progress=False,
        plot=False,
    )
    return result, opt.state_dict()


def pool_summary(result: TrainResult, opt_state: dict[str, Any]) -> dict[str, Any]:
    """:func:`resume_worker.summary` plus the pool, lineage and RNG state of the final checkpoint."""
    assert result.checkpoint_path is not None
    checkpoint = json.loads(result.checkpoint_path.read_text())
    return {**summary(result, opt_state), "search": checkpoint["search"], "rng": checkpoint["rng"]}


if __name__ == "__main__":
    result, opt_state = run(sys.argv[1])
    Path(sys.argv[2]).write_text(json.dumps(pool_summary(result, opt_state), sort_keys=True))
