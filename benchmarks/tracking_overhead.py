"""What MLflow tracking costs a training run: a 50-step MockLLM run with and without ``tracker=``.

Three variants run side by side, interleaved, ``--repeats`` times each, every run with its own
checkpoint directory:

- ``off``: no tracker;
- ``mlflow, new store``: ``tracker="mlflow"``, the default: a SQLite store created in the run
  directory, so the run pays MLflow's database setup;
- ``mlflow, existing store``: ``MLflowTracker(tracking_uri=...)`` into one store made before timing
  (what every run after the first pays when runs share a store).

For each it prints the wall time of ``train()``, the median time per step in the training loop
(between consecutive ``step`` events, so it includes the tracker's ``on_event``), and for the
tracked runs the time spent in the tracker's hooks in the training thread: start (connecting,
creating the store), all events, finish (flushing the metrics, artifacts, status). mlflow is
imported once before timing; its import time is printed on its own.

    python benchmarks/tracking_overhead.py               # 3 repeats
    python benchmarks/tracking_overhead.py --repeats 1 --steps 20

The machine's load average is printed with the results: on a shared machine, absolute times move
with it; read the ratios of runs made side by side.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import feedprop as fp
from feedprop.tracking import MLflowTracker, RunResult, Tracker, store_uri


class Suffix(fp.Module):
    def __init__(self) -> None:
        self.suffix = fp.Parameter("?", name="suffix", description="appended to every answer")

    def forward(self, x: str) -> Any:
        return x + self.suffix


def exact(output: Any, target: Any) -> float:
    return float(output == target)


class Timed(MLflowTracker):
    """An MLflowTracker that adds up the time its hooks take in the training thread."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        super().__init__(tracking_uri)
        self.spent = {"start": 0.0, "events": 0.0, "finish": 0.0}

    def on_start(self, config: Mapping[str, Any], parameters: Mapping[str, Any], *, run_dir: Path | None) -> None:
        started = time.perf_counter()
        super().on_start(config, parameters, run_dir=run_dir)
        self.spent["start"] += time.perf_counter() - started

    def on_event(self, event: Mapping[str, Any]) -> None:
        started = time.perf_counter()
        super().on_event(event)
        self.spent["events"] += time.perf_counter() - started

    def on_finish(self, result: RunResult, *, run_dir: Path | None) -> None:
        started = time.perf_counter()
        super().on_finish(result, run_dir=run_dir)
        self.spent["finish"] += time.perf_counter() - started


def one_run(directory: Path, steps: int, tracker: Tracker | None) -> dict[str, float]:
    model = Suffix()
    suffixes = ["!", "?", "!!", "!"]
    replies = [json.dumps({"reasoning": "scripted", "suggestion": {"suffix": s}}) for s in suffixes]
    optimizer = fp.optim.OptoPrime(model.parameters(), llm=fp.llm.MockLLM(replies * steps))
    data = [(f"q{i}", f"q{i}!") for i in range(steps)]
    started = time.perf_counter()
    result = fp.train(
        model, data, exact, optimizer, val_set=data[:2], batch_size=1, max_steps=steps, checkpoint=directory,
        progress=False, plot=False, tracker=tracker,
    )  # fmt: skip
    total = time.perf_counter() - started
    assert result.steps == steps, result.stop_reason
    times = [e["time"] for e in result.events if e["event"] == "step"]
    out = {"total": total, "step_ms": 1000 * statistics.median(b - a for a, b in itertools.pairwise(times))}
    if isinstance(tracker, Timed):
        out.update({f"{k}_s": v for k, v in tracker.spent.items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()

    started = time.perf_counter()
    import mlflow

    imported = time.perf_counter() - started
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its notes on creating the shared store
    with tempfile.TemporaryDirectory(prefix="feedprop-tracking-bench-") as tmp:
        root = Path(tmp)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        shared = root / "shared"
        shared.mkdir()
        started = time.perf_counter()
        mlflow.MlflowClient(store_uri(shared)).search_experiments()  # made before timing
        made = time.perf_counter() - started
        one_run(root / "warm-up", args.steps, None)

        variants = ["off", "mlflow, new store", "mlflow, existing store"]
        rows: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
        for r in range(args.repeats):
            for v in variants:
                tracker: Tracker | None = None
                if v == "mlflow, new store":
                    tracker = Timed()
                elif v == "mlflow, existing store":
                    tracker = Timed(store_uri(shared))
                rows[v].append(one_run(root / f"{r}-{variants.index(v)}", args.steps, tracker))

    def med(v: str, key: str) -> float:
        return statistics.median(row[key] for row in rows[v])

    print(f"{args.steps}-step MockLLM run, median of {args.repeats} (load average {os.getloadavg()[0]:.1f})")
    print(f"mlflow {mlflow.__version__}: import {imported:.1f} s (once per process), new SQLite store {made:.1f} s")
    print(f"{'variant':<24} {'train() s':>10} {'ms/step':>8} {'start s':>8} {'events ms':>10} {'finish s':>9}")
    for v in variants:
        line = f"{v:<24} {med(v, 'total'):>10.2f} {med(v, 'step_ms'):>8.1f}"
        if v != "off":
            line += f" {med(v, 'start_s'):>8.2f} {1000 * med(v, 'events_s'):>10.1f} {med(v, 'finish_s'):>9.2f}"
        print(line)
    for v in variants[1:]:
        print(
            f"ratio {v} / off: train() {med(v, 'total') / med('off', 'total'):.2f}x, "
            f"per step {med(v, 'step_ms') / med('off', 'step_ms'):.2f}x"
        )


if __name__ == "__main__":
    main()
