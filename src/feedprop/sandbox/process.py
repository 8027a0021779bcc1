"""Starting, talking to and stopping one sandbox worker process.

A worker is :mod:`feedprop.sandbox.worker` run as a script by this interpreter with a minimal
environment (:func:`worker_env`), in a session of its own, and inside namespaces of its own where
the machine allows it (:mod:`feedprop.sandbox.namespaces`). Requests and replies are one JSON
object per line on its stdin and stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO, Any

from feedprop.errors import SandboxError
from feedprop.sandbox.namespaces import namespace_command, python_command

__all__ = ["UID_BASE", "Worker", "WorkerGone", "WorkerTimeout", "worker_env"]

#: Code runs as user id ``UID_BASE + pid of its worker``: unused by any account, unique per live worker.
UID_BASE = 1_900_000_000
#: Variables copied from this process into the worker's environment; nothing else is inherited.
ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
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
