"""The README's example runs as written (with a scripted default model instead of the embedded one)."""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import pytest

import feedprop as fp

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_readme_has_the_training_example() -> None:
    assert any("fp.train(" in block and "class Solver" in block for block in python_blocks())


def test_the_training_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    def reply(messages: list[dict[str, str]], **params: Any) -> str:
        calls.append(messages)
        return "There are 3 of them. Answer: 3"

    monkeypatch.chdir(tmp_path)
    fp.llm.set_default(fp.llm.MockLLM(reply))
    try:
        (example,) = [block for block in python_blocks() if "fp.train(" in block]
        script = tmp_path / "readme_example.py"
        script.write_text(example, encoding="utf-8")  # a file, so that trainable functions have a source
        namespace = runpy.run_path(str(script), run_name="readme_example")
    finally:
        fp.llm.set_default(None)
    result = namespace["result"]
    assert result.test_before is not None and result.test_after is not None
    assert (tmp_path / "solver.json").is_file()
    assert (tmp_path / "runs" / "solver" / "report.md").is_file()
    assert calls, "the example made no model call"


def test_the_default_model_example_names_a_real_function() -> None:
    text = README.read_text(encoding="utf-8")
    assert "fp.llm.set_default(" in text
    assert callable(fp.llm.set_default)
