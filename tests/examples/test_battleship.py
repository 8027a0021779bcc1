"""examples/battleship.py: the environment's rules, the guide's feedback, and training with its scripted optimizer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from feedprop.errors import InvalidInputError


def test_boards_are_seeded_and_follow_the_rules(load_example: Callable[[str], ModuleType]) -> None:
    bs = load_example("battleship")
    rules = bs.Rules()
    a, b = bs.Board(7, rules), bs.Board(7, rules)
    assert a.ships == b.ships and a.ships != bs.Board(8, rules).ships
    cells = [cell for ship in a.ships for cell in ship]
    assert len(cells) == len(set(cells)) == sum(rules.ships)
    assert all(0 <= r < rules.size and 0 <= c < rules.size for r, c in cells)
    assert a.shoot(9, 0).startswith("invalid: (9, 0) is off")
    assert a.shoot("a", 1).startswith("invalid: a move is [row, col]")
    with pytest.raises(InvalidInputError):
        bs.Board(0, bs.Rules(size=2, ships=(3,)))


def test_guide_reports_hits_misses_and_invalid_moves(load_example: Callable[[str], ModuleType]) -> None:
    bs = load_example("battleship")
    rules = bs.Rules()
    board = bs.Board(3, rules)
    ship = sorted(board.ships[0])
    moves = [list(ship[0]), list(ship[0]), [99, 0], "nonsense"]
    feedback = bs.GameReplay(rules)(moves, 3)
    assert feedback.score == 1 / sum(rules.ships)
    assert "1 hits" in feedback.text and "3 invalid moves" in feedback.text and "already shot" in feedback.text


def test_training_the_act_code_raises_the_score_on_unseen_boards(
    load_example: Callable[[str], ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bs = load_example("battleship")
    argv = ["--mock", "--n-train", "2", "--n-val", "2", "--n-test", "3", "--steps", "1", "--run-dir", str(tmp_path)]
    result = bs.main(argv)
    assert result.test_after > result.test_before
    assert result.best_state["act"].strip() == bs.HUNT_AND_TARGET.strip()
    out = capsys.readouterr().out
    assert "ship cells found on unseen boards" in out and "optimizer recommended, pareto search" in out
    step = result.history[0]
    # act was diagnosed first; its rewrite beat its parent on the minibatch's boards, screened
    # without any model call (the policy makes none), then won on validation
    (candidate,) = step["candidates"]
    assert set(candidate["updates"]) == {"act"} and candidate["admitted"]
    assert candidate["minibatch"]["child"] > candidate["minibatch"]["parent"] and candidate["minibatch"]["calls"] == 0


def test_reflect_turns_to_reason_on_the_next_step(load_example: Callable[[str], ModuleType], tmp_path: Path) -> None:
    bs = load_example("battleship")
    argv = ["--mock", "--n-train", "4", "--n-val", "2", "--n-test", "1", "--steps", "2", "--run-dir", str(tmp_path)]
    second = bs.main(argv).history[1]
    # the scripted optimizer has nothing new for reason: each reply is refused with the reason why
    assert second["candidates"] == [] and not second["accepted"]
    refused = second["rejected_suggestions"]
    assert refused and {r["parameter"] for r in refused} == {"reason"}
    assert all("no Python function" in r["reason"] for r in refused)


def test_the_earlier_optimizer_is_still_reachable(
    load_example: Callable[[str], ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bs = load_example("battleship")
    argv = ["--mock", "--optimizer", "optoprime", "--n-train", "2", "--n-val", "2", "--n-test", "3"]
    result = bs.main([*argv, "--steps", "1", "--run-dir", str(tmp_path)])
    assert result.test_after > result.test_before
    assert result.best_state["act"].strip() == bs.HUNT_AND_TARGET.strip()
    assert "optimizer optoprime, greedy search" in capsys.readouterr().out
