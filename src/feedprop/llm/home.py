"""Where feedprop keeps its files: the assembled model and the response cache.

``$FEEDPROP_HOME`` if set, else ``$XDG_CACHE_HOME/feedprop``, else ``~/.cache/feedprop``.

Example:
    >>> import os
    >>> os.environ["FEEDPROP_HOME"] = "/tmp/feedprop-doc"
    >>> str(home_dir())
    '/tmp/feedprop-doc'
    >>> del os.environ["FEEDPROP_HOME"]
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["home_dir"]


def home_dir() -> Path:
    """feedprop's cache directory (not created here; writers create what they need)."""
    explicit = os.environ.get("FEEDPROP_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "feedprop"
    return Path.home() / ".cache" / "feedprop"
