"""The warm sandbox workers of one :class:`~feedprop.sandbox.SandboxExecutor`, lent to one call at a time.

The pool settles, with its first worker, whether workers start in namespaces of their own or in
the basic mode, and says so once per process (:class:`SandboxWeakWarning`) when ``isolation="auto"``
had to fall back.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from typing import Any, Literal

from feedprop.errors import SandboxError
from feedprop.sandbox.failure import CodeFailure
from feedprop.sandbox.process import Worker, WorkerGone, WorkerTimeout

__all__ = ["REPLY_GRACE", "Isolation", "Pool", "SandboxWeakWarning"]

#: Seconds the worker may take beyond the call's own timeout (e.g. importing a module the first time).
REPLY_GRACE = 30.0

Isolation = Literal["auto", "strict", "basic"]


class Pool:
    """Up to ``size`` warm workers, each lent to one call at a time; dead ones are replaced on demand."""

    def __init__(self, size: int, isolation: Isolation, tmp_mb: int) -> None:
        self.size = size
        self.isolation = isolation
        self.tmp_mb = tmp_mb
        self.mode: str | None = None  # "namespaces" or "basic", settled by the first worker
        self.idle: list[Worker] = []
        self.count = 0
        self.closed = False
        self.owner = _current_pid()
        self.cond = threading.Condition()

    def call(self, request: dict[str, Any], patience: float) -> dict[str, Any]:
        deadline = time.monotonic() + patience
        for attempt in (1, 2):
            worker = self._acquire()
            healthy = False
            try:
                reply = worker.call(request, deadline)
                healthy = True
                return reply
            except WorkerGone as e:
                if e.before_request and attempt == 1:
                    continue  # it died while idle: replace it and send the request again
                if e.before_request:
                    raise SandboxError(f"two fresh sandbox workers died before taking a request ({e})") from None
                raise CodeFailure(
                    "WorkerDied",
                    f"the sandbox worker process died while running the code ({e}); a fresh one serves the next call",
                ) from None
            except WorkerTimeout:
                raise CodeFailure(
                    "TimeoutError",
                    f"the sandbox did not answer within {patience:.0f} s (the timeout plus {REPLY_GRACE:.0f} s "
                    "for loading modules); the worker was restarted",
                ) from None
            finally:
                self._release(worker, healthy)
        raise AssertionError("unreachable")

    def protections(self) -> frozenset[str]:
        worker = self._acquire()
        try:
            return worker.protections
        finally:
            self._release(worker, True)

    def _acquire(self) -> Worker:
        with self.cond:
            if self.owner != _current_pid():  # forked: the workers belong to the parent process
                self.idle, self.count, self.owner = [], 0, _current_pid()
            while True:
                if self.closed:
                    raise SandboxError("this SandboxExecutor was closed; create a new one")
                while self.idle:
                    worker = self.idle.pop()
                    if worker.alive():
                        return worker
                    worker.kill()
                    self.count -= 1
                if self.count < self.size:
                    self.count += 1
                    break
                self.cond.wait()
        try:
            return self._start()
        except BaseException:
            with self.cond:
                self.count -= 1
                self.cond.notify()
            raise

    def _start(self) -> Worker:
        if self.mode is not None:
            return Worker.start(self.mode, self.tmp_mb)
        errors = []
        for mode in ("namespaces", "basic") if self.isolation != "basic" else ("basic",):
            try:
                worker = Worker.start(mode, self.tmp_mb)
            except SandboxError as e:
                errors.append(str(e))
                if self.isolation == "strict":
                    raise SandboxError(
                        f"isolation='strict' needs PID, network and mount namespaces: {e}. Install util-linux "
                        "(unshare, setpriv) and allow unprivileged user namespaces, or run as root on Linux; "
                        "or choose isolation='auto'"
                    ) from None
                continue
            if errors:
                _warn_basic_once(errors[0])
            self.mode = mode
            return worker
        raise SandboxError("could not start a sandbox worker: " + "; ".join(errors))

    def _release(self, worker: Worker, healthy: bool) -> None:
        with self.cond:
            if healthy and not self.closed and worker.alive() and self.owner == _current_pid():
                self.idle.append(worker)
            else:
                worker.kill()
                self.count -= 1
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            workers, self.idle = self.idle, []
            self.count -= len(workers)
            self.cond.notify_all()
        for worker in workers:
            worker.close()


class SandboxWeakWarning(UserWarning):
    """Trainable code runs with only resource limits and an audit hook (no namespaces); see SECURITY.md."""


_warned_basic = False
_warn_lock = threading.Lock()


def _warn_basic_once(reason: str) -> None:
    """Say loudly, once per process, that ``isolation='auto'`` fell back to the basic mode, and how to avoid it."""
    global _warned_basic
    with _warn_lock:
        if _warned_basic:
            return
        _warned_basic = True
    warnings.warn(
        "feedprop's sandbox runs LLM-written code WITHOUT operating-system isolation here: no PID, network or "
        f"mount namespaces and no user id of its own ({reason}). Only resource limits and an in-interpreter "
        "audit hook stand between that code and this process, its files and the network. To fix it: install "
        "util-linux (for `unshare`) and allow unprivileged user namespaces (Linux: sysctl "
        "user.max_user_namespaces=15000; Debian/Ubuntu also kernel.unprivileged_userns_clone=1 and, on "
        "Ubuntu 24.04+, kernel.apparmor_restrict_unprivileged_userns=0), or run as root. "
        "SandboxExecutor(isolation='strict') refuses to run without them; isolation='basic' accepts the basic "
        "mode explicitly and silences this warning. See SECURITY.md.",
        SandboxWeakWarning,
        stacklevel=2,
    )


def _current_pid() -> int:
    return os.getpid()
