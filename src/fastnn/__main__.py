"""``python -m fastnn``: the command line (see fastnn.cli)."""

from .cli import main

raise SystemExit(main())
