"""The demo's plumbing end to end, with a scripted model instead of the embedded one.

The scripted solver works through each question before answering ("Counting them 1 by 1 ... You
have N items in total."), the way the embedded model does, so the starting extractor (the first
number) is wrong; the scripted optimizer rewrites ``extract_answer`` to take the last number.
The test checks that the demo trains, gates, reports and prints what a newcomer needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import feedprop.llm as fp_llm
from feedprop.demo import CountingSolver, DemoConfig, run_demo
from feedprop.errors import ConfigurationError
from feedprop.tasks import load_bbh

FIXED_EXTRACTION = (
    "def extract_answer(self, response: str) -> str:\n"
    "    import re\n"
    "    numbers = re.findall(r'-?\\d+', response)\n"
    "    return numbers[-1] if numbers else response.strip()\n"
)


@pytest.fixture
def scripted_model() -> Iterator[fp_llm.MockLLM]:
    task = load_bbh("object_counting")
    answers = {ex.input: ex.target for ex in [*task.train, *task.val, *task.test]}

    def handler(messages: list[dict[str, Any]], **params: Any) -> str:
        user = messages[-1]["content"]
        if user in answers:
            return f"Counting them 1 by 1.\nYou have {answers[user]} items in total."
        if "what rule would fix it" in user:  # the optimizer's diagnosis
            return "The extractor takes the first number; the answer is the last number in the reply."
        return f"```python\n{FIXED_EXTRACTION}```"  # a rewrite: only the code

    model = fp_llm.MockLLM(handler)
    fp_llm.set_default(model)
    yield model
    fp_llm.set_default(None)


def test_demo_trains_and_prints_a_readable_result(
    scripted_model: fp_llm.MockLLM, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = DemoConfig(
        n_train=8, n_val=6, n_test=10, steps=2, batch_size=4, run_dir=str(tmp_path), strategy="p", student=None
    )
    result = run_demo(config, progress=False)

    assert result.test_before == 0.0  # the first number of every reply is the 1 of '1 by 1'
    assert result.test_after == 1.0
    assert result.best_state["extract_answer"].strip() == FIXED_EXTRACTION.strip()
    out = capsys.readouterr().out
    assert "held-out test accuracy: 0.0% before -> 100.0% after" in out
    assert "--- extract_answer (learned)" in out and "--- instruction (as it started)" in out
    # the new extractor was screened on the minibatch's recorded replies: no model call for it
    screening = result.run.phases[0].detail["screening"]
    assert screening["saved"] >= config.batch_size
    assert f"answered {screening['saved']} calls from the recorded runs" in out
    assert "extract_answer" in result.run.phases[0].detail["changed"]
    assert (
        "report:" in out
        and result.report_path.exists()
        and "extract_answer` — changed" in result.report_path.read_text()
    )
    assert json.loads(result.parameters_path.read_text())["extract_answer"].strip() == FIXED_EXTRACTION.strip()
    assert result.plot_path is not None and result.plot_path.stat().st_size > 0
    # every demo run gets its own directory, so an earlier run is never overwritten
    second = run_demo(config, progress=False)
    assert second.report_path.parent != result.report_path.parent


def test_training_weights_without_a_student_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="needs a student model"):
        run_demo(DemoConfig(strategy="p -> w", student=None, run_dir=str(tmp_path)), progress=False)


def test_solver_starts_from_the_documented_parameters() -> None:
    solver = CountingSolver()
    names = dict(solver.named_parameters())
    assert set(names) == {"instruction", "demos", "extract_answer"}
    assert names["instruction"].data == "Answer the question."
    assert names["demos"].data == [] and names["demos"].kind == "demos"


def test_the_demo_writes_its_run_page_and_prints_where(
    scripted_model: fp_llm.MockLLM, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = DemoConfig(
        n_train=4, n_val=4, n_test=4, steps=1, batch_size=4, run_dir=str(tmp_path), strategy="p", student=None
    )
    result = run_demo(config, progress=False)
    page = result.run_dir / "run.html"
    assert f"run page: {page}" in capsys.readouterr().out
    html = page.read_text(encoding="utf-8")
    assert html.count('<svg class="chart"') == 2 and '<svg class="graph"' in html
    assert 'data-name="extract_answer"' in html and 'data-name="instruction"' in html
    assert '<table class="items">' in html  # the test set's items, before and after
