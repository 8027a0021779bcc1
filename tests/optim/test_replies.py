"""Reply parsers: every shape a model answers in, and nothing but ReplyParseError on garbage."""

from __future__ import annotations

import json
import random
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedprop.errors import ConfigurationError, ReplyParseError
from feedprop.optim.replies import parse_json_reply, parse_reply, parse_xml_reply

GOOD = {"reasoning": "x is too small", "suggestion": {"x": 5, "prompt": "Be brief."}}


def test_well_formed_json() -> None:
    reply = parse_json_reply(json.dumps(GOOD))
    assert reply.reasoning == "x is too small"
    assert reply.suggestion == {"x": 5, "prompt": "Be brief."}


def test_fenced_json() -> None:
    text = "Here is my answer:\n```json\n" + json.dumps(GOOD, indent=2) + "\n```\nHope it helps."
    assert parse_json_reply(text).suggestion == GOOD["suggestion"]


def test_prose_wrapped_json() -> None:
    text = "Looking at the feedback, I would change x. " + json.dumps(GOOD) + " That should fix it."
    assert parse_json_reply(text).suggestion == GOOD["suggestion"]


def test_fence_without_language_and_braces_in_strings() -> None:
    code = 'def f(x):\n    return {"a": x}["a"] + 1'
    text = "```\n" + json.dumps({"reasoning": "off by one", "suggestion": {"__code0": code}}) + "\n```"
    assert parse_json_reply(text).suggestion == {"__code0": code}


def test_raw_newlines_and_trailing_commas() -> None:
    text = '{"reasoning": "fix",\n "suggestion": {"f": "def f(x):\n    return x + 1\n",},}'
    assert parse_json_reply(text).suggestion == {"f": "def f(x):\n    return x + 1\n"}


def test_python_literal_with_triple_quotes() -> None:
    text = (
        "{'reasoning': 'use a triple-quoted string', "
        "'suggestion': {'f': '''def f(x):\n    return {x}\n''', 'ok': True}}"
    )
    reply = parse_json_reply(text)
    assert reply.suggestion == {"f": "def f(x):\n    return {x}\n", "ok": True}


def test_json_booleans_and_null_in_python_style_reply() -> None:
    text = "{'reasoning': 'r', 'suggestion': {'flags': {'a': true, 'b': null}}}"
    assert parse_json_reply(text).suggestion == {"flags": {"a": True, "b": None}}


def test_flat_object_without_wrapper() -> None:
    reply = parse_json_reply('{"reasoning": "bigger", "x": 3, "y": -1.5}')
    assert reply.reasoning == "bigger"
    assert reply.suggestion == {"x": 3, "y": -1.5}


def test_list_of_name_value_pairs() -> None:
    reply = parse_json_reply('{"reasoning": "r", "suggestion": [{"name": "x", "value": 2}]}')
    assert reply.suggestion == {"x": 2}


def test_extra_fields_are_kept() -> None:
    reply = parse_json_reply('{"reasoning": "r", "suggestion": {"x": 1}, "summary": "keep x small"}')
    assert reply.extras == {"summary": "keep x small"}


def test_empty_suggestion_is_valid() -> None:
    reply = parse_json_reply('{"reasoning": "already right", "suggestion": {}}')
    assert reply.suggestion == {}
    assert reply.reasoning == "already right"


def test_second_fenced_block_when_first_is_not_a_reply() -> None:
    text = "```python\nprint('hi')\n```\n```json\n" + json.dumps(GOOD) + "\n```"
    assert parse_json_reply(text).suggestion == GOOD["suggestion"]


@pytest.mark.parametrize(
    "text",
    [
        '{"reasoning": "x is too small", "suggestion": {"x": 5',
        '```json\n{"reasoning": "x is too sm',
        '{"reasoning": "r", "suggestion": {"code": "def f():\n    return {1: 2}[1]',
        '{"reasoning": "r", "suggestion": {"cfg": {"a": 1}, "x":',
    ],
)
def test_truncated_json_is_a_typed_error_that_says_cut_off(text: str) -> None:
    with pytest.raises(ReplyParseError, match="cut off") as info:
        parse_json_reply(text)
    assert info.value.reply == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n",
        "I don't know.",
        "{{{{",
        "}}}}",
        "{not json at all}",
        "[1, 2, 3]",
        '{"reasoning": 5 +}',
        "\x00{\x00}",
    ],
)
def test_garbage_json_is_a_typed_error(text: str) -> None:
    with pytest.raises(ReplyParseError):
        parse_json_reply(text)


def test_error_messages_say_what_to_do() -> None:
    with pytest.raises(ReplyParseError, match="suggestion"):
        parse_json_reply("I would make x larger.")


def test_non_string_reply() -> None:
    with pytest.raises(ReplyParseError):
        parse_json_reply(None)  # type: ignore[arg-type]


def test_runaway_reply_is_refused() -> None:
    with pytest.raises(ReplyParseError, match="briefly"):
        parse_json_reply("{" * 300_000)


def test_deep_nesting_does_not_crash() -> None:
    text = '{"suggestion": ' + "[" * 5000 + "]" * 5000 + "}"
    with pytest.raises(ReplyParseError):
        parse_json_reply(text)


# --- XML ------------------------------------------------------------------------------------


def test_xml_attribute_form() -> None:
    text = (
        "<reasoning>The function forgets the +1.</reasoning>\n"
        '<suggestion name="__code0">\ndef f(x):\n    return x + 1\n</suggestion>\n'
        "<suggestion name='x'>3.5</suggestion>"
    )
    reply = parse_xml_reply(text)
    assert reply.reasoning == "The function forgets the +1."
    assert reply.suggestion == {"__code0": "def f(x):\n    return x + 1", "x": "3.5"}


def test_xml_nested_form_and_code_with_angle_brackets() -> None:
    text = "<suggestion><name>f</name><value>def f(a, b):\n    return a < b</value></suggestion>"
    assert parse_xml_reply(text).suggestion == {"f": "def f(a, b):\n    return a < b"}


def test_xml_no_change() -> None:
    assert parse_xml_reply("<reasoning>fine</reasoning>\n<no_change/>").suggestion == {}


def test_xml_truncated() -> None:
    with pytest.raises(ReplyParseError, match="cut off"):
        parse_xml_reply('<reasoning>r</reasoning><suggestion name="x">12')


@pytest.mark.parametrize("text", ["", "no tags", "<reasoning>only</reasoning>", "<suggestion>broken</suggestion>"])
def test_xml_garbage(text: str) -> None:
    with pytest.raises(ReplyParseError):
        parse_xml_reply(text)


def test_parse_reply_dispatch_and_bad_format() -> None:
    assert parse_reply('<suggestion name="x">1</suggestion>', "xml").suggestion == {"x": "1"}
    with pytest.raises(ConfigurationError, match="reply_format"):
        parse_reply("{}", "yaml")


# --- never anything but ReplyParseError -----------------------------------------------------

FRAGMENTS = [
    "{",
    "}",
    "[",
    "]",
    '"',
    "'",
    "'''",
    '"""',
    "\\",
    ",",
    ":",
    "\n",
    "```",
    "```json\n",
    "<suggestion",
    '<suggestion name="x">',
    "</suggestion>",
    "<reasoning>",
    "</reasoning>",
    "<no_change/>",
    "<name>",
    "</name>",
    "<value>",
    "</value>",
    '"suggestion"',
    '"reasoning"',
    "true",
    "null",
    "None",
    "-",
    "1e999",
    "NaN",
    "\x00",
    "\ud800",
    "é",
    "🙂",
    "x",
    "0",
    "-5",
    "**",
    "lambda: 0",
    "__import__('os')",
    "{'a': 1}",
    '{"a": [1, 2,]}',
]


def _check(text: str) -> None:
    for fmt in ("json", "xml"):
        try:
            reply = parse_reply(text, fmt)
        except ReplyParseError as e:
            assert isinstance(e.reply, str)
        else:
            assert isinstance(reply.suggestion, dict)
            assert isinstance(reply.reasoning, str)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=400))
def test_property_random_text(text: str) -> None:
    _check(text)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=8), max_size=40).map("".join))
def test_property_adversarial_fragments(text: str) -> None:
    _check(text)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    ),
    st.integers(min_value=0, max_value=400),
)
def test_property_truncated_real_replies(value: object, cut: int) -> None:
    text = json.dumps({"reasoning": "because", "suggestion": {"v": value}})
    _check(text[:cut])
    if cut >= len(text):
        assert parse_json_reply(text).suggestion == {"v": value}


def test_seeded_ten_thousand_generated_replies() -> None:
    rng = random.Random(20240607)
    alphabet = string.printable + "é🙂\x00"
    base = json.dumps(GOOD)
    for i in range(10_000):
        kind = i % 4
        if kind == 0:
            text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 30)))
        elif kind == 1:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        elif kind == 2:  # a valid reply with random damage
            chars = list(base)
            for _ in range(rng.randint(1, 5)):
                pos = rng.randrange(len(chars))
                chars[pos : pos + rng.randint(0, 3)] = rng.choice(FRAGMENTS)
            text = "".join(chars)
        else:  # a valid reply cut at a random point, in prose or a fence
            cut = base[: rng.randint(0, len(base))]
            text = rng.choice(["", "Answer: ", "```json\n"]) + cut
        _check(text)


def test_numbers_written_as_arithmetic() -> None:
    reply = parse_json_reply('```json\n{"reasoning": "add 0.45", "suggestion": {"x": 6.75 + 0.45, "y": -(2 * 3)}}\n```')
    assert reply.suggestion == {"x": pytest.approx(7.2), "y": -6}


@pytest.mark.parametrize(
    "text", ['{"suggestion": {"x": 1 / 0}}', '{"suggestion": {"x": 2 ** 3}}', '{"suggestion": {"x": y + 1}}']
)
def test_arithmetic_stays_safe(text: str) -> None:
    with pytest.raises(ReplyParseError):
        parse_json_reply(text)
