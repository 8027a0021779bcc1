"""Compose: several optimizers as one."""

from __future__ import annotations

import json

import pytest

from feedprop.errors import ConfigurationError, InvalidInputError, StateDictError
from feedprop.llm import MockLLM
from feedprop.node import Parameter
from feedprop.optim import Compose, OptoPrime


def reply(**suggestion: object) -> str:
    return json.dumps({"reasoning": "r", "suggestion": suggestion})


def test_candidates_pooled_in_part_order_and_tagged() -> None:
    a, b = Parameter("x", name="a"), Parameter(1.0, name="b")
    (a + "!").backward("say y")
    (b * 2).backward("larger")
    first, second = MockLLM(reply(a="y")), MockLLM(reply(b=3.0))
    opt = Compose(OptoPrime([a], llm=first), OptoPrime([b], llm=second))
    proposal = opt.propose()
    assert [c.updates for c in proposal.candidates] == [{"a": "y"}, {"b": 3.0}]
    assert [c.extras["optimizer"] for c in proposal.candidates] == ["OptoPrime", "OptoPrime"]
    assert len(first.calls) == 1 and len(second.calls) == 1
    assert proposal.usage.calls == 2
    opt.apply(proposal.candidates[1])
    assert (a.data, b.data) == ("x", 3.0)


def test_colliding_names_are_translated_to_the_composite_names() -> None:
    a, b = Parameter("x", name="p"), Parameter("y", name="p")
    (a + b).backward("change the second")
    opt = Compose(OptoPrime([a], llm=MockLLM(reply(p="x"))), OptoPrime([b], llm=MockLLM(reply(p="z"))))
    assert sorted(dict(opt.named_parameters())) == ["p", "p_2"]
    updates = [c.updates for c in opt.propose().candidates]
    assert {"p_2": "z"} in updates
    opt.apply({"p_2": "z"})
    assert b.data == "z" and a.data == "x"


def test_bad_parts_are_refused() -> None:
    a = Parameter("x", name="a")
    with pytest.raises(ConfigurationError, match="at least one"):
        Compose()
    with pytest.raises(InvalidInputError, match="feedprop optimizers"):
        Compose("OptoPrime")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="more than once"):
        Compose(OptoPrime([a], llm=MockLLM("{}")), OptoPrime([a], llm=MockLLM("{}")))


def test_state_round_trip_covers_every_part_and_is_all_or_nothing() -> None:
    a, b = Parameter("x", name="a"), Parameter(1.0, name="b")
    (a + "!").backward("say y")
    (b * 2).backward("larger")
    opt = Compose(OptoPrime([a], llm=MockLLM(reply(a="y"))), OptoPrime([b], llm=MockLLM(reply(b=3.0))))
    opt.propose()
    state = json.loads(json.dumps(opt.state_dict()))
    assert [p["global_state"]["step"] for p in state["parts"]] == [1, 1]

    fresh = Compose(OptoPrime([a], llm=MockLLM("{}")), OptoPrime([b], llm=MockLLM("{}")))
    fresh.load_state_dict(state)
    assert fresh.state_dict() == opt.state_dict()

    before = fresh.state_dict()
    broken = json.loads(json.dumps(state))
    broken["parts"][1]["state"] = {"unknown": {}}
    with pytest.raises(StateDictError):
        fresh.load_state_dict(broken)
    assert fresh.state_dict() == before
    with pytest.raises(StateDictError, match="part"):
        fresh.load_state_dict({k: v for k, v in state.items() if k != "parts"})
