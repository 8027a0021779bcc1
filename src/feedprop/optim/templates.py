"""Prompts as data: the ``prompts/*.txt`` files beside the optimizers, filled with ``$names``.

``string.Template`` syntax keeps JSON examples (full of braces) readable in the files.

Example:
    >>> "$legal" in template("optoprime_user")
    True
"""

from __future__ import annotations

import re
import string
from functools import cache
from importlib import resources

from feedprop.errors import ConfigurationError

__all__ = ["fill", "fixed_text", "template"]


@cache
def template(name: str) -> str:
    """The text of ``prompts/<name>.txt`` (read on first use, then cached)."""
    path = resources.files("feedprop.optim").joinpath("prompts", f"{name}.txt")
    if not path.is_file():
        raise ConfigurationError(f"no prompt named {name!r} in feedprop/optim/prompts/")
    return path.read_text(encoding="utf-8")


def fixed_text(*names: str) -> list[str]:
    """The literal parts of the named prompts: their text between the ``$names``.

    What a model's reply should not repeat as if it were its answer (a small model asked to rewrite
    an instruction sometimes returns the request itself).

    Example:
        >>> "The program fails on these cases:" in fixed_text("reflect_rewrite_text_plain")[0]
        True
    """
    parts: list[str] = []
    for name in names:
        parts.extend(p for p in _PLACEHOLDER.split(template(name)) if p.strip())
    return parts


_PLACEHOLDER = re.compile(r"\$\{?\w+\}?")


def fill(prompt: str, /, **values: object) -> str:
    """``template(prompt)`` with every ``$key`` replaced; a missing key is a :class:`ConfigurationError`.

    Example:
        >>> fill("retry_parse", error="no JSON", format_help="answer in JSON").startswith("I could not read")
        True
    """
    try:
        return string.Template(template(prompt)).substitute({k: str(v) for k, v in values.items()}).strip()
    except (KeyError, ValueError) as e:
        raise ConfigurationError(f"prompt {prompt!r} needs a value for {e}") from None
