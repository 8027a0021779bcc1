"""Draw a traced graph as SVG with a layout of our own: no Graphviz, no browser script, no system binary.

The layout is the classic layered one (Sugiyama's), small enough to read:

1. layers: each node one below its lowest input (longest path from the sources); a source sits
   just above the first node that reads it, so a constant does not stretch across the drawing;
2. an edge that spans several layers gets a waypoint in each layer it crosses;
3. order within a layer: barycenter sweeps, down and up, keeping the order with fewest crossings;
4. coordinates: each node pulled toward the mean of its neighbours, order kept, boxes never overlap.

Parameters are drawn as bold blue boxes (trainable ones solid, frozen ones dashed), LLM calls
violet, other ops grey with rounded ends, plain inputs white, errors red; every edge carries the
argument's name; hovering a box shows its value and description (an SVG ``<title>``).

Input is a node (it and its ancestors), a sequence of nodes, or a
:class:`~feedprop.graph_data.GraphRecord` read from a run's ``graph.json``.

Example:
    >>> from feedprop.node import Parameter
    >>> from feedprop import ops
    >>> out = ops.strip(ops.format("{}: {}", Parameter("Answer", name="instruction"), "2+2?"))
    >>> svg = to_svg(out)
    >>> svg.startswith("<svg") and 'class="node role-parameter"' in svg and "instruction" in svg
    True
    >>> layout(out).crossings
    0
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from feedprop._files import atomic_write
from feedprop.errors import InvalidInputError
from feedprop.graph_data import GraphNode, GraphRecord, graph_record, read_graph
from feedprop.node import Node

__all__ = ["ROLE_STYLES", "Box", "EdgeRoute", "Layout", "layout", "render_svg", "to_svg"]

#: Fill, stroke and stroke width of each role; trainable parameters are the ones to see first.
ROLE_STYLES: dict[str, tuple[str, str, float]] = {
    "parameter": ("#dbeafe", "#1d4ed8", 2.5),
    "llm_call": ("#ede9fe", "#6d28d9", 1.5),
    "op": ("#f1f5f9", "#475569", 1.2),
    "input": ("#ffffff", "#94a3b8", 1.0),
    "error": ("#fee2e2", "#b91c1c", 1.5),
}
_CHAR_W = 7.0  # a generous average width of a 12px sans-serif character
_NODE_H = 44.0
_LAYER_GAP = 58.0
_NODE_GAP = 26.0
_MARGIN = 16.0
_NAME_CHARS = 30
_SUB_CHARS = 34


@dataclass
class Box:
    """Where a node is drawn: centre ``x``, ``y``, size ``w`` x ``h``, its ``layer`` and ``order`` in it;
    ``node`` is ``None`` for a waypoint of a long edge."""

    x: float
    y: float
    w: float
    h: float
    layer: int
    order: int
    node: GraphNode | None = None

    @property
    def left(self) -> float:
        return self.x - self.w / 2

    @property
    def right(self) -> float:
        return self.x + self.w / 2

    @property
    def top(self) -> float:
        return self.y - self.h / 2

    @property
    def bottom(self) -> float:
        return self.y + self.h / 2


@dataclass
class EdgeRoute:
    """An edge's drawn path: ``points`` from the source's bottom to the target's top, through waypoints."""

    source: str
    target: str
    label: str
    points: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Layout:
    """A laid-out graph: ``boxes`` by node id (waypoints as ``~``-prefixed ids), ``edges``, the
    ``layers`` (ids in drawing order), total ``width`` and ``height``, and edge ``crossings``."""

    boxes: dict[str, Box]
    edges: list[EdgeRoute]
    layers: list[list[str]]
    width: float
    height: float
    crossings: int


def _record(graph: Node[Any] | Sequence[Node[Any]] | Mapping[str, Any]) -> GraphRecord:
    if isinstance(graph, Mapping):
        return read_graph(graph)
    if isinstance(graph, Node | Sequence):
        return graph_record(graph)
    raise InvalidInputError(f"draw a Node, a sequence of Nodes or a graph record, got {type(graph).__name__}")


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _lines(node: GraphNode) -> tuple[str, str]:
    role = node["role"]
    if role == "parameter":
        sub = f"{node['kind']} parameter" + ("" if node["trainable"] else " (frozen)")
    elif role == "llm_call":
        sub = "llm_call" + (f" · {node['model']}" if node["model"] else "")
    elif role == "op":
        sub = node["op"]
    elif role == "error":
        sub = "raised: " + node["value"]
    else:  # an input: its name already shows the value's start; the whole value is in the tooltip
        sub = "input"
    return _short(node["name"], _NAME_CHARS), _short(sub, _SUB_CHARS)


def _layers(ids: list[str], parents: dict[str, list[str]], children: dict[str, list[str]]) -> dict[str, int]:
    layer: dict[str, int] = {}
    for n in ids:  # ids are parents-first
        layer[n] = max((layer[p] + 1 for p in parents[n]), default=0)
    for n in reversed(ids):  # a source sits just above the first node that reads it
        if not parents[n] and children[n]:
            layer[n] = max(0, min(layer[c] for c in children[n]) - 1)
    return layer


def _crossings(upper: list[str], lower: list[str], links: list[tuple[str, str]]) -> int:
    up = {n: i for i, n in enumerate(upper)}
    low = {n: i for i, n in enumerate(lower)}
    pairs = sorted((up[a], low[b]) for a, b in links if a in up and b in low)
    count = 0
    for i in range(len(pairs)):
        for j in range(i + 1, len(pairs)):
            if pairs[i][0] < pairs[j][0] and pairs[i][1] > pairs[j][1]:
                count += 1
    return count


def _total_crossings(layers: list[list[str]], links: list[tuple[str, str]]) -> int:
    return sum(_crossings(layers[i], layers[i + 1], links) for i in range(len(layers) - 1))


def _order(layers: list[list[str]], links: list[tuple[str, str]], sweeps: int = 12) -> list[list[str]]:
    ups: dict[str, list[str]] = {n: [] for layer in layers for n in layer}
    downs: dict[str, list[str]] = {n: [] for layer in layers for n in layer}
    for a, b in links:
        downs[a].append(b)
        ups[b].append(a)
    best = [list(layer) for layer in layers]
    best_count = _total_crossings(best, links)
    current = [list(layer) for layer in layers]
    for sweep in range(sweeps):
        down = sweep % 2 == 0
        indices = range(1, len(current)) if down else range(len(current) - 2, -1, -1)
        for i in indices:
            ref = current[i - 1] if down else current[i + 1]
            pos = {n: k for k, n in enumerate(ref)}
            neighbours = ups if down else downs

            def key(
                item: tuple[int, str], pos: dict[str, int] = pos, neighbours: dict[str, list[str]] = neighbours
            ) -> float:
                k, n = item
                near = [pos[m] for m in neighbours[n] if m in pos]
                return sum(near) / len(near) if near else float(k)

            current[i] = [n for _, n in sorted(enumerate(current[i]), key=lambda item: (key(item), item[0]))]
        count = _total_crossings(current, links)
        if count < best_count:
            best, best_count = [list(layer) for layer in current], count
    return best


def _place(layers: list[list[str]], boxes: dict[str, Box], links: list[tuple[str, str]]) -> None:
    ups: dict[str, list[str]] = {n: [] for n in boxes}
    downs: dict[str, list[str]] = {n: [] for n in boxes}
    for a, b in links:
        downs[a].append(b)
        ups[b].append(a)

    def pack(layer: list[str], desired: list[float]) -> None:
        xs = list(desired)
        for i in range(1, len(layer)):  # push right until nothing overlaps its left neighbour
            sep = (boxes[layer[i - 1]].w + boxes[layer[i]].w) / 2 + _NODE_GAP
            xs[i] = max(xs[i], xs[i - 1] + sep)
        for i in range(len(layer) - 2, -1, -1):  # then keep the order once the right neighbour moved
            sep = (boxes[layer[i]].w + boxes[layer[i + 1]].w) / 2 + _NODE_GAP
            xs[i] = min(xs[i], xs[i + 1] - sep)
        shift = sum(d - x for d, x in zip(desired, xs, strict=True)) / len(layer)
        for n, x in zip(layer, xs, strict=True):
            boxes[n].x = x + shift

    for layer in layers:  # start packed from the left
        x = 0.0
        for n in layer:
            boxes[n].x = x + boxes[n].w / 2
            x += boxes[n].w + _NODE_GAP
    for sweep in range(8):
        down = sweep % 2 == 0
        order = layers if down else list(reversed(layers))
        for layer in order:
            desired = []
            for n in layer:
                near = [boxes[m].x for m in (ups[n] if down else downs[n])]
                desired.append(sum(near) / len(near) if near else boxes[n].x)
            pack(layer, desired)
    low = min(box.left for box in boxes.values())
    for box in boxes.values():
        box.x += _MARGIN - low


def layout(graph: Node[Any] | Sequence[Node[Any]] | Mapping[str, Any]) -> Layout:
    """Lay the graph out in layers, top to bottom (inputs above the ops that read them).

    Example:
        >>> rec = {"schema": "feedprop-graph/1", "edges": [{"source": "a", "target": "b", "label": "x"}],
        ...        "nodes": [dict(id=i, name=i, role="op", op="f", kind="", trainable=False, description="",
        ...                       value="", model="") for i in ("a", "b")]}
        >>> lay = layout(rec)
        >>> lay.layers, lay.boxes["a"].bottom < lay.boxes["b"].top
        ([['a'], ['b']], True)
    """
    record = _record(graph)
    nodes = {n["id"]: n for n in record["nodes"]}
    ids = [n["id"] for n in record["nodes"]]
    position = {n: i for i, n in enumerate(ids)}
    labels: dict[tuple[str, str], list[str]] = {}
    for e in record["edges"]:
        labels.setdefault((e["source"], e["target"]), []).append(e["label"])
    pairs = [pair for pair in labels if position[pair[0]] < position[pair[1]]]  # parents-first: drop back edges
    parents: dict[str, list[str]] = {n: [] for n in ids}
    children: dict[str, list[str]] = {n: [] for n in ids}
    for a, b in pairs:
        parents[b].append(a)
        children[a].append(b)
    layer_of = _layers(ids, parents, children)
    depth = max(layer_of.values(), default=-1) + 1
    layers: list[list[str]] = [[] for _ in range(depth)]
    for n in ids:
        layers[layer_of[n]].append(n)
    links: list[tuple[str, str]] = []
    chains: dict[tuple[str, str], list[str]] = {}
    for a, b in pairs:
        chain = [a]
        for k in range(layer_of[a] + 1, layer_of[b]):
            waypoint = f"~{a}~{b}~{k}"
            layers[k].append(waypoint)
            chain.append(waypoint)
        chain.append(b)
        chains[(a, b)] = chain
        links.extend(itertools.pairwise(chain))
    layers = _order(layers, links)
    boxes: dict[str, Box] = {}
    for k, layer in enumerate(layers):
        for i, n in enumerate(layer):
            y = _MARGIN + 18 + k * (_NODE_H + _LAYER_GAP) + _NODE_H / 2
            if n in nodes:
                width = max(len(t) for t in _lines(nodes[n])) * _CHAR_W + 24
                boxes[n] = Box(0.0, y, max(width, 80.0), _NODE_H, k, i, nodes[n])
            else:
                boxes[n] = Box(0.0, y, 10.0, _NODE_H, k, i)
    if boxes:
        _place(layers, boxes, links)
    routes = [_route(chains[pair], ", ".join(labels[pair]), boxes) for pair in pairs]
    _spread_ports(routes, boxes)
    width = max((b.right for b in boxes.values()), default=0.0) + _MARGIN
    height = max((b.bottom for b in boxes.values()), default=0.0) + _MARGIN
    return Layout(boxes, routes, layers, max(width, 120.0), max(height, 60.0), _total_crossings(layers, links))


def _route(chain: list[str], label: str, boxes: dict[str, Box]) -> EdgeRoute:
    a, b = boxes[chain[0]], boxes[chain[-1]]
    points = [(a.x, a.bottom)]
    for waypoint in chain[1:-1]:
        w = boxes[waypoint]
        points += [(w.x, w.top), (w.x, w.bottom)]
    points.append((b.x, b.top))
    return EdgeRoute(chain[0], chain[-1], label, points)


def _spread_ports(routes: list[EdgeRoute], boxes: dict[str, Box]) -> None:
    """Several edges into (or out of) one box meet it at separate points, ordered by where they come from."""
    for end in (0, -1):
        groups: dict[str, list[EdgeRoute]] = {}
        for r in routes:
            groups.setdefault(r.source if end == 0 else r.target, []).append(r)
        for key, group in groups.items():
            if len(group) < 2:
                continue
            box = boxes[key]
            group.sort(key=lambda r: r.points[1 if end == -1 else -2][0] if len(r.points) > 1 else 0.0)
            span = box.w * 0.7
            for i, r in enumerate(group):
                x = box.x - span / 2 + span * (i + 0.5) / len(group)
                r.points[end] = (x, r.points[end][1])


def _path(points: list[tuple[float, float]]) -> str:
    d = [f"M{points[0][0]:.1f},{points[0][1]:.1f}"]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 == x1:
            d.append(f"L{x1:.1f},{y1:.1f}")
        else:
            mid = (y0 + y1) / 2
            d.append(f"C{x0:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{y1:.1f}")
    return "".join(d)


def _tooltip(node: GraphNode) -> str:
    parts = [f"{node['name']} ({node['role']}{', ' + node['kind'] if node['kind'] else ''})"]
    if node["op"]:
        parts.append(f"op: {node['op']}")
    if node["model"]:
        parts.append(f"model: {node['model']}")
    if node["description"]:
        parts.append(node["description"])
    if node["value"]:
        parts.append(f"value: {node['value']}")
    return "\n".join(parts)


def to_svg(graph: Node[Any] | Sequence[Node[Any]] | Mapping[str, Any], *, title: str = "") -> str:
    """The graph drawn as an SVG document (text), parameters highlighted; see the module docs.

    Example:
        >>> from feedprop.node import Node
        >>> svg = to_svg(Node(1, name="one"), title="a graph")
        >>> svg.count('class="node '), "a graph" in svg, svg.endswith("</svg>")
        (1, True, True)
    """
    lay = layout(graph)
    top = 22.0 if title else 0.0
    legend_y = lay.height + top + 6
    height = legend_y + 24
    width = max(lay.width, 560.0)
    out = [
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="system-ui, sans-serif" font-size="12" role="img" '
        f'aria-label="{escape(title or "workflow graph")}">',
        '<defs><marker id="fp-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#64748b"/></marker></defs>',
    ]
    if title:
        out.append(f'<text x="{_MARGIN}" y="16" font-size="13" font-weight="600">{escape(title)}</text>')
    out.append(f'<g transform="translate(0 {top:.0f})">')
    for r in lay.edges:
        out.append(
            f'<g class="edge" data-source="{escape(r.source)}" data-target="{escape(r.target)}">'
            f'<path d="{_path(r.points)}" fill="none" stroke="#64748b" stroke-width="1.3" '
            'marker-end="url(#fp-arrow)"/>'
        )
        if r.label:
            (x0, y0), (x1, y1) = r.points[-2], r.points[-1]
            lx, ly = x1 + (x0 - x1) * 0.35, y1 + (y0 - y1) * 0.35
            out.append(
                f'<text x="{lx + 4:.1f}" y="{ly:.1f}" font-size="10" fill="#334155" stroke="#fff" stroke-width="3" '
                f'paint-order="stroke">{escape(_short(r.label, 24))}</text>'
            )
        out.append("</g>")
    for key, b in lay.boxes.items():
        node = b.node
        if node is None:
            continue
        fill, stroke, stroke_w = ROLE_STYLES[node["role"]]
        dash = (
            ' stroke-dasharray="5 3"'
            if node["role"] == "input" or (node["role"] == "parameter" and not node["trainable"])
            else ""
        )
        radius = 18 if node["role"] == "op" else 6
        name, sub = _lines(node)
        weight = "700" if node["role"] == "parameter" else "600"
        out.append(
            f'<g class="node role-{node["role"]}" data-id="{escape(key)}" data-name="{escape(node["name"])}">'
            f"<title>{escape(_tooltip(node))}</title>"
            f'<rect x="{b.left:.1f}" y="{b.top:.1f}" width="{b.w:.1f}" height="{b.h:.1f}" rx="{radius}" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="{stroke_w}"{dash}/>'
            f'<text x="{b.x:.1f}" y="{b.y - 4:.1f}" text-anchor="middle" font-weight="{weight}" fill="#0f172a">'
            f"{escape(name)}</text>"
            f'<text x="{b.x:.1f}" y="{b.y + 12:.1f}" text-anchor="middle" font-size="11" fill="#475569">'
            f"{escape(sub)}</text></g>"
        )
    out.append("</g>")
    x = _MARGIN
    for role, label in (
        ("parameter", "parameter (trainable)"),
        ("llm_call", "LLM call"),
        ("op", "op"),
        ("input", "input"),
        ("error", "error"),
    ):
        fill, stroke, stroke_w = ROLE_STYLES[role]
        out.append(
            f'<g class="legend"><rect x="{x:.0f}" y="{legend_y:.0f}" width="14" height="12" rx="3" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{stroke_w}"/><text x="{x + 19:.0f}" y="{legend_y + 10:.0f}" '
            f'font-size="11">{escape(label)}</text></g>'
        )
        x += 30 + len(label) * 6.2
    out.append("</svg>")
    return "".join(out)


def render_svg(graph: Node[Any] | Sequence[Node[Any]] | Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write :func:`to_svg` of the graph to ``path`` (atomically); returns the path.

    Example:
        >>> import os, tempfile
        >>> from feedprop.node import Node
        >>> path = render_svg(Node(1, name="one"), os.path.join(tempfile.mkdtemp(), "graph.svg"))
        >>> path.read_text(encoding="utf-8").startswith("<svg")
        True
    """
    target = Path(path)
    atomic_write(target, to_svg(graph) + "\n")
    return target
