"""Writes: every change to experiments, jobs, participants and ratings goes through here.

Views, the API, management commands and Celery tasks stay thin and call these
functions (keyword-only arguments, one transaction each).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import secrets
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files import File
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from modelrunner.errors import ModelRunnerError

from .models import (
    MAX_SIGNALS_PER_TRIAL,
    Checkpoint,
    Condition,
    ConditionKind,
    Excerpt,
    Experiment,
    Participant,
    PrerenderedAudio,
    Rating,
    RenderJob,
    Report,
    Stimulus,
    StimulusToken,
    Trial,
    TrialResponse,
)

log = logging.getLogger(__name__)

#: The MUSHRA page's rules and their defaults (one place; the settings page and the player read it).
RULE_DEFAULTS: dict[str, bool | float] = {
    "must_play_all": True,  # every signal must be played before the trial can be submitted
    "only_playing_slider_moves": True,  # a slider moves only while its signal is the one playing
    "require_one_100": True,  # at least one signal rated 100 (the hidden reference, BS.1534-3 §5.2)
    "loop_min_seconds": 0.5,
}

#: Excerpts longer than this get a warning (BS.1534-3 recommends about 10 s).
LONG_EXCERPT_SECONDS = 12.0


class ServiceError(ValueError):
    """A request that cannot be carried out; the message says why (shown as HTTP 4xx)."""


class ConflictError(ServiceError):
    """The request conflicts with the current state (HTTP 409)."""


class TrialNotFound(ServiceError):
    """The session has no trial of that number (HTTP 404)."""


# --------------------------------------------------------------------------- experiments


@transaction.atomic
def create_experiment(
    *, owner, title: str, sample_rate: int = 48000, description: str = "", anchors: bool = True, **fields: Any
) -> Experiment:
    if not title.strip():
        raise ServiceError("title: a title is required")
    if sample_rate not in (44100, 48000, 88200, 96000):
        raise ServiceError(f"sample_rate: {sample_rate} Hz is not one of 44100, 48000, 88200, 96000")
    experiment = Experiment.objects.create(
        owner=owner, title=title.strip(), sample_rate=sample_rate, description=description, **fields
    )
    Condition.objects.create(
        experiment=experiment, kind=ConditionKind.HIDDEN_REFERENCE, label="Hidden reference", position=0
    )
    if anchors:
        Condition.objects.create(
            experiment=experiment, kind=ConditionKind.ANCHOR_35, label="Anchor 3.5 kHz", position=1
        )
        Condition.objects.create(experiment=experiment, kind=ConditionKind.ANCHOR_70, label="Anchor 7 kHz", position=2)
    return experiment


def _require_editable(experiment: Experiment) -> None:
    if experiment.status not in (Experiment.Status.DRAFT, Experiment.Status.READY):
        raise ConflictError(f"the experiment is {experiment.get_status_display().lower()}; it can no longer be changed")


def _save_upload(upload: UploadedFile | str | os.PathLike, name: str | None = None) -> tuple[Path, str]:
    """Copy an upload (or a local path) to a private temp file; return it and its file name."""
    fd, tmp = tempfile.mkstemp(prefix="upload-", dir=_tmp_dir())
    with os.fdopen(fd, "wb") as out:
        if isinstance(upload, (str, os.PathLike)):
            with open(upload, "rb") as src:
                shutil.copyfileobj(src, out)
            filename = name or Path(upload).name
        else:
            for chunk in upload.chunks():
                out.write(chunk)
            filename = name or upload.name
    return Path(tmp), Path(filename).name


def _tmp_dir() -> str:
    path = Path(settings.MEDIA_ROOT) / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _check_size(path: Path, filename: str) -> int:
    size = path.stat().st_size
    limit = settings.MAX_UPLOAD_MB * 1024 * 1024
    if size > limit:
        raise ServiceError(f"{filename}: {size / 1e6:.1f} MB is over the {settings.MAX_UPLOAD_MB} MB upload limit")
    if size == 0:
        raise ServiceError(f"{filename}: the file is empty")
    return size


class _FileGuard:
    """Deletes files stored during a failed create, so nothing half-created is left."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def stored(self, field_file) -> None:
        self.paths.append(field_file.path)

    def rollback(self) -> None:
        for p in self.paths:
            try:
                os.unlink(p)
                os.rmdir(os.path.dirname(p))
            except OSError:
                pass


@dataclass
class ExcerptCheck:
    dry: np.ndarray
    reference: np.ndarray
    sample_rate: int
    warnings: list[str]


def check_excerpt_audio(dry_path: Path, dry_name: str, ref_path: Path, ref_name: str) -> ExcerptCheck:
    """Validate a dry/reference pair; return the (possibly trimmed) audio and warnings."""
    from modelrunner.audio import read_audio

    try:
        dry, dry_sr = read_audio(dry_path)
    except ModelRunnerError as exc:
        raise ServiceError(str(exc).replace(dry_path.name, dry_name)) from None
    try:
        ref, ref_sr = read_audio(ref_path)
    except ModelRunnerError as exc:
        raise ServiceError(str(exc).replace(ref_path.name, ref_name)) from None
    if dry_sr != ref_sr:
        raise ServiceError(f"{dry_name} is at {dry_sr} Hz but {ref_name} is at {ref_sr} Hz; they must match")
    warnings: list[str] = []
    if dry.shape[0] != ref.shape[0]:
        n = min(dry.shape[0], ref.shape[0])
        diff = abs(dry.shape[0] - ref.shape[0])
        if diff > 0.05 * max(dry.shape[0], ref.shape[0]):
            raise ServiceError(
                f"{dry_name} has {dry.shape[0]} frames and {ref_name} has {ref.shape[0]}; "
                "lengths differ by more than 5 %"
            )
        warnings.append(f"lengths differed by {diff} frames ({diff / dry_sr * 1000:.1f} ms); both trimmed to {n}")
        dry, ref = dry[:n], ref[:n]
    seconds = dry.shape[0] / dry_sr
    if seconds < 0.5:
        raise ServiceError(f"{dry_name}: {seconds:.2f} s is too short for a listening test (at least 0.5 s)")
    if seconds > LONG_EXCERPT_SECONDS:
        warnings.append(f"{seconds:.1f} s long; BS.1534-3 recommends excerpts of about 10 s")
    for audio, name in ((dry, dry_name), (ref, ref_name)):
        peak = float(np.max(np.abs(audio)))
        if peak == 0.0:
            raise ServiceError(f"{name}: the file is silent")
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
        if rms < 1e-4:
            warnings.append(f"{name}: nearly silent (RMS {20 * np.log10(rms):.1f} dBFS)")
        if peak >= 0.999:
            clipped = int(np.sum(np.abs(audio) >= 0.999))
            warnings.append(f"{name}: {clipped} samples at full scale (possible clipping)")
    return ExcerptCheck(dry=dry, reference=ref, sample_rate=dry_sr, warnings=warnings)


def add_excerpt(
    *,
    experiment: Experiment,
    name: str,
    dry: UploadedFile | str | os.PathLike,
    reference: UploadedFile | str | os.PathLike,
    lookback_dry: UploadedFile | str | os.PathLike | None = None,
    lookback_reference: UploadedFile | str | os.PathLike | None = None,
) -> Excerpt:
    """Validate and store an excerpt; on any problem nothing is left behind.

    ``lookback_dry``/``lookback_reference``: optional context recorded immediately before
    the excerpt, for models that estimate their starting state from it (SPTMod).
    """
    _require_editable(experiment)
    if (lookback_dry is None) != (lookback_reference is None):
        raise ServiceError("look-back: give both the dry input and the device recording before the excerpt, or neither")
    dry_tmp, dry_name = _save_upload(dry)
    ref_tmp, ref_name = _save_upload(reference)
    lb = [_save_upload(lookback_dry), _save_upload(lookback_reference)] if lookback_dry is not None else []
    guard = _FileGuard()
    try:
        _check_size(dry_tmp, dry_name)
        _check_size(ref_tmp, ref_name)
        check = check_excerpt_audio(dry_tmp, dry_name, ref_tmp, ref_name)
        lookback = None
        if lb:
            (lbd_tmp, lbd_name), (lbr_tmp, lbr_name) = lb
            _check_size(lbd_tmp, lbd_name)
            _check_size(lbr_tmp, lbr_name)
            lookback = check_excerpt_audio(lbd_tmp, lbd_name, lbr_tmp, lbr_name)
            if lookback.sample_rate != check.sample_rate:
                raise ServiceError(
                    f"{lbd_name} is at {lookback.sample_rate} Hz but the excerpt is at "
                    f"{check.sample_rate} Hz; they must match"
                )
        with transaction.atomic():
            excerpt = Excerpt(
                experiment=experiment,
                name=(name or Path(dry_name).stem)[:200],
                position=experiment.excerpts.count(),
                sample_rate=check.sample_rate,
                frames=check.dry.shape[0],
                channels=check.reference.shape[1],
                warnings=check.warnings,
            )
            from modelrunner.audio import write_wav

            # Store exactly what was checked (trimmed if needed) as float32 WAV.
            write_wav(dry_tmp, check.dry, check.sample_rate)
            write_wav(ref_tmp, check.reference, check.sample_rate)
            with open(dry_tmp, "rb") as fh:
                excerpt.dry_file.save(_wav_name(dry_name), File(fh), save=False)
            guard.stored(excerpt.dry_file)
            with open(ref_tmp, "rb") as fh:
                excerpt.reference_file.save(_wav_name(ref_name), File(fh), save=False)
            guard.stored(excerpt.reference_file)
            if lookback is not None:
                for audio, (tmp, fname), field in (
                    (lookback.dry, lb[0], excerpt.lookback_dry_file),
                    (lookback.reference, lb[1], excerpt.lookback_reference_file),
                ):
                    write_wav(tmp, audio, lookback.sample_rate)
                    with open(tmp, "rb") as fh:
                        field.save(_wav_name(fname), File(fh), save=False)
                    guard.stored(field)
                excerpt.warnings = excerpt.warnings + [
                    f"look-back: {w}" for w in lookback.warnings if "recommends" not in w
                ]
            excerpt.save()
            _invalidate_renders(experiment)
        return excerpt
    except BaseException:
        guard.rollback()
        raise
    finally:
        for p in (dry_tmp, ref_tmp, *(t for t, _ in lb)):
            p.unlink(missing_ok=True)


def _wav_name(name: str) -> str:
    return Path(name).stem[:80] + ".wav"


def add_checkpoint(
    *,
    experiment: Experiment,
    name: str,
    file: UploadedFile | str | os.PathLike,
    config: UploadedFile | str | os.PathLike | None = None,
    sample_rate: int | None = None,
) -> Checkpoint:
    """Validate (safe load, architecture recognised) and store a checkpoint."""
    from modelrunner import formats

    _require_editable(experiment)
    tmp, filename = _save_upload(file)
    cfg_tmp, cfg_name = _save_upload(config) if config is not None else (None, "")
    guard = _FileGuard()
    try:
        size = _check_size(tmp, filename)
        # Keep the original extension: some loaders use it as a hint.
        hinted = tmp.with_name(tmp.name + Path(filename).suffix.lower())
        tmp.rename(hinted)
        tmp = hinted
        try:
            model = formats.load(
                tmp, sample_rate=sample_rate, config=cfg_tmp, max_bytes=settings.MAX_UPLOAD_MB * 1024 * 1024
            )
        except ModelRunnerError as exc:
            raise ServiceError(_upload_message(str(exc), filename, {tmp: filename, cfg_tmp: cfg_name})) from None
        sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
        summary = model.summary()
        with transaction.atomic():
            ckpt = Checkpoint(
                experiment=experiment,
                name=(name or Path(filename).stem)[:200],
                format=model.format,
                architecture=model.architecture[:120],
                summary=summary,
                sample_rate=model.sample_rate,
                knob_names=list(model.knob_names),
                sha256=sha,
                size=size,
            )
            with open(tmp, "rb") as fh:
                ckpt.file.save(filename, File(fh), save=False)
            guard.stored(ckpt.file)
            if cfg_tmp is not None:
                with open(cfg_tmp, "rb") as fh:
                    ckpt.config_file.save(cfg_name, File(fh), save=False)
                guard.stored(ckpt.config_file)
            ckpt.save()
        return ckpt
    except BaseException:
        guard.rollback()
        raise
    finally:
        tmp.unlink(missing_ok=True)
        if cfg_tmp is not None:
            cfg_tmp.unlink(missing_ok=True)


def _upload_message(message: str, filename: str, temp_names: dict) -> str:
    """A loader's message in the researcher's terms: temp names replaced by the uploaded
    names, prefixed with the file name once."""
    for tmp, name in temp_names.items():
        if tmp is not None:
            message = message.replace(str(tmp), name).replace(Path(tmp).name, name)
    return message if message.startswith(filename) else f"{filename}: {message}"


def load_checkpoint_model(checkpoint: Checkpoint):
    """Load a stored checkpoint into an ``EffectModel`` (always through the safe loaders)."""
    from modelrunner import formats

    config = checkpoint.config_file.path if checkpoint.config_file else None
    return formats.load(Path(checkpoint.file.path), sample_rate=checkpoint.sample_rate, config=config)


@transaction.atomic
def add_model_condition(
    *, experiment: Experiment, checkpoint: Checkpoint, label: str, knobs: dict[str, float] | None = None
) -> Condition:
    _require_editable(experiment)
    if checkpoint.experiment_id != experiment.pk:
        raise ServiceError("checkpoint: it belongs to another experiment")
    knobs = dict(knobs or {})
    unknown = sorted(set(knobs) - set(checkpoint.knob_names))
    if unknown:
        raise ServiceError(f"knobs: {', '.join(unknown)} not among the checkpoint's knobs {checkpoint.knob_names}")
    for k, v in knobs.items():
        if not isinstance(v, (int, float)) or not np.isfinite(v):
            raise ServiceError(f"knobs: {k} must be a finite number")
    label = label.strip()
    if not label:
        raise ServiceError("label: a label is required")
    if experiment.conditions.filter(label=label).exists():
        raise ServiceError(f"label: {label!r} is already used in this experiment")
    if experiment.conditions.count() >= MAX_SIGNALS_PER_TRIAL:
        raise ServiceError(
            f"a trial may hold at most {MAX_SIGNALS_PER_TRIAL} signals (ITU-R BS.1534-3 §5.3); "
            "split the models into blocks (separate experiments) instead"
        )
    condition = Condition.objects.create(
        experiment=experiment,
        kind=ConditionKind.MODEL,
        checkpoint=checkpoint,
        knobs=knobs,
        label=label,
        position=experiment.conditions.count(),
    )
    _invalidate_renders(experiment)
    return condition


@transaction.atomic
def add_prerendered_condition(*, experiment: Experiment, label: str) -> Condition:
    """A condition whose audio is uploaded per excerpt rather than rendered from a checkpoint."""
    _require_editable(experiment)
    label = label.strip()
    if not label:
        raise ServiceError("label: a label is required")
    if experiment.conditions.filter(label=label).exists():
        raise ServiceError(f"label: {label!r} is already used in this experiment")
    if experiment.conditions.count() >= MAX_SIGNALS_PER_TRIAL:
        raise ServiceError(f"a trial may hold at most {MAX_SIGNALS_PER_TRIAL} signals (ITU-R BS.1534-3 §5.3)")
    condition = Condition.objects.create(
        experiment=experiment, kind=ConditionKind.PRERENDERED, label=label, position=experiment.conditions.count()
    )
    _invalidate_renders(experiment)
    return condition


def add_prerendered_audio(
    *, condition: Condition, excerpt: Excerpt, audio: UploadedFile | str | os.PathLike
) -> PrerenderedAudio:
    """Store one excerpt's audio for a pre-rendered condition (checked like an excerpt)."""
    from modelrunner.audio import read_audio

    if condition.kind != ConditionKind.PRERENDERED:
        raise ServiceError(f"condition {condition.label!r} is not a pre-rendered condition")
    if excerpt.experiment_id != condition.experiment_id:
        raise ServiceError("excerpt: it belongs to another experiment")
    _require_editable(condition.experiment)
    tmp, name = _save_upload(audio)
    guard = _FileGuard()
    try:
        _check_size(tmp, name)
        try:
            data, sr = read_audio(tmp)
        except ModelRunnerError as exc:
            raise ServiceError(str(exc).replace(tmp.name, name)) from None
        if sr != excerpt.sample_rate:
            raise ServiceError(f"{name} is at {sr} Hz but the excerpt {excerpt.name!r} is at {excerpt.sample_rate} Hz")
        with transaction.atomic():
            row = PrerenderedAudio(condition=condition, excerpt=excerpt, sample_rate=sr, frames=data.shape[0])
            with open(tmp, "rb") as fh:
                row.file.save(_wav_name(name) if name.lower().endswith(".wav") else name, File(fh), save=False)
            guard.stored(row.file)
            PrerenderedAudio.objects.filter(condition=condition, excerpt=excerpt).delete()
            row.save()
            _invalidate_renders(condition.experiment)
        return row
    except BaseException:
        guard.rollback()
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _invalidate_renders(experiment: Experiment) -> None:
    """A change of excerpts or conditions makes earlier renders stale."""
    if experiment.status == Experiment.Status.READY:
        Experiment.objects.filter(pk=experiment.pk).update(status=Experiment.Status.DRAFT)
        experiment.status = Experiment.Status.DRAFT


# --------------------------------------------------------------------------- rendering jobs


def send_on_commit(task, ids: Iterable[int]) -> None:
    """Send task messages carrying row ids once the transaction that made the rows commits.

    If the broker is unreachable the rows stay queued and nothing fails: the reaper
    re-sends queued work (``RENDER_RESEND_SECONDS``), and a duplicate is harmless because
    every claim is a conditional UPDATE.
    """
    ids = list(ids)

    def send() -> None:
        from kombu.exceptions import OperationalError

        for row_id in ids:
            try:
                task.delay(row_id)
            except (OperationalError, OSError) as exc:
                log.warning("broker unreachable (%s); %s row(s) stay queued for the reaper to re-send", exc, len(ids))
                return

    transaction.on_commit(send)


def _send(job_ids: Iterable[int], kind: str) -> None:
    """Send render-job messages after commit."""
    from modelrunner import tasks

    send_on_commit(tasks.render_job if kind == RenderJob.Kind.MODEL else tasks.prepare_item, job_ids)


@transaction.atomic
def start_render(*, experiment: Experiment) -> list[RenderJob]:
    """Queue one job per (model condition, excerpt) and one item job per excerpt."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if experiment.status not in (Experiment.Status.DRAFT, Experiment.Status.READY):
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
        from . import tasks as web_tasks
        from .models import Report

        old_reports = list(
            Report.objects.filter(status=Report.Status.QUEUED, created_at__lt=resend_before).values_list(
                "pk", flat=True
            )
        )
        send_on_commit(web_tasks.build_report, old_reports)
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


# --------------------------------------------------------------------------- running the test


@transaction.atomic
def open_experiment(*, experiment: Experiment) -> Experiment:
    """Publish: the participant link starts working. Needs every stimulus rendered."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if experiment.status == Experiment.Status.OPEN:
        return experiment
    if experiment.status not in (Experiment.Status.READY, Experiment.Status.CLOSED):
        raise ConflictError(
            f"cannot open: the experiment is {experiment.get_status_display().lower()}; render it first"
        )
    conditions = experiment.conditions.count()
    excerpts = list(experiment.excerpts.all())
    have = Stimulus.objects.filter(experiment=experiment).count()
    if have != conditions * len(excerpts):
        raise ConflictError(f"cannot open: {have} of {conditions * len(excerpts)} stimuli are rendered")
    training_excerpt_ids = set(experiment.config.get("training_excerpts", [excerpts[0].pk] if excerpts else []))
    if experiment.config.get("training", True) is False:
        training_excerpt_ids = set()
    for i, excerpt in enumerate(excerpts):
        Trial.objects.get_or_create(experiment=experiment, excerpt=excerpt, is_training=False, defaults={"position": i})
        if excerpt.pk in training_excerpt_ids:
            Trial.objects.get_or_create(
                experiment=experiment, excerpt=excerpt, is_training=True, defaults={"position": i}
            )
    experiment.status = Experiment.Status.OPEN
    experiment.opened_at = experiment.opened_at or timezone.now()
    experiment.save(update_fields=["status", "opened_at", "updated_at"])
    return experiment


@transaction.atomic
def close_experiment(*, experiment: Experiment) -> Experiment:
    updated = Experiment.objects.filter(pk=experiment.pk, status=Experiment.Status.OPEN).update(
        status=Experiment.Status.CLOSED, closed_at=timezone.now()
    )
    if updated != 1:
        raise ConflictError("only an open experiment can be closed")
    return Experiment.objects.get(pk=experiment.pk)


def _make_plan(experiment: Experiment, rng: random.Random) -> list[dict]:
    """Per-participant order of trials and of the conditions within each (BS.1534-3 §5.2)."""
    conditions = list(experiment.conditions.values_list("pk", flat=True))
    trials = list(experiment.trials.filter(is_training=False).values_list("pk", flat=True))
    training = list(experiment.trials.filter(is_training=True).values_list("pk", flat=True))
    subset = int(experiment.config.get("trial_subset_size") or 0)
    if 0 < subset < len(trials):
        # Balanced subset: the items least used so far first, ties broken at random.
        counts = {t: 0 for t in trials}
        for plan in experiment.participants.exclude(stage=Participant.Stage.SCREENED_OUT).values_list(
            "plan", flat=True
        ):
            for entry in plan:
                if entry.get("trial") in counts and not entry.get("training"):
                    counts[entry["trial"]] += 1
        ranked = sorted(trials, key=lambda t: (counts[t], rng.random()))
        trials = ranked[:subset]
    rng.shuffle(trials)
    plan: list[dict] = []
    for t in training:
        order = conditions[:]
        rng.shuffle(order)
        plan.append({"trial": t, "training": True, "conditions": order, "key": secrets.token_hex(8)})
    for t in trials:
        order = conditions[:]
        rng.shuffle(order)
        plan.append({"trial": t, "training": False, "conditions": order, "key": secrets.token_hex(8)})
    return plan


@transaction.atomic
def start_participant(
    *, experiment: Experiment, prolific_pid: str = "", study_id: str = "", session_id: str = "", user_agent: str = ""
) -> Participant:
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if experiment.status != Experiment.Status.OPEN:
        raise ConflictError("this listening test is not open")
    if prolific_pid:
        existing = experiment.participants.filter(prolific_pid=prolific_pid).first()
        if existing is not None:
            return existing
    rng = random.Random(secrets.randbits(64))
    participant = Participant.objects.create(
        experiment=experiment,
        prolific_pid=prolific_pid[:64],
        prolific_study_id=study_id[:64],
        prolific_session_id=session_id[:64],
        user_agent=user_agent[:400],
        plan=_make_plan(experiment, rng),
    )
    stimuli = Stimulus.objects.filter(experiment=experiment)
    StimulusToken.objects.bulk_create([StimulusToken(participant=participant, stimulus=s) for s in stimuli])
    return participant


def _first_stage_after_consent(participant: Participant) -> str:
    if participant.experiment.config.get("headphone_check", {}).get("enabled", False):
        return Participant.Stage.SCREENING
    return _stage_after_screening(participant)


@transaction.atomic
def give_consent(*, participant: Participant, agreed: bool) -> Participant:
    participant = Participant.objects.select_for_update().select_related("experiment").get(pk=participant.pk)
    if participant.stage != Participant.Stage.CONSENT:
        return participant
    if not agreed:
        participant.stage = Participant.Stage.DECLINED
    else:
        participant.consented_at = timezone.now()
        participant.stage = _first_stage_after_consent(participant)
    participant.save(update_fields=["stage", "consented_at"])
    return participant


#: Defaults of the headphone check (Woods et al. 2017; Milne et al. 2021 use 6 trials, pass at 5).
HEADPHONE_DEFAULTS = {
    "enabled": False,
    "tests": ["antiphase", "huggins"],
    "trials_per_test": 6,
    "pass_threshold": 5 / 6,
    "require": "all",
}


def headphone_settings(experiment: Experiment) -> dict:
    return HEADPHONE_DEFAULTS | (experiment.config.get("headphone_check") or {})


def headphone_trials(*, participant: Participant) -> list[dict]:
    """The participant's screening trials (odd-one-out positions), made once and kept."""
    with transaction.atomic():
        participant = Participant.objects.select_for_update().select_related("experiment").get(pk=participant.pk)
        trials = participant.screening.get("trials")
        if not trials:
            cfg = headphone_settings(participant.experiment)
            rng = random.Random(secrets.randbits(64))
            trials = [
                {"test": test, "target": rng.randint(1, 3), "seed": rng.randrange(2**31)}
                for test in cfg["tests"]
                for _ in range(int(cfg["trials_per_test"]))
            ]
            participant.screening = {**participant.screening, "trials": trials}
            participant.save(update_fields=["screening"])
    return trials


def _stage_after_screening(participant: Participant) -> str:
    if participant.experiment.config.get("level_setting", True):
        return Participant.Stage.LEVEL
    return _trial_stage(participant)


def _trial_stage(participant: Participant) -> str:
    nxt = next_plan_index(participant)
    if nxt is None:
        return Participant.Stage.QUESTIONNAIRE
    return Participant.Stage.TRAINING if participant.plan[nxt].get("training") else Participant.Stage.TRIALS


@transaction.atomic
def score_headphone_check(*, participant: Participant, answers: list[dict]) -> Participant:
    """Score the screening against the server's own record of the targets; a fail ends politely."""
    participant = Participant.objects.select_for_update().select_related("experiment").get(pk=participant.pk)
    if participant.stage != Participant.Stage.SCREENING:
        return participant
    trials = participant.screening.get("trials") or []
    if not isinstance(answers, list) or len(answers) != len(trials):
        raise ServiceError(
            f"answers: expected {len(trials)} answers, got {len(answers) if isinstance(answers, list) else 'none'}"
        )
    cfg = headphone_settings(participant.experiment)
    per_test: dict[str, list[bool]] = {}
    for i, (trial, answer) in enumerate(zip(trials, answers)):
        chosen = answer.get("chosen") if isinstance(answer, dict) else None
        if chosen not in (1, 2, 3):
            raise ServiceError(f"answers: answer {i + 1} must choose 1, 2 or 3")
        per_test.setdefault(trial["test"], []).append(chosen == trial["target"])
    scores = {test: sum(ok) / len(ok) for test, ok in per_test.items()}
    passed_tests = {test: score >= cfg["pass_threshold"] - 1e-9 for test, score in scores.items()}
    passed = all(passed_tests.values()) if cfg["require"] == "all" else any(passed_tests.values())
    participant.screening = {
        **participant.screening,
        "answers": answers,
        "scores": scores,
        "passed_tests": passed_tests,
        "passed": passed,
        "threshold": cfg["pass_threshold"],
        "scored_at": timezone.now().isoformat(),
    }
    participant.stage = _stage_after_screening(participant) if passed else Participant.Stage.SCREENED_OUT
    participant.save(update_fields=["screening", "stage"])
    return participant


@transaction.atomic
def set_level(*, participant: Participant, gain_db: float) -> Participant:
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    if participant.stage != Participant.Stage.LEVEL:
        return participant
    if not (-40.0 <= float(gain_db) <= 12.0):
        raise ServiceError("gain_db must be between -40 and +12 dB")
    participant.level = {"gain_db": float(gain_db), "set_at": timezone.now().isoformat()}
    participant.stage = _trial_stage(participant)
    participant.save(update_fields=["level", "stage"])
    return participant


def next_plan_index(participant: Participant) -> int | None:
    """The first trial of the plan without a saved response (reload resumes here)."""
    return _first_unsaved(participant, set(participant.responses.values_list("trial_id", flat=True)))


def _first_unsaved(participant: Participant, saved_trials) -> int | None:
    for i, entry in enumerate(participant.plan):
        if entry["trial"] not in saved_trials:
            return i
    return None


@dataclass
class SaveResult:
    created: bool
    next_index: int | None
    #: The participant as stored after the save (stage, completion code).
    participant: Participant


def submit_trial(
    *,
    participant: Participant | None = None,
    token: str | None = None,
    index: int,
    idempotency_key: str,
    ratings: dict[str, Any],
    telemetry: dict | None = None,
) -> SaveResult:
    """Store one trial's ratings in one transaction; a replay of the same key is a no-op.

    The participant is given as an instance or by ``token`` (``Participant.DoesNotExist``
    when there is none). ``ratings`` maps the opaque per-trial signal keys the page was
    given to 0..100 scores.
    """
    lookup = {"pk": participant.pk} if participant is not None else {"token": token}
    with transaction.atomic():
        participant = Participant.objects.select_for_update().select_related("experiment").get(**lookup)
        if not isinstance(idempotency_key, str) or not (8 <= len(idempotency_key) <= 64):
            raise ServiceError("idempotency_key: missing or malformed")
        if not (0 <= index < len(participant.plan)):
            raise TrialNotFound(f"there is no trial {index + 1} in this session")
        entry = participant.plan[index]
        # trial id -> idempotency key of every trial this participant has saved (one query)
        saved = dict(TrialResponse.objects.filter(participant=participant).values_list("trial_id", "idempotency_key"))
        if entry["trial"] in saved:
            if saved[entry["trial"]] == idempotency_key:
                return SaveResult(created=False, next_index=_first_unsaved(participant, saved), participant=participant)
            raise ConflictError("this trial was already submitted")
        if participant.experiment.status != Experiment.Status.OPEN:
            raise ConflictError("this listening test is closed; no more ratings are accepted")
        if participant.stage not in (Participant.Stage.TRAINING, Participant.Stage.TRIALS):
            raise ConflictError(f"ratings are not accepted at this stage ({participant.get_stage_display().lower()})")
        keys = signal_keys(entry)
        if not isinstance(ratings, dict):
            raise ServiceError("ratings: expected an object of signal -> score")
        unknown = sorted(set(ratings) - set(keys))
        if unknown:
            raise ServiceError(f"ratings: {', '.join(map(str, unknown))} not a signal of this trial")
        missing = sorted(set(keys) - set(ratings))
        if missing:
            raise ServiceError(f"ratings: {len(missing)} signal(s) not rated")
        scores: dict[int, int] = {}
        for key, value in ratings.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ServiceError(f"ratings: the score of {key} is not a number")
            if not (0 <= value <= 100):
                raise ServiceError(f"ratings: the score of {key} ({value}) is outside 0..100")
            scores[keys[key]] = int(round(value))
        response = TrialResponse.objects.create(
            participant=participant, trial_id=entry["trial"], idempotency_key=idempotency_key, telemetry=telemetry or {}
        )
        if not entry.get("training"):
            Rating.objects.bulk_create(
                [
                    Rating(
                        participant=participant,
                        trial_id=entry["trial"],
                        condition_id=cid,
                        score=score,
                        response=response,
                    )
                    for cid, score in scores.items()
                ]
            )
        nxt = _first_unsaved(participant, {**saved, entry["trial"]: idempotency_key})
        if nxt is None:
            participant.stage = (
                Participant.Stage.QUESTIONNAIRE
                if participant.experiment.config.get("questionnaire", [{"name": "comment"}])
                else Participant.Stage.COMPLETED
            )
        else:
            participant.stage = (
                Participant.Stage.TRAINING if participant.plan[nxt].get("training") else Participant.Stage.TRIALS
            )
        if participant.stage == Participant.Stage.COMPLETED:
            _complete(participant)
        participant.save(update_fields=["stage", "completed_at", "completion_code"])
    return SaveResult(created=True, next_index=nxt, participant=participant)


def signal_keys(entry: dict) -> dict[str, int]:
    """Opaque per-trial signal keys (a, b, c, ...) in the participant's shuffled order."""
    return {chr(ord("a") + i): cid for i, cid in enumerate(entry["conditions"])}


def _complete(participant: Participant) -> None:
    participant.completed_at = timezone.now()
    participant.completion_code = participant.experiment.config.get("completion_code") or secrets.token_hex(4).upper()


@transaction.atomic
def submit_questionnaire(*, participant: Participant, answers: dict[str, str]) -> Participant:
    participant = Participant.objects.select_for_update().select_related("experiment").get(pk=participant.pk)
    if participant.stage != Participant.Stage.QUESTIONNAIRE:
        return participant
    participant.questionnaire = {k: str(v)[:2000] for k, v in answers.items()}
    participant.stage = Participant.Stage.COMPLETED
    _complete(participant)
    participant.save(update_fields=["questionnaire", "stage", "completed_at", "completion_code"])
    return participant


# --- researcher workflow

#: Questionnaire field types the participant pages can render.
QUESTION_TYPES = ("text", "number", "textarea", "select")
#: Experiment fields a researcher edits on the settings page (besides ``config``).
SETTINGS_FIELDS = ("title", "description", "instructions", "consent_text", "estimated_minutes", "loudness_target_lufs")
HEADPHONE_TESTS = ("antiphase", "huggins")


def validate_questionnaire(fields: Any) -> list[dict]:
    """Check questionnaire fields ({name, label, type, options, required}); return them normalised."""
    if not isinstance(fields, list):
        raise ServiceError("questionnaire: expected a list of fields")
    seen: set[str] = set()
    out: list[dict] = []
    for i, field in enumerate(fields, start=1):
        if not isinstance(field, dict):
            raise ServiceError(f"questionnaire: field {i} is not an object")
        name = str(field.get("name", "")).strip()
        if not name or not name.replace("_", "").isalnum():
            raise ServiceError(f"questionnaire: field {i} needs a name of letters, digits and _ (got {name!r})")
        if name in seen:
            raise ServiceError(f"questionnaire: the name {name!r} is used twice")
        seen.add(name)
        kind = str(field.get("type", "text"))
        if kind not in QUESTION_TYPES:
            raise ServiceError(
                f"questionnaire: field {name!r} has type {kind!r}; use one of {', '.join(QUESTION_TYPES)}"
            )
        options = field.get("options") or []
        if not isinstance(options, list) or not all(isinstance(o, (str, int, float)) for o in options):
            raise ServiceError(f"questionnaire: the options of {name!r} must be a list of texts")
        if kind == "select" and not options:
            raise ServiceError(f"questionnaire: the select field {name!r} needs options")
        out.append(
            {
                "name": name,
                "label": str(field.get("label") or name)[:200],
                "type": kind,
                "options": [str(o) for o in options],
                "required": bool(field.get("required", False)),
            }
        )
    return out


def validate_config(config: dict) -> dict:
    """Check the flow and rule settings read by the participant pages; return them normalised."""
    if not isinstance(config, dict):
        raise ServiceError("config: expected an object")
    cfg = dict(config)
    if "questionnaire" in cfg:
        cfg["questionnaire"] = validate_questionnaire(cfg["questionnaire"])
    if "trial_subset_size" in cfg:
        try:
            size = int(cfg["trial_subset_size"] or 0)
        except (TypeError, ValueError):
            raise ServiceError("trial_subset_size: expected a whole number (0 = every trial)") from None
        if size < 0:
            raise ServiceError("trial_subset_size: must be 0 (every trial) or more")
        cfg["trial_subset_size"] = size
    url = cfg.get("completion_url")
    if url and not str(url).startswith(("https://", "http://")):
        raise ServiceError("completion_url: must start with https://")
    hc = cfg.get("headphone_check")
    if hc is not None:
        if not isinstance(hc, dict):
            raise ServiceError("headphone_check: expected an object")
        tests = hc.get("tests", list(HEADPHONE_TESTS))
        bad = [t for t in tests if t not in HEADPHONE_TESTS]
        if bad:
            raise ServiceError(f"headphone_check: unknown test(s) {', '.join(map(str, bad))}")
        try:
            trials = int(hc.get("trials_per_test", 6))
            threshold = float(hc.get("pass_threshold", 5 / 6))
        except (TypeError, ValueError):
            raise ServiceError("headphone_check: trials_per_test and pass_threshold must be numbers") from None
        if trials < 1:
            raise ServiceError("headphone_check: trials_per_test must be at least 1")
        if not 0.0 <= threshold <= 1.0:
            raise ServiceError("headphone_check: pass_threshold is a fraction between 0 and 1")
        cfg["headphone_check"] = {
            "enabled": bool(hc.get("enabled", False)),
            "tests": list(tests),
            "trials_per_test": trials,
            "pass_threshold": threshold,
        }
    rules = cfg.get("rules")
    if rules is not None:
        if not isinstance(rules, dict):
            raise ServiceError("rules: expected an object")
        unknown = sorted(set(rules) - set(RULE_DEFAULTS))
        if unknown:
            raise ServiceError(f"rules: {unknown[0]} is not a rule")
        cfg["rules"] = {
            k: (bool(rules.get(k, d)) if isinstance(d, bool) else float(rules.get(k, d)))
            for k, d in RULE_DEFAULTS.items()
        }
        if cfg["rules"]["loop_min_seconds"] < 0.1:
            raise ServiceError("rules: loop_min_seconds must be at least 0.1 s")
    for key in ("level_setting", "training"):
        if key in cfg:
            cfg[key] = bool(cfg[key])
    return cfg


@transaction.atomic
def update_experiment_settings(*, experiment: Experiment, config: dict | None = None, **fields: Any) -> Experiment:
    """Change texts and settings; ``config`` keys are merged into the stored config."""
    unknown = sorted(set(fields) - set(SETTINGS_FIELDS))
    if unknown:
        raise ServiceError(f"{unknown[0]}: not a setting")
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if "title" in fields:
        if not str(fields["title"] or "").strip():
            raise ServiceError("title: a title is required")
        fields["title"] = str(fields["title"]).strip()[:200]
    if fields.get("estimated_minutes") is not None and int(fields["estimated_minutes"]) < 1:
        raise ServiceError("estimated_minutes: at least 1 minute")
    target = fields.get("loudness_target_lufs")
    if target is not None and not (-70.0 <= float(target) <= 0.0):
        raise ServiceError("loudness_target_lufs: must be between -70 and 0 LUFS")
    for name, value in fields.items():
        setattr(experiment, name, value)
    if config is not None:
        experiment.config = validate_config({**experiment.config, **config})
    experiment.save()
    return experiment


def _reindex_conditions(experiment: Experiment) -> None:
    for i, condition in enumerate(experiment.conditions.order_by("position", "id")):
        if condition.position != i:
            Condition.objects.filter(pk=condition.pk).update(position=i)


@transaction.atomic
def set_anchors(*, experiment: Experiment, anchor35: bool, anchor70: bool) -> Experiment:
    """Switch the 3.5 kHz and 7 kHz low-pass anchors (BS.1534-3 §5.1) on or off."""
    _require_editable(experiment)
    wanted = {
        ConditionKind.ANCHOR_35: (anchor35, "Anchor 3.5 kHz"),
        ConditionKind.ANCHOR_70: (anchor70, "Anchor 7 kHz"),
    }
    changed = False
    for kind, (on, label) in wanted.items():
        existing = experiment.conditions.filter(kind=kind)
        if on and not existing.exists():
            if experiment.conditions.count() >= MAX_SIGNALS_PER_TRIAL:
                raise ServiceError(
                    f"a trial may hold at most {MAX_SIGNALS_PER_TRIAL} signals (ITU-R BS.1534-3 §5.3); "
                    "remove a model condition before adding the anchor"
                )
            if experiment.conditions.filter(label=label).exists():
                label = f"{label} ({kind})"
            Condition.objects.create(experiment=experiment, kind=kind, label=label, position=1)
            changed = True
        elif not on and existing.exists():
            existing.delete()
            changed = True
    if changed:
        # Hidden reference first, anchors next, models after: the analysis reads them in this order.
        order = {ConditionKind.HIDDEN_REFERENCE: 0, ConditionKind.ANCHOR_35: 1, ConditionKind.ANCHOR_70: 2}
        conditions = sorted(experiment.conditions.all(), key=lambda c: (order.get(c.kind, 3), c.position, c.pk))
        for i, c in enumerate(conditions):
            Condition.objects.filter(pk=c.pk).update(position=i)
        _invalidate_renders(experiment)
    return experiment


@transaction.atomic
def remove_condition(*, condition: Condition) -> None:
    """Delete a model, pre-rendered or anchor condition (the hidden reference always stays)."""
    experiment = condition.experiment
    _require_editable(experiment)
    if condition.kind == ConditionKind.HIDDEN_REFERENCE:
        raise ServiceError("the hidden reference is part of every MUSHRA trial (BS.1534-3 §5.1) and cannot be removed")
    condition.delete()
    _reindex_conditions(experiment)
    _invalidate_renders(experiment)


def _delete_files(*field_files) -> None:
    for f in field_files:
        if f:
            try:
                path = f.path
                os.unlink(path)
                os.rmdir(os.path.dirname(path))
            except OSError:
                pass


def remove_excerpt(*, excerpt: Excerpt) -> None:
    """Delete an excerpt, its pre-rendered audio and its renders."""
    experiment = excerpt.experiment
    _require_editable(experiment)
    files = [excerpt.dry_file, excerpt.reference_file] + [p.file for p in excerpt.prerendered_audio.all()]
    with transaction.atomic():
        excerpt.delete()
        _invalidate_renders(experiment)
    _delete_files(*files)


def remove_checkpoint(*, checkpoint: Checkpoint) -> None:
    """Delete a checkpoint no condition uses."""
    _require_editable(checkpoint.experiment)
    used = list(checkpoint.conditions.values_list("label", flat=True))
    if used:
        raise ConflictError(f"{checkpoint.name}: used by condition(s) {', '.join(used)}; remove them first")
    files = [checkpoint.file, checkpoint.config_file]
    checkpoint.delete()
    _delete_files(*files)


def block_group(experiment: Experiment) -> list[Experiment]:
    """The experiments of a blocked design, in block order (just this one when not blocked)."""
    root_id = experiment.config.get("block_of") or experiment.pk
    members = list(Experiment.objects.filter(Q(pk=root_id) | Q(config__block_of=root_id)))
    return sorted(members, key=lambda e: (e.config.get("block", 1), e.pk))


@transaction.atomic
def split_into_blocks(*, experiment: Experiment) -> Experiment:
    """Start the next block of a blocked design: a linked experiment with the same excerpts,
    checkpoints, anchors, texts and settings and no model conditions yet.

    BS.1534-3 §5.3 allows at most 12 signals per trial; more models are compared in
    several blocks (separate tests) that share the hidden reference and anchors.
    """
    group = block_group(experiment)
    root = group[0]
    number = max(e.config.get("block", 1) for e in group) + 1
    if "block" not in root.config:
        Experiment.objects.filter(pk=root.pk).update(config={**root.config, "block": 1, "block_of": root.pk})
        root.refresh_from_db()
    kinds = set(root.conditions.values_list("kind", flat=True))
    config = {**root.config, "block": number, "block_of": root.pk}
    block = create_experiment(
        owner=root.owner,
        title=f"{root.title} — block {number}"[:200],
        sample_rate=root.sample_rate,
        description=root.description,
        anchors=False,
        instructions=root.instructions,
        consent_text=root.consent_text,
        estimated_minutes=root.estimated_minutes,
        loudness_target_lufs=root.loudness_target_lufs,
        config=config,
    )
    block.shared_with.set(root.shared_with.all())
    for kind, label in ((ConditionKind.ANCHOR_35, "Anchor 3.5 kHz"), (ConditionKind.ANCHOR_70, "Anchor 7 kHz")):
        if kind in kinds:
            Condition.objects.create(experiment=block, kind=kind, label=label, position=block.conditions.count())
    guard = _FileGuard()
    try:
        for x in root.excerpts.all():
            copy = Excerpt(
                experiment=block,
                name=x.name,
                position=x.position,
                sample_rate=x.sample_rate,
                frames=x.frames,
                channels=x.channels,
                warnings=x.warnings,
            )
            for field in ("dry_file", "reference_file"):
                with getattr(x, field).open("rb") as fh:
                    getattr(copy, field).save(Path(getattr(x, field).name).name, File(fh), save=False)
                guard.stored(getattr(copy, field))
            copy.save()
        for c in root.checkpoints.all():
            copy = Checkpoint(
                experiment=block,
                name=c.name,
                format=c.format,
                architecture=c.architecture,
                summary=c.summary,
                sample_rate=c.sample_rate,
                knob_names=c.knob_names,
                sha256=c.sha256,
                size=c.size,
            )
            with c.file.open("rb") as fh:
                copy.file.save(Path(c.file.name).name, File(fh), save=False)
            guard.stored(copy.file)
            if c.config_file:
                with c.config_file.open("rb") as fh:
                    copy.config_file.save(Path(c.config_file.name).name, File(fh), save=False)
                guard.stored(copy.config_file)
            copy.save()
    except BaseException:
        guard.rollback()
        raise
    return block


def api_token_for(*, user, reset: bool = False) -> str:
    """The user's API token (created on first use; ``reset`` replaces it)."""
    from rest_framework.authtoken.models import Token

    with transaction.atomic():
        if reset:
            Token.objects.filter(user=user).delete()
        token, _ = Token.objects.get_or_create(user=user)
    return token.key


def request_report(*, experiment: Experiment, user=None) -> Report:
    """Queue a report bundle build; a build already waiting or running is returned instead."""
    from .models import Report

    with transaction.atomic():
        Experiment.objects.select_for_update().get(pk=experiment.pk)
        busy = experiment.reports.filter(status__in=[Report.Status.QUEUED, Report.Status.RUNNING]).first()
        if busy is not None:
            return busy
        if not Rating.objects.filter(participant__experiment=experiment).exists():
            raise ServiceError("no ratings yet: a report needs at least one completed trial")
        report = Report.objects.create(experiment=experiment, requested_by=user)

        from . import tasks

        send_on_commit(tasks.build_report, [report.pk])
    return report


def build_report(*, report_id: int) -> str:
    """Build a report bundle (zip) for a queued Report row; the row records progress and errors."""
    import pandas as pd

    from .models import Report
    from .selectors import metrics_rows, ratings_rows

    now = timezone.now()
    if (
        Report.objects.filter(pk=report_id, status=Report.Status.QUEUED).update(
            status=Report.Status.RUNNING, started_at=now, progress=0.0, error=""
        )
        != 1
    ):
        return "skipped"
    report = Report.objects.select_related("experiment").get(pk=report_id)
    experiment = report.experiment
    out_root = Path(settings.MEDIA_ROOT) / "reports"
    out_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"report-{report_id}-", dir=_tmp_dir()))
    last = [0.0]

    def progress(*args: Any) -> None:
        # Called as progress(message, fraction); the fraction is the number among the arguments.
        numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
        if not numbers:
            return
        fraction = max(0.0, min(1.0, float(numbers[-1])))
        if fraction - last[0] >= 0.02 or fraction >= 1.0:
            last[0] = fraction
            Report.objects.filter(pk=report_id).update(progress=round(0.9 * fraction, 4))

    try:
        from evaluation.report import build_report as build

        ratings = pd.DataFrame(ratings_rows(experiment))
        metrics = pd.DataFrame(metrics_rows(experiment)) if metrics_rows(experiment) else None
        settings_ = experiment.config.get("analysis") or None
        bundle = work / "bundle"
        bundle.mkdir()
        summary = build(ratings, metrics, settings_, bundle, progress=progress)
        stem = f"experiment-{experiment.pk}-report-{report_id}"
        archive = shutil.make_archive(str(work / stem), "zip", root_dir=bundle)
        final = out_root / f"{stem}.zip"
        os.replace(archive, final)
        Report.objects.filter(pk=report_id).update(
            status=Report.Status.DONE,
            progress=1.0,
            finished_at=timezone.now(),
            file=str(final.relative_to(settings.MEDIA_ROOT)),
            summary=_json_safe(
                {
                    "files": sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()),
                    "result": summary.get("stats", {}) if isinstance(summary, dict) else {},
                }
            ),
        )
        return "done"
    except Exception as exc:  # the row shows the researcher what went wrong
        log.exception("report %s failed", report_id)
        Report.objects.filter(pk=report_id).update(
            status=Report.Status.FAILED, finished_at=timezone.now(), error=f"{type(exc).__name__}: {exc}"[:4000]
        )
        return "failed"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _json_safe(value: Any) -> Any:
    """Keep only what JSON can hold (summaries may carry numpy numbers or paths)."""
    import json

    return json.loads(json.dumps(value if isinstance(value, dict) else {"result": value}, default=str))
