"""The LLM judge: reading a grade out of a reply, the prompt it sends, retries and the default model."""

from __future__ import annotations

import math

import pytest

from feedprop.errors import InvalidInputError
from feedprop.llm import LocalModel, MockLLM, set_default
from feedprop.training.judge import LLMJudge, parse_judgement


class _BadStr:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


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
