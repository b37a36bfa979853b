"""One ``VAR_DIR`` per pytest-xdist worker (loaded with ``-p tests.isolation``, before Django's settings).

Each worker process gets ``$VAR_DIR/<worker id>`` (``gw0``, ``gw1``...), so its filesystem
broker queue, file cache, beat schedules and SQLite test database are its own: a Celery
worker one test process starts never takes another process's messages. With a Redis
broker or cache (``make test``'s first stage), each worker process uses a database number
of its own on that server (``gw0``: 1, ``gw1``: 2...); PostgreSQL test databases already
get the worker's name from pytest-django. Without xdist, or in xdist's controller, nothing
changes.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

#: Redis servers have 16 databases (0-15) unless configured otherwise; 0 stays the controller's.
REDIS_DATABASES = 16


def redis_url_for(url: str, worker: str) -> str:
    """``url`` (a ``redis://`` or ``rediss://`` URL) on the database number of ``worker`` (``gwN``)."""
    number = int(worker.removeprefix("gw")) + 1
    if number >= REDIS_DATABASES:
        raise RuntimeError(f"pytest-xdist worker {worker}: Redis has only {REDIS_DATABASES} databases")
    return urlsplit(url)._replace(path=f"/{number}").geturl()


_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker:
    _base = Path(os.environ.get("VAR_DIR") or Path(__file__).resolve().parents[1] / "var")
    if _base.name != _worker:
        os.environ["VAR_DIR"] = str(_base / _worker)
    for _name in ("CELERY_BROKER_URL", "CACHE_URL"):
        _url = os.environ.get(_name, "")
        if _url.startswith(("redis://", "rediss://")):
            os.environ[_name] = redis_url_for(_url, _worker)  # the same number however often it runs
