"""The layered layout and the SVG drawing of a graph (the drawing in a browser: tests/test_run_page_browser.py)."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedprop import ops
from feedprop.errors import InvalidInputError
from feedprop.graph_data import GRAPH_SCHEMA, GraphRecord
from feedprop.graph_svg import ROLE_STYLES, Layout, layout, render_svg, to_svg
from feedprop.llm import MockLLM
from feedprop.node import Parameter

SVG = "{http://www.w3.org/2000/svg}"


def record(edges: list[tuple[str, str]], names: list[str], **roles: str) -> GraphRecord:
    nodes = [
        {
            "id": n,
            "name": n,
            "role": roles.get(n, "op"),
            "op": "f",
            "kind": "text" if roles.get(n) == "parameter" else "",
            "trainable": roles.get(n) == "parameter",
            "description": "",
            "value": "",
            "model": "",
        }
        for n in names
    ]
    links = [{"source": a, "target": b, "label": "x"} for a, b in edges]
    return {"schema": GRAPH_SCHEMA, "nodes": nodes, "edges": links}  # type: ignore[typeddict-item]


def overlaps(lay: Layout) -> list[tuple[str, str]]:
    found = []
    for layer in lay.layers:
        boxes = sorted((lay.boxes[n] for n in layer), key=lambda b: b.x)
        for left, right in itertools.pairwise(boxes):
            if left.right > right.left:
                found.append((str(left.node and left.node["id"]), str(right.node and right.node["id"])))
    return found


def test_inputs_sit_above_the_ops_that_read_them_and_every_edge_points_down() -> None:
    instruction = Parameter("Be brief.", name="instruction")
    out = ops.strip(ops.llm_call(instruction, "2+2?", llm=MockLLM("4")))
    lay = layout(out)
    for edge in lay.edges:
        assert lay.boxes[edge.source].bottom < lay.boxes[edge.target].top
        assert edge.points[0][1] == lay.boxes[edge.source].bottom and edge.points[-1][1] == lay.boxes[edge.target].top
    assert overlaps(lay) == []
    assert lay.width >= max(b.right for b in lay.boxes.values())
    assert lay.height >= max(b.bottom for b in lay.boxes.values())


def test_barycenter_ordering_removes_a_crossing_the_input_order_has() -> None:
    rec = record([("a", "d"), ("b", "c")], ["a", "b", "c", "d"])
    lay = layout(rec)
    assert lay.crossings == 0
    assert (lay.boxes["a"].x < lay.boxes["b"].x) == (lay.boxes["d"].x < lay.boxes["c"].x)


def test_a_long_edge_bends_around_the_layer_it_crosses() -> None:
    rec = record([("a", "b"), ("b", "c"), ("a", "c")], ["a", "b", "c"])
    lay = layout(rec)
    assert lay.layers[1] in (["b", "~a~c~1"], ["~a~c~1", "b"])
    long = next(e for e in lay.edges if (e.source, e.target) == ("a", "c"))
    assert len(long.points) == 4  # out of a, through the waypoint's slot in layer 1, into c
    waypoint = lay.boxes["~a~c~1"]
    assert not (waypoint.left < lay.boxes["b"].right and lay.boxes["b"].left < waypoint.right)


def test_a_source_sits_just_above_its_first_reader() -> None:
    rec = record([("a", "b"), ("b", "c"), ("c", "d"), ("k", "d")], ["a", "b", "c", "k", "d"])
    lay = layout(rec)
    assert lay.boxes["k"].layer == lay.boxes["d"].layer - 1 == 2


def test_parameters_are_highlighted_and_frozen_ones_dashed() -> None:
    trainable = Parameter("x", name="tuned")
    frozen = Parameter("y", name="fixed", trainable=False)
    root = ET.fromstring(to_svg(ops.concat(trainable, frozen)))
    groups = {g.get("data-name"): g for g in root.iter(f"{SVG}g") if g.get("class", "").startswith("node ")}
    fill, stroke, width = ROLE_STYLES["parameter"]
    for name in ("tuned", "fixed"):
        assert groups[name].get("class") == "node role-parameter"
        rect = groups[name].find(f"{SVG}rect")
        assert rect is not None and (rect.get("fill"), rect.get("stroke"), rect.get("stroke-width")) == (
            fill,
            stroke,
            str(width),
        )
    tuned_rect, fixed_rect = groups["tuned"].find(f"{SVG}rect"), groups["fixed"].find(f"{SVG}rect")
    assert tuned_rect is not None and fixed_rect is not None
    assert tuned_rect.get("stroke-dasharray") is None and fixed_rect.get("stroke-dasharray") == "5 3"


def test_text_is_escaped_and_the_document_is_well_formed_svg() -> None:
    hostile = Parameter("</text><script>alert(1)</script>", name="<b>name</b>")
    svg = to_svg(ops.strip(hostile), title="a & b")
    assert "<script" not in svg and "<b>" not in svg
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    names = [g.get("data-name") for g in root.iter(f"{SVG}g") if g.get("class", "").startswith("node ")]
    assert "<b>name</b>" in names
    titles = [t.text or "" for t in root.iter(f"{SVG}title")]
    assert any("</text><script>alert(1)</script>" in t for t in titles)  # the value, as text in the tooltip


def test_render_svg_writes_the_drawing(tmp_path: Path) -> None:
    path = render_svg(ops.strip(Parameter("x", name="p")), tmp_path / "sub" / "graph.svg")
    assert ET.fromstring(path.read_text(encoding="utf-8")).tag == f"{SVG}svg"


def test_an_empty_graph_and_a_wrong_argument() -> None:
    lay = layout({"schema": GRAPH_SCHEMA, "nodes": [], "edges": []})
    assert lay.boxes == {} and lay.edges == []
    assert ET.fromstring(to_svg({"schema": GRAPH_SCHEMA, "nodes": [], "edges": []})).tag == f"{SVG}svg"
    with pytest.raises(InvalidInputError, match="draw a Node"):
        layout(42)  # type: ignore[arg-type]


@st.composite
def dags(draw: Any) -> GraphRecord:
    n = draw(st.integers(min_value=1, max_value=14))
    names = [f"v{i}" for i in range(n)]
    edges = []
    for j in range(1, n):
        parents = draw(st.lists(st.integers(min_value=0, max_value=j - 1), max_size=3, unique=True))
        edges += [(names[i], names[j]) for i in parents]
    roles = {name: draw(st.sampled_from(["parameter", "llm_call", "op", "input", "error"])) for name in names}
    return record(edges, names, **roles)


@settings(max_examples=60, deadline=None)
@given(dags())
def test_any_dag_is_laid_out_without_overlaps_with_edges_pointing_down(rec: GraphRecord) -> None:
    lay = layout(rec)
    assert {b.node["id"] for b in lay.boxes.values() if b.node} == {n["id"] for n in rec["nodes"]}
    assert overlaps(lay) == []
    for edge in lay.edges:
        assert lay.boxes[edge.source].layer < lay.boxes[edge.target].layer
        ys = [y for _, y in edge.points]
        assert ys == sorted(ys)
    assert len(lay.edges) == len({(e["source"], e["target"]) for e in rec["edges"]})
    ET.fromstring(to_svg(rec))
