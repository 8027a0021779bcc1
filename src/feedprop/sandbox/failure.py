"""How a failure of trainable code is told: :class:`CodeFailure`, and a traceback over the code's own frames.

Every executor reports a failure of the code (it raised, timed out, ran out of memory, or its
process ended) as a :class:`CodeFailure` whose ``lineno`` points into the code's source, so that
feedback can name the failing line.
"""

from __future__ import annotations

import builtins
import traceback
from dataclasses import dataclass

from feedprop.sandbox.worker import CODE_FILENAME, code_frames

__all__ = ["CodeFailure", "failure_from_exception", "format_traceback", "stand_in", "syntax_failure"]


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
        >>> from feedprop.sandbox import InProcessExecutor
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

    Example:
        >>> try:
        ...     {}["missing"]
        ... except KeyError as e:
        ...     print(failure_from_exception(e))
        KeyError: 'missing'
    """
    ours = [(lineno or 0, name) for lineno, name in code_frames(exc.__traceback__, keep=None)[0]]
    lineno = ours[-1][0] if ours else None
    if source is not None and ours:
        text = format_traceback(ours, type(exc).__name__, str(exc), source)
    else:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return CodeFailure(type(exc).__name__, str(exc), text, lineno, exc)


def syntax_failure(e: SyntaxError | ValueError | RecursionError | MemoryError) -> CodeFailure:
    """Describe source that does not compile as a :class:`CodeFailure` of type ``SyntaxError``.

    Example:
        >>> try:
        ...     compile("def f(:", "<feedprop-code>", "exec")
        ... except SyntaxError as e:
        ...     print(syntax_failure(e))
        SyntaxError: invalid syntax (line 1)
    """
    if isinstance(e, SyntaxError):
        text = "".join(traceback.format_exception_only(type(e), e)).rstrip()
        return CodeFailure(type(e).__name__, str(e.msg), text, e.lineno, e)
    if isinstance(e, ValueError):  # e.g. "source code string cannot contain null bytes"
        return CodeFailure("SyntaxError", str(e), "", None, e)
    return CodeFailure("SyntaxError", "the code is nested too deeply to compile", "", None, e)


def stand_in(type_name: str, message: str) -> BaseException | None:
    """An exception of the built-in type ``type_name`` carrying ``message``; None for other types.

    Example:
        >>> stand_in("ValueError", "bad"), stand_in("NotABuiltin", "x")
        (ValueError('bad'), None)
    """
    kind = getattr(builtins, type_name, None)
    if not (isinstance(kind, type) and issubclass(kind, BaseException)):
        return None
    try:
        return kind(message)
    except Exception:  # e.g. UnicodeDecodeError wants five arguments
        return None
