"""The Optimizer base class: groups, state, propose/apply/step, saving."""

from __future__ import annotations

import json
from typing import Any

import pytest

from feedprop.errors import (
    ConfigurationError,
    InvalidInputError,
    StateDictError,
    SuggestionError,
)
from feedprop.llm import Message, MockLLM, set_default
from feedprop.node import Parameter
from feedprop.optim.conversation import Conversation
from feedprop.optim.optimizer import Candidate, Optimizer, Proposal


class Echo(Optimizer):
    """The smallest real subclass: one fixed prompt, asked through a Conversation."""

    def __init__(self, params: Any, llm: Any = None, **options: Any) -> None:
        super().__init__(params, llm, **options)
        self.conversation = Conversation(self)

    def _propose(self) -> Proposal:
        messages = [Message(role="user", content="improve the variables")]
        return self.conversation.propose(messages, others=["question"])


def reply(suggestion: dict[str, Any], reasoning: str = "because") -> str:
    return json.dumps({"reasoning": reasoning, "suggestion": suggestion})


@pytest.fixture
def params() -> tuple[Parameter[Any], Parameter[Any], Parameter[Any]]:
    return (
        Parameter("Answer the question.", name="instruction"),
        Parameter("def f(x):\n    return x\n", name="__code0", kind="code"),
        Parameter(0.5, name="temperature", bounds=(0.0, 1.0)),
    )


# --- construction ---------------------------------------------------------------------------


def test_groups_options_and_names(params: Any) -> None:
    a, b, c = params
    opt = Echo([{"params": [a, b]}, {"params": [c], "max_tokens": 50}], llm=MockLLM("{}"), max_tokens=100)
    assert [g["max_tokens"] for g in opt.param_groups] == [100, 50]
    assert [name for name, _ in opt.named_parameters()] == ["instruction", "__code0", "temperature"]
    assert opt.state == {"instruction": {}, "__code0": {}, "temperature": {}}


def test_colliding_names_get_suffixes() -> None:
    a, b = Parameter("x", name="prompt"), Parameter("y", name="prompt")
    opt = Echo([a, b], llm=MockLLM("{}"))
    assert [name for name, _ in opt.named_parameters()] == ["prompt", "prompt_2"]
    assert opt.name_of(b) == "prompt_2"


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda p: Echo([], llm=MockLLM("{}")), ConfigurationError, "empty"),
        (lambda p: Echo(["text"], llm=MockLLM("{}")), InvalidInputError, "Parameter"),
        (lambda p: Echo(p[0], llm=MockLLM("{}")), InvalidInputError, "iterable"),
        (lambda p: Echo([p[0], p[0]], llm=MockLLM("{}")), ConfigurationError, "more than once"),
        (lambda p: Echo([p[0]], llm=MockLLM("{}"), lr=0.1), ConfigurationError, "unknown option"),
        (lambda p: Echo([p[0]], llm=MockLLM("{}"), reply_format="yaml"), ConfigurationError, "reply_format"),
        (lambda p: Echo([p[0]], llm=MockLLM("{}"), max_retries=-1), ConfigurationError, "max_retries"),
        (lambda p: Echo([p[0]], llm=MockLLM("{}"), temperature=5), ConfigurationError, "temperature"),
        (lambda p: Echo([p[0]], llm="gpt-4"), InvalidInputError, "feedprop.llm.LLM"),
        (lambda p: Echo([Parameter(1, trainable=False)], llm=MockLLM("{}")), ConfigurationError, "not trainable"),
        (lambda p: Echo([{"no_params": []}], llm=MockLLM("{}")), InvalidInputError, "'params'"),
    ],
)
def test_bad_construction(params: Any, make: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make(params)


# --- propose / apply / step -----------------------------------------------------------------


def test_propose_does_not_change_parameters(params: Any) -> None:
    a, _b, c = params
    llm = MockLLM(reply({"instruction": "Answer briefly.", "temperature": 0.2}))
    opt = Echo(params, llm=llm)
    proposal = opt.propose()
    assert (a.data, c.data) == ("Answer the question.", 0.5)
    assert proposal.candidates[0].updates == {"instruction": "Answer briefly.", "temperature": 0.2}
    assert proposal.candidates[0].reasoning == "because"
    assert proposal.usage.calls == 1
    opt.apply(proposal)
    assert (a.data, c.data) == ("Answer briefly.", 0.2)


def test_step_applies_first_candidate(params: Any) -> None:
    opt = Echo(params, llm=MockLLM(reply({"temperature": "0.9"})))
    proposal = opt.step()
    assert params[2].data == 0.9
    assert proposal.best.updates == {"temperature": 0.9}


def test_apply_candidate_and_mapping_tolerantly(params: Any) -> None:
    _a, b, c = params
    opt = Echo(params, llm=MockLLM("{}"))
    opt.apply(Candidate({"temperature": 0.1}))
    opt.apply({"Temperature": 0.3, "code0": "def f(x):\n    return x + 1"})
    assert c.data == 0.3
    assert "x + 1" in b.data


def test_apply_is_atomic_and_typed(params: Any) -> None:
    a, _b, _c = params
    opt = Echo(params, llm=MockLLM("{}"))
    with pytest.raises(SuggestionError, match="outside the bounds"):
        opt.apply({"instruction": "New.", "temperature": 3.0})
    assert a.data == "Answer the question."  # nothing changed
    with pytest.raises(SuggestionError, match="owns"):
        opt.apply({"question": "?"})
    with pytest.raises(InvalidInputError):
        opt.apply(["instruction", "x"])  # type: ignore[arg-type]


def test_a_refused_candidate_value_changes_nothing_and_is_a_suggestion_error(params: Any) -> None:
    a, _b, c = params
    opt = Echo(params, llm=MockLLM("{}"))
    with pytest.raises(SuggestionError, match="temperature"):
        opt.apply(Candidate({"instruction": "New.", "temperature": "hot"}))
    assert (a.data, c.data) == ("Answer the question.", 0.5)


def test_an_applied_update_is_validated_once(params: Any) -> None:
    checked: list[str] = []

    class Counting(Echo):
        def validate(self, name: str, value: Any) -> Any:
            checked.append(name)
            return super().validate(name, value)

    opt = Counting(params, llm=MockLLM(reply({"temperature": 0.2})))
    opt.step()
    assert checked == ["temperature"] and params[2].data == 0.2
    opt.apply({"temperature": 0.3})
    assert checked == ["temperature", "temperature"] and params[2].data == 0.3


def test_empty_proposal_applies_nothing(params: Any) -> None:
    opt = Echo(params, llm=MockLLM(reply({})))
    proposal = opt.step()
    assert proposal.best.updates == {}
    assert params[0].data == "Answer the question."


def test_zero_feedback(params: Any) -> None:
    a = params[0]
    (a + "!").backward("too short")
    assert a.feedback
    Echo(params, llm=MockLLM("{}")).zero_feedback()
    assert a.feedback == []


def test_llm_none_uses_the_default(params: Any) -> None:
    mock = MockLLM(reply({"temperature": 0.4}))
    set_default(mock)
    try:
        opt = Echo(params)
        opt.step()
    finally:
        set_default(None)
    assert params[2].data == 0.4
    assert opt.llm is mock


def test_base_class_requires_propose(params: Any) -> None:
    with pytest.raises(NotImplementedError):
        Optimizer(params, llm=MockLLM("{}")).step()


# --- saving ---------------------------------------------------------------------------------


def test_state_dict_round_trip_is_json(params: Any) -> None:
    opt = Echo(params, llm=MockLLM(reply({"Question": 1})), max_tokens=123)
    opt.step()
    opt.state["instruction"]["seen"] = [1, 2, 3]
    sd = opt.state_dict()
    text = json.dumps(sd)
    fresh = Echo(params, llm=MockLLM("{}"))
    fresh.load_state_dict(json.loads(text))
    assert fresh.state_dict() == sd
    assert fresh.defaults["max_tokens"] == 123
    assert fresh.conversation.rejection_notes() == opt.conversation.rejection_notes()
    assert fresh.global_state["step"] == 1


def test_load_state_dict_errors(params: Any) -> None:
    opt = Echo(params, llm=MockLLM("{}"))
    sd = opt.state_dict()
    other = Echo([params[0]], llm=MockLLM("{}"))
    with pytest.raises(StateDictError) as info:
        other.load_state_dict(sd)
    assert info.value.unexpected == ["__code0", "temperature"]
    with pytest.raises(InvalidInputError, match="state_dict"):
        opt.load_state_dict({"state": {}})

    class Other(Echo):
        pass

    with pytest.raises(ConfigurationError, match="same kind"):
        Other(params, llm=MockLLM("{}")).load_state_dict(sd)


def test_state_must_stay_json(params: Any) -> None:
    opt = Echo(params, llm=MockLLM("{}"))
    opt.state["instruction"]["bad"] = object()
    with pytest.raises(InvalidInputError, match="JSON"):
        opt.state_dict()
