"""The trainer with the real embedded model as the optimizer (slow: run with -m integration)."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_toys import Suffix, data, exact

from feedprop.llm import LocalModel
from feedprop.optim import OptoPrime
from feedprop.training import Budget, train


@pytest.mark.integration
def test_one_gated_step_with_the_embedded_model(tmp_path: Path) -> None:
    with LocalModel(cache=False, n_parallel=1, n_ctx=4096) as llm:
        model = Suffix("?")
        opt = OptoPrime(model.parameters(), llm=llm, max_tokens=300)
        result = train(
            model,
            data(3),
            exact,
            opt,
            val_set=data(3),
            batch_size=3,
            budget=Budget(calls=3, scope="optimizer"),
            checkpoint=tmp_path,
            progress=False,
        )
    assert result.steps >= 1 and result.usage["optimizer"]["calls"] >= 1
    step = result.history[0]
    # Whatever the model proposed, the trainer's own contract holds with a real reply:
    assert result.val_after is not None and result.val_before is not None
    assert result.val_after >= result.val_before
    assert model.state_dict() == result.best_state
    assert step["candidates"] or step["reason"], "a proposal or the reason there was none is recorded"
    assert result.report_path is not None and "## Parameters" in result.report_path.read_text()
    print(result.report())
