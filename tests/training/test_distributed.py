"""Items as Ray tasks: the same training, feedback and usage as local threads; budgets; killed workers.

The tests marked ``needs_ray`` share one real Ray instance on this machine (two worker processes,
no dashboard), started by a separate process (``ray_head.py``) so that this process joins it as
an existing cluster, by address, the way a driver joins a remote cluster. The other tests run
the worker's code in this process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from distributed_toys import (
    AsyncPipeline,
    Calls,
    EchoEndpoint,
    KillOnce,
    Pipeline,
    answer,
    broken_guide,
    exact,
    free_port,
    optimizer_llm,
)

from feedprop.errors import BudgetExhausted, ConfigurationError, InvalidInputError
from feedprop.llm import MockLLM, UsageMeter, replay, set_default, track_usage
from feedprop.ops import llm_calls
from feedprop.optim import OptoPrime
from feedprop.training import Budget, RayExecutor, evaluate, train
from feedprop.training.data import Item, as_items
from feedprop.training.distributed import BudgetLedger, _rebuild_failure, run_item
from feedprop.training.evaluation import run_items
from feedprop.training.screening import recorded_calls, screen
from feedprop.training.wire import Rebuilder

HERE = Path(__file__).resolve().parent
MOCK = {"kind": "mock", "handler": "distributed_toys:answer"}
TRAIN = [("q0", "q0!"), ("q7", "q7!"), ("q2", "q2!"), ("q3", "q3?")]
VAL = [("q4", "q4!"), ("q5", "q5!"), ("q6", "q6?")]

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="ray is not installed: pip install 'feedprop[distributed]' to run the Ray tests",
)


@pytest.fixture(autouse=True)
def workflow_model() -> Iterator[None]:
    """Local runs (and run_item in this process) use the model the workers build from MOCK."""
    set_default(MockLLM(answer))
    yield
    set_default(None)


def without_seconds(value: Any) -> Any:
    """``value`` with every ``seconds`` entry removed (wall-clock time differs between runs)."""
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value


# -- the worker's code, in this process ----------------------------------------------------------


def test_importing_feedprop_does_not_import_ray() -> None:
    code = (
        "import sys, feedprop; from feedprop.training import RayExecutor; RayExecutor(llm={'kind': 'env'}); "
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "False"


def test_a_worker_replies_with_json_only() -> None:
    model = Pipeline()
    request = RayExecutor(llm=MOCK).request(model, batch=0)
    reply = json.loads(run_item(request, 3, Item("q1", "q1?"), exact))
    assert set(reply) == {"outcome", "usage"}
    assert reply["usage"]["calls"] == 1 and reply["usage"]["prompt_tokens"] > 0
    outcome = Rebuilder(model).outcome(reply["outcome"])
    assert outcome.index == 3 and outcome.score == 1.0 and outcome.output.data == "q1?"


def test_worker_errors_travel_as_data_and_are_raised_as_themselves() -> None:
    request = RayExecutor(llm=MOCK).request(Pipeline(), batch=0)
    reply = json.loads(run_item(request, 0, Item("q1", "q1?"), broken_guide))
    assert reply["usage"]["calls"] == 1, "the usage of a failed item comes back too"
    error = _rebuild_failure(reply["failure"])
    assert isinstance(error, KeyError) and str(error) == str(KeyError("no score for q1?"))
    assert "raised on a Ray worker" in error.__notes__[0] and "broken_guide" in error.__notes__[0]


def test_a_worker_replays_the_records_its_request_carries_without_asking_the_ledger() -> None:
    model = Pipeline()
    parent = run_items(model, [Item("q1", "q1?")], exact)
    assert "replay" not in json.loads(RayExecutor(llm=MOCK).request(model, batch=0))
    with replay(recorded_calls(parent)):
        request = RayExecutor(llm=MOCK).request(model, batch=5)
    assert len(json.loads(request)["replay"]) == 1
    ledger = BudgetLedger()
    ledger.open(5, [{"calls": 0, "max_calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "max_tokens": None}])
    reply = json.loads(run_item(request, 0, Item("q1", "q1?"), exact, ledger))
    assert (reply["usage"]["calls"], reply["usage"]["replayed"]) == (0, 1)
    assert Rebuilder(model).outcome(reply["outcome"]).score == 1.0
    refused = json.loads(run_item(request, 1, Item("q2", "q2?"), exact, ledger))  # not recorded: needs a slot
    assert isinstance(_rebuild_failure(refused["failure"]), BudgetExhausted)


def test_a_refused_call_raises_budget_exhausted_on_the_worker() -> None:
    ledger = BudgetLedger()
    ledger.open(7, [{"calls": 0, "max_calls": 2, "prompt_tokens": 0, "completion_tokens": 0, "max_tokens": None}])
    request = RayExecutor(llm=MOCK).request(Calls(3), batch=7)
    reply = json.loads(run_item(request, 0, Item("q1", "q1?"), exact, ledger))
    error = _rebuild_failure(reply["failure"])
    local = UsageMeter(max_calls=2)
    local.calls = 2
    assert isinstance(error, BudgetExhausted) and str(error) == local.exhausted_reason()
    assert reply["usage"]["calls"] == 2 and ledger.counts()[0]["calls"] == 2


def test_a_worker_runs_an_async_workflow_under_the_ledger() -> None:
    model = AsyncPipeline()
    ledger = BudgetLedger()
    ledger.open(3, [{"calls": 0, "max_calls": 1, "prompt_tokens": 0, "completion_tokens": 0, "max_tokens": None}])
    request = RayExecutor(llm=MOCK).request(model, batch=3)
    reply = json.loads(run_item(request, 0, Item("q1", "q1?"), exact, ledger))
    outcome = Rebuilder(model).outcome(reply["outcome"])
    assert outcome.score == 1.0 and outcome.output.data == "q1?" and reply["usage"]["calls"] == 1
    (call,) = llm_calls(outcome.output)
    assert call.parents[0] is model.instruction, "the graph leads to the driver's parameters"
    refused = json.loads(run_item(request, 1, Item("q2", "q2?"), exact, ledger))  # the one call was used
    assert isinstance(_rebuild_failure(refused["failure"]), BudgetExhausted)


def test_the_ledger_refuses_calls_of_a_closed_batch_and_counts_tokens() -> None:
    ledger = BudgetLedger()
    limit = {"calls": 0, "max_calls": None, "prompt_tokens": 90, "completion_tokens": 0, "max_tokens": 100}
    ledger.open(1, [limit])
    assert ledger.reserve(1) is None
    ledger.settle(1, 8, 2)
    assert ledger.reserve(1) is not None and "token budget" in str(ledger.reserve(1))
    ledger.open(2, [])
    assert ledger.reserve(1) is not None and ledger.reserve(2) is None


def test_executor_options_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="address"):
        RayExecutor(address="")
    with pytest.raises(ConfigurationError, match="max_retries"):
        RayExecutor(max_retries=-1)
    with pytest.raises(ConfigurationError, match="task_cpus"):
        RayExecutor(task_cpus=0)
    with pytest.raises(ConfigurationError, match="num_cpus"):
        RayExecutor(num_cpus=0)
    with pytest.raises(ConfigurationError, match="kind must be one of"):
        RayExecutor(llm={"kind": "magic"})
    with pytest.raises(ConfigurationError, match="cannot be described"):
        RayExecutor(llm=MockLLM("x"))
    assert RayExecutor(address="10.0.0.1:6379").init_kwargs()["address"] == "10.0.0.1:6379"
    local = RayExecutor(num_cpus=2, ray_init={"object_store_memory": 10**8}).init_kwargs()
    assert local["address"] == "local" and local["num_cpus"] == 2 and local["object_store_memory"] == 10**8
    assert "address" not in RayExecutor().init_kwargs() and RayExecutor().llm_spec == {"kind": "env"}


def test_unknown_executor_names_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown executor 'spark'"):
        evaluate(Pipeline(), TRAIN, exact, executor="spark")
    with pytest.raises(InvalidInputError, match="executor must be"):
        evaluate(Pipeline(), TRAIN, exact, executor=3)  # type: ignore[arg-type]


# -- on a Ray cluster ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """Ray on this machine (see the module docs), joined by address through a RayExecutor."""
    # New Ray clusters require a token (kept in ~/.ray); a driver joining one by address needs
    # RAY_AUTH_MODE=token, set before Ray is imported, to send it. On a busy machine the raylet
    # and its Python agents may need more than Ray's default waits to come up.
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_AUTH_MODE", "token")
    ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'feedprop[distributed]'")
    env = {**os.environ, "RAY_raylet_start_wait_time_s": "300", "RAY_agent_register_timeout_ms": "300000"}
    head = subprocess.Popen(
        [sys.executable, str(HERE / "ray_head.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert head.stdout is not None
        line = head.stdout.readline()  # the head prints its address once the cluster is up
        assert line, "the Ray head process ended before its cluster came up"
        address = json.loads(line)["address"]
        kill_dir = tmp_path_factory.mktemp("kill")
        path = [str(HERE), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {"PYTHONPATH": os.pathsep.join(path), "FEEDPROP_TEST_KILL_DIR": str(kill_dir)}
        # The way a user joins a cluster: RayExecutor(address=...). Later executors reuse the connection.
        joined = RayExecutor(address=address, llm=MOCK, runtime_env={"env_vars": env})
        joined.connect()
        assert ray.is_initialized() and ray.cluster_resources().get("CPU") == 2.0
        try:
            yield SimpleNamespace(address=address, kill_dir=kill_dir, executor=joined)
        finally:
            joined.close()
            assert not ray.is_initialized(), "the executor that connected disconnects on close"
    finally:
        if head.stdin is not None:
            head.stdin.close()  # the head shuts its cluster down
        try:
            head.wait(timeout=120)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        patch.undo()


def train_pipeline(
    executor: Any, budget: Budget | None = None, workflow: type[Pipeline] = Pipeline
) -> tuple[Any, Pipeline, list[Any]]:
    model = workflow()
    opt = OptoPrime(model.parameters(), llm=optimizer_llm())
    result = train(
        model,
        TRAIN,
        exact,
        opt,
        val_set=VAL,
        batch_size=2,
        budget=budget,
        progress=False,
        plot=False,
        executor=executor,
    )
    return result, model, [call.messages for call in opt.llm.calls]  # type: ignore[attr-defined]


@needs_ray
def test_training_on_ray_matches_local_threads(cluster: SimpleNamespace) -> None:
    local, local_model, local_prompts = train_pipeline("local")
    with RayExecutor(llm=MOCK) as executor:
        remote, remote_model, remote_prompts = train_pipeline(executor)
    assert local.steps == 2 and local_prompts, "two steps, each with an optimizer call"
    assert remote_prompts == local_prompts, "the optimizer was shown exactly the same problems"
    assert remote_model.state_dict() == local_model.state_dict()
    assert without_seconds(remote.history) == without_seconds(local.history)
    assert without_seconds(remote.usage) == without_seconds(local.usage)
    assert remote.usage["evaluation"]["calls"] == local.usage["evaluation"]["calls"] > 0
    assert "unknown" not in remote.usage["by_model"], "the workers' calls keep their model's name"


@needs_ray
def test_an_async_workflow_trains_on_ray_as_in_threads(cluster: SimpleNamespace) -> None:
    local, local_model, local_prompts = train_pipeline("local", workflow=AsyncPipeline)
    with RayExecutor(llm=MOCK) as executor:
        remote, remote_model, remote_prompts = train_pipeline(executor, workflow=AsyncPipeline)
    assert local.steps == 2 and remote_prompts == local_prompts
    assert remote_model.state_dict() == local_model.state_dict()
    assert without_seconds(remote.history) == without_seconds(local.history)


@needs_ray
def test_a_call_budget_holds_exactly_across_workers(cluster: SimpleNamespace) -> None:
    items = [(f"q{i}", f"q{i}") for i in range(4)]  # three calls each: 12 wanted, 5 allowed
    with track_usage(max_calls=5) as local, pytest.raises(BudgetExhausted) as local_error:
        evaluate(Calls(3), items, exact)
    with track_usage(max_calls=5) as remote, pytest.raises(BudgetExhausted) as remote_error:
        evaluate(Calls(3), items, exact, executor=RayExecutor(llm=MOCK))
    assert remote.calls == local.calls == 5
    assert str(remote_error.value) == str(local_error.value)
    # The same budget in a training run: it ends at the same step, with the same state and usage.
    local_run, local_model, _ = train_pipeline("local", Budget(calls=10))
    with RayExecutor(llm=MOCK) as executor:
        remote_run, remote_model, _ = train_pipeline(executor, Budget(calls=10))
    assert local_run.usage["total"]["calls"] == remote_run.usage["total"]["calls"] == 10
    assert remote_run.stop_reason == local_run.stop_reason and remote_run.stop_reason.startswith("budget")
    assert remote_model.state_dict() == local_model.state_dict()
    assert without_seconds(remote_run.usage) == without_seconds(local_run.usage)


@needs_ray
def test_screening_on_ray_replays_the_parents_calls_on_the_workers(cluster: SimpleNamespace) -> None:
    model = Pipeline()
    items = as_items([(f"q{i}", f"q{i}!") for i in range(4)], "items")
    with RayExecutor(llm=MOCK) as executor:
        with track_usage() as parent_usage:
            parent = executor.run_items(model, items, exact)
        model.suffix.set("!")
        with track_usage() as usage:
            result = screen(model, items, exact, parent, executor=executor)
    assert [o.score for o in parent] == [0.0] * 4 and parent_usage.calls == 4
    assert result.scores == [1.0] * 4
    assert (result.calls, result.saved) == (0, 4) == (usage.calls, usage.replayed)


@needs_ray
def test_a_guide_bug_on_a_worker_is_raised_here(cluster: SimpleNamespace) -> None:
    with pytest.raises(KeyError, match="no score for") as error:
        evaluate(Pipeline(), TRAIN[:2], broken_guide, executor=RayExecutor(llm=MOCK))
    assert "raised on a Ray worker" in error.value.__notes__[0]


@needs_ray
def test_a_worker_killed_mid_task_is_retried_and_the_result_is_the_same(
    cluster: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [("a", "a?"), ("victim", "victim?"), ("b", "b!"), ("c", "c?")]
    monkeypatch.setenv("FEEDPROP_TEST_KILL_DIR", str(cluster.kill_dir))
    (cluster.kill_dir / "killed").write_text("the local reference run passes the victim at once")
    expected = evaluate(KillOnce(), items, exact)
    for name in ("killed", "pid"):
        (cluster.kill_dir / name).unlink(missing_ok=True)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = evaluate(KillOnce(), items, exact, executor=RayExecutor(llm=MOCK, max_retries=2))
        except BaseException as exc:
            result["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    pid_file = cluster.kill_dir / "pid"
    deadline = time.monotonic() + 120
    while not pid_file.exists():
        assert time.monotonic() < deadline, "the victim item never started"
        time.sleep(0.1)
    pid = int(pid_file.read_text())
    (cluster.kill_dir / "killed").write_text("yes")
    os.kill(pid, signal.SIGKILL)
    worker.join(180)
    assert not worker.is_alive(), "the evaluation did not finish after its worker was killed"
    assert "error" not in result, result.get("error")
    got = result["value"]
    retried = int((cluster.kill_dir / "retried").read_text())
    assert retried != pid, "the victim item ran again in another worker process"
    assert (got.scores, got.outputs, got.errors) == (expected.scores, expected.outputs, expected.errors)
    assert without_seconds(got.usage) == without_seconds(expected.usage)


@needs_ray
def test_workers_load_balance_over_endpoints_and_rest_one_that_is_down(cluster: SimpleNamespace) -> None:
    live = [EchoEndpoint(delay=0.05), EchoEndpoint(delay=0.05)]
    dead = f"http://127.0.0.1:{free_port()}/v1"
    urls = [dead, *(e.base_url for e in live)]
    spec = {"kind": "openai", "base_url": urls, "model": "echo", "cache": False, "cooldown": 600}
    items = [(f"q{i}", f"q{i}!") for i in range(8)]
    try:
        got = evaluate(Pipeline(), items, exact, executor=RayExecutor(llm=spec))
    finally:
        for e in live:
            e.close()
    expected = evaluate(Pipeline(), items, exact)
    assert (got.scores, got.outputs) == (expected.scores, expected.outputs)
    assert got.usage["calls"] == sum(e.calls for e in live) == len(items) and got.usage["errors"] == 0
    assert all(e.calls >= 2 for e in live), f"calls were not spread: {[e.calls for e in live]}"
