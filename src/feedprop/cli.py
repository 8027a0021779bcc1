"""The ``feedprop`` command line."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``feedprop`` command."""
    raise SystemExit("feedprop: no commands yet")
