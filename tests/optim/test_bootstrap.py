"""BootstrapDemos: harvests well-scored runs and labelled items, proposes distinct subsets, resumes exactly."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from feedprop import ops
from feedprop.errors import ConfigurationError, InvalidInputError, SuggestionError
from feedprop.llm import Message, MockLLM
from feedprop.module import Module
from feedprop.node import Demos, Feedback, Node, Parameter
from feedprop.optim import BootstrapDemos
from feedprop.training import ExactMatch, train
from feedprop.training.data import as_items
from feedprop.training.evaluation import run_items
from feedprop.training.wire import Rebuilder, encode_outcome


def answer(messages: list[Message], **params: Any) -> str:
    """The reply of a model that answers ``a+b?`` with the sum."""
    a, b = map(int, re.findall(r"\d+", messages[-1]["content"]))
    return str(a + b)


LLM = MockLLM(answer)


def run(shots: Demos, question: str, feedback: Feedback, llm: MockLLM = LLM) -> Node[str]:
    out = ops.llm_call("Add.", Node(question, name="question"), demos=shots, llm=llm)
    out.backward(feedback)
    return out


def test_keeps_only_runs_the_guide_scored_well() -> None:
    shots = Demos(name="shots")
    run(shots, "1+1?", Feedback("Correct.", score=1.0))
    run(shots, "2+2?", Feedback("Close.", score=0.5))
    run(shots, "3+3?", Feedback("Wrong.", score=0.0))
    run(shots, "4+4?", Feedback("No score at all."))
    opt = BootstrapDemos([shots], labelled=False)
    proposal = opt.propose()
    assert opt.state["shots"]["successes"] == [{"input": "1+1?", "output": "2"}]
    assert opt.state["shots"]["labelled"] == []
    assert [c.updates for c in proposal.candidates] == [{"shots": [{"input": "1+1?", "output": "2"}]}]
    lenient = BootstrapDemos([shots], labelled=False, min_score=0.5)
    lenient.propose()
    assert [d["input"] for d in lenient.state["shots"]["successes"]] == ["1+1?", "2+2?"]


def test_the_demo_is_the_question_and_reply_not_the_demonstrations_shown() -> None:
    shots = Demos([{"input": "9+9?", "output": "18"}], name="shots")
    out = run(shots, "1+2?", Feedback("Correct.", score=1.0))
    assert out.info is not None and len(out.info["messages"]) == 4
    opt = BootstrapDemos([shots])
    opt.propose()
    assert opt.state["shots"]["successes"] == [{"input": "1+2?", "output": "3"}]


def test_only_calls_reading_the_parameter_are_harvested() -> None:
    shots, other = Demos(name="shots"), Demos(name="other")
    first = ops.llm_call(None, "1+1?", demos=shots, llm=LLM)
    second = ops.llm_call(None, ops.format("{}+5?", first), demos=other, llm=LLM)
    third = ops.llm_call(None, "2+3?", llm=LLM)  # reads no demonstrations at all
    ops.concat(second, third).backward(Feedback("Correct.", score=1.0))
    opt = BootstrapDemos([shots, other])
    opt.propose()
    assert opt.state["shots"]["successes"] == [{"input": "1+1?", "output": "2"}]
    assert opt.state["other"]["successes"] == [{"input": "2+5?", "output": "7"}]


def test_labelled_fallback_uses_the_items_target() -> None:
    shots = Demos(name="shots")
    run(shots, "1+1?", Feedback("Wrong.", score=0.0, extras={"target": "two"}))
    run(shots, "2+2?", Feedback("Wrong.", score=0.0, extras={"expected": 4}))
    run(shots, "3+3?", Feedback("Wrong.", score=0.0))  # no gold answer: nothing to learn from
    run(shots, "4+4?", Feedback("Correct.", score=1.0, extras={"target": "eight"}))  # its own reply is the demo
    opt = BootstrapDemos([shots])
    proposal = opt.propose()
    assert opt.state["shots"]["labelled"] == [{"input": "1+1?", "output": "two"}, {"input": "2+2?", "output": "4"}]
    assert opt.state["shots"]["successes"] == [{"input": "4+4?", "output": "8"}]
    for candidate in proposal.candidates:
        demos = candidate.updates["shots"]
        assert demos[0] == {"input": "4+4?", "output": "8"}  # well-scored runs first, labelled ones fill up
    unlabelled = BootstrapDemos([shots], labelled=False)
    unlabelled.propose()
    assert unlabelled.state["shots"]["labelled"] == []


def _key(demos: list[dict[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((d["input"], d["output"]) for d in demos))


def _filled(n_success: int, n_labelled: int, max_demos: int) -> Demos:
    shots = Demos(name="shots", max_demos=max_demos)
    for i in range(n_success):
        run(shots, f"{i}+0?", Feedback("Correct.", score=1.0))
    for i in range(n_labelled):
        run(shots, f"{i}+100?", Feedback("Wrong.", score=0.0, extras={"target": "gold"}))
    return shots


def test_candidates_are_distinct_bounded_and_never_the_current_value() -> None:
    shots = _filled(3, 5, max_demos=4)
    opt = BootstrapDemos([shots], n_candidates=8)
    proposal = opt.propose()
    sets = [c.updates["shots"] for c in proposal.candidates]
    assert len(sets) == 8
    assert len({_key(demos) for demos in sets}) == len(sets)  # distinct
    good = {f"{i}+0?" for i in range(3)}
    for demos in sets:
        assert 1 <= len(demos) <= 4
        assert len({d["input"] for d in demos}) == len(demos)
        n_good = sum(d["input"] in good for d in demos)
        assert n_good == min(len(demos), 3)  # successes first
        assert all(d["output"] == "gold" for d in demos if d["input"] not in good)
    assert len(sets[0]) == 4  # the first candidate is as large as allowed
    # The accepted set is never proposed again.
    opt.apply(proposal.candidates[0])
    assert shots.data == sets[0]
    opt.zero_feedback()
    again = opt.propose()
    assert again.candidates
    assert all(_key(c.updates["shots"]) != _key(shots.data) for c in again.candidates)


def test_a_small_pool_gives_fewer_candidates_and_an_empty_one_none() -> None:
    shots = _filled(1, 0, max_demos=4)
    proposal = BootstrapDemos([shots], n_candidates=5).propose()
    assert [c.updates for c in proposal.candidates] == [{"shots": [{"input": "0+0?", "output": "0"}]}]
    assert BootstrapDemos([Demos(name="empty")]).propose().candidates == []


def test_pools_accumulate_across_steps_deduplicated_and_capped() -> None:
    shots = Demos(name="shots")
    opt = BootstrapDemos([shots], max_pool=3)
    for step in range(3):
        for i in range(2):
            run(shots, f"{step}+{i}?", Feedback("Correct.", score=1.0))
        run(shots, "0+0?", Feedback("Correct.", score=1.0))  # the same run again: kept once
        opt.propose()
        opt.zero_feedback()
    # The oldest go first; a run seen before is not added twice.
    assert [d["input"] for d in opt.state["shots"]["successes"]] == ["0+0?", "2+0?", "2+1?"]


def test_state_round_trip_resumes_exactly() -> None:
    shots = _filled(4, 4, max_demos=2)
    opt = BootstrapDemos([shots], n_candidates=3, seed=7)
    first = opt.propose()
    saved = opt.state_dict()
    opt.zero_feedback()
    expected = [c.updates for c in opt.propose().candidates]

    twin = Demos(name="shots", max_demos=2)
    resumed = BootstrapDemos([twin], n_candidates=3, seed=7)
    resumed.load_state_dict(saved)
    assert resumed.state["shots"] == saved["state"]["shots"]
    assert [c.updates for c in resumed.propose().candidates] == expected
    assert expected != [c.updates for c in first.candidates]  # the draws move on from step to step


def test_the_seed_decides_the_draws() -> None:
    shots = _filled(6, 6, max_demos=3)
    proposals = [BootstrapDemos([shots], n_candidates=4, seed=seed).propose() for seed in (1, 1, 2)]
    same, again, other = ([c.updates for c in p.candidates] for p in proposals)
    assert same == again and same != other


def test_no_model_is_called() -> None:
    shots = _filled(3, 3, max_demos=2)

    def refuse(messages: list[Message], **params: Any) -> str:
        raise AssertionError("BootstrapDemos called the model")

    silent = MockLLM(refuse)
    proposal = BootstrapDemos([shots], llm=silent).propose()
    assert proposal.candidates and proposal.usage.calls == 0 and silent.calls == []


def test_two_demos_parameters_are_searched_together() -> None:
    a = _filled(3, 0, max_demos=2)
    b = Demos(name="b")
    run(b, "5+5?", Feedback("Correct.", score=1.0))
    proposal = BootstrapDemos([a, b], n_candidates=3).propose()
    assert len(proposal.candidates) == 3
    assert all("shots" in c.updates for c in proposal.candidates)
    assert [("b" in c.updates) for c in proposal.candidates] == [True, False, False]  # b has one subset only
    assert "demonstrations for 'shots'" in proposal.candidates[0].reasoning


def test_other_parameter_kinds_and_bad_options_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="Reflect or OptoPrime"):
        BootstrapDemos([Demos(name="shots"), Parameter("Add.", name="instruction")])
    with pytest.raises(ConfigurationError, match="Reflect or OptoPrime"):
        BootstrapDemos([{"params": Parameter(1.0, name="x")}])
    for options, error in (
        ({"min_score": float("nan")}, ConfigurationError),
        ({"min_score": "high"}, ConfigurationError),
        ({"labelled": "yes"}, InvalidInputError),
        ({"max_pool": 0}, ConfigurationError),
        ({"seed": 1.5}, InvalidInputError),
        ({"n_candidates": 0}, ConfigurationError),
        ({"typo": 1}, ConfigurationError),
    ):
        with pytest.raises(error):
            BootstrapDemos([Demos(name="shots")], **options)
    assert BootstrapDemos([Demos(name="shots")]).defaults["n_candidates"] == 4


def test_apply_refuses_more_demonstrations_than_max_demos() -> None:
    shots = Demos(name="shots", max_demos=1)
    opt = BootstrapDemos([shots])
    two = [{"input": "a", "output": "b"}, {"input": "c", "output": "d"}]
    with pytest.raises(SuggestionError, match="at most 1"):
        opt.apply({"shots": two})
    assert shots.data == []


# -- inside fp.train ---------------------------------------------------------------------------


class Adder(Module):
    """Answers ``a+b?`` through one LLM call that reads the demonstrations ``shots``."""

    def __init__(self, llm: MockLLM) -> None:
        self.shots = Demos(name="shots", max_demos=2)
        self.llm = llm

    def forward(self, question: str) -> Node[str]:
        return ops.llm_call("Add the numbers.", question, demos=self.shots, llm=self.llm)


def formatted(messages: list[Message], **params: Any) -> str:
    """Writes ``Answer: <sum>`` only when a demonstration shows that format, else the bare sum."""
    total = answer(messages)
    shown = any(m["role"] == "assistant" and m["content"].startswith("Answer: ") for m in messages)
    return f"Answer: {total}" if shown else total


def items(pairs: list[tuple[int, int]]) -> list[tuple[str, str]]:
    return [(f"{a}+{b}?", f"Answer: {a + b}") for a, b in pairs]


def test_train_with_bootstrap_demos_raises_validation_accuracy() -> None:
    model = Adder(MockLLM(formatted))
    opt = BootstrapDemos(model.parameters(), n_candidates=3)
    train_set = items([(1, 2), (3, 4), (5, 6), (7, 8)])
    val_set = items([(10, 1), (20, 2), (30, 3)])
    result = train(model, train_set, ExactMatch(), opt, val_set=val_set, batch_size=4, progress=False, plot=False)
    assert (result.val_before, result.val_after) == (0.0, 1.0)
    assert result.history[0]["accepted"]
    assert 1 <= len(model.shots.data) <= 2
    assert {d["input"] for d in model.shots.data} <= {q for q, _ in train_set}
    assert all(d["output"].startswith("Answer: ") for d in model.shots.data)


def test_validation_and_test_items_never_become_demonstrations() -> None:
    seen: list[str] = []

    def handler(messages: list[Message], **params: Any) -> str:
        seen.append(messages[-1]["content"])
        return formatted(messages)

    def right_on_even(messages: list[Message], **params: Any) -> str:
        # Right without demonstrations on even sums, so both pools fill during training.
        reply = handler(messages)
        return reply if reply.startswith("Answer: ") or int(reply) % 2 else f"Answer: {reply}"

    model = Adder(MockLLM(right_on_even))
    opt = BootstrapDemos(model.parameters(), n_candidates=4)
    train_set = items([(1, 1), (1, 2), (2, 2), (2, 3), (3, 3), (3, 4)])
    val_set = items([(40, 2), (40, 3), (50, 2)])
    test_set = items([(60, 2), (60, 3)])
    result = train(
        model,
        train_set,
        ExactMatch(),
        opt,
        val_set=val_set,
        test_set=test_set,
        batch_size=3,
        epochs=2,
        progress=False,
        plot=False,
    )
    held_out = {q for q, _ in val_set + test_set}
    assert held_out <= set(seen)  # the held-out questions did run through the model
    demos = [d for entry in result.history for c in entry["candidates"] for d in c["updates"].get("shots", [])]
    demos += opt.state["shots"]["successes"] + opt.state["shots"]["labelled"] + model.shots.data
    assert opt.state["shots"]["successes"] and opt.state["shots"]["labelled"] and demos
    assert not {d["input"] for d in demos} & held_out
    assert not any(q in d["input"] or q in d["output"] for d in demos for q in held_out)


def test_graphs_rebuilt_from_another_process_feed_the_same_pools() -> None:
    train_set = as_items([*items([(1, 2), (3, 4)]), ("5+6?", "11")], "train_set")
    pools = []
    for remote in (False, True):
        sender, driver = Adder(MockLLM(formatted)), Adder(MockLLM(formatted))
        outcomes = run_items(sender, train_set, ExactMatch())
        if remote:
            rebuild = Rebuilder(driver)
            texts = [json.dumps(encode_outcome(o, sender, with_graph=True)) for o in outcomes]
            outcomes = [rebuild.outcome(json.loads(t)) for t in texts]
        owner = driver if remote else sender
        for o in outcomes:
            assert isinstance(o.output, Node)
            o.output.backward(o.feedback)
        opt = BootstrapDemos(owner.parameters())
        opt.propose()
        pools.append(opt.state["shots"])
    assert pools[0] == pools[1]
    assert pools[0]["successes"] == [{"input": "5+6?", "output": "11"}]
    assert [d["input"] for d in pools[0]["labelled"]] == ["1+2?", "3+4?"]
