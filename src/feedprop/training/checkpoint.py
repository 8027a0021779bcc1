"""Crash-safe JSON checkpoints of a training run.

A run directory holds:

- ``checkpoint.json`` — the state after the last completed step: parameters, optimizer state,
  RNG state, history, usage, scores, and a fingerprint of the run's configuration;
- ``checkpoint.prev.json`` — the checkpoint before it, kept so that a damaged latest file never
  costs more than one step;
- ``best.json`` — the best parameters so far (a ``Module.state_dict()``, loadable with
  ``model.load_state_dict``);
- ``events.jsonl``, ``report.md`` and ``curve.png`` written by the trainer.

A run that keeps its whole state in one file (a joint run's ``joint.json``) uses a
:class:`StateFile` instead; both offer ``exists``, ``load`` and ``save``.

Every file is written atomically (:func:`feedprop._files.atomic_write`): a reader sees either the
old or the new file, never a torn one, even after a power cut. JSON only, never pickle: a
checkpoint is data, not code.

Example:
    >>> import tempfile
    >>> run = RunDirectory(tempfile.mkdtemp())
    >>> run.save({"step": 1, "fingerprint": {}})
    >>> run.load()["step"]
    1
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from feedprop._files import atomic_write, stale_temporaries
from feedprop._text import show
from feedprop.errors import CheckpointError, InvalidInputError

__all__ = ["RunDirectory", "StateFile", "check_fingerprint", "rng_from_json", "rng_to_json", "write_json_atomic"]

FORMAT = "feedprop.checkpoint"
VERSION = 1


def _dumps(data: Any) -> bytes:
    try:
        return json.dumps(data, indent=1, sort_keys=True, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint data is not JSON-serialisable ({exc}); parameters, optimizer state and history "
            "must hold only JSON values (str, numbers, bools, None, lists, dicts with str keys)"
        ) from exc


def write_bytes_atomic(path: str | os.PathLike[str], payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that readers see the old or the new file, never a torn one."""
    try:
        atomic_write(path, payload)
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc}; check that the directory is writable") from exc


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> bytes:
    """Serialise ``data`` as JSON and write it atomically to ``path``; returns the bytes written.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x.json")
        >>> _ = write_json_atomic(p, {"a": 1})
        >>> open(p).read().replace(" ", "").replace(chr(10), "")
        '{"a":1}'
    """
    payload = _dumps(data)
    write_bytes_atomic(path, payload)
    return payload


def rng_to_json(rng: random.Random) -> list[Any]:
    """``random.Random.getstate()`` as JSON: ``[version, [625 ints], gauss_next]``."""
    version, internal, gauss_next = rng.getstate()
    return [version, list(internal), gauss_next]


def rng_from_json(data: Any) -> tuple[Any, ...]:
    """The inverse of :func:`rng_to_json`, ready for ``random.Random.setstate``."""
    if not isinstance(data, list) or len(data) != 3 or not isinstance(data[1], list):
        raise CheckpointError("the checkpoint's RNG state is malformed; the file was edited or damaged")
    return (data[0], tuple(data[1]), data[2])


def check_fingerprint(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    where: str,
    limits: Collection[str] = (),
    *,
    extend: bool = False,
) -> list[str]:
    """Raise :class:`CheckpointError` naming every field where ``saved`` and ``current`` differ.

    ``limits`` names the fields that only say when a run stops (its budget, its number of steps).
    With ``extend``, a run may change those: when they are all that differ, the names of the
    changed ones are returned (the run goes on under the new limits) instead of an error.
    Without it, the error says that the run keeps its limits and how to train further.

    Example:
        >>> saved, now = {"seed": 0, "max_steps": 2}, {"seed": 0, "max_steps": 5}
        >>> check_fingerprint(saved, now, "run/", ("max_steps",), extend=True)
        ['max_steps']
        >>> try:
        ...     check_fingerprint({"seed": 0, "max_steps": 2}, {"seed": 1, "max_steps": 5}, "run/", ("max_steps",))
        ... except CheckpointError as error:
        ...     for line in str(error).splitlines():
        ...         print(line[:58])
        the checkpoint in run/ was made by a different run configu
          max_steps: checkpoint has 2, this run has 5
          seed: checkpoint has 0, this run has 1
        Resuming it would silently mix two runs. Pass the same mod
    """
    keys = sorted(set(saved) | set(current))
    diffs = [k for k in keys if saved.get(k) != current.get(k)]
    if not diffs:
        return []
    only_limits = all(key in limits for key in diffs)
    if only_limits and extend:
        return diffs
    lines = []
    for key in diffs:
        lines.append(f"  {key}: checkpoint has {show(saved.get(key), 120)}, this run has {show(current.get(key), 120)}")
    if only_limits:
        advice = (
            f"\nOnly its limits differ ({', '.join(diffs)}): this kind of run resumes under the limits it started "
            "with. To train further from where it stopped, resume it with its own limits (it returns its result and "
            "leaves the model holding its best parameters), then start a new run from that model with the new limits "
            "in another checkpoint directory."
        )
    else:
        advice = (
            "\nResuming it would silently mix two runs. Pass the same model, optimizer, data and options "
            "as the original run, or use a new checkpoint directory (or delete this one) to start over."
        )
    raise CheckpointError(
        f"the checkpoint in {where} was made by a different run configuration:\n" + "\n".join(lines) + advice
    )


class RunDirectory:
    """The files of one training run in one directory (created if missing)."""

    CHECKPOINT = "checkpoint.json"
    PREVIOUS = "checkpoint.prev.json"
    BEST = "best.json"
    GRAPH = "graph.json"
    EVENTS = "events.jsonl"
    REPORT = "report.md"
    PLOT = "curve.png"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, str | os.PathLike):
            raise InvalidInputError(f"checkpoint must be a directory path (str or Path), got {type(path).__name__}")
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise CheckpointError(f"checkpoint={str(self.path)!r} is a file; give a directory for the run's files")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot create checkpoint directory {self.path}: {exc}") from exc
        self._last: bytes | None = None  # bytes of the newest checkpoint, to become the previous one

    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        """Whether a checkpoint (latest or previous) is present."""
        return self.file(self.CHECKPOINT).exists() or self.file(self.PREVIOUS).exists()

    def load(self) -> dict[str, Any]:
        """Read and check ``checkpoint.json``; a damaged file raises :class:`CheckpointError`.

        The previous checkpoint is left untouched, and the message says how to fall back to it.
        """
        latest = self.file(self.CHECKPOINT)
        if not latest.exists():
            prev = self.file(self.PREVIOUS)
            raise CheckpointError(
                f"{latest} is missing but {prev.name} exists; the run was interrupted while rotating "
                f"checkpoints. Copy {prev} to {latest} to resume from the step before."
            )
        raw = latest.read_bytes()
        try:
            data = self._parse(raw)
        except CheckpointError as exc:
            raise CheckpointError(f"{latest} is corrupt: {exc}. {self._fallback_hint()}") from exc
        self._last = raw
        self.remove_stale_temporaries()
        return data

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files of writes cut short by a crash (their writer process is gone).

        Readers never look at them (they are hidden and end in ``.tmp``); this only keeps crashes
        from piling them up. Returns the files removed.
        """
        removed = []
        for name in (self.CHECKPOINT, self.PREVIOUS, self.BEST, self.GRAPH, self.REPORT):
            for path in stale_temporaries(self.path, name):
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def _parse(self, raw: bytes) -> dict[str, Any]:
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"not valid JSON ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"not a feedprop checkpoint (missing format {FORMAT!r})")
        if data.get("version") != VERSION:
            raise CheckpointError(f"checkpoint version {data.get('version')!r} is not supported (expected {VERSION})")
        return data

    def _fallback_hint(self) -> str:
        prev = self.file(self.PREVIOUS)
        try:
            step = self._parse(prev.read_bytes()).get("step")
        except (OSError, CheckpointError):
            return "No usable previous checkpoint exists; delete the directory to start over."
        return (
            f"The previous checkpoint {prev} (step {step}) is intact: copy it to "
            f"{self.file(self.CHECKPOINT)} to resume from there, or delete the directory to start over."
        )

    def save(self, state: Mapping[str, Any]) -> None:
        """Write ``state`` as the latest checkpoint, keeping the one before as ``checkpoint.prev.json``."""
        data = {**state, "format": FORMAT, "version": VERSION}
        payload = _dumps(data)
        # The previous checkpoint is written first: at every instant, checkpoint.json is a complete file.
        if self._last is not None:
            write_bytes_atomic(self.file(self.PREVIOUS), self._last)
        write_bytes_atomic(self.file(self.CHECKPOINT), payload)
        self._last = payload

    def save_best(self, parameters: Mapping[str, Any]) -> Path:
        """Write the best parameters (a state dict) to ``best.json`` and return its path."""
        path = self.file(self.BEST)
        write_json_atomic(path, dict(parameters))
        return path


class StateFile:
    """A run's state as one JSON file in its directory, tagged with a format and checked when read.

    Example:
        >>> import tempfile
        >>> store = StateFile(tempfile.mkdtemp(), "joint.json", "feedprop.joint/1")
        >>> store.exists()
        False
        >>> store.save({"phase": 2})
        >>> store.exists(), store.load()["phase"]
        (True, 2)
    """

    def __init__(self, directory: str | os.PathLike[str], name: str, format: str) -> None:
        self.path = Path(directory)
        self.file = self.path / name
        self.format = format

    def exists(self) -> bool:
        return self.file.is_file()

    def load(self) -> dict[str, Any]:
        """The saved state; an unreadable file or another format raises :class:`CheckpointError`."""
        try:
            state = json.loads(self.file.read_text(encoding="utf-8"))
            found = state.get("format") if isinstance(state, dict) else None
            if found != self.format:
                raise ValueError(f"format {found!r}")
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{self.file} cannot be read ({exc}); delete the directory to start over") from exc
        return dict(state)

    def save(self, state: Mapping[str, Any]) -> None:
        """Write ``state`` (with the format tag) atomically."""
        write_json_atomic(self.file, {**state, "format": self.format})
