"""A traced graph as JSON data: roles, edges with argument names, plain inputs, errors, and the checks on reading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from feedprop import ops
from feedprop.bundle import bundle
from feedprop.errors import ExecutionError, InvalidInputError
from feedprop.graph_data import GRAPH_SCHEMA, graph_record, read_graph, write_graph
from feedprop.llm import MockLLM
from feedprop.node import Node, Parameter


@bundle(trainable=True)
def last_word(text: str) -> str:
    return text.split()[-1]


def two_stage() -> Node[Any]:
    instruction = Parameter("Answer briefly.", name="instruction", description="the system prompt")
    reply = ops.llm_call(instruction, "How many legs has a cat?", llm=MockLLM("It has 4", model="tiny"))
    return last_word(reply)


def test_each_node_gets_its_role_and_each_edge_its_argument_name() -> None:
    record = graph_record(two_stage())
    by_name = {n["name"]: n for n in record["nodes"]}
    assert record["schema"] == GRAPH_SCHEMA
    assert by_name["instruction"]["role"] == "parameter" and by_name["instruction"]["kind"] == "text"
    assert by_name["instruction"]["trainable"] and by_name["instruction"]["description"] == "the system prompt"
    assert by_name["last_word"]["role"] == "parameter" and by_name["last_word"]["kind"] == "code"
    call = next(n for n in record["nodes"] if n["role"] == "llm_call")
    assert call["model"] == "tiny" and call["value"] == "It has 4"
    question = next(n for n in record["nodes"] if n["role"] == "input")
    assert question["value"] == "How many legs has a cat?"
    output = record["nodes"][-1]
    assert output["role"] == "op" and output["op"] == "last_word" and output["value"] == "4"
    names = {n["id"]: n["name"] for n in record["nodes"]}
    edges = {(names[e["source"]], names[e["target"]], e["label"]) for e in record["edges"]}
    assert edges == {
        ("instruction", call["name"], "system"),
        (question["name"], call["name"], "user"),
        (call["name"], output["name"], "text"),
        ("last_word", output["name"], "code"),
    }


def test_nodes_are_listed_parents_first() -> None:
    record = graph_record(two_stage())
    position = {n["id"]: i for i, n in enumerate(record["nodes"])}
    assert [n["id"] for n in record["nodes"]] == [f"n{i}" for i in range(len(record["nodes"]))]
    assert all(position[e["source"]] < position[e["target"]] for e in record["edges"])


def test_a_failing_op_is_an_error_node() -> None:
    divisor = Parameter(0, name="divisor")
    with pytest.raises(ExecutionError) as info:
        Node(1, name="one") / divisor
    record = graph_record(info.value.node)
    error = record["nodes"][-1]
    assert error["role"] == "error" and "division by zero" in error["value"]
    assert {n["name"] for n in record["nodes"][:-1]} == {"one", "divisor"}


def test_long_values_are_shortened_and_several_outputs_share_one_graph() -> None:
    text = Parameter("x" * 500, name="long")
    a, b = ops.strip(text), ops.upper(text)
    record = graph_record([a, b], max_value_chars=40)
    assert [n["name"] for n in record["nodes"]].count("long") == 1
    assert all(len(n["value"]) <= 40 for n in record["nodes"])
    assert len(record["edges"]) == 2


def test_the_record_survives_a_json_round_trip(tmp_path: Path) -> None:
    path = write_graph(tmp_path / "graph.json", two_stage())
    again = read_graph(path)
    assert again == json.loads(path.read_text(encoding="utf-8"))
    assert read_graph(dict(again)) == again
    assert write_graph(tmp_path / "copy.json", again).read_text(encoding="utf-8") == path.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"schema": "other", "nodes": [], "edges": []}, "schema is 'other'"),
        ({"schema": GRAPH_SCHEMA, "nodes": {}, "edges": []}, "must be lists"),
        ({"schema": GRAPH_SCHEMA, "nodes": [{"id": "n0"}], "edges": []}, "node 0 lacks or mistypes"),
        ({"schema": GRAPH_SCHEMA, "nodes": [], "edges": [{"source": "a", "target": "b", "label": ""}]}, "edge 0"),
    ],
)
def test_a_malformed_record_is_refused_with_what_is_wrong(data: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        read_graph(data)


def test_a_node_with_an_unknown_role_is_refused() -> None:
    node = graph_record(Node(1, name="one"))["nodes"][0]
    with pytest.raises(InvalidInputError, match="role 'wizard'"):
        read_graph({"schema": GRAPH_SCHEMA, "nodes": [{**node, "role": "wizard"}], "edges": []})


def test_an_unreadable_file_and_a_wrong_argument_are_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="cannot read the graph file"):
        read_graph(tmp_path / "bad.json")
    with pytest.raises(InvalidInputError, match="takes a Node or a sequence of Nodes"):
        graph_record("not a node")  # type: ignore[arg-type]
