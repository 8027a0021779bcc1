"""Budget limits and run usage accounting."""

from __future__ import annotations

import pytest

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.training.budget import Budget, RunUsage


def test_remaining_counts_only_what_the_scope_covers() -> None:
    usage = RunUsage()
    usage.add("optimizer", calls=2, prompt_tokens=100, completion_tokens=20)
    usage.add("evaluation", calls=5, prompt_tokens=50, completion_tokens=5)
    usage.add("test", calls=100, prompt_tokens=10_000)
    everything = Budget(calls=10, tokens=1000)
    assert everything.remaining_calls(usage) == 3
    assert everything.remaining_tokens(usage) == 1000 - 175
    optimizer_only = Budget(calls=10, tokens=1000, scope="optimizer")
    assert optimizer_only.remaining_calls(usage) == 8
    assert optimizer_only.remaining_tokens(usage) == 880
    assert Budget().remaining_calls(usage) is None
    assert not everything.counts("test") and everything.counts("evaluation")
    assert optimizer_only.counts("optimizer") and not optimizer_only.counts("evaluation")


def test_exhausted_names_the_limit() -> None:
    usage = RunUsage()
    usage.add("evaluation", calls=3)
    assert Budget(calls=3).exhausted(usage, 0.0) == "budget: calls (3/3)"
    assert Budget(calls=4).exhausted(usage, 0.0) is None
    assert Budget(calls=3, scope="optimizer").exhausted(usage, 0.0) is None
    usage.add("optimizer", prompt_tokens=7, completion_tokens=3)
    assert Budget(tokens=10).exhausted(usage, 0.0) == "budget: tokens (10/10)"
    reason = Budget(seconds=1.5).exhausted(usage, 2.0)
    assert reason is not None and reason.startswith("budget: seconds")
    assert Budget(calls=0).remaining_calls(RunUsage()) == 0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"calls": -1}, ConfigurationError),
        ({"calls": 1.5}, InvalidInputError),
        ({"tokens": True}, InvalidInputError),
        ({"seconds": float("inf")}, ConfigurationError),
        ({"seconds": "10"}, InvalidInputError),
        ({"scope": "eval"}, ConfigurationError),
    ],
)
def test_bad_budgets_are_refused(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        Budget(**kwargs)  # type: ignore[arg-type]


def test_usage_round_trips_through_json() -> None:
    usage = RunUsage()
    usage.add("optimizer", calls=1, prompt_tokens=10, completion_tokens=2, seconds=0.25)
    usage.add("test", calls=4, cache_hits=1)
    again = RunUsage.from_dict(usage.to_dict())
    assert again == usage
    assert again.to_dict()["total"]["tokens"] == 12
    with pytest.raises(ConfigurationError):
        usage.add("training", calls=1)
    with pytest.raises(ConfigurationError):
        usage.add("optimizer", dollars=1)


def test_usage_by_model_adds_up_to_each_phase_and_round_trips() -> None:
    usage = RunUsage()
    usage.add("evaluation", "drafter", calls=4, prompt_tokens=40, completion_tokens=8, seconds=0.5)
    usage.add("evaluation", "checker", calls=4, cache_hits=2, prompt_tokens=20)
    usage.add("test", "drafter", calls=2, prompt_tokens=20, completion_tokens=4)
    usage.add("optimizer", "thinker", calls=1, prompt_tokens=300, completion_tokens=60)
    data = usage.to_dict()
    assert list(data["by_model"]) == ["checker", "drafter", "thinker"]
    drafter = data["by_model"]["drafter"]
    assert (drafter["calls"], drafter["tokens"], drafter["seconds"]) == (6, 72, 0.5)
    assert list(drafter["phases"]) == ["evaluation", "test"] and drafter["phases"]["test"]["calls"] == 2
    assert data["by_model"]["checker"]["cache_hits"] == 2 == data["evaluation"]["cache_hits"]
    for phase in ("optimizer", "evaluation", "test"):
        split = [m["phases"].get(phase, {}).get("calls", 0) for m in data["by_model"].values()]
        assert data[phase]["calls"] == sum(split), phase
    again = RunUsage.from_dict(data)
    assert again == usage and again.to_dict() == data
    assert usage.model_total("nobody")["calls"] == 0


def test_a_record_without_usage_by_model_still_loads_and_says_so() -> None:
    old = {"optimizer": {"calls": 3, "prompt_tokens": 90}, "evaluation": {"calls": 10}, "total": {"calls": 13}}
    usage = RunUsage.from_dict(old)
    assert usage.models is None and usage.total("calls") == 13
    usage.add("evaluation", "drafter", calls=1)  # a resumed old run keeps counting phases, not models
    assert usage.total("calls") == 14 and "by_model" not in usage.to_dict()
    assert RunUsage.from_dict(usage.to_dict()).models is None
    assert RunUsage.from_dict({}).models == {}, "a record that spent nothing misses nothing"


def test_merging_a_part_of_the_run_keeps_its_models_in_the_chosen_phases() -> None:
    part = RunUsage()
    part.add("optimizer", "thinker", calls=2, prompt_tokens=10)
    part.add("evaluation", "drafter", calls=5)
    part.add("test", "drafter", calls=7)
    whole = RunUsage()
    whole.add("evaluation", "drafter", calls=1)
    whole.merge(part, ("optimizer", "evaluation"))
    assert whole.model_total("drafter")["calls"] == 6 and whole.model_total("thinker")["calls"] == 2
    assert whole.get("test", "calls") == 0
    whole.merge(RunUsage.from_dict({"evaluation": {"calls": 4}}))
    assert whole.models is None and whole.get("evaluation", "calls") == 10
