"""GSM8K: the Random(0) split and the numeric scorer on real solutions."""

from __future__ import annotations

import json
import random

from feedprop.tasks import benchmarks_root, load_gsm8k


def _rows(split: str) -> list[dict[str, str]]:
    with (benchmarks_root() / "gsm8k" / f"{split}.jsonl").open() as f:
        return [json.loads(line) for line in f]


def test_split_sizes_and_order_follow_the_protocol() -> None:
    task = load_gsm8k()
    assert (len(task.train), len(task.val), len(task.test)) == (200, 300, 1319)
    train_file = _rows("train")
    order = list(range(len(train_file)))
    random.Random(0).shuffle(order)
    assert [e.meta["index"] for e in task.train] == order[:200]
    assert [e.meta["index"] for e in task.val] == order[200:500]
    assert task.train[0].input == train_file[order[0]]["question"]
    assert [e.input for e in task.test[:5]] == [r["question"] for r in _rows("test")[:5]]
    assert not {e.input for e in task.train} & {e.input for e in task.val}


def test_targets_are_the_number_after_the_marker() -> None:
    task = load_gsm8k()
    assert task.test[0].target == "18"
    with_commas = [e for e in task.test if "#### " in e.meta["solution"] and "," in e.meta["solution"].split("####")[1]]
    assert with_commas and all("," not in e.target for e in with_commas)
    assert all(e.target.lstrip("-").isdigit() for e in (*task.train, *task.val, *task.test))


def test_numeric_guide_on_reference_solutions() -> None:
    task = load_gsm8k()
    for example in task.test[:200]:
        assert task.guide(example.meta["solution"], example.target).score == 1.0
        wrong = str(int(example.target) + 1)
        assert task.guide(f"So the answer is {wrong}.", example.target).score == 0.0
    assert task.guide("Janet makes $18 every day.", "18").text == "Correct."
