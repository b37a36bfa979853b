"""The render-job lifecycle: queue, claim, heartbeat, complete, fail, retry and reap.

The database row is the truth; a broker message carries only its id (``webmushra.messaging``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F
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

log = logging.getLogger(__name__)


def load_checkpoint_model(checkpoint: Checkpoint):
    """Load a stored checkpoint into an ``EffectModel`` (always through the safe loaders)."""
    from modelrunner import formats

    config = checkpoint.config_file.path if checkpoint.config_file else None
    return formats.load(Path(checkpoint.file.path), sample_rate=checkpoint.sample_rate, config=config)


def _send(job_ids: Iterable[int], kind: str) -> None:
    """Send render-job messages after commit."""
    messaging.send_on_commit(messaging.RENDER_JOB if kind == RenderJob.Kind.MODEL else messaging.PREPARE_ITEM, job_ids)


@transaction.atomic
def start_render(*, experiment: Experiment) -> list[RenderJob]:
    """Queue one job per (model condition, excerpt) and one item job per excerpt."""
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
    RenderJob.objects.filter(experiment=experiment).delete()
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
    ]
    RenderJob.objects.bulk_create(model_jobs)
    # With no model to render, an item job can start at once.
    item_status = RenderJob.Status.PENDING if model_jobs else RenderJob.Status.QUEUED
    item_jobs = [
        RenderJob(
            experiment=experiment,
            kind=RenderJob.Kind.ITEM,
            excerpt=x,
            status=item_status,
            queued_at=None if model_jobs else now,
        )
        for x in excerpts
    ]
    RenderJob.objects.bulk_create(item_jobs)
    experiment.status = Experiment.Status.RENDERING
    experiment.save(update_fields=["status", "updated_at"])
    jobs = list(RenderJob.objects.filter(experiment=experiment, kind=RenderJob.Kind.MODEL))
    _send([j.pk for j in jobs], RenderJob.Kind.MODEL)
    if not model_jobs:
        jobs = list(RenderJob.objects.filter(experiment=experiment, kind=RenderJob.Kind.ITEM))
        _send([j.pk for j in jobs], RenderJob.Kind.ITEM)
    return jobs


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
        experiment_id = claim.job.experiment_id
        if not RenderJob.objects.filter(experiment_id=experiment_id).exclude(status=RenderJob.Status.DONE).exists():
            Experiment.objects.filter(pk=experiment_id, status=Experiment.Status.RENDERING).update(
                status=Experiment.Status.READY
            )


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


@transaction.atomic
def retry_job(*, job: RenderJob) -> RenderJob:
    """Queue a failed job again (the researcher's retry button)."""
    updated = RenderJob.objects.filter(pk=job.pk, status=RenderJob.Status.FAILED).update(
        status=RenderJob.Status.QUEUED, queued_at=timezone.now(), attempts=0, error="", progress=0.0
    )
    if updated != 1:
        raise ConflictError("only a failed job can be retried")
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
    counts["temp_files_removed"] = _sweep_temp_files(older_than=now - timedelta(hours=1))
    return counts


def _sweep_temp_files(*, older_than) -> int:
    """Remove temp files left by workers killed mid-write (never served: no row names them)."""
    removed = 0
    root = Path(settings.MEDIA_ROOT)
    for sub in ("renders", "stimuli", "reports", "tmp"):
        folder = root / sub
        if not folder.is_dir():
            continue
        for path in folder.rglob("*"):
            name = path.name
            if not (name.startswith(".tmp-") or (sub == "tmp" and name.startswith("upload-"))):
                continue
            try:
                if path.is_file() and path.stat().st_mtime < older_than.timestamp():
                    path.unlink()
                    removed += 1
            except OSError:
                pass
    return removed
