"""Starting, talking to and stopping one sandbox worker process.

A worker is ``_sandbox_worker.py`` run by this interpreter with a minimal environment, in a
session of its own. Where the machine allows it (Linux, util-linux's ``unshare``, and root or
unprivileged user namespaces), the worker starts inside fresh PID, network and mount namespaces:

* PID: the worker is PID 1 of its namespace; when it dies, the kernel kills everything in it,
  and code inside cannot see or signal any process outside.
* network: only an unconfigured loopback device exists, so no connection can be made.
* mount: ``/tmp``, ``/var/tmp``, ``/dev/shm`` and ``/run`` are private, size-limited tmpfs; the
  directories holding the interpreter are re-exposed read-only-by-permission for the
  unprivileged user the code runs as (for instance when Python lives under ``/root``).

Without root, the namespaces are made inside an unprivileged user namespace: the code runs as
this process's own user, so every file system is remounted read-only, the home directory is
hidden, and all capabilities are dropped before the worker starts (:func:`user_namespace_script`).

Otherwise it starts as a plain process, and the per-call protections (resource limits, a user id
of its own when running as root, the audit hook) still apply. See SECURITY.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from feedprop import _sandbox_worker
from feedprop.errors import SandboxError

#: Code runs as user id ``UID_BASE + pid of its worker``: unused by any account, unique per live worker.
UID_BASE = 1_900_000_000
#: Variables copied from this process into the worker's environment; nothing else is inherited.
ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
PRIVATE_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run")
HANDSHAKE_SECONDS = 30.0
MAX_REPLY_BYTES = 512 << 20


class WorkerGone(Exception):
    """The worker process ended. ``before_request`` tells whether it died before taking the request."""

    def __init__(self, description: str, before_request: bool) -> None:
        super().__init__(description)
        self.before_request = before_request


class WorkerTimeout(Exception):
    """The worker did not reply in time (it has been killed)."""


def worker_env() -> dict[str, str]:
    """The worker's whole environment: an allow-list, never secrets such as ``*_API_KEY``."""
    env = {k: os.environ[k] for k in ENV_ALLOW if k in os.environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    env["PYTHONHASHSEED"] = os.environ.get("PYTHONHASHSEED", "0")
    # Numeric libraries must not start thread pools: the code may not create threads.
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def python_command() -> list[str]:
    # -s: no user site; -P: no script directory on sys.path; -B: never write .pyc files.
    return [sys.executable, "-s", "-P", "-B", str(Path(_sandbox_worker.__file__).resolve())]


def _interpreter_dirs() -> set[str]:
    """Directories the worker and the code need to read: the interpreter, its libraries, the worker."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    candidates |= {v for k, v in sysconfig.get_paths().items() if k in ("stdlib", "platstdlib", "purelib", "platlib")}
    candidates.add(os.path.dirname(os.path.realpath(sys.executable)))
    candidates.add(os.path.dirname(os.path.realpath(_sandbox_worker.__file__)))
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


@dataclass
class Worker:
    """One running worker process and its pipes. Not thread-safe: the pool lends it to one caller at a time."""

    process: subprocess.Popen[bytes]
    log: IO[bytes]
    mode: str
    base_dir: str | None = None
    protections: frozenset[str] = frozenset()
    child_pid: int | None = None
    _buffer: bytearray = field(default_factory=bytearray)

    @classmethod
    def start(cls, mode: str, tmp_mb: int) -> Worker:
        """Start a worker in ``mode`` ("namespaces" or "basic") and wait for its handshake."""
        base_dir: str | None = None
        scratch: list[str] = []
        if mode == "namespaces":
            plan = namespace_command(tmp_mb)
            if plan is None:
                raise SandboxError(
                    "namespaces are not available here (needs Linux with util-linux's unshare and setpriv, "
                    "and either root or unprivileged user namespaces)"
                )
            command, scratch = plan
        else:
            command = python_command()
            base_dir = tempfile.mkdtemp(prefix="feedprop-sandbox-")
            os.chmod(base_dir, 0o711)  # the unprivileged code may enter its own directory, not list others
        log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the worker; closed by kill())
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=worker_env(),
                cwd="/", start_new_session=True, close_fds=True, bufsize=0,
            )  # fmt: skip
        except OSError as e:
            log.close()
            if base_dir:
                shutil.rmtree(base_dir, ignore_errors=True)
            raise SandboxError(
                f"could not start a sandbox worker ({e}); use InProcessExecutor() for trusted code"
            ) from e
        worker = cls(process, log, mode, base_dir)
        init = {
            "op": "init",
            "uid": UID_BASE + process.pid if os.geteuid() == 0 else None,
            "base_dir": base_dir or "/tmp",
            "remove_base_dir": base_dir is not None,  # so it goes even if this process is killed
            "scratch_dirs": scratch,
        }
        try:
            deadline = time.monotonic() + HANDSHAKE_SECONDS
            worker._send(json.dumps(init).encode() + b"\n", deadline)
            ready = worker._receive(deadline)
        except (WorkerGone, WorkerTimeout) as e:
            detail = worker.stderr_tail() or str(e)
            worker.kill()
            raise SandboxError(f"the sandbox worker ({mode}) did not start: {detail}") from None
        worker.protections = frozenset(ready.get("protections", ()))
        return worker

    def call(self, request: dict[str, Any], deadline: float) -> dict[str, Any]:
        """Send one request and wait for its reply until ``deadline`` (a ``time.monotonic()`` value)."""
        self._send(json.dumps(request, allow_nan=True).encode() + b"\n", deadline)
        while True:
            reply = self._receive(deadline, before_request=False)
            if reply.get("op") == "started":  # without a PID namespace: remember whom to kill on trouble
                self.child_pid = reply.get("pid")
                continue
            self.child_pid = None
            if reply.get("id") != request["id"]:
                self.kill()
                raise WorkerGone("the sandbox worker answered out of turn", before_request=False)
            return reply

    def _send(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        fd = self._stdin_fd()
        try:
            os.set_blocking(fd, False)  # a stuck worker must not block us past the deadline
            while view:
                try:
                    view = view[os.write(fd, view) :]
                    continue
                except BlockingIOError:
                    pass
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
                    self.kill()
                    raise WorkerTimeout("the sandbox worker did not take the request in time")
        except OSError as e:  # BrokenPipeError: the worker is gone before it read the request
            raise WorkerGone(self.describe_exit() or str(e), before_request=True) from None

    def _receive(self, deadline: float, before_request: bool = False) -> dict[str, Any]:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while (end := self._buffer.find(b"\n")) < 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise WorkerTimeout("the sandbox worker did not answer in time")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            data = os.read(fd, 1 << 20)
            if not data:
                self.process.wait()
                raise WorkerGone(self.describe_exit() or "it closed its pipe", before_request)
            self._buffer += data
            if len(self._buffer) > MAX_REPLY_BYTES:
                self.kill()
                raise WorkerGone("the sandbox worker sent an oversized reply", before_request=False)
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _stdin_fd(self) -> int:
        assert self.process.stdin is not None
        return self.process.stdin.fileno()

    def alive(self) -> bool:
        return self.process.poll() is None

    def describe_exit(self) -> str:
        code = self.process.poll()
        if code is None:
            return ""
        if code < 0:
            return f"the worker was killed by {signal.Signals(-code).name}"
        return f"the worker exited with status {code}"

    def stderr_tail(self, limit: int = 2000) -> str:
        with contextlib.suppress(OSError, ValueError):
            self.log.seek(0)
            return self.log.read()[-limit:].decode(errors="replace").strip()
        return ""

    def kill(self) -> None:
        """Kill the worker and whatever it started; release its resources. Safe to call twice."""
        targets = [self.process.pid] + ([self.child_pid] if self.child_pid else [])
        for pgid in targets:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)
        self._reap(5.0)

    def close(self, grace: float = 1.0) -> None:
        """Ask the worker to finish (end of input), then kill it if it does not within ``grace`` seconds."""
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(grace)
        self.kill()

    def _reap(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        for stream in (self.process.stdin, self.process.stdout, self.log):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        if self.base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
