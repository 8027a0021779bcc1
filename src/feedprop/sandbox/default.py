"""The process-wide executor for trainable code: a :class:`~feedprop.sandbox.SandboxExecutor` unless set otherwise."""

from __future__ import annotations

import threading

from feedprop.errors import InvalidInputError
from feedprop.sandbox.executor import Executor
from feedprop.sandbox.sandbox_executor import SandboxExecutor

__all__ = ["default_executor", "set_default_executor"]

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
        >>> from feedprop.sandbox import InProcessExecutor
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
