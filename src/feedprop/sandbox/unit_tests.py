"""Running a program against its unit tests in the sandbox, and the verdict that comes back.

The tests and the program under test run as one call of an :class:`~feedprop.sandbox.Executor`:
the program is :mod:`feedprop.sandbox.harness`, so time, memory, what crosses the boundary and how
the end of a process is told are the sandbox's own rules, the same as for any trainable code.
"""

from __future__ import annotations

import functools
import inspect
import threading
from typing import Any

from feedprop.sandbox import harness
from feedprop.sandbox.executor import Executor
from feedprop.sandbox.failure import CodeFailure
from feedprop.sandbox.sandbox_executor import SandboxExecutor

__all__ = ["HARNESS_ENTRY", "UNLIMITED_MB", "run_unit_tests", "unit_test_executor"]

#: The function of :mod:`feedprop.sandbox.harness` that the executor calls.
HARNESS_ENTRY = "_feedprop_unit_tests"
#: Megabytes of memory the code may use when ``memory_mb=None`` asks for no limit.
UNLIMITED_MB = 1 << 20

_executors: dict[tuple[float, int], Executor] = {}
_executors_lock = threading.Lock()


def unit_test_executor(timeout: float = 10.0, memory_mb: int | None = 1024) -> Executor:
    """The shared :class:`~feedprop.sandbox.SandboxExecutor` that runs unit tests under these limits.

    One per pair of limits, created on first use and kept warm for the life of the process.

    Example:
        >>> unit_test_executor(5.0, 256) is unit_test_executor(5, 256)
        True
    """
    key = (float(timeout), int(memory_mb) if memory_mb else UNLIMITED_MB)
    with _executors_lock:
        executor = _executors.get(key)
        if executor is None:
            executor = _executors[key] = SandboxExecutor(timeout=key[0], memory_mb=key[1])
        return executor


@functools.cache
def harness_source() -> str:
    """The source of :mod:`feedprop.sandbox.harness`, as the executor compiles it."""
    return inspect.getsource(harness)


def run_unit_tests(
    program: str,
    tests: str,
    entry_point: str | None = None,
    *,
    timeout: float = 10.0,
    memory_mb: int | None = 1024,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Run ``program`` then ``tests`` in the sandbox; return the verdict.

    ``tests`` may assert at module level (MBPP style) or define ``check(candidate)``
    (HumanEval style), which is called with the program's ``entry_point``. Both run in the
    sandbox that runs every piece of code an optimizer wrote (:class:`~feedprop.sandbox.SandboxExecutor`,
    see SECURITY.md): namespaces where the machine allows them, a private working directory, a
    scrubbed environment, a memory limit (``memory_mb``, ``None`` for none), a CPU-time limit and a
    wall-clock ``timeout``. ``executor`` replaces the shared sandbox (:func:`unit_test_executor`).

    The verdict is a JSON-able dict: ``passed`` (bool), and on failure ``kind`` (``assertion``,
    ``exception``, ``syntax``, ``missing``, ``exit``, ``timeout``, ``crash``), ``message`` and,
    where known, ``test`` (the failing test statement), ``got``, ``code_lineno`` and ``code_line``.

    Example:
        >>> run_unit_tests("def inc(x):\\n    return x + 1\\n", "assert inc(1) == 2\\n")["passed"]
        True
        >>> verdict = run_unit_tests("def inc(x):\\n    return x + 2\\n", "assert inc(1) == 2\\n")
        >>> verdict["kind"], verdict["test"], verdict["got"]
        ('assertion', 'assert inc(1) == 2', '3')
    """
    runner = executor if executor is not None else unit_test_executor(timeout, memory_mb)
    job = {"program": program, "tests": tests, "entry_point": entry_point}
    try:
        verdict = runner.run(harness_source(), HARNESS_ENTRY, (job,), {}, {})
    except CodeFailure as failure:
        if failure.type_name == "TimeoutError":
            return {"passed": False, "kind": "timeout", "message": f"exceeded {timeout:g} s ({failure.message})"}
        if failure.type_name == "MemoryError":
            return {"passed": False, "kind": "exception", "type": "MemoryError", "message": failure.message}
        return {"passed": False, "kind": "crash", "message": f"the process ended before the tests finished: {failure}"}
    if not isinstance(verdict, dict):
        return {"passed": False, "kind": "crash", "message": "the test run returned no verdict"}
    return verdict
