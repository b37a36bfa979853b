"""Blocked designs: more models than one MUSHRA trial may hold are compared in several linked
experiments that share excerpts, checkpoints, hidden reference and anchors (BS.1534-3 §5.3)."""

from __future__ import annotations

from pathlib import Path

from django.core.files import File
from django.db import transaction

from ..models import ANCHOR_KINDS, FIXED_CONDITION_LABELS, Checkpoint, Condition, Excerpt, Experiment
from ..selectors import block_group
from .experiments import create_experiment
from .files import FileGuard


@transaction.atomic
def split_into_blocks(*, experiment: Experiment) -> Experiment:
    """Start the next block of a blocked design: a linked experiment with the same excerpts,
    checkpoints, anchors, texts and settings and no model conditions yet.

    BS.1534-3 §5.3 recommends at most 12 signals per trial; more models are compared in
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
    if config.get("blocks"):
        # Trapping messages belong to the experiment they were uploaded to: the new one has none yet.
        config["blocks"] = [{**b, "trapping": []} for b in config["blocks"] if isinstance(b, dict)]
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
                is_training=x.is_training,
            )
            for field in ("dry_file", "reference_file", "lookback_dry_file", "lookback_reference_file"):
                if not getattr(x, field):
                    continue
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
