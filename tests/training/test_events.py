"""The JSONL event log."""

from __future__ import annotations

from pathlib import Path

from feedprop.training.events import ITEM_OUTCOME_SCHEMA, EventLog, ItemOutcome, item_outcome, item_scores, read_events


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


def test_item_outcomes_have_one_schema_and_round_trip_through_the_log(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    outcomes = [
        item_outcome(12, 1, "The answer is 4.", feedback="Correct."),
        item_outcome(40, 0.0, "", error="ExecutionError: the model timed out"),
        item_outcome(41, 0.5, "x" * 1000),
    ]
    log.emit_items("test", outcomes, step=3)
    log.close()
    (event,) = read_events(path)
    assert event["event"] == "items" and event["phase"] == "test" and event["step"] == 3
    assert event["schema"] == ITEM_OUTCOME_SCHEMA
    assert item_scores(event["items"]) == {12: 1.0, 40: 0.0, 41: 0.5}
    assert event["items"][1] == {
        "index": 40,
        "score": 0.0,
        "output": "",
        "error": "ExecutionError: the model timed out",
    }
    long = event["items"][2]["output"]
    assert len(long) <= 400 and "...[truncated " in long and long.startswith("xxx") and long.endswith("xxx")
    assert all(set(item) <= set(ItemOutcome.__annotations__) for item in event["items"])


def test_subscribers_see_each_event_after_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    seen: list[tuple[str, int]] = []
    log.subscribe(lambda event: seen.append((event["event"], len(read_events(path)))))
    log.emit("start", step=0)
    log.emit("step", step=1)
    log.close()
    assert seen == [("start", 1), ("step", 2)]  # each one already in the file when the listener runs


def test_a_failing_subscriber_reaches_the_caller_and_the_event_stays_logged() -> None:
    log = EventLog(None)

    def refuse(event: object) -> None:
        raise RuntimeError("tracker down")

    log.subscribe(refuse)
    try:
        log.emit("start")
    except RuntimeError as exc:
        assert str(exc) == "tracker down"
    else:
        raise AssertionError("the listener's error was swallowed")
    assert [e["event"] for e in log.events] == ["start"]
