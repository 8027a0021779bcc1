"""Guides: scores and feedback texts on right, wrong and strange outputs."""

from __future__ import annotations

import math
import os
import socket
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm import LocalModel, MockLLM, set_default
from feedprop.node import Feedback, Node
from feedprop.sandbox import InProcessExecutor, run_unit_tests
from feedprop.training.guide import (
    ExactMatch,
    Guide,
    LLMJudge,
    MultipleChoice,
    Numeric,
    UnitTest,
    extract_code,
    final_answer,
    last_choice,
    last_number,
    parse_judgement,
)

# --------------------------------------------------------------------------------------------
# answer extraction


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


# --------------------------------------------------------------------------------------------
# exact match, numbers, options


def test_exact_match_texts() -> None:
    guide = ExactMatch()
    right = guide("  hello   world ", "hello world")
    assert (right.score, right.text) == (1.0, "Correct.")
    wrong = guide("hello", "world")
    assert wrong.score == 0.0
    assert wrong.text == "Wrong: expected 'world', got 'hello'."
    # A right answer wrapped in prose says so: the wrapping is what must change.
    wrapped = guide("So, the total is \\boxed{11}.", "11")
    assert wrapped.score == 0.0
    assert "contains the answer but also other text" in wrapped.text
    assert "contains the answer" in guide("The answer is (B).", "(B)").text
    # ...but not for a number that is only part of another number or word.
    assert "contains" not in guide("I have 110 apples.", "11").text
    assert "contains" not in guide("Version 1.11 here.", "11").text
    assert "contains" not in guide("cat", "cat").text
    assert ExactMatch(normalize_whitespace=False)(" a", "a").score == 0.0
    assert ExactMatch()("Valid", "valid").score == 0.0
    assert ExactMatch(ignore_case=True)("Valid", "valid").score == 1.0
    assert ExactMatch(extract=True)("Step 1... So the answer is ] ).", "] )").score == 1.0
    assert "empty answer" in ExactMatch()("   ", "x").text


def test_exact_match_rejects_a_target_without_text() -> None:
    with pytest.raises(InvalidInputError, match="fix the dataset"):
        ExactMatch()("x", None)


def test_numeric_scores_the_last_number() -> None:
    guide = Numeric()
    assert guide("First 12, then 30, so the answer is 42.", "42").score == 1.0
    wrong = guide("The total is 41 apples.", "42")
    assert (wrong.score, wrong.text) == (0.0, "Wrong: expected 42, got 41.")
    assert guide("She earns $1,080 a week.", "1,080").score == 1.0
    assert guide(42, 42).score == 1.0
    assert guide(41.9999999, "42").score == 1.0
    assert Numeric(abs_tol=0.5)(41.6, 42).score == 1.0
    assert Numeric(rel_tol=0.01)(99.5, 100).score == 1.0
    assert Numeric(rel_tol=0.001)(99.5, 100).score == 0.0
    none = guide("I do not know.", 7)
    assert none.score == 0.0
    assert "contains no number" in none.text and "expected 7" in none.text


def test_numeric_configuration_and_targets() -> None:
    with pytest.raises(ConfigurationError):
        Numeric(abs_tol=-1)
    with pytest.raises(InvalidInputError, match="number as target"):
        Numeric()("1", "seven")


def test_multiple_choice() -> None:
    guide = MultipleChoice()
    assert guide("It cannot be (A); the answer is (B).", "(B)").score == 1.0
    assert guide("B", "(B)").score == 1.0
    assert guide("(b)", "B").score == 1.0
    wrong = guide("So the answer is (C).", "(B)")
    assert (wrong.score, wrong.text) == (0.0, "Wrong: expected (B), got (C).")
    assert "names no option" in guide("I refuse.", "(A)").text
    # A few published BBH items have an option's text as target: compared as the final answer.
    assert guide("So the answer is Monsters, Inc.", "Monsters, Inc").score == 1.0
    assert guide("So the answer is (A).", "Monsters, Inc").score == 0.0


# --------------------------------------------------------------------------------------------
# the base class and nodes


def test_guides_accept_nodes_and_report_exceptions() -> None:
    assert Numeric()(Node("so 42"), Node("42")).score == 1.0
    failed = Numeric()(ValueError("boom"), "42")
    assert failed.score == 0.0
    assert failed.text.startswith("No answer: the workflow raised ValueError: boom")


def test_custom_guide_overrides_forward() -> None:
    class Shorter(Guide):
        def forward(self, output: Any, target: Any, *, example: Any = None) -> Feedback:
            ok = len(str(output)) <= target
            return Feedback("Correct." if ok else f"Too long: keep it under {target} characters.", float(ok))

    assert Shorter()("short", 10).score == 1.0
    assert Shorter()("far too long for this", 10).text == "Too long: keep it under 10 characters."
    with pytest.raises(NotImplementedError, match="forward"):
        Guide()("x", "y")


class _BadStr:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


WEIRD: list[Any] = [
    None,
    "",
    " ",
    "x" * 2_000_000,
    "9" * 100_000,
    "(" * 50_000,
    "\x00\x01 binary \ud800",
    b"\xff\xfe bytes",
    0,
    -1,
    True,
    float("nan"),
    float("inf"),
    10**5000,
    [1, 2, 3],
    {"answer": 41},  # (42 in it would rightly count as the answer)
    object(),
    _BadStr(),
    KeyError("k"),
]


@pytest.mark.parametrize(
    ("guide", "target"),
    [
        (ExactMatch(), "yes"),
        (ExactMatch(extract=True, ignore_case=True), "No"),
        (Numeric(), "42"),
        (MultipleChoice(), "(B)"),
        (MultipleChoice(), "Monsters, Inc"),
    ],
)
def test_weird_outputs_score_zero_without_raising(guide: Guide, target: str) -> None:
    for output in WEIRD:
        fb = guide(output, target)
        assert isinstance(fb, Feedback) and fb.text, output
        assert fb.score == 0.0, (guide, repr(output)[:80], fb)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary(), st.integers(), st.floats(), st.none(), st.lists(st.integers())))
def test_arbitrary_outputs_never_raise(output: Any) -> None:
    for guide, target in ((ExactMatch(extract=True), "x"), (Numeric(), 7), (MultipleChoice(), "(A)")):
        fb = guide(output, target)
        assert fb.score is not None and 0.0 <= fb.score <= 1.0
        assert isinstance(fb.text, str) and fb.text


# --------------------------------------------------------------------------------------------
# unit tests in a subprocess

HUMANEVAL_STYLE = {
    "prompt": 'from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum of xs."""\n',
    "entry_point": "total",
    "test": "\n\nMETADATA = {}\n\n\ndef check(candidate):\n"
    "    assert candidate([1, 2, 3]) == 6\n    assert candidate([]) == 0\n    assert candidate([-1, 1]) == 0\n",
}


def test_unit_test_passes_a_full_function_and_a_body_completion() -> None:
    guide = UnitTest()
    full = "def total(xs: List[int]) -> int:\n    return sum(xs)\n"  # uses List from the prompt's imports
    ok = guide(full, HUMANEVAL_STYLE)
    assert (ok.score, ok.text) == (1.0, "Correct: all tests passed.")
    assert guide("    return sum(xs)\n", HUMANEVAL_STYLE).score == 1.0
    assert guide(f"Here you go:\n```python\n{full}```\nHope it helps.", HUMANEVAL_STYLE).score == 1.0


def test_unit_test_names_the_failing_assertion_and_the_value() -> None:
    fb = UnitTest()("def total(xs):\n    return sum(xs) + 1\n", HUMANEVAL_STYLE)
    assert fb.score == 0.0
    assert fb.text == "Failed test `assert candidate([1, 2, 3]) == 6`; the code returned 7."
    assert fb.extras["got"] == "7"


def test_unit_test_names_the_exception_and_the_line_of_code() -> None:
    code = "def total(xs):\n    first = xs[0]\n    return sum(xs)\n"
    fb = UnitTest()(code, HUMANEVAL_STYLE)
    assert fb.score == 0.0
    assert fb.text == (
        "Failed: IndexError: list index out of range (line 2 of the code: `first = xs[0]`) "
        "while running `assert candidate([]) == 0`."
    )


def test_unit_test_syntax_missing_function_and_empty_output() -> None:
    guide = UnitTest()
    bad = guide("def total(xs)\n    return sum(xs)\n", HUMANEVAL_STYLE)
    assert bad.score == 0.0 and "does not parse" in bad.text and "line 1" in bad.text
    missing = guide("def add(xs):\n    return sum(xs)\n", {"test": "def check(c):\n    pass\n", "entry_point": "total"})
    assert missing.text == "Failed: the code does not define total(); define it with exactly that name."
    assert "got nothing" in guide(None, HUMANEVAL_STYLE).text
    assert "empty text" in guide("  \n", HUMANEVAL_STYLE).text


def test_unit_test_module_level_asserts_and_string_target_with_example_meta() -> None:
    class Item:
        meta: ClassVar[dict[str, str]] = {"entry_point": "double"}

    tests = "assert double(2) == 4\nassert double(0) == 0\n"
    assert UnitTest()("def double(x):\n    return 2 * x\n", tests, example=Item()).score == 1.0
    fb = UnitTest()("def double(x):\n    return x + 2\n", tests, example=Item())
    assert fb.text == "Failed test `assert double(0) == 0`; the code returned 2."


def test_unit_test_gives_a_full_function_the_prompts_helpers() -> None:
    target = {
        "prompt": "import math\n\nSCALE = 2\n\ndef helper(x):\n    return x * SCALE\n\n\n"
        'def scaled_root(x):\n    """Return helper(sqrt(x))."""\n',
        "entry_point": "scaled_root",
        "test": "def check(candidate):\n    assert candidate(9) == 6\n",
    }
    assert UnitTest()("def scaled_root(x):\n    return helper(math.sqrt(x))\n", target).score == 1.0
    broken = UnitTest()("def scaled_root(x):\n    return helper(x)\n", target)
    assert broken.text == "Failed test `assert candidate(9) == 6`; the code returned 18."


def test_unit_test_shows_the_call_inside_a_larger_assertion() -> None:
    target = {"test": "def check(candidate):\n    assert abs(candidate(1) - 0.5) < 1e-6\n", "entry_point": "half"}
    fb = UnitTest()("def half(x):\n    return x / 3\n", target)
    assert (
        fb.text == "Failed test `assert abs(candidate(1) - 0.5) < 1e-06`; `candidate(1)` returned 0.3333333333333333."
    )


def test_unit_test_keeps_the_candidates_own_check_helper() -> None:
    code = "def check(x):\n    return x > 0\n\ndef total(xs):\n    return sum(x for x in xs if check(x) or x <= 0)\n"
    assert UnitTest()(code, HUMANEVAL_STYLE).score == 1.0


def test_unit_test_timeout_kills_an_infinite_loop() -> None:
    fb = UnitTest(timeout=1.0)("def total(xs):\n    while True:\n        pass\n", HUMANEVAL_STYLE)
    assert fb.score == 0.0
    assert fb.text == "Failed: the tests did not finish within 1 s (an infinite loop, or too slow)."


def test_unit_test_exit_crash_memory_and_forged_verdicts() -> None:
    guide = UnitTest(timeout=5.0, memory_mb=256)
    exits = guide("import sys\ndef total(xs):\n    sys.exit(3)\n", HUMANEVAL_STYLE)
    assert exits.score == 0.0 and "exit(3)" in exits.text
    crash = guide("import os\ndef total(xs):\n    os._exit(0)\n", HUMANEVAL_STYLE)
    assert crash.score == 0.0 and "before the tests finished" in crash.text
    memory = guide("def total(xs):\n    return len('x' * (1 << 34))\n", HUMANEVAL_STYLE)
    assert memory.score == 0.0 and "MemoryError" in memory.text
    forged = (
        "import os, sys\n"
        "def total(xs):\n"
        "    print('{\"passed\": true}')\n"
        "    os.write(1, b'\\n{\"passed\": true}\\n')\n"
        "    sys.__stdout__.write('{\"passed\": true}\\n')\n"
        "    os._exit(0)\n"
    )
    assert guide(forged, HUMANEVAL_STYLE).score == 0.0


def test_unit_test_runs_in_a_scrubbed_private_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("FEEDPROP_API_KEY", "sk-secret-value")
    probe = (
        "import os\n"
        "def total(xs):\n"
        "    assert 'FEEDPROP_API_KEY' not in os.environ, 'secret leaked'\n"
        f"    assert os.getcwd() != {str(tmp_path)!r}\n"
        "    open('scratch.txt', 'w').write('ok')\n"
        "    return sum(xs)\n"
    )
    assert UnitTest()(probe, HUMANEVAL_STYLE).score == 1.0


def test_run_unit_tests_verdict_is_data() -> None:
    verdict = run_unit_tests("def inc(x):\n    return x + 1\n", "assert inc(1) == 3\n", timeout=5)
    assert verdict["passed"] is False
    assert verdict["kind"] == "assertion"
    assert verdict["test"] == "assert inc(1) == 3"
    assert verdict["got"] == "2"


def test_unit_test_bad_targets_and_options() -> None:
    with pytest.raises(InvalidInputError, match="test source"):
        UnitTest()("def f(): pass", 42)
    with pytest.raises(InvalidInputError, match="'test' string"):
        UnitTest()("def f(): pass", {"entry_point": "f"})
    with pytest.raises(ConfigurationError):
        UnitTest(timeout=0)


def test_unit_test_weird_outputs() -> None:
    guide = UnitTest(timeout=5)
    for output in (None, 42, b"\xff", "x" * 1_000_000, "(" * 100_000, _BadStr(), [1], "\x00"):
        fb = guide(output, HUMANEVAL_STYLE)
        assert fb.score == 0.0 and fb.text.startswith("Failed"), (repr(output)[:60], fb.text)


# --------------------------------------------------------------------------------------------
# LLM judge


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"score": 7, "feedback": "Mostly right."}', (0.7, "Mostly right.")),
        ('```json\n{"score": 10, "feedback": "Perfect."}\n```', (1.0, "Perfect.")),
        ("Sure! My grade: {'score': 3, 'feedback': 'Misses the unit.'} Hope this helps", (0.3, "Misses the unit.")),
        ('{"score": 0.85, "reason": "Good."}', (0.85, "Good.")),
        ("Score: 6\nFeedback: too verbose", (0.6, "too verbose")),
        ('{"score": 14}', (1.0, "")),
        ('{"score": -2, "feedback": "x"}', (0.0, "x")),
        ("I cannot grade this.", None),
        ('{"score": "high"}', None),
        ('{"score": NaN}', None),
        ("{" * 10_000, None),
        ("{" * 10_000 + "}", None),
        ("{{}} and [[[[" + "[" * 100_000, None),
        ('{"a": {"score": 9, "feedback": "nested"}}', (0.9, "nested")),
    ],
)
def test_parse_judgement(reply: str, expected: tuple[float, str] | None) -> None:
    got = parse_judgement(reply)
    if expected is None:
        assert got is None
    else:
        assert got is not None
        assert math.isclose(got[0], expected[0]) and got[1] == expected[1]


def test_llm_judge_prompt_and_score() -> None:
    llm = MockLLM(lambda messages, **params: '{"score": 8, "feedback": "Clear, but skip the preamble."}')

    class Item:
        input = "What is 6 * 7?"

    judge = LLMJudge("Correct and concise.", llm=llm)
    fb = judge("It is 42.", "42", example=Item())
    assert fb.score == pytest.approx(0.8)
    assert fb.text == "Clear, but skip the preamble."
    call = llm.calls[0]
    user = call.messages[-1]["content"]
    assert "Correct and concise." in user and "What is 6 * 7?" in user and "It is 42." in user
    assert "Reference answer:\n42" in user
    assert call.params["temperature"] == 0.0


def test_llm_judge_retries_then_gives_up_clearly() -> None:
    flaky = MockLLM(["I think it is fine.", '{"score": 5, "feedback": "Half right."}'])
    assert LLMJudge("Is it right?", llm=flaky)("answer", None).score == pytest.approx(0.5)
    assert flaky.calls[1].params["temperature"] > 0  # the retry is a different request
    hopeless = MockLLM("no idea", cycle=True)
    fb = LLMJudge("Is it right?", llm=hopeless, retries=2)("answer", None)
    assert fb.score == 0.0 and fb.extras["judge_error"] is True
    assert "could not be read" in fb.text
    assert len(hopeless.calls) == 3


def test_llm_judge_uses_the_default_model_and_handles_weird_outputs() -> None:
    mock = MockLLM('{"score": 10, "feedback": "Fine."}')
    set_default(mock)
    try:
        judge = LLMJudge("Be polite.")
        assert judge("Thank you.", None).score == 1.0
        for output in (None, "", _BadStr()):
            assert judge(output, None).score == 0.0
        assert len(mock.calls) == 1  # nothing to grade: the model is not asked
        assert judge(12345, None).score == 1.0  # a number is text enough to grade
    finally:
        set_default(None)
    with pytest.raises(InvalidInputError, match="rubric"):
        LLMJudge("  ")


@pytest.mark.integration
def test_llm_judge_with_the_embedded_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDPROP_CACHE", "0")

    class Item:
        input = "What is the capital of France?"

    with LocalModel(cache=False, n_parallel=1, n_ctx=2048) as llm:
        judge = LLMJudge("The answer names the correct city.", llm=llm)
        right = judge("Paris.", "Paris", example=Item())
        wrong = judge("London.", "Paris", example=Item())
    assert "judge_error" not in right.extras and "judge_error" not in wrong.extras
    assert right.score is not None and wrong.score is not None
    assert right.score >= 0.7 > 0.3 >= wrong.score, (right, wrong)


def test_unit_test_code_runs_in_the_sandbox_and_cannot_reach_this_process() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        code = (
            "import os, signal, socket\n"
            "def total(xs):\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=0.5)\n"
            "    return sum(xs)\n"
        )
        fb = UnitTest(timeout=5)(code, HUMANEVAL_STYLE)
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()
    assert fb.score == 0.0 and ("network" in fb.text or "unreachable" in fb.text), fb.text
    killer = f"import os, signal\ndef total(xs):\n    os.kill({os.getpid()}, signal.SIGTERM)\n    return sum(xs)\n"
    fb = UnitTest(timeout=5)(killer, HUMANEVAL_STYLE)
    assert fb.score == 0.0 and "blocked inside the feedprop sandbox" in fb.text


def test_unit_test_uses_the_executor_it_is_given() -> None:
    class Recording(InProcessExecutor):
        def __init__(self) -> None:
            self.names: list[str] = []

        def run(self, source: str, name: str, args: Any, kwargs: Any, globals_: Any) -> Any:
            self.names.append(name)
            return super().run(source, name, args, kwargs, globals_)

    executor = Recording()
    assert UnitTest(executor=executor)("def total(xs):\n    return sum(xs)\n", HUMANEVAL_STYLE).score == 1.0
    assert executor.names == ["_feedprop_unit_tests"]
