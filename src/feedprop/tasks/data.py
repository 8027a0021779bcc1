"""Where benchmark data lives, and reading it.

The data files of BBH, GSM8K, MBPP and MMLU sit in a *benchmarks root* (see
``SOURCES.md`` there). It is found, in order, from the ``root`` argument of a loader, the
``FEEDPROP_BENCHMARKS`` environment variable, or ``../shared/benchmarks`` beside the project
checkout. HumanEval and Game of 24 are read from the data files that their registry packages
install.

Example:
    >>> from feedprop.tasks.data import data_file
    >>> data_file("gsm8k/test.jsonl").name
    'test.jsonl'
"""

from __future__ import annotations

import csv
import gzip
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any

from feedprop.errors import ConfigurationError

__all__ = ["ENV_VAR", "benchmarks_root", "data_file", "package_data_file", "read_csv", "read_json", "read_jsonl"]

#: The environment variable naming the benchmarks root.
ENV_VAR = "FEEDPROP_BENCHMARKS"

# src/feedprop/tasks/data.py -> the project root is three levels above the package directory.
_PROJECT_ROOT = Path(__file__).resolve().parents[3]
_DEFAULT_ROOT = _PROJECT_ROOT.parent / "shared" / "benchmarks"


def benchmarks_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The benchmarks root directory: ``root``, else ``$FEEDPROP_BENCHMARKS``, else the default.

    Raises :class:`~feedprop.errors.ConfigurationError` naming the place it looked when that
    directory does not exist.
    """
    if root is not None:
        path, source = Path(root).expanduser(), "the root argument"
    elif os.environ.get(ENV_VAR):
        path, source = Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"
    else:
        path, source = _DEFAULT_ROOT, "the default location (../shared/benchmarks beside the project)"
    if not path.is_dir():
        raise ConfigurationError(
            f"benchmark data not found: {path} (from {source}) is not a directory. Point feedprop at the "
            f"folder holding bbh/, gsm8k/, mbpp/ and mmlu/ with the root= argument or by setting {ENV_VAR}."
        )
    return path


def data_file(relative: str, root: str | os.PathLike[str] | None = None) -> Path:
    """The path of ``relative`` inside the benchmarks root, checked to exist."""
    base = benchmarks_root(root)
    path = base / relative
    if not path.is_file():
        raise ConfigurationError(
            f"benchmark file missing: {path}. The benchmarks root {base} should contain {relative}; "
            f"pass root= or set {ENV_VAR} to a complete copy."
        )
    return path


def package_data_file(distribution: str, relative: str, pip_spec: str, extra_pip_args: str = "") -> Path:
    """A data file shipped inside an installed distribution, found without importing it.

    Raises :class:`~feedprop.errors.ConfigurationError` saying which ``pip install`` fixes it.
    """
    fix = f"pip install {extra_pip_args + ' ' if extra_pip_args else ''}{pip_spec}"
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigurationError(f"this task's data comes from the {distribution} package; run: {fix}") from None
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise ConfigurationError(
            f"{distribution} {dist.version} is installed but has no {relative}; reinstall it with: {fix}"
        )
    return path


def _open_text(path: Path) -> Any:
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def read_json(path: Path) -> Any:
    """Parse a JSON file; a malformed file raises :class:`ConfigurationError` naming it."""
    try:
        with _open_text(path) as f:
            return json.load(f)
    except (ValueError, OSError) as e:
        raise ConfigurationError(f"cannot read {path}: {e}. Restore the file from its source (SOURCES.md).") from e


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Parse a JSON-lines file (optionally gzipped) into a list of objects."""
    rows: list[dict[str, Any]] = []
    try:
        with _open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError as e:
                        raise ConfigurationError(
                            f"cannot read {path} line {lineno}: {e}. Restore the file from its source."
                        ) from e
    except OSError as e:
        raise ConfigurationError(f"cannot read {path}: {e}") from e
    return rows


def read_csv(path: Path, *, header: bool = True) -> list[list[str]]:
    """Parse a CSV file into rows of strings, without the header row when ``header`` is true."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise ConfigurationError(f"cannot read {path}: {e}") from e
    return rows[1:] if header else rows
