"""``python -m modelrunner``: see :mod:`modelrunner.cli`."""

from .cli import main

raise SystemExit(main())
