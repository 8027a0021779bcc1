"""The unit-test harness: the program that runs a candidate and its tests inside the sandbox.

:func:`feedprop.sandbox.run_unit_tests` sends this module's source through an executor, which
calls :func:`_feedprop_unit_tests` with the job (``program``, ``tests``, ``entry_point``). The
candidate program and the tests run in namespaces of their own, and only the verdict (plain data)
comes back. What the candidate prints is kept to a short tail, so nothing it prints can forge or
garble the verdict. Standard library only: the sandbox compiles this source as the code it runs.

Example (a failing test is quoted as its whole statement):
    >>> print(ast.unparse(_statement("x = 1\\nassert (x ==\\n        2)\\n", 3)))
    assert x == 2
"""

from __future__ import annotations

import ast
import io
import signal
import sys
from types import FrameType
from typing import Any

#: Characters of the candidate's printed output kept (the last ones).
TAIL_CHARS = 2000
#: Seconds the failing call may take when it runs again to show what it returned.
REEVALUATION_SECONDS = 2.0
#: Statements that hold other statements: a failing line is never reported as one of these.
COMPOUND = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.For, ast.While, ast.If, ast.With, ast.Try)


class _Tail(io.TextIOBase):
    """A stdout that keeps only the last few thousand characters printed."""

    def __init__(self) -> None:
        self.text = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.text = (self.text + str(s))[-TAIL_CHARS:]
        return len(s)


def _source_line(source: str, lineno: int | None) -> str:
    lines = source.splitlines()
    return lines[lineno - 1].strip() if lineno and 0 < lineno <= len(lines) else ""


def _statement(source: str, lineno: int) -> ast.stmt | None:
    """The whole statement of ``source`` that covers ``lineno`` (asserts may span lines)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    best = None
    for node in ast.walk(tree):
        if not isinstance(node, ast.stmt) or isinstance(node, COMPOUND):
            continue
        if node.lineno <= lineno <= (node.end_lineno or node.lineno):
            best = node
    return best


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise TimeoutError("re-evaluation took too long")


def _got(stmt: ast.stmt | None, frame: FrameType, entry: str | None) -> tuple[str | None, str] | None:
    """Call the code again as the failing assert did, to show what it returned.

    Returns (call source, or None when the call is the assert's whole left side; repr of the value).
    """
    if not isinstance(stmt, ast.Assert):
        return None
    names = {"candidate", entry}
    calls = [
        n
        for n in ast.walk(stmt.test)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names
    ]
    target: ast.expr
    if calls:
        target = calls[0]
    elif isinstance(stmt.test, ast.Compare):
        target = stmt.test.left
    else:
        return None
    whole_left = isinstance(stmt.test, ast.Compare) and stmt.test.left is target
    try:
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, REEVALUATION_SECONDS)
        value = eval(compile(ast.Expression(target), "<tests>", "eval"), frame.f_globals, frame.f_locals)
        return (None if whole_left else ast.unparse(target)[:300]), repr(value)[:500]
    except BaseException:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _describe(exc: BaseException, job: dict[str, Any]) -> dict[str, Any]:
    """The verdict on an exception: its kind, message, the code's failing line and the failing test."""
    info: dict[str, Any] = {"passed": False, "type": type(exc).__name__, "message": str(exc)[:1000]}
    info["kind"] = "assertion" if isinstance(exc, AssertionError) else "exception"
    if isinstance(exc, SystemExit):
        info["kind"], info["message"] = "exit", f"the code called exit({exc.code!r})"
    test_frame: FrameType | None = None
    test_line = 0
    code_line = None
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name == "<tests>":
            test_frame, test_line = tb.tb_frame, tb.tb_lineno
        elif name == "<candidate>":
            code_line = tb.tb_lineno
        tb = tb.tb_next
    if code_line is not None:
        info["code_lineno"] = code_line
        info["code_line"] = _source_line(job["program"], code_line)
    if test_frame is not None:
        stmt = _statement(job["tests"], test_line)
        info["test_lineno"] = test_line
        info["test"] = ast.unparse(stmt) if stmt is not None else _source_line(job["tests"], test_line)
        if info["kind"] == "assertion":
            got = _got(stmt, test_frame, job["entry_point"])
            if got is not None:
                if got[0] is not None:
                    info["call"] = got[0]
                info["got"] = got[1]
    return info


def _run(job: dict[str, Any]) -> dict[str, Any]:
    """Run the program, then the tests (and ``check(entry_point)`` if they define it)."""
    ns: dict[str, Any] = {"__name__": "candidate"}
    stage = "program"
    try:
        exec(compile(job["program"], "<candidate>", "exec"), ns)
        stage = "tests"
        # The tests get their own namespace (holding the candidate's names), so a `check` defined by
        # the tests cannot replace a helper of the same name that the candidate's code calls.
        tns = dict(ns, __name__="tests")
        exec(compile(job["tests"], "<tests>", "exec"), tns)
        entry = job["entry_point"]
        if entry:
            if not callable(ns.get(entry)):
                return {"passed": False, "kind": "missing", "message": f"the code does not define {entry}()"}
            if callable(tns.get("check")):
                tns["check"](ns[entry])
        return {"passed": True}
    except SyntaxError as e:
        return {
            "passed": False,
            "kind": "syntax",
            "stage": stage,
            "type": "SyntaxError",
            "message": str(e.msg),
            "code_lineno": e.lineno,
        }
    except BaseException as e:
        info = _describe(e, job)
        info["stage"] = stage
        return info


def _feedprop_unit_tests(job: dict[str, Any]) -> dict[str, Any]:
    """The harness's entry: the verdict on ``job``, every value plain data."""
    tail = _Tail()
    previous = sys.stdout
    sys.stdin = io.StringIO("")
    sys.stdout = tail
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 3000))
    try:
        result = _run(job)
    finally:
        sys.stdout = previous
    result["stdout"] = tail.text
    for key, value in list(result.items()):
        if not isinstance(value, str | int | float | bool | type(None)):
            result[key] = repr(value)[:1000]
    return result
