"""The training loop: gating, candidate search, budgets, parallel minibatches, errors."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from train_toys import AsyncSuffix, Suffix, data, exact, per_sample, scripted_llm, suggest

from feedprop.bundle import bundle
from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm import MockLLM
from feedprop.llm.mock import estimate_prompt_tokens, estimate_tokens
from feedprop.module import Module
from feedprop.node import Parameter
from feedprop.optim import Hindsight, OptoPrime
from feedprop.training import Budget, train
from feedprop.training.events import item_scores


def run(model: Any, opt: OptoPrime, train_set: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("progress", False)
    return train(model, train_set, exact, opt, **kwargs)


def test_an_update_that_raises_val_is_kept() -> None:
    model = Suffix("?")
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="!")]))
    result = run(model, opt, data(4), val_set=data(3), test_set=data(2), batch_size=4)
    assert model.suffix.data == "!"
    assert (result.val_before, result.val_after) == (0.0, 1.0)
    assert (result.test_before, result.test_after) == (0.0, 1.0)
    step = result.history[0]
    assert step["accepted"] and step["reason"].startswith("accepted: val rose")
    assert result.best_state == {"suffix": "!"} and result.initial_state == {"suffix": "?"}
    assert result.stop_reason == "completed 1 epoch(s)"


def test_an_update_that_lowers_val_is_reverted_exactly() -> None:
    model = Suffix("!")
    val = [*data(2), ("q9", "q9?")]  # "!" scores 2/3, "?" would score 1/3
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="?")]))
    result = run(model, opt, data(2), val_set=val, batch_size=2)
    assert model.suffix.data == "!"
    step = result.history[0]
    assert not step["accepted"]
    assert step["reason"] == "rejected and reverted: val would drop 0.6667 -> 0.3333"
    assert step["candidates"][0]["updates"] == {"suffix": "?"} and step["candidates"][0]["kept"] is False
    assert result.val_after == pytest.approx(2 / 3)
    assert opt.state_dict()["global_state"]["step"] == 1, "the optimizer keeps its own record of the step"


def test_hindsight_does_not_spend_a_step_on_a_candidate_the_gate_rejected() -> None:
    model = Suffix("!")
    val = [*data(2), ("q9", "q9?")]  # "!" scores 2/3, "?" 1/3, "." 0
    replies = [suggest(suffix="?"), suggest(suffix="?"), suggest(suffix=".")]
    opt = Hindsight(model.parameters(), llm=scripted_llm(replies))
    result = run(model, opt, data(2), val_set=val, batch_size=1)
    first, second = result.history
    assert first["candidates"][0]["updates"] == {"suffix": "?"} and not first["accepted"]
    # Step 2: the model repeats "?", is refused without a validation pass, and its retry is scored instead.
    assert [c["updates"] for c in second["candidates"]] == [{"suffix": "."}]
    assert "not accepted" in second["rejected_suggestions"][0]["reason"]
    assert model.suffix.data == "!"


def test_a_step_whose_suggestions_were_all_refused_says_why() -> None:
    model = Suffix("!")
    val = [*data(2), ("q9", "q9?")]
    opt = Hindsight(model.parameters(), llm=scripted_llm([suggest(suffix="?")] * 3), max_retries=1)
    result = run(model, opt, data(2), val_set=val, batch_size=1)
    second = result.history[1]
    assert not second["accepted"] and len(second["rejected_suggestions"]) == 2
    assert second["reason"].startswith("the optimizer proposed no valid update: 2 suggestion(s) refused, ")
    assert "not accepted" in second["reason"]


def test_ties_go_to_the_shorter_parameter() -> None:
    model = Suffix("abc")
    replies = [suggest(suffix="ab"), suggest(suffix="abcdef"), suggest(suffix="xy")]
    opt = OptoPrime(model.parameters(), llm=scripted_llm(replies))
    val = [("q", "never")]  # every suffix scores 0: each step is a tie
    result = run(model, opt, data(3), val_set=val, batch_size=1)
    kept = [h["accepted"] for h in result.history]
    assert kept == [True, False, True], [h["reason"] for h in result.history]
    assert "shorter (2 < 3 chars)" in result.history[0]["reason"]
    assert "longer (6 > 2 chars)" in result.history[1]["reason"]
    assert result.history[2]["reason"] == "accepted: val kept at 0.0000"
    assert model.suffix.data == "xy"


def test_ties_keep_longer_updates_when_asked() -> None:
    model = Suffix("a")
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="abcdef")]))
    result = run(model, opt, data(1), val_set=[("q", "never")], prefer_shorter=False)
    assert result.history[0]["accepted"] and model.suffix.data == "abcdef"


def test_best_of_n_keeps_the_best_candidate() -> None:
    model = Suffix("?")
    val = [*data(3), ("q9", "q9!!")]
    replies = [suggest(suffix="."), suggest(suffix="!"), suggest(suffix="!!")]
    opt = OptoPrime(model.parameters(), llm=per_sample(replies), n_candidates=3)
    result = run(model, opt, data(2), val_set=val, batch_size=2)
    assert model.suffix.data == "!"
    scores = {c["updates"]["suffix"]: c["val_score"] for c in result.history[0]["candidates"]}
    assert scores == {".": 0.0, "!": 0.75, "!!": 0.25}
    assert {c["updates"]["suffix"]: c["kept"] for c in result.history[0]["candidates"]} == {
        ".": False,
        "!": True,
        "!!": False,
    }


def test_beam_search_keeps_the_k_best_states() -> None:
    model = Suffix("?")
    val = [*data(3), ("q9", "q9!!")]
    replies = [suggest(suffix="!!"), suggest(suffix="!")]
    opt = OptoPrime(model.parameters(), llm=per_sample(replies), n_candidates=2)
    result = run(model, opt, data(2), val_set=val, batch_size=2, beam_width=2, max_steps=1)
    assert model.suffix.data == "!"
    assert result.history[0]["accepted"]
    kept = sorted(c["updates"]["suffix"] for c in result.history[0]["candidates"] if c["kept"])
    assert kept == ["!", "!!"], "the beam holds both candidates, the old state fell out"


def test_without_val_set_updates_are_applied() -> None:
    model = Suffix("?")
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="!"), suggest(suffix=".")]))
    result = run(model, opt, data(2), batch_size=1)
    assert model.suffix.data == "."
    assert all(h["accepted"] for h in result.history)
    assert result.val_before is None and result.val_after is None


def test_feedback_of_the_whole_batch_reaches_one_proposal() -> None:
    model = Suffix("?")
    llm = scripted_llm([suggest(suffix="!")])
    opt = OptoPrime(model.parameters(), llm=llm)
    run(model, opt, data(5), batch_size=5, val_set=data(1))
    assert len(llm.calls) == 1
    prompt = llm.calls[0].messages[-1]["content"]
    for i in range(5):
        assert f"expected 'q{i}!'" in prompt


def test_an_unreadable_reply_is_recorded_and_training_goes_on() -> None:
    model = Suffix("?")
    opt = OptoPrime(model.parameters(), llm=scripted_llm(["no json here", suggest(suffix="!")]), max_retries=0)
    result = run(model, opt, data(2), batch_size=1, val_set=data(1))
    assert not result.history[0]["accepted"]
    assert "no valid update" in result.history[0]["reason"] or "could not be read" in result.history[0]["reason"]
    assert result.history[1]["accepted"] and model.suffix.data == "!"


def test_minibatch_items_run_in_parallel() -> None:
    workflow = MockLLM(lambda messages, **params: messages[-1]["content"], latency=0.2)
    model = Suffix("?", llm=workflow)
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="!")]))
    started = time.monotonic()
    result = run(model, opt, data(16), batch_size=16, max_workers=16)
    elapsed = time.monotonic() - started
    sequential = 16 * 0.2
    assert len(workflow.calls) == 16
    assert result.history[0]["seconds"] < 0.5 * sequential, result.history[0]["seconds"]
    assert elapsed < 0.5 * sequential


def test_calls_budget_stops_exactly_at_the_limit(tmp_path: Path) -> None:
    workflow = MockLLM(lambda messages, **params: messages[-1]["content"])
    model = Suffix("?", llm=workflow)
    choices = [suggest(suffix=s) for s in ("!", ".", "?!", "!!")]
    opt = OptoPrime(model.parameters(), llm=scripted_llm(choices * 10))
    # Per step: 2 train items + 1 optimizer call + 3 val items = 6 calls; the initial val costs 3.
    result = run(model, opt, data(20), val_set=data(3), batch_size=2, budget=Budget(calls=17), checkpoint=tmp_path)
    total = result.usage["total"]["calls"]
    assert total == 17, result.usage
    assert result.stop_reason.startswith("budget: calls")
    assert len(result.history) == 2, "two complete steps (3 + 2*6 = 15 calls), the third was cut short"
    assert model.suffix.data == result.best_state["suffix"] == "!"
    assert (tmp_path / "best.json").exists()


def test_token_budget_stops_new_calls_once_reached() -> None:
    sizes: list[int] = []  # tokens of each call, counted the way MockLLM counts them

    def sized(reply: Callable[[Any], str]) -> Callable[..., str]:
        def handler(messages: Any, **params: Any) -> str:
            text = reply(messages)
            sizes.append(estimate_prompt_tokens(messages) + estimate_tokens(text))
            return text

        return handler

    workflow = MockLLM(sized(lambda messages: messages[-1]["content"] * 10))
    model = Suffix("?", llm=workflow)
    choices = [suggest(suffix=s) for s in ("!", ".", "!!", "?")]
    opt = OptoPrime(model.parameters(), llm=MockLLM(sized(lambda messages: choices[len(sizes) % 4])))
    limit = 2500
    result = run(model, opt, data(40), val_set=data(4), batch_size=2, budget=Budget(tokens=limit), max_workers=1)
    used = result.usage["total"]["tokens"]
    assert used == sum(sizes)
    assert result.stop_reason.startswith("budget: tokens")
    assert len(result.history) >= 2
    # Once the limit is reached no call starts; only the call that crossed it may end above it.
    assert limit <= used < limit + sizes[-1], (used, sizes[-1])
    assert sum(sizes[:-1]) < limit


def test_optimizer_only_budget_leaves_evaluation_free() -> None:
    workflow = MockLLM(lambda messages, **params: messages[-1]["content"])
    model = Suffix("?", llm=workflow)
    opt_llm = scripted_llm([suggest(suffix=s) for s in ("!", ".", "!!", "?")])
    opt = OptoPrime(model.parameters(), llm=opt_llm)
    result = run(model, opt, data(10), val_set=data(2), batch_size=2, budget=Budget(calls=3, scope="optimizer"))
    assert len(opt_llm.calls) == 3 == result.usage["optimizer"]["calls"]
    assert result.usage["evaluation"]["calls"] > 3
    assert len(result.history) == 3 and result.stop_reason.startswith("budget: calls")


class TwoModels(Suffix):
    """A workflow of two models: ``drafter`` answers, ``checker`` repeats the draft; then the suffix."""

    def __init__(self) -> None:
        super().__init__("?")
        self.drafter = MockLLM(lambda messages, **params: messages[-1]["content"], model="drafter")
        self.checker = MockLLM(lambda messages, **params: messages[-1]["content"], model="checker")

    def forward(self, x: str) -> Any:
        draft = self.drafter.complete([{"role": "user", "content": x}]).text
        return self.checker.complete([{"role": "user", "content": draft}]).text + self.suffix


def _spent(llm: MockLLM, replies: list[str]) -> tuple[int, int, int]:
    """Calls, prompt tokens and completion tokens of the calls ``llm`` received, given its ``replies``."""
    prompt = sum(estimate_prompt_tokens(c.messages) for c in llm.calls)
    return len(llm.calls), prompt, sum(estimate_tokens(r) for r in replies)


def test_usage_is_counted_by_model_as_well_as_by_phase(tmp_path: Path) -> None:
    model = TwoModels()
    replies = [suggest(suffix="!"), suggest(suffix=".")]
    opt_llm = MockLLM(replies, model="optimizer")
    opt = OptoPrime(model.parameters(), llm=opt_llm)
    result = run(model, opt, data(4), val_set=data(3), test_set=data(2), batch_size=2, checkpoint=tmp_path)
    by_model = result.usage["by_model"]
    assert list(by_model) == ["checker", "drafter", "optimizer"]
    echoed = {
        name: [c.messages[-1]["content"] for c in llm.calls]
        for name, llm in (("drafter", model.drafter), ("checker", model.checker))
    }
    for name, llm, answers in (
        ("drafter", model.drafter, echoed["drafter"]),
        ("checker", model.checker, echoed["checker"]),
        ("optimizer", opt_llm, replies),
    ):
        counts = by_model[name]
        assert (counts["calls"], counts["prompt_tokens"], counts["completion_tokens"]) == _spent(llm, answers), name
    assert set(by_model["optimizer"]["phases"]) == {"optimizer"} and by_model["optimizer"]["calls"] == 2
    for name in ("drafter", "checker"):
        phases = by_model[name]["phases"]
        assert set(phases) == {"evaluation", "test"}, name
        # validation, then 2 steps of (2 items, validation); the test set before and after
        assert (phases["evaluation"]["calls"], phases["test"]["calls"]) == (13, 4), name
    for phase in ("optimizer", "evaluation", "test"):
        split = sum(m["phases"].get(phase, {}).get("calls", 0) for m in by_model.values())
        assert split == result.usage[phase]["calls"], phase
    saved = json.loads((tmp_path / "checkpoint.json").read_text(encoding="utf-8"))
    assert saved["usage"]["by_model"] == by_model
    report = result.report()
    assert "### By model" in report and "| drafter | evaluation 13, test 4 | 17 |" in report


def test_seconds_budget_ends_the_run_cleanly() -> None:
    workflow = MockLLM(lambda messages, **params: messages[-1]["content"], latency=0.05)
    model = Suffix("?", llm=workflow)
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="!")] + [suggest(suffix=".")] * 50))
    started = time.monotonic()
    result = run(model, opt, data(200), val_set=data(2), batch_size=2, budget=Budget(seconds=0.6), max_workers=1)
    assert time.monotonic() - started < 0.6 + 1.0  # the check runs before each item of 0.05 s
    assert result.stop_reason.startswith("budget: seconds")
    assert model.suffix.data == "!"


def test_model_must_return_nodes_when_training() -> None:
    class Plain(Suffix):
        def __call__(self, x: str) -> Any:
            return x + self.suffix.data

    model = Plain("?")
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="!")]))
    with pytest.raises(InvalidInputError, match="not a Node"):
        run(model, opt, data(2))


def test_bad_arguments_are_typed_errors(tmp_path: Path) -> None:
    model = Suffix("?")
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="!")]))
    with pytest.raises(InvalidInputError, match="Module"):
        run(object(), opt, data(2))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="Optimizer"):
        run(model, object(), data(2))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="batch_size"):
        run(model, opt, data(2), batch_size=0)
    with pytest.raises(ConfigurationError, match="val_set"):
        run(model, opt, data(2), beam_width=2)
    with pytest.raises(ConfigurationError, match="checkpoint"):
        run(model, opt, data(2), resume=True)
    with pytest.raises(InvalidInputError, match="Budget"):
        run(model, opt, data(2), budget={"calls": 3})
    other = Suffix("?")
    with pytest.raises(ConfigurationError, match="not in the model"):
        run(other, opt, data(2))


class Checked(Module):
    """Appends the suffix, but its bundled check raises on inputs starting with "bad"."""

    def __init__(self, llm: MockLLM | None = None) -> None:
        self.suffix = Parameter("?", name="suffix")
        self.llm = llm

    @bundle
    def check(self, x: str, suffix: str) -> str:
        if self.llm is not None:
            x = self.llm.complete([{"role": "user", "content": x}]).text
        if x.startswith("bad"):
            raise ValueError(f"cannot answer {x!r}")
        return x + suffix

    def forward(self, x: str) -> Any:
        return self.check(x, self.suffix)


def test_a_workflow_error_becomes_feedback_scored_zero() -> None:
    model = Checked()
    llm = scripted_llm([suggest(suffix="!")])
    opt = OptoPrime(model.parameters(), llm=llm)
    result = run(model, opt, [("q1", "q1!"), ("bad1", "bad1!")], val_set=data(2), batch_size=2)
    step = result.history[0]
    assert step["workflow_errors"] == 1 and step["train_score"] == 0.0
    prompt = llm.calls[0].messages[-1]["content"]
    assert "ValueError: cannot answer 'bad1'" in prompt, "the error reached the parameter as feedback"
    assert model.suffix.data == "!"


def test_a_budget_running_out_inside_a_bundle_ends_the_run_not_the_item() -> None:
    workflow = MockLLM(lambda messages, **params: messages[-1]["content"])
    model = Checked(llm=workflow)
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="!")] * 10))
    result = run(model, opt, data(10), val_set=data(2), batch_size=2, budget=Budget(calls=8), max_workers=1)
    # 2 calls for the baseline, 5 for step 1 (2 items, 1 proposal, 2 val); step 2 is cut inside its 2nd item.
    assert result.stop_reason.startswith("budget: calls")
    assert result.usage["total"]["calls"] == 8
    assert len(result.history) == 1 and result.history[0]["workflow_errors"] == 0


def test_minibatches_run_in_training_mode_and_validation_in_eval_mode() -> None:
    modes: list[tuple[str, bool]] = []

    class Recording(Suffix):
        def forward(self, x: str) -> Any:
            modes.append((x[0], self.training))
            return super().forward(x)

    model = Recording("?")
    model.eval()
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="!")]))
    run(model, opt, data(2), val_set=[("v0", "v0!")], test_set=[("t0", "t0!")], batch_size=2)
    assert {m for c, m in modes if c == "q"} == {True}
    assert {m for c, m in modes if c in "vt"} == {False}
    assert model.training is False, "the caller's mode is restored"


def test_progress_bar_shows_step_scores_tokens_and_time(capsys: pytest.CaptureFixture[str]) -> None:
    model = Suffix("?")
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="!"), suggest(suffix=".")]))
    run(model, opt, data(2), val_set=data(1), batch_size=1, progress=True)
    err = capsys.readouterr().err
    assert "2/2" in err
    for field in ("train=", "val=1.00", "tokens=", "time="):
        assert field in err, err


def test_a_failing_guide_stops_training_with_the_best_state_in_place(tmp_path: Path) -> None:
    calls = {"n": 0}

    def fragile(output: Any, target: Any) -> Any:
        calls["n"] += 1
        if 6 < calls["n"] < 100:  # baseline (2) and step 1 (2 train + 2 val) pass, then the guide breaks
            raise RuntimeError("guide bug")
        return exact(output, target)

    model = Suffix("?")
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="!"), suggest(suffix=".")]))
    with pytest.raises(RuntimeError, match="guide bug"):
        train(model, data(4), fragile, opt, val_set=data(2), batch_size=2, checkpoint=tmp_path, progress=False)
    assert model.suffix.data == "!", "the best state so far is in place"
    calls["n"] = 100  # the guide is fixed: resuming continues after the last completed step
    model = Suffix("?")
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix=".")]))
    result = train(
        model, data(4), fragile, opt, val_set=data(2), batch_size=2, checkpoint=tmp_path, resume=True, progress=False
    )
    assert [h["step"] for h in result.history] == [1, 2]
    assert model.suffix.data == "!" and not result.history[1]["accepted"]


def test_the_test_passes_per_item_outcomes_are_in_the_event_log() -> None:
    model = Suffix("?")
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="!")]))
    result = run(model, opt, data(4), val_set=data(3), test_set=data(2), batch_size=4)
    passes = [e for e in result.events if e["event"] == "items"]
    assert [(e["phase"], e["step"]) for e in passes] == [("test", 0), ("test", 1)]
    before, after = passes[0]["items"], passes[1]["items"]
    assert item_scores(before) == {0: 0.0, 1: 0.0} and item_scores(after) == {0: 1.0, 1: 1.0}
    assert after[0]["output"] == "q0!" and after[0]["feedback"] == "Correct."
    assert before[1]["feedback"] == "Wrong: expected 'q1!', got 'q1?'."


class ThreadedSuffix(Suffix):
    """Suffix whose model call runs in a thread the workflow starts itself (standard library only)."""

    def __init__(self, suffix: str, llm: MockLLM, how: str) -> None:
        super().__init__(suffix, llm=llm)
        self.how = how

    def forward(self, x: str) -> Any:
        assert self.llm is not None
        llm = self.llm

        def ask() -> str:
            return llm.complete([{"role": "user", "content": x}]).text

        if self.how == "pool":
            with ThreadPoolExecutor(1) as pool:
                return pool.submit(ask).result() + self.suffix
        outcome: list[Any] = []
        worker = threading.Thread(target=lambda: outcome.append(_capture(ask)))
        worker.start()
        worker.join()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0] + self.suffix


def _capture(fn: Callable[[], str]) -> str | BaseException:
    try:
        return fn()
    except BaseException as e:
        return e


@pytest.mark.parametrize("how", ["thread", "pool"])
def test_calls_from_threads_the_workflow_starts_count_against_the_budget(how: str) -> None:
    workflow = MockLLM(lambda messages, **params: messages[-1]["content"])
    model = ThreadedSuffix("?", workflow, how)
    choices = [suggest(suffix=s) for s in ("!", ".", "?!", "!!")]
    opt_llm = scripted_llm(choices * 10)
    opt = OptoPrime(model.parameters(), llm=opt_llm)
    result = run(model, opt, data(20), val_set=data(3), batch_size=2, budget=Budget(calls=17))
    assert result.usage["total"]["calls"] == 17 == len(workflow.calls) + len(opt_llm.calls)
    assert result.usage["evaluation"]["calls"] == len(workflow.calls) > 0
    assert result.stop_reason.startswith("budget: calls")
    assert len(result.history) == 2


# -- async workflows -------------------------------------------------------------------------------


def echo(latency: float = 0.0) -> MockLLM:
    return MockLLM(lambda messages, **params: messages[-1]["content"], latency=latency)


def test_an_async_workflow_trains_with_its_minibatch_run_concurrently() -> None:
    model = AsyncSuffix("?", llm=echo(latency=0.2))
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="!")]))
    result = run(model, opt, data(16), val_set=data(2), batch_size=16, max_workers=16)
    assert result.val_before == 0.0 and result.val_after == 1.0 and model.suffix.data == "!"
    assert result.history[0]["seconds"] < 0.5 * 16 * 0.2, "the 16 items of 0.2 s overlapped"
    assert "suffix" in opt.llm.calls[0].messages[-1]["content"]  # type: ignore[attr-defined]


def test_a_calls_budget_stops_an_async_workflow_exactly_where_a_plain_one_stops(tmp_path: Path) -> None:
    ended = []
    for make, where in ((Suffix, tmp_path / "plain"), (AsyncSuffix, tmp_path / "async")):
        model = make("?", llm=echo())
        choices = [suggest(suffix=s) for s in ("!", ".", "?!", "!!")]
        opt = OptoPrime(model.parameters(), llm=scripted_llm(choices * 10))
        result = run(model, opt, data(20), val_set=data(3), batch_size=2, budget=Budget(calls=17), checkpoint=where)
        ended.append((result.usage["total"]["calls"], result.stop_reason, len(result.history), model.suffix.data))
        assert (where / "checkpoint.json").is_file() and (where / "best.json").is_file()
    assert ended[0] == ended[1] == (17, ended[0][1], 2, "!"), ended
    assert ended[0][1].startswith("budget: calls")


def test_an_async_workflow_trains_inside_a_running_event_loop() -> None:
    model = AsyncSuffix("?", llm=echo())
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="!")]))

    async def notebook_cell() -> Any:
        return run(model, opt, data(4), val_set=data(2), batch_size=4)

    result = asyncio.run(notebook_cell())
    assert result.val_after == 1.0 and model.suffix.data == "!"


@pytest.mark.parametrize(("test_workers", "most_at_once"), [(1, 1), (None, 4)])
def test_the_test_set_is_scored_on_test_workers(test_workers: int | None, most_at_once: int) -> None:
    lock, running, peak = threading.Lock(), [0], {"test": 0, "other": 0}

    def answer(messages: Any, **params: Any) -> str:
        question = messages[-1]["content"]
        which = "test" if question.startswith("t") else "other"
        with lock:
            running[0] += 1
            peak[which] = max(peak[which], running[0])
        time.sleep(0.03)
        with lock:
            running[0] -= 1
        return str(question)

    model = Suffix("?", llm=MockLLM(answer))
    opt = OptoPrime(model.parameters(), llm=scripted_llm([suggest(suffix="!")]))
    test = [(f"t{i}", f"t{i}!") for i in range(8)]
    result = run(
        model, opt, data(4), val_set=data(8), test_set=test, batch_size=4, max_workers=4, test_workers=test_workers
    )
    assert (result.test_before, result.test_after) == (0.0, 1.0)
    assert peak["test"] == most_at_once and peak["other"] == 4, "validation still runs on max_workers"
    assert result.config["test_workers"] == test_workers


class CountingOptoPrime(OptoPrime):
    """OptoPrime counting how often its state is taken and loaded (each a JSON round trip)."""

    copies = 0

    def state_dict(self) -> dict[str, Any]:
        CountingOptoPrime.copies += 1
        return super().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        CountingOptoPrime.copies += 1
        super().load_state_dict(state_dict)


@pytest.mark.parametrize("search", ["greedy", "pareto"])
def test_the_optimizer_state_is_not_copied_per_candidate(search: str) -> None:
    copies = {}
    for n in (1, 3):
        model = Suffix("?")
        replies = [suggest(suffix=s) for s in ("!", ".", "!!")[:n]]
        opt = CountingOptoPrime(model.parameters(), llm=MockLLM(replies, cycle=True), n_candidates=n)
        CountingOptoPrime.copies = 0
        result = run(model, opt, data(4), val_set=data(3), batch_size=2, search=search)
        assert len(result.history) == 2 and len(result.history[0]["candidates"]) == n
        copies[n] = CountingOptoPrime.copies
    assert copies[3] == copies[1], f"optimizer state copies grow with the candidates: {copies}"
