"""Render workers and ``RENDER_DEVICE``: the job renders where the setting says and its report
names the device; a worker set to a GPU it lacks stops at start; a GPU worker skips the
address-space cap (``RENDER_MEMORY_MB``), which CUDA cannot live with."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest
import torch

from modelrunner import device
from tests.paths import REPO
from webmushra import jobs, tasks
from webmushra.models import RenderJob
from webmushra.services import rendering

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")


def test_a_render_job_records_the_device_it_rendered_on(build_experiment, settings, monkeypatch) -> None:
    settings.RENDER_DEVICE = "cpu"
    exp = build_experiment(n_excerpts=1, seconds=1.0, training_excerpt=False)
    rendering.start_render(experiment=exp)
    job = RenderJob.objects.get(experiment=exp, kind=RenderJob.Kind.MODEL)
    monkeypatch.setattr(rendering, "_send", lambda ids, kind: None)
    assert jobs.run_job(job.pk) == "done"
    job.refresh_from_db()
    assert job.report["model"]["device"] == "cpu"


@pytest.mark.parametrize(("where", "capped"), [("cpu", True), ("cuda", False)])
def test_a_gpu_worker_skips_the_address_space_cap_with_a_note(settings, monkeypatch, caplog, where, capped) -> None:
    """No GPU here: ``resolve`` answers as on a GPU host; the cap itself is tested in test_render_memory."""
    settings.RENDER_MEMORY_MB = 512
    settings.RENDER_DEVICE = where
    calls: list[int] = []
    monkeypatch.setattr(device, "resolve", lambda value=None, source=None: torch.device(value))
    monkeypatch.setattr("modelrunner.limits.cap_address_space", calls.append)
    monkeypatch.setattr(tasks, "_capped_pid", None)
    with caplog.at_level(logging.WARNING, logger="webmushra.tasks"):
        tasks.cap_memory()
    if capped:
        assert calls == [512 * 1024 * 1024] and not caplog.records
    else:
        assert calls == []
        assert "RENDER_MEMORY_MB=512 is not applied: this worker renders on cuda" in caplog.text
        assert "container a memory limit" in caplog.text


@pytest.mark.slow
@NO_CUDA
def test_a_render_worker_set_to_cuda_without_one_stops_at_start(tmp_path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "VAR_DIR": str(tmp_path),
        "RENDER_DEVICE": "cuda",
    }
    for name in ("DATABASE_URL", "CELERY_BROKER_URL"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "render", "-n", "render@device-test"]
        + ["--pool", "solo", "--loglevel", "INFO"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert re.search(r"configuration error: RENDER_DEVICE=cuda but no CUDA device is available here", done.stderr)
    assert "Traceback" not in done.stderr


def test_the_deployment_files_agree_on_the_gpu_worker() -> None:
    """docker/ and docs/deployment.md name the same settings for a GPU render worker."""
    env = (REPO / "docker" / "env.example").read_text()
    value = re.search(r"^RENDER_DEVICE=(.*)$", env, flags=re.MULTILINE)
    assert value is not None and device.parse(value.group(1)) == "auto"
    compose = (REPO / "docker" / "compose.yml").read_text()
    guide = (REPO / "docs" / "deployment.md").read_text()
    for text in (compose, guide):
        assert "RENDER_DEVICE=cuda" in text and "RENDER_MEMORY_MB" in text
    assert "memory: 16G" in compose and "python -m bench.bench_gpu" in guide
