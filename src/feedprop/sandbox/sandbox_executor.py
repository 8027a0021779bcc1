"""The default executor: trainable code runs in warm, isolated worker processes.

:class:`SandboxExecutor` turns a call into a request (what crosses is settled by
:mod:`feedprop.sandbox.boundary`), hands it to a worker of its :class:`~feedprop.sandbox.pool.Pool`
and turns the reply back into the result, or into a :class:`~feedprop.sandbox.CodeFailure`.
"""

from __future__ import annotations

import math
import sys
import uuid
import weakref
from typing import Any

from feedprop.errors import ConfigurationError, InvalidInputError, SandboxError
from feedprop.sandbox.boundary import prepare_call
from feedprop.sandbox.executor import Executor
from feedprop.sandbox.failure import CodeFailure, format_traceback, stand_in, syntax_failure
from feedprop.sandbox.pool import REPLY_GRACE, Isolation, Pool
from feedprop.sandbox.worker import decode

__all__ = ["MAX_SOURCE_CHARS", "SandboxExecutor"]

MAX_SOURCE_CHARS = 1_000_000


class SandboxExecutor(Executor):
    """Runs trainable code in warm, isolated worker processes. The default executor.

    Each call runs in a fresh child of a warm worker (a few milliseconds, not a new interpreter),
    in a private working directory that is removed afterwards, under these limits:

    * ``timeout``: seconds of wall-clock time (``TimeoutError: exceeded 2.0 s wall clock``);
    * ``memory_mb``: megabytes the code may allocate beyond the interpreter itself (``MemoryError``);
    * ``cpu_seconds``: seconds of CPU time, a whole number (default: the timeout rounded up, plus 1);
    * no new processes or threads, no signals to other processes, no network, no writes outside
      the working directory, no ``ctypes``; the environment holds no secrets (an allow-list).

    ``isolation`` picks how the workers start: ``"auto"`` uses fresh PID, network and mount
    namespaces where the machine allows it (on Linux: as root, with a user id of its own for the
    code; otherwise inside an unprivileged user namespace, with every file system read-only and the
    home directory hidden) and falls back to the per-call limits and audit hook elsewhere, with a
    :class:`SandboxWeakWarning` once per process; ``"strict"`` raises :class:`SandboxError` instead
    of falling back; ``"basic"`` never uses namespaces (an explicit choice: no warning).
    :meth:`protections` tells what is in force. ``audit_hooks=False`` drops the in-interpreter
    guard and leaves only the operating system's protections (for checking those on their own).
    Up to ``max_workers`` calls run at once.

    Arguments, keyword arguments and results must be plain data (str, int, float, bool, None, list,
    tuple, dict with str keys). Globals the code reads cross as described in
    ``feedprop.sandbox.boundary``; ``self`` crosses as a read-only snapshot of the plain-data
    attributes the code reads. Changes the code makes to its arguments stay in the sandbox.

    Example:
        >>> with SandboxExecutor(timeout=2.0) as ex:
        ...     ex.run("import math\\ndef hyp(a, b):\\n    return math.hypot(a, b)\\n", "hyp", (3, 4), {}, {})
        5.0
    """

    def __init__(
        self,
        timeout: float = 10.0,
        memory_mb: int = 512,
        cpu_seconds: int | None = None,
        *,
        max_workers: int = 2,
        isolation: Isolation = "auto",
        audit_hooks: bool = True,
        output_chars: int = 64_000,
        result_mb: int = 64,
    ) -> None:
        _check_positive("timeout", timeout)
        _check_positive("memory_mb", memory_mb, integer=True)
        _check_positive("max_workers", max_workers, integer=True)
        _check_positive("result_mb", result_mb, integer=True)
        if cpu_seconds is not None:
            _check_positive("cpu_seconds", cpu_seconds, integer=True)
        if isolation not in ("auto", "strict", "basic"):
            raise ConfigurationError(f"isolation must be 'auto', 'strict' or 'basic', not {isolation!r}")
        self.timeout = float(timeout)
        self.memory_mb = int(memory_mb)
        self.cpu_seconds = int(cpu_seconds) if cpu_seconds is not None else math.ceil(self.timeout) + 1
        self.max_workers = int(max_workers)
        self.isolation: Isolation = isolation
        self.audit_hooks = bool(audit_hooks)
        self._limits = {
            "timeout": self.timeout,
            "memory_mb": self.memory_mb,
            "cpu_seconds": self.cpu_seconds,
            "output_chars": int(output_chars),
            "result_bytes": int(result_mb) << 20,
        }
        self._pool = Pool(self.max_workers, isolation, max(64, self.memory_mb))
        self._finalizer = weakref.finalize(self, self._pool.close)

    def run(
        self,
        source: str,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        globals_: dict[str, Any],
    ) -> Any:
        if not isinstance(source, str) or not isinstance(name, str):
            raise InvalidInputError("source and name must be str: the function's code and the name it defines")
        if len(source) > MAX_SOURCE_CHARS:
            raise CodeFailure("ValueError", f"the code is {len(source)} characters long; at most {MAX_SOURCE_CHARS}")
        try:
            prepared = prepare_call(source, name, tuple(args), dict(kwargs), globals_)
        except InvalidInputError:
            raise
        except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
            raise syntax_failure(e) from None
        request = {
            "op": "call",
            "id": uuid.uuid4().hex,
            "source": source,
            "name": name,
            "args": prepared.args,
            "kwargs": prepared.kwargs,
            "globals": prepared.globals,
            "self": prepared.self_spec,
            "modules": prepared.modules,
            "limits": self._limits,
            "audit": self.audit_hooks,
        }
        reply = self._pool.call(request, self.timeout + REPLY_GRACE)
        for stream, key in ((sys.stdout, "stdout"), (sys.stderr, "stderr")):
            if reply.get(key):
                stream.write(reply[key])
        if reply.get("ok"):
            return decode(reply.get("result"))
        frames = [(int(n), str(f)) for n, f in reply.get("frames") or []]
        type_name, message = str(reply.get("type")), str(reply.get("message"))
        if type_name == "SandboxError":
            raise SandboxError(f"the sandbox failed around the code, not in it: {message}")
        text = format_traceback(frames, type_name, message, source)
        raise CodeFailure(type_name, message, text, reply.get("lineno"), stand_in(type_name, message))

    def protections(self) -> frozenset[str]:
        """The protections in force for this executor's workers (starts a worker if none runs yet).

        Possible members: ``env_scrubbed``, ``rlimits``, ``private_workdir``, ``separate_uid``,
        ``pid_namespace``, ``net_namespace``, ``mount_namespace``, ``private_tmp``,
        ``no_new_privs``, and ``audit_hooks`` unless it was turned off.
        """
        found = self._pool.protections()
        return found | {"audit_hooks"} if self.audit_hooks else found

    def close(self) -> None:
        """Stop the worker processes. Calls after this raise :class:`SandboxError`."""
        self._finalizer()

    def __enter__(self) -> SandboxExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"SandboxExecutor(timeout={self.timeout}, memory_mb={self.memory_mb}, cpu_seconds={self.cpu_seconds}, "
            f"max_workers={self.max_workers}, isolation={self.isolation!r})"
        )


def _check_positive(name: str, value: object, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0 or value != value:
        kind = "a positive whole number" if integer else "a positive number"
        raise ConfigurationError(f"{name} must be {kind}, not {value!r}")
