"""Reading a run directory back: train, Pareto and joint runs; what is missing is a note, not a failure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from run_toys import FIXED_CODE, HOSTILE, joint_run, train_run

from feedprop.errors import ConfigurationError
from feedprop.run_record import RunView, load_run


def changes(diff: str) -> list[str]:
    """The removed and added lines of a unified diff."""
    return [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("runs")
    train_run(base / "greedy")
    train_run(base / "pareto", search="pareto")
    joint_run(base / "joint")
    return {name: base / name for name in ("greedy", "pareto", "joint")}


def test_a_train_run_gives_scores_curve_steps_and_items(runs: dict[str, Path]) -> None:
    view = load_run(runs["greedy"])
    assert (view.kind, view.title) == ("train", "Training run: Shout with OptoPrime")
    assert (view.val_before, view.val_after, view.test_before, view.test_after) == (0.0, 1.0, 0.2, 0.8)
    assert [(p.x, p.val) for p in view.points] == [(0, 0.0), (1, 0.5), (2, 1.0), (3, 1.0)]
    assert [p.test for p in view.points] == [0.2, None, None, 0.8]
    tokens = [p.tokens for p in view.points]
    assert tokens[0] == 0 and tokens == sorted(tokens) and tokens[-1] == sum(s.tokens for s in view.steps) > 0
    assert [s.accepted for s in view.steps] == [True, True, False]
    assert [(x, y) for x, y, _ in view.candidate_points] == [(1, 0.5), (2, 1.0), (3, 0.5)]


def test_each_candidate_is_diffed_against_the_program_it_was_proposed_from(runs: dict[str, Path]) -> None:
    first, second, third = load_run(runs["greedy"]).steps
    assert first.candidates[0].status == "kept" and first.candidates[0].reason.startswith("accepted: val rose")
    assert changes(first.candidates[0].diffs["instruction"]) == ["-Repeat the word.", "+Answer in upper case."]
    code = changes(second.candidates[0].diffs["finish"])
    assert code == ["-    return reply.strip()", "+    return reply.strip() + '!'"]
    refused = third.candidates[0]
    assert refused.status == "not kept" and refused.reason == "validation 0.5000 against 1.0000 before the step"
    assert changes(refused.diffs["instruction"]) == ["-Answer in upper case.", "+Whisper the word."]  # the kept one
    assert third.reason == "rejected and reverted: val would drop 1.0000 -> 0.5000"


def test_a_pareto_run_diffs_against_each_steps_parent_program(runs: dict[str, Path]) -> None:
    steps = load_run(runs["pareto"]).steps
    assert [s.base for s in steps] == [f"program #{i} (the parent)" for i in (0, 1, 2)]
    kept = steps[1].candidates[0]
    assert kept.status == "kept" and "became the best program (#2)" in kept.reason
    assert kept.gate.startswith("minibatch: ")
    last = steps[2].candidates[0]
    assert last.status == "refused" and last.reason == "not screened: the parent solves all 2 minibatch items"
    assert changes(last.diffs["instruction"]) == ["-Answer in upper case.", "+Whisper the word."]


def test_a_beam_run_says_its_diffs_are_against_the_best_state(tmp_path: Path) -> None:
    train_run(tmp_path, beam_width=2)
    last = load_run(tmp_path).steps[-1]
    assert last.base.startswith("the best program before the step (beam search")
    assert [(c.status, c.reason) for c in last.candidates] == [
        ("kept", "kept in the beam (validation 0.5000)"),
        ("not kept", "validation 0.0000 against 1.0000 before the step"),
    ]


def test_test_items_before_and_after_with_flips_first(runs: dict[str, Path]) -> None:
    view = load_run(runs["greedy"])
    assert [(r.index, r.before, r.after, r.flip) for r in view.items] == [
        (0, 0.0, 1.0, "gained"),
        (1, 0.0, 1.0, "gained"),
        (2, 0.0, 1.0, "gained"),
        (3, 0.0, 1.0, "gained"),
        (4, 1.0, 0.0, "lost"),
    ]
    hostile = view.items[3]
    assert (hostile.output_before, hostile.output_after) == (HOSTILE, HOSTILE.upper() + "!")
    assert view.items[4].feedback_after == "Expected 'owl', got 'OWL!'."


def test_usage_by_phase_and_by_model(runs: dict[str, Path]) -> None:
    view = load_run(runs["greedy"])
    assert set(view.usage) == {"evaluation", "optimizer", "test", "total"}
    models = {m.model: m for m in view.models}
    assert list(models) == ["student-mock", "optimizer-mock"], "the busiest model first"
    assert models["optimizer-mock"].calls == view.usage["optimizer"]["calls"] == 3
    assert models["optimizer-mock"].phases == "optimizer 3"
    evaluation, test = int(view.usage["evaluation"]["calls"]), int(view.usage["test"]["calls"])
    assert models["student-mock"].calls == evaluation + test
    assert models["student-mock"].phases == f"evaluation {evaluation}, test {test}"
    for counter in ("prompt_tokens", "completion_tokens", "cache_hits"):
        assert sum(getattr(m, counter) for m in view.models) == view.usage["total"][counter], counter
    assert view.roles == [] and "models" not in view.notes


def test_a_joint_run_counts_usage_by_model_over_its_phases(runs: dict[str, Path]) -> None:
    view = load_run(runs["joint"])
    models = {m.model: m for m in view.models}
    assert set(models) == {"student-mock", "optimizer-mock"}
    assert models["optimizer-mock"].calls == view.usage["optimizer"]["calls"] == 4, "two prompt phases of two steps"
    assert models["student-mock"].calls == view.usage["evaluation"]["calls"] + view.usage["test"]["calls"]


def _drop_usage_by_model(run: Path) -> None:
    """Make ``run`` look like one written before usage was counted by model."""
    checkpoint = json.loads((run / "checkpoint.json").read_text(encoding="utf-8"))
    del checkpoint["usage"]["by_model"]
    (run / "checkpoint.json").write_text(json.dumps(checkpoint), encoding="utf-8")


def test_an_older_run_without_usage_by_model_shows_usage_by_role(runs: dict[str, Path], tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(runs["greedy"], old)
    _drop_usage_by_model(old)
    view = load_run(old)
    assert view.models == [] and "Usage by model was not recorded" in view.notes["models"]
    assert view.usage["optimizer"]["calls"] == 3
    roles = {r.role: r for r in view.roles}
    assert roles["workflow"].model == "student-mock" and roles["optimizer"].model == "OptoPrime"
    assert roles["optimizer"].calls == 3
    assert roles["workflow"].calls == view.usage["evaluation"]["calls"] + view.usage["test"]["calls"]


def test_the_graph_and_the_parameters_are_read(runs: dict[str, Path]) -> None:
    view = load_run(runs["greedy"])
    assert view.graph is not None and {n["role"] for n in view.graph["nodes"]} >= {"parameter", "llm_call", "op"}
    assert view.initial is not None and view.best is not None
    assert view.initial["instruction"] == "Repeat the word." and view.best["finish"].strip() == FIXED_CODE.strip()


def test_a_joint_run_gives_phases_steps_of_each_prompt_phase_and_items(runs: dict[str, Path]) -> None:
    view = load_run(runs["joint"])
    assert (view.kind, view.title) == ("joint", "Joint run: strategy 'p -> p'")
    assert [(p.label, p.kept) for p in view.phases] == [("1:p", True), ("2:p", True)]
    assert [(s.phase, s.step, s.x) for s in view.steps] == [("1:p", 1, 1), ("1:p", 2, 2), ("2:p", 1, 3), ("2:p", 2, 4)]
    assert view.marks == [(0, "1:p"), (2, "2:p")]
    assert [p.test for p in view.points if p.test is not None] == [0.2, 0.8, 0.8]
    assert view.items_caption == "test set: the start against the kept program (after phase 2)"
    assert [r.flip for r in view.items].count("gained") == 4
    assert view.graph is not None and view.initial is not None and view.initial["instruction"] == "Repeat the word."
    assert ("strategy", "p -> p") in view.facts


def test_what_an_older_run_did_not_record_becomes_a_note(runs: dict[str, Path], tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(runs["greedy"], old)
    (old / "graph.json").unlink()
    events = [json.loads(line) for line in (old / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    kept = [e for e in events if e["event"] != "items"]
    (old / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in kept), encoding="utf-8")
    view = load_run(old)
    assert view.graph is None and "no graph.json" in view.notes["graph"]
    assert view.items == [] and "feedprop-item/1" in view.notes["items"]
    assert view.test_after == 0.8  # from the checkpoint's scores


def test_a_run_with_only_its_log_is_read_from_the_log(runs: dict[str, Path], tmp_path: Path) -> None:
    only_log = tmp_path / "log"
    only_log.mkdir()
    shutil.copy(runs["pareto"] / "events.jsonl", only_log / "events.jsonl")
    view = load_run(only_log)
    assert [s.accepted for s in view.steps] == [True, True, False]
    assert view.steps[1].candidates[0].diffs  # the pool is rebuilt from the log's admitted candidates
    assert view.best is None and view.initial is not None


def test_a_damaged_file_is_a_note_and_a_damaged_joint_record_an_error(runs: dict[str, Path], tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(runs["greedy"], damaged)
    (damaged / "checkpoint.json").write_text("{torn", encoding="utf-8")
    view = load_run(damaged)
    assert "checkpoint.json could not be read" in view.notes["files"] and len(view.steps) == 3
    joint = tmp_path / "joint"
    joint.mkdir()
    (joint / "joint.json").write_text("[]", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="is not a joint run's record"):
        load_run(joint)


@pytest.mark.parametrize("make", ["missing", "file", "empty"])
def test_a_path_that_holds_no_run_is_a_configuration_error(tmp_path: Path, make: str) -> None:
    path = tmp_path / "x"
    if make == "file":
        path.write_text("", encoding="utf-8")
    elif make == "empty":
        path.mkdir()
    message = {"missing": "does not exist", "file": "is a file", "empty": "is not a feedprop run directory"}[make]
    with pytest.raises(ConfigurationError, match=message):
        load_run(path)


def test_an_empty_view_is_valid() -> None:
    assert RunView(Path("."), "train", "t").steps == []
