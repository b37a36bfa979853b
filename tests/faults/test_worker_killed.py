"""A render worker SIGKILLed mid-job: the job is requeued and completes once, and no
partial stimulus is ever served."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.faults.conftest import Client, Stack, media_leftovers, start_session, trial_data, wav_is_complete

pytestmark = pytest.mark.integration


class MediaWatcher(threading.Thread):
    """Samples an experiment's output folders while it renders: every file that appears under
    its final name must be a complete WAV at that moment."""

    def __init__(self, folders: list[Path]) -> None:
        super().__init__(daemon=True)
        self.folders = folders
        self.incomplete: list[str] = []
        self.seen: set[str] = set()
        self.temp_seen: set[str] = set()
        self.running = True

    def run(self) -> None:
        while self.running:
            for folder in self.folders:
                for path in list(folder.glob("*")) if folder.is_dir() else []:
                    try:
                        if path.name.startswith(".tmp-"):
                            self.temp_seen.add(path.name)
                        elif path.name not in self.seen:
                            if not wav_is_complete(path):
                                self.incomplete.append(path.name)
                            self.seen.add(path.name)
                    except FileNotFoundError:  # a temp file renamed away between listing and reading
                        pass
            time.sleep(0.005)  # the watcher's sampling interval while the render writes

    def stop(self) -> None:
        self.running = False
        self.join(5)


def test_killed_worker_job_is_requeued_completes_once_and_nothing_partial_is_served(fault_stack: Stack, tmp_path):
    s = fault_stack
    built = s.build(tmp_path, excerpts=1, seconds=30.0, title="Killed mid-job")
    exp, public = built["experiment"], built["public_token"]
    renders, stimuli = s.media / "renders" / f"e{exp}", s.media / "stimuli" / f"e{exp}"
    watcher = MediaWatcher([renders, stimuli])
    watcher.start()
    participant = Client(s.web_url)

    s.scenario("render", experiment=exp)
    # A participant arriving during the render finds no test: stimuli are only reachable through
    # tokens made when a session starts, and a session only starts on an open (rendered) experiment.
    assert participant.get(f"/t/{public}/").status == 404
    assert participant.post_form(f"/t/{public}/", {}).status == 404
    # PyTorch's kernels, so that the render lasts long enough to be killed in: the compiled
    # kernel renders this 30 s excerpt in about 0.25 s, in a few progress steps.
    worker = s.worker(MODELRUNNER_NATIVE="0")
    model_job = next(j for j in s.jobs(exp) if j["kind"] == "model")
    # Killed while rendering: claimed and past loading the checkpoint (progress 0.05), not yet written.
    wait_for(
        lambda: s.sql(
            "SELECT progress FROM webmushra_renderjob WHERE id = %s AND status = 'running' AND progress > 0.05",
            (model_job["id"],),
        ),
        timeout=120,
        interval=0.01,
        what="the worker to start rendering",
    )
    worker.kill()

    jobs = {j["kind"]: j for j in s.jobs(exp)}
    assert jobs["model"]["status"] == "running" and jobs["model"]["attempts"] == 1, (
        f"the job was no longer running when the worker was killed ({jobs['model']}); make the excerpt longer"
    )
    assert jobs["item"]["status"] == "pending"
    assert s.stimuli(exp) == [] and not list(stimuli.glob("*.wav"))
    assert (
        s.sql(
            "SELECT count(*) FROM webmushra_stimulustoken t JOIN webmushra_stimulus st ON st.id = t.stimulus_id "
            "WHERE st.experiment_id = %s",
            (exp,),
        )[0][0]
        == 0
    )
    assert participant.get(f"/t/{public}/").status == 404

    # The operator's reaper (the same code beat runs) requeues the job once its heartbeat is stale:
    # older than the RENDER_STALE_SECONDS=1 it runs with, by the database's clock (this machine's).
    wait_for(
        lambda: s.sql(
            "SELECT heartbeat < now() - interval '1.2 seconds' FROM webmushra_renderjob WHERE id = %s",
            (model_job["id"],),
        )[0][0],
        timeout=30,
        interval=0.1,
        what="the killed worker's heartbeat to go stale",
    )
    reaped = s.manage("reap_stale_jobs", RENDER_STALE_SECONDS="1")
    assert reaped.returncode == 0 and "requeued: 1" in reaped.stdout, reaped.stdout + reaped.stderr
    requeued = next(j for j in s.jobs(exp) if j["kind"] == "model")
    assert requeued["status"] == "queued" and "no heartbeat" in requeued["error"]

    worker = s.worker()
    jobs = s.wait_for_jobs(exp, {"done", "failed"}, timeout=180, worker=worker)
    watcher.stop()
    by_kind = {j["kind"]: j for j in jobs}
    assert by_kind["model"]["status"] == "done" and by_kind["model"]["attempts"] == 2, by_kind
    assert by_kind["item"]["status"] == "done" and by_kind["item"]["attempts"] == 1, by_kind
    assert s.experiment_status(exp) == "ready"

    rows = s.stimuli(exp)
    conditions = s.sql("SELECT id FROM webmushra_condition WHERE experiment_id = %s ORDER BY id", (exp,))
    assert [c for _, c, _, _ in rows] == [c for (c,) in conditions]  # exactly one stimulus per cell
    for _, _, rel, size in rows:
        assert re.fullmatch(rf"stimuli/e{exp}/x\d+_c\d+\.wav", rel), rel
        path = s.media / rel
        assert wav_is_complete(path) and path.stat().st_size == size
    assert len({size for *_, size in rows}) == 1
    assert watcher.incomplete == [], (
        f"files seen under their final name before they were complete: {watcher.incomplete}"
    )
    assert media_leftovers(s.media / "renders") + media_leftovers(s.media / "stimuli") == []

    # Once open, a participant hears exactly the stored files.
    s.scenario("open", experiment=exp)
    client, token = start_session(s, public)
    urls = [signal["url"] for signal in trial_data(client.get(f"/p/{token}/trial/1/"))["signals"]]
    assert len(urls) == len(rows)
    on_disk = {(s.media / rel).read_bytes() for _, _, rel, _ in rows}
    for url in urls:
        assert client.get(url).body in on_disk
