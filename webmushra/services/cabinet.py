"""A model condition's cabinet impulse response: attach, replace, remove, and load it for a render.

The rules (mono, at most ``modelrunner.cabinet.MAX_IR_SECONDS``, resampled to the model's
rate, FFT convolution after the model) are ``modelrunner.cabinet``'s. An upload is checked
completely before anything is stored; a refused upload leaves nothing behind and the
condition as it was. Changing or removing the IR marks the condition's renders stale, so
the next render redoes its cells (and their items) and keeps everything else.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from django.core.files import File
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from modelrunner.errors import ModelRunnerError

from ..errors import ServiceError
from ..models import Condition, ConditionKind, Experiment, RenderJob
from .experiments import invalidate_renders, require_editable
from .files import FileGuard, check_size, delete_stored, local_copy, save_upload

log = logging.getLogger(__name__)

#: Extensions an IR is stored under (the file is kept byte for byte, so its SHA-256 is the upload's).
IR_SUFFIXES = (".wav", ".flac")


def _model_condition(condition: Condition) -> tuple[Experiment, Condition]:
    """Lock the experiment, check it is editable and the condition renders a model."""
    experiment = Experiment.objects.select_for_update().get(pk=condition.experiment_id)
    require_editable(experiment)
    condition = Condition.objects.select_related("checkpoint").get(pk=condition.pk)
    if condition.kind != ConditionKind.MODEL or condition.checkpoint is None:
        raise ServiceError(
            f"ir: {condition.label!r} is not a model condition ({condition.get_kind_display().lower()}); "
            "a cabinet impulse response applies to model conditions only"
        )
    return experiment, condition


def _mark_stale(experiment: Experiment, condition: Condition) -> None:
    """The next (incremental) render redoes the condition's cells and so every item they are in,
    whose job replaces the stimuli; the experiment cannot open before that."""
    RenderJob.objects.filter(experiment=experiment, kind=RenderJob.Kind.MODEL, condition=condition).delete()
    invalidate_renders(experiment)


def set_condition_ir(*, condition: Condition, file: UploadedFile | str | os.PathLike, name: str = "") -> Condition:
    """Attach (or replace) the cabinet IR of a model condition; returns the condition.

    ``name``: the file's name as its owner knows it (default: the upload's name). The file
    is checked at its own rate and at the model's before it is stored.
    """
    from modelrunner import cabinet

    tmp, filename = save_upload(file, name or None)
    guard = FileGuard()
    old: str | None = None
    try:
        check_size(tmp, filename)
        if Path(filename).suffix.lower() not in IR_SUFFIXES:
            raise ServiceError(f"{filename}: an impulse response must be a WAV or FLAC file (.wav or .flac)")
        with transaction.atomic():
            experiment, condition = _model_condition(condition)
            try:
                assert condition.checkpoint is not None  # checked by _model_condition
                ir = cabinet.load_ir(tmp, condition.checkpoint.sample_rate, name=filename)
            except ModelRunnerError as exc:
                raise ServiceError(f"ir: {str(exc).replace(tmp.name, filename)}") from None
            info = {k: ir.info[k] for k in ("name", "sample_rate", "frames", "seconds", "channels", "sha256")}
            old = condition.ir_file.name if condition.ir_file else None
            with open(tmp, "rb") as fh:
                condition.ir_file.save(filename, File(fh), save=False)
            guard.stored(condition.ir_file)
            condition.ir_info = info
            condition.save(update_fields=["ir_file", "ir_info"])
            _mark_stale(experiment, condition)
    except BaseException:
        guard.rollback()
        raise
    finally:
        tmp.unlink(missing_ok=True)
    if old:
        transaction.on_commit(lambda: delete_stored(old))
    return condition


@transaction.atomic
def remove_condition_ir(*, condition: Condition) -> Condition:
    """Take the cabinet IR off a model condition (its cells are rendered again without it)."""
    experiment, condition = _model_condition(condition)
    if not condition.ir_file:
        raise ServiceError(f"ir: condition {condition.label!r} has no impulse response to remove")
    old = condition.ir_file.name
    condition.ir_file = ""
    condition.ir_info = {}
    condition.save(update_fields=["ir_file", "ir_info"])
    _mark_stale(experiment, condition)
    transaction.on_commit(lambda: delete_stored(old))
    return condition


def load_condition_ir(condition: Condition, sample_rate: int):
    """The condition's IR at ``sample_rate`` (the model's), or ``None``; the stored file must
    still be the one that was checked (same SHA-256)."""
    from modelrunner import cabinet

    if not condition.ir_file:
        return None
    info = condition.ir_info or {}
    with local_copy(condition.ir_file.name) as path:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        if info.get("sha256") and sha != info["sha256"]:
            raise ModelRunnerError(
                f"the impulse response of condition {condition.label!r} changed on disk since it was checked "
                f"(SHA-256 {sha[:12]}, expected {info['sha256'][:12]}); attach it again"
            )
        return cabinet.load_ir(path, sample_rate, name=info.get("name") or path.name)
