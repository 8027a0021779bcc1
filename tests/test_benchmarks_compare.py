"""The side-by-side benchmark harness (benchmarks/compare): its parts, and the smoke run end to end.

The smoke run goes through the real-run code path (clients, counting proxy, budgets, loops,
scorer, result files, report) against a scripted endpoint instead of the model. The feedprop
systems always run; each peer runs only if the bench environment (``.venv-bench``) has it.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPARE = ROOT / "benchmarks" / "compare"
sys.path.insert(0, str(COMPARE))

import report  # noqa: E402  (benchmarks/compare is not a package: its directory goes on the path first)
import run  # noqa: E402
from fake_endpoint import GOOD_PROMPT, FakeEndpoint  # noqa: E402
from loop import gated_loop  # noqa: E402
from protocol import PRESETS, SYSTEMS, TASKS, Preset, RunSpec, copro_shape, subsample  # noqa: E402
from proxy import CountingProxy, Limit, fetch_usage  # noqa: E402

FEEDPROP_SYSTEMS = [name for name, spec in SYSTEMS.items() if spec.kind == "feedprop"]
PEER_SYSTEMS = [name for name, spec in SYSTEMS.items() if spec.kind == "peer"]


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _smoke(results: Path, systems: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(COMPARE / "run.py"), "--smoke", "--results", str(results), "--systems", ",".join(systems)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ROOT),
    )


def _result(results: Path, system: str, task: str = run.SMOKE_TASK) -> dict[str, Any]:
    path = RunSpec(system, task, 0, PRESETS["smoke"]).result_path(results)
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


# -- protocol --------------------------------------------------------------------------------------


def test_test_subsample_is_the_same_for_every_seed_and_system() -> None:
    a = RunSpec("feedprop-optoprime", "gsm8k", 0, PRESETS["matrix"])
    b = RunSpec("dspy-copro", "gsm8k", 3, PRESETS["matrix"])
    assert a.indices("test", 1319) == b.indices("test", 1319)
    assert len(a.indices("test", 1319)) == PRESETS["matrix"].test
    assert a.indices("train", 200) != b.indices("train", 200)  # training draws vary with the seed
    assert subsample(5, 10, 0) == [0, 1, 2, 3, 4]


def test_every_task_and_system_is_known_and_unknown_ones_are_refused() -> None:
    assert {"bbh/object_counting", "bbh/word_sorting", "bbh/date_understanding", "gsm8k", "mbpp"} <= set(TASKS)
    with pytest.raises(ValueError, match="unknown system"):
        RunSpec("nope", "gsm8k", 0, PRESETS["smoke"])
    with pytest.raises(SystemExit, match="unknown task"):
        run.plan(run.build_parser().parse_args(["--systems", "dspy-copro", "--tasks", "bbh/nope", "--preset", "pilot"]))
    with pytest.raises(SystemExit, match="--systems and --tasks"):
        run.plan(run.build_parser().parse_args(["--preset", "pilot"]))


def test_matrix_is_narrowed_by_systems_and_tasks_in_its_own_order() -> None:
    def planned(*argv: str) -> list[tuple[str, str]]:
        args = run.build_parser().parse_args([*argv, "--preset", "matrix"])
        return [(spec.system, spec.task) for spec in run.plan(args)]

    everything = planned("--matrix")
    assert len(everything) == len(SYSTEMS) * len(TASKS)
    narrowed = planned("--matrix", "--tasks", "mbpp,gsm8k", "--systems", "trace-optoprime,feedprop-optoprime")
    assert narrowed == [
        ("feedprop-optoprime", "gsm8k"),
        ("trace-optoprime", "gsm8k"),
        ("feedprop-optoprime", "mbpp"),
        ("trace-optoprime", "mbpp"),
    ]
    assert planned("--matrix", "--systems", "dspy-bootstrap") == [("dspy-bootstrap", t) for t in TASKS]
    with pytest.raises(SystemExit, match="unknown system 'nope'"):
        planned("--matrix", "--systems", "nope")


@pytest.mark.parametrize("calls,tokens", [(3, 100_000), (8, 6_000), (20, 12_000), (2, 1_000)])
def test_copro_shape_fits_the_budget(calls: int, tokens: int) -> None:
    preset = Preset("t", train=1, val=1, test=1, optimizer_calls=calls, optimizer_tokens=tokens)
    breadth, depth = copro_shape(preset)
    assert breadth >= 2
    assert (breadth - 1) + (depth - 1) * breadth <= max(2, min(calls, tokens // 600))


# -- the counting proxy ----------------------------------------------------------------------------


def test_proxy_counts_each_role_caps_replies_and_refuses_over_budget() -> None:
    fake = FakeEndpoint({"2+2?": "4"})
    fake.start()
    proxy = CountingProxy(fake.base_url, caps={"student": 50, "optimizer": 100})
    proxy.start()
    try:
        proxy.set_limit("optimizer", Limit(calls=2))
        status, body = _post(
            proxy.url("student"), {"model": "m", "max_tokens": 9999, "messages": [{"role": "user", "content": "2+2?"}]}
        )
        assert status == 200 and body["choices"][0]["message"]["content"] == "I think it is 5."
        assert fake.requests[-1]["max_tokens"] == 50  # capped for the student role
        hello = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        assert [_post(proxy.url("optimizer"), hello)[0] for _ in range(2)] == [200, 200]
        assert fake.requests[-1]["max_tokens"] == 100  # set when the client did not say
        status, body = _post(proxy.url("optimizer"), hello)
        assert status == 400 and "budget exhausted: calls (2/2)" in body["error"]["message"]
        status, body = _post(
            proxy.url("student"), {"model": "m", "stream": True, "messages": [{"role": "user", "content": "2+2?"}]}
        )
        assert status == 400 and "stream" in body["error"]["message"]
        usage = fetch_usage(proxy.usage_url())
        assert usage["student"]["calls"] == 1 and usage["optimizer"]["calls"] == 2
        assert usage["optimizer"]["refused"] == 1 and usage["optimizer"]["tokens"] > 0
        assert usage["student"]["prompt_tokens"] > 0 and usage["student"]["completion_tokens"] > 0
        assert fake.calls == 3  # refused requests never reach the server
    finally:
        proxy.close()
        fake.close()


def test_proxy_refuses_once_the_token_budget_is_spent() -> None:
    assert Limit(tokens=100).reason(started=1, tokens=99) is None
    assert "tokens (100/100)" in str(Limit(tokens=100).reason(started=1, tokens=100))
    with pytest.raises(ValueError, match="http://"):
        CountingProxy("localhost:8080")


def test_budget_check_flags_calls_started_after_the_budget() -> None:
    spec = RunSpec(
        "dspy-copro", "gsm8k", 0, Preset("t", train=1, val=1, test=1, optimizer_calls=5, optimizer_tokens=1000)
    )
    calls = [
        {"role": "optimizer", "t": 10.0 * i + 5, "seconds": 5.0, "prompt_tokens": 400, "completion_tokens": 100}
        for i in range(3)
    ]
    check = run.budget_check(spec, calls)
    # The third call started after 1,000 tokens had been spent by the first two.
    assert check["used_tokens"] == 1500 and check["calls_started_after_budget"] == 1 and not check["respected"]
    assert run.budget_check(spec, calls[:2])["respected"]


# -- the gated loop ----------------------------------------------------------------------------------


def test_gated_loop_keeps_improvements_reverts_regressions_and_stops_on_budget() -> None:
    state = {"p": "start"}
    proposals = iter(["better!", "worse", "boom"])
    scores = {"start": 0.2, "better!": 0.5, "worse": 0.1}

    def step(batch: list[int]) -> None:
        value = next(proposals)
        if value == "boom":
            raise RuntimeError("optimizer budget exhausted: calls (3/3)")
        state["p"] = value

    log = gated_loop(
        list(range(8)),
        batch_size=2,
        epochs=1,
        seed=0,
        step=step,
        get_state=lambda: state["p"],
        set_state=lambda v: state.update(p=v),
        validate=lambda: scores[state["p"]],
        budget_reason=lambda: None,
        is_budget_error=lambda exc: "budget exhausted" in str(exc),
    )
    assert state["p"] == "better!"
    assert [s.get("accepted") for s in log["steps"]] == [True, False, False]
    assert log["steps"][1]["reason"].startswith("reverted")
    assert "refused" in log["stop_reason"] and log["val_before"] == 0.2 and log["val_after"] == 0.5


def test_gated_loop_does_not_start_a_step_once_the_budget_is_spent() -> None:
    calls = []
    log = gated_loop(
        [1, 2, 3],
        batch_size=1,
        epochs=1,
        seed=0,
        step=calls.append,
        get_state=lambda: "p",
        set_state=lambda v: None,
        validate=lambda: 0.0,
        budget_reason=lambda: "budget: calls (3/3)" if len(calls) >= 2 else None,
    )
    assert len(calls) == 2 and log["stop_reason"] == "budget: calls (3/3)"


# -- the smoke run, end to end ----------------------------------------------------------------------


def test_smoke_run_of_the_feedprop_systems_then_resume_and_report(tmp_path: Path) -> None:
    done = _smoke(tmp_path, FEEDPROP_SYSTEMS)
    assert done.returncode == 0, done.stdout + done.stderr
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    head = git.stdout.strip()
    for system in FEEDPROP_SYSTEMS:
        result = _result(tmp_path, system)
        assert result["status"] == "ok", result.get("traceback")
        # The scripted student is right only with the optimizer's proposed prompt: it must have been adopted.
        assert result["test_before"] == 0.0 and result["test_after"] == 1.0
        assert result["final_prompt"] == GOOD_PROMPT
        train = result["usage"]["train"]
        assert 1 <= train["optimizer"]["calls"] <= PRESETS["smoke"].optimizer_calls
        assert train["optimizer"]["tokens"] > 0 and train["student"]["calls"] > 0
        assert result["usage"]["test"]["optimizer"]["calls"] == 0
        assert result["budget"]["respected"] and result["budget"]["hard_limit_at_proxy"]
        assert result["protocol"]["start_prompt"] == TASKS[run.SMOKE_TASK].start_prompt
        assert len(result["test_items_after"]) == PRESETS["smoke"].test
        assert result["protocol"]["subsample"]["indices"]["test"] == [i["index"] for i in result["test_items_after"]]
        assert result["wall_seconds"] > 0 and result["machine"]["cores"] >= 1
        assert result["source"]["commit"] == head
    again = _smoke(tmp_path, FEEDPROP_SYSTEMS)
    assert again.returncode == 0 and f"{len(FEEDPROP_SYSTEMS)} already done, 0 to run" in again.stdout

    assert report.main(["--results", str(tmp_path), "--title", "smoke"]) == 0
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| feedprop-optoprime | 0.0 | **100.0** | +100.0 |" in text
    assert (tmp_path / "accuracy_vs_tokens.png").stat().st_size > 1000


def test_feedprop_steps_record_what_the_optimizer_refused_and_why() -> None:
    import feedprop_system

    refusal = {"key": "instruction", "value": "x" * 2000, "reason": "not accepted", "parameter": "instruction"}
    history = [{"step": 1, "candidates": [], "rejected_suggestions": [refusal]}]
    (step,) = feedprop_system._history(SimpleNamespace(history=history))
    (recorded,) = step["rejected_suggestions"]
    assert recorded["parameter"] == "instruction" and recorded["reason"] == "not accepted"
    assert len(recorded["value"]) <= 300 and recorded["value"].startswith("xxx")


@functools.cache
def _availability() -> dict[str, str | None]:
    return run.peer_availability(run.DEFAULT_BENCH_PYTHON)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the peers' imports (litellm, dspy) take minutes on a loaded machine
@pytest.mark.parametrize("system", PEER_SYSTEMS)
def test_smoke_run_of_a_peer(system: str, tmp_path: Path) -> None:
    why = _availability().get(system)
    if why:
        pytest.skip(f"{system} cannot run here: {why}")
    done = _smoke(tmp_path, [system], timeout=1700)
    assert done.returncode == 0, done.stdout + done.stderr
    result = _result(tmp_path, system)
    assert result["status"] == "ok", (result.get("error"), result.get("worker_log"))
    assert result["test_before"] == 0.0
    assert result["usage"]["train"]["optimizer"]["calls"] >= 1
    assert result["usage"]["test"]["optimizer"]["calls"] == 0
    if system != "dspy-bootstrap":  # the others carry the proposed instruction into the prompt
        assert result["test_after"] == 1.0 and result["final_prompt"] == GOOD_PROMPT
    assert result["versions"]


# -- the report --------------------------------------------------------------------------------------


def _fake_result(system: str, after: float, *, status: str = "ok", respected: bool = True) -> dict[str, Any]:
    side = {"calls": 3, "tokens": 3000}
    return {
        "system": system,
        "task": "gsm8k",
        "seed": 0,
        "status": status,
        "error": None if status == "ok" else "boom",
        "test_before": 0.25,
        "test_after": after,
        "wall_seconds": 120.0,
        "train_seconds": 60.0,
        "usage": {"complete": True, "train": {"optimizer": side, "student": side}},
        "budget": {"respected": respected},
        "test_items_after": [{}] * 4,
        "final_prompt": f"prompt of {system}",
        "preset": PRESETS["pilot"].to_dict(),
        "model": "m",
        "endpoint": {"kind": "k"},
        "machine": {"cpu": "c"},
    }


def test_report_marks_the_best_system_budget_overruns_and_failures(tmp_path: Path) -> None:
    runs = [
        _fake_result("feedprop-optoprime", 0.75),
        _fake_result("textgrad-tgd", 0.5),
        _fake_result("dspy-miprov2-light", 0.5, respected=False),
        _fake_result("dspy-copro", 0.0, status="error"),
    ]
    text = report.markdown(runs, title="T", commands=["python run.py"], notes=["n"])
    assert "| feedprop-optoprime | 25.0 | **75.0** | +50.0 | 3 | 3.0k | 6.0k | 1.0 | 2.0 |" in text
    assert "| dspy-miprov2-light † |" in text and "| dspy-copro ✗ |" in text and "- ✗ dspy-copro: boom" in text
    assert report.plot(runs, tmp_path / "p.png", title="T").stat().st_size > 1000


def test_report_names_the_commits_the_runs_were_made_from() -> None:
    made = {"commit": "a" * 40, "local_changes": False}
    runs = [
        {**_fake_result("feedprop-optoprime", 0.75), "source": made},
        {**_fake_result("textgrad-tgd", 0.5), "source": made},
        {**_fake_result("dspy-copro", 0.5), "source": {"commit": "b" * 40, "local_changes": True}},
        _fake_result("dspy-bootstrap", 0.5),  # made before commits were recorded
    ]
    text = report.markdown(runs, title="T", commands=[], notes=[])
    assert "4 succeeded; code: aaaaaaaaaa (2 runs), bbbbbbbbbb with local changes (1 runs)\n" in text
    assert "; code:" not in report.markdown(runs[3:], title="T", commands=[], notes=[])


def test_report_prints_a_zero_change_from_float_dust_as_plus_zero() -> None:
    trace_gsm8k_like = [0.25 - 0.2, 0.0, 0.0, 0.5 - 0.55]  # changes that sum to about -1e-17
    assert report._points(sum(trace_gsm8k_like) / 4) == "+0.0"
    assert report._points(-0.05) == "-5.0" and report._points(0.25) == "+25.0" and report._points(None) == "—"


def test_report_sums_each_system_across_tasks() -> None:
    runs = [
        _fake_result("feedprop-optoprime", 0.75),
        _fake_result("textgrad-tgd", 0.5),
        {**_fake_result("feedprop-optoprime", 0.25), "task": "mbpp", "wall_seconds": 3600.0},
        {**_fake_result("textgrad-tgd", 0.5), "task": "mbpp"},
        {**_fake_result("dspy-copro", 0.0, status="error"), "task": "mbpp"},
    ]
    text = report.markdown(runs, title="T", commands=[], notes=[])
    section = text.split("## Across tasks")[1].split("## Final prompts")[0]
    # feedprop: best on gsm8k only, mean of +50 and 0 points, 2 x 3.0k optimizer tokens, 62 minutes
    assert "| feedprop-optoprime | 2 | 1 | +25.0 | 6.0k | 12.0k | 1.0 |" in section
    assert "| textgrad-tgd | 2 | 1 | +25.0 | 6.0k | 12.0k | 0.1 |" in section
    assert "| dspy-copro | 0 | 0 | — | 0.0k | 0.0k | 0.0 |" in section
    assert "Machine time of the successful runs in this report: 1.1 hours." in section
