"""The render-job lifecycle: queue, claim, heartbeat, complete, fail, retry and reap.

The database row is the truth; a broker message carries only its id (``webmushra.messaging``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F
from django.utils import timezone

from .. import messaging
from ..errors import ConflictError, ServiceError
from ..models import (
    Checkpoint,
    ConditionKind,
    Experiment,
    RenderJob,
    Report,
    Stimulus,
)
from .files import exists as stored_exists
from .files import local_copy, sweep_temp_files

log = logging.getLogger(__name__)


def render_device():
    """The device this process renders on: ``RENDER_DEVICE`` resolved here
    (``modelrunner.device.resolve``; ``auto`` is a GPU when there is one, else the CPU)."""
    from modelrunner import device

    return device.resolve(settings.RENDER_DEVICE)


def load_checkpoint_model(checkpoint: Checkpoint, *, device=None):
    """Load a stored checkpoint into an ``EffectModel`` (always through the safe loaders),
    onto ``device`` (default the CPU; a render job passes ``render_device()``)."""
    from modelrunner import formats

    # The loaders read local files: the stored checkpoint (and its config) are fetched from the
    # media storage for the load, which may run on another host than the upload did.
    with ExitStack() as stack:
        config = stack.enter_context(local_copy(checkpoint.config_file.name)) if checkpoint.config_file else None
        path = stack.enter_context(local_copy(checkpoint.file.name))
        return formats.load(path, sample_rate=checkpoint.sample_rate, config=config, device=device)


def _send(job_ids: Iterable[int], kind: str) -> None:
    """Send render-job messages after commit."""
    messaging.send_on_commit(messaging.RENDER_JOB if kind == RenderJob.Kind.MODEL else messaging.PREPARE_ITEM, job_ids)


@transaction.atomic
def start_render(*, experiment: Experiment, force: bool = False) -> list[RenderJob]:
    """Queue what is not rendered yet: a job per (model condition, excerpt) cell without a good
    render, and an item job (anchors, loudness, stimuli) per excerpt whose stimuli are missing
    or whose cells changed. Cells rendered before are kept, so adding a checkpoint renders only
    its cells. ``force``: render everything again."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if not experiment.is_editable:
        raise ConflictError(f"cannot render: the experiment is {experiment.get_status_display().lower()}")
    excerpts = list(experiment.excerpts.all())
    if not excerpts:
        raise ServiceError("add at least one excerpt before rendering")
    models = list(experiment.conditions.filter(kind=ConditionKind.MODEL))
    if not models and not experiment.conditions.filter(kind=ConditionKind.PRERENDERED).exists():
        raise ServiceError("add at least one model condition before rendering")
    prerendered = experiment.conditions.filter(kind=ConditionKind.PRERENDERED)
    for condition in prerendered:
        have = set(condition.prerendered_audio.values_list("excerpt_id", flat=True))
        lacking = [x.name for x in excerpts if x.pk not in have]
        if lacking:
            raise ServiceError(f"condition {condition.label!r} has no audio for {', '.join(lacking)}")
    if force:
        RenderJob.objects.filter(experiment=experiment).delete()
    rows = list(RenderJob.objects.filter(experiment=experiment, kind=RenderJob.Kind.MODEL))
    good = [j for j in rows if j.status == RenderJob.Status.DONE and j.output_file and stored_exists(j.output_file)]
    kept = {(j.condition_id, j.excerpt_id) for j in good}
    RenderJob.objects.filter(pk__in=[j.pk for j in rows if j not in good]).delete()
    now = timezone.now()
    model_jobs = [
        RenderJob(
            experiment=experiment,
            kind=RenderJob.Kind.MODEL,
            condition=c,
            excerpt=x,
            status=RenderJob.Status.QUEUED,
            queued_at=now,
        )
        for x in excerpts
        for c in models
        if (c.pk, x.pk) not in kept
    ]
    RenderJob.objects.bulk_create(model_jobs)
    # An excerpt needs its item job again when a cell of it is rendered anew, when its item job
    # did not finish, or when a condition has no stimulus for it yet (a new anchor, say).
    n_conditions = experiment.conditions.count()
    changed = {j.excerpt_id for j in model_jobs}
    done_items = set(
        RenderJob.objects.filter(
            experiment=experiment, kind=RenderJob.Kind.ITEM, status=RenderJob.Status.DONE
        ).values_list("excerpt_id", flat=True)
    )
    stimuli = {
        row["excerpt_id"]: row["n"]
        for row in Stimulus.objects.filter(experiment=experiment).values("excerpt_id").annotate(n=Count("id"))
    }
    redo = [x for x in excerpts if x.pk in changed or x.pk not in done_items or stimuli.get(x.pk) != n_conditions]
    RenderJob.objects.filter(experiment=experiment, kind=RenderJob.Kind.ITEM, excerpt__in=redo).delete()
    item_jobs = [
        RenderJob(
            experiment=experiment,
            kind=RenderJob.Kind.ITEM,
            excerpt=x,
            # An item job waits for its excerpt's model jobs; with none to wait for it starts at once.
            status=RenderJob.Status.PENDING if x.pk in changed else RenderJob.Status.QUEUED,
            queued_at=None if x.pk in changed else now,
        )
        for x in redo
    ]
    RenderJob.objects.bulk_create(item_jobs)
    experiment.status = Experiment.Status.RENDERING if (model_jobs or item_jobs) else Experiment.Status.READY
    experiment.save(update_fields=["status", "updated_at"])
    # The jobs sent now (item jobs that wait for their models are sent when those are done).
    sent = list(RenderJob.objects.filter(experiment=experiment, status=RenderJob.Status.QUEUED))
    _send([j.pk for j in sent if j.kind == RenderJob.Kind.MODEL], RenderJob.Kind.MODEL)
    _send([j.pk for j in sent if j.kind == RenderJob.Kind.ITEM], RenderJob.Kind.ITEM)
    return sent


@transaction.atomic
def cancel_render(*, experiment: Experiment) -> Experiment:
    """Stop rendering: queued, waiting and running jobs are cancelled (a running job stops at its
    next heartbeat and writes nothing); finished cells are kept for the next render."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if experiment.status != Experiment.Status.RENDERING:
        raise ConflictError(f"nothing to cancel: the experiment is {experiment.get_status_display().lower()}")
    RenderJob.objects.filter(
        experiment=experiment, status__in=RenderJob.ACTIVE_STATUSES | {RenderJob.Status.PENDING}
    ).update(status=RenderJob.Status.CANCELED, claim_token="", finished_at=timezone.now(), error="cancelled")
    experiment.status = Experiment.Status.DRAFT
    experiment.save(update_fields=["status", "updated_at"])
    return experiment


def _settle(experiment_id: int) -> None:
    """Once no job of a rendering experiment has work coming, its state follows from its jobs:
    every job done -> ready; a failure (or a job left waiting on one) -> draft, editable, with
    the failed cells and their reasons on the page, to fix, retry or render again."""
    jobs = RenderJob.objects.filter(experiment_id=experiment_id)
    if jobs.filter(status__in=RenderJob.ACTIVE_STATUSES).exists():
        return
    if jobs.filter(status=RenderJob.Status.PENDING, kind=RenderJob.Kind.ITEM).exists():
        # An item job waits on a model job: it can still run only if none of those failed.
        waiting = jobs.filter(status=RenderJob.Status.PENDING).values_list("excerpt_id", flat=True)
        if not jobs.filter(
            kind=RenderJob.Kind.MODEL,
            excerpt_id__in=list(waiting),
            status__in=[RenderJob.Status.FAILED, RenderJob.Status.CANCELED],
        ).exists():
            return
    done = not jobs.exclude(status=RenderJob.Status.DONE).exists()
    Experiment.objects.filter(pk=experiment_id, status=Experiment.Status.RENDERING).update(
        status=Experiment.Status.READY if done else Experiment.Status.DRAFT
    )


@dataclass
class Claim:
    job: RenderJob
    token: str


def claim_job(*, job_id: int, worker: str) -> Claim | None:
    """Claim a queued job with a conditional UPDATE; None when it is not ours to run."""
    token = secrets.token_hex(8)
    now = timezone.now()
    with transaction.atomic():
        claimed = RenderJob.objects.filter(pk=job_id, status=RenderJob.Status.QUEUED).update(
            status=RenderJob.Status.RUNNING,
            claim_token=token,
            worker=worker[:200],
            heartbeat=now,
            started_at=now,
            attempts=F("attempts") + 1,
            progress=0.0,
            error="",
        )
    if claimed != 1:
        return None
    return Claim(
        job=RenderJob.objects.select_related("experiment", "excerpt", "condition__checkpoint").get(pk=job_id),
        token=token,
    )


class JobLost(RuntimeError):
    """The job was taken back (reaped or reset) while this worker ran it."""


def heartbeat(*, claim: Claim, progress: float) -> None:
    updated = RenderJob.objects.filter(
        pk=claim.job.pk, claim_token=claim.token, status=RenderJob.Status.RUNNING
    ).update(heartbeat=timezone.now(), progress=max(0.0, min(1.0, float(progress))))
    if updated != 1:
        raise JobLost(f"render job {claim.job.pk} is no longer held by this worker")


def keep_alive(*, claim: Claim) -> bool:
    """Refresh a running job's heartbeat only (its progress stays); False once it is not ours."""
    return (
        RenderJob.objects.filter(pk=claim.job.pk, claim_token=claim.token, status=RenderJob.Status.RUNNING).update(
            heartbeat=timezone.now()
        )
        == 1
    )


def complete_model_job(*, claim: Claim, output_file: str, report: dict) -> None:
    with transaction.atomic():
        updated = RenderJob.objects.filter(
            pk=claim.job.pk, claim_token=claim.token, status=RenderJob.Status.RUNNING
        ).update(
            status=RenderJob.Status.DONE,
            progress=1.0,
            finished_at=timezone.now(),
            output_file=output_file,
            report=report,
            heartbeat=timezone.now(),
        )
        if updated != 1:
            raise JobLost(f"render job {claim.job.pk} is no longer held by this worker")
        _queue_ready_items(claim.job.excerpt_id)
        _settle(claim.job.experiment_id)


def _queue_ready_items(excerpt_id: int) -> None:
    """Queue the item job of an excerpt once all its model jobs are done."""
    if (
        RenderJob.objects.filter(excerpt_id=excerpt_id, kind=RenderJob.Kind.MODEL)
        .exclude(status=RenderJob.Status.DONE)
        .exists()
    ):
        return
    ids = list(
        RenderJob.objects.filter(
            excerpt_id=excerpt_id, kind=RenderJob.Kind.ITEM, status=RenderJob.Status.PENDING
        ).values_list("pk", flat=True)
    )
    if ids and RenderJob.objects.filter(pk__in=ids, status=RenderJob.Status.PENDING).update(
        status=RenderJob.Status.QUEUED, queued_at=timezone.now()
    ):
        _send(ids, RenderJob.Kind.ITEM)


def complete_item_job(*, claim: Claim, stimuli: list[dict], report: dict) -> None:
    """Record an item's stimuli (idempotent) and finish the experiment's render if all done."""
    with transaction.atomic():
        updated = RenderJob.objects.filter(
            pk=claim.job.pk, claim_token=claim.token, status=RenderJob.Status.RUNNING
        ).update(status=RenderJob.Status.DONE, progress=1.0, finished_at=timezone.now(), report=report)
        if updated != 1:
            raise JobLost(f"render job {claim.job.pk} is no longer held by this worker")
        for s in stimuli:
            Stimulus.objects.update_or_create(
                excerpt_id=claim.job.excerpt_id,
                condition_id=s["condition_id"],
                defaults={k: v for k, v in s.items() if k != "condition_id"}
                | {"experiment_id": claim.job.experiment_id},
            )
        _settle(claim.job.experiment_id)


def fail_job(*, claim: Claim, error: str, retry: bool = False) -> None:
    """Mark a job failed (or back to queued for another attempt)."""
    max_attempts = settings.RENDER_MAX_ATTEMPTS
    with transaction.atomic():
        job = RenderJob.objects.select_for_update().get(pk=claim.job.pk)
        if job.claim_token != claim.token or job.status != RenderJob.Status.RUNNING:
            return
        if retry and job.attempts < max_attempts:
            job.status = RenderJob.Status.QUEUED
            job.queued_at = timezone.now()
            job.error = error[:4000]
            job.save(update_fields=["status", "queued_at", "error"])
            _send([job.pk], job.kind)
        else:
            job.status = RenderJob.Status.FAILED
            job.error = error[:4000]
            job.finished_at = timezone.now()
            job.save(update_fields=["status", "error", "finished_at"])
            _settle(job.experiment_id)


@transaction.atomic
def retry_job(*, job: RenderJob) -> RenderJob:
    """Queue a failed job again (the researcher's retry button)."""
    experiment = Experiment.objects.select_for_update().get(pk=job.experiment_id)
    if experiment.status not in (Experiment.Status.DRAFT, Experiment.Status.RENDERING):
        raise ConflictError(f"cannot retry: the experiment is {experiment.get_status_display().lower()}")
    updated = RenderJob.objects.filter(
        pk=job.pk, status__in=[RenderJob.Status.FAILED, RenderJob.Status.CANCELED]
    ).update(status=RenderJob.Status.QUEUED, queued_at=timezone.now(), attempts=0, error="", progress=0.0)
    if updated != 1:
        raise ConflictError("only a failed or cancelled job can be retried")
    if job.kind == RenderJob.Kind.MODEL:
        # The excerpt's item job waits for this one again (it never ran, or was cancelled).
        RenderJob.objects.filter(
            excerpt_id=job.excerpt_id,
            kind=RenderJob.Kind.ITEM,
            status__in=[RenderJob.Status.FAILED, RenderJob.Status.CANCELED],
        ).update(status=RenderJob.Status.PENDING, attempts=0, error="", progress=0.0)
    Experiment.objects.filter(pk=job.experiment_id).update(status=Experiment.Status.RENDERING)
    _send([job.pk], job.kind)
    return RenderJob.objects.get(pk=job.pk)


def reap_stale_jobs(*, now=None) -> dict[str, int]:
    """Requeue jobs whose worker died (stale heartbeat) and re-send long-queued ones.

    The filesystem broker loses the message of a killed worker and Redis only redelivers
    after its visibility timeout, so the database row decides. A job past its attempt
    cap fails with a reason. Duplicate messages are harmless: the claim is conditional.
    """
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.RENDER_STALE_SECONDS)
    resend_before = now - timedelta(seconds=settings.RENDER_RESEND_SECONDS)
    counts = {"requeued": 0, "failed": 0, "resent": 0, "items_queued": 0}
    with transaction.atomic():
        stale = RenderJob.objects.filter(status=RenderJob.Status.RUNNING, heartbeat__lt=stale_before)
        for job in stale.select_for_update(skip_locked=True):
            if job.attempts >= settings.RENDER_MAX_ATTEMPTS:
                job.status = RenderJob.Status.FAILED
                job.error = (
                    f"the worker stopped answering {job.attempts} times "
                    f"(last seen {job.worker or 'unknown'}); giving up"
                )
                job.finished_at = now
                job.save(update_fields=["status", "error", "finished_at"])
                _settle(job.experiment_id)
                counts["failed"] += 1
            else:
                job.status = RenderJob.Status.QUEUED
                job.queued_at = now
                job.claim_token = ""
                job.error = (
                    f"requeued: no heartbeat from {job.worker or 'the worker'} since {job.heartbeat:%H:%M:%S} UTC"
                )
                job.save(update_fields=["status", "queued_at", "claim_token", "error"])
                _send([job.pk], job.kind)
                counts["requeued"] += 1
        old = list(RenderJob.objects.filter(status=RenderJob.Status.QUEUED, queued_at__lt=resend_before))
        for job in old:
            RenderJob.objects.filter(pk=job.pk).update(queued_at=now)
            _send([job.pk], job.kind)
        counts["resent"] = len(old)
        old_reports = list(
            Report.objects.filter(status=Report.Status.QUEUED, created_at__lt=resend_before).values_list(
                "pk", flat=True
            )
        )
        messaging.send_on_commit(messaging.BUILD_REPORT, old_reports)
        counts["reports_resent"] = len(old_reports)
        pending = RenderJob.objects.filter(kind=RenderJob.Kind.ITEM, status=RenderJob.Status.PENDING)
        for excerpt_id in set(pending.values_list("excerpt_id", flat=True)):
            before = RenderJob.objects.filter(
                excerpt_id=excerpt_id, kind=RenderJob.Kind.ITEM, status=RenderJob.Status.QUEUED
            ).count()
            _queue_ready_items(excerpt_id)
            after = RenderJob.objects.filter(
                excerpt_id=excerpt_id, kind=RenderJob.Kind.ITEM, status=RenderJob.Status.QUEUED
            ).count()
            counts["items_queued"] += after - before
    counts["temp_files_removed"] = sweep_temp_files(older_than=now - timedelta(hours=1))
    return counts
