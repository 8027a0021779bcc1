"""TextGrad-style propagation: the model writes the feedback of each input that leads to a parameter."""

from __future__ import annotations

from typing import Any

import pytest

from feedprop.errors import InvalidInputError
from feedprop.llm import MockLLM
from feedprop.node import Feedback, Node, Parameter
from feedprop.report import render_problem
from feedprop.textual_gradient import TEXTUAL_GRADIENT_SYSTEM, TextualGradient


def test_textual_gradient_asks_the_model_per_edge_that_leads_to_a_parameter() -> None:
    def handler(messages: list[dict[str, str]], **params: Any) -> str:
        user = messages[-1]["content"]
        target = user.rsplit("Write feedback for the input ", 1)[1].split(",")[0].rstrip(".")
        return f"feedback for {target}"

    llm = MockLLM(handler)
    prompt = Parameter("Be terse.", name="prompt", description="the system prompt")
    question = Node("2+2?", name="question")  # leads to no parameter: never asked about
    joined = prompt + question
    out = joined + joined  # prompt reaches out along two uses of one node
    out.backward(Feedback("too short", score=0.2), propagator=TextualGradient(llm), retain_feedback=True)
    asked = [c.messages[-1]["content"] for c in llm.calls]
    assert len(asked) == 2  # out -> joined (once, though used twice), joined -> prompt; never -> question
    assert all(c.messages[0]["content"] == TEXTUAL_GRADIENT_SYSTEM for c in llm.calls)
    assert "Feedback on the output:\ntoo short (score: 0.2)" in asked[0]
    assert "Operation: [add] lhs + rhs" in asked[0] and asked[0].endswith(f"input {joined.name}.")
    assert asked[1].endswith("input prompt, a trainable variable (the system prompt).")
    assert f"feedback for {joined.name}" in asked[1]  # the successor's feedback flows down
    entry = prompt.feedback[0]
    assert entry.feedback.text == "feedback for prompt" and entry.feedback.score is None
    assert entry.output_feedback.text == "too short" and entry.output is out
    assert joined.feedback[0].text == f"feedback for {joined.name}"  # kept with retain_feedback
    assert question.feedback == []
    assert llm.calls[0].params == {"temperature": 0.0, "max_tokens": 256}


def test_textual_gradient_checks_its_arguments() -> None:
    with pytest.raises(InvalidInputError):
        TextualGradient(llm="gpt")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        TextualGradient(max_value_chars=5)


def test_report_shows_feedback_written_for_each_variable() -> None:
    p = Parameter("x", name="p")
    out = p + "!"
    out.backward("wrong", propagator=TextualGradient(MockLLM("make p longer")))
    assert render_problem([p]).feedback == ["wrong", "For variable p: make p longer"]
