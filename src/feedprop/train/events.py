"""The JSONL event log of a training run: one JSON object per line, appended as things happen.

Each event has ``event`` (its kind), ``time`` (Unix seconds) and fields of its own. The log
is append-only and survives crashes line by line; a resumed run appends a ``resume`` event and
carries on in the same file, so events of a step that was cut short stay visible.

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
from pathlib import Path
from typing import IO, Any

__all__ = ["EventLog", "read_events"]


class EventLog:
    """Appends events to a JSONL file; with ``path=None`` it only keeps them in memory."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None

    def emit(self, event: str, **fields: Any) -> None:
        """Record one event (flushed to disk at once, so a crash loses at most the line in progress)."""
        record = {"event": event, "time": round(time.time(), 3), **fields}
        line = json.dumps(record, sort_keys=True, default=repr)
        with self._lock:
            self.events.append(record)
            if self.path is None:
                return
            if self._fh is None:
                torn = _ends_mid_line(self.path)
                self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across events
                if torn:  # a crash left half a line: end it, so the next event starts on a line of its own
                    self._fh.write("\n")
            self._fh.write(line + "\n")
            self._fh.flush()

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
