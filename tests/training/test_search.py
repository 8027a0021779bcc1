"""Candidate search strategies: the Pareto front, parent sampling, merges, the minibatch gate, resume."""

from __future__ import annotations

import json
import random
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pareto_worker
import pytest
from test_resume import _kill_after, _start_worker
from train_toys import Suffix, data, exact, per_sample, scripted_llm, suggest

from feedprop import ops
from feedprop.bundle import bundle
from feedprop.errors import BudgetExhausted, ConfigurationError
from feedprop.llm import MockLLM
from feedprop.module import Module
from feedprop.node import Feedback, Node, Parameter
from feedprop.optim import Candidate, Optimizer, OptoPrime, Proposal
from feedprop.training import Budget, TrainResult, train
from feedprop.training.data import Item
from feedprop.training.events import read_events
from feedprop.training.search import Member, ParetoSearch, Program, pareto_front, with_target


def oracle_front(table: list[list[float]]) -> dict[int, int]:
    """The per-item Pareto front by its definition, candidate by candidate and item by item."""
    front = {}
    for i, row in enumerate(table):
        wins = sum(all(row[k] >= other[k] for other in table) for k in range(len(row)))
        dominated = any(other != row and all(o >= r for o, r in zip(other, row, strict=True)) for other in table)
        if wins and not dominated:
            front[i] = wins
    return front


@pytest.mark.parametrize("seed", range(400))
def test_the_pareto_front_matches_a_brute_force_oracle(seed: int) -> None:
    rng = random.Random(seed)
    candidates, items = rng.randint(1, 7), rng.randint(1, 6)
    levels = [0.0, 0.5, 1.0] if seed % 2 else [round(rng.random(), 1) for _ in range(4)]  # many ties, or few
    table = [[rng.choice(levels) for _ in range(items)] for _ in range(candidates)]
    front = pareto_front(table)
    assert front == oracle_front(table), table
    for k in range(items):  # every item's best score is held by some member of the front
        assert max(row[k] for row in table) in {table[i][k] for i in front}, (table, k)


def test_a_ragged_score_table_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="ragged"):
        pareto_front([[1.0, 0.0], [1.0]])


def _pool(*rows: tuple[dict[str, Any], list[float], list[int]]) -> ParetoSearch:
    search = ParetoSearch()
    params, scores, _ = rows[0]
    search.start(Member(params, {}, sum(scores) / len(scores), 1), scores)
    for i, (params, scores, parents) in enumerate(rows[1:], start=1):
        search.pool.append(Program(i, params, scores, sum(scores) / len(scores), 1, parents, i, "mutation"))
    return search


def test_parents_are_drawn_from_the_front_by_the_number_of_items_they_win() -> None:
    search = _pool(
        ({"p": "a"}, [1.0, 1.0, 1.0, 0.0], []),
        ({"p": "b"}, [0.0, 0.0, 0.0, 1.0], [0]),
        ({"p": "c"}, [0.0, 0.0, 0.0, 0.0], [0]),  # dominated by both
    )
    assert search.front() == {0: 3, 1: 1}
    draws = Counter(search.sample_parent(random.Random(5 + i)).id for i in range(4000))
    assert set(draws) == {0, 1}, "a dominated program is never a parent"
    assert 0.72 < draws[0] / 4000 < 0.78, draws
    first, second = random.Random(9), random.Random(9)
    assert [search.sample_parent(first).id for _ in range(50)] == [search.sample_parent(second).id for _ in range(50)]


def test_a_merge_takes_each_parameter_from_the_lineage_that_changed_it() -> None:
    search = _pool(
        ({"a": "x", "b": "y"}, [0.0, 0.0], []),
        ({"a": "X", "b": "y"}, [1.0, 0.0], [0]),
        ({"a": "x", "b": "Y"}, [0.0, 1.0], [0]),
        ({"a": "X", "b": "Z"}, [1.0, 0.0], [1]),  # a descendant of 1
        ({"a": "Q", "b": "y"}, [1.0, 0.0], [0]),  # changed the same parameter as 1
    )
    merge = search.merge_of(search.pool[1], search.pool[2])
    assert merge is not None
    assert merge.params == {"a": "X", "b": "Y"} and merge.ancestor.id == 0
    assert (merge.from_a, merge.from_b) == (["a"], ["b"])
    assert search.merge_of(search.pool[1], search.pool[3]) is None, "one lineage"
    assert search.merge_of(search.pool[1], search.pool[4]) is None, "both changed a"
    assert search.merge_of(search.pool[4], search.pool[2]) is not None
    search.pool.append(Program(5, {"a": "X", "b": "Y"}, [1.0, 1.0], 1.0, 1, [3], 5, "mutation"))
    assert search.merge_of(search.pool[1], search.pool[2]) is None, "the merged state is already in the pool"


class TwoEnds(Module):
    """Appends ``a`` to inputs starting with "a" and ``b`` to the others."""

    def __init__(self) -> None:
        self.a = Parameter(".", name="a")
        self.b = Parameter(".", name="b")

    def forward(self, x: str) -> Node[Any]:
        return x + (self.a if x.startswith("a") else self.b)


def test_training_merges_two_lineages_into_the_best_program() -> None:
    model = TwoEnds()
    llm = per_sample([suggest(a="!"), suggest(b="?")])
    opt = OptoPrime(model.parameters(), llm=llm, n_candidates=2)
    items = [("a1", "a1!"), ("b1", "b1?")]
    val = [("a2", "a2!"), ("a3", "a3!"), ("b2", "b2?")]
    result = train(
        model, items, exact, opt, val_set=val, batch_size=2, epochs=2, search="pareto", merge_every=2, progress=False
    )
    first, second = result.history
    assert first["parent"] == 0 and [c["admitted"] for c in first["candidates"]] == [True, True]
    assert sorted(c["val_score"] for c in first["candidates"]) == pytest.approx([1 / 3, 2 / 3])
    assert second["parent"] == [1, 2] and len(llm.calls) == 2, "step 2 merges; the optimizer is not asked"
    merged = second["candidates"][0]
    assert merged["merge"] == {"parents": [1, 2], "ancestor": 0} and merged["updates"] == {"a": "!", "b": "?"}
    assert merged["minibatch"] == {"parent": 1.0, "child": 2.0, "calls": 0, "saved": 0}
    assert merged["admitted"] and merged["id"] == 3
    assert second["accepted"] and second["val_score"] == 1.0 and second["best"] == 3
    assert (model.a.data, model.b.data) == ("!", "?") and result.val_after == 1.0
    assert [(p["id"], p["parents"], p["origin"]) for p in result.pool] == [
        (0, [], "start"),
        (1, [0], "mutation"),
        (2, [0], "mutation"),
        (3, [1, 2], "merge"),
    ]
    assert result.pool[3]["scores"] == [1.0, 1.0, 1.0]
    assert "| #3 (best) | #1, #2 | 2 | merge | 1.0000 | 2 |" in result.report()


def test_the_minibatch_gate_refuses_a_child_that_does_not_beat_its_parent() -> None:
    scored: list[str] = []

    def counting(output: Any, target: Any) -> Feedback:
        scored.append(str(target))
        return exact(output, target)

    model = Suffix("!")
    llm = scripted_llm([suggest(suffix="?"), suggest(suffix=".")])
    opt = OptoPrime(model.parameters(), llm=llm)
    items = [("q0", "q0!"), ("q1", "q1?")]  # "!" and "?" both score 1 of 2; "." scores 0
    val = [("v0", "v0!"), ("v1", "v1!"), ("v2", "v2?")]
    result = train(model, items, counting, opt, val_set=val, batch_size=2, epochs=2, search="pareto", progress=False)
    tie, worse = (h["candidates"][0] for h in result.history)
    assert tie["minibatch"] == {"parent": 1.0, "child": 1.0, "calls": 0, "saved": 0} and tie["admitted"] is False
    assert tie["reason"] == "minibatch score 1 does not beat the parent's 1"
    assert worse["minibatch"] == {"parent": 1.0, "child": 0.0, "calls": 0, "saved": 0} and worse["admitted"] is False
    assert "val_score" not in tie and "val_score" not in worse
    assert len([t for t in scored if t.startswith("v")]) == 3, "validation ran once, for the start only"
    assert all(not h["accepted"] and h["pool_size"] == 1 for h in result.history)
    assert model.suffix.data == "!"


def test_pareto_search_improves_a_toy_task() -> None:
    model = Suffix("?")
    replies = [suggest(suffix=s) for s in (".", "!!", "!", "?!")]
    opt = OptoPrime(model.parameters(), llm=scripted_llm(replies))
    result = train(model, data(8), exact, opt, val_set=data(4), batch_size=2, search="pareto", progress=False)
    assert (result.val_before, result.val_after) == (0.0, 1.0) and model.suffix.data == "!"
    assert result.accepted == 1 and result.config["search"] == "pareto"
    admitted = [c for h in result.history for c in h["candidates"] if c.get("admitted")]
    assert [c["updates"] for c in admitted] == [{"suffix": "!"}]
    for h in result.history:
        first = h["candidates"][0]
        assert isinstance(h["parent"], int) and h["reason"] and "admitted" in first
        assert "minibatch" in first or first["reason"].startswith("not screened: the parent solves all")


def test_a_budget_running_out_mid_step_leaves_the_pool_as_it_was(tmp_path: Path) -> None:
    workflow = MockLLM(lambda messages, **params: messages[-1]["content"])
    model = Suffix("?", llm=workflow)
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="!")]))
    # 2 calls score the start; step 1 makes 2 (minibatch) + 1 (optimizer) + 2 (gate), then validation is cut.
    result = train(
        model,
        data(4),
        exact,
        opt,
        val_set=data(2),
        batch_size=2,
        search="pareto",
        budget=Budget(calls=8),
        max_workers=1,
        checkpoint=tmp_path,
        progress=False,
    )
    assert result.stop_reason.startswith("budget: calls") and result.history == []
    assert result.usage["total"]["calls"] == 8 and len(workflow.calls) == 7
    assert model.suffix.data == "?" and result.best_state == {"suffix": "?"}
    assert opt.state_dict()["global_state"].get("step", 0) == 0, "the optimizer is back before the dropped step"
    pool = json.loads((tmp_path / "checkpoint.json").read_text())["search"]["pool"]
    assert [p["id"] for p in pool] == [0]


class TwoInOrder(Optimizer):
    """Proposes ``suffix="!"`` then ``suffix="!!"``, in that order, without calling a model."""

    def _propose(self) -> Proposal:
        return Proposal(candidates=[Candidate({"suffix": "!"}), Candidate({"suffix": "!!"})])


@pytest.mark.parametrize(("search", "calls"), [("pareto", 9), ("greedy", 7)])
def test_a_budget_running_out_after_a_validated_candidate_keeps_it(tmp_path: Path, search: str, calls: int) -> None:
    workflow = MockLLM(lambda messages, **params: messages[-1]["content"])
    model = Suffix("?", llm=workflow)

    # 2 calls score the start; step 1 runs the minibatch (2), then "!" (pareto: gate 2, validation 2;
    # greedy: validation 2); the budget then runs out inside the second candidate's first pass.
    def run(resume: bool, limit: int = calls) -> TrainResult:
        return train(
            model,
            data(4),
            exact,
            TwoInOrder(model.parameters()),
            val_set=data(2),
            batch_size=2,
            search=search,
            budget=Budget(calls=limit),
            max_workers=1,
            checkpoint=tmp_path,
            resume=resume,
            progress=False,
        )

    result = run(resume=False)
    assert result.stop_reason.startswith("budget: calls") and len(result.history) == 1
    step = result.history[0]
    assert step["stopped"] == result.stop_reason and step["accepted"] is True
    assert step["reason"].endswith(f"then the budget ran out ({result.stop_reason}): the step ends here")
    first, second = step["candidates"]
    assert first["updates"] == {"suffix": "!"} and first["val_score"] == 1.0
    assert second["reason"].startswith("not finished: budget: calls") and second.get("val_score") is None
    assert model.suffix.data == "!" and result.best_state == {"suffix": "!"} and result.val_after == 1.0
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert saved["step"] == 1 and saved["stop_reason"] == result.stop_reason
    if search == "pareto":
        assert [p["params"] for p in saved["search"]["pool"]] == [{"suffix": "?"}, {"suffix": "!"}]
    # Resumed, the run is where it stopped: the kept candidate stays, step 1 is not redone.
    model.suffix.data = "?"
    resumed = run(resume=True)
    assert resumed.history == result.history and resumed.stop_reason == result.stop_reason
    assert model.suffix.data == "!" and resumed.best_state == {"suffix": "!"}
    # Given a larger budget, the run goes on from where it stopped: step 1 (with the candidate it
    # kept) stays as it was, and the epoch's second batch is trained on.
    extended = run(resume=True, limit=calls + 20)
    assert extended.history[0] == result.history[0] and len(extended.history) == 2
    assert extended.stop_reason == "completed 1 epoch(s)" and extended.history[1].get("stopped") is None
    assert model.suffix.data == "!" and extended.val_after == 1.0
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert saved["fingerprint"]["budget"]["calls"] == calls + 20 and saved["finished"] is True


def test_search_options_are_checked() -> None:
    model = Suffix("?")
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="!")]))
    with pytest.raises(ConfigurationError, match="'beam', 'greedy', 'pareto'"):
        train(model, data(2), exact, opt, val_set=data(2), search="anneal", progress=False)
    with pytest.raises(ConfigurationError, match="search='pareto' ranks states by validation score; pass a val_set"):
        train(model, data(2), exact, opt, search="pareto", progress=False)


class Recorder(Optimizer):
    """Records the extras of the feedback that reached its parameters, and proposes nothing."""

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        self.seen: list[dict[str, Any]] = []

    def _propose(self) -> Proposal:
        self.seen.extend(dict(f.extras) for f in self.observed_feedback())
        return Proposal()


def test_the_feedback_sent_backward_carries_the_items_target() -> None:
    def guide(output: Any, target: Any) -> Feedback:
        return Feedback("Wrong.", score=0.0, extras={"guide": 1})

    model = Suffix("?")
    opt = Recorder(model.parameters())
    opaque = object()
    train(model, [("a", "A"), ("b", {"x": [1, 2]}), ("c", opaque)], guide, opt, batch_size=3, progress=False)
    expected = [{"guide": 1, "target": "A"}, {"guide": 1, "target": {"x": [1, 2]}}, {"guide": 1}]
    assert sorted(map(json.dumps, opt.seen)) == sorted(map(json.dumps, expected)), "in batch order (shuffled)"
    assert with_target(Feedback("x"), Item("q", float("nan"))).extras == {}, "NaN is not JSON"


@pytest.mark.slow
def test_kill_9_then_resume_continues_the_pool_exactly(tmp_path: Path) -> None:
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    first_k, second_k = rng.randint(1, 4), rng.randint(6, 9)
    where = f"(random seed {seed}: kills after checkpoints {first_k} and {second_k})"
    run_dir, out = tmp_path / "killed", tmp_path / "killed.json"

    proc = _start_worker(run_dir, out, "pareto_worker.py")
    seen = _kill_after(proc, run_dir, first_k, rng.uniform(0.0, 0.05))
    assert proc.returncode == -signal.SIGKILL and not out.exists(), where
    proc = _start_worker(run_dir, out, "pareto_worker.py")
    _kill_after(proc, run_dir, max(second_k, seen + 1), rng.uniform(0.0, 0.05))
    assert proc.returncode == -signal.SIGKILL, where
    proc = _start_worker(run_dir, out, "pareto_worker.py")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]
    resumed = json.loads(out.read_text())

    result, opt_state = pareto_worker.run(tmp_path / "straight")
    straight = json.loads(json.dumps(pareto_worker.pool_summary(result, opt_state), sort_keys=True))
    assert len(straight["history"]) == 12
    origins = Counter(p["origin"] for p in straight["search"]["pool"])
    assert origins["merge"] >= 1 and origins["mutation"] >= 2, "the run exercises mutations and a merge"
    for key in ("best_state", "val_after", "optimizer", "usage", "stop_reason", "search", "rng"):
        assert resumed[key] == straight[key], f"{key} differs {where}"
    assert resumed["history"] == straight["history"], where
    events = [e["event"] for e in read_events(run_dir / "events.jsonl")]
    assert events.count("resume") == 2 and events[-1] == "finish", where


def test_the_worker_makes_the_same_pool_twice(tmp_path: Path) -> None:
    first = pareto_worker.pool_summary(*pareto_worker.run(tmp_path / "one", latency=0.0))
    second = pareto_worker.pool_summary(*pareto_worker.run(tmp_path / "two", latency=0.0))
    assert first["search"] == second["search"] and first["history"] == second["history"]
    assert first["val_after"] > 0.0 == first["history"][0]["val_previous"], "the two-parameter toy improves"


def test_the_gate_screens_a_new_extractor_without_any_model_call() -> None:
    answers = {f"q{i}": f"thinking 1 by 1... so {i + 2}" for i in range(4)}
    student = MockLLM(lambda messages, **params: answers[messages[-1]["content"]])

    class TwoStage(Module):
        def __init__(self) -> None:
            self.instruction = Parameter("Answer.", name="instruction")

        @bundle(trainable=True)
        def extract(self, response: str) -> str:
            return response.split()[1]

        def forward(self, x: str) -> Node[Any]:
            out: Node[Any] = self.extract(ops.llm_call(self.instruction, x, llm=student, temperature=0))
            return out

    fixed = "def extract(self, response: str) -> str:\n    return response.split()[-1]\n"
    model = TwoStage()
    data = [(q, a.split()[-1]) for q, a in answers.items()]
    opt = OptoPrime(model.parameters(), llm=MockLLM(suggest(extract=fixed)))
    result = train(model, data, exact, opt, val_set=data, batch_size=4, max_steps=1, search="pareto", progress=False)
    step = result.history[0]
    (candidate,) = step["candidates"]
    assert candidate["admitted"] and candidate["minibatch"]["child"] == 4.0
    assert (candidate["minibatch"]["calls"], candidate["minibatch"]["saved"]) == (0, 4)
    assert step["screening"] == {"calls": 0, "saved": 4}
    assert result.val_after == 1.0
    # the student answered the minibatch once and each validation pass; screening added no call
    assert len(student.calls) == 4 + 4 + 4


def test_a_child_of_a_parent_that_solves_the_whole_minibatch_is_not_screened() -> None:
    model = Suffix("!")
    llm = MockLLM([suggest(suffix=s) for s in ("?", ".", ";", ",")])
    opt = OptoPrime(model.parameters(), llm=llm)
    items = [("q0", "q0!"), ("q1", "q1!"), ("q2", "q2?"), ("q3", "q3?")]
    result = train(
        model, items, exact, opt, val_set=data(2), batch_size=2, epochs=2, seed=5, search="pareto", progress=False
    )
    solved = [h for h in result.history if h["train_score"] == 1.0]
    assert solved, "the shuffled minibatches should include one the parent solves"
    for h in solved:
        (candidate,) = h["candidates"]
        assert candidate["reason"] == "not screened: the parent solves all 2 minibatch items"
        assert "minibatch" not in candidate and not candidate["admitted"]
    screened_children = [c for h in result.history for c in h["candidates"] if "minibatch" in c]
    assert len(screened_children) == len(result.history) - len(solved) > 0


class LastWord(Module):
    """An instruction for ``student``, then code that takes the last word of its reply."""

    def __init__(self, student: MockLLM) -> None:
        self.instruction = Parameter("Answer.", name="instruction")
        self.student = student

    @bundle(trainable=True)
    def extract(self, response: str) -> str:
        return response.split()[-1]

    def forward(self, x: str) -> Node[Any]:
        out: Node[Any] = self.extract(ops.llm_call(self.instruction, x, llm=self.student, temperature=0))
        return out


class PromptThenCode(Optimizer):
    """Proposes a new prompt when the prompt has feedback; a new extractor when only the code has."""

    def _propose(self) -> Proposal:
        if self.get_parameter("instruction").feedback:
            return Proposal(candidates=[Candidate({"instruction": "Spell it."})])
        fixed = "def extract(self, response: str) -> str:\n    return response.split()[3]\n"
        return Proposal(candidates=[Candidate({"extract": fixed})])


@pytest.mark.parametrize("follow_ups", [0, 1])
def test_a_prompt_the_gate_turned_away_gets_code_for_its_replies(follow_ups: int) -> None:
    # The start prompt gets a wrong number; the new prompt gets the right one, but in a sentence the
    # old extractor cannot read: alone it scores no better than its parent, with a follow-up it wins.
    def answer(messages: list[dict[str, str]], **params: Any) -> str:
        n = int(messages[-1]["content"][1:]) + 2
        return f"the answer is {n} indeed" if messages[0]["content"] == "Spell it." else f"maybe {n + 1}"

    student = MockLLM(answer)

    model = LastWord(student)
    items = [(f"q{i}", str(i + 2)) for i in range(4)]
    opt = PromptThenCode(model.parameters())
    result = train(
        model, items, exact, opt, val_set=items, batch_size=4, max_steps=1, search="pareto",
        follow_ups=follow_ups, progress=False,
    )  # fmt: skip
    step = result.history[0]
    prompt = step["candidates"][0]
    assert prompt["updates"] == {"instruction": "Spell it."} and not prompt["admitted"]
    assert prompt["minibatch"]["child"] == 0.0 and prompt["minibatch"]["calls"] == 4
    if not follow_ups:
        assert len(step["candidates"]) == 1 and result.val_after == 0.0
        assert len(student.calls) == 4 + 4 + 4  # start's validation, minibatch, the prompt's gate
        return
    (follow,) = step["candidates"][1:]
    assert follow["follows"] == 0 and follow["admitted"] and follow["minibatch"]["child"] == 4.0
    assert follow["updates"]["instruction"] == "Spell it." and "split()[3]" in follow["updates"]["extract"]
    # Screened on the prompt candidate's recorded replies: no student call.
    assert (follow["minibatch"]["calls"], follow["minibatch"]["saved"]) == (0, 4)
    assert result.val_after == 1.0 and result.best_state["instruction"] == "Spell it."
    assert len(student.calls) == 4 + 4 + 4 + 4  # ... and the follow-up's validation
    assert model.instruction.data == "Spell it." and "split()[3]" in model.extract.parameter.data


def test_follow_ups_are_checked() -> None:
    model = Suffix("?")
    with pytest.raises(ConfigurationError, match="follow_ups must be >= 0"):
        train(model, data(2), exact, TwoInOrder(model.parameters()), val_set=data(2), search="pareto", follow_ups=-1)


class CountingLoser(Optimizer):
    """Proposes a suffix no item wants, and counts how often it is asked."""

    asked = 0

    def _propose(self) -> Proposal:
        self.asked += 1
        return Proposal(candidates=[Candidate({"suffix": "?!"})])


def test_follow_ups_ask_for_nothing_where_no_code_is_trainable() -> None:
    # A prompt-only workflow: the turned-away candidate has no code after it to rewrite, so a step
    # asks the optimizer once, with or without follow-ups.
    asked = []
    for follow_ups in (0, 2):
        model = Suffix("?")
        opt = CountingLoser(model.parameters())
        result = train(
            model, data(4), exact, opt, val_set=data(4), batch_size=4, max_steps=1, search="pareto",
            follow_ups=follow_ups, progress=False,
        )  # fmt: skip
        assert all(not c["admitted"] for step in result.history for c in step["candidates"])
        asked.append(opt.asked)
    assert asked == [1, 1]


class TwoPromptsThenCode(Optimizer):
    """Two new prompts (the second a tipped sample) when the prompt has feedback; else one extractor."""

    def _propose(self) -> Proposal:
        if self.get_parameter("instruction").feedback:
            return Proposal(
                candidates=[
                    Candidate({"instruction": "Spell it."}, "", {"tip": False}),
                    Candidate({"instruction": "Shout it."}, "", {"tip": True}),
                ]
            )
        fixed = "def extract(self, response: str) -> str:\n    return response.split()[3]\n"
        return Proposal(candidates=[Candidate({"extract": fixed})])


def test_code_written_for_one_turned_away_prompt_is_screened_with_the_others_too() -> None:
    def answer(messages: list[dict[str, str]], **params: Any) -> str:
        n = int(messages[-1]["content"][1:]) + 2
        system = messages[0]["content"]
        return {"Spell it.": f"the answer is {n} indeed", "Shout it.": f"{n}!"}.get(system, f"maybe {n + 1}")

    student = MockLLM(answer)

    model = LastWord(student)
    items = [(f"q{i}", str(i + 2)) for i in range(4)]
    opt = TwoPromptsThenCode(model.parameters())
    result = train(
        model, items, exact, opt, val_set=items, batch_size=4, max_steps=1, search="pareto", follow_ups=1,
        progress=False,
    )  # fmt: skip
    spell, shout, *follows = result.history[0]["candidates"]
    assert not spell["admitted"] and not shout["admitted"]
    # Code is written once, for the tipped sample ("Shout it."), where it fails; on "Spell it."'s
    # recorded replies it wins, and that pairing is what the pool keeps. Neither costs a student call.
    assert [(f["follows"], f["written_for"], f["admitted"]) for f in follows] == [(1, 1, False), (0, 1, True)]
    assert all(f["minibatch"]["calls"] == 0 for f in follows)
    assert result.best_state["instruction"] == "Spell it." and result.val_after == 1.0
    assert len(student.calls) == 4 + 4 + 4 + 4 + 4  # start's validation, minibatch, two prompts' gates, validation


class ValidThenOutOfBudget(Optimizer):
    """A prompt that wins and one the gate turns away; asked for the follow-up's code, the budget runs out."""

    def _propose(self) -> Proposal:
        if self.get_parameter("instruction").feedback:
            return Proposal(candidates=[Candidate({"instruction": "Say it."}), Candidate({"instruction": "Spell it."})])
        raise BudgetExhausted("budget: tokens (100/100)")


def test_a_budget_running_out_while_a_follow_up_writes_code_keeps_the_step_as_judged() -> None:
    def answer(messages: list[dict[str, str]], **params: Any) -> str:
        n = int(messages[-1]["content"][1:]) + 2
        return {"Say it.": f"{n}", "Spell it.": f"the answer is {n} indeed"}.get(messages[0]["content"], "maybe")

    model = LastWord(MockLLM(answer))
    items = [(f"q{i}", str(i + 2)) for i in range(4)]
    result = train(
        model, items, exact, ValidThenOutOfBudget(model.parameters()), val_set=items, batch_size=4, max_steps=1,
        search="pareto", follow_ups=1, progress=False,
    )  # fmt: skip
    step = result.history[0]
    say, spell = step["candidates"]  # no follow-up entry: the budget ran out before any code was written
    assert say["admitted"] and say["val_score"] == 1.0 and say["reason"].startswith("minibatch score 4 beats")
    assert not spell["admitted"] and spell["reason"].startswith("minibatch score 0 does not beat")
    assert step["stopped"] == "budget: tokens (100/100)" and result.best_state["instruction"] == "Say it."
