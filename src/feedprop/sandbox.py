"""Where trainable code runs.

A trainable function's source is data that an optimizer rewrites, so running it means
compiling a string. An :class:`Executor` does that: it defines the function ``name`` from
``source`` and calls it. Every failure of the code comes back as :class:`CodeFailure`, whose
``lineno`` points into ``source`` so feedback can name the failing line.

:class:`InProcessExecutor` runs the code inside this interpreter (fast, for trusted code only).

Example:
    >>> ex = InProcessExecutor()
    >>> ex.run("def double(x):\\n    return 2 * x\\n", "double", (21,), {}, {})
    42
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

__all__ = ["CodeFailure", "Executor", "InProcessExecutor"]

#: Filename given to compiled trainable code, so traceback frames can be mapped back to it.
CODE_FILENAME = "<feedprop-code>"


@dataclass
class CodeFailure(Exception):
    """Trainable code failed: it raised, timed out, ran out of memory, or exited.

    ``lineno`` is the 1-based line of ``source`` where it failed, when known; ``traceback``
    is the formatted traceback restricted to the trainable code's frames where possible;
    ``original`` is the exception object itself when the code ran in this process.
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


def failure_from_exception(exc: BaseException) -> CodeFailure:
    """Describe ``exc`` as a :class:`CodeFailure`, locating the deepest frame in trainable code."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f.filename == CODE_FILENAME]
    lineno = ours[-1].lineno if ours else None
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return CodeFailure(type(exc).__name__, str(exc), text, lineno, exc)


class InProcessExecutor(Executor):
    """Runs trainable code in this interpreter with ``exec``. Fast; only for code you trust."""

    def run(
        self,
        source: str,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        globals_: dict[str, Any],
    ) -> Any:
        namespace: dict[str, Any] = dict(globals_)
        try:
            exec(compile(source, CODE_FILENAME, "exec"), namespace)
            fn = namespace[name]
        except SyntaxError as e:
            raise CodeFailure("SyntaxError", str(e.msg), "", e.lineno, e) from e
        except KeyError as e:
            raise CodeFailure("NameError", f"the code does not define a function named {name!r}") from e
        except Exception as e:
            raise failure_from_exception(e) from e
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise failure_from_exception(e) from e
