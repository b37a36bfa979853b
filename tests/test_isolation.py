"""tests/isolation.py: each pytest-xdist process on a Redis database of its own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.isolation import REDIS_DATABASES, redis_url_for
from tests.paths import REPO


@pytest.mark.parametrize(
    "url, worker, want",
    [
        ("redis://127.0.0.1:6379/0", "gw0", "redis://127.0.0.1:6379/1"),
        ("redis://127.0.0.1:6379", "gw2", "redis://127.0.0.1:6379/3"),
        ("redis://127.0.0.1:6379/", "gw1", "redis://127.0.0.1:6379/2"),
        (
            "rediss://user:secret@cache:6380/5?ssl_cert_reqs=none",
            "gw3",
            "rediss://user:secret@cache:6380/4?ssl_cert_reqs=none",
        ),
    ],
)
def test_each_worker_gets_its_own_database_number(url, worker, want):
    assert redis_url_for(url, worker) == want
    assert redis_url_for(redis_url_for(url, worker), worker) == want  # applying it twice changes nothing


def test_more_workers_than_databases_is_refused():
    with pytest.raises(RuntimeError, match="only 16 databases"):
        redis_url_for("redis://h:1/0", f"gw{REDIS_DATABASES - 1}")


def test_the_plugin_moves_broker_cache_and_var_dir_but_not_a_filesystem_broker(tmp_path):
    env = {
        **os.environ,
        "PYTEST_XDIST_WORKER": "gw1",
        "VAR_DIR": str(tmp_path),
        "CELERY_BROKER_URL": "redis://127.0.0.1:7000/0",
        "CACHE_URL": "redis://127.0.0.1:7001",
    }
    code = (
        "import os, tests.isolation; "
        "print(os.environ['VAR_DIR'], os.environ['CELERY_BROKER_URL'], os.environ['CACHE_URL'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(tmp_path / "gw1"), "redis://127.0.0.1:7000/2", "redis://127.0.0.1:7001/2"]
    env["CELERY_BROKER_URL"] = "filesystem://"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == "filesystem://"
