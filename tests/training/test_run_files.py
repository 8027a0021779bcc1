"""What a run directory keeps for its page: graph.json once, per-item outcomes; written by fp.train and alternate."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from feedprop import ops
from feedprop.errors import ExecutionError
from feedprop.graph_data import read_graph
from feedprop.node import Feedback, Node, Parameter
from feedprop.training.evaluation import Outcome
from feedprop.training.events import ITEM_OUTCOME_SCHEMA, item_outcomes, read_events
from feedprop.training.run_files import GRAPH_FILE, log_outcomes, record_graph

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the run page's toy runs
from run_toys import joint_run, train_run


def ok(index: int, output: object) -> Outcome:
    return Outcome(index, output, Feedback("fine", score=1.0))


def test_the_graph_is_written_once_from_the_first_traced_output(tmp_path: Path) -> None:
    first = ops.strip(Parameter(" a ", name="first"))
    assert record_graph(tmp_path, [ok(0, "plain text"), ok(1, first)]) == tmp_path / GRAPH_FILE
    assert read_graph(tmp_path / GRAPH_FILE)["nodes"][0]["name"] == "first"
    assert record_graph(tmp_path, [ok(0, ops.strip(Parameter(" b ", name="second")))]) is None
    assert read_graph(tmp_path / GRAPH_FILE)["nodes"][0]["name"] == "first"


def test_a_failed_item_gives_the_graph_up_to_its_error(tmp_path: Path) -> None:
    with pytest.raises(ExecutionError) as info:
        Node(1, name="one") / Parameter(0, name="zero")
    failed = Outcome(0, None, Feedback("error", score=0.0), error=info.value)
    record_graph(tmp_path, [failed])
    assert read_graph(tmp_path / GRAPH_FILE)["nodes"][-1]["role"] == "error"


def test_no_traced_output_writes_nothing(tmp_path: Path) -> None:
    assert record_graph(tmp_path, [ok(0, "4")]) is None
    assert not (tmp_path / GRAPH_FILE).exists()


def test_outcomes_are_logged_as_items_events(tmp_path: Path) -> None:
    node = ops.strip(Parameter(" 4 ", name="p"))
    outcomes = [ok(0, node), Outcome(1, "5", Feedback("Wrong: expected 6", score=0.0))]
    assert item_outcomes(outcomes) == [
        {"index": 0, "score": 1.0, "output": "4", "feedback": "fine"},
        {"index": 1, "score": 0.0, "output": "5", "feedback": "Wrong: expected 6"},
    ]
    log_outcomes(tmp_path, "test", outcomes, joint_phase=0)
    log_outcomes(tmp_path, "test", outcomes[:1], joint_phase=1)
    events = read_events(tmp_path / "events.jsonl")
    assert [(e["event"], e["schema"], e["joint_phase"], len(e["items"])) for e in events] == [
        ("items", ITEM_OUTCOME_SCHEMA, 0, 2),
        ("items", ITEM_OUTCOME_SCHEMA, 1, 1),
    ]


def test_a_train_run_writes_its_workflow_graph(tmp_path: Path) -> None:
    train_run(tmp_path)
    graph = read_graph(tmp_path / GRAPH_FILE)
    roles = {n["name"]: n["role"] for n in graph["nodes"]}
    assert roles["instruction"] == "parameter" and roles["finish"] == "parameter"
    assert sum(r == "llm_call" for r in roles.values()) == 1
    assert graph["nodes"][0]["value"] == "Repeat the word."  # the program the first minibatch ran


def test_a_joint_run_writes_its_graph_and_the_test_outcomes_of_each_phase(tmp_path: Path) -> None:
    result = joint_run(tmp_path)
    assert (tmp_path / GRAPH_FILE).is_file()
    tests = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "items"]
    assert [e["joint_phase"] for e in tests] == [0, 1, 2]
    means = [sum(i["score"] for i in e["items"]) / len(e["items"]) for e in tests]
    assert means == pytest.approx([result.test_before, result.phases[0].test, result.phases[1].test])
