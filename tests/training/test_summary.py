"""The markdown report and the learning-curve plot."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from feedprop.training.summary import parameter_diff, plot_curve, render_report


def _run(**overrides: Any) -> SimpleNamespace:
    history = [
        {
            "step": 1,
            "epoch": 0,
            "train_score": 0.5,
            "val_score": 0.6,
            "accepted": True,
            "reason": "accepted: val rose",
            "usage": {"calls": 3},
        },
        {
            "step": 2,
            "epoch": 0,
            "train_score": 0.7,
            "val_score": 0.6,
            "accepted": False,
            "reason": "rejected and reverted: val would drop 0.6 -> 0.4 | x",
            "usage": {"calls": 3},
        },
    ]
    fields: dict[str, Any] = dict(
        history=history,
        initial_state={"prompt": "Answer.\nBe brief.", "k": 3, "same": "x"},
        best_state={"prompt": "Answer step by step.\nBe brief.", "k": 5, "same": "x"},
        config={"model": "M", "optimizer": "OptoPrime", "budget": {"calls": 10, "scope": "all"}},
        val_before=0.2,
        val_after=0.6,
        test_before=0.1,
        test_after=0.5,
        usage={"optimizer": {"calls": 2, "prompt_tokens": 100}, "total": {"calls": 6}},
        stop_reason="completed 1 epoch(s)",
        elapsed_seconds=3.0,
        best_step=1,
    )
    fields.update(overrides)
    return SimpleNamespace(**fields)


def test_report_has_scores_usage_steps_and_diffs() -> None:
    text = render_report(_run())
    assert "| validation | 0.2000 | 0.6000 |" in text and "| test | 0.1000 | 0.5000 |" in text
    assert "| optimizer | 2 | 0 | 100 | 0 |" in text
    assert "val would drop 0.6 -> 0.4 \\| x" in text, "table cells escape pipes"
    assert "-Answer.\n+Answer step by step.\n" in text
    assert "-3\n" in text and "+5\n" in text
    assert "`same` — unchanged" in text
    assert "budget: calls=10 (scope: all)" in text


def test_report_gives_usage_by_model_or_says_it_was_not_recorded() -> None:
    assert "Usage by model was not recorded" in render_report(_run()), "an older run's usage"
    drafter = {"calls": 4, "cache_hits": 1, "prompt_tokens": 40, "completion_tokens": 8, "seconds": 0.25}
    drafter["phases"] = {"evaluation": {"calls": 3, "cache_hits": 1}, "test": {"calls": 1}}
    thinker = {"calls": 2, "prompt_tokens": 100, "phases": {"optimizer": {"calls": 2}}}
    usage = {"optimizer": {"calls": 2, "prompt_tokens": 100}, "by_model": {"drafter": drafter, "o|1": thinker}}
    text = render_report(_run(usage=usage))
    assert "### By model" in text and "Usage by model was not recorded" not in text
    assert "| drafter | evaluation 3 (+1 cached), test 1 | 4 | 1 | 40 | 8 | 0.2 |" in text
    assert "| o\\|1 | optimizer 2 | 2 | 0 | 100 | 0 | 0.0 |" in text, "a model's name is escaped in its cell"


def test_diff_fence_outlasts_backticks_in_values() -> None:
    text = render_report(_run(initial_state={"code": "```\nx\n```"}, best_state={"code": "````\ny"}))
    assert "`````diff" in text


def test_parameter_diff_is_empty_when_unchanged() -> None:
    assert parameter_diff("p", "a", "a") == ""
    assert parameter_diff("p", {"a": 1}, {"a": 2}).count("@@") == 2


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = plot_curve(_run(), tmp_path / "curve.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = plot_curve(_run(history=[]), tmp_path / "empty.png")
    assert empty is not None and empty.exists()


def test_demos_diff_one_line_per_demonstration() -> None:
    before = [{"input": "1+1?", "output": "2"}, {"input": "2+2?", "output": "4"}]
    after = [{"input": "2+2?", "output": "4"}, {"input": "5+5?", "output": "10"}]
    diff = parameter_diff("shots", before, after)
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("---", "+++"))]
    assert changed == ['-{"input": "1+1?", "output": "2"}', '+{"input": "5+5?", "output": "10"}']
