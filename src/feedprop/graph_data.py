"""A traced graph as JSON data: what a run directory keeps of its workflow (``graph.json``).

:func:`graph_record` turns a node (the graph is it and its ancestors) or a sequence of nodes
into a :class:`GraphRecord`: one entry per node with its name, its ``role`` (``parameter``,
``llm_call``, ``op``, ``input``, ``error``), a short preview of its value from that run, and
the edges from each input to the op that read it, labelled with the argument's name. Plain
values an op was given (a question passed as a ``str``) become ``input`` nodes too, so the
drawing shows where the data enters. :func:`read_graph` checks a record read back from JSON.

The record holds no Python objects, so it is drawn without the workflow
(:mod:`feedprop.graph_svg`) and written next to a run's other files.

Example:
    >>> from feedprop.node import Parameter
    >>> from feedprop import ops
    >>> greeting = ops.format("{} {}", Parameter("Hello", name="word"), "Ada")
    >>> record = graph_record(greeting)
    >>> [(n["name"], n["role"]) for n in record["nodes"][:3]], record["nodes"][3]["op"]
    ([('word', 'parameter'), ('{} {}', 'input'), ('Ada', 'input')], 'format')
    >>> [(e["source"], e["target"], e["label"]) for e in record["edges"]]
    [('n0', 'n3', 'arg1'), ('n1', 'n3', 'template'), ('n2', 'n3', 'arg2')]
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict, cast

from feedprop._files import atomic_write
from feedprop._text import show
from feedprop.errors import InvalidInputError
from feedprop.node import ExceptionNode, MessageNode, Node, Parameter
from feedprop.ops import LLM_CALL
from feedprop.propagate import toposort

__all__ = [
    "GRAPH_SCHEMA",
    "ROLES",
    "GraphEdge",
    "GraphNode",
    "GraphRecord",
    "graph_record",
    "read_graph",
    "write_graph",
]

#: Name and version of the graph record.
GRAPH_SCHEMA = "feedprop-graph/1"
#: What a node can be, in drawing order of importance.
ROLES = ("parameter", "llm_call", "op", "input", "error")


class GraphNode(TypedDict):
    """One node: ``id`` (``n0``, ``n1``, ... in topological order), ``name``, ``role`` (one of
    :data:`ROLES`), ``op`` (the op's name, or ``""``), ``kind`` and ``trainable`` (parameters),
    ``description``, ``value`` (a preview of the value this run saw) and ``model`` (LLM calls)."""

    id: str
    name: str
    role: str
    op: str
    kind: str
    trainable: bool
    description: str
    value: str
    model: str


class GraphEdge(TypedDict):
    """An edge from an input (``source``) to the op output that read it (``target``), labelled with
    the argument's name (``reads`` for a node read without being an argument, ``code`` for the
    source code of a bundled function)."""

    source: str
    target: str
    label: str


class GraphRecord(TypedDict):
    """A whole graph: ``schema`` (:data:`GRAPH_SCHEMA`), ``nodes`` parents first, ``edges``."""

    schema: str
    nodes: list[GraphNode]
    edges: list[GraphEdge]


def _roots(graph: Node[Any] | Sequence[Node[Any]]) -> list[Node[Any]]:
    if isinstance(graph, Node):
        return [graph]
    if isinstance(graph, Sequence) and not isinstance(graph, str) and all(isinstance(n, Node) for n in graph):
        return list(graph)
    raise InvalidInputError(f"graph_record takes a Node or a sequence of Nodes, got {type(graph).__name__}")


def _ordered(roots: list[Node[Any]]) -> list[Node[Any]]:
    seen: set[int] = set()
    order: list[Node[Any]] = []
    for root in roots:
        for node in toposort(root):
            if id(node) not in seen:
                seen.add(id(node))
                order.append(node)
    return order


def _entry(node: Node[Any], key: str, limit: int) -> GraphNode:
    entry = GraphNode(
        id=key, name=node.name, role="input", op="", kind="", trainable=False, description="", value="", model=""
    )
    if isinstance(node, ExceptionNode):
        entry["role"], entry["value"] = "error", show(str(node.message), limit, one_line=True)
    else:
        entry["value"] = show(node._data, limit, one_line=True)
    if isinstance(node, Parameter):
        entry["role"], entry["kind"], entry["trainable"] = "parameter", node.kind, bool(node.trainable)
    if node.op is not None and (node.parents or isinstance(node, MessageNode)):
        entry["op"] = node.op.name
        if entry["role"] == "input":
            entry["role"] = "llm_call" if node.op is LLM_CALL else "op"
    if isinstance(node, MessageNode) and node.op is LLM_CALL:
        entry["model"] = str((node.info or {}).get("model", ""))
    entry["description"] = show(getattr(node, "description", "") or "", 200, one_line=True)
    return entry


def graph_record(graph: Node[Any] | Sequence[Node[Any]], *, max_value_chars: int = 80) -> GraphRecord:
    """The graph of ``graph`` (a node and its ancestors, or several nodes) as JSON data.

    Example:
        >>> from feedprop.node import Parameter
        >>> y = Parameter(2, name="x") * 3
        >>> record = graph_record(y)
        >>> [n["role"] for n in record["nodes"]], record["nodes"][0]["kind"], record["nodes"][-1]["value"]
        (['parameter', 'input', 'op'], 'number', '6')
    """
    nodes = _ordered(_roots(graph))
    keys = {id(n): f"n{i}" for i, n in enumerate(nodes)}
    entries = [_entry(n, keys[id(n)], max_value_chars) for n in nodes]
    edges: list[GraphEdge] = []
    constants: list[tuple[GraphNode, str]] = []  # plain-valued inputs, drawn as input nodes
    for n in nodes:
        target = keys[id(n)]
        labels: dict[int, list[str]] = {}
        for arg, value in getattr(n, "inputs", ()):
            if isinstance(value, Node):
                labels.setdefault(id(value), []).append(arg)
            elif isinstance(n, MessageNode):
                key = f"n{len(entries) + len(constants)}"
                shown = show(value, max_value_chars, one_line=True)
                head = show(value, 10 * max_value_chars, one_line=True)
                constant = GraphNode(
                    id=key,
                    name=head if len(head) <= 24 else head[:23] + "…",
                    role="input",
                    op="",
                    kind="",
                    trainable=False,
                    description=f"a plain value passed as {arg!r}",
                    value=shown,
                    model="",
                )
                constants.append((constant, target))
                edges.append(GraphEdge(source=key, target=target, label=arg))
        for parent in n.parents:
            if id(parent) in keys:
                code = isinstance(parent, Parameter) and parent.kind == "code" and id(parent) not in labels
                label = ", ".join(labels.get(id(parent), [])) or ("code" if code else "reads")
                edges.append(GraphEdge(source=keys[id(parent)], target=target, label=label))
    # Constants go just before the node that read them, so the list stays parents-first.
    ordered: list[GraphNode] = []
    for entry in entries:
        ordered.extend(c for c, target in constants if target == entry["id"])
        ordered.append(entry)
    renamed = {e["id"]: f"n{i}" for i, e in enumerate(ordered)}
    for e in ordered:
        e["id"] = renamed[e["id"]]
    for edge in edges:
        edge["source"], edge["target"] = renamed[edge["source"]], renamed[edge["target"]]
    edges.sort(key=lambda e: (int(e["target"][1:]), int(e["source"][1:])))
    return GraphRecord(schema=GRAPH_SCHEMA, nodes=ordered, edges=edges)


_NODE_FIELDS: dict[str, type] = {
    "id": str,
    "name": str,
    "role": str,
    "op": str,
    "kind": str,
    "trainable": bool,
    "description": str,
    "value": str,
    "model": str,
}


def read_graph(data: Mapping[str, Any] | str | os.PathLike[str]) -> GraphRecord:
    """Check a graph record (a mapping, or the path of a ``graph.json``) and return it.

    Raises :class:`~feedprop.errors.InvalidInputError` saying what is wrong with it.

    Example:
        >>> read_graph({"schema": "feedprop-graph/1", "nodes": [], "edges": []})["nodes"]
        []
        >>> read_graph({"nodes": []})
        Traceback (most recent call last):
        ...
        feedprop.errors.InvalidInputError: not a feedprop graph record: schema is None, expected 'feedprop-graph/1'
    """
    where = "graph record"
    if not isinstance(data, Mapping):
        where = str(data)
        try:
            data = json.loads(Path(data).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read the graph file {where}: {exc}") from exc
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"{where} holds {type(data).__name__}, not a graph record")
    if data.get("schema") != GRAPH_SCHEMA:
        raise InvalidInputError(f"not a feedprop {where}: schema is {data.get('schema')!r}, expected {GRAPH_SCHEMA!r}")
    nodes, edges = data.get("nodes"), data.get("edges")
    if not isinstance(nodes, list) or not isinstance(edges, list):
        raise InvalidInputError(f"{where}: 'nodes' and 'edges' must be lists")
    ids: set[str] = set()
    for i, node in enumerate(nodes):
        bad = [k for k, t in _NODE_FIELDS.items() if not isinstance(node, Mapping) or not isinstance(node.get(k), t)]
        if bad:
            raise InvalidInputError(f"{where}: node {i} lacks or mistypes {bad}")
        if node["role"] not in ROLES:
            raise InvalidInputError(f"{where}: node {node['id']!r} has role {node['role']!r}, not one of {ROLES}")
        ids.add(node["id"])
    for i, edge in enumerate(edges):
        ends = [edge.get("source"), edge.get("target")] if isinstance(edge, Mapping) else [None]
        if any(end not in ids for end in ends) or not isinstance(edge.get("label"), str):
            raise InvalidInputError(f"{where}: edge {i} must join two listed node ids and carry a text label")
    return GraphRecord(
        schema=GRAPH_SCHEMA,
        nodes=[cast(GraphNode, {k: n[k] for k in _NODE_FIELDS}) for n in nodes],
        edges=[GraphEdge(source=e["source"], target=e["target"], label=e["label"]) for e in edges],
    )


def write_graph(path: str | os.PathLike[str], graph: Node[Any] | Sequence[Node[Any]] | GraphRecord) -> Path:
    """Write the graph (nodes, or a record) as JSON to ``path``, atomically; returns the path.

    Example:
        >>> import os, tempfile
        >>> from feedprop.node import Node
        >>> path = write_graph(os.path.join(tempfile.mkdtemp(), "graph.json"), Node(1, name="one"))
        >>> read_graph(path)["nodes"][0]["name"]
        'one'
    """
    record = read_graph(graph) if isinstance(graph, Mapping) else graph_record(graph)
    target = Path(path)
    atomic_write(target, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return target
