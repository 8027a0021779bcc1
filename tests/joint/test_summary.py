"""The report and plot of a joint run, from a hand-built result (no model involved)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from feedprop.joint.strategy import JointResult, PhaseResult
from feedprop.joint.summary import plot_phases, render_joint_report

ADAPTER = {"file": "/runs/demo/adapters/adapter-1.gguf", "sha256": "ab", "scale": 1.0}


def joint_result() -> JointResult:
    prompt = PhaseResult(1, "p", val=0.05, test=0.2, calls=30, prompt_tokens=9000, completion_tokens=800)
    prompt.detail = {"steps": 2, "accepted": 0}
    weights = PhaseResult(2, "w", val=0.3, test=0.425, kept=True, calls=68, prompt_tokens=4000, completion_tokens=1757)
    weights.detail = {
        "examples": 6,
        "runs": 48,
        "successes": 6,
        "finetune": {
            "steps": 6,
            "first_loss": 0.352,
            "last_loss": 0.081,
            "trained_tokens": 420,
            "stop_reason": "budget: seconds (stopped after 6 of 9 steps)",
        },
        "adapter": ADAPTER["file"],
    }
    best = {"instruction": "Answer the question.", "student.adapter": ADAPTER}
    return JointResult("p -> w", [prompt, weights], 0.05, 0.2, 2, best, 600.0, "")


def test_report_gives_usage_by_model() -> None:
    result = joint_result()
    student = {"calls": 98, "prompt_tokens": 13000, "completion_tokens": 2557, "seconds": 60.0}
    student["phases"] = {"evaluation": {"calls": 90}, "test": {"calls": 8}}
    result.usage = {"evaluation": {"calls": 90}, "test": {"calls": 8}, "by_model": {"student": student}}
    report = render_joint_report(result, {})
    assert "## LLM usage by model" in report
    assert "| student | evaluation 90, test 8 | 98 | 0 | 13000 | 2557 | 60.0 |" in report


def test_report_gives_scores_phases_weight_data_and_parameter_diffs() -> None:
    initial = {"instruction": "Answer the question.", "student.adapter": {}}
    report = render_joint_report(joint_result(), initial, title="demo")

    assert report.startswith("# demo\n")
    assert "| validation | 0.050 | 0.300 |" in report
    assert "| test | 0.200 | 0.425 |" in report
    assert "| 2:w (weights) | 0.300 | 0.425 | yes | 68 (+0) | 5757 |" in report
    assert "6 of 48 runs of the workflow on the training set succeeded" in report
    assert "6 steps on 420 tokens, loss 0.352 -> 0.081; stopped: budget: seconds (stopped after 6 of 9 steps)" in report
    assert "kept: the program after phase 2" in report
    assert "### `instruction` — unchanged" in report
    assert "### `student.adapter` — changed" in report and "adapter-1.gguf" in report


def test_plot_is_written_as_a_png(tmp_path: Path) -> None:
    path = plot_phases(joint_result(), tmp_path / "curve.png")

    assert path == tmp_path / "curve.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, no temporary file left behind


def test_without_matplotlib_there_is_a_warning_and_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail

    with pytest.warns(UserWarning, match="no plot of the phases was drawn"):
        assert plot_phases(joint_result(), tmp_path / "curve.png") is None
    assert not (tmp_path / "curve.png").exists()
