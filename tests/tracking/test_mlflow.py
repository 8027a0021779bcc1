"""MLflowTracker: training into SQLite stores, read back with MLflow's own client.

Creating a SQLite store runs MLflow's database migrations (seconds), so most tests share one
store (``store`` fixture); the default store in the run directory gets a test of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feedprop.errors import ConfigurationError
from feedprop.joint import alternate
from feedprop.llm import MockLLM
from feedprop.optim import OptoPrime
from feedprop.tracking import MLflowTracker, store_uri, usage_metrics
from feedprop.tracking import mlflow as tracking_mlflow
from feedprop.training import train

from .toys import DATA, VAL, FailingGuide, Suffix, exact, optimizer, scripted

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow() -> Any:
    return pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def store(mlflow: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory whose ``mlflow.db`` is a store already created (shared by this module's tests)."""
    directory = tmp_path_factory.mktemp("store")
    mlflow.MlflowClient(store_uri(directory)).search_experiments()
    return directory


@pytest.fixture(autouse=True)
def no_tracking_uri_from_outside(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield


def client(mlflow: Any, uri: str) -> Any:
    return mlflow.MlflowClient(uri)


def artifacts(client: Any, run_id: str, path: str | None = None) -> list[str]:
    out: list[str] = []
    for entry in client.list_artifacts(run_id, path):
        out.extend(artifacts(client, run_id, entry.path) if entry.is_dir else [entry.path])
    return sorted(out)


def text(client: Any, run_id: str, path: str) -> str:
    return Path(client.download_artifacts(run_id, path)).read_text(encoding="utf-8")


def history(client: Any, run_id: str, name: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))


def test_a_run_logs_options_step_metrics_parameters_report_and_status(mlflow: Any, store: Path, tmp_path: Path) -> None:
    model = Suffix()
    tracker = MLflowTracker(tracking_uri=store_uri(store), experiment="unit", tags={"team": "qa"})
    result = train(
        model, DATA, exact, optimizer(model), val_set=VAL, batch_size=2, checkpoint=tmp_path / "run",
        progress=False, plot=False, tracker=tracker,
    )  # fmt: skip
    c = client(mlflow, store_uri(store))
    run = c.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert c.get_experiment(run.info.experiment_id).name == "unit"
    assert run.data.params["batch_size"] == "2" and run.data.params["budget.scope"] == "all"
    assert run.data.params["optimizer"] == "OptoPrime"
    assert run.data.tags["team"] == "qa" and run.data.tags["feedprop.stop_reason"] == result.stop_reason
    assert run.data.tags["feedprop.run_dir"] == str((tmp_path / "run").absolute())

    steps = result.history
    assert history(c, tracker.run_id, "train_score") == [(h["step"], h["train_score"]) for h in steps]
    assert history(c, tracker.run_id, "val_score") == [(0, 0.0)] + [(h["step"], h["val_score"]) for h in steps]
    assert history(c, tracker.run_id, "accepted") == [(h["step"], float(h["accepted"])) for h in steps]
    tokens = [(h["step"], float(h["usage"]["prompt_tokens"] + h["usage"]["completion_tokens"])) for h in steps]
    assert history(c, tracker.run_id, "tokens") == tokens and all(t > 0 for _, t in tokens)
    assert history(c, tracker.run_id, "seconds") == [(h["step"], h["seconds"]) for h in steps]
    assert run.data.metrics["val_before"] == 0.0 and run.data.metrics["val_after"] == 1.0
    assert run.data.metrics["total_tokens"] == result.usage["total"]["tokens"]
    spent = result.usage["by_model"]["mock"]
    assert run.data.metrics["by_model/mock/calls"] == spent["calls"] == result.usage["total"]["calls"] > 0
    assert run.data.metrics["by_model/mock/tokens"] == spent["tokens"] == result.usage["total"]["tokens"]

    assert artifacts(c, tracker.run_id) == [
        "initial_parameters/params.json",
        "initial_parameters/suffix.txt",
        "parameters/params.json",
        "parameters/suffix.txt",
        "report.md",
    ]
    assert json.loads(text(c, tracker.run_id, "parameters/params.json")) == result.best_state == {"suffix": "!"}
    assert text(c, tracker.run_id, "parameters/suffix.txt") == "!"
    assert text(c, tracker.run_id, "initial_parameters/suffix.txt") == "?"
    assert text(c, tracker.run_id, "report.md") == result.report()
    saved = json.loads((tmp_path / "run" / "mlflow.json").read_text())
    assert saved["run_id"] == tracker.run_id and saved["tracking_uri"] == store_uri(store)


def test_the_default_store_is_in_the_run_directory_and_the_terminal_stays_quiet(
    mlflow: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.html").write_text("<html>the run page</html>", encoding="utf-8")  # as `feedprop view` leaves it
    model = Suffix()
    capfd.readouterr()
    train(model, DATA[:2], exact, optimizer(model), val_set=VAL, checkpoint=run_dir, progress=False, tracker="mlflow")
    assert capfd.readouterr() == ("", "")
    assert (run_dir / "mlflow.db").is_file()
    saved = json.loads((run_dir / "mlflow.json").read_text())
    assert saved["tracking_uri"] == store_uri(run_dir)
    c = client(mlflow, saved["tracking_uri"])
    assert c.get_run(saved["run_id"]).info.status == "FINISHED"
    assert {"run.html", "curve.png", "report.md"} <= set(artifacts(c, saved["run_id"]))
    assert text(c, saved["run_id"], "run.html") == "<html>the run page</html>"
    stored = run_dir / "mlflow-artifacts" / saved["run_id"] / "artifacts" / "parameters" / "params.json"
    assert json.loads(stored.read_text()) == {"suffix": "!"}  # artifacts beside the store, not in ./mlruns


def test_without_a_run_directory_the_store_is_in_feedprop_home(
    mlflow: Any, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDPROP_HOME", str(store))
    tracker = MLflowTracker()
    model = Suffix()
    train(model, DATA[:2], exact, optimizer(model), progress=False, tracker=tracker)
    assert tracker.store == store_uri(store)
    assert client(mlflow, store_uri(store)).get_run(tracker.run_id).info.status == "FINISHED"


def test_mlflow_tracking_uri_from_the_environment_wins_over_the_run_directory(
    mlflow: Any, store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri(store))
    tracker = MLflowTracker()
    model = Suffix()
    train(model, DATA[:2], exact, optimizer(model), checkpoint=tmp_path, progress=False, tracker=tracker)
    assert tracker.store == store_uri(store) and not (tmp_path / "mlflow.db").exists()


def test_interrupted_and_failed_sessions_then_resume_continue_one_mlflow_run(
    mlflow: Any, store: Path, tmp_path: Path
) -> None:
    uri = store_uri(store)
    c = client(mlflow, uri)
    options: dict[str, Any] = {"val_set": VAL, "batch_size": 2, "checkpoint": tmp_path, "progress": False}
    options.update(max_workers=1, plot=False)

    first = MLflowTracker(uri)
    model = Suffix()
    # Calls 1-2 score the validation set, 3-6 are step 1: the interruption comes in step 2.
    with pytest.raises(KeyboardInterrupt):
        train(model, DATA, FailingGuide(7, KeyboardInterrupt()), optimizer(model), tracker=first, **options)
    run_id = first.run_id
    assert c.get_run(run_id).info.status == "KILLED"
    assert [s for s, _ in history(c, run_id, "train_score")] == [1]

    second = MLflowTracker(uri)
    model = Suffix()
    with pytest.raises(RuntimeError, match="guide crashed"):
        train(model, DATA, FailingGuide(5, RuntimeError("guide crashed")), optimizer(model), resume=True,
              tracker=second, **options)  # fmt: skip
    assert second.run_id == run_id
    run = c.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["feedprop.error"] == "RuntimeError: guide crashed"
    assert run.data.tags["feedprop.resumed"] == "true"
    assert [s for s, _ in history(c, run_id, "train_score")] == [1, 2]

    third = MLflowTracker(uri)
    model = Suffix()
    result = train(model, DATA, exact, optimizer(model), resume=True, tracker=third, **options)
    assert third.run_id == run_id and c.get_run(run_id).info.status == "FINISHED"
    assert [s for s, _ in history(c, run_id, "train_score")] == [1, 2, 3] == [h["step"] for h in result.history]
    assert len(c.search_runs([c.get_run(run_id).info.experiment_id], f"tags.`feedprop.run_dir` = '{tmp_path}'")) == 1


def test_a_joint_run_logs_each_phase_and_the_final_parameters(mlflow: Any, store: Path, tmp_path: Path) -> None:
    tracker = MLflowTracker(store_uri(store), experiment="joint")
    result = alternate(
        Suffix(), DATA, exact, "p -> p", val_set=VAL, test_set=DATA[2:4], optimizer=scripted,
        prompt={"max_steps": 1, "batch_size": 2}, checkpoint=tmp_path, progress=False, tracker=tracker,
    )  # fmt: skip
    c = client(mlflow, store_uri(store))
    run = c.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.params["strategy"] == '["p", "p"]'
    assert history(c, tracker.run_id, "val_score") == [(p.index, p.val) for p in result.phases]
    assert history(c, tracker.run_id, "test_score") == [(p.index, p.test) for p in result.phases]
    assert history(c, tracker.run_id, "kept") == [(p.index, float(p.kept)) for p in result.phases]
    assert run.data.metrics["test_before"] == result.test_before and run.data.metrics["test_after"] == 1.0
    assert json.loads(text(c, tracker.run_id, "parameters/params.json")) == result.best_state == {"suffix": "!"}
    assert text(c, tracker.run_id, "report.md") == result.table()
    assert (
        run.data.metrics["by_model/mock/calls"]
        == result.usage["by_model"]["mock"]["calls"]
        == result.usage["total"]["calls"]
    )


def test_usage_by_model_becomes_metrics_with_names_mlflow_accepts() -> None:
    spent = {"calls": 2, "cache_hits": 1, "prompt_tokens": 9, "completion_tokens": 3, "tokens": 12, "seconds": 0.5}
    usage = {
        "total": {"calls": 6, "tokens": 36},
        "by_model": {"openai/gpt-4o": spent, "openai_gpt-4o": spent, "..": spent, "qwen2.5:1.5b q4": spent},
    }
    metrics = usage_metrics(usage)
    assert metrics["total_calls"] == 6 and metrics["by_model/openai_gpt-4o/tokens"] == 12
    models = sorted({name.split("/")[1] for name in metrics if name.startswith("by_model/")})
    assert models == ["_", "openai_gpt-4o", "openai_gpt-4o_2", "qwen2.5_1.5b_q4"]
    assert {name.split("/")[2] for name in metrics if name.startswith("by_model/")} == set(spent)
    assert usage_metrics({"total": {"calls": 1}}) == {"total_calls": 1.0}, "an older run: totals only"


def test_a_store_that_cannot_be_used_fails_before_any_training(mlflow: Any, tmp_path: Path) -> None:
    model = Suffix()
    llm = MockLLM(json.dumps({"reasoning": "", "suggestion": {"suffix": "!"}}))
    tracker = MLflowTracker("nosuchscheme://x")
    with pytest.raises(ConfigurationError, match="cannot use the store 'nosuchscheme://x'"):
        train(model, DATA, exact, OptoPrime(model.parameters(), llm=llm), checkpoint=tmp_path, progress=False,
              tracker=tracker)  # fmt: skip
    assert llm.calls == [] and not (tmp_path / "checkpoint.json").exists()


def test_without_mlflow_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking_mlflow, "find_spec", lambda name: None)
    model = Suffix()
    with pytest.raises(ConfigurationError, match=r"pip install 'feedprop\[tracking\]'"):
        train(model, DATA, exact, optimizer(model), progress=False, tracker="mlflow")
    with pytest.raises(ConfigurationError, match=r"pip install 'feedprop\[tracking\]'"):
        MLflowTracker()


def test_constructor_checks() -> None:
    with pytest.raises(TypeError, match="tracking_uri"):
        MLflowTracker(tracking_uri=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="experiment"):
        MLflowTracker(experiment="")
    with pytest.raises(TypeError, match="tags"):
        MLflowTracker(tags={"a": 1})  # type: ignore[dict-item]
