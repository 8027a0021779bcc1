"""The side-by-side benchmark harness (benchmarks/compare): its parts, and the smoke run end to end.

The smoke run goes through the real-run code path (clients, counting proxy, budgets, loops,
scorer, result files, report) against a scripted endpoint instead of the model. The feedprop
systems always run; each peer runs only if the bench environment (``.venv-bench``) has it.
"""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
import time
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
from common import train_tokens  # noqa: E402
from fake_endpoint import GOOD_PROMPT, MAGIC, FakeEndpoint  # noqa: E402
from loop import gated_loop  # noqa: E402
from protocol import PRESETS, SYSTEMS, TASKS, Preset, RunSpec, copro_shape, estimate_seconds, subsample  # noqa: E402
from proxy import CountingProxy, Limit, fetch_usage, set_phase  # noqa: E402
from stats import paired_interval, separation  # noqa: E402

from feedprop.training.events import ItemOutcome  # noqa: E402

FEEDPROP_SYSTEMS = [name for name, spec in SYSTEMS.items() if spec.kind == "feedprop" and not run.unavailable(name)]
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
    preset = PRESETS["matrix"]
    assert len(everything) == len(preset.systems) * len(preset.tasks) == 35
    narrowed = planned("--matrix", "--tasks", "mbpp,gsm8k", "--systems", "trace-optoprime,feedprop-optoprime")
    assert narrowed == [
        ("feedprop-optoprime", "gsm8k"),
        ("trace-optoprime", "gsm8k"),
        ("feedprop-optoprime", "mbpp"),
        ("trace-optoprime", "mbpp"),
    ]
    assert planned("--matrix", "--systems", "dspy-bootstrap") == [("dspy-bootstrap", t) for t in preset.tasks]
    with pytest.raises(SystemExit, match="unknown system 'nope'"):
        planned("--matrix", "--systems", "nope")


@pytest.mark.parametrize("calls,tokens", [(3, 100_000), (8, 6_000), (20, 12_000), (2, 1_000)])
def test_copro_shape_fits_the_budget(calls: int, tokens: int) -> None:
    preset = Preset("t", train=1, val=1, test=1, train_tokens=1, optimizer_calls=calls, optimizer_tokens=tokens)
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


def test_budget_check_counts_both_roles_in_training_and_flags_late_calls_and_overshoot() -> None:
    spec = RunSpec("dspy-miprov2-light", "gsm8k", 0, Preset("t", train=1, val=1, test=1, train_tokens=1000))
    calls = [
        {
            "role": role,
            "phase": "train",
            "t": 10.0 * i + 5,
            "seconds": 5.0,
            "prompt_tokens": 400,
            "completion_tokens": 100,
        }
        for i, role in enumerate(["student", "optimizer", "student"])
    ]
    calls.append({"role": "student", "phase": "test", "t": 99.0, "seconds": 1.0, "prompt_tokens": 9000})
    check = run.budget_check(spec, calls)
    # The third call started after 1,000 training tokens (student + optimizer) had been spent; the
    # test-phase call does not count.
    assert check["used_tokens"] == 1500 and check["used_by_role"] == {"student": 1000, "optimizer": 500}
    assert check["calls_started_after_budget"] == 1 and not check["respected"]
    assert check["overshoot_tokens"] == 500 and check["overshoot"] == 0.5 and not check["stops_at_budget"]
    assert run.budget_check(spec, calls[:2])["respected"] and run.budget_check(spec, calls[:2])["overshoot"] == 0.0


def test_proxy_counts_by_phase_and_sets_the_seed_and_the_test_pass_parameters() -> None:
    fake = FakeEndpoint({"2+2?": "4"})
    fake.start()
    preset = Preset("t", train=1, val=1, test=1, train_tokens=10, request_seed=7, test_params={"cache_prompt": False})
    proxy = run.make_proxy(preset, {"student": fake.base_url, "optimizer": fake.base_url})
    proxy.start()
    try:
        question = {"model": "m", "messages": [{"role": "user", "content": "2+2?"}]}
        assert _post(proxy.url("student"), question)[0] == 200
        assert fake.requests[-1]["seed"] == 7 and "cache_prompt" not in fake.requests[-1]
        assert _post(proxy.url("student"), {**question, "seed": 3})[0] == 200
        assert fake.requests[-1]["seed"] == 3  # in training a system's own seed stands (it may sample)
        assert _post(proxy.url("optimizer"), question)[0] == 200
        assert "seed" not in fake.requests[-1]  # the optimizer samples as its system chooses
        set_phase(proxy.usage_url(), "test")  # what a worker in another process does
        assert _post(proxy.url("student"), {**question, "seed": 3})[0] == 200
        assert fake.requests[-1]["seed"] == 7 and fake.requests[-1]["cache_prompt"] is False
        usage = fetch_usage(proxy.usage_url())
        assert usage["phase"] == "test"
        assert usage["phases"]["train"]["student"]["calls"] == 2 and usage["phases"]["train"]["optimizer"]["calls"] == 1
        assert usage["phases"]["test"]["student"]["calls"] == 1 and usage["phases"]["test"]["optimizer"]["calls"] == 0
        train = usage["phases"]["train"]
        assert train_tokens(usage) == train["student"]["tokens"] + train["optimizer"]["tokens"] > 0
        with pytest.raises(RuntimeError, match="refused phase"):
            set_phase(proxy.usage_url(), "lunch")
    finally:
        proxy.close()
        fake.close()


def test_proxy_sends_each_role_to_its_own_server() -> None:
    student, optimizer = FakeEndpoint({}), FakeEndpoint({})
    student.start()
    optimizer.start()
    proxy = CountingProxy({"student": student.base_url, "optimizer": optimizer.base_url})
    proxy.start()
    try:
        hello = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        _post(proxy.url("optimizer"), hello)
        _post(proxy.url("optimizer"), hello)
        _post(proxy.url("student"), hello)
        assert (student.calls, optimizer.calls) == (1, 2)
    finally:
        proxy.close()
        student.close()
        optimizer.close()


# -- the statistics ----------------------------------------------------------------------------------


def test_paired_bootstrap_matches_a_hand_computed_interval() -> None:
    # One item of ten gained, none lost: a resampled mean is k/10 with k ~ Binomial(10, 0.1).
    # P(k = 0) = 0.349 > 0.05, so the 5th percentile is 0; P(k <= 2) = 0.930 < 0.95 <= P(k <= 3) = 0.987,
    # so the 95th percentile is 0.3.
    interval = paired_interval([1.0] + [0.0] * 9, [0.0] * 10)
    assert (interval.mean, interval.low, interval.high, interval.n) == (0.1, 0.0, 0.3, 10)
    assert not interval.excludes_zero
    # Pairing: the same items moved the same way give a point interval, however the items differ.
    shifted = paired_interval([1.0, 1.0, 0.0, 1.0], [0.0, 0.0, -1.0, 0.0])
    assert (shifted.low, shifted.mean, shifted.high) == (1.0, 1.0, 1.0) and shifted.excludes_zero
    # Two of two items: the resampled mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4.
    two = paired_interval([1.0, 0.0], [0.0, 0.0])
    assert (two.low, two.high) == (0.0, 1.0)
    with pytest.raises(ValueError, match="same items"):
        paired_interval([1.0], [1.0, 0.0])


def test_two_systems_that_tie_are_not_separated_and_a_clear_winner_is() -> None:
    items = {(seed, i): float(i % 3 == 0) for seed in (0, 1) for i in range(100)}
    tie = separation({"feedprop-recommended": dict(items), "dspy-gepa": dict(items)})
    assert tie.verdict == "no separation" and tie.best is None
    assert tie.interval is not None and (tie.interval.low, tie.interval.high) == (0.0, 0.0)
    # Equal means, different items: still no separation.
    flipped = {k: 1.0 - v if k[1] < 66 and k[1] % 3 != 1 else v for k, v in items.items()}
    assert separation({"a": items, "b": flipped}).best is None
    # 30 more items right out of 200, none lost: the interval excludes zero.
    better = {k: 1.0 if k[1] in range(1, 46, 3) else v for k, v in items.items()}
    clear = separation({"a": items, "b": better, "c": {k: 0.0 for k in items}})
    assert clear.verdict == "best: b" and clear.runner_up == "a" and clear.interval is not None
    assert clear.interval.n == 200 and clear.interval.low > 0.0
    assert separation({"a": items}).verdict == "only a"


def test_report_says_no_separation_for_a_tie_and_best_for_a_clear_winner() -> None:
    def with_items(system: str, after: list[float]) -> dict[str, Any]:
        out = {**_fake_result(system, sum(after) / len(after)), "test_before": 0.0}
        out["test_items_before"] = [{"index": i, "score": 0.0, "output": ""} for i in range(len(after))]
        out["test_items_after"] = [{"index": i, "score": s, "output": ""} for i, s in enumerate(after)]
        return out

    tie = [
        with_items("feedprop-recommended", [1.0] * 50 + [0.0] * 50),
        with_items("dspy-gepa", [0.0] * 50 + [1.0] * 50),
    ]
    text = report.markdown(tie, title="T", commands=[], notes=[])
    assert "Verdict: **no separation**" in text and "**50.0**" not in text
    clear = [
        with_items("feedprop-recommended", [1.0] * 60 + [0.0] * 40),
        with_items("dspy-gepa", [1.0] * 30 + [0.0] * 70),
    ]
    text = report.markdown(clear, title="T", commands=[], notes=[])
    assert "Verdict: **best: feedprop-recommended** (feedprop-recommended − dspy-gepa" in text
    assert "| feedprop-recommended | 0 | 0.0 | **60.0** | +60.0 [" in text


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
        # The scripted student is right only with the optimizer's proposed prompt: it must have been adopted
        # (OptoPrime and Hindsight read the scripted JSON suggestion; the default's Reflect takes a plain reply).
        assert result["test_before"] == 0.0 and result["test_after"] == 1.0
        assert result["final_prompt"] == GOOD_PROMPT or (
            system == "feedprop-recommended" and MAGIC in result["final_prompt"]
        )
        train = result["usage"]["train"]
        assert train["optimizer"]["calls"] >= 1 and train["optimizer"]["tokens"] > 0 and train["student"]["calls"] > 0
        # The test pass is counted apart from training, and makes no optimizer call.
        assert result["usage"]["test"]["optimizer"]["calls"] == 0
        assert result["usage"]["test"]["student"]["calls"] == PRESETS["smoke"].test
        budget = result["budget"]
        assert budget["respected"] and budget["stops_at_budget"] and budget["overshoot"] == 0.0
        assert budget["used_tokens"] == train["optimizer"]["tokens"] + train["student"]["tokens"]
        assert result["protocol"]["start_prompt"] == TASKS[run.SMOKE_TASK].start_prompt
        assert len(result["test_items_after"]) == PRESETS["smoke"].test
        assert result["protocol"]["subsample"]["indices"]["test"] == [i["index"] for i in result["test_items_after"]]
        # Per-item outcomes, before and after, in the schema the trainer's event log uses.
        for item in result["test_items_before"] + result["test_items_after"]:
            assert set(item) <= set(ItemOutcome.__annotations__) and {"index", "score", "output"} <= set(item)
        assert result["change"]["mean"] == 1.0 and result["change"]["low"] == 1.0
        # The validation curve: the start, then one point per step, tokens growing up to what was spent.
        curve = result["curve"]
        assert curve[0]["step"] == 0 and curve[-1]["val_score"] == 1.0
        assert [p["tokens"] for p in curve] == sorted(p["tokens"] for p in curve)
        assert curve[-1]["tokens"] == budget["used_tokens"]
        assert result["wall_seconds"] > 0 and result["machine"]["cores"] >= 1
        assert result["source"]["commit"] == head
    # One shared baseline: every system's "before" is the same file's items.
    baseline = json.loads((tmp_path / "baselines" / "bbh__object_counting.json").read_text(encoding="utf-8"))
    assert baseline["score"] == 0.0 and baseline["requests"]["workers"] == 1
    assert all(_result(tmp_path, system)["test_items_before"] == baseline["items"] for system in FEEDPROP_SYSTEMS)
    again = _smoke(tmp_path, FEEDPROP_SYSTEMS)
    assert again.returncode == 0 and f"{len(FEEDPROP_SYSTEMS)} already done, 0 to run" in again.stdout

    assert report.main(["--results", str(tmp_path), "--title", "smoke"]) == 0
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| feedprop-optoprime | 0 | 0.0 | 100.0 | +100.0 [+100.0, +100.0] |" in text
    assert "Verdict: **no separation**" in text  # both reach 100%: a tie
    assert (tmp_path / "accuracy_vs_tokens.png").stat().st_size > 1000
    assert (tmp_path / "val_vs_tokens.png").stat().st_size > 1000


def test_the_feedprop_default_trains_the_one_call_program_with_demonstrations(monkeypatch: pytest.MonkeyPatch) -> None:
    import feedprop_system
    from common import load_run_data

    from feedprop.tasks import load_task

    if feedprop_system.unavailable("feedprop-recommended"):  # a checkout whose fp.train lacks search=: the rest
        monkeypatch.setitem(feedprop_system.TRAIN_OPTIONS, "feedprop-recommended", {})
        monkeypatch.setattr(feedprop_system, "unavailable", lambda system: None)
    task = load_task(run.SMOKE_TASK)
    fake = FakeEndpoint({str(e.input): str(e.target) for split in ("train", "val", "test") for e in task.split(split)})
    fake.start()
    spec = RunSpec("feedprop-recommended", run.SMOKE_TASK, 0, PRESETS["smoke"])
    proxy = run.make_proxy(spec.preset, {"student": fake.base_url, "optimizer": fake.base_url})
    proxy.start()
    try:
        urls = {role: proxy.url(role) for role in ("student", "optimizer")}
        models = {"student": "fake-model", "optimizer": "fake-model"}
        part = feedprop_system.run_feedprop(spec, load_run_data(spec), urls, models, proxy.usage, proxy.set_phase)
    finally:
        proxy.close()
        fake.close()
    assert not part["unchanged"] and part["test_after"]["score"] == 1.0
    assert "carefully" in part["final_prompt"] and part["curve"][-1]["val_score"] == 1.0
    assert proxy.usage()["phases"]["test"]["student"]["calls"] == spec.preset.test


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
    assert result["test_before"] == 0.0  # the shared baseline
    assert result["usage"]["test"]["optimizer"]["calls"] == 0
    if SYSTEMS[system].trains:
        assert result["usage"]["train"]["optimizer"]["calls"] >= 1
    else:  # reported as it is: a test pass, no training
        assert result["usage"]["train"]["student"]["calls"] == result["usage"]["train"]["optimizer"]["calls"] == 0
        assert len(result["test_items_after"]) == PRESETS["smoke"].test
    if system not in ("dspy-bootstrap", "dspy-cot"):  # the others carry the proposed instruction into the prompt
        assert result["test_after"] == 1.0 and result["final_prompt"] == GOOD_PROMPT
    if system == "dspy-gepa":  # its candidates' validation scores against the tokens spent when found
        assert result["curve"][0]["val_score"] == 0.0 and result["curve"][-1]["val_score"] == 1.0
    assert result["versions"]


# -- the report --------------------------------------------------------------------------------------


def _items(fraction: float, n: int = 4) -> list[dict[str, Any]]:
    right = round(fraction * n)
    return [{"index": i, "score": float(i < right), "output": ""} for i in range(n)]


def _fake_result(system: str, after: float, *, status: str = "ok", respected: bool = True) -> dict[str, Any]:
    side = {"calls": 3, "tokens": 3000}
    overshoot = 0.0 if respected else 0.25
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
        "budget": {"respected": respected, "train_tokens": 8000, "used_tokens": 6000, "overshoot": overshoot},
        "test_items_before": _items(0.25),
        "test_items_after": _items(after),
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
    assert "| feedprop-optoprime | 0 | 25.0 | 75.0 | +50.0 [" in text and "| 6.0k | — | — | 1.0 | 2.0 |" in text
    # Three of four items against two of four: the paired interval includes zero.
    assert "Verdict: **no separation** (feedprop-optoprime − dspy-miprov2-light, paired over 4 items" in text
    assert (
        "| dspy-miprov2-light † | 0 | 25.0 | 50.0 | +25.0 [" in text
        and "| 25% |" in text
        and "| dspy-copro ✗ |" in text
        and "- ✗ dspy-copro: boom" in text
    )
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
    # feedprop: best nowhere (4 items separate nothing), mean of +50 and 0 points, 2 x 3.0k optimizer
    # tokens, 2 x 6.0k training tokens, 62 minutes
    assert "| feedprop-optoprime | 2 | 0 | +25.0 | 6.0k | 12.0k | 1.0 |" in section
    assert "| textgrad-tgd | 2 | 0 | +25.0 | 6.0k | 12.0k | 0.1 |" in section
    assert "| dspy-copro | 0 | 0 | — | 0.0k | 0.0k | 0.0 |" in section
    assert "Machine time of the successful runs in this report: 1.1 hours." in section


# -- the v2 matrix: its field, its estimate, its second seeds -------------------------------------------


def test_v2_preset_fits_the_issue_field_sizes_and_models() -> None:
    v2 = PRESETS["v2"]
    assert v2.test >= 100 and v2.test_workers == 1 and v2.test_params == {"cache_prompt": False}
    assert len(v2.tasks) >= 4 and "gsm8k" in v2.tasks and sum(t.startswith("bbh/") for t in v2.tasks) >= 3
    # Three BBH answer kinds: a number, an option letter, a label.
    guides = {type(__import__("feedprop.tasks", fromlist=["load_task"]).load_task(t).guide).__name__ for t in v2.tasks}
    assert {"Numeric", "MultipleChoice", "ExactMatch"} <= guides
    for system in ("dspy-gepa", "dspy-bootstrap", "dspy-miprov2-light", "trace-optoprime", "feedprop-hindsight"):
        assert system in v2.systems
    assert "feedprop-recommended" in v2.systems and "dspy-cot" in v2.systems and not SYSTEMS["dspy-cot"].trains
    assert (v2.student_model, v2.optimizer_model) == ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
    assert v2.second_seed and not set(v2.second_seed) & set(v2.seeds)


def test_dry_run_lists_the_baselines_and_runs_and_prints_an_estimate(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(COMPARE / "run.py"), "--matrix", "--dry-run", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(ROOT),
    )
    assert done.returncode == 0, done.stderr
    v2 = PRESETS["v2"]
    assert done.stdout.count("to run: baseline ") == len(v2.tasks)
    assert done.stdout.count(" seed0\n") == len(v2.tasks) * len(v2.systems)
    estimate = [line for line in done.stdout.splitlines() if line.startswith("estimate: ")]
    assert len(estimate) == 1 and " h of machine time" in estimate[0]
    worst = float(estimate[0].split("estimate: ")[1].split(" h")[0])
    total = sum(estimate_seconds(v2, None, t) for t in v2.tasks)
    total += sum(estimate_seconds(v2, s, t) for t in v2.tasks for s in v2.systems)
    assert worst * 3600 > total  # the second seeds come on top
    assert not list(tmp_path.glob("runs/**/*.json"))  # a dry run runs nothing


def test_second_seeds_go_to_the_two_best_systems_once_the_first_round_is_done(tmp_path: Path) -> None:
    preset = PRESETS["v2"]
    task = "gsm8k"
    systems = list(preset.systems)
    assert run.second_seed_systems(tmp_path, preset, task, systems) is None
    scores = dict(zip(systems, [0.3, 0.5, 0.2, 0.6, 0.1, 0.4, 0.9], strict=True))  # dspy-cot (untrained) is best
    for system, score in scores.items():
        path = RunSpec(system, task, 0, preset).result_path(tmp_path)
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"status": "ok", "test_after": score}), encoding="utf-8")
    assert run.second_seed_systems(tmp_path, preset, task, systems) == ["dspy-gepa", "feedprop-hindsight"]
    args = run.build_parser().parse_args(["--matrix", "--tasks", task])
    planned = [(s.system, s.seed) for s in run.plan(args, tmp_path)]
    assert planned[-2:] == [("dspy-gepa", 1), ("feedprop-hindsight", 1)] and len(planned) == len(systems) + 2


def test_gated_loop_records_the_validation_curve_and_drops_a_step_the_budget_cuts_off() -> None:
    state = {"p": "a", "tokens": 0}

    def step(batch: list[int]) -> None:
        state["p"] += "b"
        state["tokens"] += 60

    log = gated_loop(
        list(range(6)),
        batch_size=1,
        epochs=1,
        seed=0,
        step=step,
        get_state=lambda: state["p"],
        set_state=lambda v: state.update(p=v),
        validate=lambda: len(state["p"]) / 10,
        budget_reason=lambda: "budget: tokens" if state["tokens"] >= 100 else None,
        tokens_used=lambda: state["tokens"],
    )
    # Step 2 spent the budget before its validation: it is dropped unvalidated and the loop stops.
    assert state["p"] == "ab" and log["stop_reason"] == "budget: tokens"
    assert [(p["step"], p["tokens"], p["val_score"], p["accepted"]) for p in log["curve"]] == [
        (0, 0, 0.1, True),
        (1, 60, 0.2, True),
        (2, 120, 0.2, False),
    ]
    assert log["steps"][1]["reason"].startswith("dropped unvalidated")


def test_report_reads_the_validation_score_at_the_budget_from_the_curve() -> None:
    curve = [{"tokens": 0, "val_score": 0.1}, {"tokens": 900, "val_score": 0.4}, {"tokens": 1100, "val_score": 0.8}]
    assert report.value_at_budget(curve, 1000) == 0.4
    assert report.value_at_budget(curve, 5000) == 0.8 and report.value_at_budget(None, 1000) is None


# -- on the real embedded model (the lead runs these: pytest -m integration) ---------------------------


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_test_pass_repeats_bit_for_bit_on_the_embedded_student() -> None:
    """Two scorings of the same program on the same items, response cache off, with other traffic between
    them and the items in the other order, give the same reply and score for every item (about a minute)."""
    from concurrent.futures import ThreadPoolExecutor

    from common import load_run_data, score_test_set
    from feedprop_system import Solver

    import feedprop as fp
    from feedprop.llm import LocalModel

    preset = PRESETS["v2"]
    spec = RunSpec("feedprop-optoprime", "bbh/object_counting", 0, preset)
    data = load_run_data(spec)
    data.test, data.indices["test"] = data.test[:5], data.indices["test"][:5]
    llm = LocalModel(preset.student_model, n_parallel=4, cache=False)
    proxy = run.make_proxy(preset, {"student": llm.base_url, "optimizer": llm.base_url})
    proxy.start()
    try:
        student = fp.OpenAICompatible(proxy.url("student"), model=llm.model, api_key="none", cache=False)
        solver = Solver(spec.start_prompt, student, preset.student_max_tokens)
        solver.eval()

        def answer(question: Any) -> str:
            with fp.no_trace():
                return str(solver(question).data)

        proxy.set_phase("test")
        first = score_test_set(answer, data, preset, None)
        # What a training phase does in between: concurrent requests with another prompt fill the slots.
        proxy.set_phase("train")
        other = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: student.complete(other, max_tokens=16, temperature=0.8, seed=i), range(4)))
        proxy.set_phase("test")
        data.test.reverse()
        data.indices["test"].reverse()
        second = score_test_set(answer, data, preset, None)
        student.close()
    finally:
        proxy.close()
        llm.close()
    by_index = {item["index"]: item for item in second["items"]}
    assert [(i["output"], i["score"]) for i in first["items"]] == [
        (by_index[i["index"]]["output"], by_index[i["index"]]["score"]) for i in first["items"]
    ]
    assert proxy.usage()["phases"]["test"]["student"]["calls"] == 10


@pytest.mark.parametrize("name", ["protocol", "proxy", "stats", "loop", "report", "feedprop_system", "common"])
def test_the_harness_modules_examples_run(name: str) -> None:
    import doctest
    import importlib

    failed, attempted = doctest.testmod(importlib.import_module(name))
    assert attempted > 0 and failed == 0


def test_sigterm_ends_the_harness_with_no_result_for_the_run_in_progress(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            str(COMPARE / "run.py"),
            "--smoke",
            "--results",
            str(tmp_path),
            "--systems",
            "feedprop-hindsight",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=str(ROOT),
    )
    log = tmp_path / "progress.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and " start " not in (log.read_text() if log.exists() else ""):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130
    assert "stopped by signal 15: the run in progress left no result" in log.read_text()
    assert not RunSpec("feedprop-hindsight", run.SMOKE_TASK, 0, PRESETS["smoke"]).result_path(tmp_path).exists()
