"""Tolerant key matching: the forms small models actually write."""

from __future__ import annotations

import pytest

from feedprop.optim.keys import match_key, normalize_key

NAMES = ["__code0", "solver.instruction", "solver.examples", "x1", "x2", "Temperature"]


@pytest.mark.parametrize(
    ("key", "expected", "how"),
    [
        ("__code0", "__code0", "exact"),
        ("code0", "__code0", "normalized"),
        ("Code_0", "__code0", "normalized"),
        ("solver_instruction", "solver.instruction", "normalized"),
        ("SOLVER.INSTRUCTION", "solver.instruction", "normalized"),
        ("instruction", "solver.instruction", "suffix"),
        ("examples", "solver.examples", "suffix"),
        ("temp", "Temperature", "prefix"),
        ("temperature", "Temperature", "normalized"),
        ("x2", "x2", "exact"),
    ],
)
def test_resolves(key: str, expected: str, how: str) -> None:
    m = match_key(key, NAMES)
    assert (m.name, m.how) == (expected, how)


@pytest.mark.parametrize("key", ["solver", "x"])
def test_ambiguous_or_too_short_is_not_guessed(key: str) -> None:
    m = match_key(key, NAMES)
    assert m.name is None
    assert m.reason


def test_ambiguous_prefix_names_the_candidates() -> None:
    m = match_key("solver", NAMES)
    assert m.how == "ambiguous"
    assert "solver.instruction" in m.reason and "solver.examples" in m.reason


def test_unknown_and_empty() -> None:
    assert match_key("question", NAMES).how == "unknown"
    assert match_key("___", NAMES).how == "unknown"
    assert match_key("", []).name is None


def test_normalize_key() -> None:
    assert normalize_key("__Solver.Instruction-1") == "solverinstruction1"
