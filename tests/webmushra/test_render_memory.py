"""A render that runs out of memory fails its job once, with a reason, and is not retried;
a render worker caps its own address space at ``RENDER_MEMORY_MB``. Jobs run in this
process; the cap is checked in a fresh one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.paths import REPO
from webmushra import jobs
from webmushra.models import RenderJob
from webmushra.services import rendering


@pytest.mark.parametrize(
    "error",
    [MemoryError(), torch.OutOfMemoryError("DefaultCPUAllocator: not enough memory: you tried to allocate 9 GB")],
    ids=["MemoryError", "torch.OutOfMemoryError"],
)
def test_a_job_out_of_memory_fails_once_with_the_reason_and_is_not_retried(
    build_experiment, settings, monkeypatch, error
) -> None:
    from modelrunner import policy

    settings.RENDER_MEMORY_MB = 512
    exp = build_experiment(n_excerpts=1, seconds=1.0, training_excerpt=False)
    rendering.start_render(experiment=exp)
    job = RenderJob.objects.get(experiment=exp, kind=RenderJob.Kind.MODEL)

    def exhausted(*args, **kwargs):
        raise error

    sent: list[int] = []
    monkeypatch.setattr(policy, "render_excerpt", exhausted)
    monkeypatch.setattr(rendering, "_send", lambda ids, kind: sent.extend(ids))
    assert jobs.run_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.status == RenderJob.Status.FAILED and job.attempts == 1
    assert job.error.startswith(
        "out of memory: rendering needed more than the worker's cap of 512 MB (RENDER_MEMORY_MB)"
    )
    assert "not retried" in job.error and "Traceback" not in job.error
    assert sent == []
    rendering.reap_stale_jobs()
    job.refresh_from_db()
    assert job.status == RenderJob.Status.FAILED and job.attempts == 1 and sent == []


def test_an_ordinary_bug_still_keeps_its_trace(build_experiment, monkeypatch) -> None:
    """The out-of-memory branch takes only allocation failures."""
    from modelrunner import policy

    exp = build_experiment(n_excerpts=1, seconds=1.0, training_excerpt=False)
    rendering.start_render(experiment=exp)
    job = RenderJob.objects.get(experiment=exp, kind=RenderJob.Kind.MODEL)
    monkeypatch.setattr(policy, "render_excerpt", lambda *a, **k: 1 / 0)
    assert jobs.run_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.error.startswith("ZeroDivisionError") and "Traceback" in job.error


_WORKER = r"""
import json, resource
import django
django.setup()
import numpy as np
from webmushra import tasks
before = resource.getrlimit(resource.RLIMIT_AS)[0]
tasks.cap_memory()
tasks.cap_memory()  # once per process: a second call changes nothing
after = resource.getrlimit(resource.RLIMIT_AS)[0]
try:
    np.ones(1 << 28)  # 2 GB
    big = "allocated"
except MemoryError:
    big = "MemoryError"
print(json.dumps({"before": before, "after": after, "big": big}))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("megabytes", "capped"), [("300", True), ("0", False)])
def test_a_render_worker_caps_its_address_space(tmp_path, megabytes: str, capped: bool) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "VAR_DIR": str(tmp_path),
        "RENDER_MEMORY_MB": megabytes,
    }
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", _WORKER], cwd=REPO, capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if capped:
        assert out["after"] != out["before"] and out["big"] == "MemoryError", out
    else:
        assert out["after"] == out["before"] and out["big"] == "allocated", out
