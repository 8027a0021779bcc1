"""Per-kind validation of suggested values, and constraint checks."""

from __future__ import annotations

import pytest

from feedprop.errors import SuggestionError
from feedprop.optim.validate import (
    check_constraint,
    copied_passage,
    json_shape_problem,
    repair_string_newlines,
    validate_value,
)

CODE = "def add(a, b=1, *, scale=2):\n    return a + b\n"


# --- text -----------------------------------------------------------------------------------


def test_text_accepts_strings_and_plain_numbers() -> None:
    assert validate_value("text", "old", "new") == "new"
    assert validate_value("text", "old", 42) == "42"


@pytest.mark.parametrize("bad", [{"a": 1}, ["x"], None, True])
def test_text_rejects_structures(bad: object) -> None:
    with pytest.raises(SuggestionError, match="text"):
        validate_value("text", "old", bad, name="prompt")


def test_text_rejects_empty_replacement() -> None:
    with pytest.raises(SuggestionError, match="empty") as info:
        validate_value("text", "Answer.", "  ", name="prompt")
    assert info.value.parameter == "prompt"


# --- code -----------------------------------------------------------------------------------


def test_code_accepts_same_signature_and_strips_fences() -> None:
    new = "```python\ndef add(a, b=1, *, scale=2):\n    return (a + b) * scale\n```"
    assert validate_value("code", CODE, new) == "def add(a, b=1, *, scale=2):\n    return (a + b) * scale"


def test_code_accepts_changed_defaults_and_helpers() -> None:
    new = "def helper(x):\n    return x\n\ndef add(a, b=5, *, scale=3):\n    return helper(a) + b"
    assert "helper" in validate_value("code", CODE, new)


def test_code_dedents() -> None:
    assert validate_value("code", CODE, "    def add(a, b=1, *, scale=2):\n        return 0").startswith("def add")


@pytest.mark.parametrize(
    ("new", "match"),
    [
        ("def add(a, b=1, *, scale=2):\n  return a +", "does not parse"),
        ("def add(a, c, *, scale=2):\n    return a", "signature changed"),
        ("def add(a, b=1):\n    return a", "signature changed"),
        ("async def add(a, b=1, *, scale=2):\n    return a", "signature changed"),
        ("def plus(a, b=1, *, scale=2):\n    return a", "must define the function 'add'"),
        ("return a + b", "must define"),
        ("def add(a, b=1, *, scale=2):\n    return '\x00'", "parse"),
    ],
)
def test_code_rejects(new: str, match: str) -> None:
    with pytest.raises(SuggestionError, match=match):
        validate_value("code", CODE, new)


def test_code_rejects_non_string() -> None:
    with pytest.raises(SuggestionError, match="string"):
        validate_value("code", CODE, {"code": CODE})


def test_code_with_newlines_unescaped_inside_string_literals_is_repaired() -> None:
    # What arrives when a model writes "\n" instead of "\\n" inside a code value in JSON.
    current = "def extract(response: str) -> str:\n    return response"
    broken = (
        "def extract(response: str) -> str:\n"
        '    lines = response.strip().split("\n")\n'
        "    joined = '\n\n'.join(lines)\n"
        "    return lines[-1]"
    )
    repaired = validate_value("code", current, broken)
    namespace: dict[str, object] = {}
    exec(repaired, namespace)
    extract = namespace["extract"]
    assert callable(extract)
    assert extract("a\nb\nc") == "c"
    assert "join" in repaired and repaired.count("\n") == 3


def test_string_newline_repair_leaves_other_faults_alone() -> None:
    assert repair_string_newlines("def f(:\n    pass\n") is None
    assert repair_string_newlines('x = """open\n') is None  # a triple-quoted string is not this fault
    assert repair_string_newlines("x = 1\n") == "x = 1\n"
    with pytest.raises(SuggestionError, match="does not parse"):
        validate_value("code", CODE, 'def add(a, b=1, *, scale=2):\n    return "a\n')


def test_code_replacing_broken_code_needs_only_to_parse() -> None:
    assert validate_value("code", "def f(:", "def f(x):\n    return x") == "def f(x):\n    return x"


# --- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "expected"), [("2.5", 2.5), (" -3 ", -3.0), (7, 7.0), ("1,000.5", 1000.5)])
def test_number_parses_for_float(given: object, expected: float) -> None:
    value = validate_value("number", 1.0, given)
    assert value == expected and isinstance(value, float)


def test_integer_parameter_stays_integer() -> None:
    assert validate_value("number", 3, "4.0") == 4
    assert isinstance(validate_value("number", 3, 4.0), int)
    with pytest.raises(SuggestionError, match="integer"):
        validate_value("number", 3, 4.5)


@pytest.mark.parametrize("bad", ["four", "", "nan", "inf", True, None, [1], "1e999"])
def test_number_rejects(bad: object) -> None:
    with pytest.raises(SuggestionError):
        validate_value("number", 1.0, bad)


def test_number_bounds() -> None:
    assert validate_value("number", 0.5, 1.0, bounds=(0.0, 1.0)) == 1.0
    with pytest.raises(SuggestionError, match=r"outside the bounds \[0, 1\]"):
        validate_value("number", 0.5, 1.5, bounds=(0.0, 1.0))
    with pytest.raises(SuggestionError, match="outside"):
        validate_value("number", 0.5, -0.1, bounds=(0.0, None))


# --- json -----------------------------------------------------------------------------------


def test_json_same_shape_from_object_or_string() -> None:
    old = {"k": 3, "tags": ["a"], "opts": {"t": 0.5, "stop": None}}
    new = {"k": 5, "tags": ["b", "c"], "opts": {"t": 0.1, "stop": "END"}}
    assert validate_value("json", old, new) == new
    assert validate_value("json", old, '{"k": 5, "tags": [], "opts": {"t": 1, "stop": null}}')["k"] == 5


@pytest.mark.parametrize(
    ("new", "match"),
    [
        ({"k": 5}, "missing keys"),
        ({"k": 5, "tags": [], "opts": {"t": 1, "stop": None}, "extra": 1}, "unexpected keys"),
        ({"k": "5", "tags": [], "opts": {"t": 1, "stop": None}}, r"\$\.k should be a number, not a string"),
        ({"k": 5, "tags": [1], "opts": {"t": 1, "stop": None}}, r"\$\.tags\[0\]"),
        ("{not json", "not valid JSON"),
        ([1, 2], "object"),
    ],
)
def test_json_rejects(new: object, match: str) -> None:
    old = {"k": 3, "tags": ["a"], "opts": {"t": 0.5, "stop": None}}
    with pytest.raises(SuggestionError, match=match):
        validate_value("json", old, new)


def test_json_shape_problem_directly() -> None:
    assert json_shape_problem([{"q": "a", "a": "b"}], [{"q": "c", "a": "d"}, {"q": "e", "a": "f"}]) is None
    assert json_shape_problem(True, 1) == "$ should be a boolean, not a number"


def test_unknown_kind() -> None:
    with pytest.raises(SuggestionError, match="unknown parameter kind"):
        validate_value("image", None, 1)


# --- constraints ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("constraint", "value", "ok"),
    [
        ("at most 5 words", "one two three", True),
        ("at most 5 words", "one two three four five six", False),
        ("no more than 20 characters", "x" * 20, True),
        ("fewer than 20 characters", "x" * 20, False),
        ("at least 2 lines", "a\nb", True),
        ("at least 2 lines", "a", False),
        ("must contain 'Answer:'", "Give the Answer: 4", True),
        ("must contain 'Answer:'", "Give the answer", False),
        ('must not mention "sorry"', "sorry, no", False),
        ("must start with 'You are'", "You are a tutor.", True),
        ("must end with '?'", "Is it", False),
        ("positive", 0.0, False),
        ("non-negative", 0.0, True),
        ("must be an integer", 2.5, False),
        ("between 0 and 1", 0.3, True),
        ("between 0 and 1", 1.3, False),
        ("value >= 10", 9.0, False),
        ("value <= 10", 9.0, True),
        ("be polite and helpful", "anything", True),  # not checkable: advice only
        ("at most 3 words", 123.0, True),  # a length rule does not apply to numbers
    ],
)
def test_text_constraints(constraint: str, value: object, ok: bool) -> None:
    assert (check_constraint(constraint, value) is None) is ok


def test_callable_constraints() -> None:
    assert check_constraint(lambda v: v > 0, 1) is None
    assert check_constraint(lambda v: v > 0, -1) is not None
    assert check_constraint(lambda v: "too long" if len(v) > 3 else None, "abcd") == "too long"
    assert "ZeroDivisionError" in (check_constraint(lambda v: 1 / 0, 1) or "")


def test_constraint_violation_is_a_suggestion_error() -> None:
    with pytest.raises(SuggestionError, match="at most 2 words"):
        validate_value("text", "a", "one two three", constraint="at most 2 words")


def test_number_written_as_arithmetic() -> None:
    assert validate_value("number", 1.0, "6.75 + 0.45") == pytest.approx(7.2)
    assert validate_value("number", 1, "3 * 4") == 12
    for bad in ("2 ** 1000", "__import__('os')", "x + 1", "1 / 0"):
        with pytest.raises(SuggestionError, match="not a number"):
            validate_value("number", 1.0, bad)


def test_demos_values_are_lists_of_input_output_pairs() -> None:
    demos = [{"input": "q", "output": "a"}]
    assert validate_value("demos", [], demos) == demos
    assert validate_value("demos", [], '```json\n[{"input": "q", "output": "a"}]\n```') == demos
    for bad, match in (("not json", "not valid JSON"), ([{"input": "q"}], "exactly the keys"), ({}, "a list of")):
        with pytest.raises(SuggestionError, match=match) as info:
            validate_value("demos", [], bad, name="shots")
        assert info.value.parameter == "shots"


def test_copied_passage_finds_the_longest_run_copied_from_a_source() -> None:
    question = "I have a chicken, a frog, a mouse, a cat, two pigs, and two rabbits. How many animals do I have?"
    suggested = "Answer the question. I have a chicken, a frog, a mouse, a cat. The total number is 18."
    assert copied_passage(suggested, [question]) == "I have a chicken a frog a mouse a cat"


def test_copied_passage_ignores_short_overlaps_and_what_the_current_value_holds() -> None:
    question = "How many musical instruments do I have in my room today?"
    assert copied_passage("Count how many musical instruments there are.", [question]) is None
    current = "Answer how many musical instruments do I have."
    assert copied_passage(current + " Be brief.", [question], current=current) is None
    assert copied_passage("x " * 3, [question]) is None


def test_copied_passage_counts_only_one_sources_wording_when_asked() -> None:
    template = "If you follow these instructions, do you return to the starting point?"
    runs = [[f"{template} Take 6 steps left. Take 6 steps right."], [f"{template} Take 2 steps. Turn around."]]
    rule = "Answer the question: if you follow these instructions, do you return to the starting point"
    assert copied_passage(rule, runs, one_source_only=True) is None
    assert copied_passage(rule, runs) is not None  # without the option, any source's wording counts
    pasted = "Track your position. Take 6 steps left. Take 6 steps right."
    assert copied_passage(pasted, runs, one_source_only=True) == "Take 6 steps left Take 6 steps right"
    # a passage found twice in one source's texts is still that one source's
    assert copied_passage(rule, [[template, template]], one_source_only=True) is not None


def test_copied_passage_is_case_and_punctuation_blind() -> None:
    assert copied_passage("THE TOTAL NUMBER OF FRUITS IS 18", ["the total number of fruits is 18."]) is not None
    assert copied_passage("the total number of fruits is", ["the total number of fruits is 18."], min_words=7) is None
