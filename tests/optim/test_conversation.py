"""The conversation with the model: tolerant keys, refusals, retries, candidate sampling, reply schemas."""

from __future__ import annotations

import json
from typing import Any

import pytest

from feedprop.errors import ConfigurationError
from feedprop.llm import Message, MockLLM, ResponseCache
from feedprop.node import Parameter
from feedprop.optim.conversation import Attempt, Conversation
from feedprop.optim.optimizer import Optimizer, Proposal


class Echo(Optimizer):
    """The smallest real subclass: one fixed prompt, the conversation's ask loop for each sample."""

    def __init__(self, params: Any, llm: Any = None, **options: Any) -> None:
        super().__init__(params, llm, **options)
        self.conversation = Conversation(self)

    def _propose(self) -> Proposal:
        messages = [Message(role="user", content="improve the variables")]

        def build(sample: int) -> Attempt:
            return self.conversation.ask(messages, others=["question"], sample=sample)

        return self.conversation.sample_candidates(build)


def reply(suggestion: dict[str, Any], reasoning: str = "because") -> str:
    return json.dumps({"reasoning": reasoning, "suggestion": suggestion})


@pytest.fixture
def params() -> tuple[Parameter[Any], Parameter[Any], Parameter[Any]]:
    return (
        Parameter("Answer the question.", name="instruction"),
        Parameter("def f(x):\n    return x\n", name="__code0", kind="code"),
        Parameter(0.5, name="temperature", bounds=(0.0, 1.0)),
    )


# --- tolerant keys, refusals and their feedback ---------------------------------------------


def test_tolerant_keys_and_refusal_of_non_parameters(params: Any) -> None:
    llm = MockLLM(
        [
            reply({"code0": "def f(x):\n    return 2 * x", "Question": "What is 3+3?", "banana": 1}),
            reply({}),
        ]
    )
    opt = Echo(params, llm=llm)
    proposal = opt.step()
    assert "2 * x" in params[1].data
    reasons = {r.key: r.reason for r in proposal.rejected}
    assert "not a trainable parameter (it is an input" in reasons["Question"]
    assert "'instruction', '__code0', 'temperature'" in reasons["Question"]
    assert "not a trainable parameter" in reasons["banana"]
    # The refusals are shown to the model on the next attempt.
    assert [n.split(":")[0] for n in opt.conversation.rejection_notes()] == ["'Question'", "'banana'"]


class Offers(Optimizer):
    """Offers the model only the parameters that received feedback, as OptoPrime's problem does."""

    def __init__(self, params: Any, llm: Any = None, **options: Any) -> None:
        super().__init__(params, llm, **options)
        self.conversation = Conversation(self)

    def _propose(self) -> Proposal:
        shown = {name: p for name, p in self.named_parameters() if p.feedback}
        messages = [Message(role="user", content="improve the variables")]
        return self.conversation.sample_candidates(
            lambda sample: self.conversation.ask(messages, shown=shown, sample=sample)
        )


def test_a_trainable_parameter_without_feedback_is_refused_as_such_once_per_numbered_attempt() -> None:
    a, b = Parameter("first", name="a"), Parameter("second", name="b")
    (a + "!").backward("too plain")  # only a receives feedback
    llm = MockLLM([reply({"b": "changed"}), reply({"b": "changed again"})])
    opt = Offers([a, b], llm=llm, max_retries=1)
    proposal = opt.step()
    assert b.trainable and b.data == "second" and a.data == "first"
    expected = "'b' is trainable but received no feedback this step, so it stays as it is; "
    expected += "only these, which did, may be changed now: 'a'"
    assert [(r.key, r.attempt, r.reason) for r in proposal.rejected] == [("b", 1, expected), ("b", 2, expected)]
    assert [r["attempt"] for r in proposal.to_dict()["rejected"]] == [1, 2]
    assert "not a trainable parameter" not in llm.calls[1].messages[-1]["content"]
    assert opt.conversation.rejection_notes() == [f"'b': {expected}"], "shown to the model next time once"


def test_a_trainable_parameter_left_out_of_a_request_is_refused_as_such() -> None:
    a, b = Parameter("first", name="a"), Parameter("second", name="b")
    (a + b).backward("both matter")
    opt = Echo([a, b], llm=MockLLM(reply({"b": "x"})), max_retries=0)
    updates, rejected = opt.conversation.resolve({"b": "x"}, shown={"a": a})
    assert updates == {} and [r.reason for r in rejected] == [
        "'b' is trainable but not part of this request; only these may be changed here: 'a'"
    ]


def test_invalid_value_is_refused_and_never_applied(params: Any) -> None:
    llm = MockLLM(
        [
            reply({"code0": "def f(y):\n    return y", "temperature": 2.0, "instruction": "Fine."}),
        ]
    )
    opt = Echo(params, llm=llm, max_retries=0)
    proposal = opt.step()
    assert params[0].data == "Fine."
    assert params[1].data == "def f(x):\n    return x\n"
    assert params[2].data == 0.5
    assert {r.parameter for r in proposal.rejected} == {"__code0", "temperature"}


def test_retry_shows_parse_error_to_the_model(params: Any) -> None:
    llm = MockLLM(["I think the temperature should be lower.", reply({"temperature": 0.1})])
    opt = Echo(params, llm=llm)
    proposal = opt.step()
    assert params[2].data == 0.1
    assert len(llm.calls) == 2
    assert proposal.errors and "no JSON object" in proposal.errors[0]
    retry = llm.calls[1].messages
    assert retry[-2] == {"role": "assistant", "content": "I think the temperature should be lower."}
    assert "could not read your reply" in retry[-1]["content"]
    assert "no JSON object" in retry[-1]["content"]
    # The retry samples, so it does not repeat the first answer word for word.
    assert (llm.calls[0].params["temperature"], llm.calls[1].params["temperature"]) == (0.0, 0.8)


def test_retry_when_every_suggestion_was_refused(params: Any) -> None:
    llm = MockLLM([reply({"temperature": 7}), reply({"temperature": 0.7})])
    opt = Echo(params, llm=llm)
    opt.step()
    assert params[2].data == 0.7
    assert "outside the bounds" in llm.calls[1].messages[-1]["content"]


def test_retry_when_the_reply_only_repeats_current_values(params: Any) -> None:
    # Small models often copy the current value while their reasoning says what to change.
    same_code = "def f(x):\n    return x  # unchanged\n"  # equal to the current code by syntax tree
    llm = MockLLM([reply({"__code0": same_code, "temperature": 0.5}), reply({"temperature": 0.3})])
    opt = Echo(params, llm=llm)
    opt.step()
    assert params[2].data == 0.3
    assert len(llm.calls) == 2
    note = llm.calls[1].messages[-1]["content"]
    assert "temperature: your suggestion is its current value unchanged" in note
    assert "__code0: your suggestion is its current value unchanged" in note


def test_a_reply_that_leaves_variables_out_is_not_retried(params: Any) -> None:
    llm = MockLLM([reply({}), reply({"temperature": 0.3})])
    proposal = Echo(params, llm=llm).step()
    assert len(llm.calls) == 1 and params[2].data == 0.5
    assert [c.updates for c in proposal.candidates] == [{}]


def test_parse_failure_after_all_retries_gives_an_empty_proposal(params: Any) -> None:
    llm = MockLLM(["garbage", "more garbage", "still garbage"])
    opt = Echo(params, llm=llm, max_retries=2)
    proposal = opt.step()
    assert proposal.candidates == []
    assert len(proposal.errors) == 3
    assert proposal.usage.calls == 3


def test_truncated_reply_is_retried(params: Any) -> None:
    llm = MockLLM(['{"reasoning": "lower", "suggestion": {"temperature": 0.', reply({"temperature": 0.2})])
    opt = Echo(params, llm=llm)
    opt.step()
    assert params[2].data == 0.2
    assert "cut off" in llm.calls[1].messages[-1]["content"]


def test_xml_reply_format(params: Any) -> None:
    llm = MockLLM('<reasoning>r</reasoning><suggestion name="code0">def f(x):\n    return -x\n</suggestion>')
    opt = Echo(params, llm=llm, reply_format="xml")
    opt.step()
    assert params[1].data == "def f(x):\n    return -x"


def test_n_candidates_samples_distinct_candidates(params: Any) -> None:
    seen: list[float] = []

    def handler(messages: list[Message], **p: Any) -> str:
        seen.append(p["temperature"])
        return reply({"temperature": 0.1 if p["temperature"] == 0 else 0.9})

    opt = Echo(params, llm=MockLLM(handler), n_candidates=3, candidate_temperature=0.7)
    proposal = opt.propose()
    assert sorted(seen) == [0.0, 0.7, 0.7]
    assert [c.updates for c in proposal.candidates] == [{"temperature": 0.1}, {"temperature": 0.9}]
    assert proposal.usage.calls == 3
    opt.apply(proposal.candidates[1])
    assert params[2].data == 0.9


def test_prompt_budget_is_enforced(params: Any) -> None:
    class Big(Echo):
        def _propose(self) -> Proposal:
            attempt = self.conversation.ask([Message(role="user", content="x" * 10_000)])
            return Proposal(candidates=[attempt.candidate] if attempt.candidate else [])

    with pytest.raises(ConfigurationError, match="max_prompt_tokens"):
        Big(params, llm=MockLLM("{}"), max_prompt_tokens=1000).propose()


# --- JSON-schema constrained replies ----------------------------------------------------------------


def test_a_model_that_enforces_schemas_gets_one_keyed_by_the_legal_names(params: Any) -> None:
    llm = MockLLM(reply({"instruction": "Be brief."}), json_schema=True)
    Echo(list(params), llm=llm, json_schema=True).propose()
    fmt = llm.calls[0].params["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "reply"
    schema = fmt["json_schema"]["schema"]
    assert schema["required"] == ["reasoning", "suggestion"]
    suggestion = schema["properties"]["suggestion"]
    assert suggestion["additionalProperties"] is False
    assert suggestion["properties"] == {
        "instruction": {"type": "string"},
        "__code0": {"type": "string"},
        "temperature": {"type": "number"},
    }


@pytest.mark.parametrize(
    ("llm_schema", "options"),
    [(False, {}), (True, {}), (True, {"json_schema": False}), (True, {"reply_format": "xml"})],
)
def test_no_schema_by_default_without_support_or_when_switched_off(params: Any, llm_schema: bool, options: Any) -> None:
    text = reply({"instruction": "Be brief."})
    if options.get("reply_format") == "xml":
        text = '<reasoning>r</reasoning><suggestion name="instruction">Be brief.</suggestion>'
    llm = MockLLM(text, json_schema=llm_schema)
    proposal = Echo(list(params), llm=llm, **options).propose()
    assert "response_format" not in llm.calls[0].params
    assert proposal.best.updates == {"instruction": "Be brief."}


def test_the_tolerant_parser_still_reads_a_reply_the_schema_did_not_shape(params: Any) -> None:
    # An endpoint may claim support and still answer in prose around a fence: the parser reads it,
    # and the retry after an unreadable reply keeps the schema.
    llm = MockLLM(["not JSON at all", "Sure:\n```json\n" + reply({"temperature": 0.2}) + "\n```"], json_schema=True)
    proposal = Echo(list(params), llm=llm, json_schema=True).propose()
    assert proposal.best.updates == {"temperature": 0.2}
    assert all(call.params["response_format"]["type"] == "json_schema" for call in llm.calls)


def test_the_schema_is_part_of_the_cache_key(params: Any, tmp_path: Any) -> None:
    store = ResponseCache(tmp_path / "cache.sqlite")
    text = reply({"instruction": "Be brief."})
    plain, constrained = MockLLM(text, cache=store), MockLLM(text, cache=store, json_schema=True)
    Echo(list(params), llm=plain, json_schema=True).propose()
    Echo(list(params), llm=constrained, json_schema=True).propose()
    assert len(plain.calls) == 1 and len(constrained.calls) == 1, "a reply cached without the schema is not reused"


def test_bad_json_schema_option(params: Any) -> None:
    with pytest.raises(ConfigurationError, match="json_schema"):
        Echo(list(params), llm=MockLLM("{}"), json_schema="yes")
