"""Atomic file writes: the one rule for writing a file (or a directory) that a reader sees whole or not at all.

A temporary sibling is written, flushed to disk, then renamed over the target with ``os.replace``
(atomic on POSIX); the directory is fsynced so the rename itself survives a crash. On any error
the temporary is removed and the old target is left as it was.

A temporary is named ``.<target name>.<writer pid>.<random>.tmp``: hidden, never ending in the
target's suffix (so nothing globbing ``*.json`` reads a half-written one), and with the pid of the
process writing it, so :func:`stale_temporaries` can tell what a crashed writer left behind.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "replacing", "stale_temporaries"]


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; creates missing parent directories.

    Example:
        >>> import tempfile, os
        >>> p = atomic_write(os.path.join(tempfile.mkdtemp(), "sub", "x.txt"), "hello")
        >>> p.read_text(encoding="utf-8")
        'hello'
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with replacing(path) as temp, open(temp, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str], *, directory: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write into; on a clean exit it replaces ``path``.

    For a file, the caller writes the temporary (any library that takes a file name will do); for
    ``directory=True`` the temporary is an empty directory, and the old directory is removed just
    before the rename. On an exception the temporary is removed and ``path`` is untouched.

    Example:
        >>> import tempfile, os
        >>> target = Path(tempfile.mkdtemp()) / "out.txt"
        >>> with replacing(target) as temp:
        ...     _ = temp.write_text("done", encoding="utf-8")
        >>> target.read_text(encoding="utf-8"), sorted(os.listdir(target.parent))
        ('done', ['out.txt'])
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.{os.getpid()}."
    if directory:
        temp = Path(tempfile.mkdtemp(dir=target.parent, prefix=prefix, suffix=".tmp"))
    else:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=".tmp")
        os.close(fd)
        temp = Path(name)
    try:
        yield temp
        if temp.exists():  # mkstemp/mkdtemp make private files; the result gets the usual mode
            os.chmod(temp, (0o777 if directory else 0o666) & ~_umask())
        if directory and target.exists():
            shutil.rmtree(target)
        os.replace(temp, target)
    except BaseException:
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            temp.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def stale_temporaries(directory: str | os.PathLike[str], name: str) -> list[Path]:
    """The temporaries of writes to ``directory/name`` whose writer process is gone (a crash left them).

    A temporary of a live process (this one included) is not stale: its write may still finish.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / ".x.json.999999999.tmp").write_text("{")
        >>> _ = (folder / f".x.json.{os.getpid()}.ab12.tmp").write_text("{")
        >>> [p.name for p in stale_temporaries(folder, "x.json")]
        ['.x.json.999999999.tmp']
    """
    stale = []
    for path in sorted(Path(directory).glob(f".{glob.escape(name)}.*.tmp")):
        pid = path.name[len(name) + 2 : -len(".tmp")].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            stale.append(path)
    return stale


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process, or a platform without signals
        return True
    return True


@functools.cache
def _umask() -> int:
    """The process's umask, read once (by setting it and putting it back: there is no plain getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
