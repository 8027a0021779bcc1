"""Where trainable code runs.

A trainable function's source is data that an optimizer rewrites, so running it means
compiling a string. An :class:`Executor` does that: it defines the function ``name`` from
``source`` and calls it. Every failure of the code comes back as :class:`CodeFailure`, whose
``lineno`` points into ``source`` so feedback can name the failing line.

* :class:`SandboxExecutor` (the default, see :func:`default_executor`) runs the code in a warm
  worker process with a wall-clock timeout, memory, CPU-time and process limits, no network, a
  scrubbed environment and a private working directory. Arguments and results cross as JSON.
  The :class:`~feedprop.training.UnitTest` guide runs code under test through it too.
* :class:`InProcessExecutor` runs the code inside this interpreter: fast, any Python object
  crosses, but only for code you trust. Choose it explicitly with
  ``set_default_executor(InProcessExecutor())``.

Code that an optimizer rewrote sees only what the user's original code used: :func:`withhold`
narrows the caller's globals and ``self`` before any executor runs it, so a secret such as a
module-level ``API_KEY`` or ``self.api_key`` that the original never read never reaches it.

SECURITY.md says what the sandbox guarantees and what it does not.

Example:
    >>> ex = InProcessExecutor()
    >>> ex.run("def double(x):\\n    return 2 * x\\n", "double", (21,), {}, {})
    42
"""

from __future__ import annotations

import builtins
import math
import os
import sys
import threading
import time
import traceback
import uuid
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Literal

from feedprop._sandbox_boundary import Withheld, WithheldSelf, prepare_call, withhold
from feedprop._sandbox_process import Worker, WorkerGone, WorkerTimeout
from feedprop._sandbox_worker import CODE_FILENAME, code_frames, decode
from feedprop.errors import ConfigurationError, InvalidInputError, SandboxError

__all__ = [
    "CODE_FILENAME",
    "CodeFailure",
    "Executor",
    "InProcessExecutor",
    "SandboxExecutor",
    "SandboxWeakWarning",
    "Withheld",
    "WithheldSelf",
    "default_executor",
    "set_default_executor",
    "withhold",
]


#: Seconds the worker may take beyond the call's own timeout (e.g. importing a module the first time).
REPLY_GRACE = 30.0
MAX_SOURCE_CHARS = 1_000_000


@dataclass
class CodeFailure(Exception):
    """Trainable code failed: it raised, timed out, ran out of memory, or exited.

    ``lineno`` is the 1-based line of ``source`` where it failed, when known; ``traceback``
    is the formatted traceback restricted to the trainable code's frames where possible;
    ``original`` is the exception object itself when the code ran in this process. For code
    that ran in the sandbox it is a stand-in of the same built-in type carrying the message
    (``ValueError("...")``, ``TimeoutError("...")``), or None when the type is not a built-in.

    Failures of sandboxed code carry the exception's type name (``"ZeroDivisionError"``) or one
    of: ``"TimeoutError"`` (wall clock or CPU time), ``"MemoryError"``, ``"WorkerDied"`` (the
    code's process exited or was killed by a signal), ``"TypeError"`` (the result is not plain data).

    Example:
        >>> try:
        ...     InProcessExecutor().run("def f(x):\\n    return 1 / x\\n", "f", (0,), {}, {})
        ... except CodeFailure as failure:
        ...     print(failure)
        ZeroDivisionError: division by zero (line 2)
    """

    type_name: str
    message: str
    traceback: str = ""
    lineno: int | None = None
    original: BaseException | None = None

    def __str__(self) -> str:
        where = f" (line {self.lineno})" if self.lineno is not None else ""
        return f"{self.type_name}: {self.message}{where}"


class Executor:
    """Defines a function from source text and calls it. Subclasses override :meth:`run`."""

    def run(
        self,
        source: str,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        globals_: dict[str, Any],
    ) -> Any:
        """Define ``name`` from ``source`` in a namespace seeded with ``globals_``; call it.

        Returns the call's result, or raises :class:`CodeFailure` for any failure of the code.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release whatever the executor holds (worker processes). The base class holds nothing."""


def format_traceback(frames: list[tuple[int, str]], type_name: str, message: str, source: str) -> str:
    """A traceback over the trainable code's frames only, quoting the lines of ``source``.

    Example:
        >>> print(format_traceback([(2, "f")], "ZeroDivisionError", "division by zero", "def f(x):\\n    return 1 / x"))
        Traceback (most recent call last):
          File "<feedprop-code>", line 2, in f
            return 1 / x
        ZeroDivisionError: division by zero
    """
    lines = source.splitlines()
    out = ["Traceback (most recent call last):"] if frames else []
    previous, repeats = None, 0
    for frame in [*frames, None]:  # the sentinel flushes a pending "repeated" note
        if frame is not None and frame == previous:
            repeats += 1
            if repeats < 3:
                out += _frame_lines(frame, lines)
            continue
        if repeats >= 3:
            out.append(f"  [Previous line repeated {repeats - 2} more times]")
        if frame is None:
            break
        previous, repeats = frame, 0
        out += _frame_lines(frame, lines)
    out.append(f"{type_name}: {message}" if message else type_name)
    return "\n".join(out)


def _frame_lines(frame: tuple[int, str], lines: list[str]) -> list[str]:
    lineno, name = frame
    text = [f'  File "{CODE_FILENAME}", line {lineno}, in {name}']
    if 1 <= lineno <= len(lines) and lines[lineno - 1].strip():
        text.append(f"    {lines[lineno - 1].strip()}")
    return text


def failure_from_exception(exc: BaseException, source: str | None = None) -> CodeFailure:
    """Describe ``exc`` as a :class:`CodeFailure`, locating the deepest frame in trainable code.

    With ``source``, the traceback shows only the trainable code's frames, quoting its lines.
    """
    ours = [(lineno or 0, name) for lineno, name in code_frames(exc.__traceback__, keep=None)[0]]
    lineno = ours[-1][0] if ours else None
    if source is not None and ours:
        text = format_traceback(ours, type(exc).__name__, str(exc), source)
    else:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return CodeFailure(type(exc).__name__, str(exc), text, lineno, exc)


def _syntax_failure(e: SyntaxError | ValueError | RecursionError | MemoryError) -> CodeFailure:
    if isinstance(e, SyntaxError):
        text = "".join(traceback.format_exception_only(type(e), e)).rstrip()
        return CodeFailure(type(e).__name__, str(e.msg), text, e.lineno, e)
    if isinstance(e, ValueError):  # e.g. "source code string cannot contain null bytes"
        return CodeFailure("SyntaxError", str(e), "", None, e)
    return CodeFailure("SyntaxError", "the code is nested too deeply to compile", "", None, e)


class InProcessExecutor(Executor):
    """Runs trainable code in this interpreter with ``exec``. Fast; only for code you trust.

    Example:
        >>> InProcessExecutor().run("def f(xs):\\n    return sorted(xs)\\n", "f", ({3, 1, 2},), {}, {})
        [1, 2, 3]
    """

    def run(
        self,
        source: str,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        globals_: dict[str, Any],
    ) -> Any:
        namespace = {k: v for k, v in globals_.items() if not isinstance(v, Withheld)}
        withheld = {k: v.reason for k, v in globals_.items() if isinstance(v, Withheld)}
        try:
            exec(compile(source, CODE_FILENAME, "exec"), namespace)
            fn = namespace[name]
        except SyntaxError as e:
            raise _syntax_failure(e) from e
        except KeyError as e:
            raise CodeFailure("NameError", f"the code does not define a function named {name!r}") from e
        except Exception as e:
            raise _in_process_failure(e, source, withheld) from e
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise _in_process_failure(e, source, withheld) from e


def _in_process_failure(exc: Exception, source: str, withheld: dict[str, str]) -> CodeFailure:
    name = getattr(exc, "name", None) if isinstance(exc, NameError) else None
    if isinstance(name, str) and name in withheld:
        exc.args = (withheld[name],)
    return failure_from_exception(exc, source)


Isolation = Literal["auto", "strict", "basic"]


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
    ``feedprop._sandbox_boundary``; ``self`` crosses as a read-only snapshot of the plain-data
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
        self._pool = _Pool(self.max_workers, isolation, max(64, self.memory_mb))
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
            raise _syntax_failure(e) from None
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
        raise CodeFailure(type_name, message, text, reply.get("lineno"), _stand_in(type_name, message))

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


def _stand_in(type_name: str, message: str) -> BaseException | None:
    """An exception of the built-in type ``type_name`` carrying ``message``; None for other types."""
    kind = getattr(builtins, type_name, None)
    if not (isinstance(kind, type) and issubclass(kind, BaseException)):
        return None
    try:
        return kind(message)
    except Exception:  # e.g. UnicodeDecodeError wants five arguments
        return None


def _check_positive(name: str, value: object, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0 or value != value:
        kind = "a positive whole number" if integer else "a positive number"
        raise ConfigurationError(f"{name} must be {kind}, not {value!r}")


class _Pool:
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


def _warn_basic_once(reason: str) -> None:
    """Say loudly, once per process, that ``isolation='auto'`` fell back to the basic mode, and how to avoid it."""
    global _warned_basic
    with _default_lock:
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


_default: Executor | None = None
_default_lock = threading.Lock()


def default_executor() -> Executor:
    """The process-wide executor for trainable code: a :class:`SandboxExecutor`, created on first use.

    Thread-safe. Replace it with :func:`set_default_executor`.

    Example:
        >>> isinstance(default_executor(), Executor)
        True
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = SandboxExecutor()
        return _default


def set_default_executor(executor: Executor | None) -> None:
    """Make ``executor`` the default; ``None`` goes back to a lazily created :class:`SandboxExecutor`.

    Choosing :class:`InProcessExecutor` runs trainable code inside this process: only for trusted code.

    Example:
        >>> set_default_executor(InProcessExecutor())
        >>> type(default_executor()).__name__
        'InProcessExecutor'
        >>> set_default_executor(None)
    """
    global _default
    if executor is not None and not isinstance(executor, Executor):
        raise InvalidInputError(
            f"set_default_executor expects an Executor such as SandboxExecutor() or InProcessExecutor(), "
            f"not {type(executor).__qualname__}"
        )
    with _default_lock:
        _default = executor
