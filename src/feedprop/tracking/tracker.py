"""``Tracker``: what an experiment tracker hears from a training run, and the records it can keep.

``fp.train(..., tracker=...)`` and ``fp.joint.alternate(..., tracker=...)`` call a tracker's
hooks as the run goes:

- :meth:`Tracker.on_start` when a run begins, with its options and its initial parameters, or
  :meth:`Tracker.on_resume` when ``resume=True`` continues a run from its checkpoint;
- :meth:`Tracker.on_event` for every event of the run, the same dicts the event log
  ``events.jsonl`` holds (``"evaluate"`` before training, ``"step"`` after each step, ``"items"``,
  ``"finish"``, ...; a joint run sends one ``"phase"`` event per phase);
- :meth:`Tracker.on_finish` with the run's result, or :meth:`Tracker.on_error` if the run raised.

The base class does nothing; a tracker overrides the hooks it needs. :func:`flatten` and
:func:`parameter_files` give any tracker the same records of options and parameters that
:class:`~feedprop.tracking.MLflowTracker` keeps.

Example:
    >>> import feedprop as fp
    >>> class Printer(Tracker):
    ...     def on_event(self, event):
    ...         if event["event"] == "step":
    ...             print("step", event["step"], "val", event["val_score"])
    ...     def on_finish(self, result, *, run_dir):
    ...         print("best", result.best_state)
    >>> class Echo(fp.Module):
    ...     def __init__(self):
    ...         self.suffix = fp.Parameter("?", name="suffix")
    ...     def forward(self, x):
    ...         return x + self.suffix
    >>> model = Echo()
    >>> reply = '{"reasoning": "ends with !", "suggestion": {"suffix": "!"}}'
    >>> opt = fp.optim.OptoPrime(model.parameters(), llm=fp.llm.MockLLM(reply))
    >>> data = [("hi", "hi!")]
    >>> _ = fp.train(model, data, lambda out, t: out == t, opt, val_set=data, progress=False, tracker=Printer())
    step 1 val 1.0
    best {'suffix': '!'}
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

__all__ = ["RunResult", "Tracker", "flatten", "parameter_files"]


class RunResult(Protocol):
    """What a finished run hands its tracker; :class:`~feedprop.TrainResult` and
    :class:`~feedprop.joint.JointResult` both fit. Scores are mean guide scores (``None``
    without that set); ``usage`` is the run's LLM usage by phase with a ``"total"`` entry, and
    ``"by_model"`` when the run counted usage by model."""

    @property
    def best_state(self) -> dict[str, Any]: ...
    @property
    def val_before(self) -> float | None: ...
    @property
    def val_after(self) -> float | None: ...
    @property
    def test_before(self) -> float | None: ...
    @property
    def test_after(self) -> float | None: ...
    @property
    def stop_reason(self) -> str: ...
    @property
    def usage(self) -> dict[str, Any]: ...


class Tracker:
    """Receives a run's start, its events and its end; every hook does nothing until overridden.

    Hooks are called in the training thread, so a slow one slows training: send slow work
    elsewhere (:class:`~feedprop.tracking.MLflowTracker` logs step metrics from a thread of its own).
    ``run_dir`` is the run's checkpoint directory, or ``None`` when the run has none.
    """

    def on_start(self, config: Mapping[str, Any], parameters: Mapping[str, Any], *, run_dir: Path | None) -> None:
        """A new run begins: ``config`` holds its options, ``parameters`` the initial parameter values."""

    def on_resume(self, *, run_dir: Path | None) -> None:
        """A run continues from the checkpoint in ``run_dir`` (its options are those it started with)."""

    def on_event(self, event: Mapping[str, Any]) -> None:
        """One event of the run: ``event["event"]`` names its kind; ``event["time"]`` (if any) is in Unix seconds."""

    def on_finish(self, result: RunResult, *, run_dir: Path | None) -> None:
        """The run ended normally (``result.stop_reason`` says why); the model holds ``result.best_state``."""

    def on_error(self, error: BaseException) -> None:
        """The call raised ``error`` (``KeyboardInterrupt`` included); its checkpoint can resume the run.

        It comes without a start when the call failed before the run began (e.g. a run directory
        that already holds a run, without ``resume=True``).
        """


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys (how a tracker's flat parameter list shows options).

    Example:
        >>> flatten({"batch_size": 4, "budget": {"calls": None, "scope": "all"}})
        {'batch_size': 4, 'budget.calls': None, 'budget.scope': 'all'}
    """
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _parameter_text(value: Any) -> str:
    """A parameter's value as text: a string as it is, anything else as indented JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=repr)


def parameter_files(state: Mapping[str, Any]) -> dict[str, str]:
    """File name -> text for a state dict: ``params.json`` with every value, and one ``.txt`` per parameter.

    A dotted parameter name is kept (``encoder.instruction.txt``); characters a file name should not
    hold become ``_``, and a name that still collides gets a number.

    Example:
        >>> files = parameter_files({"instruction": "Be brief.", "solver.k": 3, "a/b": "x"})
        >>> sorted(files)
        ['a_b.txt', 'instruction.txt', 'params.json', 'solver.k.txt']
        >>> files["instruction.txt"], files["solver.k.txt"], json.loads(files["params.json"])["solver.k"]
        ('Be brief.', '3', 3)
    """
    files = {"params.json": json.dumps(dict(state), indent=2, sort_keys=True, ensure_ascii=False, default=repr)}
    for name, value in state.items():
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "parameter"
        candidate, n = f"{stem}.txt", 1
        while candidate in files:
            n += 1
            candidate = f"{stem}-{n}.txt"
        files[candidate] = _parameter_text(value)
    return files
