"""The :class:`Executor` protocol, and :class:`InProcessExecutor` for code you trust.

An executor defines the function ``name`` from ``source`` and calls it; every failure of the code
comes back as :class:`~feedprop.sandbox.CodeFailure`.

Example:
    >>> InProcessExecutor().run("def double(x):\\n    return 2 * x\\n", "double", (21,), {}, {})
    42
"""

from __future__ import annotations

from typing import Any

from feedprop.sandbox.boundary import Withheld
from feedprop.sandbox.failure import CodeFailure, failure_from_exception, syntax_failure
from feedprop.sandbox.worker import CODE_FILENAME

__all__ = ["Executor", "InProcessExecutor"]


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
            raise syntax_failure(e) from e
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
