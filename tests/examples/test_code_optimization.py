"""examples/code_optimization.py end to end with its scripted model (real unit tests, real subprocesses)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from feedprop.tasks import load_mbpp
from feedprop.training import UnitTest


def _steps(run_dir: Path) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return [e for e in events if e["event"] == "step"]


def test_prompt_mode_learns_an_instruction_that_passes_held_out_tests(
    load_example: Callable[[str], ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = load_example("code_optimization")
    argv = ["--mock", "--n-train", "4", "--n-val", "2", "--n-test", "3", "--steps", "2", "--run-dir", str(tmp_path)]
    assert code.main(argv) == 1.0
    out = capsys.readouterr().out
    assert "held-out pass@1: 0% -> 100%" in out and "optimizer recommended, pareto search" in out
    assert code.SCRIPTED_INSTRUCTION in out
    first, second = _steps(tmp_path)
    # step 1: no run passed, so no demonstrations (none are labelled); the diagnosed rewrite wins
    assert [c["updates"] for c in first["candidates"]] == [{"instruction": code.SCRIPTED_INSTRUCTION}]
    assert first["accepted"]
    # step 2: the functions that passed their tests become candidate demonstrations
    train_problems = {str(e.input): e for e in code.usable(load_mbpp().train)[:4]}
    demos = [d for c in second["candidates"] for d in c["updates"]["demos"]]
    assert demos
    for demo in demos:
        example = train_problems[demo["input"].removeprefix("Complete this Python function:\n")]
        assert UnitTest()(demo["output"], example.target).score == 1.0
    # the scripted writer ignores demonstrations: they tie with the parent and are not validated
    assert not second["accepted"] and not any(c["admitted"] for c in second["candidates"])


def test_prompt_mode_keeps_the_earlier_optimizer_reachable(
    load_example: Callable[[str], ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = load_example("code_optimization")
    argv = ["--mock", "--optimizer", "optoprime", "--n-train", "2", "--n-val", "2", "--n-test", "3", "--steps", "1"]
    assert code.main([*argv, "--run-dir", str(tmp_path)]) == 1.0
    out = capsys.readouterr().out
    assert "held-out pass@1: 0% -> 100%" in out and "optimizer optoprime, greedy search" in out
    assert json.loads((tmp_path / "best.json").read_text()) == {"demos": [], "instruction": code.SCRIPTED_INSTRUCTION}


@pytest.mark.parametrize("optimizer", ["recommended", "optoprime"])
def test_repair_mode_fixes_each_stub_from_its_failing_test(
    load_example: Callable[[str], ModuleType], capsys: pytest.CaptureFixture[str], optimizer: str
) -> None:
    code = load_example("code_optimization")
    assert code.main(["--mock", "--mode", "repair", "--optimizer", optimizer, "--n-test", "2", "--steps", "1"]) == 1.0
    out = capsys.readouterr().out
    assert out.count("step 0: Failed test") == 2  # the stub parses and returns None
    assert "passing after at most 1 repair steps: 2/2" in out
    if optimizer == "recommended":  # the scripted model's rewrites agree: one candidate, screened on the tests
        assert out.count("1 rewrites run against the tests, 1 pass") == 2


def test_reference_solutions_of_the_usable_problems_pass(load_example: Callable[[str], ModuleType]) -> None:
    code = load_example("code_optimization")
    for example in code.usable(load_mbpp().train)[:3]:
        assert UnitTest()(code.reference_code(example), example.target).score == 1.0
