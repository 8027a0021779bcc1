"""What a run directory keeps for the run page besides the log: the workflow's graph and per-item outcomes.

:func:`record_graph` writes ``graph.json`` (a :class:`~feedprop.graph_data.GraphRecord`) the first
time it sees outcomes with a traced output: the graph of the first item that produced one, with
the values of that run. :func:`log_outcomes` appends the per-item outcomes of a scored set to the
directory's ``events.jsonl`` as an ``items`` event (:data:`~feedprop.training.events.ITEM_OUTCOME_SCHEMA`).
The trainer records the graph of its first minibatch; :func:`feedprop.joint.alternate` records the
graph and the test set's outcomes of every scoring. ``feedprop view`` reads both.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from feedprop.node import Feedback, Parameter
    >>> from feedprop.training.evaluation import Outcome
    >>> out = Parameter("Hi", name="greeting") + "!"
    >>> outcomes = [Outcome(0, out, Feedback("ok", score=1.0))]
    >>> run = Path(tempfile.mkdtemp())
    >>> record_graph(run, outcomes).name, record_graph(run, outcomes)
    ('graph.json', None)
    >>> log_outcomes(run, "test", outcomes, joint_phase=0)
    >>> from feedprop.training.events import read_events
    >>> read_events(run / "events.jsonl")[0]["items"]
    [{'feedback': 'ok', 'index': 0, 'output': 'Hi!', 'score': 1.0}]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feedprop.graph_data import write_graph
from feedprop.node import Node
from feedprop.training.checkpoint import RunDirectory
from feedprop.training.evaluation import Outcome
from feedprop.training.events import EventLog, item_outcomes

__all__ = ["EVENTS_FILE", "GRAPH_FILE", "log_outcomes", "record_graph"]

GRAPH_FILE = RunDirectory.GRAPH
EVENTS_FILE = "events.jsonl"

logger = logging.getLogger("feedprop.training")


def record_graph(directory: str | os.PathLike[str], outcomes: Sequence[Outcome]) -> Path | None:
    """Write ``directory/graph.json`` from the first outcome with a traced graph, unless the file exists.

    Returns the path written, or ``None`` (already there, no traced output, or the write failed:
    a run never stops for its drawing; the failure is logged).
    """
    target = Path(directory) / GRAPH_FILE
    if target.exists():
        return None
    for outcome in outcomes:
        node: Any = outcome.error.node if outcome.error is not None else outcome.output
        if isinstance(node, Node):
            try:
                return write_graph(target, node)
            except OSError as exc:
                logger.warning("could not write %s: %s", target, exc)
                return None
    return None


def log_outcomes(directory: str | os.PathLike[str], phase: str, outcomes: Sequence[Outcome], **fields: Any) -> None:
    """Append an ``items`` event with the outcomes of ``phase`` (and ``fields``) to ``directory/events.jsonl``."""
    log = EventLog(Path(directory) / EVENTS_FILE)
    try:
        log.emit_items(phase, item_outcomes(outcomes), **fields)
    finally:
        log.close()
