"""Per-item outcomes of the demo's start program and another program, and the paired interval of the change.

``make demo`` prints held-out accuracy before and after as means. This scores both programs on the
same 40 test questions (or, with ``--split val``, the demo's 40 validation questions) again, one
request at a time at temperature 0 on one decoding slot (so the scores repeat the demo's), keeps
each item's outcome, and prints the paired bootstrap 90% interval of the change (items resampled
together; ``benchmarks/compare/stats.py``). The other program is a ``parameters.json``: a demo
run's learned program, or one written by hand in the same parameter space (instruction,
demonstrations, extractor code). Only the prompt-side parameters are loaded (a weight phase that
was kept would need its adapter as well; the demo's record says which phase was kept).

Run: ``.venv/bin/python benchmarks/demo_interval.py benchmarks/results/demo/parameters.json``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "compare"))

from stats import paired_interval

from feedprop.demo import CountingSolver, DemoConfig
from feedprop.joint import Student
from feedprop.llm import set_cache_enabled
from feedprop.tasks import load_bbh
from feedprop.training import ExactMatch, evaluate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("parameters", help="the demo run's parameters.json (its learned program)")
    parser.add_argument("--split", choices=("test", "val"), default="test", help="the demo's items to score on")
    parser.add_argument("--out", help="write the per-item outcomes and the interval here as JSON")
    args = parser.parse_args(argv)
    learned = json.loads(Path(args.parameters).read_text(encoding="utf-8"))
    cfg = DemoConfig()
    task = load_bbh(cfg.task)
    items = list(task.test[: cfg.n_test]) if args.split == "test" else list(task.val[: cfg.n_val])
    set_cache_enabled(False)  # both programs really run
    student = Student(cfg.student or "qwen2.5-coder-0.5b", n_parallel=1, n_ctx=2048)  # as in the demo
    try:
        solver = CountingSolver(student)
        start = solver.state_dict()
        before = evaluate(solver, items, ExactMatch(), max_workers=1, progress=False).scores
        solver.load_state_dict({**start, **{k: v for k, v in learned.items() if k in start and k != "student.adapter"}})
        after = evaluate(solver, items, ExactMatch(), max_workers=1, progress=False).scores
    finally:
        student.close()
    interval = paired_interval(after, before)
    flips = {
        "gained": sum(a > b for a, b in zip(after, before, strict=True)),
        "lost": sum(a < b for a, b in zip(after, before, strict=True)),
    }
    n = len(items)
    print(f"{args.split} items: {n}; before {sum(before) / n:.1%}, after {sum(after) / n:.1%}")
    print(
        f"change {interval.mean:+.1%}, paired bootstrap {interval.confidence:.0%} interval "
        f"[{interval.low:+.1%}, {interval.high:+.1%}]; {flips['gained']} items gained, {flips['lost']} lost"
    )
    if args.out:
        record = {"split": args.split, "before": before, "after": after, "interval": interval.to_dict(), **flips}
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
