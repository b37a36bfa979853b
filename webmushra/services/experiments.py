"""Building an experiment: create, conditions, anchors, settings, removal, blocks, publish and close.

Uploads (excerpts, checkpoints, pre-rendered audio) are in ``uploads``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from django.core.files import File
from django.db import transaction
from django.utils import timezone

from .. import selectors
from ..errors import ConflictError, ServiceError
from ..models import (
    ANCHOR_KINDS,
    FIXED_CONDITION_LABELS,
    Checkpoint,
    Condition,
    ConditionKind,
    Excerpt,
    Experiment,
    Stimulus,
    Trial,
)
from ..rules import MAX_SIGNALS_PER_TRIAL, SETTINGS_FIELDS, flow, validate_config
from .files import FileGuard, delete_files

log = logging.getLogger(__name__)


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
    fixed = [ConditionKind.HIDDEN_REFERENCE, *(ANCHOR_KINDS if anchors else ())]
    for position, kind in enumerate(fixed):
        Condition.objects.create(
            experiment=experiment, kind=kind, label=FIXED_CONDITION_LABELS[kind], position=position
        )
    return experiment


def require_editable(experiment: Experiment) -> None:
    if not experiment.is_editable:
        raise ConflictError(f"the experiment is {experiment.get_status_display().lower()}; it can no longer be changed")


def invalidate_renders(experiment: Experiment) -> None:
    """A change of excerpts or conditions makes earlier renders stale."""
    if experiment.status == Experiment.Status.READY:
        Experiment.objects.filter(pk=experiment.pk).update(status=Experiment.Status.DRAFT)
        experiment.status = Experiment.Status.DRAFT


@transaction.atomic
def add_model_condition(
    *, experiment: Experiment, checkpoint: Checkpoint, label: str, knobs: dict[str, float] | None = None
) -> Condition:
    require_editable(experiment)
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
    invalidate_renders(experiment)
    return condition


@transaction.atomic
def add_prerendered_condition(*, experiment: Experiment, label: str) -> Condition:
    """A condition whose audio is uploaded per excerpt rather than rendered from a checkpoint."""
    require_editable(experiment)
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
    invalidate_renders(experiment)
    return condition


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
    require_editable(experiment)
    wanted = {kind: (on, FIXED_CONDITION_LABELS[kind]) for kind, on in zip(ANCHOR_KINDS, (anchor35, anchor70))}
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
        order: dict[str, int] = {
            ConditionKind.HIDDEN_REFERENCE: 0,
            ConditionKind.ANCHOR_35: 1,
            ConditionKind.ANCHOR_70: 2,
        }
        conditions = sorted(experiment.conditions.all(), key=lambda c: (order.get(c.kind, 3), c.position, c.pk))
        for i, c in enumerate(conditions):
            Condition.objects.filter(pk=c.pk).update(position=i)
        invalidate_renders(experiment)
    return experiment


@transaction.atomic
def remove_condition(*, condition: Condition) -> None:
    """Delete a model, pre-rendered or anchor condition (the hidden reference always stays)."""
    experiment = condition.experiment
    require_editable(experiment)
    if condition.kind == ConditionKind.HIDDEN_REFERENCE:
        raise ServiceError("the hidden reference is part of every MUSHRA trial (BS.1534-3 §5.1) and cannot be removed")
    condition.delete()
    _reindex_conditions(experiment)
    invalidate_renders(experiment)


def remove_excerpt(*, excerpt: Excerpt) -> None:
    """Delete an excerpt, its pre-rendered audio and its renders."""
    experiment = excerpt.experiment
    require_editable(experiment)
    files = [excerpt.dry_file, excerpt.reference_file] + [p.file for p in excerpt.prerendered_audio.all()]
    with transaction.atomic():
        excerpt.delete()
        invalidate_renders(experiment)
    delete_files(*files)


def remove_checkpoint(*, checkpoint: Checkpoint) -> None:
    """Delete a checkpoint no condition uses."""
    require_editable(checkpoint.experiment)
    used = list(checkpoint.conditions.values_list("label", flat=True))
    if used:
        raise ConflictError(f"{checkpoint.name}: used by condition(s) {', '.join(used)}; remove them first")
    files = [checkpoint.file, checkpoint.config_file]
    checkpoint.delete()
    delete_files(*files)


@transaction.atomic
def split_into_blocks(*, experiment: Experiment) -> Experiment:
    """Start the next block of a blocked design: a linked experiment with the same excerpts,
    checkpoints, anchors, texts and settings and no model conditions yet.

    BS.1534-3 §5.3 allows at most 12 signals per trial; more models are compared in
    several blocks (separate tests) that share the hidden reference and anchors.
    """
    group = selectors.block_group(experiment)
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
    for kind in ANCHOR_KINDS:
        if kind in kinds:
            Condition.objects.create(
                experiment=block, kind=kind, label=FIXED_CONDITION_LABELS[kind], position=block.conditions.count()
            )
    guard = FileGuard()
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
            checkpoint = Checkpoint(
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
                checkpoint.file.save(Path(c.file.name).name, File(fh), save=False)
            guard.stored(checkpoint.file)
            if c.config_file:
                with c.config_file.open("rb") as fh:
                    checkpoint.config_file.save(Path(c.config_file.name).name, File(fh), save=False)
                guard.stored(checkpoint.config_file)
            checkpoint.save()
    except BaseException:
        guard.rollback()
        raise
    return block


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
    if not flow(experiment, "training"):
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
