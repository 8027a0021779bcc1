"""The bounded memory of past (values, feedback) pairs, and the prompt budget helpers."""

from __future__ import annotations

import pytest

from feedprop._text import truncate_middle
from feedprop.errors import ConfigurationError
from feedprop.optim.fitting import fit_blocks
from feedprop.optim.memory import Memory, format_value


def test_memory_keeps_the_newest_within_its_size() -> None:
    entries: list[dict] = []
    memory = Memory(entries, size=3)
    for step in range(10):
        memory.add(step, {"x": step}, f"feedback {step}")
    assert [e["step"] for e in entries] == [7, 8, 9]


def test_memory_size_zero_keeps_nothing_and_shrinks_loaded_entries() -> None:
    entries = [{"step": i, "values": {}, "feedback": "", "score": None} for i in range(5)]
    Memory(entries, size=2)
    assert [e["step"] for e in entries] == [3, 4]
    off = Memory([], size=0)
    off.add(1, {"x": 1}, "f")
    assert off.entries == []


@pytest.mark.parametrize("size", [-1, 1.5, True, "3"])
def test_memory_size_is_checked(size: object) -> None:
    with pytest.raises(ConfigurationError, match="memory_size"):
        Memory([], size=size)  # type: ignore[arg-type]


def test_memory_render_respects_the_budget_and_keeps_the_newest() -> None:
    memory = Memory([], size=10)
    for step in range(10):
        memory.add(step, {"prompt": "word " * 100}, "too long " * 20, score=float(step))
    text = memory.render(max_tokens=400)
    assert (len(text) + 3) // 4 <= 400
    assert "Step 9" in text and "Step 0" not in text
    assert text.index("Step 8") < text.index("Step 9")  # oldest first among those shown


def test_format_value() -> None:
    assert format_value(2.5) == "2.5"
    assert format_value({"a": [1]}) == '{"a": [1]}'
    assert format_value("line1\nline2") == "\n    line1\n    line2"
    assert format_value("") == '""'
    assert "[truncated" in format_value("x" * 1000, max_chars=100)


def test_truncate_middle() -> None:
    text = "".join(str(i % 10) for i in range(1000))
    cut = truncate_middle(text, 100)
    assert len(cut) <= 100
    assert cut.startswith(text[:10]) and cut.endswith(text[-10:])
    assert "[truncated" in cut
    assert truncate_middle("short", 100) == "short"


def test_fit_blocks() -> None:
    assert fit_blocks(["a" * 40] * 5, 33) == ["a" * 40] * 3
    assert fit_blocks(["a" * 400], 10) == []
