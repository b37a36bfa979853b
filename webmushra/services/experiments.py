"""Building an experiment: create, conditions, anchors, settings, removal, blocks, publish and close.

Uploads (excerpts, checkpoints, pre-rendered audio) are in ``uploads``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from modelrunner.errors import RenderError
from modelrunner.knobs import check_knobs

from .. import paradigms
from ..errors import ConflictError, FieldError, ServiceError
from ..inputs import text_problem
from ..models import (
    ANCHOR_KINDS,
    FIXED_CONDITION_LABELS,
    Checkpoint,
    Condition,
    ConditionKind,
    Excerpt,
    Experiment,
    PrerenderedAudio,
    RenderJob,
    Stimulus,
)
from ..rules import MAX_SIGNALS_PER_TRIAL, SETTINGS_FIELDS, participant_facing, validate_config
from . import trapping, trials
from .files import delete_files, delete_stored, is_local

log = logging.getLogger(__name__)


@transaction.atomic
def create_experiment(
    *, owner, title: str, sample_rate: int = 48000, description: str = "", anchors: bool = True, **fields: Any
) -> Experiment:
    if not title.strip():
        raise ServiceError("title: a title is required")
    if sample_rate not in (44100, 48000, 88200, 96000):
        raise ServiceError(f"sample_rate: {sample_rate} Hz is not one of 44100, 48000, 88200, 96000")
    if any(b["trapping"] for b in paradigms.blocks(fields.get("config") or {})):
        # A new experiment has no messages yet: they are uploaded to it (block_settings.add_trapping).
        raise FieldError(
            "config.blocks", "trapping questions are added after the experiment is made, with their messages"
        )
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
    *,
    experiment: Experiment,
    checkpoint: Checkpoint,
    label: str,
    knobs: dict[str, float] | None = None,
    display_name: str = "",
) -> Condition:
    require_editable(experiment)
    if checkpoint.experiment_id != experiment.pk:
        raise ServiceError("checkpoint: it belongs to another experiment")
    knobs = dict(knobs or {})
    unknown = sorted(set(knobs) - set(checkpoint.knob_names))
    if unknown:
        raise ServiceError(f"knobs: {', '.join(unknown)} not among the checkpoint's knobs {checkpoint.knob_names}")
    for k, v in knobs.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise ServiceError(f"knobs: {k} must be a finite number")
    ranges = checkpoint.summary.get("knob_ranges")
    if ranges and len(ranges) == len(checkpoint.knob_names):
        # The renderer's own check, applied now: a value the model cannot take never reaches a job.
        try:
            check_knobs(checkpoint.knob_names, ranges, knobs)
        except RenderError as exc:
            raise ServiceError(f"knobs: {exc}") from None
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
        display_name=clean_display_name(display_name),
        position=experiment.conditions.count(),
    )
    invalidate_renders(experiment)
    return condition


@transaction.atomic
def add_prerendered_condition(*, experiment: Experiment, label: str, display_name: str = "") -> Condition:
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
        experiment=experiment,
        kind=ConditionKind.PRERENDERED,
        label=label,
        display_name=clean_display_name(display_name),
        position=experiment.conditions.count(),
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
    if fields.get("estimated_minutes") is not None and not 1 <= int(fields["estimated_minutes"]) <= 600:
        raise ServiceError("estimated_minutes: between 1 and 600 minutes")
    target = fields.get("loudness_target_lufs")
    if target is not None and not (-70.0 <= float(target) <= 0.0):
        raise ServiceError("loudness_target_lufs: must be between -70 and 0 LUFS")
    if "loudness_target_lufs" in fields and (None if target is None else float(target)) != (
        experiment.loudness_target_lufs
    ):
        # The loudness target shapes every stimulus: changing it means preparing the items again.
        require_editable(experiment)
        RenderJob.objects.filter(experiment=experiment, kind=RenderJob.Kind.ITEM).delete()
        invalidate_renders(experiment)
    for name, value in fields.items():
        setattr(experiment, name, value)
    if config is not None:
        new_config = validate_config({**experiment.config, **config})
        blocks_before, blocks_after = paradigms.blocks(experiment.config), paradigms.blocks(new_config)
        if blocks_after != blocks_before:
            # The blocks decide which trials exist: they change only before anyone takes part.
            if not experiment.is_editable:
                raise ConflictError(
                    f"the blocks cannot change: the experiment is {experiment.get_status_display().lower()}; "
                    "they are set before it opens"
                )
            # A trapping message named anew must be one uploaded to this experiment (one already
            # named and since gone is reported where the trials are counted and refused at opening).
            named = {q["message"] for b in blocks_before for q in b["trapping"]}
            trapping.check_messages(experiment, blocks_after, skip=named)
            # Messages no longer named are deleted once the change is committed.
            dropped = trapping.own_messages(experiment, blocks_before) - trapping.own_messages(experiment, blocks_after)
            if dropped:
                transaction.on_commit(lambda: delete_stored(*dropped))
        if experiment.status == Experiment.Status.OPEN:
            # Participants keep the test they started: only exits and analysis change while open.
            before, after = participant_facing(experiment.config), participant_facing(new_config)
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            if changed:
                raise ConflictError(
                    f"close the experiment to change {', '.join(changed)}: participants have started with "
                    "the current settings (the completion and screen-out codes and the analysis can change now)"
                )
        experiment.config = new_config
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
        raise ServiceError("the hidden reference is part of every MUSHRA trial (BS.1534-3 §5.3) and cannot be removed")
    ir_file = condition.ir_file
    condition.delete()
    if ir_file:
        transaction.on_commit(lambda: delete_files(ir_file))
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
    tests = [e for e in excerpts if not e.is_training]
    if not tests:
        raise ConflictError(
            "cannot open: every excerpt is marked for training; the test needs at least one test excerpt"
        )
    # Training trials are built from training excerpts only, which are never in the test: nothing
    # heard or labelled in training (audio, URLs, names) can identify a test trial's signals.
    # One page per excerpt and design in each block (paradigms.designs: what each trial compares).
    kinds = list(experiment.conditions.values_list("pk", "kind"))
    written: list[str] = []  # trapping audio this open wrote: deleted if it is refused after all
    try:
        trials.make_trials(experiment, excerpts, tests, kinds, written)
    except BaseException:
        delete_stored(*written)
        raise
    experiment.status = Experiment.Status.OPEN
    experiment.opened_at = experiment.opened_at or timezone.now()
    experiment.save(update_fields=["status", "opened_at", "updated_at"])
    return experiment


@transaction.atomic
def set_excerpt_training(*, excerpt: Excerpt, training: bool) -> Excerpt:
    """Mark an excerpt for training only (it leaves the test) or put it back in the test."""
    experiment = Experiment.objects.select_for_update().get(pk=excerpt.experiment_id)
    require_editable(experiment)
    excerpt = Excerpt.objects.get(pk=excerpt.pk)
    if excerpt.is_training != bool(training):
        excerpt.is_training = bool(training)
        excerpt.save(update_fields=["is_training"])
    return excerpt


def clean_display_name(display_name: str) -> str:
    """A training display name: short and plain (it is shown to participants)."""
    name = " ".join(str(display_name or "").split())
    if len(name) > 60:
        raise ServiceError("display_name: at most 60 characters")
    if text_problem(name):
        raise ServiceError(f"display_name: {text_problem(name)}")
    return name


@transaction.atomic
def set_display_name(*, condition: Condition, display_name: str) -> Condition:
    """The name training trials show for a condition (empty: the neutral default)."""
    require_editable(Experiment.objects.select_for_update().get(pk=condition.experiment_id))
    condition = Condition.objects.get(pk=condition.pk)
    condition.display_name = clean_display_name(display_name)
    condition.save(update_fields=["display_name"])
    return condition


def delete_experiment(*, experiment: Experiment) -> None:
    """Delete an experiment with everything it stored: uploads, renders, stimuli, participants,
    ratings and reports. An open experiment is closed first by the researcher (refused here),
    so nobody is rating while their data disappears; a render in progress is abandoned (its
    workers find their job gone at the next heartbeat)."""
    experiment = Experiment.objects.get(pk=experiment.pk)
    if experiment.status == Experiment.Status.OPEN:
        raise ConflictError("close the experiment before deleting it: participants may be taking it now")
    files = [
        f
        for x in experiment.excerpts.all()
        for f in (x.dry_file, x.reference_file, x.lookback_dry_file, x.lookback_reference_file)
    ]
    files += [f for c in experiment.checkpoints.all() for f in (c.file, c.config_file)]
    files += [c.ir_file for c in experiment.conditions.exclude(ir_file="")]
    files += [p.file for p in PrerenderedAudio.objects.filter(condition__experiment=experiment)]
    loose = list(Stimulus.objects.filter(experiment=experiment).values_list("file", flat=True))
    loose += list(
        RenderJob.objects.filter(experiment=experiment).exclude(output_file="").values_list("output_file", flat=True)
    )
    loose += list(experiment.reports.exclude(file="").values_list("file", flat=True))
    loose += trapping.trapping_files(experiment)
    pk = experiment.pk
    with transaction.atomic():
        # Conditions first: they protect their checkpoints from a cascade.
        Condition.objects.filter(experiment=experiment).delete()
        experiment.delete()
    delete_files(*files)
    delete_stored(*loose)
    if is_local():  # leftovers of killed writes (.tmp-*) and the folders themselves
        media = Path(settings.MEDIA_ROOT)
        for folder in (media / "stimuli" / f"e{pk}", media / "renders" / f"e{pk}", media / "trapping" / f"e{pk}"):
            shutil.rmtree(folder, ignore_errors=True)
    log.info("experiment %s deleted with %d stored files", pk, len([f for f in files if f]) + len(loose))


@transaction.atomic
def close_experiment(*, experiment: Experiment) -> Experiment:
    updated = Experiment.objects.filter(pk=experiment.pk, status=Experiment.Status.OPEN).update(
        status=Experiment.Status.CLOSED, closed_at=timezone.now()
    )
    if updated != 1:
        raise ConflictError("only an open experiment can be closed")
    return Experiment.objects.get(pk=experiment.pk)
