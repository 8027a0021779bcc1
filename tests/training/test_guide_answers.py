"""Reading answers out of free text: final answers, numbers, options and code blocks."""

from __future__ import annotations

import pytest

from feedprop.training.answers import extract_code, final_answer, last_choice, last_number


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("Let's think. 3 + 4 = 7. So the answer is 7.", "7"),
        ("So the answer is (B).", "(B)"),
        ("the answer is: } ] >.\nThanks!", "} ] >"),
        ("Final answer: valid", "valid"),
        ("no marker at all  ", "no marker at all"),
        ("The answer is **Yes**.", "Yes"),
    ],
)
def test_final_answer(text: str, answer: str) -> None:
    assert final_answer(text) == answer


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("I have 3 apples and 4 pears, so 7.", 7.0),
        ("It costs $1,250.50.", 1250.5),
        ("The result is -35", -35.0),
        ("10-3", 3.0),  # subtraction, not a negative number
        ("values 1,2,3", 3.0),  # a list, not the number 123
        ("x = .5", 0.5),
        ("2.5e3 units", 2500.0),
        ("−12 (unicode minus)", -12.0),
        ("no digits here", None),
    ],
)
def test_last_number(text: str, number: float | None) -> None:
    assert last_number(text) == number


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("(A) looks fine but the answer is (C).", "C"),
        ("so the answer is (b)", "B"),
        ("B", "B"),
        ("The answer is D.", "D"),
        ("I am not sure.", None),
    ],
)
def test_last_choice(text: str, letter: str | None) -> None:
    assert last_choice(text) == letter


def test_extract_code_prefers_the_block_defining_the_entry_point() -> None:
    reply = "Try:\n```python\nimport math\n```\nthen\n```python\ndef area(r):\n    return math.pi * r * r\n```\n"
    assert extract_code(reply, "area").startswith("def area(r):")
    assert extract_code(reply) == "import math\n"
    assert extract_code("def f():\n    return 1\n") == "def f():\n    return 1\n"
    assert extract_code("```python\ndef f():\n    return 1\n") == "def f():\n    return 1\n"  # cut-off reply
