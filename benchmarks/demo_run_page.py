"""Complete an older demo run directory with what the run page needs, then write its page.

Demo runs written before runs recorded their workflow's graph and per-item test outcomes lack
``graph.json`` and the ``items`` events of ``events.jsonl``. This scores the start program and the
kept one on the demo's test questions again, one request at a time at temperature 0, with the same
student as the demo (as ``demo_interval.py`` does, whose figures matched the demo's exactly), and
records them the way ``fp.joint.alternate`` now does: the graph of the first question's run and the
outcomes after phase 0 (the start) and after the kept phase. Only the prompt-side parameters are
loaded (a kept weight phase would need its adapter too; the script refuses that case).

Run: ``.venv/bin/python benchmarks/demo_run_page.py RUN_DIR`` (a copy of the run directory is fine).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from feedprop.demo import CountingSolver, DemoConfig
from feedprop.joint import Student
from feedprop.llm import set_cache_enabled
from feedprop.run_page import write_run_page
from feedprop.tasks import load_bbh
from feedprop.training import ExactMatch
from feedprop.training.data import as_items
from feedprop.training.evaluation import run_items
from feedprop.training.run_files import log_outcomes, record_graph


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("run_dir", help="a demo run directory (holding joint.json)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    state = json.loads((run_dir / "joint.json").read_text(encoding="utf-8"))
    best = state["best"]
    if any(r["kind"] == "w" and r["index"] == best["phase"] for r in state["results"]):
        print("the kept phase trained weights; its adapter would be needed as well", file=sys.stderr)
        return 1
    cfg = DemoConfig()
    test = as_items(list(load_bbh(cfg.task).test[: cfg.n_test]), "test_set")
    set_cache_enabled(False)  # both programs really run
    student = Student(cfg.student or "qwen2.5-coder-0.5b", n_parallel=2, n_ctx=2048)  # as in the demo
    try:
        solver = CountingSolver(student)
        solver.eval()
        start = solver.state_dict()
        for phase, params in ((0, start), (int(best["phase"]), best["state"])):
            solver.load_state_dict({**start, **{k: v for k, v in params.items() if k != "student.adapter"}})
            outcomes = run_items(solver, test, ExactMatch(), max_workers=1)
            record_graph(run_dir, outcomes)
            log_outcomes(run_dir, "test", outcomes, joint_phase=phase)
            print(f"phase {phase}: test {sum(o.score for o in outcomes) / len(outcomes):.1%}")
    finally:
        student.close()
    print(write_run_page(run_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
