"""What a finished joint run leaves for people: a markdown report and a plot of the scores per phase.

The report gives the before/after scores, one row per phase (scores, what was kept, usage and
time), the LLM usage by model, the weight phases' data and fine-tuning figures, and a unified
diff of every parameter from its initial to its kept value (the LoRA adapter appears as its file
and settings). The plot shows the validation and test score after each phase and against the
LLM tokens spent. matplotlib is imported only when plotting.

Example:
    >>> from feedprop.joint.strategy import JointResult, PhaseResult
    >>> phase = PhaseResult(1, "w", val=0.5, test=0.4, kept=True)
    >>> r = JointResult("w", [phase], 0.25, 0.2, 1, {"p": "b"}, 60.0, "done")
    >>> report = render_joint_report(r, {"p": "a"})
    >>> "| test | 0.200 | 0.400 |" in report and "+b" in report
    True
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from feedprop.joint.strategy import PHASE_NAMES, JointResult, _fmt
from feedprop.training.summary import new_figure, parameter_sections, save_png, usage_by_model

__all__ = ["plot_phases", "render_joint_report"]


def render_joint_report(result: JointResult, initial_state: Mapping[str, Any], *, title: str = "") -> str:
    """The markdown report of a joint run; ``initial_state`` is the model's state before it."""
    out = [f"# {title or 'Joint training report'}", ""]
    kept = "the start" if result.best_phase == 0 else f"the program after phase {result.best_phase}"
    out.append(f"- strategy: `{result.strategy}`; kept: {kept}")
    out.append(f"- stopped: {result.stop_reason or 'finished'}; time: {result.seconds / 60:.1f} min")
    out += ["", "## Scores", "", "| set | before | after |", "|---|---|---|"]
    out.append(f"| validation | {_fmt(result.val_before)} | {_fmt(result.val_after)} |")
    out.append(f"| test | {_fmt(result.test_before)} | {_fmt(result.test_after)} |")
    out += ["", "## Phases", "", result.table(), ""]
    out.append(
        "LLM calls and tokens count every call of a phase (workflow runs, validation, trace collection, the "
        "optimizer, a teacher), not the test scoring; calls answered from the response cache are shown in brackets."
    )
    if result.usage:
        out += ["", "## LLM usage by model", "", *usage_by_model(result.usage)]
    for phase in result.phases:
        if phase.kind != "w" or phase.skipped:
            continue
        d, ft = phase.detail, phase.detail.get("finetune") or {}
        out += ["", f"### Phase {phase.label} ({PHASE_NAMES[phase.kind]})", ""]
        out.append(
            f"- data: {d.get('successes', 0)} of {d.get('runs', 0)} runs of the workflow on the training set "
            f"succeeded; their model calls gave {d.get('examples', 0)} fine-tuning examples"
        )
        if ft:
            out.append(
                f"- LoRA: {ft.get('steps', 0)} steps on {ft.get('trained_tokens', 0):,} tokens, "
                f"loss {_fmt(ft.get('first_loss'))} -> {_fmt(ft.get('last_loss'))}"
                + (f"; stopped: {ft['stop_reason']}" if ft.get("stop_reason") else "")
            )
        if d.get("adapter"):
            out.append(f"- adapter: `{d['adapter']}`")
    out += ["", "## Parameters", ""]
    out += parameter_sections(initial_state, result.best_state)
    return "\n".join(out).rstrip("\n") + "\n"


def plot_phases(result: JointResult, path: str | os.PathLike[str]) -> Path | None:
    """Draw the scores after each phase to a PNG at ``path``; ``None`` (with a warning) without matplotlib."""
    fig = new_figure("plot of the phases")
    if fig is None:
        return None
    labels = ["start"] + [f"{p.label} {PHASE_NAMES[p.kind]}" for p in result.phases]
    series = {
        "validation": [result.val_before] + [p.val for p in result.phases],
        "test": [result.test_before] + [p.test for p in result.phases],
    }
    tokens = [0]
    for phase in result.phases:
        tokens.append(tokens[-1] + phase.tokens)
    ax1, ax2 = fig.subplots(1, 2)
    for name, values in series.items():
        pts = [(i, v) for i, v in enumerate(values) if v is not None]
        if pts:
            ax1.plot([i for i, _ in pts], [v for _, v in pts], "-o", label=name)
            ax2.plot([tokens[i] for i, _ in pts], [v for _, v in pts], "-o", label=name)
    ax1.set_xticks(range(len(labels)), labels)
    ax1.set_ylabel("score")
    ax1.set_title("Score after each phase")
    ax2.set_xlabel("LLM tokens spent (training)")
    ax2.set_ylabel("score")
    ax2.set_title("Score vs. tokens")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    return save_png(fig, path)
