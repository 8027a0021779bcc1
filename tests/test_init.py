"""The public surface: every exported name exists, ``__all__`` is sorted, importing has no side effects."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PUBLIC_MODULES = [
    "feedprop",
    "feedprop.llm",
    "feedprop.optim",
    "feedprop.training",
    "feedprop.tasks",
    "feedprop.tracking",
]


def isort_key(name: str) -> tuple[int, str]:
    """isort's order for ``__all__``: CONSTANTS, then Classes, then functions and modules."""
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_is_sorted_and_complete(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = list(module.__all__)
    assert exported == sorted(exported, key=isort_key)
    assert len(exported) == len(set(exported))
    missing = [name for name in exported if not hasattr(module, name)]
    assert not missing


def test_the_names_design_md_uses_are_exported() -> None:
    import feedprop as fp

    for name in ("Module", "Parameter", "bundle", "ExecutionError", "train", "Budget", "evaluate"):
        assert name in fp.__all__
    assert callable(fp.train) and callable(fp.ops.llm_call)
    assert fp.optim.OptoPrime.__name__ == "OptoPrime"


def test_import_prints_nothing_and_writes_nothing(tmp_path: object) -> None:
    code = "import feedprop, os; print(sorted(os.listdir('.')))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"
    assert result.stderr == ""
