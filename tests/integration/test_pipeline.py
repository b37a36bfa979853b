"""End to end through real processes: upload, render by a real Celery worker, rate over HTTP.

Runs on whatever ``DATABASE_URL`` / ``CELERY_BROKER_URL`` say: ``make test`` runs it once
on SQLite with the embedded (filesystem) broker and once on PostgreSQL with Redis.
"""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import timedelta

import numpy as np
import pytest
import soundfile as sf
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from tests.conftest import wait_for
from tests.trials import save_body
from webmushra import messaging
from webmushra.models import (
    ConditionKind,
    Experiment,
    Participant,
    Rating,
    RenderJob,
    Stimulus,
    TrialResponse,
)
from webmushra.services import experiments, rendering, sessions

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def broker_kind() -> str:
    return settings.CELERY_BROKER_URL.split(":", 1)[0]


def render_with_worker(exp, start_worker, timeout=240) -> Experiment:
    rendering.start_render(experiment=exp)
    worker = start_worker()

    def ready():
        exp.refresh_from_db()
        failed = RenderJob.objects.filter(experiment=exp, status=RenderJob.Status.FAILED).first()
        assert failed is None, f"job failed: {failed.error}\n{worker.log[-3000:]}"
        return exp.status == Experiment.Status.READY

    wait_for(ready, timeout=timeout, what=f"rendering on the {broker_kind()} broker")
    return exp


def test_render_by_real_worker_and_rate_over_http(build_experiment, start_worker, client, settings):
    exp = build_experiment(n_excerpts=2, seconds=2.0)
    render_with_worker(exp, start_worker)

    # Every (condition, excerpt) cell has one stimulus: valid audio, one format, one byte length per trial.
    conditions = list(exp.conditions.all())
    assert {c.kind for c in conditions} == {
        ConditionKind.MODEL,
        ConditionKind.HIDDEN_REFERENCE,
        ConditionKind.ANCHOR_35,
        ConditionKind.ANCHOR_70,
    }
    stimuli = list(Stimulus.objects.filter(experiment=exp))
    assert len(stimuli) == len(conditions) * exp.excerpts.count()
    for excerpt in exp.excerpts.all():
        sizes = set()
        for s in stimuli:
            if s.excerpt_id != excerpt.pk:
                continue
            path = settings.MEDIA_ROOT / s.file
            info = sf.info(str(path))
            data, sr = sf.read(str(path), dtype="float32")
            assert sr == exp.sample_rate == 48000 and info.subtype == "PCM_24"
            assert data.shape[0] == round(excerpt.frames * 48000 / excerpt.sample_rate)
            assert np.isfinite(data).all() and 0 < np.abs(data).max() < 1.0
            sizes.add(path.stat().st_size)
        assert len(sizes) == 1, sizes
    # Model conditions carry objective metrics computed by the worker.
    model_stim = next(s for s in stimuli if s.condition.kind == ConditionKind.MODEL)
    assert set(model_stim.metrics) >= {"esr", "mr_stft", "delta_lufs"} and model_stim.metrics["esr"] > 0
    assert all(j.status == "done" and j.attempts == 1 for j in RenderJob.objects.filter(experiment=exp))

    # A participant rates every trial over HTTP.
    experiments.open_experiment(experiment=exp)
    r = client.post(
        reverse("participant:landing", args=[exp.public_token]) + "?PROLIFIC_PID=abc123&STUDY_ID=s1&SESSION_ID=x9"
    )
    assert r.status_code == 302
    participant = Participant.objects.get(experiment=exp)
    assert participant.prolific_pid == "abc123"
    client.post(reverse("participant:consent", args=[participant.token]), {"agree": "yes"})
    client.post(reverse("participant:level", args=[participant.token]), {"gain_db": "0"})
    participant.refresh_from_db()
    sent: dict[tuple[int, str], int] = {}
    rng = np.random.default_rng(0)
    for index, entry in enumerate(participant.plan):
        url = reverse("participant:trial", args=[participant.token, index + 1])
        page = client.get(url)
        assert page.status_code == 200, page.content[:500]
        data = page.context["trial_data"]
        assert ("labels" in data) == bool(entry["training"])
        ratings = {s["key"]: int(rng.integers(0, 101)) for s in data["signals"]}
        ratings[data["signals"][0]["key"]] = 100  # the rules ask for one signal at 100
        # The audio fetched through the stimulus view, the time gone by, the player's log.
        body = save_body(participant, index, ratings, client=client)
        assert body["idempotency_key"] == data["idempotency_key"]
        r = client.post(url, json.dumps(body), content_type="application/json")
        assert r.status_code == 200 and r.json()["saved"] is True, r.content
        # A replay is acknowledged and stores nothing new.
        r2 = client.post(url, json.dumps(body), content_type="application/json")
        assert r2.status_code == 200 and r2.json()["replayed"] is True
        if not entry["training"]:
            for key, cid in sessions.signal_keys(entry).items():
                sent[(entry["trial"], cid)] = ratings[key]
    stored = {(r.trial_id, r.condition_id): r.score for r in Rating.objects.filter(participant=participant)}
    assert stored == sent
    assert TrialResponse.objects.filter(participant=participant).count() == len(participant.plan)

    # The CSV export has exactly those ratings, with the analysis labels.
    client.force_login(exp.owner)
    csv_text = client.get(reverse("researcher:ratings_csv", args=[exp.pk])).content.decode()
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert len(rows) == len(sent)
    labels = {c.pk: c.label for c in conditions}
    expected = sorted((labels[cid], score) for (tid, cid), score in sent.items())
    assert sorted((row["condition"], int(row["rating"])) for row in rows) == expected


def test_job_is_never_sent_before_its_row_is_committed(build_experiment, broker_is_empty):
    from django.db import transaction

    exp = build_experiment(n_excerpts=1, seconds=1.0, training_excerpt=False)
    # The queue starts empty (tests/conftest.py empties it before each test); count from here anyway.
    before = broker_is_empty("render")
    with transaction.atomic():
        jobs = rendering.start_render(experiment=exp)
        assert len(jobs) == 1
        # Inside the transaction the row is not committed: nothing may be on the broker yet.
        assert broker_is_empty("render") == before
    assert broker_is_empty("render") == before + 1


@pytest.mark.skipif(broker_kind() != "filesystem", reason="the filesystem broker polls; Redis waits on the queue")
def test_a_worker_takes_many_short_jobs_a_second_from_the_filesystem_broker(start_worker, broker_is_empty):
    """kombu's filesystem transport pauses its polling interval after each message while one is
    unacknowledged; at its default (1 s) 40 short jobs took over 40 s (config/settings.py)."""
    worker = start_worker()
    # Jobs with no row: each is claimed in a query, skipped and acknowledged.
    messaging.send_on_commit(messaging.RENDER_JOB, range(2_100_000_000, 2_100_000_040))
    started = time.monotonic()
    wait_for(lambda: broker_is_empty("render") == 0, timeout=60, interval=0.1, what="the queue to drain")
    wait_for(lambda: worker.log.count("succeeded") >= 40, timeout=30, interval=0.1, what="40 tasks done")
    took = time.monotonic() - started
    assert worker.log.count("'skipped'") == 40, worker.log[-2000:]
    assert took < 20, f"40 short jobs took {took:.1f} s: the worker waits between messages"


def test_a_job_can_be_claimed_once(build_experiment):
    exp = build_experiment(n_excerpts=1, seconds=1.0, training_excerpt=False)
    job = rendering.start_render(experiment=exp)[0]
    first = rendering.claim_job(job_id=job.pk, worker="a")
    second = rendering.claim_job(job_id=job.pk, worker="b")
    assert first is not None and second is None
    job.refresh_from_db()
    assert job.status == "running" and job.worker == "a" and job.attempts == 1


def test_sigkilled_worker_job_is_reaped_and_completes_exactly_once(build_experiment, start_worker, settings):
    exp = build_experiment(n_excerpts=1, seconds=5.0, training_excerpt=False)
    rendering.start_render(experiment=exp)
    job = RenderJob.objects.get(experiment=exp, kind="model")
    worker = start_worker()
    wait_for(
        lambda: RenderJob.objects.filter(pk=job.pk, status="running").exists(),
        timeout=120,
        interval=0.01,
        what="the worker to claim the job",
    )
    worker.kill()
    job.refresh_from_db()
    assert job.status == "running", f"the job finished before the kill ({job.status}); make it longer"
    assert not Stimulus.objects.filter(experiment=exp).exists()

    # Not yet stale: the reaper leaves it alone.
    assert rendering.reap_stale_jobs()["requeued"] == 0
    # Once the heartbeat is older than RENDER_STALE_SECONDS the reaper requeues it.
    from django.core.management import call_command

    settings.RENDER_STALE_SECONDS = 0
    wait_for(
        lambda: RenderJob.objects.get(pk=job.pk).heartbeat < timezone.now(),
        timeout=10,
        interval=0.01,
        what="the heartbeat to be in the past",
    )
    out = io.StringIO()
    call_command("reap_stale_jobs", stdout=out)
    assert "requeued: 1" in out.getvalue()
    job.refresh_from_db()
    assert job.status == "queued" and job.attempts == 1 and "no heartbeat" in job.error
    settings.RENDER_STALE_SECONDS = 120

    start_worker()
    wait_for(
        lambda: Experiment.objects.get(pk=exp.pk).status == Experiment.Status.READY,
        timeout=240,
        what="the requeued job to complete",
    )
    job.refresh_from_db()
    assert job.status == "done" and job.attempts == 2
    assert Stimulus.objects.filter(experiment=exp).count() == exp.conditions.count()
    # Exactly once: no second attempt ran after completion, and no stray temp files were left.
    assert RenderJob.objects.get(pk=job.pk).attempts == 2
    leftovers = [p for p in settings.MEDIA_ROOT.rglob(".tmp-*")]
    assert leftovers == []


def test_reaper_gives_up_after_the_attempts_cap(build_experiment, settings):
    exp = build_experiment(n_excerpts=1, seconds=1.0, training_excerpt=False)
    job = rendering.start_render(experiment=exp)[0]
    RenderJob.objects.filter(pk=job.pk).update(
        status="running",
        attempts=settings.RENDER_MAX_ATTEMPTS,
        heartbeat=timezone.now() - timedelta(hours=1),
        worker="w1",
    )
    counts = rendering.reap_stale_jobs()
    job.refresh_from_db()
    assert counts["failed"] == 1 and job.status == "failed"
    assert f"{settings.RENDER_MAX_ATTEMPTS} times" in job.error
