"""The shape every benchmark shares: a :class:`Task` holds :class:`Example` splits and a guide.

Example:
    >>> from feedprop.training.guide import Numeric
    >>> task = Task("toy", train=[Example("2+2?", "4")], val=[], test=[Example("3+3?", "6")], guide=Numeric())
    >>> question, answer = task.train[0]
    >>> task.guide("It is 4.", answer).score
    1.0
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from feedprop.errors import InvalidInputError
from feedprop.training.guide import Guide

__all__ = ["SPLITS", "Example", "Task"]

#: The split names of a task, in order.
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Example:
    """One dataset item: the ``input`` a workflow receives, the ``target`` its guide expects,
    and ``meta`` (ids, reference solutions, anything else the task keeps).

    An example unpacks as ``input, target``.

    Example:
        >>> question, answer = Example("2+2?", "4", {"id": 7})
        >>> answer
        '4'
    """

    input: Any
    target: Any
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        yield self.input
        yield self.target

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for logs and checkpoints)."""
        return {"input": self.input, "target": self.target, "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Example:
        """The inverse of :meth:`to_dict`."""
        if not isinstance(data, Mapping) or "input" not in data or "target" not in data:
            raise InvalidInputError("Example.from_dict needs a mapping with 'input' and 'target' keys")
        return cls(data["input"], data["target"], dict(data.get("meta") or {}))


@dataclass(frozen=True, repr=False)
class Task:
    """A benchmark: its ``train``/``val``/``test`` splits, the ``guide`` that scores an output, and
    optional ``few_shot`` demonstrations and ``description``.

    Splits are tuples of :class:`Example`, in the order the published protocol defines.
    """

    name: str
    train: tuple[Example, ...]
    val: tuple[Example, ...]
    test: tuple[Example, ...]
    guide: Guide
    few_shot: tuple[Example, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.guide, Guide):
            raise InvalidInputError(f"Task.guide must be a Guide, got {type(self.guide).__name__}")
        for name in (*SPLITS, "few_shot"):
            object.__setattr__(self, name, _examples(getattr(self, name), name))

    def split(self, name: str) -> tuple[Example, ...]:
        """The split called ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in SPLITS:
            raise InvalidInputError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        split: tuple[Example, ...] = getattr(self, name)
        return split

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(self.split(s))}" for s in SPLITS)
        shots = f", few_shot={len(self.few_shot)}" if self.few_shot else ""
        return f"Task({self.name!r}, {sizes}{shots}, guide={self.guide!r})"


def _examples(items: Iterable[Any], split: str) -> tuple[Example, ...]:
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        raise InvalidInputError(f"Task.{split} must be a sequence of Example, got {type(items).__name__}")
    out = tuple(items)
    for i, item in enumerate(out):
        if not isinstance(item, Example):
            raise InvalidInputError(
                f"Task.{split}[{i}] is a {type(item).__name__}, not an Example; wrap it as Example(input, target)"
            )
    return out
