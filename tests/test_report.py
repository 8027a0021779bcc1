"""The problem report: sections, names, minibatches, errors and the token budget."""

from __future__ import annotations

from typing import Any

import pytest

from feedprop._text import truncate_middle
from feedprop.bundle import bundle
from feedprop.errors import ExecutionError, InvalidInputError
from feedprop.llm import MockLLM
from feedprop.node import Demos, Feedback, Node, Parameter, run_forward
from feedprop.ops import llm_call
from feedprop.report import SECTIONS, Problem, render_problem
from feedprop.sandbox import InProcessExecutor


@bundle(trainable=True)
def parse(reply: str) -> int:
    """Read the number at the end of the reply."""
    return int(reply.split()[-1])


def _workflow(question: str, llm: MockLLM, instruction: Parameter[str]) -> Any:
    reply = llm_call(instruction, Node(question, name="question"), llm=llm)
    return parse(reply)


def _build() -> tuple[Parameter[str], Parameter[str]]:
    instruction = Parameter("Answer with a number.", name="instruction", description="the system prompt")
    llm = MockLLM(lambda messages, **params: "The answer is 4")
    out = _workflow("2+2?", llm, instruction)
    out.backward(Feedback("Correct", score=1.0))
    out = _workflow("3+3?", llm, instruction)
    out.backward(Feedback("Wrong: expected 6", score=0.0))
    code = parse.parameter
    assert code is not None
    return instruction, code


def test_sections_minibatch_and_names() -> None:
    instruction, code = _build()
    try:
        problem = render_problem([instruction, code])
        text = problem.render()
        assert [line for line in text.splitlines() if line.startswith("#") and line in SECTIONS] == list(SECTIONS)
        assert problem.code == [
            "llm_call:0 = llm_call(system=instruction, user=question)",
            "parse:0 = parse(reply=llm_call:0)",
            "llm_call:1 = llm_call(system=instruction, user=question_2)",
            "parse:1 = parse(reply=llm_call:1)",
        ]
        assert problem.definitions == [
            "[llm_call] asks a language model: system prompt, then user message",
            "[parse] Read the number at the end of the reply.",
        ]
        assert list(problem.parameters) == ["instruction", "parse"]
        assert problem.parameters["instruction"] is instruction and problem.parameters["parse"] is code
        assert problem.variables["instruction"] == '# the system prompt\n(text) instruction = "Answer with a number."'
        assert problem.variables["parse"].splitlines()[2] == "def parse(reply: str) -> int:"
        assert problem.inputs == {"question": "question = 2+2?", "question_2": "question_2 = 3+3?"}
        assert list(problem.others) == ["llm_call:0", "llm_call:1"]
        assert problem.outputs == {"parse:0": "parse:0 = 4", "parse:1": "parse:1 = 4"}
        assert problem.feedback == ["For parse:0 (score: 1): Correct", "For parse:1 (score: 0): Wrong: expected 6"]
        assert problem.readonly == ["question", "question_2", "llm_call:0", "llm_call:1", "parse:0", "parse:1"]
        assert "(parse) must stay one Python function" in problem.constraints["parse"]
        assert not problem.truncated
        # Only the given parameters are variables: without the code, it is an input.
        alone = render_problem([instruction])
        assert list(alone.parameters) == ["instruction"] and "parse" in alone.inputs
    finally:
        code.zero_feedback()


def test_rendering_is_deterministic_across_identical_runs() -> None:
    texts = []
    for _ in range(2):
        instruction, code = _build()
        texts.append(render_problem([instruction, code]).render())
        code.zero_feedback()
    assert texts[0] == texts[1]


def test_colliding_names_are_suffixed_only_when_needed() -> None:
    a, b = Parameter(1, name="w"), Parameter(2, name="w")
    out = a + b
    out.backward("sum should be 5")
    problem = render_problem([a, b])
    assert list(problem.parameters) == ["w", "w_2"]
    assert problem.parameters["w_2"] is b
    assert problem.code == ["add:0 = add(lhs=w, rhs=w_2)"]
    assert problem.feedback == ["sum should be 5"]


def test_exceptions_and_hidden_reads_are_shown() -> None:
    secret = Parameter("k", name="key")

    @bundle(trainable=True, allow_external_dependencies=True, executor=InProcessExecutor())
    def lookup(table: dict[str, int]) -> int:
        return table[secret.data]

    table = Node({"a": 1}, name="table")
    with pytest.raises(ExecutionError) as info:
        lookup(table)
    info.value.node.backward(str(info.value))
    code = lookup.parameter
    assert code is not None
    problem = render_problem([code, secret])
    assert problem.code == ["exception:0 = lookup(table=table)  # also read: key  # raised"]
    output = problem.outputs["exception:0"]
    assert output.startswith("exception:0 = KeyError: 'k'") and "line 2: return table[secret.data]" in output
    assert problem.feedback[0].startswith("lookup raised KeyError")


def test_the_budget_truncates_values_in_the_middle_and_keeps_variables() -> None:
    prompt = Parameter("Summarise. " * 20, name="prompt")
    document = Node("word " * 5000, name="document")
    out = llm_call(prompt, document, llm=MockLLM("summary"))
    out.backward("too vague " * 300)
    full = render_problem([prompt])
    assert not full.truncated and full.tokens > 5000
    small = render_problem([prompt], max_tokens=800)
    assert small.truncated and small.tokens <= 800
    assert "...[truncated " in small.inputs["document"]
    assert small.variables["prompt"] == full.variables["prompt"]  # the variable is intact
    assert "...[truncated " in small.feedback[0]
    # A budget below what the variable needs shortens it last, and says so.
    tiny = render_problem([prompt], max_tokens=100)
    assert "...[truncated " in tiny.variables["prompt"]


def test_a_large_graph_is_summarised_within_the_budget() -> None:
    x = Parameter(0, name="x")
    node: Any = x
    for i in range(2000):
        node = node + Node(i, name=f"c{i}")
    node.backward("too small")
    problem = render_problem([x], max_tokens=1500)
    assert problem.tokens <= 1500 and problem.truncated
    assert any("lines omitted to fit the budget" in line for line in problem.code)
    assert problem.code[0] == "add:0 = add(lhs=x, rhs=c0)"
    assert problem.code[-1] == "add:1999 = add(lhs=add:1998, rhs=c1999)"


def test_no_feedback_gives_an_empty_problem_and_bad_input_is_refused() -> None:
    p = Parameter("unused", name="unused")
    problem = render_problem([p])
    assert isinstance(problem, Problem) and problem.parameters == {}
    assert "#Feedback\n(none)" in problem.render()
    with pytest.raises(InvalidInputError):
        render_problem([Node(1)])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        render_problem([p], max_tokens=0)


def test_truncate_middle() -> None:
    assert truncate_middle("short", 10) == "short"
    cut = truncate_middle("x" * 10_000, 100)
    assert cut.startswith("x" * 25) and cut.endswith("x" * 25) and "[truncated 9,930 chars]" in cut


def test_demos_show_one_per_line_with_their_rule() -> None:
    shots = Demos([{"input": "1+1?", "output": "2"}, {"input": "2+2?", "output": "4"}], name="shots", max_demos=3)
    out = llm_call("Answer.", Node("3+3?", name="question"), demos=shots, llm=MockLLM("6"))
    out.backward(Feedback("Wrong: expected 7", score=0.0))
    problem = render_problem([shots])
    assert len(problem.code) == 1
    assert problem.code[0].endswith(' = llm_call(system="Answer.", demos=shots, user=question)')
    assert problem.variables["shots"] == (
        '(demos) shots = [\n{"input": "1+1?", "output": "2"},\n{"input": "2+2?", "output": "4"}\n]'
    )
    assert "at most 3 demonstrations" in problem.constraints["shots"]


def test_code_lines_show_the_values_read_before_a_branch_once_each() -> None:
    route_prompt = Parameter("Reply SEARCH or DIRECT.", name="route_prompt")
    check_prompt = Parameter("Reply VALID or INVALID.", name="check_prompt")
    answer_prompt = Parameter("Answer.", name="answer_prompt")

    def forward() -> Node[Any]:
        route = llm_call(route_prompt, "2+2?", llm=MockLLM("SEARCH"))
        if "SEARCH" not in route.data:
            return route
        answer = llm_call(answer_prompt, "2+2?", llm=MockLLM("4"))
        check = llm_call(check_prompt, answer, llm=MockLLM("VALID"))
        return answer if check.data == "VALID" else check

    out = run_forward(forward)
    out.backward("Correct.")
    problem = render_problem([route_prompt, check_prompt])
    assert problem.code == [
        'llm_call:0 = llm_call(system=route_prompt, user="2+2?")',
        'llm_call:1 = llm_call(system=answer_prompt, user="2+2?")'
        '  # control: the program read llm_call:0 = "SEARCH" before this call',
        "llm_call:2 = llm_call(system=check_prompt, user=llm_call:1)"
        "  # control: the program read llm_call:0 before this call",
        "return:0 = return(value=llm_call:1)"
        '  # control: the program read llm_call:0, llm_call:2 = "VALID" before this call',
    ]
    assert "[return] what a forward returned, after the values it read" in problem.definitions
