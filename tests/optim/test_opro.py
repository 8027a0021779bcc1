"""OPRO: a scored history, sorted, top-k in the prompt; no graph needed."""

from __future__ import annotations

import json
import re
from typing import Any

from feedprop.llm import Message, MockLLM
from feedprop.node import Feedback, Parameter
from feedprop.optim.opro import OPRO


def suggest(x: float) -> str:
    return json.dumps({"reasoning": "higher is better", "suggestion": {"x": x}})


def run_step(opt: OPRO, x: Parameter[Any], score: float | None, text: str = "feedback") -> None:
    opt.zero_feedback()
    (x * 1).backward(Feedback(text, score=score))
    opt.step()


def test_history_sorted_worst_to_best_and_top_k() -> None:
    prompts: list[str] = []
    values = iter([5.0, 2.0, 8.0, 1.0, 9.0])

    def handler(messages: list[Message], **p: Any) -> str:
        prompts.append(messages[-1]["content"])
        return suggest(next(values))

    x = Parameter(0.0, name="x")
    opt = OPRO([x], llm=MockLLM(handler), top_k=3)
    for _ in range(5):
        run_step(opt, x, score=-abs(x.data - 7.0))
    last = prompts[-1]
    shown = [float(v) for v in re.findall(r"^x = (\S+)$", last, flags=re.M)]
    # Tried so far: 0, 5, 2, 8, 1 with scores -7, -2, -5, -1, -6: the best three, worst first.
    assert shown == [2.0, 5.0, 8.0]
    scores = [float(s) for s in re.findall(r"^score: (\S+)$", last, flags=re.M)]
    assert scores == sorted(scores)


def test_repeated_values_average_their_scores() -> None:
    x = Parameter(1.0, name="x")
    opt = OPRO([x], llm=MockLLM(json.dumps({"reasoning": "", "suggestion": {}})))
    run_step(opt, x, score=1.0)
    run_step(opt, x, score=3.0)
    history = opt.global_state["history"]
    assert len(history) == 1
    assert history[0]["score"] == 2.0


def test_works_without_scores() -> None:
    prompts: list[str] = []

    def handler(messages: list[Message], **p: Any) -> str:
        prompts.append(messages[-1]["content"])
        return suggest(3.0)

    x = Parameter(1.0, name="x")
    opt = OPRO([x], llm=MockLLM(handler))
    run_step(opt, x, score=None, text="the output is too small")
    assert x.data == 3.0
    assert "feedback: the output is too small" in prompts[0]


def test_history_size_forgets_the_worst() -> None:
    values = iter(float(v) for v in range(1, 20))
    x = Parameter(0.0, name="x")
    opt = OPRO([x], llm=MockLLM(lambda m, **p: suggest(next(values))), history_size=4)
    for _ in range(8):
        run_step(opt, x, score=x.data)  # higher x is better
    kept = sorted(e["values"]["x"] for e in opt.global_state["history"])
    assert kept == [4.0, 5.0, 6.0, 7.0]


def test_no_feedback_no_history_no_call() -> None:
    llm = MockLLM(suggest(1.0))
    opt = OPRO([Parameter(0.0, name="x")], llm=llm)
    proposal = opt.step()
    assert proposal.candidates == [] and llm.calls == []


def test_state_dict_round_trip() -> None:
    x = Parameter(1.0, name="x")
    opt = OPRO([x], llm=MockLLM(suggest(2.0)), task="maximise the output")
    run_step(opt, x, score=-1.0)
    sd = json.loads(json.dumps(opt.state_dict()))
    fresh = OPRO([x], llm=MockLLM(suggest(2.0)))
    fresh.load_state_dict(sd)
    assert fresh.global_state["history"] == opt.global_state["history"]
    assert fresh.defaults["task"] == "maximise the output"
