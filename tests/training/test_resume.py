"""Checkpoints: kill -9 and resume, finished runs, damaged files, mismatched runs, run artifacts."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import resume_worker
from train_toys import Suffix, data, exact, hashed_suggestions, scripted_llm, suggest

from feedprop.errors import CheckpointError
from feedprop.llm import MockLLM
from feedprop.optim import OptoPrime
from feedprop.training import train
from feedprop.training.checkpoint import RunDirectory
from feedprop.training.events import read_events

HERE = Path(__file__).resolve().parent


def _checkpoint_step(directory: Path) -> int:
    try:
        return int(json.loads((directory / "checkpoint.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return -1


def _start_worker(
    directory: Path, out: Path, script: str = "resume_worker.py", *options: str
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FEEDPROP_CACHE": "0"}
    return subprocess.Popen(
        [sys.executable, str(HERE / script), str(directory), str(out), *options],
        cwd=HERE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _kill_after(proc: subprocess.Popen[bytes], directory: Path, k: int, delay: float) -> int:
    """SIGKILL ``proc`` ``delay`` seconds after its checkpoint reaches step ``k``; returns the step seen."""
    deadline = time.monotonic() + 60
    while _checkpoint_step(directory) < k:
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"the worker ended before step {k}: {err.decode()[-2000:]}")
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return _checkpoint_step(directory)


@pytest.mark.slow
@pytest.mark.parametrize("forward", ["def", "async def"])
def test_kill_9_then_resume_ends_exactly_like_an_uninterrupted_run(tmp_path: Path, forward: str) -> None:
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    first_k, second_k = rng.randint(1, 6), rng.randint(8, 12)
    where = f"({forward} forward, random seed {seed}: kills after checkpoints {first_k} and {second_k})"
    run_dir, out = tmp_path / "killed", tmp_path / "killed.json"
    options = ["async"] if forward == "async def" else []

    proc = _start_worker(run_dir, out, "resume_worker.py", *options)
    seen = _kill_after(proc, run_dir, first_k, rng.uniform(0.0, 0.05))
    assert proc.returncode == -signal.SIGKILL, where
    assert not out.exists(), where
    assert seen >= first_k
    proc = _start_worker(run_dir, out, "resume_worker.py", *options)
    _kill_after(proc, run_dir, max(second_k, seen + 1), rng.uniform(0.0, 0.05))
    assert proc.returncode == -signal.SIGKILL, where
    proc = _start_worker(run_dir, out, "resume_worker.py", *options)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]
    resumed = json.loads(out.read_text())

    result, opt_state = resume_worker.run(tmp_path / "straight", asynchronous=bool(options))
    straight = json.loads(json.dumps(resume_worker.summary(result, opt_state), sort_keys=True))
    assert len(straight["history"]) == 16
    for key in ("best_state", "val_after", "optimizer", "usage", "stop_reason"):
        assert resumed[key] == straight[key], f"{key} differs {where}"
    assert list(resumed["usage"]["by_model"]) == ["optimizer-mock", "workflow-mock"], where
    assert resumed["history"] == straight["history"], where
    events = [e["event"] for e in read_events(run_dir / "events.jsonl")]
    assert events.count("resume") == 2 and events[-1] == "finish", where


def _small_run(directory: Path, llm_replies: list[str], **kwargs: Any) -> tuple[Any, Suffix, Any]:
    model = Suffix("?")
    llm = scripted_llm(llm_replies)
    opt = OptoPrime(model.parameters(), llm=llm)
    kwargs.setdefault("val_set", data(2))
    result = train(model, data(4), exact, opt, batch_size=2, checkpoint=directory, progress=False, **kwargs)
    return result, model, llm


def test_resuming_a_finished_run_is_a_no_op(tmp_path: Path) -> None:
    first, _, _ = _small_run(tmp_path, [suggest(suffix="!"), suggest(suffix=".")])
    again, model, llm = _small_run(tmp_path, [suggest(suffix="?!")], resume=True)
    assert llm.calls == [], "no model call: the run had finished"
    assert model.suffix.data == "!" and again.best_state == first.best_state
    assert again.history == first.history and again.usage == first.usage
    assert again.elapsed_seconds == first.elapsed_seconds


class Interrupted(Exception):
    pass


def _two_model_run(directory: Path, stop_at: int | None = None) -> Any:
    """resume_worker's run for 4 steps, in this process; the guide raises on its ``stop_at``-th call."""
    workflow = MockLLM(lambda messages, **params: messages[-1]["content"], model="workflow-mock")
    model = Suffix("z", llm=workflow)
    opt = OptoPrime(model.parameters(), llm=hashed_suggestions(resume_worker.ENDINGS, model="optimizer-mock"))
    guided = itertools.count(1)

    def guide(output: Any, target: Any) -> Any:
        if next(guided) == stop_at:
            raise Interrupted
        return exact(output, target)

    return train(
        model,
        resume_worker.TRAIN,
        guide,
        opt,
        val_set=resume_worker.VAL,
        batch_size=2,
        max_steps=4,
        seed=7,
        checkpoint=directory,
        resume=True,
        progress=False,
        plot=False,
    )


def test_a_resumed_run_keeps_its_usage_by_model_exactly(tmp_path: Path) -> None:
    with pytest.raises(Interrupted):
        _two_model_run(tmp_path / "stopped", stop_at=len(resume_worker.VAL) * 3 + 3)  # inside step 2 or 3
    saved = json.loads((tmp_path / "stopped" / "checkpoint.json").read_text())
    assert saved["step"] >= 1 and set(saved["usage"]["by_model"]) == {"optimizer-mock", "workflow-mock"}
    resumed = _two_model_run(tmp_path / "stopped")
    straight = _two_model_run(tmp_path / "straight")
    assert resume_worker.without_seconds(resumed.usage) == resume_worker.without_seconds(straight.usage)
    by_model = straight.usage["by_model"]
    assert by_model["optimizer-mock"]["calls"] == straight.usage["optimizer"]["calls"] == 4
    assert by_model["workflow-mock"]["calls"] == straight.usage["evaluation"]["calls"] > 0


def test_a_checkpoint_is_written_after_every_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[int] = []
    original = RunDirectory.save

    def spy(self: RunDirectory, state: dict[str, Any]) -> None:
        steps.append(state["step"])
        original(self, state)

    monkeypatch.setattr(RunDirectory, "save", spy)
    _small_run(tmp_path, [suggest(suffix="!"), suggest(suffix=".")])
    assert steps == [0, 1, 2, 2], "after the baseline, after each step, and once more when finished"


def test_a_corrupt_checkpoint_is_a_clear_error_and_the_previous_one_survives(tmp_path: Path) -> None:
    _small_run(tmp_path, [suggest(suffix="!"), suggest(suffix=".")])
    prev = (tmp_path / "checkpoint.prev.json").read_bytes()
    (tmp_path / "checkpoint.json").write_bytes(b'{"format": "feedprop.checkpoint", "step": 2, "hist')
    with pytest.raises(CheckpointError, match=r"corrupt.*checkpoint\.prev\.json \(step 2\) is intact"):
        _small_run(tmp_path, [suggest(suffix="!")], resume=True)
    assert (tmp_path / "checkpoint.prev.json").read_bytes() == prev
    # Following the message: the previous checkpoint restores the run.
    (tmp_path / "checkpoint.json").write_bytes(prev)
    result, model, _ = _small_run(tmp_path, [suggest(suffix="!")], resume=True)
    assert model.suffix.data == "!" and result.steps == 2


def test_a_checkpoint_from_another_run_is_refused(tmp_path: Path) -> None:
    _small_run(tmp_path, [suggest(suffix="!"), suggest(suffix=".")])
    with pytest.raises(CheckpointError, match="different run configuration"):
        _small_run(tmp_path, [suggest(suffix="!")], resume=True, val_set=data(3))
    model = Suffix("?")
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="!")]), n_candidates=2)
    with pytest.raises(CheckpointError, match="optimizer_groups"):
        train(model, data(4), exact, opt, val_set=data(2), batch_size=2, checkpoint=tmp_path, resume=True)


def test_an_existing_run_is_not_overwritten_by_accident(tmp_path: Path) -> None:
    _small_run(tmp_path, [suggest(suffix="!"), suggest(suffix=".")])
    before = (tmp_path / "checkpoint.json").read_bytes()
    with pytest.raises(CheckpointError, match="resume=True"):
        _small_run(tmp_path, [suggest(suffix="!")])
    assert (tmp_path / "checkpoint.json").read_bytes() == before


def test_run_directory_holds_report_plot_log_and_best_parameters(tmp_path: Path) -> None:
    result, model, _ = _small_run(tmp_path, [suggest(suffix="!"), suggest(suffix=".")], test_set=data(3, end="!"))
    assert model.suffix.data == "!"
    assert result.parameters_path is not None and json.loads(result.parameters_path.read_text()) == {"suffix": "!"}
    assert result.report_path is not None
    report = result.report_path.read_text()
    assert "| validation | 0.0000 | 1.0000 |" in report and "| test | 0.0000 | 1.0000 |" in report
    assert "-?\n" in report and "+!\n" in report
    assert result.plot_path is not None and result.plot_path.read_bytes()[:4] == b"\x89PNG"
    assert result.log_path is not None
    kinds = [e["event"] for e in read_events(result.log_path)]
    # "items": the test pass's per-item outcomes, before and after training
    assert kinds == ["start", "items", "evaluate", "step", "step", "items", "finish"]
    checkpoint = json.loads((tmp_path / "checkpoint.json").read_text())
    assert checkpoint["finished"] and checkpoint["step"] == 2 and len(checkpoint["rng"][1]) == 625
    assert checkpoint["parameters"] == {"suffix": "!"} and checkpoint["optimizer"] == result_optimizer_state(tmp_path)


def result_optimizer_state(directory: Path) -> Any:
    return json.loads((directory / "checkpoint.json").read_text())["search"]["beam"][0]["opt"]


def _limited_run(directory: Path, **limits: Any) -> tuple[Any, dict[str, Any]]:
    """resume_worker's run (resuming whatever ``directory`` holds) with a test set and other limits."""
    return resume_worker.run(directory, latency=0.0, test_set=resume_worker.VAL[:6], **limits)


@pytest.mark.parametrize(
    ("short", "long", "stopped"),
    [
        ({"max_steps": 2}, {"max_steps": 5}, "max_steps (2) reached"),
        ({"epochs": 1}, {"epochs": 2}, "completed 1 epoch(s)"),
    ],
)
def test_a_run_its_limits_stopped_goes_on_when_resumed_with_larger_ones(
    tmp_path: Path, short: dict[str, Any], long: dict[str, Any], stopped: str
) -> None:
    first, _ = _limited_run(tmp_path / "extended", **short)
    assert first.stop_reason == stopped
    extended, extended_opt = _limited_run(tmp_path / "extended", **long)
    straight, straight_opt = _limited_run(tmp_path / "straight", **long)
    assert len(extended.history) > len(first.history)
    assert extended.history[: len(first.history)] == first.history, "the first steps are kept, not redone"
    ended, expected = resume_worker.summary(extended, extended_opt), resume_worker.summary(straight, straight_opt)
    assert {**ended, "usage": None} == {**expected, "usage": None}
    for phase in ("optimizer", "evaluation"):
        assert ended["usage"][phase] == expected["usage"][phase], phase
    # The test set (never budgeted) was scored once more, at the end of the first, shorter run,
    # unless the extension kept the program that run had already scored.
    extra = 0 if extended.best_state == first.best_state else 6
    assert extended.usage["test"]["calls"] == straight.usage["test"]["calls"] + extra
    assert extended.test_after == straight.test_after
    (resume,) = [e for e in read_events(tmp_path / "extended" / "events.jsonl") if e["event"] == "resume"]
    ((limit, change),) = resume["extended"].items()
    assert {limit: change} == {limit: {"before": short[limit], "after": long[limit]}}
    saved = json.loads((tmp_path / "extended" / "checkpoint.json").read_text())
    assert saved["finished"] is True and saved["fingerprint"][limit] == long[limit]
    # Resumed again with the limits it now has, the run is finished: it returns its result.
    again, _ = _limited_run(tmp_path / "extended", **long)
    assert again.history == extended.history and again.elapsed_seconds == extended.elapsed_seconds


def test_an_extension_that_finds_nothing_better_keeps_its_test_score_without_scoring_again(tmp_path: Path) -> None:
    def run(replies: list[str], max_steps: int) -> tuple[Any, Suffix, MockLLM]:
        workflow = MockLLM(lambda messages, **params: messages[-1]["content"], model="workflow-mock")
        model = Suffix("?", llm=workflow)
        llm = scripted_llm(replies)
        opt = OptoPrime(model.parameters(), llm=llm)
        result = train(
            model,
            data(4),
            exact,
            opt,
            val_set=data(2),
            test_set=data(3),
            batch_size=2,
            max_steps=max_steps,
            checkpoint=tmp_path,
            resume=True,
            progress=False,
            plot=False,
        )
        return result, model, llm

    first, model, _ = run([suggest(suffix="!")], max_steps=1)
    assert model.suffix.data == "!" and first.test_after == 1.0
    assert first.usage["test"]["calls"] == 6, "the start and the learned program, 3 items each"
    extended, model, llm = run([suggest(suffix="?")], max_steps=2)
    assert llm.calls, "the optimizer was asked again: the run went on"
    assert len(extended.history) == 2 and extended.history[1]["accepted"] is False
    assert model.suffix.data == "!" and extended.test_after == 1.0
    assert extended.usage["test"]["calls"] == 6, "the best program did not change: its test score stands"
