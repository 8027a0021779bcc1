"""Reflect: one diagnose call, then n plain rewrites, read tolerantly; one parameter per candidate."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from feedprop import ops
from feedprop.agent import run_agent
from feedprop.bundle import bundle
from feedprop.errors import ConfigurationError, ExecutionError, SuggestionError
from feedprop.llm import Completion, Message, MockLLM, ToolCall
from feedprop.module import Module
from feedprop.node import Feedback, Node, Parameter
from feedprop.optim import OptoPrime, Reflect
from feedprop.optim.reflect import is_failure, read_code, read_text
from feedprop.tool import Tool
from feedprop.training import ExactMatch, train

LAST_NUMBER = (
    "```python\n"
    "def extract(self, text: str) -> str:\n"
    "    numbers = re.findall(r'\\d+', text)\n"
    "    return numbers[-1] if numbers else text.strip()\n"
    "```"
)
DIAGNOSIS = "It returns the first number; the answer is the last number in the text."


class Extractor(Module):
    """A toy workflow: pure code whose first draft takes the first number instead of the last."""

    @bundle(trainable=True)
    def extract(self, text: str) -> str:
        import re

        numbers = re.findall(r"\d+", text)
        return numbers[0] if numbers else text.strip()

    def forward(self, text: Any) -> Node[Any]:
        out: Node[Any] = self.extract(text)
        return out


ITEMS = [
    ("I see 2 cats and 3 dogs, so 5 animals", "5"),
    ("1 apple plus 1 pear makes 2", "2"),
    ("7", "7"),
    ("3 red and 4 blue: 7 balls", "7"),
]


def is_diagnosis(messages: list[Message]) -> bool:
    return "what rule would fix it" in messages[-1]["content"]


def scripted(rewrites: list[str], diagnosis: str = DIAGNOSIS) -> MockLLM:
    """A model answering the diagnose call with ``diagnosis`` and rewrite calls with ``rewrites`` in turn."""
    lock = threading.Lock()
    served: list[str] = []

    def handler(messages: list[Message], **params: Any) -> str:
        if is_diagnosis(messages):
            return diagnosis
        with lock:
            served.append(rewrites[len(served) % len(rewrites)])
            return served[-1]

    return MockLLM(handler)


def extractor_with_feedback() -> tuple[Extractor, Parameter[Any]]:
    model = Extractor()
    guide = ExactMatch()
    for text, target in ITEMS:
        out = model(Node(text, name="text"))
        out.backward(guide(out.data, target))
    (code,) = model.parameters()
    return model, code


def test_one_diagnose_call_then_n_rewrites_asking_for_plain_code() -> None:
    _, code = extractor_with_feedback()
    llm = scripted([LAST_NUMBER])
    proposal = Reflect([code], llm=llm, n_candidates=3).propose()
    assert len(llm.calls) == 4 and proposal.usage.calls == 4
    first, *rewrites = llm.calls
    assert is_diagnosis(first.messages) and first.params["temperature"] == 0.0
    diagnose_prompt = first.messages[-1]["content"]
    assert "def extract(self, text: str) -> str:" in diagnose_prompt  # the current code
    assert "input text: 'I see 2 cats and 3 dogs, so 5 animals'" in diagnose_prompt
    assert "it returned: '2'" in diagnose_prompt and "Wrong: expected '5'" in diagnose_prompt
    assert "Case 4 (passed)" in diagnose_prompt  # failing cases first, then a passing one for contrast
    with_diagnosis = [DIAGNOSIS in call.messages[-1]["content"] for call in rewrites]
    assert sorted(with_diagnosis) == [False, True, True], "the last half of the samples (1 of 3) is asked plainly"
    for call in rewrites:
        prompt = call.messages[-1]["content"]
        assert not is_diagnosis(call.messages)
        assert "Wrong: expected '5'" in prompt
        assert "only the complete new function" in prompt and "(passed)" not in prompt
        assert "JSON" not in prompt and "json" not in prompt.lower().replace("```python", "")
        assert "response_format" not in call.params
        assert call.params["temperature"] == 0.8
    assert len(proposal.candidates) == 1, "identical samples are one candidate"
    (candidate,) = proposal.candidates
    assert candidate.reasoning == DIAGNOSIS and candidate.extras["parameter"] == code.name
    new = candidate.updates[code.name]
    assert new.startswith("import re\ndef extract(self, text: str) -> str:")  # the forgotten import is added
    assert proposal.replies[0] == DIAGNOSIS and len(proposal.replies) == 4


def test_each_rewrite_sample_has_its_own_cache_salt() -> None:
    _, code = extractor_with_feedback()
    salts: list[Any] = []
    llm = scripted([LAST_NUMBER])
    original = llm.complete

    def spy(messages: Any, **params: Any) -> Any:
        salts.append(params.get("cache_salt"))
        return original(messages, **params)

    llm.complete = spy  # type: ignore[method-assign]
    Reflect([code], llm=llm, n_candidates=3).propose()
    assert salts[0] is None and sorted(salts[1:]) == [0, 1, 2]


def test_the_rewrite_of_a_text_parameter_shows_the_calls_it_fed() -> None:
    instruction = Parameter("Answer.", name="instruction", description="system prompt of the solver")
    student = MockLLM(lambda messages, **params: "Let me think. 2 and 2 make four.")
    out = ops.llm_call(instruction, "What is 2+2?", llm=student)
    out.backward(Feedback("Wrong: expected '4'.", score=0.0))
    llm = scripted(['Sure! Here is the new instruction:\n\n"End your reply with the answer in digits."'])
    proposal = Reflect([instruction], llm=llm, n_candidates=2).propose()
    diagnose_prompt = llm.calls[0].messages[-1]["content"]
    assert "the model was asked:\n    What is 2+2?" in diagnose_prompt
    assert "it replied:\n    Let me think. 2 and 2 make four." in diagnose_prompt
    assert "system prompt of the solver" in diagnose_prompt and "What is wrong with the instruction" in diagnose_prompt
    # The two rewrites run on two threads: one from the diagnosis, one plain, in either order.
    rewrites = [call.messages[-1]["content"] for call in llm.calls[1:]]
    assert all("Return only the new text itself" in prompt for prompt in rewrites)
    assert sorted(DIAGNOSIS in prompt for prompt in rewrites) == [False, True]
    assert [c.updates for c in proposal.candidates] == [{"instruction": "End your reply with the answer in digits."}]


def test_a_tool_description_is_shown_with_the_calls_the_model_made() -> None:
    def lookup(item: str) -> float:
        return {"map": 15.0}[item]

    tool = Tool(lookup, "Price.")

    def agent(messages: list[Message], **params: Any) -> Completion | str:
        if messages[-1]["role"] == "tool":
            return "It costs " + messages[-1]["content"]
        return Completion("", tool_calls=(ToolCall("c1", "lookup", '{"item": "maps"}'),))

    out = run_agent("Use the tools.", "What do 2 maps cost?", tools=[tool], llm=MockLLM(agent))
    out.backward(Feedback("Wrong: the lookup failed.", score=0.0))
    llm = scripted(["The price of one item; name the item in the singular, e.g. map."])
    Reflect([tool.description], llm=llm, n_candidates=1).propose()
    diagnose_prompt = llm.calls[0].messages[-1]["content"]
    assert 'it called the tools:\n    lookup({"item": "maps"})' in diagnose_prompt
    assert "It costs error: KeyError: 'maps'" in diagnose_prompt  # the final output
    assert "What is wrong with the tool description" in diagnose_prompt
    assert "Write the new tool description" in llm.calls[1].messages[-1]["content"]


class Reviewed(Module):
    """A router's reply is read before the reviewer's call, so the router's call is in the reviewer's subgraph."""

    def __init__(self) -> None:
        self.route_prompt = Parameter("Reply SEARCH or DIRECT.", name="route_prompt")
        self.review_prompt = Parameter("Check.", name="review_prompt", description="system prompt of the reviewer")

    def forward(self, question: str) -> Node[Any]:
        route = ops.llm_call(self.route_prompt, question, llm=MockLLM("SEARCH"))
        if route.data == "SEARCH":
            return ops.llm_call(self.review_prompt, "Is 5 the answer to 2+2?", llm=MockLLM("VALID"))
        return route


def test_the_case_shows_the_call_given_the_parameter_not_a_value_read_before_it() -> None:
    model = Reviewed()
    out = model("What is 2+2?")
    out.backward(Feedback("Wrong: 5 is not 4.", score=0.0))
    assert any(n is out.control_parents[0] for n in model.review_prompt.feedback[0].subgraph)  # the router's call
    llm = scripted(["Accept only right answers.", "Reply INVALID unless the answer is right."])
    Reflect([model.review_prompt], llm=llm, n_candidates=1).propose()
    diagnose_prompt = llm.calls[0].messages[-1]["content"]
    assert "the model was asked:\n    Is 5 the answer to 2+2?" in diagnose_prompt
    assert "it replied:\n    VALID" in diagnose_prompt and "What is wrong with the instruction" in diagnose_prompt


def test_an_exception_in_the_code_is_a_failing_case() -> None:
    @bundle(trainable=True)
    def parse(text: str) -> int:
        return int(text)

    code = parse.parameter
    assert code is not None
    try:
        parse(Node("seven", name="text"))
    except ExecutionError as e:
        e.node.backward(Feedback(str(e), score=0.0))
    llm = scripted(["```python\ndef parse(text: str) -> int:\n    return int(text) if text.isdigit() else 0\n```"])
    proposal = Reflect([code], llm=llm, n_candidates=1).propose()
    prompt = llm.calls[0].messages[-1]["content"]
    assert "input text: 'seven'" in prompt and "it raised: ValueError" in prompt
    assert len(proposal.candidates) == 1


# -- reading replies ----------------------------------------------------------------------------------


CURRENT = "def extract(self, text: str) -> str:\n    return text\n"


def test_read_code_takes_the_fenced_block_or_the_bare_reply() -> None:
    fenced = "Here is the fix:\n```python\ndef extract(self, text: str) -> str:\n    return text[-1]\n```\nIt works."
    assert read_code(fenced, CURRENT) == "def extract(self, text: str) -> str:\n    return text[-1]"
    bare = "def extract(self, text: str) -> str:\n    return text[-1]\n\nThis returns the last character."
    assert read_code(bare, CURRENT) == "def extract(self, text: str) -> str:\n    return text[-1]"
    two_blocks = "```python\nprint('hi')\n```\n```python\ndef extract(self, text):\n    return text\n```"
    assert read_code(two_blocks, CURRENT).startswith("def extract(self, text):")


def test_read_code_drops_examples_and_decorators_and_adds_forgotten_imports() -> None:
    reply = (
        "```python\n"
        "@bundle(trainable=True)\n"
        "def extract(self, text: str) -> str:\n"
        "    return re.findall(r'\\d+', text)[-1] if math.pi else text\n"
        "\n"
        "print(extract(None, 'a 1 b 2'))\n"
        "result = extract(None, '3')\n"
        "if __name__ == '__main__':\n"
        "    print(result)\n"
        "```"
    )
    code = read_code(reply, CURRENT)
    assert code.splitlines()[:3] == ["import math", "import re", "def extract(self, text: str) -> str:"]
    assert "print" not in code and "@bundle" not in code and "result" not in code


def test_missing_import_still_parses_and_is_accepted() -> None:
    _, code = extractor_with_feedback()
    no_import = "def extract(self, text: str) -> str:\n    return re.findall(r'\\d+', text)[-1]\n"
    proposal = Reflect([code], llm=scripted([no_import]), n_candidates=1).propose()
    assert proposal.candidates and proposal.candidates[0].updates[code.name].startswith("import re\n")


def test_read_code_refuses_a_reply_without_code() -> None:
    with pytest.raises(SuggestionError, match="no Python function"):
        read_code("Take the last number instead of the first.", CURRENT)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("```python\ndef get_answer(self, text: str) -> str:\n    return text\n```", "must define the function"),
        ("```python\ndef extract(text: str) -> str:\n    return text\n```", "signature changed"),
        ("I would take the last number.", "no Python function"),
    ],
)
def test_a_wrong_function_is_refused_with_the_reason(reply: str, reason: str) -> None:
    _, code = extractor_with_feedback()
    proposal = Reflect([code], llm=scripted([reply]), n_candidates=1).propose()
    assert not proposal.candidates
    (rejection,) = proposal.rejected
    assert rejection.parameter == code.name and reason in rejection.reason


def test_an_unchanged_rewrite_is_refused() -> None:
    _, code = extractor_with_feedback()
    same = f"```python\n{code.data}\n```"
    proposal = Reflect([code], llm=scripted([same]), n_candidates=2).propose()
    assert not proposal.candidates
    assert [r.reason for r in proposal.rejected] == ["the rewrite is the current value unchanged"] * 2


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        ("Answer with the number only.", "Answer with the number only."),
        ('"Answer with the number only."', "Answer with the number only."),
        ("Instruction: Answer with the number only.", "Answer with the number only."),
        ("**New instruction:** Answer with the number only.", "Answer with the number only."),
        ("Here is the revised prompt:\n```\nCount, then answer.\n```\nThis helps.", "Count, then answer."),
        ("Count the items.\nThen answer with the number.", "Count the items.\nThen answer with the number."),
        ("Count the items.\n\nExplanation: counting first avoids mistakes.", "Count the items."),
    ],
)
def test_read_text_strips_what_is_not_the_text(reply: str, text: str) -> None:
    assert read_text(reply) == text


def test_code_in_place_of_an_instruction_is_refused() -> None:
    model = pipeline_with_feedback()
    opt = Reflect([model.instruction], llm=scripted([NEW_EXTRACT]), n_candidates=1)
    proposal = opt.propose()
    assert not proposal.candidates and "is text; write the new text itself" in proposal.rejected[0].reason


def test_read_text_refuses_an_empty_reply() -> None:
    with pytest.raises(SuggestionError, match="no text"):
        read_text('""')


def test_is_failure_reads_scores_and_words() -> None:
    assert is_failure(Feedback("x", score=0.0)) and not is_failure(Feedback("x", score=1.0))
    assert is_failure(Feedback("The answer should be shorter")) and not is_failure(Feedback("Correct!"))


# -- parameters, candidates, state ----------------------------------------------------------------------


class Pipeline(Module):
    """An instruction, then an extractor: two parameters on one path."""

    def __init__(self, student: MockLLM) -> None:
        self.instruction = Parameter("Answer.", name="instruction", description="system prompt")
        self.student = student

    @bundle(trainable=True)
    def extract(self, text: str) -> str:
        return text.split()[0]

    def forward(self, question: Any) -> Node[Any]:
        reply = ops.llm_call(self.instruction, question, llm=self.student)
        out: Node[Any] = self.extract(reply)
        return out


def pipeline_with_feedback() -> Pipeline:
    model = Pipeline(MockLLM("I think 4"))
    out = model(Node("2+2?", name="question"))
    out.backward(Feedback("Wrong: expected '4', got 'I'.", score=0.0))
    return model


NEW_EXTRACT = "```python\ndef extract(self, text: str) -> str:\n    return text.split()[-1]\n```"


def rewrites_by_kind(messages: list[Message], **params: Any) -> str:
    if is_diagnosis(messages):
        return DIAGNOSIS
    if "Python function" in messages[-1]["content"]:
        return NEW_EXTRACT
    return f"Answer with the number only. ({params['temperature']})"


def test_one_parameter_per_step_round_robin_code_first() -> None:
    model = pipeline_with_feedback()
    llm = MockLLM(rewrites_by_kind)
    opt = Reflect(model.parameters(), llm=llm, n_candidates=2)
    first = opt.propose()
    assert len(llm.calls) == 3, "1 diagnosis + 2 rewrites for one parameter"
    assert {tuple(c.updates) for c in first.candidates} == {("extract",)}
    second = opt.propose()
    assert {tuple(c.updates) for c in second.candidates} == {("instruction",)}
    assert len(llm.calls) == 6
    third = opt.propose()  # back to the extractor, whose (unapplied) rewrite is not offered twice
    assert not third.candidates and {r.parameter for r in third.rejected} == {"extract"}
    assert len(llm.calls) == 9


def test_every_failing_parameter_with_params_per_step_none() -> None:
    model = pipeline_with_feedback()
    llm = MockLLM(rewrites_by_kind)
    proposal = Reflect(model.parameters(), llm=llm, n_candidates=2, params_per_step=None).propose()
    assert len(llm.calls) == 2 * (1 + 2)
    assert [list(c.updates) for c in proposal.candidates] == [["extract"], ["instruction"]]


def test_no_failure_means_no_call() -> None:
    model = Pipeline(MockLLM("4"))
    out = model(Node("2+2?", name="question"))
    out.backward(Feedback("Correct.", score=1.0))
    llm = MockLLM(rewrites_by_kind)
    proposal = Reflect(model.parameters(), llm=llm).propose()
    assert not proposal.candidates and not llm.calls


def test_a_rewrite_not_accepted_is_not_offered_again_until_the_value_moves_on() -> None:
    _, code = extractor_with_feedback()
    opt = Reflect([code], llm=scripted([LAST_NUMBER]), n_candidates=2)
    assert len(opt.propose().candidates) == 1
    again = opt.propose()  # nobody applied it: the same rewrite is refused this time
    assert not again.candidates
    assert [r.reason for r in again.rejected] == ["this rewrite was proposed at an earlier step and not accepted"] * 2
    code.set("def extract(self, text: str) -> str:\n    return text.split()[0]\n")
    assert len(opt.propose().candidates) == 1, "from a new value, the same rewrite is a new proposal"


def test_state_dict_round_trip() -> None:
    model = pipeline_with_feedback()
    opt = Reflect(model.parameters(), llm=MockLLM(rewrites_by_kind), n_candidates=1, max_cases=2)
    opt.propose()
    saved = opt.state_dict()
    assert saved["global_state"]["cursor"] == "extract" and saved["state"]["extract"]["diagnosis"] == DIAGNOSIS
    again = Reflect(model.parameters(), llm=MockLLM(rewrites_by_kind), n_candidates=1, max_cases=2)
    again.load_state_dict(saved)
    assert again.state_dict() == saved
    proposal = again.propose()  # the rotation continues where it stopped
    assert {tuple(c.updates) for c in proposal.candidates} == {("instruction",)}


def test_a_long_case_is_shortened_to_fit_the_prompt_budget() -> None:
    instruction = Parameter("Answer.", name="instruction")
    out = ops.llm_call(instruction, "x" * 20_000, llm=MockLLM("y" * 20_000))
    out.backward(Feedback("Wrong.", score=0.0))
    llm = MockLLM(rewrites_by_kind)
    Reflect([instruction], llm=llm, n_candidates=1, max_prompt_tokens=1000).propose()
    assert all(sum(len(m["content"]) for m in call.messages) < 4000 for call in llm.calls)


@pytest.mark.parametrize("value", [1.0, {"k": 1}])
def test_other_kinds_are_refused_at_construction(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="BootstrapDemos"):
        Reflect([Parameter("Answer.", name="instruction"), Parameter(value, name="other")], llm=MockLLM("x"))


@pytest.mark.parametrize(
    ("option", "value"), [("tips", "yes"), ("max_cases", 0), ("params_per_step", 0), ("n_candidates", 0)]
)
def test_bad_options_are_refused(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=option):
        Reflect([Parameter("Answer.", name="instruction")], llm=MockLLM("x"), **{option: value})


# -- training ----------------------------------------------------------------------------------------------


def test_train_with_reflect_fixes_the_extractor() -> None:
    model = Extractor()
    wrong = "```python\ndef extract(self, text: str) -> str:\n    return text.split()[0]\n```"
    llm = scripted([wrong, LAST_NUMBER])  # one sample keeps a wrong rule, one writes the right function
    opt = Reflect(model.parameters(), llm=llm, n_candidates=2)
    val = [("4 plus 4 is 8", "8"), ("1 and 9", "9"), ("2 then 6", "6")]
    result = train(model, ITEMS, ExactMatch(), opt, val_set=val, batch_size=4, progress=False)
    assert result.val_before == 0.0 and result.val_after == 1.0
    (code,) = model.parameters()
    assert "numbers[-1]" in code.data
    step = result.history[0]
    assert step["accepted"] and len(step["candidates"]) == 2


def test_optoprime_still_asks_for_json_where_reflect_does_not() -> None:
    _, code = extractor_with_feedback()
    json_llm = MockLLM('{"reasoning": "r", "suggestion": {}}', json_schema=True)
    OptoPrime([code], llm=json_llm, max_retries=0, json_schema=True).propose()
    fmt = json_llm.calls[0].params["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["schema"]["properties"]["suggestion"]["properties"] == {code.name: {"type": "string"}}
    llm = scripted([LAST_NUMBER])
    llm.supports_json_schema = True
    Reflect([code], llm=llm, n_candidates=1).propose()
    assert all("response_format" not in call.params for call in llm.calls)


def test_read_code_lifts_a_method_out_of_a_class_and_wraps_a_bare_body() -> None:
    in_class = (
        "```python\nimport re\n\nclass Extractor:\n    def extract(self, text: str) -> str:\n"
        "        return re.findall(r'\\d+', text)[-1]\n```"
    )
    assert read_code(in_class, CURRENT) == (
        "import re\ndef extract(self, text: str) -> str:\n    return re.findall(r'\\d+', text)[-1]"
    )
    body_only = "```python\nnumbers = text.split()\nreturn numbers[-1]\n```"
    assert read_code(body_only, CURRENT) == (
        "def extract(self, text: str) -> str:\n    numbers = text.split()\n    return numbers[-1]"
    )


def test_a_share_of_the_rewrites_is_asked_without_the_diagnosis() -> None:
    _, code = extractor_with_feedback()
    for share, plain in ((0.0, set()), (0.5, {2, 3}), (1.0, {0, 1, 2, 3})):
        llm = scripted([LAST_NUMBER])
        Reflect([code], llm=llm, n_candidates=4, plain_share=share).propose()
        rewrites = [c for c in llm.calls if not is_diagnosis(c.messages)]
        without = sum(DIAGNOSIS not in c.messages[-1]["content"] for c in rewrites)
        assert len(rewrites) == 4 and without == len(plain), (share, without)
        assert Reflect([code], llm=llm, n_candidates=4, plain_share=share).plain_samples(code.name) == range(
            4 - len(plain), 4
        )
        assert all("fails on these cases" in c.messages[-1]["content"] for c in rewrites)
    with pytest.raises(ConfigurationError, match="plain_share"):
        Reflect([code], llm=scripted([LAST_NUMBER]), plain_share=1.5)


def test_a_rewrite_that_pastes_in_the_example_it_was_shown_is_refused() -> None:
    instruction = Parameter("Answer the question.", name="instruction", description="system prompt")
    question = "I have a chicken, a frog, a mouse, a cat, two pigs, and two rabbits. How many animals do I have?"
    student = MockLLM(lambda messages, **params: "You have 6 animals.")
    out = ops.llm_call(instruction, question, llm=student)
    out.backward(Feedback("Wrong: expected '8'.", score=0.0))
    pasted = "Answer the question. I have a chicken, a frog, a mouse, a cat, two pigs. The total is 8."
    llm = scripted([pasted, "Count every animal, including each of a pair, then answer with the number."])
    proposal = Reflect([instruction], llm=llm, n_candidates=2).propose()
    assert [c.updates for c in proposal.candidates] == [
        {"instruction": "Count every animal, including each of a pair, then answer with the number."}
    ]
    (rejection,) = proposal.rejected
    assert "copies a passage of one example" in rejection.reason and "I have a chicken" in rejection.reason


def test_a_rewrite_may_use_the_wording_every_example_shares_but_not_one_examples() -> None:
    instruction = Parameter("Answer.", name="instruction", description="system prompt")
    questions = [
        "I have a frog, a cat and two pigs. How many animals do I have in all?",
        "I have a yam, a carrot and a bed. How many animals do I have in all?",
    ]
    student = MockLLM(lambda messages, **params: "You have 3.")
    for question in [*questions, questions[0]]:  # the first question twice: run again (by a teacher, say)
        ops.llm_call(instruction, question, llm=student).backward(Feedback("Wrong.", score=0.0))
    shared = "Count each item the question names, then answer how many animals do I have in all."
    pasted = "Count each item: I have a frog, a cat and two pigs here."
    proposal = Reflect([instruction], llm=scripted([shared, pasted]), n_candidates=2).propose()
    assert [c.updates for c in proposal.candidates] == [{"instruction": shared}]
    (rejection,) = proposal.rejected
    assert "copies a passage of one example" in rejection.reason and "I have a frog" in rejection.reason


def test_a_rewrite_that_repeats_the_request_is_refused() -> None:
    instruction = Parameter("Answer.", name="instruction", description="system prompt of the solver")
    out = ops.llm_call(instruction, "What is 2+2?", llm=MockLLM(lambda messages, **params: "four"))
    out.backward(Feedback("Wrong: expected '4'.", score=0.0))
    echo = "The program fails on these cases: the model was asked What is 2+2 and replied four."
    llm = scripted([echo, "Answer with digits only."])
    proposal = Reflect([instruction], llm=llm, n_candidates=2).propose()
    assert [c.updates for c in proposal.candidates] == [{"instruction": "Answer with digits only."}]
    assert [r.reason.split(" (")[0] for r in proposal.rejected] == ["the reply repeats the request it was given"]


def _rewrite_prompts(instruction: Parameter[str], n: int, **options: Any) -> list[str]:
    llm = scripted([f"Answer tersely, take {i}." for i in range(n)])
    Reflect([instruction], llm=llm, n_candidates=n, **options).propose()
    return sorted(call.messages[-1]["content"] for call in llm.calls[1:])


def test_odd_text_samples_get_a_tip_on_how_to_ask_and_code_samples_none() -> None:
    instruction = Parameter("Answer.", name="instruction")
    ops.llm_call(instruction, "2+2?", llm=MockLLM("four")).backward(Feedback("Wrong: expected '4'.", score=0.0))
    prompts = _rewrite_prompts(instruction, 4)
    tipped = [p for p in prompts if "One way to try:" in p]
    assert len(tipped) == 2
    llm = scripted([f"Answer tersely, take {i}." for i in range(4)])
    candidates = Reflect([instruction], llm=llm, n_candidates=4).propose().candidates
    assert sorted((c.extras["sample"], c.extras["tip"]) for c in candidates) == [
        (0, False),
        (1, True),
        (2, False),
        (3, True),
    ]
    assert any("Think step by step" in p for p in tipped) and any("exactly in the form" in p for p in tipped)
    # The reply goes to no code, so the tip to write facts for code to read is not given.
    assert not any("one fixed form" in p for p in prompts)
    assert not any("One way to try:" in p for p in _rewrite_prompts(instruction, 4, tips=False))
    code = Extractor()
    code.extract("a 1 b 2").backward(Feedback("Wrong: expected '2'.", score=0.0))
    llm = scripted(["def extract(text):\n    return text.split()[-1]\n"])
    Reflect(code.parameters(), llm=llm, n_candidates=4).propose()
    assert not any("One way to try:" in call.messages[-1]["content"] for call in llm.calls)


def test_a_prompt_whose_reply_feeds_trainable_code_gets_the_tip_to_write_for_code() -> None:
    class TwoStage(Module):
        def __init__(self) -> None:
            self.instruction = Parameter("Answer.", name="instruction")

        @bundle(trainable=True)
        def extract(self, response: str) -> str:
            return response.split()[0]

        def forward(self, x: str) -> Node[Any]:
            out: Node[Any] = self.extract(ops.llm_call(self.instruction, x, llm=MockLLM("maybe 3"), temperature=0))
            return out

    model = TwoStage()
    model("2+2?").backward(Feedback("Wrong: expected '4'.", score=0.0))
    prompts = _rewrite_prompts(model.instruction, 4)
    assert sum("one fixed form" in p for p in prompts) == 1 and sum("step by step" in p for p in prompts) == 1


def test_read_text_drops_a_triple_quote_that_nothing_closes() -> None:
    assert read_text('"""\nList each fact, one per line.') == "List each fact, one per line."
    assert read_text("List each fact.\n'''") == "List each fact."
    assert read_text('"""List each fact."""') == "List each fact."


def test_a_rewrite_that_opens_with_the_tip_given_to_the_optimizer_is_refused() -> None:
    instruction = Parameter("Solve the problem.", name="instruction", description="system prompt of the solver")
    out = ops.llm_call(instruction, "What is 2+2?", llm=MockLLM(lambda messages, **params: "four"))
    out.backward(Feedback("Wrong: expected '4'.", score=0.0))
    # Seen in a run on the embedded 1.5B model: the tip's own words became the instruction's first line.
    echo = "Add to the instruction a short numbered procedure for the model to follow:\n1. Read the question."
    quoted = "Solve the problem.\nThink step by step, then write the final answer alone on the last line."
    llm = scripted([echo, quoted])
    proposal = Reflect([instruction], llm=llm, n_candidates=2).propose()
    # The tip's quoted sentence is meant to be copied; its directions to the optimizer are not.
    assert [c.updates for c in proposal.candidates] == [{"instruction": quoted}]
    (rejection,) = proposal.rejected
    assert rejection.reason.startswith("the reply repeats the request it was given")
    assert "Add to the instru" in rejection.reason and rejection.value.startswith("Add to the instruction")
