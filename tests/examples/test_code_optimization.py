"""examples/code_optimization.py end to end with its scripted model (real unit tests, real subprocesses)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from feedprop.tasks import load_mbpp
from feedprop.train import UnitTest


def test_prompt_mode_learns_an_instruction_that_passes_held_out_tests(
    load_example: Callable[[str], ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = load_example("code_optimization")
    argv = ["--mock", "--n-train", "2", "--n-val", "2", "--n-test", "3", "--steps", "1", "--run-dir", str(tmp_path)]
    assert code.main(argv) == 1.0
    out = capsys.readouterr().out
    assert "held-out pass@1: 0% -> 100%" in out
    assert code.SCRIPTED_INSTRUCTION in out


def test_repair_mode_fixes_each_stub_from_its_failing_test(
    load_example: Callable[[str], ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    code = load_example("code_optimization")
    assert code.main(["--mock", "--mode", "repair", "--n-test", "2", "--steps", "1"]) == 1.0
    out = capsys.readouterr().out
    assert out.count("step 0: Failed test") == 2  # the stub parses and returns None
    assert "passing after at most 1 repair steps: 2/2" in out


def test_reference_solutions_of_the_usable_problems_pass(load_example: Callable[[str], ModuleType]) -> None:
    code = load_example("code_optimization")
    for example in code.usable(load_mbpp().train)[:3]:
        assert UnitTest()(code.reference_code(example), example.target).score == 1.0
