"""TrainResult: counts, and a repr that fits on one screen."""

from __future__ import annotations

from feedprop.training.result import TrainResult


def test_repr_is_one_screen_however_long_the_run() -> None:
    events = [
        {"event": "step", "time": 0.0, "step": i, "candidates": [{"updates": {"p": "x" * 500}}]} for i in range(300)
    ]
    result = TrainResult(
        history=[{"accepted": i % 3 == 0} for i in range(300)],
        best_state={f"p{i}": "long prompt " * 100 for i in range(12)},
        initial_state={},
        best_step=42,
        val_before=0.25,
        val_after=0.75,
        usage={"total": {"calls": 900, "tokens": 123456}},
        stop_reason="completed 3 epoch(s)",
        events=events,
    )
    text = repr(result)
    assert len(text) < 1200 and text.count("\n") == 0, len(text)
    assert text.startswith("TrainResult(steps=300, accepted=100, best_step=42, val_before=0.25, val_after=0.75,")
    assert "calls=900, tokens=123456" in text and "events=300" in text and "... (4 more)" in text
    assert "'step'" not in text, "no event is listed"
