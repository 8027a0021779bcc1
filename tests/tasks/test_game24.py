"""Game of 24: the ToT test split and a guide that parses, never evaluates, the answer text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from feedprop.errors import InvalidInputError
from feedprop.tasks import Game24, load_game24, solve24


def test_test_split_is_ranks_901_to_1000_and_train_val_are_disjoint() -> None:
    task = load_game24()
    assert [e.meta["rank"] for e in task.test] == list(range(901, 1001))
    assert task.test[0].input == "4 5 6 10"
    assert (len(task.train), len(task.val)) == (50, 50)
    ranks = [e.meta["rank"] for e in (*task.train, *task.val)]
    assert len(set(ranks)) == 100 and not set(ranks) & set(range(901, 1001))
    assert [e.input for e in load_game24().train] == [e.input for e in task.train]  # deterministic
    with pytest.raises(InvalidInputError):
        load_game24(train_size=2000)


@pytest.mark.parametrize(
    "answer",
    [
        "(10 - 6) * 5 + 4",
        "Answer: (10 - 6) * 5 + 4 = 24",
        "Steps:\n10 - 6 = 4 (left: 4 4 5)\n4 * 5 = 20 (left: 4 20)\nAnswer: (10 − 6) × 5 + 4 = 24.",
        "**4 + 5 * (10 - 6)** = 24",
        "24 = 4 + (10 - 6) * 5",
    ],
)
def test_known_solutions_score_one(answer: str) -> None:
    fb = Game24()(answer, "4 5 6 10")
    assert fb.score == 1.0, fb.text
    assert fb.text.startswith("Correct:")


def test_exact_fractions() -> None:
    assert Game24()("8 / (3 - 8 / 3)", "3 3 8 8").score == 1.0


@pytest.mark.parametrize(
    ("answer", "text"),
    [
        ("(10 - 4) * (6 - 5) * 4 = 24", "uses 4 4 5 6 10; it must use 4 5 6 10, each exactly once"),
        ("10 + 6 + 5 + 4", "= 25, not 24"),
        ("4 * 6 * (10 - 5 * 2)", "uses 2 4 5 6 10"),
        ("4 / (6 - 6) + 5 + 10", "uses 4 5 6 6 10"),
        ("(5 - 5) ...", "uses 5 5"),
        ("I give up.", "no arithmetic expression found"),
        ("10 ** 6 - 5 - 4", "may use only numbers"),
        ("-4 + 10 * 6 / 5 + 16", "may use only numbers"),
    ],
)
def test_wrong_answers_say_why(answer: str, text: str) -> None:
    fb = Game24()(answer, "4 5 6 10")
    assert fb.score == 0.0
    assert text in fb.text, fb.text


def test_division_by_zero_is_feedback() -> None:
    fb = Game24()("4 / (5 - 5) + 6", "4 5 5 6")
    assert (fb.score, fb.text) == (0.0, "Wrong: 4 / (5 - 5) + 6 divides by zero.")


def test_answer_text_is_never_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    attack = f"__import__('os').system('touch {marker}') or 4 + 5 + 6 + 10"
    fb = Game24()(attack, "4 5 6 10")
    assert fb.score == 0.0 and not marker.exists()


WEIRD: list[Any] = [None, "", 24, b"24", "(" * 100_000, "9" * 10_000 + " + 1", "1/" * 50_000 + "1", [4, 5, 6, 10]]


def test_weird_outputs_never_raise() -> None:
    for output in WEIRD:
        fb = Game24()(output, "4 5 6 10")
        assert fb.score == 0.0 and fb.text, repr(output)[:50]


def test_bad_target_is_a_data_error() -> None:
    with pytest.raises(InvalidInputError, match="four numbers"):
        Game24()("1 + 2", "1 2 3")


def test_solver_finds_a_checked_solution_for_every_test_puzzle() -> None:
    task = load_game24()
    for example in task.test:
        solution = solve24(example.input)
        assert solution is not None
        assert task.guide(solution, example.target).score == 1.0
    assert solve24("1 1 1 1") is None
