"""Side-by-side benchmark: feedprop against trace-opt, textgrad and dspy on the same tasks and model.

Every run is one (system, task, seed). All systems use the same student model and the same
optimizer model — the embedded llama.cpp model, started in this process (``LocalModel``) or
reached at ``--endpoint`` (e.g. a ``feedprop serve``) — through a counting proxy with two
loopback ports, one for the student's traffic and one for the optimizer's. Every system sees the
same published splits and subsamples, the same starting prompt, the same budget of optimizer
calls and tokens (counted at the proxy), and the same scorer (feedprop's guide for the task).
Each run writes ``<results>/runs/<system>/<task>/seed<k>.json`` atomically; a run whose file
exists is skipped, so an interrupted matrix resumes where it stopped.

feedprop systems run in this process; peers run in the bench environment (``.venv-bench``,
with ``trace-opt``, ``textgrad`` and ``dspy`` from the ``bench`` extra) through ``worker.py``,
exchanging JSON.

    python benchmarks/compare/run.py --smoke                         # seconds, scripted endpoint
    python benchmarks/compare/run.py --preset pilot --tasks bbh/object_counting --endpoint URL
    nohup nice -n 19 python benchmarks/compare/run.py --matrix &     # everything, resumable
    python benchmarks/compare/report.py                              # table and plot
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from common import RunData, load_run_data  # noqa: E402  (after the path set-up above)
from fake_endpoint import MODEL_NAME as FAKE_MODEL  # noqa: E402
from fake_endpoint import FakeEndpoint  # noqa: E402
from feedprop_system import run_feedprop  # noqa: E402
from protocol import (  # noqa: E402
    PRESETS,
    SCHEMA,
    SYSTEMS,
    TASKS,
    TEST_SUBSAMPLE_SEED,
    RunSpec,
    atomic_write_json,
    machine_info,
    read_json,
    source_revision,
)
from proxy import CountingProxy, Limit  # noqa: E402

from feedprop.tasks import load_task  # noqa: E402

DEFAULT_RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
#: The import each peer system needs in the bench environment.
PEER_MODULES = {
    "trace-optoprime": "opto",
    "textgrad-tgd": "textgrad",
    "dspy-copro": "dspy",
    "dspy-miprov2-light": "dspy",
    "dspy-bootstrap": "dspy",
}
#: Systems whose optimizer cannot survive a refused call: the proxy counts but does not refuse.
NO_HARD_LIMIT = {"dspy-copro", "dspy-miprov2-light"}
SMOKE_TASK = "bbh/object_counting"
#: How often a running run's traffic is logged.
HEARTBEAT_SECONDS = 300.0


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _log(message: str, results: Path | None) -> None:
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
    print(line, flush=True)
    if results is not None:
        results.mkdir(parents=True, exist_ok=True)
        with (results / "progress.log").open("a", encoding="utf-8") as f:
            f.write(line + "\n")


# -- peers ---------------------------------------------------------------------------------------


def peer_availability(bench_python: Path) -> dict[str, str | None]:
    """For each peer system: ``None`` if it can run, else why not."""
    if not bench_python.exists():
        reason = (
            f"no bench interpreter at {bench_python} (make it: python -m venv .venv-bench && "
            f".venv-bench/bin/pip install trace-opt==0.1.3.8 textgrad==0.1.8 dspy==3.4.1)"
        )
        return dict.fromkeys(PEER_MODULES, reason)
    modules = sorted(set(PEER_MODULES.values()))
    code = (
        "import importlib.util, json; "
        f"print(json.dumps({{m: importlib.util.find_spec(m) is not None for m in {modules!r}}}))"
    )
    try:
        found = json.loads(
            subprocess.run(
                [str(bench_python), "-c", code], capture_output=True, text=True, timeout=120, check=True
            ).stdout
        )
    except (subprocess.SubprocessError, ValueError, OSError) as exc:
        return dict.fromkeys(PEER_MODULES, f"cannot query {bench_python}: {exc}")
    return {s: None if found.get(m) else f"{m} is not installed in {bench_python}" for s, m in PEER_MODULES.items()}


def _peer_env(urls: dict[str, str], scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, str(HERE), env.get("PYTHONPATH", "")) if p)
    env.update(
        {
            # trace-opt's LiteLLM reaches an OpenAI-compatible endpoint through these (its documented way).
            "OPENAI_API_BASE": urls["optimizer"],
            "OPENAI_API_KEY": "none",
            # No network: litellm must not try to download its price list.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            # Peers' caches and state stay in the run's scratch directory (and caching is off anyway).
            "XDG_CACHE_HOME": str(scratch / "cache"),
            "DSPY_CACHEDIR": str(scratch / "dspy-cache"),
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def run_peer(spec: RunSpec, proxy: CountingProxy, model: str, bench_python: Path) -> dict[str, Any]:
    """Run a peer system in the bench environment; returns the worker's part of the result."""
    with tempfile.TemporaryDirectory(prefix="feedprop-compare-") as tmp:
        scratch = Path(tmp)
        urls = {"student": proxy.url("student"), "optimizer": proxy.url("optimizer")}
        job = {
            "spec": spec.to_dict(),
            "urls": urls,
            "usage_url": proxy.usage_url(),
            "model": model,
            "out": str(scratch / "out.json"),
        }
        (scratch / "job.json").write_text(json.dumps(job), encoding="utf-8")
        log_path = scratch / "worker.log"
        with log_path.open("w", encoding="utf-8") as log:
            process = subprocess.Popen(
                [str(bench_python), str(HERE / "worker.py"), str(scratch / "job.json")],
                env=_peer_env(urls, scratch),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(scratch),
                start_new_session=True,
            )
            try:
                process.wait(timeout=spec.preset.max_run_seconds + 600)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return {
                    "status": "error",
                    "error": f"timed out after {spec.preset.max_run_seconds + 600:.0f} s",
                    "worker_log": _tail(log_path),
                }
            except BaseException:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise
        out = scratch / "out.json"
        if not out.exists():
            return {
                "status": "error",
                "error": f"the worker exited with {process.returncode} and wrote no result",
                "worker_log": _tail(log_path),
            }
        part: dict[str, Any] = read_json(out)
        if part.get("status") != "ok":
            part["worker_log"] = _tail(log_path)
        return part


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- one run ---------------------------------------------------------------------------------------


def _delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for role in ("student", "optimizer"):
        out[role] = {
            k: round(b[role][k] - a[role][k], 3) if isinstance(b[role][k], float) else b[role][k] - a[role][k]
            for k in b[role]
        }
    return out


def _add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {role: {k: a[role][k] + b[role][k] for k in a[role]} for role in a}


def usage_by_phase(marks: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
    """Proxy counters split into the training run and the two held-out evaluations."""
    zero = {role: dict.fromkeys(final[role], 0) for role in ("student", "optimizer")}
    if not all(k in marks for k in ("start", "after_test_before", "after_train", "end")):
        return {"total": _delta(zero, final), "complete": False}
    train = _delta(marks["after_test_before"], marks["after_train"])
    test = _add(_delta(marks["start"], marks["after_test_before"]), _delta(marks["after_train"], marks["end"]))
    return {"train": train, "test": test, "total": _delta(zero, final), "complete": True}


def budget_check(spec: RunSpec, log: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether the optimizer's calls stayed within the budget (no call started after it was spent)."""
    preset = spec.preset
    calls = [e for e in log if e["role"] == "optimizer"]
    started = sorted(calls, key=lambda e: e["t"] - e["seconds"])
    late = 0
    for i, call in enumerate(started):
        start = call["t"] - call["seconds"]
        done_before = sum(e.get("prompt_tokens", 0) + e.get("completion_tokens", 0) for e in calls if e["t"] <= start)
        if i >= preset.optimizer_calls or done_before >= preset.optimizer_tokens:
            late += 1
    tokens = sum(e.get("prompt_tokens", 0) + e.get("completion_tokens", 0) for e in calls)
    return {
        "calls": preset.optimizer_calls,
        "tokens": preset.optimizer_tokens,
        "used_calls": len(calls),
        "used_tokens": tokens,
        "calls_started_after_budget": late,
        "respected": late == 0,
        "hard_limit_at_proxy": spec.system not in NO_HARD_LIMIT,
    }


def _heartbeat(spec: RunSpec, proxy: CountingProxy, results: Path, stop: threading.Event, t0: float) -> None:
    """Log the run's traffic every few minutes, so a long run can be watched."""
    while not stop.wait(HEARTBEAT_SECONDS):
        u = proxy.usage()
        _log(
            f"    ... {spec.system} {spec.task} seed{spec.seed}: {(time.monotonic() - t0) / 60:.0f} min, "
            f"student {u['student']['calls']} calls {u['student']['tokens']} tokens, optimizer "
            f"{u['optimizer']['calls']} calls {u['optimizer']['tokens']} tokens",
            results,
        )


def execute(
    spec: RunSpec, results: Path, upstream: str, model: str, endpoint: dict[str, Any], bench_python: Path
) -> dict[str, Any]:
    """Run ``spec`` and write its result file; returns the result."""
    preset = spec.preset
    data: RunData | None = None
    proxy = CountingProxy(
        upstream, caps={"student": preset.student_max_tokens, "optimizer": preset.optimizer_max_tokens}
    )
    proxy.start()
    if spec.system not in NO_HARD_LIMIT:
        proxy.set_limit("optimizer", Limit(preset.optimizer_calls, preset.optimizer_tokens))
    started_at, t0 = _now(), time.monotonic()
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(spec, proxy, results, stop, t0), daemon=True).start()
    try:
        data = load_run_data(spec)
        if SYSTEMS[spec.system].kind == "feedprop":
            part = run_feedprop(
                spec, data, {"student": proxy.url("student"), "optimizer": proxy.url("optimizer")}, model, proxy.usage
            )
            part["status"] = "ok"
        else:
            part = run_peer(spec, proxy, model, bench_python)
    except Exception as exc:  # recorded in the result file; the matrix goes on
        part = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    finally:
        stop.set()
        final = proxy.usage()
        proxy.close()
    wall = time.monotonic() - t0
    result = assemble(spec, data, part, final, proxy.log, wall, started_at, model, endpoint)
    atomic_write_json(spec.result_path(results), result)
    return result


def assemble(
    spec: RunSpec,
    data: RunData | None,
    part: dict[str, Any],
    final: dict[str, Any],
    log: list[dict[str, Any]],
    wall: float,
    started_at: str,
    model: str,
    endpoint: dict[str, Any],
) -> dict[str, Any]:
    preset = spec.preset
    before, after = part.get("test_before") or {}, part.get("test_after") or {}
    return {
        "schema": SCHEMA,
        "status": part.get("status", "error"),
        "error": part.get("error"),
        "traceback": part.get("traceback"),
        "worker_log": part.get("worker_log"),
        "system": spec.system,
        "system_description": SYSTEMS[spec.system].description,
        "task": spec.task,
        "seed": spec.seed,
        "preset": preset.to_dict(),
        "protocol": {
            "start_prompt": spec.start_prompt,
            "splits": "published (feedprop.tasks: BBH textgrad 50/100/rest, GSM8K Random(0) 200/300 + test, "
            "MBPP ids 601-974/511-600/11-510)",
            "subsample": data.protocol() if data else None,
            "test_subsample_seed": TEST_SUBSAMPLE_SEED,
            "train_val_subsample_seed": "1000 * seed + 1 (train), + 2 (val)",
            "scorer": repr(data.guide) if data else None,
            "budget": {
                "optimizer_calls": preset.optimizer_calls,
                "optimizer_tokens": preset.optimizer_tokens,
                "counted": "at the proxy, optimizer port, training phase",
            },
            "caps": {
                "student_max_tokens": preset.student_max_tokens,
                "optimizer_max_tokens": preset.optimizer_max_tokens,
            },
        },
        "test_before": before.get("score"),
        "test_after": after.get("score"),
        "test_errors": {"before": before.get("errors"), "after": after.get("errors")},
        "val_before": part.get("val_before"),
        "val_after": part.get("val_after"),
        "usage": usage_by_phase(part.get("marks") or {}, final),
        "budget": budget_check(spec, log),
        "optimizer_calls": [
            {k: e[k] for k in ("status", "seconds", "prompt_tokens", "completion_tokens") if k in e}
            for e in log
            if e["role"] == "optimizer"
        ],
        "stop_reason": part.get("stop_reason"),
        "final_prompt": part.get("final_prompt"),
        "final_state": part.get("final_state"),
        "accepted_steps": part.get("accepted_steps"),
        "steps": part.get("steps"),
        "config": part.get("config"),
        "self_reported_usage": part.get("self_reported_usage"),
        "wall_seconds": round(wall, 3),
        "train_seconds": part.get("train_seconds"),
        "test_seconds": {"before": before.get("seconds"), "after": after.get("seconds")},
        "test_items_before": before.get("items"),
        "test_items_after": after.get("items"),
        "model": model,
        "endpoint": endpoint,
        "machine": machine_info(),
        "source": source_revision(),
        "versions": part.get("versions"),
        "started_at": started_at,
        "finished_at": _now(),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
    }


# -- the model server ------------------------------------------------------------------------------


def _server_model(base_url: str) -> str:
    with urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=30) as response:
        data = json.loads(response.read())
    models = [m["id"] for m in data.get("data", [])]
    if not models:
        raise SystemExit(f"{base_url}/models lists no model; pass --model")
    return str(models[0])


@contextlib.contextmanager
def model_server(args: argparse.Namespace, specs: list[RunSpec]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(upstream base URL, model name, endpoint description) for the runs, started if needed."""
    if args.smoke:
        answers: dict[str, str] = {}
        for task in sorted({s.task for s in specs}):
            loaded = load_task(task)
            for split in ("train", "val", "test"):
                for example in loaded.split(split):
                    answers[str(example.input)] = str(example.target)
        fake = FakeEndpoint(answers)
        fake.start()
        try:
            yield fake.base_url, FAKE_MODEL, {"kind": "scripted fake endpoint (smoke run)", "base_url": fake.base_url}
        finally:
            fake.close()
        return
    if args.endpoint:
        model = args.model or _server_model(args.endpoint)
        yield (
            args.endpoint.rstrip("/"),
            model,
            {
                "kind": "external OpenAI-compatible endpoint (e.g. feedprop serve)",
                "base_url": args.endpoint,
                "model": model,
                "note": args.endpoint_note,
            },
        )
        return
    from feedprop.llm import LocalModel

    llm = LocalModel(args.local_model, n_parallel=args.n_parallel, threads=args.threads, cache=False)
    try:
        yield (
            llm.base_url,
            llm.model,
            {
                "kind": "embedded llama.cpp (feedprop LocalModel, xllamacpp)",
                "model": llm.model,
                "model_file": llm.path.name,
                "n_parallel": llm.n_parallel,
                "n_ctx_per_slot": llm.n_ctx,
                "threads": llm.threads,
            },
        )
    finally:
        llm.close()


# -- command line ----------------------------------------------------------------------------------


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def plan(args: argparse.Namespace) -> list[RunSpec]:
    preset = PRESETS[args.preset]
    named_systems, named_tasks = _split(args.systems), _split(args.tasks)
    for s in named_systems:
        if s not in SYSTEMS:
            raise SystemExit(f"unknown system {s!r}; choose from {', '.join(SYSTEMS)}")
    for t in named_tasks:
        if t not in TASKS:
            raise SystemExit(f"unknown task {t!r}; choose from {', '.join(TASKS)}")
    if args.matrix:  # --systems and --tasks narrow the matrix, in the matrix's order
        systems = [s for s in SYSTEMS if not named_systems or s in named_systems]
        tasks = [t for t in TASKS if not named_tasks or t in named_tasks]
    elif args.smoke:
        systems, tasks = named_systems or list(SYSTEMS), named_tasks or [SMOKE_TASK]
    else:
        systems, tasks = named_systems, named_tasks
        if not systems or not tasks:
            raise SystemExit("name --systems and --tasks (comma-separated), or use --matrix or --smoke")
    seeds = [int(s) for s in _split(args.seeds)] or list(preset.seeds)
    # Task by task, so that early results already compare every system on a task.
    return [RunSpec(system, task, seed, preset) for task in tasks for seed in seeds for system in systems]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--smoke", action="store_true", help="tiny run against a scripted fake endpoint (seconds)")
    p.add_argument(
        "--matrix",
        action="store_true",
        help="every system on every task, or those named by --systems/--tasks (resumable)",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="sizes and budget (default: smoke with --smoke, else matrix)",
    )
    p.add_argument("--systems", help=f"comma-separated, from: {', '.join(SYSTEMS)}")
    p.add_argument("--tasks", help=f"comma-separated, from: {', '.join(TASKS)}")
    p.add_argument("--seeds", help="comma-separated seeds (default: the preset's)")
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        help=f"results directory (default: {DEFAULT_RESULTS.relative_to(ROOT)}/<preset>)",
    )
    p.add_argument("--endpoint", help="base URL (with /v1) of a running OpenAI-compatible server, e.g. feedprop serve")
    p.add_argument("--model", help="model name at --endpoint (default: the server's first model)")
    p.add_argument(
        "--endpoint-note", default=None, help="how the --endpoint server was started, recorded in every result file"
    )
    p.add_argument("--local-model", default=None, help="embedded model to start when no --endpoint is given")
    p.add_argument("--n-parallel", type=int, default=4, help="slots of the embedded model (default: 4)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of the embedded model (default: all; on a shared, loaded machine 1 is "
        "far faster, because llama.cpp's threads wait on each other)",
    )
    p.add_argument(
        "--bench-python",
        type=Path,
        default=DEFAULT_BENCH_PYTHON,
        help="interpreter with the peers installed (default: .venv-bench/bin/python)",
    )
    p.add_argument("--retry-failed", action="store_true", help="run again the runs whose result is an error")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether each is done, then exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke and args.matrix:
        raise SystemExit("--smoke and --matrix exclude each other")
    args.preset = args.preset or ("smoke" if args.smoke else "matrix")
    specs = plan(args)
    results: Path = args.results or (DEFAULT_RESULTS / args.preset)
    if args.smoke and args.results is None:
        results = Path(tempfile.mkdtemp(prefix="feedprop-compare-smoke-"))

    todo: list[RunSpec] = []
    for spec in specs:
        path = spec.result_path(results)
        if path.exists():
            status = read_json(path).get("status")
            if status == "ok" or not args.retry_failed:
                if args.dry_run:
                    print(f"done ({status}): {spec.system} {spec.task} seed{spec.seed}")
                continue
        todo.append(spec)
    if args.dry_run:
        for spec in todo:
            print(f"to run: {spec.system} {spec.task} seed{spec.seed}")
        return 0

    availability = peer_availability(args.bench_python) if any(SYSTEMS[s.system].kind == "peer" for s in todo) else {}
    runnable = []
    for spec in todo:
        why = availability.get(spec.system)
        if why:
            _log(f"skip {spec.system} {spec.task} seed{spec.seed}: {why}", results)
        else:
            runnable.append(spec)
    _log(
        f"{len(specs)} runs planned, {len(specs) - len(todo)} already done, {len(runnable)} to run "
        f"(preset {args.preset}, results in {results})",
        results,
    )
    if not runnable:
        return 0
    failures = 0
    with model_server(args, runnable) as (upstream, model, endpoint):
        for n, spec in enumerate(runnable, 1):
            _log(f"[{n}/{len(runnable)}] start {spec.system} {spec.task} seed{spec.seed}", results)
            result = execute(spec, results, upstream, model, endpoint, args.bench_python)
            if result["status"] == "ok":
                b = result["budget"]
                _log(
                    f"[{n}/{len(runnable)}] done {spec.system} {spec.task} seed{spec.seed}: test "
                    f"{result['test_before']:.3f} -> {result['test_after']:.3f}, optimizer {b['used_calls']} calls "
                    f"{b['used_tokens']} tokens, {result['wall_seconds'] / 60:.1f} min",
                    results,
                )
            else:
                failures += 1
                _log(
                    f"[{n}/{len(runnable)}] FAILED {spec.system} {spec.task} seed{spec.seed}: {result['error']}",
                    results,
                )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
