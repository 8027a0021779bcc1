"""Experiment tracking: a run's options, per-step metrics, parameters and report in a tracker such as MLflow.

``fp.train(..., tracker="mlflow")`` (or ``tracker=MLflowTracker(tracking_uri=...)``, or any
:class:`Tracker`) and ``fp.joint.alternate(..., tracker=...)`` send their run to a tracker. The
``tracking`` extra installs MLflow (``pip install 'feedprop[tracking]'``); nothing here imports it
until a run starts.

Example:
    >>> from feedprop.tracking import Tracker, resolve_tracker
    >>> tracker = Tracker()
    >>> resolve_tracker(tracker) is tracker, resolve_tracker(None).on_event({"event": "step"})
    (True, None)
"""

from feedprop.tracking.hook import TRACKERS, Tracked, resolve_tracker, track
from feedprop.tracking.mlflow import MLflowTracker, event_metrics, store_uri, usage_metrics
from feedprop.tracking.tracker import RunResult, Tracker, flatten, parameter_files

__all__ = [
    "TRACKERS",
    "MLflowTracker",
    "RunResult",
    "Tracked",
    "Tracker",
    "event_metrics",
    "flatten",
    "parameter_files",
    "resolve_tracker",
    "store_uri",
    "track",
    "usage_metrics",
]
