"""The disk full, or the media folder unwritable, during a render: the job fails with a
clear error naming the cause, and nothing half-written is left under the media folder.

Three ways to make writes fail, all against a real worker process:

* a file-size limit on the worker (``RLIMIT_FSIZE``: writes fail with ``EFBIG``), the
  "disk full" of one process, available everywhere;
* a tiny tmpfs mounted over the experiment's stimulus folder (``ENOSPC``), a real full
  file system; needs the right to mount, skipped without it;
* an output folder the worker may not write (``EACCES``); root writes through any mode
  bits, so a root worker then runs without ``CAP_DAC_OVERRIDE``.
"""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import pytest

from tests.faults.conftest import Stack, media_leftovers, wav_is_complete

pytestmark = pytest.mark.integration

#: No job queued or running: a failed model job leaves its item job pending.
SETTLED = {"done", "failed", "pending"}


def assert_clear_write_error(error: str, cause: str) -> None:
    """The researcher reads that the result could not be written, and why; not a stack trace."""
    assert "could not write" in error and cause in error, f"unclear error for a failed write ({cause}): {error!r}"
    assert "Traceback" not in error, f"a failed write was reported as a crash: {error!r}"


def assert_nothing_half_written(stack: Stack, experiment: int) -> None:
    """No temp file anywhere, every WAV complete, and no stimulus row for the experiment."""
    assert media_leftovers(stack.media) == []
    for path in stack.media.rglob("*.wav"):
        assert wav_is_complete(path), f"cut-short file left at {path}"
    assert stack.stimuli(experiment) == []


def test_file_size_limit_fails_the_model_job_cleanly(fault_stack: Stack, tmp_path):
    s = fault_stack
    exp = s.build(tmp_path, excerpts=1, seconds=1.0, title="File size limit", render=True)["experiment"]
    limit = 64 * 1024  # a 1 s float render at 44.1 kHz is about 176 kB

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    worker = s.worker(preexec=limit_file_size)
    jobs = {j["kind"]: j for j in s.wait_for_jobs(exp, SETTLED, timeout=120, worker=worker)}
    assert jobs["model"]["status"] == "failed" and jobs["model"]["output_file"] == ""
    assert jobs["item"]["status"] == "pending"
    # Nothing left to run: the experiment is editable again, the failure listed (not stranded).
    assert s.experiment_status(exp) == "draft"
    assert not list((s.media / "renders" / f"e{exp}").glob("*"))
    assert_nothing_half_written(s, exp)
    assert_clear_write_error(jobs["model"]["error"], "File too large")


@pytest.fixture
def tiny_filesystem():
    """Mount a tmpfs of a given size over a folder; unmounted at the end."""
    mounted: list[Path] = []

    def mount(folder: Path, size: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_full_disk_fails_the_item_job_cleanly_and_a_retry_completes(fault_stack: Stack, tiny_filesystem, tmp_path):
    s = fault_stack
    exp = s.build(tmp_path, excerpts=1, seconds=1.0, title="Disk full")["experiment"]
    # Room for one 24-bit stimulus (about 144 kB) but not for the next: the second write runs out mid-file.
    stimuli = tiny_filesystem(s.media / "stimuli" / f"e{exp}", "200k")
    s.scenario("render", experiment=exp)
    worker = s.worker()
    jobs = {j["kind"]: j for j in s.wait_for_jobs(exp, {"failed", "done"}, timeout=120, worker=worker)}
    assert jobs["model"]["status"] == "done" and jobs["item"]["status"] == "failed", jobs
    assert s.experiment_status(exp) == "draft"
    assert_nothing_half_written(s, exp)
    error = jobs["item"]["error"]

    # With space again, the researcher's retry renders the item and the experiment can open.
    subprocess.run(["umount", "-l", str(stimuli)], check=True)
    s.scenario("retry", job=jobs["item"]["id"])
    jobs = {j["kind"]: j for j in s.wait_for_jobs(exp, {"failed", "done"}, timeout=120, worker=worker)}
    assert jobs["item"]["status"] == "done", jobs
    assert s.experiment_status(exp) == "ready" and len(s.stimuli(exp)) == 4
    assert media_leftovers(s.media) == []
    assert_clear_write_error(error, "No space left on device")


def test_unwritable_output_folder_fails_the_model_job_cleanly(fault_stack: Stack, tmp_path):
    s = fault_stack
    exp = s.build(tmp_path, excerpts=1, seconds=1.0, title="Unwritable", render=True)["experiment"]
    renders = s.media / "renders" / f"e{exp}"
    renders.mkdir(parents=True)
    renders.chmod(0o555)
    prefix: list[str] = []
    if os.geteuid() == 0:
        # Root writes through any mode bits; without CAP_DAC_OVERRIDE the owner's bits apply to it too.
        prefix = ["setpriv", "--bounding-set=-dac_override", "--inh-caps=-dac_override", "--"]
        probe = subprocess.run([*prefix, "sh", "-c", f"test ! -w {renders}"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip("cannot drop CAP_DAC_OVERRIDE here, so root would write into the folder anyway")
    worker = s.worker(prefix=prefix)
    jobs = {j["kind"]: j for j in s.wait_for_jobs(exp, SETTLED, timeout=120, worker=worker)}
    assert jobs["model"]["status"] == "failed" and jobs["item"]["status"] == "pending", jobs
    assert list(renders.iterdir()) == []
    assert_nothing_half_written(s, exp)
    assert_clear_write_error(jobs["model"]["error"], "Permission denied")
    renders.chmod(0o755)
