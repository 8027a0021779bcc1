"""Text and DOT drawings of a graph with its feedback; rendering needs Graphviz's dot."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from feedprop import viz
from feedprop.errors import ConfigurationError, ExecutionError, InvalidInputError
from feedprop.node import Node, Parameter
from feedprop.viz import render, to_dot, to_text


def _graph() -> tuple[Parameter[str], Node[str]]:
    prompt = Parameter('Say "hi"\nthen stop', name="prompt")
    mid = prompt + Node("!", name="bang")
    out = mid + "?"  # a second op, with a constant argument
    out.backward("too loud", retain_feedback=True)
    return prompt, out


def test_text_lists_nodes_parents_first_with_feedback() -> None:
    prompt, out = _graph()
    lines = to_text(out).splitlines()
    assert lines[0] == 'prompt = Say "hi"\\nthen stop  (parameter, text)'
    assert lines[1] == "    feedback: too loud"
    assert lines[2:4] == ["bang = '!'", "    feedback: too loud"]  # retained: every node reached keeps it
    assert re.fullmatch(r"add:\d+ = add\(lhs=prompt, rhs=bang\) -> Say \"hi\"\\nthen stop!", lines[4])
    assert lines[5] == "    feedback: too loud"
    assert lines[-1] == "    feedback: too loud" and lines[-2].startswith(f"{out.name} = add(lhs=")
    # A subgraph (a sequence of nodes) draws too.
    assert to_text(prompt.feedback[0].subgraph).splitlines()[0].startswith("prompt = ")


def test_exceptions_are_drawn() -> None:
    x = Parameter(0, name="x")
    with pytest.raises(ExecutionError) as info:
        _ = 1 / x
    text = to_text(info.value.node)
    assert "raised ZeroDivisionError: division by zero" in text
    assert "shape=octagon" in to_dot(info.value.node)


def test_dot_source_is_complete_and_escaped() -> None:
    _, out = _graph()
    dot = to_dot(out, title="a graph")
    assert dot.startswith("digraph feedprop {") and dot.endswith("}")
    assert 'label="a graph"' in dot
    assert r"prompt (text)\nSay \"hi\"\nthen stop" in dot  # quotes and newlines escaped
    node_lines = [line for line in dot.splitlines() if re.match(r"\s+n\d+ \[", line)]
    assert len(node_lines) == 4  # prompt, bang, two adds
    edges = [line for line in dot.splitlines() if re.match(r"\s+n\d+ -> n\d+ \[label=", line)]
    assert len(edges) == 3 and any('label="lhs"' in e for e in edges) and any('label="rhs"' in e for e in edges)
    notes = [line for line in dot.splitlines() if "shape=note" in line]
    assert len(notes) == 4  # every node reached keeps the feedback with retain_feedback=True


def test_bad_graphs_are_refused() -> None:
    with pytest.raises(InvalidInputError):
        to_text(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        to_dot([Node(1), "x"])  # type: ignore[list-item]


def test_render_without_dot_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, out = _graph()
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    with pytest.raises(ConfigurationError, match="install Graphviz"):
        render(out, tmp_path / "g.svg")
    written = render(out, tmp_path / "g.dot")  # DOT needs no binary
    assert written.read_text().startswith("digraph feedprop {")
    with pytest.raises(InvalidInputError, match="svg"):
        render(out, tmp_path / "g.bmp")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_render_with_dot(tmp_path: Path) -> None:
    _, out = _graph()
    svg = render(out, tmp_path / "g.svg")
    assert "<svg" in svg.read_text()
