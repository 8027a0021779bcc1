"""Small models, guides and scripted optimizer replies shared by the trainer tests.

Everything here is deterministic: the optimizer (feedprop's OptoPrime) asks a MockLLM whose reply
is scripted or a function of the prompt, so two runs from the same state make the same calls.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from feedprop import ops
from feedprop.llm import LLM, MockLLM
from feedprop.module import Module
from feedprop.node import Feedback, Node, Parameter


class Suffix(Module):
    """output = input + suffix, for a text Parameter ``suffix``; optionally calls ``llm`` on the input first."""

    def __init__(self, suffix: str = "?", llm: LLM | None = None) -> None:
        self.suffix = Parameter(suffix, name="suffix", description="appended to every answer")
        self.llm = llm

    def forward(self, x: str) -> Node[Any]:
        if self.llm is not None:  # a workflow that calls a model for each item
            x = self.llm.complete([{"role": "user", "content": x}]).text
        return x + self.suffix


class AsyncSuffix(Module):
    """:class:`Suffix` with ``async def forward``: awaits ``ops.allm_call`` on the input first when given ``llm``."""

    def __init__(self, suffix: str = "?", llm: LLM | None = None) -> None:
        self.suffix = Parameter(suffix, name="suffix", description="appended to every answer")
        self.llm = llm

    async def forward(self, x: str) -> Node[Any]:
        reply: Any = x
        if self.llm is not None:
            reply = await ops.allm_call(None, x, llm=self.llm)
        out: Node[Any] = reply + self.suffix
        return out


def exact(output: Any, target: Any) -> Feedback:
    """Score 1 for an exact match, else 0 with the expected answer in the text."""
    if output == target:
        return Feedback("Correct.", score=1.0)
    return Feedback(f"Wrong: expected {target!r}, got {output!r}.", score=0.0)


def suggest(**values: Any) -> str:
    """An optimizer reply in the JSON format feedprop's optimizers read."""
    return json.dumps({"reasoning": "scripted", "suggestion": values})


def scripted_llm(replies: Sequence[str]) -> MockLLM:
    """A MockLLM serving ``replies`` in order (one optimizer call per step)."""
    return MockLLM(list(replies))


def per_sample(replies: Sequence[str]) -> MockLLM:
    """A MockLLM for one multi-candidate proposal: each sample gets one of ``replies``.

    Samples run in parallel threads, so which sample gets which reply is not fixed; tests
    compare candidates by their values, never by their position.
    """
    return MockLLM(list(replies))


def hashed_suggestions(choices: Sequence[str], latency: float = 0.0, model: str = "mock") -> MockLLM:
    """Suggest ``choices[sha256(prompt) % len(choices)]``: a pure function of the optimizer's prompt."""

    def handler(messages: Any, **params: Any) -> str:
        digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).digest()
        return suggest(suffix=choices[int.from_bytes(digest[:8], "big") % len(choices)])

    return MockLLM(handler, latency=latency, model=model)


def data(n: int, end: str = "!") -> list[tuple[str, str]]:
    return [(f"q{i}", f"q{i}{end}") for i in range(n)]


Guide = Callable[[Any, Any], Feedback]
