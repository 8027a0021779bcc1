"""The process's default model: a configured endpoint, else the embedded one.

:func:`default` builds it on first use (once per process, thread-safe):

- ``FEEDPROP_BASE_URL`` set: :class:`~feedprop.llm.OpenAICompatible` at that address, with
  ``FEEDPROP_MODEL`` (if unset, the server's only model) and ``FEEDPROP_API_KEY``;
  ``FEEDPROP_JSON_SCHEMA=1`` says the server enforces JSON schemas (llama.cpp, vLLM do), and
  ``FEEDPROP_CONSTRAIN_TOOLS=1`` (with it) constrains tool replies as the embedded model does
  (for a small model served there);
- otherwise: the embedded :class:`~feedprop.llm.LocalModel` (``FEEDPROP_LOCAL_MODEL`` picks
  ``qwen2.5-coder-0.5b`` instead of the default 1.5B model).

:func:`set_default` replaces it, e.g. with a ``MockLLM`` in tests.

Example:
    >>> from feedprop.llm import MockLLM
    >>> set_default(MockLLM("ok"))
    >>> default().complete([{"role": "user", "content": "?"}]).text
    'ok'
    >>> set_default(None)   # back to lazy construction from the environment
"""

from __future__ import annotations

import os
import threading

from feedprop.errors import InvalidInputError
from feedprop.llm.base import LLM
from feedprop.llm.local import LocalModel
from feedprop.llm.openai_compatible import OpenAICompatible

__all__ = ["default", "set_default"]

_lock = threading.Lock()
_default: LLM | None = None


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _from_environment() -> LLM:
    base_url = os.environ.get("FEEDPROP_BASE_URL")
    if base_url:
        return OpenAICompatible(
            base_url,
            model=os.environ.get("FEEDPROP_MODEL") or None,
            api_key=os.environ.get("FEEDPROP_API_KEY"),
            json_schema=_flag("FEEDPROP_JSON_SCHEMA"),
            constrain_tools=_flag("FEEDPROP_CONSTRAIN_TOOLS"),
        )
    return LocalModel()


def default() -> LLM:
    """The default model of this process, created on first call (see the module docs)."""
    global _default
    current = _default
    if current is not None:
        return current
    with _lock:
        if _default is None:
            _default = _from_environment()
        return _default


def set_default(llm: LLM | None) -> None:
    """Make ``llm`` the default model (``None``: rebuild from the environment on next use).

    The previous default is not closed: whoever created it owns it.
    """
    global _default
    if llm is not None and not isinstance(llm, LLM):
        raise InvalidInputError(f"set_default takes an LLM (or None), got {type(llm).__name__}")
    with _lock:
        _default = llm
