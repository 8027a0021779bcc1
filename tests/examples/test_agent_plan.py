"""examples/agent_plan.py: the tools, the plan runner's transcript, and training with its scripted model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


def test_tools_compute_and_refuse_with_a_reason(load_example: Callable[[str], ModuleType]) -> None:
    agent = load_example("agent_plan")
    assert agent.calc("2 * (3 + 4) - 1 / 2") == 13.5
    assert agent.lookup("'Lanterns'") == 12.0
    with pytest.raises(ValueError, match=r"only, not .open"):
        agent.calc("open('/etc/passwd')")
    with pytest.raises(ValueError, match="known items: lantern"):
        agent.lookup("anchor")


def test_transcript_records_each_result_and_the_first_error(load_example: Callable[[str], ModuleType]) -> None:
    agent = load_example("agent_plan")
    ok = agent.execute("First the price:\nlookup(kelharp)\ncalc($1 * 2)\nanswer($2)")
    assert ok["answer"] == 170.0 and ok["transcript"].count("->") == 3
    bad = agent.execute("calc(3 * lantern)\nanswer($1)")
    assert bad["answer"] is None and "error: calc understands numbers" in bad["transcript"]
    assert "refers to a result" in agent.execute("calc($4 + 1)")["transcript"]
    assert "never called answer" in agent.execute("lookup(map)")["transcript"]
    assert "no tool calls" in agent.execute("I would buy them.")["transcript"]


def test_tasks_are_seeded_and_their_totals_are_right(load_example: Callable[[str], ModuleType]) -> None:
    agent = load_example("agent_plan")
    assert agent.make_tasks(5, 4) == agent.make_tasks(5, 4)
    for question, total in agent.make_tasks(5, 20):
        qa, a, qb, b, kind = agent._TASK.search("Task: " + question).groups()
        cost = int(qa) * agent.PRICES[a] + int(qb) * agent.PRICES[b]
        assert total == (cost if kind == "cost" else 200 - cost)


def test_training_the_plan_prompt_solves_unseen_tasks(
    load_example: Callable[[str], ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = load_example("agent_plan")
    argv = ["--mock", "--n-train", "4", "--n-val", "2", "--n-test", "3", "--steps", "2", "--run-dir", str(tmp_path)]
    result = agent.main(argv)
    assert (result.test_before, result.test_after) == (0.0, 1.0)
    assert result.best_state["plan_prompt"] == agent.SCRIPTED_PROMPT
    out = capsys.readouterr().out
    assert "accuracy on unseen tasks: 0% -> 100%" in out and "optimizer recommended, pareto search" in out
    first, second = result.history
    # step 1: every run failed, so no demonstrations (none are labelled); the diagnosed rewrite wins
    assert [set(c["updates"]) for c in first["candidates"]] == [{"plan_prompt"}] and first["accepted"]
    # step 2: the runs now succeed and their plans become candidate demonstrations
    train_questions = {question for question, _ in agent.make_tasks(1, 4)}
    demos = [d for c in second["candidates"] for d in c["updates"]["plan_demos"]]
    assert demos and all(set(c["updates"]) == {"plan_demos"} for c in second["candidates"])
    for demo in demos:
        assert demo["input"].removeprefix("Task: ").split("\n")[0] in train_questions
        assert agent.execute(demo["output"])["answer"] is not None  # a plan that ran to an answer
    # the scripted planner ignores demonstrations: they tie with the parent and are not validated
    assert not second["accepted"] and not any(c["admitted"] for c in second["candidates"])


def test_the_earlier_optimizer_is_still_reachable(
    load_example: Callable[[str], ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = load_example("agent_plan")
    argv = ["--mock", "--optimizer", "optoprime", "--n-train", "2", "--n-val", "2", "--n-test", "3", "--steps", "1"]
    result = agent.main([*argv, "--run-dir", str(tmp_path)])
    assert (result.test_before, result.test_after) == (0.0, 1.0)
    assert result.best_state["plan_prompt"] == agent.SCRIPTED_PROMPT and result.best_state["plan_demos"] == []
    assert "optimizer optoprime, greedy search" in capsys.readouterr().out


def test_a_failed_plan_is_retried_with_its_transcript(load_example: Callable[[str], ModuleType]) -> None:
    agent = load_example("agent_plan")
    model = agent.scripted_llm()
    agent.llm_module.set_default(model)
    out = agent.PlanningAgent(rounds=2)(agent.make_tasks(1, 1)[0][0])
    assert out.data["answer"] is None
    assert len(model.calls) == 2 and "Your last plan ran like this" in model.calls[1].messages[-1]["content"]


def test_tools_mode_trains_the_tool_descriptions_and_the_system_prompt(
    load_example: Callable[[str], ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = load_example("agent_plan")
    argv = ["--tools", "--mock", "--n-train", "4", "--n-val", "2", "--n-test", "3", "--steps", "2"]
    result = agent.main([*argv, "--run-dir", str(tmp_path)])
    assert (result.test_before, result.test_after) == (0.0, 1.0)
    assert result.best_state == {
        "system": "You are a helpful assistant.",
        "tools.0.description": agent.SCRIPTED_LOOKUP,
        "tools.1.description": "Do math.",
    }
    first, second = result.history
    # every failing text got a rewrite: the feedback on the answer reached the prompt and both descriptions
    proposed = {name: value for c in first["candidates"] for name, value in c["updates"].items()}
    assert proposed == {
        "system_prompt": agent.SCRIPTED_SYSTEM,
        "lookup_description": agent.SCRIPTED_LOOKUP,
        "calc_description": agent.SCRIPTED_CALC,
    }
    assert first["accepted"] and [c["admitted"] for c in first["candidates"]] == [False, True, False]
    assert second["candidates"] == []  # every run succeeded: nothing failed, nothing to rewrite
    out = capsys.readouterr().out
    assert "(OpenAI-format tools)" in out and "accuracy on unseen tasks: 0% -> 100%" in out
    assert 'lookup({"item": "lantern"}) -> 12.0' in out


def test_the_tool_agent_records_each_call_and_its_result(load_example: Callable[[str], ModuleType]) -> None:
    agent = load_example("agent_plan")
    agent.llm_module.set_default(agent.scripted_tools_llm())
    model = agent.ToolAgent()
    question, total = agent.make_tasks(1, 1)[0]
    failed = model(question)
    assert failed.data["answer"] is None
    assert (
        "calc(" in failed.data["transcript"] and "-> error: ValueError: calc understands" in failed.data["transcript"]
    )
    failed.backward(agent.AnswerCheck()(failed.data, total))
    assert all(p.feedback for p in model.parameters())  # the system prompt and both descriptions
    model.tools[0].description = agent.SCRIPTED_LOOKUP
    solved = model(question).data
    assert solved["answer"] == total
    assert solved["transcript"].splitlines()[:2] == [
        f'lookup({{"item": "{item}"}}) -> {agent.PRICES[item]:.1f}'
        for item in agent._TASK.search("Task: " + question).group(2, 4)
    ]


def test_the_tool_agent_stops_after_max_turns(load_example: Callable[[str], ModuleType]) -> None:
    agent = load_example("agent_plan")
    scripted = agent.scripted_tools_llm()
    agent.llm_module.set_default(scripted)
    model = agent.ToolAgent(max_turns=2)
    model.tools[0].description = agent.SCRIPTED_LOOKUP
    out = model(agent.make_tasks(1, 1)[0][0]).data
    assert len(scripted.calls) == 2 and out["answer"] is None
    assert out["transcript"].endswith("error: the agent ran out of turns before it answered")
