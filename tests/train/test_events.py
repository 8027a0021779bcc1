"""The JSONL event log."""

from __future__ import annotations

from pathlib import Path

from feedprop.train.events import EventLog, read_events


def test_events_append_and_survive_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.emit("start", step=0)
    log.emit("step", step=1, val_score=0.5, extra=object())  # non-JSON values are written as repr
    log.close()
    with open(path, "a") as fh:
        fh.write('{"event": "step", "ste')  # a crash mid-line
    events = read_events(path)
    assert [e["event"] for e in events] == ["start", "step"]
    assert events[1]["val_score"] == 0.5 and "object" in events[1]["extra"]
    again = EventLog(path)
    again.emit("resume", step=1)
    again.close()
    assert read_events(path)[-1]["event"] == "resume"


def test_memory_only_log_keeps_events() -> None:
    log = EventLog(None)
    log.emit("x", a=1)
    assert log.events[0]["a"] == 1 and log.events[0]["event"] == "x"
