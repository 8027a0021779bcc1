"""Turn the comparison's result files into a markdown report with paired statistics, and plots.

Reads ``<results>/runs/**/seed*.json`` (written by ``run.py``) and writes, next to them:

- ``report.md``: per task, one row per system: test accuracy before (the shared baseline) and
  after training (mean over seeds), the change with its paired bootstrap 90% interval over items
  (items pooled across seeds), training tokens (student + optimizer, the budget's measure) and
  the overshoot, validation score at the budget (from the run's curve), time; then the verdict:
  "best" only where the paired interval of the top system's difference to the runner-up excludes
  zero, else "no separation"; failed runs and overruns flagged; then the machine, the models and
  the exact commands;
- ``accuracy_vs_tokens.png``: test accuracy after training against training tokens, per task;
- ``val_vs_tokens.png``: each run's validation score against cumulative training tokens, after
  every step, per task (where the system exposes steps), with the budget marked.

    python benchmarks/compare/report.py --results benchmarks/results/v2 --title "Comparison v2"
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
from stats import Interval, paired_interval, separation  # noqa: E402

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


def _item_scores(items: list[dict[str, Any]] | None) -> dict[int, float]:
    return {int(i["index"]): float(i["score"]) for i in items or [] if "index" in i and "score" in i}


def _train_tokens(run: dict[str, Any]) -> float | None:
    """Training tokens of both roles: the budget's measure (from the proxy's training phase)."""
    budget = run.get("budget") or {}
    if "used_tokens" in budget and "train_tokens" in budget:
        return float(budget["used_tokens"])
    train = (run.get("usage") or {}).get("train")
    if train:
        return float(train["optimizer"]["tokens"] + train["student"]["tokens"])
    return None


def value_at_budget(curve: list[dict[str, Any]] | None, budget: float | None) -> float | None:
    """The validation score of the last curve point within ``budget`` tokens (``None`` without a curve).

    Example:
        >>> value_at_budget([{"tokens": 0, "val_score": 0.2}, {"tokens": 90, "val_score": 0.5},
        ...                  {"tokens": 130, "val_score": 0.7}], 100)
        0.5
    """
    if not curve or budget is None:
        return None
    within = [
        p for p in curve if p.get("tokens") is not None and p["tokens"] <= budget and p.get("val_score") is not None
    ]
    return float(within[-1]["val_score"]) if within else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """task -> system -> aggregated figures (means over the seeds of successful runs, pooled paired items)."""
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        grouped[run["task"]][run["system"]].append(run)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for task, systems in grouped.items():
        out[task] = {}
        for system, items in systems.items():
            ok = [r for r in items if r.get("status") == "ok"]
            after = [r["test_after"] for r in ok if r.get("test_after") is not None]
            before_pooled: list[float] = []
            after_pooled: list[float] = []
            keyed: dict[tuple[int, int], float] = {}
            for r in ok:
                b, a = _item_scores(r.get("test_items_before")), _item_scores(r.get("test_items_after"))
                for k in sorted(set(b) & set(a)):
                    before_pooled.append(b[k])
                    after_pooled.append(a[k])
                for k, v in a.items():
                    keyed[(int(r["seed"]), k)] = v
            budgets = [float((r.get("budget") or {}).get("train_tokens") or 0) or None for r in ok]
            overshoot = [float((r.get("budget") or {}).get("overshoot") or 0.0) for r in ok]
            at_budget = [value_at_budget(r.get("curve"), b) for r, b in zip(ok, budgets, strict=True)]
            out[task][system] = {
                "seeds": len(items),
                "ok": len(ok),
                "seed_list": sorted(int(r["seed"]) for r in ok),
                "errors": [r.get("error") for r in items if r.get("status") != "ok"],
                "before": _mean([r["test_before"] for r in ok if r.get("test_before") is not None]),
                "after": _mean(after),
                "after_sd": statistics.pstdev(after) if len(after) > 1 else None,
                "change": paired_interval(after_pooled, before_pooled) if after_pooled else None,
                "items_after": keyed,
                "train_tokens": _mean([t for t in (_train_tokens(r) for r in ok) if t is not None]),
                "opt_tokens": _mean(
                    [
                        float(r["usage"]["train"]["optimizer"]["tokens"])
                        for r in ok
                        if (r.get("usage") or {}).get("train")
                    ]
                ),
                "budget": _mean([b for b in budgets if b]),
                "overshoot": max(overshoot, default=0.0),
                "val_at_budget": _mean([v for v in at_budget if v is not None]),
                "unchanged": sum(bool(r.get("unchanged")) for r in ok),
                "minutes": _mean([r["wall_seconds"] / 60 for r in ok]),
                "train_minutes": _mean([r["train_seconds"] / 60 for r in ok if r.get("train_seconds") is not None]),
                "over_budget": sum(not (r.get("budget") or {}).get("respected", True) for r in ok),
                "test_n": max((len(r.get("test_items_after") or []) for r in ok), default=0),
            }
    return out


def verdicts(summary: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """task -> :class:`stats.Separation` over the systems with successful runs (items pooled across seeds)."""
    return {
        task: separation({s: row["items_after"] for s, row in rows.items() if row["ok"] and row["items_after"]})
        for task, rows in summary.items()
    }


def _ci(interval: Interval | None) -> str:
    if interval is None:
        return "—"
    return f"{_points(interval.mean)} [{_points(interval.low)}, {_points(interval.high)}]"


def _across_tasks(summary: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """One row per system over every task it finished: rows won, mean change, what it spent."""
    systems = {system for rows in summary.values() for system in rows}
    order = [s for s in SYSTEMS if s in systems] + sorted(systems - set(SYSTEMS))
    lines = [
        "## Across tasks",
        "",
        "Per system, over the tasks where it has a successful run: on how many tasks it is best (its paired "
        "interval against the runner-up excludes zero), the mean change of test accuracy, the sum over tasks of "
        "its optimizer and training tokens per run (mean over seeds), and the machine time of all its runs.",
        "",
        "| system | tasks | best in | mean Δ | optimizer tokens | train tokens | run hours |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    machine_minutes = 0.0
    for system in order:
        done = [rows[system] for rows in summary.values() if system in rows and rows[system]["ok"]]
        wins = sum(v.best == system for v in verdicts(summary).values())
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
    models = first.get("models") or {"student": first.get("model"), "optimizer": first.get("model")}
    budget = preset.get("train_tokens")
    lines += [
        f"- Models: student `{models.get('student')}`, optimizer `{models.get('optimizer')}`, served by "
        f"{endpoint.get('kind', '?')}"
        + (f", {endpoint.get('n_parallel')} parallel slots" if endpoint.get("n_parallel") else ""),
        f"- Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, {machine.get('platform', '?')}",
        f"- Preset `{preset.get('name')}`: {preset.get('train')} train / {preset.get('val')} val / "
        f"{preset.get('test')} test items drawn from the published splits (test subsample fixed, seed 0); "
        f"budget {budget} training tokens per run (student and optimizer, counted at the proxy); minibatch "
        f"{preset.get('batch_size')}, up to {preset.get('epochs')} epoch(s); reply caps "
        f"{preset.get('student_max_tokens')} (student) / {preset.get('optimizer_max_tokens')} (optimizer) tokens; "
        f"test pass {preset.get('test_workers', '?')} request(s) at a time, temperature 0, seed "
        f"{preset.get('request_seed', '?')}",
        f"- Runs: {len(runs)} result files, {sum(r.get('status') == 'ok' for r in runs)} succeeded" + _sources(runs),
        "",
        "Accuracy is held-out test accuracy in percent (mean over seeds; ± is the spread across seeds). *Before* "
        "is the task's shared baseline: the starting one-call program, scored once. *Δ [90% CI]* is the change "
        "after − before in points with its paired percentile bootstrap interval over the test items (pooled "
        "across seeds). *Train tokens* are the training phase's tokens, student and optimizer, counted at the "
        "proxy: the budget; *over* is the overshoot beyond it (calls in flight when it was reached, or a system "
        "that cannot be stopped). *Val@budget* is the validation score of the "
        "last step within the budget (systems that expose steps). = the program ended unchanged (its test pass "
        "is the baseline's: scoring repeats); † calls started after the budget was spent (a system that cannot be "
        "stopped at it); ✗ the run failed. The verdict "
        "under each table names a best system only where the paired 90% interval of its difference to the "
        "runner-up excludes zero.",
        "",
    ]
    judged = verdicts(summary)
    for task in [t for t in TASKS if t in summary] + [t for t in summary if t not in TASKS]:
        rows = summary[task]
        test_n = max(s["test_n"] for s in rows.values())
        verdict = judged[task]
        lines += [
            f"## {task} ({test_n} test items)",
            "",
            "| system | seeds | before | after | Δ [90% CI] | train tokens | over | val@budget | train min | run min |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        for system in [s for s in SYSTEMS if s in rows] + [s for s in rows if s not in SYSTEMS]:
            s = rows[system]
            if not s["ok"]:
                lines.append(f"| {system} ✗ | — | — | — | — | — | — | — | — | — |")
                continue
            after = _fmt_acc(s["after"], s["after_sd"])
            if verdict.best == system:
                after = f"**{after}**"
            flag = " †" if s["over_budget"] else ""
            flag += " ✗" if s["ok"] < s["seeds"] else ""
            flag += (
                " ="
                if s["unchanged"] == s["ok"] and SYSTEMS.get(system, None) is not None and SYSTEMS[system].trains
                else ""
            )
            over = f"{100 * s['overshoot']:.0f}%" if s["overshoot"] else "—"
            val = "—" if s["val_at_budget"] is None else f"{100 * s['val_at_budget']:.1f}"
            lines.append(
                f"| {system}{flag} | {','.join(map(str, s['seed_list']))} | {_fmt_acc(s['before'])} | {after} | "
                f"{_ci(s['change'])} | {_k(s['train_tokens'])} | {over} | {val} | "
                f"{_minutes(s['train_minutes'])} | {_minutes(s['minutes'])} |"
            )
        lines.append("")
        if verdict.runner_up is not None:
            lines.append(
                f"Verdict: **{verdict.verdict}** ({verdict.top} − {verdict.runner_up}, paired over "
                f"{verdict.interval.n if verdict.interval else 0} items: {_ci(verdict.interval)} points)."
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
    """Accuracy after training against training tokens (student + optimizer), one panel per task."""
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
            x = (s["train_tokens"] or 0) / 1000
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
        ax.set_xlabel("training tokens, student + optimizer (thousands)")
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


def plot_curves(runs: list[dict[str, Any]], path: Path, *, title: str) -> Path:
    """Validation score against cumulative training tokens after every step, one panel per task.

    One line per run (system and seed; later seeds dashed), steps as markers (filled: the step
    was kept); the budget is a vertical line. Runs without steps (dspy's own loops) are absent.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_curves = [r for r in runs if r.get("status") == "ok" and r.get("curve")]
    tasks = [t for t in TASKS if any(r["task"] == t for r in runs)]
    tasks += sorted({r["task"] for r in runs} - set(tasks))
    cols = min(2, max(1, len(tasks)))
    rows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4 * rows), squeeze=False)
    colors = plt.get_cmap("tab10")
    order = {name: i for i, name in enumerate(SYSTEMS)}
    for i, task in enumerate(tasks):
        ax = axes[i // cols][i % cols]
        budgets = set()
        for run in sorted(
            (r for r in with_curves if r["task"] == task), key=lambda r: (order.get(r["system"], 99), r["seed"])
        ):
            points = [p for p in run["curve"] if p.get("tokens") is not None and p.get("val_score") is not None]
            if not points:
                continue
            color = colors(order.get(run["system"], 9) % 10)
            xs = [p["tokens"] / 1000 for p in points]
            ys = [100 * p["val_score"] for p in points]
            ax.plot(
                xs,
                ys,
                color=color,
                lw=1.2,
                ls="-" if run["seed"] == 0 else "--",
                label=f"{run['system']} s{run['seed']}",
            )
            kept = [(x, y) for x, y, p in zip(xs, ys, points, strict=True) if p.get("accepted")]
            ax.scatter([x for x, _ in kept], [y for _, y in kept], color=color, s=18)
            budget = (run.get("budget") or {}).get("train_tokens")
            if budget:
                budgets.add(budget)
        for budget in budgets:
            ax.axvline(budget / 1000, color="grey", lw=0.8, ls=":")
        ax.set_title(task)
        ax.set_xlabel("training tokens, student + optimizer (thousands)")
        ax.set_ylabel("validation score (%)")
        ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    for k in range(len(tasks), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(title + ": validation score after every step")
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
        default=HERE.parents[0] / "results" / "v2",
        help="results directory holding runs/ (default: benchmarks/results/v2)",
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
        "Every system trains the same one-call program (system prompt = the instruction, user message = the "
        "question; dspy's Predict rendered that way by the harness's OneCallAdapter) from the same instruction; "
        "dspy ChainOfThought is reported unoptimized as its own row. All reach the models through a counting "
        "proxy (student port, optimizer port), which counts every token by phase.",
        "The budget is the training phase's tokens, student and optimizer. feedprop (fp.Budget), trace-opt and "
        "textgrad (the harness's gated loop) stop themselves at it; GEPA's max_metric_calls is derived from it; "
        "MIPROv2 runs dspy's auto='light' preset and BootstrapFewShot runs to completion; overshoots are shown.",
        "Test passes: one request at a time, temperature 0, fixed seed, llama.cpp prompt cache off, so a "
        "program scores the same every time; a program that ends unchanged reuses the baseline's pass.",
    ]
    report = markdown(runs, title=args.title, commands=commands, notes=notes)
    (args.results / "report.md").write_text(report, encoding="utf-8")
    png = plot(runs, args.results / "accuracy_vs_tokens.png", title=args.title)
    curves = plot_curves(runs, args.results / "val_vs_tokens.png", title=args.title)
    print(f"wrote {args.results / 'report.md'}, {png} and {curves}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
