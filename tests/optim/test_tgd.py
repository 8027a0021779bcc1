"""TextualGradientDescent: per-parameter updates, constraints, examples, and momentum that is used."""

from __future__ import annotations

import json
from typing import Any

import pytest

from feedprop.llm import Message, MockLLM
from feedprop.node import Feedback, Parameter
from feedprop.optim.tgd import TextualGradientDescent


def suggest(name: str, value: Any) -> str:
    return json.dumps({"reasoning": "addresses the feedback", "suggestion": {name: value}})


def test_one_call_per_parameter_with_its_own_feedback() -> None:
    prompts: dict[str, str] = {}

    def handler(messages: list[Message], **p: Any) -> str:
        user = messages[-1]["content"]
        name = "system" if "Variable system" in user else "style"
        prompts[name] = user
        return suggest(name, f"new {name}")

    system = Parameter("You are a tutor.", name="system", description="the system prompt")
    style = Parameter("Be long.", name="style", description="style guide")
    other = Parameter("untouched", name="other")
    opt = TextualGradientDescent([system, style, other], llm=MockLLM(handler))
    (system + " Q").backward("the tutor persona is too formal")
    (style + " Q").backward(Feedback("answers are too long", score=0.2))
    proposal = opt.step()
    assert (system.data, style.data, other.data) == ("new system", "new style", "untouched")
    assert "too formal" in prompts["system"] and "too long" not in prompts["system"]
    assert "the system prompt" in prompts["system"]
    assert proposal.usage.calls == 2


def test_constraints_are_shown_and_enforced() -> None:
    replies = iter([suggest("p", "one two three four five six"), suggest("p", "one two")])
    llm = MockLLM(lambda m, **k: next(replies))
    p = Parameter("hello", name="p")
    opt = TextualGradientDescent([p], llm=llm, constraints=["at most 4 words"], momentum=0)
    (p + "!").backward("be more specific")
    proposal = opt.step()
    assert "Constraints: at most 4 words" in llm.calls[0].messages[-1]["content"]
    assert p.data == "one two"  # the first suggestion broke the constraint and was retried
    assert "at most 4 words" in proposal.rejected[0].reason


def test_in_context_examples_are_shown() -> None:
    llm = MockLLM(suggest("p", "Answer: 4"))
    p = Parameter("hi", name="p")
    opt = TextualGradientDescent([p], llm=llm, examples=["Answer with 'Answer: <n>'."])
    (p + "!").backward("wrong format")
    opt.step()
    assert "Examples of good values:\n- Answer with 'Answer: <n>'." in llm.calls[0].messages[-1]["content"]


def test_momentum_shows_past_values_with_the_feedback_each_got() -> None:
    values = iter(["v1", "v2", "v3", "v4"])
    llm = MockLLM(lambda m, **k: suggest("p", next(values)))
    p = Parameter("v0", name="p")
    opt = TextualGradientDescent([p], llm=llm, momentum=2)
    for i in range(4):
        opt.zero_feedback()
        (p + "!").backward(Feedback(f"feedback on {p.data}", score=float(i)))
        opt.step()
    last = llm.calls[-1].messages[-1]["content"]
    # The two previous values, each with the feedback *it* received, oldest first; not older ones.
    assert "Step 1: v1\n  feedback (score 1): feedback on v1" in last
    assert "Step 2: v2\n  feedback (score 2): feedback on v2" in last
    assert last.index("Step 1: v1") < last.index("Step 2: v2")
    assert "v0" not in last
    # The current value is shown as current, not in the history.
    assert "Step 3: v3" not in last and "Current value of p:\nv3" in last
    assert [e["value"] for e in opt.state["p"]["momentum"]] == ["v2", "v3"]


def test_momentum_zero_shows_no_history() -> None:
    llm = MockLLM(suggest("p", "x"), cycle=True)
    p = Parameter("v0", name="p")
    opt = TextualGradientDescent([p], llm=llm, momentum=0)
    for _ in range(2):
        (p + "!").backward("again")
        opt.step()
    assert "Earlier values" not in llm.calls[-1].messages[-1]["content"]


def test_numbers_and_group_options() -> None:
    x = Parameter(1.0, name="x", bounds=(0.0, 10.0))
    s = Parameter("s", name="s")
    llm = MockLLM(lambda m, **k: suggest("x", 4.0) if "Variable x" in m[-1]["content"] else suggest("s", "t"))
    opt = TextualGradientDescent([{"params": [x], "momentum": 0}, {"params": [s], "momentum": 5}], llm=llm)
    (x * 2 + s.data.count("s")).backward("the output should be larger by 6")
    (s + "!").backward("fine")
    opt.step()
    assert x.data == 4.0 and s.data == "t"
    assert (
        "between 0.0 and 10.0" in llm.calls[0].messages[-1]["content"]
        or "between 0.0 and 10.0" in (llm.calls[1].messages[-1]["content"])
    )
    assert "momentum" not in opt.state["x"] and len(opt.state["s"]["momentum"]) == 1


def test_prompt_stays_within_budget_for_long_values() -> None:
    llm = MockLLM(suggest("p", "short"))
    p = Parameter("word " * 5000, name="p")
    opt = TextualGradientDescent([p], llm=llm, max_prompt_tokens=1500)
    (p + "!").backward("too long " * 2000)
    opt.step()
    prompt = llm.calls[0].messages
    assert sum((len(m["content"]) + 3) // 4 + 4 for m in prompt) <= 1500
    assert "[truncated" in prompt[-1]["content"]


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_reply_formats(fmt: str) -> None:
    reply = suggest("p", "B") if fmt == "json" else '<reasoning>r</reasoning><suggestion name="p">B</suggestion>'
    p = Parameter("A", name="p")
    opt = TextualGradientDescent([p], llm=MockLLM(reply), reply_format=fmt)
    (p + "!").backward("change it")
    opt.step()
    assert p.data == "B"
