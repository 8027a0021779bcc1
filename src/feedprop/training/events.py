"""The JSONL event log of a training run: one JSON object per line, appended as things happen.

Each event has ``event`` (its kind), ``time`` (Unix seconds) and fields of its own. The log
is append-only and survives crashes line by line; a resumed run appends a ``resume`` event and
carries on in the same file, so events of a step that was cut short stay visible.

Per-item outcomes (what one item of a scored set produced) have one schema, :class:`ItemOutcome`,
made by :func:`item_outcome`, so a run viewer reads the same records from a training log
(``items`` events, :meth:`EventLog.emit_items`) and from a benchmark's result files.

Example:
    >>> import json, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "events.jsonl")
    >>> log = EventLog(path)
    >>> log.emit("step", step=1, val_score=0.5)
    >>> log.close()
    >>> json.loads(open(path).readline())["val_score"]
    0.5
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NotRequired, TypedDict

from feedprop._text import show, truncate_middle

if TYPE_CHECKING:
    from feedprop.training.evaluation import Outcome

__all__ = [
    "ITEM_OUTCOME_SCHEMA",
    "EventLog",
    "ItemOutcome",
    "item_outcome",
    "item_outcomes",
    "item_scores",
    "read_events",
]

#: Name and version of the per-item outcome record.
ITEM_OUTCOME_SCHEMA = "feedprop-item/1"


class ItemOutcome(TypedDict):
    """What one item of a scored set produced.

    ``index`` identifies the item in its dataset (for a published split, its index there),
    ``score`` is the guide's score, ``output`` the program's output as text (long ones elided in
    the middle); ``feedback`` (the guide's text) and ``error`` (the workflow failed; it scored 0)
    appear only when there is something to say.
    """

    index: int
    score: float
    output: str
    feedback: NotRequired[str]
    error: NotRequired[str]


def item_outcome(
    index: int,
    score: float,
    output: Any = "",
    *,
    feedback: str | None = None,
    error: str | None = None,
    limit: int = 400,
) -> ItemOutcome:
    """One :class:`ItemOutcome`; texts longer than ``limit`` characters keep their two ends
    (:func:`feedprop._text.show`: an output that is not text is written as JSON).

    Example:
        >>> item_outcome(7, 1, "0123456789" * 50, limit=40)
        {'index': 7, 'score': 1.0, 'output': '0123456...[truncated 487 chars]...456789'}
        >>> item_outcome(8, 0.0, {"answer": 4}, error="TimeoutError: slow")
        {'index': 8, 'score': 0.0, 'output': '{"answer": 4}', 'error': 'TimeoutError: slow'}
    """
    record = ItemOutcome(index=int(index), score=float(score), output=show(output, limit))
    if feedback:
        record["feedback"] = truncate_middle(feedback, limit)
    if error:
        record["error"] = truncate_middle(error, limit)
    return record


def item_outcomes(outcomes: Iterable[Outcome]) -> list[ItemOutcome]:
    """The :class:`ItemOutcome` of each scored item: its output, the guide's score and feedback, any error.

    Example:
        >>> from feedprop.node import Feedback
        >>> from feedprop.training.evaluation import Outcome
        >>> item_outcomes([Outcome(3, "4", Feedback("Correct.", score=1.0))])
        [{'index': 3, 'score': 1.0, 'output': '4', 'feedback': 'Correct.'}]
    """
    return [
        item_outcome(
            o.index,
            o.score,
            getattr(o.output, "data", o.output),
            feedback=o.feedback.text,
            error=None if o.error is None else str(o.error),
        )
        for o in outcomes
    ]


def item_scores(outcomes: Iterable[Mapping[str, Any]]) -> dict[int, float]:
    """``index -> score`` of per-item outcomes (from a log's ``items`` event or a result file).

    Example:
        >>> item_scores([item_outcome(3, 1.0), item_outcome(5, 0.0)])
        {3: 1.0, 5: 0.0}
    """
    return {int(o["index"]): float(o["score"]) for o in outcomes}


class EventLog:
    """Appends events to a JSONL file; with ``path=None`` it only keeps them in memory."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        self._listeners: list[Callable[[Mapping[str, Any]], None]] = []

    def subscribe(self, listener: Callable[[Mapping[str, Any]], None]) -> None:
        """Call ``listener(event)`` with every event recorded from now on, once it is in the log.

        The listener runs in the thread that records the event, and what it raises reaches that thread.

        Example:
            >>> log = EventLog(None)
            >>> log.subscribe(lambda event: print(event["event"], event["step"]))
            >>> log.emit("step", step=1)
            step 1
        """
        self._listeners.append(listener)

    def emit(self, event: str, **fields: Any) -> None:
        """Record one event (flushed to disk at once, so a crash loses at most the line in progress)."""
        record = {"event": event, "time": round(time.time(), 3), **fields}
        line = json.dumps(record, sort_keys=True, default=repr)
        with self._lock:
            self.events.append(record)
            if self.path is not None:
                self._write(line)
        for listener in self._listeners:
            listener(record)

    def _write(self, line: str) -> None:
        assert self.path is not None
        if self._fh is None:
            torn = _ends_mid_line(self.path)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across events
            if torn:  # a crash left half a line: end it, so the next event starts on a line of its own
                self._fh.write("\n")
        self._fh.write(line + "\n")
        self._fh.flush()

    def emit_items(self, phase: str, outcomes: Sequence[ItemOutcome], **fields: Any) -> None:
        """Record the per-item outcomes of one scored set (an ``items`` event: ``phase``, ``items``).

        Example:
            >>> log = EventLog(None)
            >>> log.emit_items("test", [item_outcome(0, 1.0, "4")], step=0)
            >>> log.events[0]["event"], log.events[0]["schema"], log.events[0]["items"][0]["score"]
            ('items', 'feedprop-item/1', 1.0)
        """
        self.emit("items", phase=phase, schema=ITEM_OUTCOME_SCHEMA, items=list(outcomes), **fields)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def _ends_mid_line(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except FileNotFoundError:
        return False


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete event in a JSONL log (a torn last line from a crash is skipped)."""
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out
