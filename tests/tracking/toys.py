"""A tiny workflow, a scripted optimizer and a tracker that records its calls, shared by the tracking tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from feedprop.llm import MockLLM
from feedprop.module import Module
from feedprop.node import Node, Parameter
from feedprop.optim import Optimizer, OptoPrime
from feedprop.tracking import RunResult, Tracker

DATA = [(f"q{i}", f"q{i}!") for i in range(6)]
VAL = DATA[:2]


class Suffix(Module):
    def __init__(self) -> None:
        self.suffix = Parameter("?", name="suffix", description="appended to every answer")

    def forward(self, x: str) -> Node[Any]:
        return x + self.suffix


def exact(output: Any, target: Any) -> float:
    return float(output == target)


def optimizer(model: Module, suffixes: tuple[str, ...] = ("!", "?", "!!")) -> OptoPrime:
    """OptoPrime whose model proposes ``suffixes`` in turn, again and again."""
    replies = [json.dumps({"reasoning": "scripted", "suggestion": {"suffix": s}}) for s in suffixes] * 20
    return OptoPrime(model.parameters(), llm=MockLLM(replies))


class Recorder(Tracker):
    """Records every hook call as (hook, details)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def on_start(self, config: Mapping[str, Any], parameters: Mapping[str, Any], *, run_dir: Path | None) -> None:
        self.calls.append(("start", {"config": dict(config), "parameters": dict(parameters), "run_dir": run_dir}))

    def on_resume(self, *, run_dir: Path | None) -> None:
        self.calls.append(("resume", run_dir))

    def on_event(self, event: Mapping[str, Any]) -> None:
        self.calls.append(("event", dict(event)))

    def on_finish(self, result: RunResult, *, run_dir: Path | None) -> None:
        self.calls.append(("finish", (result, run_dir)))

    def on_error(self, error: BaseException) -> None:
        self.calls.append(("error", error))

    def hooks(self) -> list[str]:
        return [hook for hook, _ in self.calls]

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [detail for hook, detail in self.calls if hook == "event" and detail["event"] == kind]


class FailingGuide:
    """``exact``, except that call number ``fail_at`` raises ``error``."""

    def __init__(self, fail_at: int, error: BaseException) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self.error = error

    def __call__(self, output: Any, target: Any) -> float:
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.error
        return exact(output, target)


def scripted(params: list[Parameter[Any]]) -> Optimizer:
    """A prompt optimizer for alternate(): always proposes the suffix "!"."""
    reply = json.dumps({"reasoning": "scripted", "suggestion": {"suffix": "!"}})
    return OptoPrime(params, llm=MockLLM(reply))
