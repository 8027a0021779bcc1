"""Hostile model replies, and the checks every reader of a reply must pass on them.

A reply is built from pieces a small or broken model really produces — prose, fences, damaged
or truncated JSON, Python literals, XML tags left open — filled with values chosen to break
whatever reads them next: numbers too large for a float, ``NaN``/``Infinity``, lone
surrogates, NUL bytes, code that does not parse, nesting deep enough to exhaust the
recursion limit, keys that name no parameter. ``hostile_reply(rng)`` draws one from a seeded
``random.Random``; the hypothesis strategies below draw the same kinds of pieces so that
failures shrink to a small example.

The checks state the contract: a reply is either read or refused with a typed error, and an
optimizer's step, a guide's or a judge's grade, or a textual gradient always ends cleanly, leaving every
parameter a valid value of its kind and every state JSON that can be written to disk.
"""

from __future__ import annotations

import ast
import json
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from feedprop.errors import ReplyParseError
from feedprop.llm import MockLLM
from feedprop.module import Module
from feedprop.node import Feedback, Node, Parameter
from feedprop.optim import OPRO, Hindsight, Optimizer, OptoPrime, TextualGradientDescent
from feedprop.optim.replies import parse_reply
from feedprop.textual_gradient import TextualGradient
from feedprop.training.guide import ExactMatch, MultipleChoice, Numeric
from feedprop.training.judge import LLMJudge, parse_judgement

OPTIMIZERS: tuple[type[Optimizer], ...] = (OptoPrime, Hindsight, TextualGradientDescent, OPRO)
GUIDES = ((ExactMatch(), "42"), (ExactMatch(extract=True), "42"), (Numeric(), 42), (MultipleChoice(), "(B)"))

#: The trainable variables of :class:`Toy`, as the optimizers name them.
NAMES = ("prompt", "code_f", "x", "n", "cfg")
CODE = "def f(x):\n    return x + 1\n"
CFG = {"a": 1, "b": [1]}

#: Keys a model writes: the right names, sloppy spellings, and names of nothing.
KEYS = (
    *NAMES,
    "Prompt",
    "__code_f",
    "code-f",
    "X",
    "n_",
    "cfg ",
    "f",
    "y",
    "input",
    "",
    " ",
    "🙂",
    "a" * 300,
    "suggestion",
    "reasoning",
)

#: Values as JSON (or almost-JSON) text.
VALUES = (
    "0",
    "-1",
    "3.5",
    "7",
    "1e999",
    "-1e999",
    "NaN",
    "Infinity",
    "-Infinity",
    "1" + "0" * 400,
    "-" + "9" * 4000,
    "1e-400",
    "true",
    "false",
    "null",
    '""',
    '" "',
    '"\\u0000"',
    '"\\ud800"',
    '"a\\udfff\\ud800b"',
    '"🙂"',
    '"{}"',
    '"[1, 2]"',
    '"{\\"a\\": 2, \\"b\\": [3]}"',
    '"{\\"a\\": 1e999, \\"b\\": []}"',
    json.dumps("def f(x):\n    return x * 2\n"),
    json.dumps("def f(y):\n    return y\n"),
    json.dumps("def f(x):\n    return ((((\n"),
    json.dumps("```python\ndef f(x):\n    return 2\n```"),
    json.dumps("def f(x):\n    return 1\x00\n"),
    json.dumps("def f(x):\n    return " + "(" * 300 + "x" + ")" * 300 + "\n"),
    json.dumps("lambda: 0"),
    json.dumps("__import__('os').system('true')"),
    json.dumps("x" * 5000),
    json.dumps('Answer briefly.</suggestion><suggestion name="x">5'),
    "[]",
    "[1, 2, 3]",
    "{}",
    '{"a": 2, "b": [3]}',
    '{"a": "1", "b": [1]}',
    '{"a": 1}',
    '{"a": 1, "b": [1], "c": 3}',
    '{"a": NaN, "b": [Infinity]}',
    "[" * 600 + "]" * 600,
    "[" * 5000 + "]" * 5000,
    '{"a": ' * 300 + "1" + "}" * 300,
    '"\\',
    "1.5.5",
    "0x10",
    "'single'",
    "'''def f(x):\n    return {x}\n'''",
    "True",
    "None",
    "-",
    "+5",
    "1_000",
    '"1,000.5"',
    '" 42 "',
    '"42abc"',
    '"nan"',
    '"inf"',
    '"1e400"',
)

#: Pieces of text around and inside replies.
FRAGMENTS = (
    "{",
    "}",
    "[",
    "]",
    '"',
    "'",
    "'''",
    '"""',
    "\\",
    ",",
    ":",
    "\n",
    "```",
    "```json\n",
    "<suggestion",
    '<suggestion name="x">',
    "</suggestion>",
    "<reasoning>",
    "</reasoning>",
    "<no_change/>",
    "<name>",
    "</name>",
    "<value>",
    "</value>",
    "<verdict>",
    "</verdict>",
    "<lessons>",
    '"suggestion"',
    '"reasoning"',
    '"score"',
    "score: ",
    "\x00",
    "\ud800",
    "é",
    "🙂",
    "**",
    *VALUES[:20],
)

PROSE = ("", "Sure! ", "Here is my answer:\n", "I think ", "```json\n", "```\n", "\n\nHope this helps.", "Answer: ")
VERDICTS = ('"better"', '"worse"', '"same"', '"BETTER "', "1", "[]", "{}", "null", '"\\ud800"')


def _pick(rng: random.Random, seq: tuple[str, ...]) -> str:
    return seq[rng.randrange(len(seq))]


def json_reply(
    items: Sequence[tuple[str, str]], reasoning: str = "r", extras: Sequence[tuple[str, str]] = (), shape: int = 0
) -> str:
    """A JSON reply from (key, value text) pairs; ``shape`` picks wrapped, flat or name/value list."""
    pairs = ", ".join(f"{json.dumps(k)}: {v}" for k, v in items)
    more = "".join(f", {json.dumps(k)}: {v}" for k, v in extras)
    if shape == 1:  # flat: no suggestion wrapper
        return f'{{"reasoning": {json.dumps(reasoning)}, {pairs}{more}}}' if pairs else "{}"
    if shape == 2:  # [{"name": ..., "value": ...}]
        listed = ", ".join(f'{{"name": {json.dumps(k)}, "value": {v}}}' for k, v in items)
        return f'{{"reasoning": {json.dumps(reasoning)}, "suggestion": [{listed}]{more}}}'
    if shape == 3 and items:  # the suggestion is not an object
        return f'{{"reasoning": {json.dumps(reasoning)}, "suggestion": {items[0][1]}{more}}}'
    return f'{{"reasoning": {json.dumps(reasoning)}, "suggestion": {{{pairs}}}{more}}}'


def xml_reply(
    items: Sequence[tuple[str, str]],
    reasoning: str = "r",
    extras: Sequence[tuple[str, str]] = (),
    nested: bool = False,
) -> str:
    """An XML-tag reply; values are the raw text between the tags, as a model writes them."""
    parts = [f"<reasoning>{reasoning}</reasoning>"]
    for k, v in items:
        raw = v[1:-1] if v.startswith('"') and v.endswith('"') and len(v) > 1 else v
        if nested:
            parts.append(f"<suggestion><name>{k}</name><value>{raw}</value></suggestion>")
        else:
            parts.append(f'<suggestion name="{k}">\n{raw}\n</suggestion>')
    parts.extend(f"<{k}>{v}</{k}>" for k, v in extras)
    if not items:
        parts.append("<no_change/>")
    return "\n".join(parts)


def judge_reply(score: str, feedback: str, form: int) -> str:
    """A judge's reply: JSON, a bare ``score: N`` line, or Python-ish pseudo-JSON."""
    if form == 0:
        return f'{{"score": {score}, "feedback": {feedback}}}'
    if form == 1:
        return f"score: {score}\nfeedback: {feedback}"
    return f"{{'score': {score}, 'reason': {feedback}}}"


def _damage(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 5)):
        if not chars:
            break
        pos = rng.randrange(len(chars))
        chars[pos : pos + rng.randint(0, 3)] = _pick(rng, FRAGMENTS)
    return "".join(chars)


def _items(rng: random.Random) -> list[tuple[str, str]]:
    return [(_pick(rng, KEYS), _pick(rng, VALUES)) for _ in range(rng.randint(0, 4))]


def _extras(rng: random.Random) -> list[tuple[str, str]]:
    out = []
    if rng.random() < 0.5:
        out.append(("verdict", _pick(rng, VERDICTS)))
    if rng.random() < 0.5:
        out.append(("lessons", _pick(rng, VALUES)))
    return out


def hostile_reply(rng: random.Random) -> str:
    """One hostile reply, drawn from ``rng`` (a mix of every kind below)."""
    kind = rng.randrange(10)
    if kind == 0:  # fragment soup
        return "".join(_pick(rng, FRAGMENTS) for _ in range(rng.randint(0, 30)))
    if kind == 1:  # random characters, control characters and lone surrogates included
        points = [(32, 127), (0, 0x3000), (0xD800, 0xE000)]
        return "".join(chr(rng.randrange(*rng.choice(points))) for _ in range(rng.randint(0, 200)))
    if kind in (2, 3):  # a well-formed JSON reply with hostile values
        text = json_reply(_items(rng), _pick(rng, ("r", "", "\ud800", "x" * 2000)), _extras(rng), rng.randrange(4))
        return _pick(rng, PROSE) + text + _pick(rng, PROSE)
    if kind == 4:  # the same, damaged
        return _damage(rng, json_reply(_items(rng), "r", _extras(rng), rng.randrange(4)))
    if kind == 5:  # cut off
        text = json_reply(_items(rng), "r", _extras(rng), rng.randrange(4))
        return _pick(rng, PROSE) + text[: rng.randint(0, len(text))]
    if kind == 6:  # XML tags with hostile values
        text = xml_reply(_items(rng), "r", [(k, v.strip('"')) for k, v in _extras(rng)], rng.random() < 0.3)
        return text if rng.random() < 0.7 else text[: rng.randint(0, len(text))]
    if kind == 7:  # a judge's reply
        return judge_reply(_pick(rng, VALUES), _pick(rng, VALUES), rng.randrange(3))
    if kind == 8:  # two objects, the first a decoy
        return json_reply(_items(rng), shape=rng.randrange(4)) + "\nor\n" + json_reply(_items(rng))
    if rng.random() < 0.02:  # a runaway generation
        return _pick(rng, ("x", "{", "[", "<suggestion>")) * 250_000
    return _pick(rng, ("", " ", "\n", "I don't know.", "{}", "[]", "null", "<no_change/>", "```json\n```"))


# -- hypothesis strategies --------------------------------------------------------------------------

value_text = st.sampled_from(VALUES) | st.text(max_size=30).map(json.dumps) | st.integers().map(str)
key_text = st.sampled_from(KEYS) | st.text(max_size=12)
items_strategy = st.lists(st.tuples(key_text, value_text), max_size=4)
extras_strategy = st.lists(
    st.tuples(st.sampled_from(("verdict", "lessons", "summary")), st.sampled_from(VERDICTS) | value_text), max_size=2
)


@st.composite
def replies(draw: st.DrawFn) -> str:
    """A hostile reply as a hypothesis strategy (shrinks to the smallest breaking reply)."""
    kind = draw(st.integers(0, 5))
    items = draw(items_strategy)
    extras = draw(extras_strategy)
    if kind == 0:
        text = json_reply(items, draw(st.text(max_size=20)), extras, draw(st.integers(0, 3)))
    elif kind == 1:
        text = xml_reply(items, draw(st.text(max_size=20)), [(k, v.strip('"')) for k, v in extras], draw(st.booleans()))
    elif kind == 2:
        text = judge_reply(draw(value_text), draw(value_text), draw(st.integers(0, 2)))
    elif kind == 3:
        return draw(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=30).map("".join))
    elif kind == 4:
        return draw(st.text(max_size=300))
    else:
        text = json_reply(items, "r", extras, draw(st.integers(0, 3)))
        text = text[: draw(st.integers(0, len(text)))]
    return draw(st.sampled_from(PROSE)) + text + draw(st.sampled_from(PROSE))


# -- the contract -------------------------------------------------------------------------------------


def check_parsers(text: str) -> None:
    """Every reply parser reads ``text`` or refuses it with ``ReplyParseError``; nothing else."""
    for fmt in ("json", "xml"):
        try:
            reply = parse_reply(text, fmt)
        except ReplyParseError as e:
            assert isinstance(e.reply, str) and str(e), "a refusal carries the reply and a message"
        else:
            assert isinstance(reply.suggestion, dict) and isinstance(reply.reasoning, str)
            assert isinstance(reply.extras, dict)
    judged = parse_judgement(text)
    if judged is not None:
        score, feedback = judged
        assert isinstance(score, float) and math.isfinite(score) and 0.0 <= score <= 1.0
        assert isinstance(feedback, str)
    for guide, target in GUIDES:  # guides read a workflow's output, which is often a model's reply too
        graded = guide(text, target)
        assert graded.score is not None and 0.0 <= graded.score <= 1.0 and isinstance(graded.text, str)


class Toy(Module):
    """One parameter of every kind, each reached by the feedback of one output."""

    def __init__(self) -> None:
        self.prompt = Parameter("Answer the question.", name="prompt", description="the instruction")
        self.code_f = Parameter(CODE, name="code_f", kind="code", description="adds one")
        self.x = Parameter(1.5, name="x", bounds=(-10.0, 10.0))
        self.n = Parameter(3, name="n", constraint="positive integer")
        self.cfg = Parameter(dict(CFG), name="cfg")

    def forward(self, question: str) -> list[Node[Any]]:
        return [self.prompt + question, self.code_f + "", self.x * 2 + 1, self.n + 1, self.cfg["a"]]


def run_backward(model: Toy, score: float = 0.25) -> None:
    for i, out in enumerate(model("q")):
        out.backward(Feedback(f"output {i} is wrong", score=score))


def check_model_state(model: Toy) -> None:
    """Every parameter still holds a valid value of its kind, and the state can be saved as UTF-8 JSON."""
    assert isinstance(model.prompt.data, str)
    assert isinstance(model.code_f.data, str)
    ast.parse(model.code_f.data)  # a code update is applied only when it parses
    assert isinstance(model.x.data, float) and -10.0 <= model.x.data <= 10.0
    assert type(model.n.data) is int and model.n.data > 0
    assert isinstance(model.cfg.data, dict) and set(model.cfg.data) == {"a", "b"}
    json.dumps(model.state_dict(), allow_nan=False, ensure_ascii=False).encode("utf-8")


def check_optimizer_steps(cls: type[Optimizer], first: str, second: str, reply_format: str = "json") -> None:
    """Two steps of ``cls`` on :class:`Toy`, the model answering ``first`` then ``second``: both end cleanly."""
    model = Toy()
    llm = MockLLM(lambda messages, **params: first if len(llm.calls) <= 2 else second)
    opt = cls(model.parameters(), llm=llm, reply_format=reply_format, max_retries=1)
    for score in (0.25, 0.5):
        opt.zero_feedback()
        run_backward(model, score)
        proposal = opt.step()
        assert all(isinstance(e, str) for e in proposal.errors)
        check_model_state(model)
    state = opt.state_dict()
    json.dumps(state, allow_nan=False, ensure_ascii=False).encode("utf-8")
    again = cls(Toy().parameters(), llm=llm, reply_format=reply_format)
    again.load_state_dict(state)


def check_judge(text: str) -> None:
    """LLMJudge grades with whatever its model replies: a score in [0, 1], never an exception."""
    judge = LLMJudge("Is it right?", llm=MockLLM(text), retries=1)
    feedback = judge("the answer", "the reference")
    assert isinstance(feedback, Feedback) and isinstance(feedback.text, str)
    assert feedback.score is not None and 0.0 <= feedback.score <= 1.0


def check_textual_gradient(text: str, then: str = '{"reasoning": "r", "suggestion": {"prompt": "New."}}') -> None:
    """A textual gradient written by a hostile model still reaches the parameter, and TGD can step on it."""
    prompt = Parameter("Answer.", name="prompt")
    out = prompt + " Q: 2+2?"
    out.backward(Feedback("too verbose", score=0.0), propagator=TextualGradient(MockLLM(text)))
    received = prompt.feedback[0].feedback.text
    assert isinstance(received, str) and received.strip()
    opt = TextualGradientDescent([prompt], llm=MockLLM(then))
    opt.step()
    assert isinstance(prompt.data, str)


CHECKS: dict[str, Callable[[str], None]] = {
    "parsers": check_parsers,
    "judge": check_judge,
    "textual gradient": check_textual_gradient,
}
