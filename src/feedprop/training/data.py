"""Reading datasets: whatever the user passes becomes a list of :class:`Item` (input, target).

Accepted shapes, item by item: a pair ``(input, target)``; an object with ``.input`` and
``.target`` attributes (such as ``feedprop.tasks.Example``); a mapping with ``"input"`` and
``"target"`` keys. The original item travels along as ``example`` so guides can read extra
fields (unit tests, metadata).

Example:
    >>> [i.target for i in as_items([("2+2", "4"), {"input": "3+3", "target": "6"}], "train_set")]
    ['4', '6']
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from feedprop.errors import ConfigurationError, InvalidInputError

__all__ = ["Item", "as_items", "fingerprint_items"]


@dataclass(frozen=True)
class Item:
    """One example: what the model is called with, what the guide compares against, and the original."""

    input: Any
    target: Any
    example: Any = None


def _item(raw: Any, index: int, name: str) -> Item:
    if hasattr(raw, "input") and hasattr(raw, "target"):
        return Item(raw.input, raw.target, raw)
    if isinstance(raw, Mapping):
        if "input" in raw and "target" in raw:
            return Item(raw["input"], raw["target"], raw)
        raise InvalidInputError(
            f"{name}[{index}] is a mapping without 'input' and 'target' keys (has {sorted(map(str, raw))[:5]}); "
            "give each example as {'input': ..., 'target': ...}"
        )
    if isinstance(raw, tuple | list) and len(raw) == 2:
        return Item(raw[0], raw[1], raw)
    raise InvalidInputError(
        f"{name}[{index}] must be an (input, target) pair, an object with .input and .target, or a mapping "
        f"with 'input' and 'target' keys; got {type(raw).__name__}: {raw!r:.80}"
    )


def as_items(dataset: Iterable[Any] | None, name: str, *, required: bool = True) -> list[Item]:
    """Normalise ``dataset`` to a list of :class:`Item`; an empty or missing one is an error if ``required``."""
    if dataset is None:
        if required:
            raise ConfigurationError(f"{name} is required; pass a list of (input, target) pairs")
        return []
    if isinstance(dataset, str | bytes | Mapping):
        raise InvalidInputError(f"{name} must be a sequence of examples, not a {type(dataset).__name__}")
    try:
        raws = list(dataset)
    except TypeError as exc:
        raise InvalidInputError(f"{name} must be an iterable of examples, got {type(dataset).__name__}") from exc
    if required and not raws:
        raise ConfigurationError(f"{name} is empty; give it at least one (input, target) example")
    return [_item(raw, i, name) for i, raw in enumerate(raws)]


def fingerprint_items(items: list[Item]) -> str:
    """A stable sha256 of the inputs and targets, so a resumed run can tell its data changed."""
    digest = hashlib.sha256()
    for item in items:
        line = json.dumps([item.input, item.target], sort_keys=True, default=repr)
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()[:16]
