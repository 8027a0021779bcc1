"""How a run calls its tracker: :func:`resolve_tracker` reads ``tracker=``, :func:`track` wraps the run.

``fp.train`` and ``fp.joint.alternate`` use these two; nothing else of a run knows about trackers.
Inside ``with track(...) as tracked:`` the run's event log (anything with ``subscribe``) feeds
the tracker, ``tracked.finish(result)`` ends the run in the tracker, and an exception leaving the
block is reported with :meth:`~feedprop.tracking.Tracker.on_error` and raised on.

Example:
    >>> from feedprop.tracking import Tracker
    >>> class Seen(Tracker):
    ...     def on_error(self, error):
    ...         print("error:", error)
    >>> try:
    ...     with track(Seen(), None) as tracked:
    ...         raise ValueError("guide crashed")
    ... except ValueError:
    ...     pass
    error: guide crashed
    >>> resolve_tracker(None).__class__.__name__
    'Tracker'
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.tracking.mlflow import MLflowTracker
from feedprop.tracking.tracker import RunResult, Tracker

__all__ = ["TRACKERS", "Tracked", "resolve_tracker", "track"]

#: The trackers ``tracker=`` accepts by name.
TRACKERS: dict[str, Callable[[], Tracker]] = {"mlflow": MLflowTracker}

R = TypeVar("R", bound=RunResult)


class EventSource(Protocol):
    """An event log a tracker can listen to (:class:`feedprop.training.events.EventLog`)."""

    def subscribe(self, listener: Callable[[Mapping[str, Any]], None]) -> None: ...


def resolve_tracker(spec: str | Tracker | None) -> Tracker:
    """The tracker ``tracker=`` names: ``None`` (a tracker that does nothing), ``"mlflow"``, or a :class:`Tracker`.

    Example:
        >>> resolve_tracker("wandb")
        Traceback (most recent call last):
        ...
        feedprop.errors.ConfigurationError: unknown tracker 'wandb'; pass 'mlflow', a feedprop.tracking.Tracker, or None
    """
    if spec is None:
        return Tracker()
    if isinstance(spec, Tracker):
        return spec
    if isinstance(spec, str):
        make = TRACKERS.get(spec.strip().lower())
        if make is None:
            names = ", ".join(repr(name) for name in TRACKERS)
            raise ConfigurationError(f"unknown tracker {spec!r}; pass {names}, a feedprop.tracking.Tracker, or None")
        return make()
    raise InvalidInputError(
        f"tracker must be 'mlflow', a feedprop.tracking.Tracker (subclass it and override its on_* hooks) or None, "
        f"got {type(spec).__name__}"
    )


class Tracked:
    """A run inside :func:`track`: ``finish(result)`` hands the result to the tracker and returns it."""

    def __init__(self, tracker: Tracker, run_dir: Path | None) -> None:
        self.tracker = tracker
        self.run_dir = run_dir

    def finish(self, result: R) -> R:
        self.tracker.on_finish(result, run_dir=self.run_dir)
        return result


@contextmanager
def track(
    spec: str | Tracker | None, run_dir: str | os.PathLike[str] | None, events: EventSource | None = None
) -> Iterator[Tracked]:
    """Run a block as a tracked run: ``events`` feed the tracker, an exception is reported to it.

    The log's ``"start"`` event becomes :meth:`~Tracker.on_start` (with the event's ``config`` and
    ``parameters``), ``"resume"`` becomes :meth:`~Tracker.on_resume`, every other event
    :meth:`~Tracker.on_event`. A run without an event log calls the tracker's hooks itself.
    """
    tracker = resolve_tracker(spec)
    directory = Path(run_dir) if run_dir is not None else None
    if events is not None:
        events.subscribe(_forward(tracker, directory))
    try:
        yield Tracked(tracker, directory)
    except BaseException as exc:
        tracker.on_error(exc)
        raise


def _forward(tracker: Tracker, run_dir: Path | None) -> Callable[[Mapping[str, Any]], None]:
    def listen(event: Mapping[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            tracker.on_start(event.get("config") or {}, event.get("parameters") or {}, run_dir=run_dir)
        elif kind == "resume":
            tracker.on_resume(run_dir=run_dir)
        else:
            tracker.on_event(event)

    return listen
