"""Turn the comparison's result files into a markdown table and a plot of accuracy against tokens.

Reads ``<results>/runs/**/seed*.json`` (written by ``run.py``) and writes, next to them:

- ``report.md``: per task, one row per system with held-out test accuracy before and after
  training (mean over seeds), optimizer calls and tokens during training, all training tokens
  (student and optimizer), and wall time; the best accuracy after training in each task is in
  bold; failed runs and runs that went over the budget are flagged; then the machine, the model
  and the exact commands;
- ``accuracy_vs_tokens.png``: test accuracy after training against optimizer tokens, one panel per
  task, one marker per system (start accuracy drawn as a hollow marker at zero tokens).

    python benchmarks/compare/report.py --results benchmarks/results/pilot --title "Pilot"
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from protocol import SYSTEMS, TASKS  # noqa: E402

__all__ = ["load_results", "main", "markdown", "plot"]


def load_results(results: Path) -> list[dict[str, Any]]:
    """Every result file under ``results/runs``, sorted by task, system and seed."""
    runs = []
    for path in sorted((results / "runs").glob("*/*/seed*.json")):
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
        data["_path"] = str(path.relative_to(results))
        runs.append(data)
    order = {name: i for i, name in enumerate(SYSTEMS)}
    task_order = {name: i for i, name in enumerate(TASKS)}
    runs.sort(key=lambda r: (task_order.get(r["task"], 99), order.get(r["system"], 99), r["seed"]))
    return runs


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _fmt_acc(value: float | None, spread: float | None = None) -> str:
    if value is None:
        return "—"
    text = f"{100 * value:.1f}"
    return f"{text} ± {100 * spread:.1f}" if spread else text


def _k(tokens: float | None) -> str:
    return "—" if tokens is None else f"{tokens / 1000:.1f}k"


def _points(fraction: float | None) -> str:
    """A change of accuracy in signed percentage points; float dust never prints as -0.0."""
    if fraction is None:
        return "—"
    points = round(100 * fraction, 1)
    return f"{points + 0.0:+.1f}"  # + 0.0 turns -0.0 into 0.0


def _minutes(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """task -> system -> aggregated figures (means over the seeds of successful runs)."""
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        grouped[run["task"]][run["system"]].append(run)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for task, systems in grouped.items():
        out[task] = {}
        for system, items in systems.items():
            ok = [r for r in items if r.get("status") == "ok"]
            train = [r["usage"]["train"] for r in ok if r.get("usage", {}).get("complete")]
            after = [r["test_after"] for r in ok if r.get("test_after") is not None]
            out[task][system] = {
                "seeds": len(items),
                "ok": len(ok),
                "errors": [r.get("error") for r in items if r.get("status") != "ok"],
                "before": _mean([r["test_before"] for r in ok if r.get("test_before") is not None]),
                "after": _mean(after),
                "after_sd": statistics.pstdev(after) if len(after) > 1 else None,
                "opt_calls": _mean([u["optimizer"]["calls"] for u in train]),
                "opt_tokens": _mean([u["optimizer"]["tokens"] for u in train]),
                "train_tokens": _mean([u["optimizer"]["tokens"] + u["student"]["tokens"] for u in train]),
                "student_calls": _mean([u["student"]["calls"] for u in train]),
                "minutes": _mean([r["wall_seconds"] / 60 for r in ok]),
                "train_minutes": _mean([r["train_seconds"] / 60 for r in ok if r.get("train_seconds") is not None]),
                "over_budget": sum(not r.get("budget", {}).get("respected", True) for r in ok),
                "test_n": max((len(r.get("test_items_after") or []) for r in ok), default=0),
            }
    return out


def _across_tasks(summary: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """One row per system over every task it finished: rows won, mean change, what it spent."""
    systems = {system for rows in summary.values() for system in rows}
    order = [s for s in SYSTEMS if s in systems] + sorted(systems - set(SYSTEMS))
    lines = [
        "## Across tasks",
        "",
        "Per system, over the tasks where it has a successful run: how many rows it is best in (ties count "
        "for each), the mean change of test accuracy, the sum over tasks of its tokens per run (mean over "
        "seeds), and the machine time of all its runs.",
        "",
        "| system | tasks | best in | mean Δ | optimizer tokens | train tokens | run hours |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    machine_minutes = 0.0
    for system in order:
        done = [rows[system] for rows in summary.values() if system in rows and rows[system]["ok"]]
        wins = 0
        for rows in summary.values():
            s = rows.get(system)
            best = max((r["after"] for r in rows.values() if r["after"] is not None), default=None)
            if s and s["ok"] and best is not None and s["after"] is not None and abs(s["after"] - best) < 1e-9:
                wins += 1
        deltas = [s["after"] - s["before"] for s in done if s["after"] is not None and s["before"] is not None]
        mean_delta = _mean(deltas)
        minutes = sum((s["minutes"] or 0.0) * s["ok"] for s in done)
        machine_minutes += minutes
        lines.append(
            f"| {system} | {len(done)} | {wins} | "
            f"{_points(mean_delta)} | "
            f"{_k(sum(s['opt_tokens'] or 0.0 for s in done))} | {_k(sum(s['train_tokens'] or 0.0 for s in done))} | "
            f"{minutes / 60:.1f} |"
        )
    lines += ["", f"Machine time of the successful runs in this report: {machine_minutes / 60:.1f} hours.", ""]
    return lines


def _sources(runs: list[dict[str, Any]]) -> str:
    """Which commits the runs were made from, as a clause for the header (empty if none recorded)."""
    counts = Counter(
        str(source.get("commit", "?"))[:10] + (" with local changes" if source.get("local_changes") else "")
        for source in (run.get("source") for run in runs)
        if source
    )
    if not counts:
        return ""
    return "; code: " + ", ".join(f"{name} ({n} runs)" for name, n in counts.most_common())


def markdown(runs: list[dict[str, Any]], *, title: str, commands: list[str], notes: list[str]) -> str:
    """The report text."""
    summary = summarize(runs)
    lines = [f"# {title}", ""]
    if not runs:
        return "\n".join([*lines, "No result files yet.", ""])
    first = next((r for r in runs if r.get("status") == "ok"), runs[0])
    preset = first.get("preset", {})
    machine = first.get("machine", {})
    endpoint = first.get("endpoint", {})
    lines += [
        f"- Model: `{first.get('model')}` served by {endpoint.get('kind', '?')}"
        + (f", {endpoint.get('n_parallel')} parallel slots" if endpoint.get("n_parallel") else ""),
        f"- Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, {machine.get('platform', '?')}",
        f"- Preset `{preset.get('name')}`: {preset.get('train')} train / {preset.get('val')} val / "
        f"{preset.get('test')} test items drawn from the published splits (test subsample fixed, seed 0); "
        f"budget {preset.get('optimizer_calls')} optimizer calls and {preset.get('optimizer_tokens')} optimizer "
        f"tokens per run, counted at the endpoint; minibatch {preset.get('batch_size')}, up to "
        f"{preset.get('epochs')} epoch(s); reply caps {preset.get('student_max_tokens')} (student) / "
        f"{preset.get('optimizer_max_tokens')} (optimizer) tokens",
        f"- Runs: {len(runs)} result files, {sum(r.get('status') == 'ok' for r in runs)} succeeded" + _sources(runs),
        "",
        "Accuracy is held-out test accuracy in percent (mean over seeds; ± is the spread across seeds). "
        "Optimizer calls/tokens are the optimizer's traffic during training; *train tokens* adds the "
        "student's traffic during training (minibatches, validation, candidate scoring). *Train min* is the "
        "training phase; *run min* the whole run, both test evaluations and (for peers) starting their "
        "worker process included. **Bold**: best accuracy after training on the task. "
        "† the run spent more than the budget (its optimizer could not be stopped at it); "
        "✗ the run failed.",
        "",
    ]
    for task in [t for t in TASKS if t in summary] + [t for t in summary if t not in TASKS]:
        rows = summary[task]
        best = max((s["after"] for s in rows.values() if s["after"] is not None), default=None)
        test_n = max(s["test_n"] for s in rows.values())
        lines += [
            f"## {task} ({test_n} test items)",
            "",
            "| system | before | after | Δ | optimizer calls | optimizer tokens | train tokens | train min | run min |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for system in [s for s in SYSTEMS if s in rows] + [s for s in rows if s not in SYSTEMS]:
            s = rows[system]
            if not s["ok"]:
                lines.append(f"| {system} ✗ | — | — | — | — | — | — | — | — |")
                continue
            after = _fmt_acc(s["after"], s["after_sd"])
            if best is not None and s["after"] is not None and abs(s["after"] - best) < 1e-9:
                after = f"**{after}**"
            delta = None if s["after"] is None or s["before"] is None else s["after"] - s["before"]
            flag = " †" if s["over_budget"] else ""
            flag += " ✗" if s["ok"] < s["seeds"] else ""
            calls = "—" if s["opt_calls"] is None else f"{s['opt_calls']:.0f}"
            lines.append(
                f"| {system}{flag} | {_fmt_acc(s['before'])} | {after} | "
                f"{_points(delta)} | {calls} | {_k(s['opt_tokens'])} | "
                f"{_k(s['train_tokens'])} | {_minutes(s['train_minutes'])} | {_minutes(s['minutes'])} |"
            )
        lines.append("")
        failed = [(system, e) for system, s in rows.items() for e in s["errors"] if e]
        for system, error in failed:
            lines.append(f"- ✗ {system}: {str(error)[:300]}")
        if failed:
            lines.append("")
    lines += _across_tasks(summary)
    lines += ["## Final prompts", ""]
    for run in runs:
        if run.get("status") == "ok":
            prompt = str(run.get("final_prompt") or "").strip().replace("\n", " ")
            state = run.get("final_state") or {}
            demos = f" (+{state['demos']} demos)" if state.get("demos") else ""
            lines.append(
                f"- {run['task']} / {run['system']} / seed {run['seed']}{demos}: "
                f"{prompt[:300]}{'…' if len(prompt) > 300 else ''}"
            )
    lines += ["", "## How the runs were made", ""]
    lines += [f"- {n}" for n in notes]
    if commands:
        lines += ["", "```", *commands, "```"]
    lines += [
        "",
        "Per-run files (sizes, subsample indices, every optimizer call's tokens, per-item outputs): "
        "`runs/<system>/<task>/seed<k>.json`.",
        "",
    ]
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path, *, title: str) -> Path:
    """Accuracy after training against optimizer tokens, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(runs)
    tasks = [t for t in TASKS if t in summary] + [t for t in summary if t not in TASKS]
    cols = min(3, max(1, len(tasks)))
    rows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4 * rows), squeeze=False)
    markers = "osD^vP*X"
    colors = plt.get_cmap("tab10")
    for i, task in enumerate(tasks):
        ax = axes[i // cols][i % cols]
        for j, system in enumerate(SYSTEMS):
            s = summary[task].get(system)
            if not s or not s["ok"] or s["after"] is None:
                continue
            x = (s["opt_tokens"] or 0) / 1000
            ax.plot([0, x], [100 * (s["before"] or 0), 100 * s["after"]], color=colors(j), lw=0.8, alpha=0.5)
            ax.scatter(
                [0],
                [100 * (s["before"] or 0)],
                marker=markers[j % len(markers)],
                facecolors="none",
                edgecolors=[colors(j)],
                s=40,
            )
            ax.scatter(
                [x],
                [100 * s["after"]],
                marker=markers[j % len(markers)],
                color=colors(j),
                s=60,
                label=system + (" †" if s["over_budget"] else ""),
            )
        ax.set_title(task)
        ax.set_xlabel("optimizer tokens during training (thousands)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for k in range(len(tasks), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Markdown table and plot from the comparison's result files.")
    parser.add_argument(
        "--results",
        type=Path,
        default=HERE.parents[0] / "results" / "matrix",
        help="results directory holding runs/ (default: benchmarks/results/matrix)",
    )
    parser.add_argument("--title", default="feedprop vs trace-opt, textgrad and dspy")
    parser.add_argument(
        "--command",
        action="append",
        default=[],
        help="a command used to make the runs, shown in the report (repeatable)",
    )
    parser.add_argument("--note", action="append", default=[], help="a line for the 'how' section (repeatable)")
    args = parser.parse_args(argv)
    runs = load_results(args.results)
    commands = args.command or sorted({r["command"] for r in runs if r.get("command")})
    notes = args.note or [
        "feedprop, trace-opt and textgrad train the same one-call workflow (system prompt + question); dspy "
        "trains its idiomatic ChainOfThought('question -> answer') program; all start from the same instruction "
        "and reach one llama.cpp server through a counting proxy (student port, optimizer port).",
        "Budgets stop feedprop (fp.Budget), trace-opt and textgrad (harness loop + proxy refusal) and "
        "BootstrapFewShot (proxy refusal); COPRO's breadth/depth are derived from the budget; MIPROv2 runs "
        "dspy's auto='light' preset as named.",
    ]
    report = markdown(runs, title=args.title, commands=commands, notes=notes)
    (args.results / "report.md").write_text(report, encoding="utf-8")
    png = plot(runs, args.results / "accuracy_vs_tokens.png", title=args.title)
    print(f"wrote {args.results / 'report.md'} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
