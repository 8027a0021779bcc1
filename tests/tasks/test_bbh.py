"""BBH: published splits in file order, and each task's guide agrees with its data."""

from __future__ import annotations

import json
import re

import pytest

from feedprop.errors import ConfigurationError
from feedprop.tasks import BBH_TASKS, benchmarks_root, load_bbh
from feedprop.training.guide import ExactMatch, MultipleChoice, Numeric


def _file(task: str) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = json.loads((benchmarks_root() / "bbh" / "bbh" / f"{task}.json").read_text())[
        "examples"
    ]
    return rows


def test_object_counting_textgrad_split_in_file_order() -> None:
    rows = _file("object_counting")
    task = load_bbh("object_counting")
    assert (len(task.train), len(task.val), len(task.test)) == (50, 100, 100)
    assert [e.input for e in task.train] == [r["input"] for r in rows[:50]]
    assert [e.input for e in task.val] == [r["input"] for r in rows[50:150]]
    assert [e.target for e in task.test] == [r["target"] for r in rows[150:]]
    assert task.test[-1].meta["index"] == 249


def test_trace_protocol_and_short_files() -> None:
    trace = load_bbh("navigate", protocol="trace")
    rows = _file("navigate")
    assert (len(trace.train), len(trace.val), len(trace.test)) == (15, 5, 230)
    assert trace.val[0].input == rows[15]["input"]
    # Two files are shorter than 250 examples; test is the rest of the file.
    assert len(load_bbh("causal_judgement").test) == 187 - 150
    assert len(load_bbh("snarks").test) == 178 - 150


def test_bad_task_and_protocol() -> None:
    with pytest.raises(ConfigurationError, match="unknown BBH task 'boolean_expressions'"):
        load_bbh("boolean_expressions")
    with pytest.raises(ConfigurationError, match="textgrad, trace"):
        load_bbh("navigate", protocol="dspy")


@pytest.mark.parametrize("task", BBH_TASKS)
def test_each_guide_fits_the_targets_in_the_data(task: str) -> None:
    loaded = load_bbh(task)
    examples = [*loaded.train, *loaded.val, *loaded.test]
    targets = [e.target for e in examples]
    guide = loaded.guide
    if isinstance(guide, Numeric):
        assert all(re.fullmatch(r"-?\d+", t) for t in targets)
    elif isinstance(guide, MultipleChoice):
        odd = [t for t in targets if not re.fullmatch(r"\([A-R]\)", t)]
        assert len(odd) <= 2, odd  # the published file has a few option texts as targets
    else:
        assert isinstance(guide, ExactMatch)
        assert not any(re.fullmatch(r"\([A-R]\)", t) for t in targets)
    # The right answer, written the way the chain-of-thought prompts end, scores 1; another
    # example's different answer scores 0.
    for example in examples[:30]:
        assert guide(f"Let's think step by step.\nSo the answer is {example.target}.", example.target).score == 1.0
        other = next(t for t in targets if t.lower() != example.target.lower())
        assert guide(f"So the answer is {other}.", example.target).score == 0.0


@pytest.mark.parametrize("task", BBH_TASKS)
def test_few_shot_demonstrations_score_one_under_the_tasks_guide(task: str) -> None:
    loaded = load_bbh(task)
    assert len(loaded.few_shot) == 3 and loaded.description
    for shot in loaded.few_shot:
        assert shot.input and not shot.input.startswith("Q:")
        assert loaded.guide(shot.meta["rationale"], shot.target).score == 1.0


def test_known_scores_on_real_examples() -> None:
    counting = load_bbh("object_counting")
    example = counting.train[0]  # "... How many musical instruments do I have?" -> 8
    assert example.target == "8"
    assert counting.guide("There are 8 instruments.", example.target).text == "Correct."
    assert counting.guide("I count 7.", example.target).text == "Wrong: expected 8, got 7."
    dates = load_bbh("date_understanding")
    assert dates.guide("So the answer is (B).", dates.train[0].target).score == (dates.train[0].target == "(B)")
    sorting = load_bbh("word_sorting")
    target = sorting.train[0].target
    assert sorting.guide(f"So the answer is {target}.", target).score == 1.0
    assert sorting.guide(f"So the answer is {' '.join(reversed(target.split()))}.", target).score == 0.0
