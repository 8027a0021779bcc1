"""Runs one peer system (trace-opt, textgrad or dspy) for the harness, in the bench environment.

The harness (``run.py``) starts it as ``<bench python> worker.py <job.json>`` with feedprop's
``src`` on ``PYTHONPATH`` (for the task data and the guide: the same scorer as every system) and
the counting proxy's addresses in the job. The worker writes its part of the result to the job's
``out`` path, atomically; on failure it writes ``{"status": "error", "error": <traceback>}``.

Peer libraries are imported only here and in the ``peer_*`` modules, never by feedprop.

    .venv-bench/bin/python benchmarks/compare/worker.py job.json
"""

from __future__ import annotations

import faulthandler
import json
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_run_data
from protocol import RunSpec, atomic_write_json

RUNNERS = {
    "trace-optoprime": ("peer_trace", "run_trace"),
    "textgrad-tgd": ("peer_textgrad", "run_textgrad"),
    "dspy-copro": ("peer_dspy", "run_dspy"),
    "dspy-miprov2-light": ("peer_dspy", "run_dspy"),
    "dspy-bootstrap": ("peer_dspy", "run_dspy"),
    "dspy-gepa": ("peer_dspy", "run_dspy"),
    "dspy-cot": ("peer_dspy", "run_dspy"),
}


def main(argv: list[str]) -> int:
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints every thread's stack to the log
    if len(argv) != 1:
        print("usage: worker.py <job.json>", file=sys.stderr)
        return 2
    job: dict[str, Any] = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    out = Path(job["out"])
    try:
        spec = RunSpec.from_dict(job["spec"])
        if spec.system not in RUNNERS:
            raise ValueError(f"{spec.system} is not a peer system; peers are {', '.join(RUNNERS)}")
        module_name, function = RUNNERS[spec.system]
        module = __import__(module_name)
        data = load_run_data(spec)
        result = getattr(module, function)(spec, data, job)
        result["status"] = "ok"
    except BaseException as exc:  # the harness records the failure; it must see it whatever it was
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        atomic_write_json(out, result)
        return 1
    atomic_write_json(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
