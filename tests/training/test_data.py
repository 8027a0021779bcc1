"""Dataset shapes accepted by the trainer."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.training.data import as_items, fingerprint_items


@dataclass
class Example:
    input: str
    target: str
    meta: dict[str, str]


def test_pairs_objects_and_mappings() -> None:
    ex = Example("q", "a", {"id": "7"})
    items = as_items([("x", 1), ["y", 2], {"input": "z", "target": 3}, ex], "train_set")
    assert [(i.input, i.target) for i in items] == [("x", 1), ("y", 2), ("z", 3), ("q", "a")]
    assert items[3].example is ex


def test_bad_datasets_say_what_to_pass() -> None:
    with pytest.raises(ConfigurationError, match="empty"):
        as_items([], "train_set")
    with pytest.raises(ConfigurationError, match="required"):
        as_items(None, "train_set")
    assert as_items(None, "val_set", required=False) == []
    with pytest.raises(InvalidInputError, match=r"train_set\[1\]"):
        as_items([("a", "b"), ("only one",)], "train_set")
    with pytest.raises(InvalidInputError, match="'input' and 'target'"):
        as_items([{"question": "a", "answer": "b"}], "train_set")
    with pytest.raises(InvalidInputError, match="sequence"):
        as_items("abc", "train_set")
    with pytest.raises(InvalidInputError, match="iterable"):
        as_items(5, "train_set")  # type: ignore[arg-type]


def test_fingerprint_changes_with_the_data() -> None:
    a = as_items([("x", 1), ("y", 2)], "d")
    b = as_items([("x", 1), ("y", 3)], "d")
    assert fingerprint_items(a) == fingerprint_items(as_items([("x", 1), ("y", 2)], "d"))
    assert fingerprint_items(a) != fingerprint_items(b)
