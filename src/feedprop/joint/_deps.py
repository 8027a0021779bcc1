"""The optional packages of the weights side, imported on first use.

``import feedprop`` never imports torch: the joint features need the ``joint`` extra
(``pip install 'feedprop[joint]'``: torch CPU, transformers, peft, gguf), and only code that
trains or exports weights asks for it, through :func:`require`.

Example:
    >>> require("json").dumps([1])
    '[1]'
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from feedprop.errors import ConfigurationError

__all__ = ["INSTALL_HINT", "available", "require"]

#: What to run when a package of the ``joint`` extra is missing.
INSTALL_HINT = "pip install 'feedprop[joint]'  (torch==2.13.0 CPU, transformers, peft, gguf)"


def require(name: str) -> ModuleType:
    """Import ``name`` or raise :class:`ConfigurationError` saying how to install the joint extra."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigurationError(
            f"the weights side of feedprop needs the package {name!r}, which is not installed: {INSTALL_HINT}"
        ) from exc


def available() -> bool:
    """Whether every package of the ``joint`` extra can be imported (imports nothing heavy)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers", "peft", "gguf"))
