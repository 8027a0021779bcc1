"""Side-by-side benchmark: feedprop against trace-opt, textgrad and dspy on the same tasks and model.

Every run is one (system, task, seed). All systems use the same student model and the same
optimizer model — embedded llama.cpp models started in this process (``LocalModel``: the
preset's student and optimizer models) or reached at ``--endpoint`` (e.g. a ``feedprop serve``)
— through a counting proxy with two loopback ports, one for the student's traffic and one for
the optimizer's. Every system sees the same published splits and subsamples, the same starting
program, the same budget of training tokens (student and optimizer, counted at the proxy), and
the same scorer (feedprop's guide for the task). Each task's starting program is scored once on
the test items (the shared baseline, ``<results>/baselines/<task>.json``), one request at a
time; every run's "before" is that baseline. Each run writes
``<results>/runs/<system>/<task>/seed<k>.json`` atomically; a run whose file exists is skipped,
so an interrupted matrix resumes where it stopped (a run cut off leaves no file and starts
afresh). ``--dry-run`` lists what is done and what is left, with a time estimate.

feedprop systems run in this process; peers run in the bench environment (``.venv-bench``,
with ``trace-opt``, ``textgrad`` and ``dspy`` from the ``bench`` extra) through ``worker.py``,
exchanging JSON.

    python benchmarks/compare/run.py --smoke                         # seconds, scripted endpoint
    python benchmarks/compare/run.py --preset pilot --tasks bbh/object_counting --systems dspy-gepa
    python benchmarks/compare/run.py --matrix --dry-run              # the v2 matrix: left, estimate
    nohup nice -n 19 python benchmarks/compare/run.py --matrix &     # everything, resumable
    python benchmarks/compare/report.py --results benchmarks/results/v2
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
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

from common import RunData, load_run_data, score_test_set  # noqa: E402  (after the path set-up above)
from fake_endpoint import MODEL_NAME as FAKE_MODEL  # noqa: E402
from fake_endpoint import FakeEndpoint  # noqa: E402
from feedprop_system import Solver, run_feedprop, unavailable  # noqa: E402
from protocol import (  # noqa: E402
    PRESETS,
    SCHEMA,
    SYSTEMS,
    TASKS,
    TEST_SUBSAMPLE_SEED,
    Preset,
    RunSpec,
    atomic_write_json,
    estimate_seconds,
    machine_info,
    read_json,
    source_revision,
)
from proxy import CountingProxy  # noqa: E402
from stats import paired_interval  # noqa: E402

import feedprop as fp  # noqa: E402
from feedprop.tasks import load_task  # noqa: E402

DEFAULT_RESULTS = ROOT / "benchmarks" / "results"
#: The peers' interpreter: $FEEDPROP_BENCH_PYTHON, else .venv-bench in this checkout.
DEFAULT_BENCH_PYTHON = Path(os.environ.get("FEEDPROP_BENCH_PYTHON") or ROOT / ".venv-bench" / "bin" / "python")
#: The import each peer system needs in the bench environment.
PEER_MODULES = {
    "trace-optoprime": "opto",
    "textgrad-tgd": "textgrad",
    "dspy-gepa": "gepa",
    "dspy-copro": "dspy",
    "dspy-miprov2-light": "dspy",
    "dspy-bootstrap": "dspy",
    "dspy-cot": "dspy",
}
#: Systems that stop themselves at the budget (their own loop checks it between steps); the
#: others (dspy's optimizers run their own loops) are shaped from the budget where they can be
#: and reported with their overshoot.
STOPS_AT_BUDGET = {
    "feedprop-recommended",
    "feedprop-hindsight",
    "feedprop-optoprime",
    "trace-optoprime",
    "textgrad-tgd",
}
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


def run_peer(spec: RunSpec, proxy: CountingProxy, models: dict[str, str], bench_python: Path) -> dict[str, Any]:
    """Run a peer system in the bench environment; returns the worker's part of the result."""
    with tempfile.TemporaryDirectory(prefix="feedprop-compare-") as tmp:
        scratch = Path(tmp)
        urls = {"student": proxy.url("student"), "optimizer": proxy.url("optimizer")}
        job = {
            "spec": spec.to_dict(),
            "urls": urls,
            "usage_url": proxy.usage_url(),
            "model": models["student"],
            "models": models,
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


def usage_by_phase(final: dict[str, Any]) -> dict[str, Any]:
    """The proxy's counters per phase (``train``: the budget's; ``test``: the held-out pass) and in all."""
    zero = {k: 0 for k in ("calls", "tokens", "prompt_tokens", "completion_tokens")}
    phases = final.get("phases") or {}
    out: dict[str, Any] = {
        phase: {role: dict(phases.get(phase, {}).get(role) or zero) for role in ("student", "optimizer")}
        for phase in ("train", "test")
    }
    out["total"] = {role: final[role] for role in ("student", "optimizer")}
    out["complete"] = True
    return out


def budget_check(spec: RunSpec, log: list[dict[str, Any]]) -> dict[str, Any]:
    """The training budget as spent: tokens of both roles in the training phase, overshoot, late calls.

    A call is *late* if it started after the training tokens had reached the budget (counting
    the calls finished by then); a system that stops itself at the budget has none, though its
    last calls in flight may end above it (the overshoot).
    """
    budget = spec.preset.train_tokens
    calls = [e for e in log if e.get("phase", "train") == "train"]
    late = 0
    for call in calls:
        start = call["t"] - call["seconds"]
        done_before = sum(e.get("prompt_tokens", 0) + e.get("completion_tokens", 0) for e in calls if e["t"] <= start)
        if done_before >= budget:
            late += 1
    used = {
        role: sum(e.get("prompt_tokens", 0) + e.get("completion_tokens", 0) for e in calls if e["role"] == role)
        for role in ("student", "optimizer")
    }
    total = sum(used.values())
    return {
        "train_tokens": budget,
        "used_tokens": total,
        "used_by_role": used,
        "used_calls": len(calls),
        "overshoot_tokens": max(0, total - budget),
        "overshoot": round(max(0, total - budget) / budget, 4) if budget else None,
        "calls_started_after_budget": late,
        "respected": late == 0,
        "stops_at_budget": spec.system in STOPS_AT_BUDGET,
    }


def _heartbeat(label: str, proxy: CountingProxy, results: Path, stop: threading.Event, t0: float) -> None:
    """Log the run's traffic every few minutes, so a long run can be watched."""
    while not stop.wait(HEARTBEAT_SECONDS):
        u = proxy.usage()
        _log(
            f"    ... {label}: {(time.monotonic() - t0) / 60:.0f} min, phase {u['phase']}, "
            f"student {u['student']['calls']} calls {u['student']['tokens']} tokens, optimizer "
            f"{u['optimizer']['calls']} calls {u['optimizer']['tokens']} tokens",
            results,
        )


def make_proxy(preset: Preset, upstreams: dict[str, str]) -> CountingProxy:
    """The counting proxy of one run: the preset's caps, the student's fixed seed, the test pass's settings."""
    return CountingProxy(
        upstreams,
        caps={"student": preset.student_max_tokens, "optimizer": preset.optimizer_max_tokens},
        params={"student": {"seed": preset.request_seed}},
        phase_params={"test": {"student": {"seed": preset.request_seed, **preset.test_params}}},
    )


def baseline_spec(task: str, preset: Preset) -> RunSpec:
    """The spec the baseline of ``task`` is drawn with (seed 0: the test items do not depend on it)."""
    return RunSpec("feedprop-optoprime", task, 0, preset)


def ensure_baseline(
    task: str,
    preset: Preset,
    results: Path,
    upstreams: dict[str, str],
    models: dict[str, str],
    endpoint: dict[str, Any],
) -> dict[str, Any]:
    """The task's shared baseline: the starting one-call program's test pass, made once and stored."""
    spec = baseline_spec(task, preset)
    path = spec.baseline_path(results)
    if path.exists():
        stored: dict[str, Any] = read_json(path)
        if stored.get("test_subsample") == spec.indices("test", len(load_run_data(spec).task.split("test"))):
            return stored
    data = load_run_data(spec)
    proxy = make_proxy(preset, upstreams)
    proxy.start()
    started_at, t0 = _now(), time.monotonic()
    try:
        proxy.set_phase("test")
        student = fp.OpenAICompatible(
            proxy.url("student"), model=models["student"], api_key="none", timeout=preset.max_run_seconds, cache=False
        )
        solver = Solver(spec.start_prompt, student, preset.student_max_tokens)
        solver.eval()

        def answer(question: Any) -> str:
            with fp.no_trace():
                out = solver(question)
            return str(out.data if isinstance(out, fp.Node) else out)

        scored = score_test_set(answer, data, preset, None)
        student.close()
        usage = proxy.usage()
    finally:
        proxy.close()
    baseline = {
        "schema": SCHEMA,
        "kind": "baseline",
        "task": task,
        "program": "one call: system prompt = the starting prompt, user message = the question",
        "start_prompt": spec.start_prompt,
        "test_subsample": data.indices["test"],
        "test_subsample_seed": TEST_SUBSAMPLE_SEED,
        "score": scored["score"],
        "n": scored["n"],
        "errors": scored["errors"],
        "seconds": scored["seconds"],
        "items": scored["items"],
        "usage": {role: usage[role] for role in ("student", "optimizer")},
        "requests": {
            "workers": preset.test_workers,
            "student_params": {
                "temperature": 0.0,
                "max_tokens": preset.student_max_tokens,
                "seed": preset.request_seed,
            },
            "test_params": preset.test_params,
        },
        "models": models,
        "endpoint": endpoint,
        "machine": machine_info(),
        "source": source_revision(),
        "started_at": started_at,
        "wall_seconds": round(time.monotonic() - t0, 3),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
    }
    atomic_write_json(path, baseline)
    return baseline


def execute(
    spec: RunSpec,
    results: Path,
    upstreams: dict[str, str],
    models: dict[str, str],
    endpoint: dict[str, Any],
    bench_python: Path,
    baseline: dict[str, Any],
) -> dict[str, Any]:
    """Run ``spec`` and write its result file; returns the result."""
    preset = spec.preset
    data: RunData | None = None
    proxy = make_proxy(preset, upstreams)
    proxy.start()
    started_at, t0 = _now(), time.monotonic()
    stop = threading.Event()
    label = f"{spec.system} {spec.task} seed{spec.seed}"
    threading.Thread(target=_heartbeat, args=(label, proxy, results, stop, t0), daemon=True).start()
    try:
        data = load_run_data(spec)
        if SYSTEMS[spec.system].kind == "feedprop":
            urls = {"student": proxy.url("student"), "optimizer": proxy.url("optimizer")}
            part = run_feedprop(spec, data, urls, models, proxy.usage, proxy.set_phase)
            part["status"] = "ok"
        else:
            part = run_peer(spec, proxy, models, bench_python)
    except Exception as exc:  # recorded in the result file; the matrix goes on
        part = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    finally:
        stop.set()
        final = proxy.usage()
        proxy.close()
    wall = time.monotonic() - t0
    result = assemble(spec, data, part, final, proxy.log, wall, started_at, models, endpoint, baseline)
    atomic_write_json(spec.result_path(results), result)
    return result


def _scores(items: list[dict[str, Any]] | None) -> dict[int, float]:
    return {int(i["index"]): float(i["score"]) for i in items or []}


def assemble(
    spec: RunSpec,
    data: RunData | None,
    part: dict[str, Any],
    final: dict[str, Any],
    log: list[dict[str, Any]],
    wall: float,
    started_at: str,
    models: dict[str, str],
    endpoint: dict[str, Any],
    baseline: dict[str, Any],
) -> dict[str, Any]:
    preset = spec.preset
    status = part.get("status", "error")
    unchanged = bool(part.get("unchanged")) and status == "ok"
    after = part.get("test_after") or {}
    items_after = baseline["items"] if unchanged else after.get("items")
    score_after = baseline["score"] if unchanged else after.get("score")
    change = None
    if status == "ok" and items_after:
        before_scores, after_scores = _scores(baseline["items"]), _scores(items_after)
        keys = sorted(set(before_scores) & set(after_scores))
        if keys:
            change = paired_interval([after_scores[k] for k in keys], [before_scores[k] for k in keys]).to_dict()
    return {
        "schema": SCHEMA,
        "status": status,
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
            "program": "one call: system prompt = the trainable instruction, user message = the question",
            "splits": "published (feedprop.tasks: BBH textgrad 50/100/rest, GSM8K Random(0) 200/300 + test, "
            "MBPP ids 601-974/511-600/11-510)",
            "subsample": data.protocol() if data else None,
            "test_subsample_seed": TEST_SUBSAMPLE_SEED,
            "train_val_subsample_seed": "1000 * seed + 1 (train), + 2 (val)",
            "scorer": repr(data.guide) if data else None,
            "budget": {
                "train_tokens": preset.train_tokens,
                "counted": "at the proxy, student and optimizer ports, training phase",
            },
            "caps": {
                "student_max_tokens": preset.student_max_tokens,
                "optimizer_max_tokens": preset.optimizer_max_tokens,
            },
            "test_pass": {"workers": preset.test_workers, "seed": preset.request_seed, "params": preset.test_params},
            "before": "the task's shared baseline (baselines/<task>.json)",
        },
        "test_before": baseline["score"],
        "test_after": score_after if status == "ok" else None,
        "change": change,
        "unchanged": unchanged,
        "test_errors": {"before": baseline.get("errors"), "after": None if unchanged else after.get("errors")},
        "val_before": part.get("val_before"),
        "val_after": part.get("val_after"),
        "curve": part.get("curve"),
        "usage": usage_by_phase(final),
        "budget": budget_check(spec, log),
        "calls": [
            {k: e[k] for k in ("role", "phase", "status", "seconds", "prompt_tokens", "completion_tokens") if k in e}
            for e in log
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
        "test_seconds": {"before": baseline.get("seconds"), "after": None if unchanged else after.get("seconds")},
        "test_items_before": baseline["items"],
        "test_items_after": items_after if status == "ok" else None,
        "model": models["student"],
        "models": models,
        "endpoint": endpoint,
        "machine": machine_info(),
        "source": source_revision(),
        "versions": part.get("versions"),
        "started_at": started_at,
        "finished_at": _now(),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
    }


# -- the model servers -----------------------------------------------------------------------------


def _server_model(base_url: str) -> str:
    with urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=30) as response:
        data = json.loads(response.read())
    models = [m["id"] for m in data.get("data", [])]
    if not models:
        raise SystemExit(f"{base_url}/models lists no model; pass --model")
    return str(models[0])


Servers = tuple[dict[str, str], dict[str, str], dict[str, Any]]


@contextlib.contextmanager
def model_server(args: argparse.Namespace, specs: list[RunSpec], preset: Preset) -> Iterator[Servers]:
    """(upstream base URL per role, model name per role, endpoint description), started if needed."""
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
            yield (
                dict.fromkeys(("student", "optimizer"), fake.base_url),
                dict.fromkeys(("student", "optimizer"), FAKE_MODEL),
                {"kind": "scripted fake endpoint (smoke run)", "base_url": fake.base_url},
            )
        finally:
            fake.close()
        return
    if args.endpoint:
        optimizer_endpoint = args.optimizer_endpoint or args.endpoint
        student_model = args.model or _server_model(args.endpoint)
        optimizer_model = args.optimizer_model or (
            student_model if optimizer_endpoint == args.endpoint else _server_model(optimizer_endpoint)
        )
        yield (
            {"student": args.endpoint.rstrip("/"), "optimizer": optimizer_endpoint.rstrip("/")},
            {"student": student_model, "optimizer": optimizer_model},
            {
                "kind": "external OpenAI-compatible endpoint(s) (e.g. feedprop serve)",
                "base_url": {"student": args.endpoint, "optimizer": optimizer_endpoint},
                "note": args.endpoint_note,
            },
        )
        return
    from feedprop.llm import LocalModel

    names = {
        "student": args.student_model or preset.student_model,
        "optimizer": args.optimizer_model or preset.optimizer_model,
    }
    started: dict[str, LocalModel] = {}
    try:
        for role in ("student", "optimizer"):
            same = [r for r, m in started.items() if names[r] == names[role]]
            if same:
                started[role] = started[same[0]]
                continue
            started[role] = LocalModel(names[role], n_parallel=args.n_parallel, threads=args.threads, cache=False)
        yield (
            {role: llm.base_url for role, llm in started.items()},
            {role: llm.model for role, llm in started.items()},
            {
                "kind": "embedded llama.cpp (feedprop LocalModel, xllamacpp)",
                "models": {
                    role: {
                        "model": llm.model,
                        "model_file": llm.path.name,
                        "n_parallel": llm.n_parallel,
                        "n_ctx_per_slot": llm.n_ctx,
                        "threads": llm.threads,
                    }
                    for role, llm in started.items()
                },
                "n_parallel": args.n_parallel,
            },
        )
    finally:
        for llm in {id(m): m for m in started.values()}.values():
            llm.close()


# -- command line ----------------------------------------------------------------------------------


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def second_seed_systems(results: Path, preset: Preset, task: str, systems: list[str], k: int = 2) -> list[str] | None:
    """The ``k`` trainable systems with the best mean test score on ``task`` at the preset's first seeds.

    ``None`` while any of those runs is missing (the choice waits for the whole first round), except
    runs of feedprop systems this checkout cannot run yet (they are not waited for; once they run,
    the choice is made again and may add their second seeds).
    """
    means: dict[str, float] = {}
    for system in systems:
        if not SYSTEMS[system].trains:
            continue
        if SYSTEMS[system].kind == "feedprop" and unavailable(system):
            continue
        scores = []
        for seed in preset.seeds:
            path = RunSpec(system, task, seed, preset).result_path(results)
            if not path.exists():
                return None
            result = read_json(path)
            if result.get("status") == "ok" and result.get("test_after") is not None:
                scores.append(float(result["test_after"]))
        if scores:
            means[system] = sum(scores) / len(scores)
    return sorted(means, key=lambda s: (-means[s], systems.index(s)))[:k]


def plan(args: argparse.Namespace, results: Path | None = None) -> list[RunSpec]:
    preset = PRESETS[args.preset or ("smoke" if args.smoke else "v2")]
    named_systems, named_tasks = _split(args.systems), _split(args.tasks)
    for s in named_systems:
        if s not in SYSTEMS:
            raise SystemExit(f"unknown system {s!r}; choose from {', '.join(SYSTEMS)}")
    for t in named_tasks:
        if t not in TASKS:
            raise SystemExit(f"unknown task {t!r}; choose from {', '.join(TASKS)}")
    if args.matrix:  # --systems and --tasks narrow the matrix (or add to it), in the matrix's order
        field = preset.field_systems
        systems = [s for s in field if not named_systems or s in named_systems]
        systems += [s for s in named_systems if s not in systems]
        tasks = [t for t in preset.field_tasks if not named_tasks or t in named_tasks]
        tasks += [t for t in named_tasks if t not in tasks]
    elif args.smoke:
        systems, tasks = named_systems or list(SYSTEMS), named_tasks or [SMOKE_TASK]
    else:
        systems, tasks = named_systems, named_tasks
        if not systems or not tasks:
            raise SystemExit("name --systems and --tasks (comma-separated), or use --matrix or --smoke")
    seeds = [int(s) for s in _split(args.seeds)] or list(preset.seeds)
    # Task by task, so that early results already compare every system on a task.
    specs = [RunSpec(system, task, seed, preset) for task in tasks for seed in seeds for system in systems]
    if args.matrix and not args.seeds and preset.second_seed and results is not None:
        for task in tasks:
            best = second_seed_systems(results, preset, task, systems)
            for seed in preset.second_seed:
                specs += [RunSpec(system, task, seed, preset) for system in best or []]
    return specs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--smoke", action="store_true", help="tiny run against a scripted fake endpoint (seconds)")
    p.add_argument(
        "--matrix",
        action="store_true",
        help="the preset's systems on its tasks (narrowed by --systems/--tasks), then a second seed for the "
        "two best systems of each task once the first round of that task is done (resumable)",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="sizes, budget and field (default: smoke with --smoke, else v2)",
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
    p.add_argument("--endpoint", help="base URL (with /v1) of a running OpenAI-compatible server for the student")
    p.add_argument("--optimizer-endpoint", help="base URL of the optimizer's server (default: --endpoint)")
    p.add_argument("--model", help="model name at --endpoint (default: the server's first model)")
    p.add_argument(
        "--endpoint-note", default=None, help="how the --endpoint server was started, recorded in every result file"
    )
    p.add_argument("--student-model", default=None, help="embedded student model (default: the preset's)")
    p.add_argument("--optimizer-model", default=None, help="embedded (or --optimizer-endpoint) optimizer model")
    p.add_argument("--n-parallel", type=int, default=4, help="slots of each embedded model (default: 4)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of each embedded model (default: all; on a shared, loaded machine 1 is "
        "far faster, because llama.cpp's threads wait on each other)",
    )
    p.add_argument(
        "--bench-python",
        type=Path,
        default=DEFAULT_BENCH_PYTHON,
        help="interpreter with the peers installed (default: .venv-bench/bin/python)",
    )
    p.add_argument("--retry-failed", action="store_true", help="run again the runs whose result is an error")
    p.add_argument(
        "--dry-run", action="store_true", help="list the runs, whether each is done, and the time left, then exit"
    )
    return p


def _estimate_lines(preset: Preset, todo: list[RunSpec], baselines: list[str], results: Path) -> list[str]:
    """The time estimate of what is left, the second seeds not chosen yet included."""
    lines = []
    totals = []
    for expected in (False, True):
        seconds = sum(estimate_seconds(preset, None, t) for t in baselines)
        seconds += sum(estimate_seconds(preset, s.system, s.task, expected=expected) for s in todo)
        pending = 0.0
        for task in preset.field_tasks:
            if preset.second_seed and second_seed_systems(results, preset, task, preset.field_systems) is None:
                trainable = [s for s in preset.field_systems if SYSTEMS[s].trains]
                mean = sum(estimate_seconds(preset, s, task, expected=expected) for s in trainable) / len(trainable)
                pending += 2 * len(preset.second_seed) * mean
        totals.append((seconds, pending))
    (worst, worst_pending), (likely, likely_pending) = totals
    lines.append(f"left: {len(baselines)} baselines and {len(todo)} runs, estimated {worst / 3600:.1f} h")
    if worst_pending:
        lines.append(
            f"  + second seed for the two best systems of each task (chosen when the task's first round is "
            f"done): about {worst_pending / 3600:.1f} h"
        )
    lines.append(
        f"estimate: {(worst + worst_pending) / 3600:.1f} h of machine time if every trained program changes "
        f"(each run pays a test pass); {(likely + likely_pending) / 3600:.1f} h if the systems leave the program "
        "unchanged as often as in the first matrix (an unchanged program reuses the baseline's test pass)"
    )
    lines.append(
        "  (protocol.estimate_seconds: DESIGN.md section 4's model rates, the first matrix's reply lengths and "
        "slowdown; about +-30%)"
    )
    return lines


class _Stopped(BaseException):
    """SIGTERM or SIGHUP: end the run in progress (its worker too) and leave no result for it.

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` on the way
    (the run's own error recording included) turns it into a failed run's result file.
    """


def _on_signal(signum: int, frame: Any) -> None:
    raise _Stopped(f"stopped by signal {signum}")


@contextlib.contextmanager
def _exclusive(results: Path) -> Iterator[None]:
    """One harness per results directory: a second one exits instead of running the same runs twice."""
    results.mkdir(parents=True, exist_ok=True)
    with (results / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SystemExit(f"another run.py is running on {results}; wait for it or stop it first") from None
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke and args.matrix:
        raise SystemExit("--smoke and --matrix exclude each other")
    args.preset = args.preset or ("smoke" if args.smoke else "v2")
    preset = PRESETS[args.preset or ("smoke" if args.smoke else "v2")]
    results: Path = args.results or (DEFAULT_RESULTS / args.preset)
    if args.smoke and args.results is None:
        results = Path(tempfile.mkdtemp(prefix="feedprop-compare-smoke-"))
    specs = plan(args, results)

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
    baselines = [
        t for t in dict.fromkeys(s.task for s in todo) if not baseline_spec(t, preset).baseline_path(results).exists()
    ]
    if args.dry_run:
        for task in baselines:
            print(f"to run: baseline {task}")
        for spec in todo:
            print(f"to run: {spec.system} {spec.task} seed{spec.seed}")
        for line in _estimate_lines(preset, todo, baselines, results):
            print(line)
        return 0

    with _exclusive(results):
        return _run(args, preset, results, specs, todo)


def _run(args: argparse.Namespace, preset: Preset, results: Path, specs: list[RunSpec], todo: list[RunSpec]) -> int:
    availability = peer_availability(args.bench_python) if any(SYSTEMS[s.system].kind == "peer" for s in todo) else {}
    for spec in todo:
        if SYSTEMS[spec.system].kind == "feedprop":
            availability[spec.system] = unavailable(spec.system)
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
    tried: set[tuple[str, str, int]] = set()
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with model_server(args, runnable, preset) as (upstreams, models, endpoint):
            queue = runnable
            try:
                while queue:
                    for n, spec in enumerate(queue, 1):
                        tried.add((spec.system, spec.task, spec.seed))
                        failures += not _one(
                            spec, f"[{n}/{len(queue)}]", args, preset, results, upstreams, models, endpoint
                        )
                    # The second seeds are chosen once a task's first round is done: run those now chosen.
                    queue = [
                        s
                        for s in plan(args, results)
                        if (s.system, s.task, s.seed) not in tried
                        and not s.result_path(results).exists()
                        and not availability.get(s.system)
                    ]
                    if queue:
                        _log(
                            f"{len(queue)} second-seed runs chosen (the two best systems of a task); running them",
                            results,
                        )
            except _Stopped as exc:
                _log(f"{exc}: the run in progress left no result and starts afresh on resume", results)
                if args.smoke:
                    return 130
                # Leave at once: closing the embedded engines would wait for the generations the killed
                # worker left in flight (minutes at nice 19). Results are written atomically and the lock
                # is an flock, so exiting here loses nothing but the run in progress.
                os._exit(130)
    except _Stopped as exc:  # while the engines were starting
        _log(f"{exc} before any run started", results)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if failures else 0


def _one(
    spec: RunSpec,
    counter: str,
    args: argparse.Namespace,
    preset: Preset,
    results: Path,
    upstreams: dict[str, str],
    models: dict[str, str],
    endpoint: dict[str, Any],
) -> bool:
    """Run one spec (its task's baseline first if missing); whether it succeeded."""
    label = f"{spec.system} {spec.task} seed{spec.seed}"
    if not spec.baseline_path(results).exists():
        _log(f"{counter} baseline {spec.task} (the starting program, one test request at a time)", results)
    baseline = ensure_baseline(spec.task, preset, results, upstreams, models, endpoint)
    _log(f"{counter} start {label}", results)
    result = execute(spec, results, upstreams, models, endpoint, args.bench_python, baseline)
    if result["status"] != "ok":
        _log(f"{counter} FAILED {label}: {result['error']}", results)
        return False
    b = result["budget"]
    _log(
        f"{counter} done {label}: test {result['test_before']:.3f} -> {result['test_after']:.3f}"
        f"{' (unchanged)' if result['unchanged'] else ''}, training {b['used_tokens']} tokens of "
        f"{b['train_tokens']}, {result['wall_seconds'] / 60:.1f} min",
        results,
    )
    return True


if __name__ == "__main__":
    sys.exit(main())
