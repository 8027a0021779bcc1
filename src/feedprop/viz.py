"""Draw a traced graph with its feedback: as text, as Graphviz DOT source, or rendered to a file.

:func:`to_text` and :func:`to_dot` need nothing beyond Python (the DOT source is written here,
not by the ``graphviz`` package). :func:`render` turns the DOT source into SVG/PNG/PDF with
Graphviz's ``dot`` program, and says how to get it when it is missing.

Pass a node (the graph is it and its ancestors) or a sequence of nodes, such as the
``subgraph`` of a parameter's feedback. Feedback shows where nodes hold it: parameters always,
the output of ``backward``, and intermediate nodes after ``backward(..., retain_feedback=True)``.

Example:
    >>> from feedprop.node import Node, Parameter
    >>> x = Parameter(2, name="x")
    >>> y = x * Node(3, name="three")
    >>> y.backward("should be 7")
    >>> print(to_text(y).replace(y.name, "y"))
    x = 2  (parameter, number)
        feedback: should be 7
    three = 3
    y = mul(lhs=x, rhs=three) -> 6
        feedback: should be 7
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feedprop._text import show
from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.node import ExceptionNode, Feedback, Node, Parameter
from feedprop.propagate import ParameterFeedback, toposort

__all__ = ["render", "to_dot", "to_text"]

_FORMATS = ("svg", "png", "pdf", "dot")


def _nodes(graph: Node[Any] | Sequence[Node[Any]]) -> list[Node[Any]]:
    if isinstance(graph, Node):
        return toposort(graph)
    if isinstance(graph, Sequence) and all(isinstance(n, Node) for n in graph):
        return list(graph)
    raise InvalidInputError(
        f"draw a Node or a sequence of Nodes (e.g. param.feedback[0].subgraph), got {type(graph).__name__}"
    )


def _short(value: Any, limit: int, *, one_line: bool = True) -> str:
    """A value as drawn: strings as they are, anything else as its ``repr``, long ones cut in the middle."""
    return show(value if isinstance(value, str) else repr(value), limit, one_line=one_line)


def _feedback_texts(node: Node[Any]) -> list[str]:
    out = []
    for item in node.feedback:
        fb = item.feedback if isinstance(item, ParameterFeedback) else item
        if isinstance(fb, Feedback):
            score = f" (score: {fb.score:g})" if fb.score is not None else ""
            out.append(fb.text + score)
    return out


def _call(node: Node[Any], names: dict[int, str], limit: int) -> str:
    assert node.op is not None
    parts = []
    for arg, value in getattr(node, "inputs", ()):
        shown = names.get(id(value), getattr(value, "name", "")) if isinstance(value, Node) else _short(value, 20)
        parts.append(f"{arg}={shown}")
    return f"{node.op.name}({', '.join(parts)})"


def to_text(graph: Node[Any] | Sequence[Node[Any]], *, max_value_chars: int = 60) -> str:
    """One line per node, parents first: ``name = op(args) -> value``, then its feedback.

    Example:
        >>> from feedprop.node import Node
        >>> print(to_text(Node("hi", name="greeting")))
        greeting = 'hi'
    """
    nodes = _nodes(graph)
    names = {id(n): n.name for n in nodes}
    lines = []
    for n in nodes:
        if isinstance(n, ExceptionNode):
            line = f"{n.name} = {_call(n, names, max_value_chars)} raised {_short(n.message, max_value_chars)}"
        elif n.op is not None and n.parents:
            line = f"{n.name} = {_call(n, names, max_value_chars)} -> {_short(n._data, max_value_chars)}"
        elif isinstance(n, Parameter):
            line = f"{n.name} = {_short(n._data, max_value_chars)}  (parameter, {n.kind})"
        else:
            line = f"{n.name} = {_short(n._data if not isinstance(n._data, str) else repr(n._data), max_value_chars)}"
        lines.append(line)
        lines.extend(f"    feedback: {_short(t, max_value_chars * 2)}" for t in _feedback_texts(n))
    return "\n".join(lines)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: Node[Any] | Sequence[Node[Any]], *, max_value_chars: int = 40, title: str | None = None) -> str:
    """Graphviz DOT source for the graph (no Graphviz needed): parents above children.

    Parameters are blue boxes, errors red octagons, op outputs ellipses, other leaves plain
    boxes; edges carry the argument name; feedback hangs off its node as a yellow note.

    Example:
        >>> from feedprop.node import Node
        >>> print(to_dot(Node(1, name="one")))
        digraph feedprop {
          rankdir=TB;
          node [fontname="Helvetica", fontsize=10];
          n0 [label="one\\n1", shape=box];
        }
    """
    nodes = _nodes(graph)
    ids = {id(n): f"n{i}" for i, n in enumerate(nodes)}
    lines = ["digraph feedprop {", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']
    if title:
        lines.append(f"  label={_quote(title)}; labelloc=t;")
    for n in nodes:
        key = ids[id(n)]
        shown = n.message if isinstance(n, ExceptionNode) else n._data
        value = _short(shown, max_value_chars, one_line=False)
        if isinstance(n, ExceptionNode):
            label, style = f"{n.name}\n{value}", 'shape=octagon, color="#c0392b"'
        elif isinstance(n, Parameter):
            label, style = f"{n.name} ({n.kind})\n{value}", 'shape=box, style="rounded,filled", fillcolor="#d6eaf8"'
        elif n.op is not None and n.parents:
            label, style = f"{n.name}\n{value}", "shape=ellipse"
        else:
            label, style = f"{n.name}\n{value}", "shape=box"
        lines.append(f"  {key} [label={_quote(label)}, {style}];")
        for j, text in enumerate(_feedback_texts(n)):
            note = f"{key}_fb{j}"
            lines.append(
                f"  {note} [label={_quote(_short(text, max_value_chars * 2, one_line=False))}, shape=note, "
                'style=filled, fillcolor="#fcf3cf"];'
            )
            lines.append(f"  {key} -> {note} [style=dashed, arrowhead=none];")
    for n in nodes:
        labels: dict[int, list[str]] = {}
        for arg, value in getattr(n, "inputs", ()):
            if isinstance(value, Node):
                labels.setdefault(id(value), []).append(arg)
        for p in n.parents:
            if id(p) in ids:
                arg_label = ", ".join(labels.get(id(p), [])) or "reads"
                lines.append(f"  {ids[id(p)]} -> {ids[id(n)]} [label={_quote(arg_label)}];")
    lines.append("}")
    return "\n".join(lines)


def render(
    graph: Node[Any] | Sequence[Node[Any]],
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    max_value_chars: int = 40,
) -> Path:
    """Draw the graph into ``path`` (format from its suffix, or ``format``: svg, png, pdf, dot).

    Needs Graphviz's ``dot`` program except for ``.dot``; raises :class:`ConfigurationError`
    saying how to install it when it is missing.
    """
    target = Path(path)
    fmt = (format or target.suffix.lstrip(".") or "svg").lower()
    if fmt not in _FORMATS:
        raise InvalidInputError(f"render writes one of {_FORMATS}, got {fmt!r}")
    source = to_dot(graph, max_value_chars=max_value_chars)
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dot":
        target.write_text(source + "\n", encoding="utf-8")
        return target
    dot = shutil.which("dot")
    if dot is None:
        raise ConfigurationError(
            "rendering needs Graphviz's 'dot' program, which is not on PATH; install Graphviz "
            "(e.g. 'apt-get install graphviz' or 'brew install graphviz'), or write the DOT source with "
            "to_dot(...) / render(..., format='dot') and render it elsewhere"
        )
    with tempfile.NamedTemporaryFile("w", suffix=".dot", delete=False, encoding="utf-8") as f:
        f.write(source)
    try:
        done = subprocess.run([dot, f"-T{fmt}", "-o", str(target), f.name], capture_output=True, text=True, timeout=120)
    finally:
        Path(f.name).unlink(missing_ok=True)
    if done.returncode != 0:
        raise ConfigurationError(f"Graphviz 'dot' failed ({done.returncode}): {done.stderr.strip()[:500]}")
    return target
