"""A persistent cache of model replies, so a second identical run makes no model calls.

The key of a request is the sha256 of its canonical JSON: model name, messages and *every*
sampling parameter (temperature included), plus an optional ``cache_salt``. Canonical means
sorted keys, no whitespace, and integral floats written as ints (``temperature=0`` and
``temperature=0.0`` are the same request). Python's salted ``hash()`` is never used, so keys
are stable across processes and machines.

Sampling at temperature > 0: identical requests share one entry, so a rerun gets the same
reply. To draw *n* different samples of one prompt, pass ``cache_salt=i`` for ``i in range(n)``:
each sample is its own entry, and reruns still reproduce all of them.

Entries live in SQLite in WAL mode, which is safe for many threads and processes at once.
Switch caching off per call with ``complete(..., cache=False)``, per model with ``cache=False``
at construction, or globally with ``FEEDPROP_CACHE=0`` or :func:`set_cache_enabled`.

Example:
    >>> import tempfile, os
    >>> from feedprop.llm import MockLLM
    >>> store = ResponseCache(os.path.join(tempfile.mkdtemp(), "cache.sqlite"))
    >>> llm = MockLLM(["first", "second"], cache=store)
    >>> ask = [{"role": "user", "content": "hi"}]
    >>> llm.complete(ask).text, llm.complete(ask).text   # the second call is a cache hit
    ('first', 'first')
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from feedprop.errors import ConfigurationError, InvalidInputError
from feedprop.llm.home import home_dir

__all__ = [
    "ResponseCache",
    "cache_enabled",
    "cache_key",
    "canonical_json",
    "default_cache",
    "message_key",
    "set_cache_enabled",
]

#: Bump when the key layout changes, so old entries are never misread.
KEY_VERSION = 1

#: Per-call options that do not change the reply and so are not part of the key.
NON_KEY_PARAMS = frozenset({"timeout"})


def _normalize(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidInputError(f"{where} must be a finite number, got {value!r}")
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInputError(f"{where} keys must be strings (as in JSON), got {k!r}")
            out[k] = _normalize(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, Sequence):
        return [_normalize(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise InvalidInputError(
        f"{where} must be JSON-like (str, number, bool, None, list, dict), got {type(value).__name__}; "
        "convert it before passing it to the model"
    )


def canonical_json(value: Any, name: str = "value") -> str:
    """The one JSON text of ``value``: sorted keys, no spaces, integral floats as ints.

    Example:
        >>> canonical_json({"b": 1.0, "a": [0.5, None]})
        '{"a":[0.5,null],"b":1}'
    """
    try:
        normal = _normalize(value, name)
    except RecursionError:
        raise InvalidInputError(
            f"{name} contains itself (a circular reference) or is nested too deeply; pass plain JSON data"
        ) from None
    return json.dumps(normal, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def cache_key(model: str, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any], salt: Any = None) -> str:
    """sha256 (hex) of the canonical request: model, messages, sampling parameters and salt.

    Example:
        >>> ask = [{"role": "user", "content": "hi"}]
        >>> cache_key("m", ask, {"temperature": 0}) == cache_key("m", ask, {"temperature": 0.0})
        True
        >>> cache_key("m", ask, {"temperature": 0}) == cache_key("m", ask, {"temperature": 0.7})
        False
    """
    request = {
        "v": KEY_VERSION,
        "model": model,
        "messages": [message_key(m) for m in messages],
        "params": {k: v for k, v in params.items() if k not in NON_KEY_PARAMS},
        "salt": salt,
    }
    return hashlib.sha256(canonical_json(request).encode("utf-8")).hexdigest()


#: The keys of a message besides role and content that change the reply (a transcript with tool calls).
TOOL_KEYS = ("tool_calls", "tool_call_id")


def message_key(message: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a chat message that a request's key holds: role, content, and tool calls or ids if any.

    A message without tool keys keys as it always did.

    Example:
        >>> message_key({"role": "tool", "content": "4", "tool_call_id": "c1", "name": "calc"})
        {'role': 'tool', 'content': '4', 'tool_call_id': 'c1'}
    """
    key = {"role": message["role"], "content": message["content"]}
    key.update({k: message[k] for k in TOOL_KEYS if k in message})
    return key


class ResponseCache:
    """Replies stored by request key in a SQLite file (WAL mode; safe across threads and processes).

    Example:
        >>> import tempfile, os
        >>> store = ResponseCache(os.path.join(tempfile.mkdtemp(), "c.sqlite"))
        >>> store.put("k", {"text": "hello"})
        >>> store.get("k")
        {'text': 'hello'}
        >>> len(store)
        1
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._init_lock = threading.Lock()
        self._initialised = False

    def _connect(self) -> sqlite3.Connection:
        # One connection per thread (and per process: a forked child must not reuse its parent's).
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=60000")
            with self._init_lock:
                if not self._initialised:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS responses "
                        "(key TEXT PRIMARY KEY, response TEXT NOT NULL, created REAL NOT NULL)"
                    )
                    self._initialised = True
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(
                f"cannot open the response cache at {self.path}: {exc}. Point FEEDPROP_HOME at a writable "
                "directory, or switch the cache off with FEEDPROP_CACHE=0"
            ) from exc
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored reply for ``key``, or ``None``."""
        row = self._connect().execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        value: dict[str, Any] = json.loads(row[0])
        return value

    def put(self, key: str, response: Mapping[str, Any]) -> None:
        """Store ``response`` (JSON-serialisable) under ``key``, replacing any earlier entry."""
        self._connect().execute(
            "INSERT OR REPLACE INTO responses (key, response, created) VALUES (?, ?, ?)",
            (key, json.dumps(response, ensure_ascii=False), time.time()),
        )

    def clear(self) -> None:
        """Delete every entry."""
        self._connect().execute("DELETE FROM responses")

    def __len__(self) -> int:
        row = self._connect().execute("SELECT COUNT(*) FROM responses").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"


_enabled_override: bool | None = None
_default_cache: ResponseCache | None = None
_default_lock = threading.Lock()


def set_cache_enabled(enabled: bool | None) -> None:
    """Switch the response cache on or off for the whole process (``None``: follow ``FEEDPROP_CACHE``).

    Example:
        >>> set_cache_enabled(False); cache_enabled()
        False
        >>> set_cache_enabled(None)
    """
    global _enabled_override
    if enabled is not None and not isinstance(enabled, bool):
        raise InvalidInputError(f"set_cache_enabled takes True, False or None, got {enabled!r}")
    _enabled_override = enabled


def cache_enabled() -> bool:
    """Whether the response cache is on: :func:`set_cache_enabled` if called, else ``FEEDPROP_CACHE`` (default on)."""
    if _enabled_override is not None:
        return _enabled_override
    value = os.environ.get("FEEDPROP_CACHE", "1").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on", ""):
        return True
    raise ConfigurationError(f"FEEDPROP_CACHE must be 0 or 1 (also true/false, on/off), got {value!r}")


def default_cache() -> ResponseCache:
    """The process-wide cache file, ``<feedprop home>/llm-cache.sqlite``, created lazily."""
    global _default_cache
    with _default_lock:
        path = home_dir() / "llm-cache.sqlite"
        if _default_cache is None or _default_cache.path != path:
            _default_cache = ResponseCache(path)
        return _default_cache
