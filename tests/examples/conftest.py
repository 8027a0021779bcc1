"""Load the scripts of ``examples/`` as modules (the directory is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

import feedprop.llm as fp_llm

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def load_example() -> Iterator[Callable[[str], ModuleType]]:
    """``load_example("rag_pipeline")`` imports ``examples/rag_pipeline.py``; the default model is reset after."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses and bundles look their module up by name
        spec.loader.exec_module(module)
        return module

    yield load
    fp_llm.set_default(None)
