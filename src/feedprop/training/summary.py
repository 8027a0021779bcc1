"""What a finished run leaves for people: a markdown report and a learning-curve plot.

The report gives the before/after scores, the LLM usage by phase and by model, one line per
step (kept or reverted, and why) and a unified diff of every parameter from its initial to its
best value. The plot shows the training minibatch score and the validation score per step, and
the validation score against LLM calls spent. matplotlib is imported only when plotting,
through its non-interactive Agg canvas, so training never needs a display.

Example:
    >>> from types import SimpleNamespace
    >>> run = SimpleNamespace(history=[], initial_state={"p": "a"}, best_state={"p": "b"}, config={},
    ...     val_before=0.0, val_after=1.0, test_before=None, test_after=None, usage={}, stop_reason="done",
    ...     elapsed_seconds=1.0, best_step=0)
    >>> "-a" in render_report(run) and "+b" in render_report(run)
    True
"""

from __future__ import annotations

import difflib
import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from feedprop._files import replacing

__all__ = [
    "new_figure",
    "parameter_diff",
    "parameter_sections",
    "plot_curve",
    "pool_section",
    "render_report",
    "save_png",
    "usage_by_model",
    "where_calls_went",
]


def _is_demos(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(d, dict) and set(d) == {"input", "output"} and all(isinstance(v, str) for v in d.values())
            for d in value
        )
    )


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if _is_demos(value):  # demonstrations: one line each, so a diff shows which were added or dropped
        return "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in value)
    return json.dumps(value, indent=2, sort_keys=True, default=repr)


def parameter_diff(name: str, before: Any, after: Any) -> str:
    """A unified diff of one parameter's value (JSON-formatted when it is not text); empty if unchanged.

    Demonstrations (a list of ``{"input", "output"}``) show one line per demonstration.

    Example:
        >>> old = [{"input": "1+1?", "output": "2"}, {"input": "2+2?", "output": "4"}]
        >>> print(parameter_diff("shots", old, old[1:] + [{"input": "3+3?", "output": "6"}]), end="")
        --- shots (before)
        +++ shots (after)
        @@ -1,2 +1,2 @@
        -{"input": "1+1?", "output": "2"}
         {"input": "2+2?", "output": "4"}
        +{"input": "3+3?", "output": "6"}
    """
    old, new = _text(before), _text(after)
    if old == new:
        return ""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), f"{name} (before)", f"{name} (after)"
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of value\n" for line in lines)


def _fence(body: str) -> str:
    # A fence longer than any run of backticks inside, so parameter text can never close it.
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    return "`" * max(3, longest + 1)


def _fmt(score: Any) -> str:
    return "–" if score is None else f"{score:.4f}"


def _cell(text: Any, limit: int = 140) -> str:
    s = str(text).replace("|", "\\|").replace("\n", " ")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def where_calls_went(entry: Mapping[str, Any]) -> str:
    """The phases a model's calls were counted in, from its ``by_model`` entry: calls, then cache hits.

    Example:
        >>> where_calls_went({"phases": {"evaluation": {"calls": 12, "cache_hits": 2}, "test": {"calls": 5}}})
        'evaluation 12 (+2 cached), test 5'
    """
    parts = []
    phases = entry.get("phases")
    for phase, counts in (phases if isinstance(phases, Mapping) else {}).items():
        if not isinstance(counts, Mapping):
            continue
        calls, hits = int(counts.get("calls", 0) or 0), int(counts.get("cache_hits", 0) or 0)
        if calls or hits:
            parts.append(f"{phase} {calls}" + (f" (+{hits} cached)" if hits else ""))
    return ", ".join(parts)


def usage_by_model(usage: Mapping[str, Any]) -> list[str]:
    """Markdown lines for a run's usage by model (``usage["by_model"]``), or a line saying it was not recorded.

    Example:
        >>> entry = {"calls": 3, "cache_hits": 0, "prompt_tokens": 90, "completion_tokens": 9, "seconds": 1.5,
        ...          "phases": {"optimizer": {"calls": 3}}}
        >>> usage_by_model({"by_model": {"gpt-4o": entry}})[-1]
        '| gpt-4o | optimizer 3 | 3 | 0 | 90 | 9 | 1.5 |'
        >>> usage_by_model({"optimizer": {"calls": 3}})[0][:40]
        'Usage by model was not recorded: the run'
    """
    by_model = usage.get("by_model")
    if not isinstance(by_model, Mapping):
        return [
            "Usage by model was not recorded: the run was written before feedprop counted usage per model, or it "
            "resumed such a run."
        ]
    if not by_model:
        return ["No model was called."]
    out = [
        "| model | phases (calls) | calls | cache hits | prompt tokens | completion tokens | model seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, u in by_model.items():
        u = u if isinstance(u, Mapping) else {}
        out.append(
            f"| {_cell(model)} | {where_calls_went(u)} | {int(u.get('calls', 0))} | {int(u.get('cache_hits', 0))} | "
            f"{int(u.get('prompt_tokens', 0))} | {int(u.get('completion_tokens', 0))} | "
            f"{float(u.get('seconds', 0.0)):.1f} |"
        )
    return out


def render_report(run: Any) -> str:
    """The markdown report of a run (a :class:`~feedprop.training.TrainResult` or anything shaped like it)."""
    history: list[dict[str, Any]] = list(run.history)
    kept = sum(bool(h.get("accepted")) for h in history)
    config = dict(run.config)
    out = ["# Training report", ""]
    if config:
        out.append(f"- model: `{config.get('model')}`; optimizer: `{config.get('optimizer')}`")
        out.append(
            f"- data: {config.get('train_size')} train, {config.get('val_size')} validation, "
            f"{config.get('test_size')} test; batch size {config.get('batch_size')}, "
            f"epochs {config.get('epochs')}, seed {config.get('seed')}, "
            f"search {config.get('search', 'greedy')}, beam width {config.get('beam_width')}"
        )
        budget = config.get("budget") or {}
        limits = [f"{k}={budget[k]}" for k in ("calls", "tokens", "seconds") if budget.get(k) is not None]
        out.append(f"- budget: {', '.join(limits) if limits else 'none'} (scope: {budget.get('scope', 'all')})")
    out.append(
        f"- steps: {len(history)} ({kept} kept, {len(history) - kept} reverted or empty); best at step {run.best_step}"
    )
    out.append(f"- stopped: {run.stop_reason or 'unknown'}; time: {run.elapsed_seconds:.1f} s")
    out += ["", "## Scores", "", "| set | before | after |", "|---|---|---|"]
    out.append(f"| validation | {_fmt(run.val_before)} | {_fmt(run.val_after)} |")
    out.append(f"| test | {_fmt(run.test_before)} | {_fmt(run.test_after)} |")
    out += ["", "## LLM usage", ""]
    usage = dict(run.usage)
    if usage:
        out += [
            "| phase | calls | cache hits | prompt tokens | completion tokens | model seconds |",
            "|---|---|---|---|---|---|",
        ]
        for phase in ("optimizer", "evaluation", "test", "total"):
            u = usage.get(phase) or {}
            out.append(
                f"| {phase} | {int(u.get('calls', 0))} | {int(u.get('cache_hits', 0))} | "
                f"{int(u.get('prompt_tokens', 0))} | {int(u.get('completion_tokens', 0))} | "
                f"{float(u.get('seconds', 0.0)):.1f} |"
            )
        out += ["", "`evaluation` is training-time scoring (minibatches and validation); `test` is outside any budget."]
        out += ["", "### By model", "", *usage_by_model(usage)]
    else:
        out.append("No usage recorded.")
    out += ["", "## Steps", ""]
    if history:
        out += ["| step | epoch | train | val | kept | calls | reason |", "|---|---|---|---|---|---|---|"]
        for h in history:
            calls = (h.get("usage") or {}).get("calls", "")
            out.append(
                f"| {h.get('step')} | {h.get('epoch')} | {_fmt(h.get('train_score'))} | {_fmt(h.get('val_score'))} | "
                f"{'yes' if h.get('accepted') else 'no'} | {calls} | {_cell(h.get('reason', ''))} |"
            )
    else:
        out.append("No step was completed.")
    out += pool_section(getattr(run, "pool", None) or [], run.best_state)
    out += ["", "## Parameters", ""]
    out += parameter_sections(run.initial_state, run.best_state)
    return "\n".join(out).rstrip("\n") + "\n"


def pool_section(pool: list[dict[str, Any]], best: Any) -> list[str]:
    """Markdown lines: the programs of a Pareto search's pool, with lineage and validation score.

    Example:
        >>> pool_section([{"id": 0, "parents": [], "step": 0, "origin": "start", "val": 0.5, "size": 3,
        ...                "params": {"p": "abc"}}], {"p": "abc"})[-1]
        '| #0 (best) | – | 0 | start | 0.5000 | 3 |'
    """
    if not pool:
        return []
    out = ["", "## Pool", "", "| program | parents | step | origin | val | size |", "|---|---|---|---|---|---|"]
    for p in pool:
        mark = " (best)" if p.get("params") == best else ""
        parents = ", ".join(f"#{i}" for i in p.get("parents", [])) or "–"
        out.append(
            f"| #{p.get('id')}{mark} | {parents} | {p.get('step')} | {p.get('origin')} | {_fmt(p.get('val'))} | "
            f"{p.get('size')} |"
        )
    return out


def parameter_sections(initial: Any, best: Any) -> list[str]:
    """Markdown lines: a ``### `name` — changed`` section with a diff per parameter, or ``— unchanged``.

    Example:
        >>> parameter_sections({"p": "a", "q": 1}, {"p": "b", "q": 1})[0]
        '### `p` — changed'
    """
    initial, best = dict(initial), dict(best)
    out: list[str] = []
    for name in sorted(set(initial) | set(best)):
        diff = parameter_diff(name, initial.get(name), best.get(name))
        if not diff:
            out += [f"### `{name}` — unchanged", ""]
            continue
        fence = _fence(diff)
        out += [f"### `{name}` — changed", "", f"{fence}diff", diff.rstrip("\n"), fence, ""]
    return out


def plot_curve(run: Any, path: str | os.PathLike[str]) -> Path | None:
    """Draw the learning curve of ``run`` to a PNG at ``path``; ``None`` (with a warning) without matplotlib."""
    fig = new_figure("learning-curve plot")
    if fig is None:
        return None
    history: list[dict[str, Any]] = list(run.history)
    steps = [0] + [int(h["step"]) for h in history]
    val = [run.val_before] + [h.get("val_score") for h in history]
    calls = [0]
    for h in history:
        calls.append(calls[-1] + int((h.get("usage") or {}).get("calls", 0)))
    ax1, ax2 = fig.subplots(1, 2)
    if history:
        ax1.plot(steps[1:], [h.get("train_score") for h in history], "o", alpha=0.5, label="train minibatch")
    if any(v is not None for v in val):
        pts = [(s, v) for s, v in zip(steps, val, strict=True) if v is not None]
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], "-", drawstyle="steps-post", label="validation (kept)")
        ax2.plot([c for c, v in zip(calls, val, strict=True) if v is not None], [v for v in val if v is not None], "-o")
    rejected = [(int(h["step"]), h.get("val_score")) for h in history if not h.get("accepted")]
    if rejected and any(v is not None for _, v in rejected):
        ax1.plot(
            [s for s, v in rejected if v is not None],
            [v for _, v in rejected if v is not None],
            "x",
            color="tab:red",
            label="update reverted",
        )
    ax1.set_xlabel("step")
    ax1.set_ylabel("score")
    ax1.set_title("Learning curve")
    ax1.legend(loc="lower right")
    ax2.set_xlabel("LLM calls (training)")
    ax2.set_ylabel("validation score")
    ax2.set_title("Validation score vs. calls")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)


def new_figure(what: str) -> Any | None:
    """A 10x4-inch matplotlib ``Figure`` (no display needed), or ``None`` with a warning naming
    ``what`` when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn(f"matplotlib is not installed, so no {what} was drawn; pip install 'feedprop[viz]'", stacklevel=3)
        return None
    return Figure(figsize=(10, 4), dpi=100)


def save_png(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write a matplotlib figure to ``path`` as PNG atomically (a reader never sees half a file)."""
    with replacing(path) as temp:
        fig.savefig(temp, format="png")
    return Path(path)
