"""Settings come from the environment alone; the science packages stay free of Django."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.paths import REPO

PROBE = r"""
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
from django.conf import settings
import django
django.setup()
from django.db import connection
journal = busy = None
if connection.vendor == "sqlite":
  with connection.cursor() as cur:
    cur.execute("PRAGMA journal_mode")
    journal = cur.fetchone()[0]
    cur.execute("PRAGMA busy_timeout")
    busy = cur.fetchone()[0]
from config.celery import app
print(json.dumps({
    "engine": settings.DATABASES["default"]["ENGINE"], "journal": journal, "busy": busy,
    "broker": app.conf.broker_url, "debug": settings.DEBUG, "secret": settings.SECRET_KEY,
    "media": str(settings.MEDIA_ROOT), "acks_late": app.conf.task_acks_late,
    "reject": app.conf.task_reject_on_worker_lost, "prefetch": app.conf.worker_prefetch_multiplier,
    "serializer": app.conf.task_serializer, "accept": list(app.conf.accept_content),
    "soft": app.conf.task_soft_time_limit, "hard": app.conf.task_time_limit,
    "visibility": app.conf.broker_transport_options.get("visibility_timeout"),
    "routes": app.conf.task_routes, "beat": {k: v["task"] for k, v in app.conf.beat_schedule.items()},
}))
"""


def probe(tmp_path, **env) -> dict:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY", "DEBUG", "MEDIA_ROOT", "VAR_DIR"}
    }
    clean.update(VAR_DIR=str(tmp_path), **env)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=clean, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_defaults_need_no_server(tmp_path):
    s = probe(tmp_path)
    assert s["engine"] == "django.db.backends.sqlite3" and s["journal"] == "wal" and s["busy"] == 20000
    assert s["broker"].startswith("filesystem://") and (tmp_path / "broker" / "queue").is_dir()
    assert s["debug"] is False and s["media"] == str(tmp_path / "media")
    # The secret key is generated once and kept.
    key = (tmp_path / "secret_key").read_text().strip()
    assert s["secret"] == key and len(key) >= 50
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert probe(tmp_path)["secret"] == key


@pytest.mark.slow
def test_celery_is_configured_for_reliable_jobs(tmp_path):
    s = probe(tmp_path)
    assert s["acks_late"] is True and s["reject"] is True and s["prefetch"] == 1
    assert s["serializer"] == "json" and s["accept"] == ["json"]
    assert 0 < s["soft"] < s["hard"]
    assert s["routes"]["modelrunner.tasks.render_job"]["queue"] == "render"
    assert "modelrunner.tasks.reap_stale_jobs" in s["beat"].values()


@pytest.mark.slow
def test_urls_switch_to_postgres_and_redis_without_code_change(tmp_path):
    s = probe(
        tmp_path,
        DATABASE_URL="postgres://u@127.0.0.1:1/none",
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
        DEBUG="1",
        SECRET_KEY="x" * 60,
    )
    # Nothing listens there: only the parsed settings are checked (the suite itself runs on both).
    assert s["engine"] == "django.db.backends.postgresql"
    assert s["broker"] == "redis://127.0.0.1:1/0" and s["visibility"] > s["hard"]
    assert s["debug"] is True and s["secret"] == "x" * 60


@pytest.mark.slow
def test_science_packages_import_nothing_from_django():
    code = (
        "import sys, importlib, pkgutil\n"
        "import modelrunner, evaluation\n"
        "for pkg in (modelrunner, evaluation):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if not m.name.endswith('__main__'):\n"
        "            importlib.import_module(m.name)\n"
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "print(bad)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_layout():
    for path in [
        "manage.py",
        "config/settings.py",
        "config/urls.py",
        "config/celery.py",
        "config/wsgi.py",
        "webmushra",
        "modelrunner",
        "evaluation",
        "tests",
        "bench",
        "docker",
        "requirements.txt",
        "Makefile",
        "README.md",
        ".ci/run",
    ]:
        assert (REPO / path).exists(), path
    req = (REPO / "requirements.txt").read_text()
    assert "torch==2.13.0" in req
    readme = (REPO / "README.md").read_text()
    assert readme.index("make run") < readme.index("make test") < 400


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("RENDER_MAX_ATTEMPTS", "three", "whole number"),
        ("DEBUG", "ture", "true, yes, on"),
        ("SERVE_MEDIA_WITH", "ngnix", "django, nginx"),
        ("REAPER_INTERVAL_SECONDS", "nan", "finite number"),
        ("RENDER_WORKER_NICE", "20", "0 (none) to 19"),
        ("RENDER_DEVICE", "gpu", "auto, cpu, cuda or cuda:N"),
        ("RENDER_DEVICE", "cuda:x", "auto, cpu, cuda or cuda:N"),
    ],
)
def test_an_invalid_setting_stops_the_start_naming_the_variable(tmp_path, name, value, accepted):
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SERVE_MEDIA_WITH", "VAR_DIR"}}
    env.update({"VAR_DIR": str(tmp_path), name: value})
    out = subprocess.run(
        [sys.executable, "-c", "import config.settings"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2, (out.returncode, out.stderr[-500:])
    assert f"{name}={value!r} is not valid" in out.stderr and accepted in out.stderr
    assert "Traceback" not in out.stderr
