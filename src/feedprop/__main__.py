"""``python -m feedprop`` is the ``feedprop`` command."""

from feedprop.cli import main

raise SystemExit(main())
