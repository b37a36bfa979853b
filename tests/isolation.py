"""One ``VAR_DIR`` per pytest-xdist worker (loaded with ``-p tests.isolation``, before Django's settings).

Each worker process gets ``$VAR_DIR/<worker id>`` (``gw0``, ``gw1``...), so its filesystem
broker queue, file cache, beat schedules and SQLite test database are its own: a Celery
worker one test process starts never takes another process's messages. Without xdist, or
in xdist's controller, nothing changes.
"""

from __future__ import annotations

import os
from pathlib import Path

_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker:
    _base = Path(os.environ.get("VAR_DIR") or Path(__file__).resolve().parents[1] / "var")
    if _base.name != _worker:
        os.environ["VAR_DIR"] = str(_base / _worker)
