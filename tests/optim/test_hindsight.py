"""Hindsight: attribution of score changes to edits, trust, trust regions, back-off, recurring feedback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from feedprop.errors import ConfigurationError
from feedprop.llm import Message, MockLLM
from feedprop.node import Feedback, Node, Parameter
from feedprop.optim import Hindsight
from feedprop.optim.hindsight import describe_change, feedback_keys


def reply(suggestion: dict[str, Any], verdict: str = "same", lessons: str = "") -> str:
    return json.dumps({"reasoning": "r", "verdict": verdict, "lessons": lessons, "suggestion": suggestion})


def scored_step(opt: Hindsight, x: Parameter[Any], target: float = 10.0, with_score: bool = True) -> Any:
    """One plain loop step on y = 2x: feedback says larger/smaller by how much."""
    opt.zero_feedback()
    y = x * 2
    err = target - y.data
    text = f"the output should be {'larger' if err > 0 else 'smaller'} by {abs(err):g}"
    y.backward(Feedback(text, score=-abs(err) if with_score else None))
    return opt.step()


def scripted(values: list[dict[str, Any]]) -> tuple[MockLLM, list[str]]:
    prompts: list[str] = []
    it = iter(values)

    def handler(messages: list[Message], **p: Any) -> str:
        prompts.append(messages[-1]["content"])
        return reply(next(it))

    return MockLLM(handler), prompts


def test_edits_are_attributed_with_their_score_change() -> None:
    x = Parameter(1.0, name="x")
    llm, _ = scripted([{"x": 3.0}, {"x": 4.0}, {}])
    opt = Hindsight([x], llm=llm)
    for _ in range(3):
        scored_step(opt, x)
    edits = opt.global_state["edits"]
    assert [(e["changes"]["x"], e["delta"], e["outcome"]) for e in edits] == [
        ([1.0, 3.0], 4.0, "better"),
        ([3.0, 4.0], 2.0, "better"),
    ]
    assert opt.state["x"]["trust"] > 0 and opt.state["x"]["wins"] == 2


def test_a_worse_edit_is_undone_and_the_step_size_halved() -> None:
    x = Parameter(3.0, name="x")  # y = 6, target 10: score -4
    llm, prompts = scripted([{"x": 9.0}, {"x": 100.0}, {}])  # 9 -> y = 18, score -8: worse
    opt = Hindsight([x], llm=llm)
    scored_step(opt, x)
    assert x.data == 9.0
    proposal = scored_step(opt, x)
    # Back to 3, then the model's 100 clipped into the trust region 3 ± 0.5 * |9 - 3|.
    assert x.data == 6.0
    assert "clipped from 100.0 to 6" in proposal.best.reasoning
    assert opt.state["x"]["radius"] == 3.0 and opt.state["x"]["losses"] == 1
    assert "#Undone" in prompts[1] and "x back to 3.0" in prompts[1]
    assert "(-4, worse), undone" in prompts[1]
    # The next edit is measured against the state before the undone one (x = 3, score -4).
    scored_step(opt, x)
    last = opt.global_state["edits"][-1]
    assert last["changes"]["x"] == [3.0, 6.0] and last["delta"] == 2.0
    assert "move it by at most" in prompts[2]
    # x: 3 -> 6 raised the score from -4 to -2: +2 per +3 of x.
    assert "its last edit changed the score by +0.6667 per +1 of x" in prompts[2]


def test_the_first_step_asks_what_optoprime_asks() -> None:
    x = Parameter(1.0, name="x")
    llm, prompts = scripted([{"x": 3.0}, {}])
    opt = Hindsight([x], llm=llm)
    scored_step(opt, x)
    scored_step(opt, x)
    # No edit to judge yet: no verdict or lessons asked; once an edit exists, both are.
    assert '"verdict"' not in prompts[0] and '"lessons"' not in prompts[0]
    assert '"verdict"' in prompts[1] and '"lessons"' in prompts[1]


def test_a_value_measured_worse_is_refused_and_the_model_asked_again() -> None:
    x = Parameter(3.0, name="x")  # y = 6, target 10: score -4
    llm, prompts = scripted([{"x": 9.0}, {"x": 4.0}, {"x": 9.0}, {"x": 5.0}])
    opt = Hindsight([x], llm=llm)
    scored_step(opt, x)  # x = 9: y = 18, score -8 (worse)
    scored_step(opt, x)  # undone, then the model's 4
    assert x.data == 4.0
    proposal = scored_step(opt, x)  # x = 4 scores -2; the model suggests 9 again
    assert x.data == 5.0, "9 was measured worse than now; the retry's 5 is applied"
    assert len(prompts) == 4
    refusal = next(r for r in proposal.rejected if r.parameter == "x")
    assert "scored -8, worse than the current -2" in refusal.reason
    assert "x = 9.0 was tried at step" in prompts[3]
    # Every value measured worse than now is refused; an untried one is not.
    assert opt._known_worse("x", 3.0) is not None  # scored -4
    assert opt._known_worse("x", 6.0) is None


def test_a_code_value_measured_worse_is_refused_in_any_spelling() -> None:
    code = Parameter("def f(x):\n    return x\n", name="f", kind="code")
    opt = Hindsight([code], llm=MockLLM("{}"))
    worse = "def f(x):\n    return x + 'a'\n"
    opt.global_state["tried"] = [{"values": {"f": worse}, "score": 0.2, "step": 1}]
    opt.global_state["last"] = {"values": {"f": code.data}, "score": 0.5, "step": 2}
    # The same syntax tree (other quotes, a comment, a blank line) is the same program: refused.
    respelled = 'def f(x):\n\n    return x + "a"  # append\n'
    assert opt._known_worse("f", respelled) is not None
    assert opt._known_worse("f", "def f(x):\n    return x + 'b'\n") is None


def test_back_off_can_be_turned_off() -> None:
    x = Parameter(3.0, name="x")
    llm, _ = scripted([{"x": 9.0}, {}])
    opt = Hindsight([x], llm=llm, backoff=False)
    scored_step(opt, x)
    scored_step(opt, x)
    assert x.data == 9.0


def test_undo_without_a_valid_reply_is_still_proposed() -> None:
    x = Parameter(3.0, name="x")
    replies = iter([reply({"x": 9.0}), "garbage", "garbage"])
    opt = Hindsight([x], llm=MockLLM(lambda m, **p: next(replies)))
    scored_step(opt, x)
    proposal = scored_step(opt, x)
    assert x.data == 3.0 and "undo" in proposal.best.reasoning


def test_an_edit_that_was_not_accepted_counts_against_it() -> None:
    x = Parameter(1.0, name="x")
    llm, prompts = scripted([{"x": 50.0}, {}])
    opt = Hindsight([x], llm=llm)
    opt.zero_feedback()
    (x * 2).backward(Feedback("larger by 8", score=-8.0))
    opt.propose()  # a trainer evaluates it, rejects it, never applies it
    scored_step(opt, x)
    edit = opt.global_state["edits"][-1]
    assert edit["outcome"] == "not accepted" and edit["changes"]["x"] == [1.0, 50.0]
    assert opt.state["x"]["trust"] < 0
    assert "proposed x: 1.0 -> 50.0 | not accepted" in prompts[1]


def test_a_repeat_of_a_candidate_that_was_not_accepted_is_refused_and_the_model_asked_again() -> None:
    x = Parameter(1.0, name="x")
    llm, prompts = scripted([{"x": 50.0}, {"x": 50.0}, {"x": 7.0}])
    opt = Hindsight([x], llm=llm)
    opt.zero_feedback()
    (x * 2).backward(Feedback("larger by 8", score=-8.0))
    opt.propose()  # a trainer's validation gate rejects x = 50: never applied
    proposal = scored_step(opt, x)  # the model suggests 50 again
    assert x.data == 7.0, "the repeat was refused; the retry's 7 is applied"
    assert len(prompts) == 3
    refusal = next(r for r in proposal.rejected if r.parameter == "x")
    assert refusal.value == 50.0 and "not accepted" in refusal.reason
    assert "proposed at step" in prompts[2]


def test_only_the_same_candidate_as_a_whole_counts_as_a_repeat() -> None:
    a, b = Parameter("Be brief.", name="a"), Parameter(2, name="b")
    opt = Hindsight([a, b], llm=MockLLM("{}"))
    opt.global_state["last"] = {"values": {"a": "Be brief.", "b": 2}, "score": 0.5, "step": 1}
    opt.global_state["not_accepted"] = [{"values": {"a": "Be very brief.", "b": 3}, "step": 1}]
    assert opt._not_accepted({"a": "Be very brief.", "b": 3}) is not None
    assert opt._not_accepted({"a": "Be very brief.  ", "b": 3}) is not None  # trailing spaces: the same text
    assert opt._not_accepted({"a": "Be very brief."}) is None  # b as now (2): another candidate
    assert opt._not_accepted({"b": 3}) is None
    assert opt._not_accepted({}) is None


def test_recurring_feedback_is_counted_and_shown() -> None:
    x = Parameter(1.0, name="x")
    llm, prompts = scripted([{"x": 2.0}, {"x": 3.0}, {"x": 3.5}, {}])
    opt = Hindsight([x], llm=llm, beta1=0.5)
    for _ in range(4):
        scored_step(opt, x, target=100.0)
    moment = opt.global_state["moment"]
    key = "the output should be larger by #"
    assert moment[key]["n"] == 4
    assert moment[key]["w"] == pytest.approx(0.5 * (1 + 0.5 + 0.25 + 0.125))
    assert "(4 times) the output should be larger by" in prompts[3]
    assert "(2 times)" in prompts[1] and "times)" not in prompts[0]


def test_trust_guides_text_edit_size() -> None:
    p = Parameter("Be brief.", name="prompt")
    llm, prompts = scripted([{"prompt": "Be very brief."}, {"prompt": "Be brief and exact."}, {}])
    opt = Hindsight([p], llm=llm)
    scores = iter([0.2, 0.6, 0.9])
    for _ in range(3):
        opt.zero_feedback()
        (p + " Q").backward(Feedback("answers are long", score=next(scores)))
        opt.step()
    assert "a larger change is fine" in prompts[2]
    assert "changed lines" not in prompts[2]  # short text is shown as before -> after
    assert "prompt: Be brief. -> Be very brief." in prompts[2]


def test_works_without_scores_using_the_models_verdict() -> None:
    x = Parameter(1.0, name="x")
    replies = iter(
        [
            reply({"x": 2.0}, verdict="same", lessons="x is too small"),
            reply({"x": 4.0}, verdict="better", lessons="increasing x helps"),
            reply({}, verdict="better"),
        ]
    )
    prompts: list[str] = []

    def handler(messages: list[Message], **p: Any) -> str:
        prompts.append(messages[-1]["content"])
        return next(replies)

    opt = Hindsight([x], llm=MockLLM(handler))
    for _ in range(3):
        scored_step(opt, x, with_score=False)
    edits = opt.global_state["edits"]
    assert [e["outcome"] for e in edits] == ["better (judged)", "better (judged)"]
    assert opt.state["x"]["trust"] > 0
    assert "x is too small" in prompts[1] and "increasing x helps" in prompts[2]
    assert "effect better (judged)" in prompts[2]


def test_pending_candidates_and_state_dict_round_trip() -> None:
    x = Parameter(1.0, name="x")

    def handler(messages: list[Message], **p: Any) -> str:
        return reply({"x": 2.0 if p["temperature"] == 0 else 3.0})

    opt = Hindsight([x], llm=MockLLM(handler), n_candidates=2)
    scored_step(opt, x)
    assert opt.global_state["pending"]["candidates"] == [{"x": 2.0}, {"x": 3.0}]
    sd = json.loads(json.dumps(opt.state_dict()))
    fresh = Hindsight([x], llm=MockLLM(handler), n_candidates=2)
    fresh.load_state_dict(sd)
    assert fresh.state_dict() == sd


def test_several_parameters_and_code_changes_in_the_history() -> None:
    w = Parameter(1.0, name="w")
    rule = Parameter("Use short words.\nBe kind.", name="rule")
    llm, prompts = scripted([{"w": 2.0, "rule": "Use short words.\nBe exact."}, {}])
    opt = Hindsight([w, rule], llm=llm)
    for _ in range(2):
        opt.zero_feedback()
        out = (w * Node(3.0, name="a")) + 0
        (rule + "!").backward(Feedback("too vague", score=out.data))
        out.backward(Feedback("bigger", score=out.data))
        opt.step()
    assert "rule: changed lines [-Be kind.] [+Be exact.]" in prompts[1]
    assert "w: 1.0 -> 2.0" in prompts[1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"beta1": 1.0}, "beta1"), ({"beta2": -0.1}, "beta2"), ({"edit_history": -1}, "edit_history")],
)
def test_bad_options(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Hindsight([Parameter(1.0, name="x")], llm=MockLLM("{}"), **kwargs)


def test_feedback_keys_and_describe_change() -> None:
    keys = feedback_keys("Wrong: expected 4, got 5.\nWrong: expected 7, got 2. Wrong: expected 4, got 5.")
    assert [k for k, _ in keys] == ["wrong: expected #, got #"]
    assert describe_change("x", 1, 2) == "x: 1 -> 2"
    long = describe_change("t", "a\n" * 500, "b\n" * 500)
    assert len(long) <= 300


def test_the_schema_asks_for_verdict_and_lessons_once_there_is_an_edit_to_judge() -> None:
    x = Parameter(1.0, name="x")
    answer = '{"reasoning": "r", "verdict": "better", "lessons": "l", "suggestion": {"x": 2.0}}'
    llm = MockLLM(answer, json_schema=True)
    opt = Hindsight([x], llm=llm, json_schema=True)
    (x * 3).backward(Feedback("larger", score=-6.0))
    opt.step()
    opt.zero_feedback()
    (x * 3).backward(Feedback("larger", score=-3.0))
    opt.step()
    first, second = (call.params["response_format"]["json_schema"]["schema"] for call in (llm.calls[0], llm.calls[-1]))
    assert first["required"] == ["reasoning", "suggestion"]
    assert second["required"] == ["reasoning", "verdict", "lessons", "suggestion"]
    assert second["properties"]["verdict"]["enum"] == ["better", "worse", "same"]
