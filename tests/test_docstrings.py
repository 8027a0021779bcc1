"""Every example in the package's docstrings runs and prints what the docstring says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import feedprop

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(feedprop.__path__, "feedprop.") if not info.name.endswith("__main__")
)


def test_the_package_has_docstring_examples() -> None:
    found = sum(
        len(t.examples) for name in MODULES for t in doctest.DocTestFinder().find(importlib.import_module(name))
    )
    assert found > 100


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name} (see output)"
