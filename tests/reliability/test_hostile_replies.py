"""Hostile replies never crash a run: every reader of a model's reply, and a whole training run fed garbage.

The readers: the optimizers' JSON and XML parsers (OptoPrime, Hindsight, TGD and OPRO all read
replies through them), Hindsight's verdict and lessons, the LLMJudge guide's grade parser, and the
textual-gradient propagator. ``benchmarks/reliability.py`` runs the same checks on 10,000+ replies.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedprop.llm import MockLLM
from feedprop.module import Module
from feedprop.node import Feedback, Node, Parameter
from feedprop.optim import Optimizer, OptoPrime
from feedprop.training import train

from .hostile import (
    OPTIMIZERS,
    check_judge,
    check_optimizer_steps,
    check_parsers,
    check_textual_gradient,
    hostile_reply,
    replies,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:invalid escape sequence:DeprecationWarning", "ignore:invalid decimal literal:SyntaxWarning"
)

SEED = 20250611
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_seeded_generated_replies_through_every_parser() -> None:
    rng = random.Random(SEED)
    for _ in range(1_000):
        check_parsers(hostile_reply(rng))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replies())
def test_property_parsers(text: str) -> None:
    check_parsers(text)


@FUZZ
@given(replies())
def test_property_llm_judge_always_grades(text: str) -> None:
    check_judge(text)


@FUZZ
@given(replies())
def test_property_textual_gradient_always_delivers(text: str) -> None:
    check_textual_gradient(text)


@pytest.mark.parametrize("reply_format", ["json", "xml"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda cls: cls.__name__)
def test_property_optimizer_steps_end_cleanly(optimizer: type[Optimizer], reply_format: str) -> None:
    @FUZZ
    @given(replies(), replies())
    def two_steps(first: str, second: str) -> None:
        check_optimizer_steps(optimizer, first, second, reply_format)

    two_steps()


def test_seeded_optimizer_steps_on_generated_replies() -> None:
    rng = random.Random(SEED + 1)
    for i in range(80):
        check_optimizer_steps(OPTIMIZERS[i % 4], hostile_reply(rng), hostile_reply(rng), ("json", "xml")[i // 4 % 2])


@pytest.mark.parametrize(
    "text",
    [
        '{"reasoning": "r", "suggestion": {"x": ' + "1" + "0" * 400 + "}}",
        '{"reasoning": "r", "suggestion": {"n": -' + "9" * 4000 + "}}",
        '{"reasoning": "r", "suggestion": {"cfg": {"a": NaN, "b": [1]}}}',
        '{"reasoning": "r", "suggestion": {"unknown": Infinity}}',
        '{"reasoning": "\\ud800", "suggestion": {"prompt": "a\\udfffb"}}',
        '{"reasoning": "r", "suggestion": {"' + "k" * 9000 + '": 1}}',
    ],
    ids=["int-too-big-for-float", "int-4000-digits", "nan-in-json", "infinity", "lone-surrogates", "huge-key"],
)
def test_replies_that_once_broke_a_step(text: str) -> None:
    for optimizer in OPTIMIZERS:
        check_optimizer_steps(optimizer, text, text)


# -- a training run fed garbage -----------------------------------------------------------------------


class Echo(Module):
    def __init__(self) -> None:
        self.suffix = Parameter("?", name="suffix", description="appended to the answer")

    def forward(self, x: str) -> Node[Any]:
        return x + self.suffix


def exact(output: Any, target: Any) -> Feedback:
    return Feedback("Correct." if output == target else f"Wrong: expected {target!r}.", float(output == target))


DATA = [(f"q{i}", f"q{i}!") for i in range(4)]


def test_garbage_replies_become_skipped_steps_in_the_history(tmp_path: Path) -> None:
    model = Echo()
    garbage = ["I don't know.", '{"reasoning": "r", "suggestion": {"suffix": ', "<suggestion name='suffix'>", "{{}}"]
    llm = MockLLM(garbage, cycle=True)
    opt = OptoPrime(model.parameters(), llm=llm, max_retries=1)
    result = train(model, DATA, exact, opt, val_set=DATA, batch_size=1, checkpoint=tmp_path, progress=False, plot=False)
    assert result.steps == 4 and len(llm.calls) == 8, "every step asked, retried once, and was skipped"
    for entry in result.history:
        assert not entry["accepted"]
        assert "could not be read" in entry["reason"], entry["reason"]
    assert model.suffix.data == "?" and result.best_state == {"suffix": "?"}
    saved = json.loads((tmp_path / "checkpoint.json").read_text(encoding="utf-8"))
    assert saved["finished"] and saved["step"] == 4


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda cls: cls.__name__)
def test_a_run_fed_hostile_replies_completes_and_saves(optimizer: type[Optimizer], tmp_path: Path) -> None:
    rng = random.Random(SEED + 2)
    hostile = [hostile_reply(rng) for _ in range(12)]
    hostile[5] = '{"reasoning": "ends with !", "suggestion": {"suffix": "!"}}'  # one good reply among them
    model = Echo()
    opt = optimizer(model.parameters(), llm=MockLLM(hostile, cycle=True), max_retries=1)
    result = train(
        model, DATA * 2, exact, opt, val_set=DATA, batch_size=1, checkpoint=tmp_path, progress=False, plot=False
    )
    assert result.steps == 8 and all(isinstance(entry["reason"], str) for entry in result.history)
    assert result.val_after is not None and result.val_before is not None and result.val_after >= result.val_before
    for path in tmp_path.glob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))
    assert result.report_path is not None and result.report_path.read_text(encoding="utf-8")
    model.save(tmp_path / "model.json")
    Echo().load(tmp_path / "model.json")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(replies(), min_size=1, max_size=3))
def test_property_a_short_run_never_crashes(texts: list[str]) -> None:
    model = Echo()
    opt = OptoPrime(model.parameters(), llm=MockLLM(texts, cycle=True), max_retries=1)
    result = train(model, DATA[:2], exact, opt, val_set=DATA[:2], batch_size=1, progress=False, plot=False)
    assert result.steps == 2
    json.dumps(result.history, allow_nan=False, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("text", ["x" * 250_000, "{" * 250_000, "word " * 60_000], ids=["xs", "braces", "words"])
def test_runaway_replies_are_refused_or_cut_everywhere(text: str) -> None:
    check_parsers(text)
    check_judge(text)
    check_textual_gradient(text)
    for optimizer in OPTIMIZERS:
        check_optimizer_steps(optimizer, text, text)
