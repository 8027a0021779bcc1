"""A bounded memory of past steps: the values the parameters had and the feedback they got.

Shown to the model so it does not repeat a value that already failed. The entries are plain
JSON and live in the optimizer's ``global_state``, so they are saved with it.

Example:
    >>> entries: list[dict] = []
    >>> memory = Memory(entries, size=2)
    >>> for step in range(3):
    ...     memory.add(step, {"x": float(step)}, f"x={step} is too small", score=-3.0 + step)
    >>> [e["values"]["x"] for e in entries]
    [1.0, 2.0]
    >>> print(memory.render(max_tokens=200))
    Step 1: x = 1.0
      feedback (score -2): x=1 is too small
    Step 2: x = 2.0
      feedback (score -1): x=2 is too small
"""

from __future__ import annotations

import json
from typing import Any

from feedprop._text import truncate_middle
from feedprop.errors import ConfigurationError
from feedprop.optim.fitting import fit_blocks

__all__ = ["Memory", "format_value"]


def format_value(value: Any, max_chars: int = 400) -> str:
    """A value as the model should read it: text as text (indented if multi-line), the rest as JSON."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = truncate_middle(text, max_chars)
    if isinstance(value, str) and ("\n" in text or not text.strip()):
        return json.dumps(text, ensure_ascii=False) if not text.strip() else "\n" + _indent(text, "    ")
    return text


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())


class Memory:
    """At most ``size`` entries ``{"step", "values", "feedback", "score"}``, oldest first.

    ``entries`` is the list to keep them in (the optimizer passes one from its state).
    """

    def __init__(self, entries: list[dict[str, Any]], size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ConfigurationError(f"memory_size must be an int >= 0, got {size!r}")
        self.entries = entries
        self.size = size
        del self.entries[: max(0, len(self.entries) - size)]

    def add(self, step: int, values: dict[str, Any], feedback: str, score: float | None = None) -> None:
        """Remember one step, dropping the oldest entry beyond ``size``."""
        if self.size == 0:
            return
        self.entries.append({"step": step, "values": values, "feedback": feedback, "score": score})
        del self.entries[: max(0, len(self.entries) - self.size)]

    def render(self, max_tokens: int, value_chars: int = 400) -> str:
        """The entries as text within ``max_tokens``, keeping the newest when not all fit."""
        blocks = []
        for entry in reversed(self.entries):
            values = "; ".join(f"{k} = {format_value(v, value_chars)}" for k, v in entry["values"].items())
            score = entry.get("score")
            label = "feedback" if score is None else f"feedback (score {score:g})"
            blocks.append(f"Step {entry['step']}: {values}\n  {label}: {truncate_middle(entry['feedback'], 600)}")
        return "\n".join(reversed(fit_blocks(blocks, max_tokens)))
