"""How a sandbox worker is isolated: the command line that starts it in namespaces of its own.

Where the machine allows it (Linux, util-linux's ``unshare``, and root or unprivileged user
namespaces), the worker starts inside fresh PID, network and mount namespaces:

* PID: the worker is PID 1 of its namespace; when it dies, the kernel kills everything in it,
  and code inside cannot see or signal any process outside.
* network: only an unconfigured loopback device exists, so no connection can be made.
* mount: ``/tmp``, ``/var/tmp``, ``/dev/shm`` and ``/run`` are private, size-limited tmpfs; the
  directories holding the interpreter are re-exposed read-only-by-permission for the
  unprivileged user the code runs as (for instance when Python lives under ``/root``).

Without root, the namespaces are made inside an unprivileged user namespace: the code runs as
this process's own user, so every file system is remounted read-only, the home directory is
hidden, and all capabilities are dropped before the worker starts (:func:`user_namespace_script`).

Otherwise it starts as a plain process (:func:`python_command`), and the per-call protections
(resource limits, a user id of its own when running as root, the audit hook) still apply. See
SECURITY.md.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import stat
import sys
import sysconfig
from pathlib import Path

from feedprop.sandbox import worker

__all__ = ["PRIVATE_TMP_DIRS", "namespace_command", "namespace_script", "python_command", "user_namespace_script"]

PRIVATE_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run")


def python_command() -> list[str]:
    # -s: no user site; -P: no script directory on sys.path; -B: never write .pyc files.
    return [sys.executable, "-s", "-P", "-B", str(Path(worker.__file__).resolve())]


def _interpreter_dirs() -> set[str]:
    """Directories the worker and the code need to read: the interpreter, its libraries, the worker."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    candidates |= {v for k, v in sysconfig.get_paths().items() if k in ("stdlib", "platstdlib", "purelib", "platlib")}
    candidates.add(os.path.dirname(os.path.realpath(sys.executable)))
    candidates.add(os.path.dirname(os.path.realpath(worker.__file__)))
    return {os.path.realpath(c) for c in candidates if c and os.path.isdir(c)}


def _closed_ancestors(path: str) -> list[str]:
    """Ancestors of ``path`` that other users cannot traverse (mode lacks o+x), outermost first."""
    found, current = [], "/"
    for part in Path(path).parts[1:]:
        current = os.path.join(current, part)
        with contextlib.suppress(OSError):
            if os.path.isdir(current) and not os.stat(current).st_mode & stat.S_IXOTH:
                found.append(current)
    return found


def _cover(target: str, mode: str, size_mb: int, keep: list[str]) -> list[str]:
    """Shell lines mounting a fresh tmpfs on ``target`` and bringing ``keep`` (its subdirectories) back.

    Each kept directory is opened first and bound back through /proc/self/fd, because its path
    is hidden once the tmpfs is mounted.
    """
    if len(keep) > 7:
        raise ValueError(f"too many directories to keep under {target}")
    fds = list(range(3, 3 + len(keep)))
    lines = []
    if keep:
        lines.append("exec " + " ".join(f"{fd}<{shlex.quote(k)}" for fd, k in zip(fds, keep, strict=True)))
    q = shlex.quote(target)
    lines.append(f"mount -t tmpfs -o mode={mode},size={size_mb}m,nosuid,nodev feedprop-sandbox {q}")
    for fd, k in zip(fds, keep, strict=True):
        lines.append(f"mkdir -p {shlex.quote(k)}")
        lines.append(f"mount --no-canonicalize --bind /proc/self/fd/{fd} {shlex.quote(k)}")
    if keep:
        lines.append("exec " + " ".join(f"{fd}<&-" for fd in fds))
    return lines


def namespace_script(tmp_mb: int) -> tuple[str, list[str]] | None:
    """The shell script that prepares the mount namespace, and the private scratch dirs it creates.

    Returns None when the plan cannot be made (then the worker starts without namespaces).
    """
    needed = _interpreter_dirs()
    covers: dict[str, str] = {}
    for path in needed:
        for ancestor in _closed_ancestors(path):
            covers.setdefault(ancestor, "0755")
    private = [d for d in PRIVATE_TMP_DIRS if os.path.isdir(d) and not os.path.islink(d)]
    private = [d for d in private if not any(p == d or d.startswith(p + "/") for p in needed)]
    for d in private:
        covers[d] = "1777"
    lines = ["set -e"]
    try:
        for target in sorted(covers, key=lambda p: (p.count("/"), p)):
            keep = sorted({os.path.join(target, Path(p).relative_to(target).parts[0]) for p in needed
                           if p.startswith(target + "/")})  # fmt: skip
            lines += _cover(target, covers[target], tmp_mb if covers[target] == "1777" else 1, keep)
    except ValueError:
        return None
    done = ["net_namespace", "mount_namespace"]
    if len(private) == len(PRIVATE_TMP_DIRS) or "/tmp" in private:
        done.append("private_tmp")
    lines.append(f"export FEEDPROP_SANDBOX_NAMESPACES={','.join(done)}")
    lines.append('exec "$@"')
    return "\n".join(lines), private


def _mount_points() -> list[str]:
    """Every mount point this process sees (``/proc/self/mountinfo``, octal escapes decoded)."""
    points: list[str] = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4:
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
                if point not in points:
                    points.append(point)
    return points


def user_namespace_script(tmp_mb: int) -> tuple[str, list[str]] | None:
    """The script that prepares a worker's mount namespace inside an unprivileged user namespace.

    The code runs as this process's own user there (it cannot have a user id of its own), so the
    script makes every file system read-only, hides the home directory behind an empty tmpfs
    (bringing back only the interpreter's directories), and gives ``/tmp`` and friends private
    tmpfs. The capabilities the namespace grants are dropped by ``setpriv`` before the worker starts.
    """
    needed = _interpreter_dirs()
    home = os.path.realpath(os.path.expanduser("~"))
    lines = ["set -e", "ro=read_only_fs"]
    for point in _mount_points():
        # /proc is replaced by the namespace's own (--mount-proc): what was mounted below it is gone.
        fallback = "true" if point == "/proc" or point.startswith("/proc/") else "ro="
        lines.append(f"mount -o remount,bind,ro {shlex.quote(point)} 2>/dev/null || {fallback}")
    covers: dict[str, str] = {}
    private = [d for d in PRIVATE_TMP_DIRS if os.path.isdir(d) and not os.path.islink(d)]
    private = [d for d in private if not any(p == d or d.startswith(p + "/") for p in needed)]
    for d in private:
        covers[d] = "1777"
    inside_private = any(home == d or home.startswith(d + "/") for d in private)  # hidden by that tmpfs already
    hides_python = any(p == home or home.startswith(p + "/") for p in needed)
    if home not in ("/", "") and os.path.isdir(home) and not inside_private and not hides_python:
        covers[home] = "0755"
    kept: list[str] = []
    try:
        for target in sorted(covers, key=lambda p: (p.count("/"), p)):
            keep = sorted({os.path.join(target, Path(p).relative_to(target).parts[0]) for p in needed
                           if p.startswith(target + "/")})  # fmt: skip
            kept += keep
            lines += _cover(target, covers[target], tmp_mb if covers[target] == "1777" else 1, keep)
    except ValueError:
        return None
    lines += [f"mount -o remount,bind,ro {shlex.quote(k)} 2>/dev/null || ro=" for k in kept]
    done = ["user_namespace", "net_namespace", "mount_namespace"]
    if len(private) == len(PRIVATE_TMP_DIRS) or "/tmp" in private:
        done.append("private_tmp")
    if home in covers or inside_private:
        done.append("private_home")
    lines.append(f"export FEEDPROP_SANDBOX_NAMESPACES={','.join(done)}${{ro:+,$ro}}")
    lines.append('exec "$@"')
    return "\n".join(lines), private


def namespace_command(tmp_mb: int) -> tuple[list[str], list[str]] | None:
    """The full command line for a worker in its own namespaces, or None where that is impossible.

    As root: fresh PID, network and mount namespaces, and the code later runs under a user id
    of its own. Otherwise: the same namespaces inside an unprivileged user namespace
    (``unshare --user --map-root-user``), where the kernel allows them.
    """
    if not sys.platform.startswith("linux"):
        return None
    tools = {t: shutil.which(t) for t in ("unshare", "setpriv", "sh", "mount")}
    if not all(tools.values()):
        return None
    if os.geteuid() != 0:
        return _user_namespace_command(tmp_mb, tools)
    plan = namespace_script(tmp_mb)
    if plan is None:
        return None
    script, private = plan
    unshare = [str(tools["unshare"]), "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--mount",
               "--propagation", "private", "--"]  # fmt: skip
    command = [*unshare, str(tools["sh"]), "-c", script, "sh", str(tools["setpriv"]), "--no-new-privs", "--"]
    return command + python_command(), private


def _user_namespace_command(tmp_mb: int, tools: dict[str, str | None]) -> tuple[list[str], list[str]] | None:
    plan = user_namespace_script(tmp_mb)
    if plan is None:
        return None
    script, private = plan
    unshare = [str(tools["unshare"]), "--user", "--map-root-user", "--pid", "--fork", "--kill-child", "--mount-proc",
               "--net", "--mount", "--propagation", "private", "--"]  # fmt: skip
    # No capabilities survive into the worker: it cannot undo the read-only mounts or the covers.
    drop = [str(tools["setpriv"]), "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", "--"]
    command = [*unshare, str(tools["sh"]), "-c", script, "sh", *drop]
    return command + python_command(), private
