"""Uploads: excerpts (dry input + the device recording), checkpoints and pre-rendered audio.

Each is checked completely before anything is stored; a refused upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from django.conf import settings
from django.core.files import File
from django.core.files.uploadedfile import SimpleUploadedFile, UploadedFile
from django.db import transaction

from modelrunner.errors import ModelRunnerError

from ..errors import ServiceError
from ..models import (
    Checkpoint,
    Condition,
    ConditionKind,
    Excerpt,
    Experiment,
    PrerenderedAudio,
)
from .experiments import invalidate_renders, require_editable
from .files import FileGuard, check_size, save_upload, wav_name

log = logging.getLogger(__name__)


#: Excerpts longer than this get a warning (BS.1534-3 §5.1: about 10 s, preferably not over 12 s).
LONG_EXCERPT_SECONDS = 12.0


@dataclass
class ExcerptCheck:
    """A checked dry/reference pair: both are kept as their first ``frames`` frames."""

    sample_rate: int
    frames: int
    channels: int
    warnings: list[str]


def check_excerpt_audio(dry_path: Path, dry_name: str, ref_path: Path, ref_name: str) -> ExcerptCheck:
    """Validate a dry/reference pair; return the length both are trimmed to, and warnings.

    Headers first, then each file in blocks (``modelrunner.audio.scan_audio``): the memory a
    check takes is bounded by the block, not by the excerpt's length."""
    from modelrunner.audio import AudioStats, scan_audio

    # The length from the header, before any audio is decoded: an excerpt beyond the limit
    # is refused without allocating it.
    declared: list[int] = []
    for path, name in ((dry_path, dry_name), (ref_path, ref_name)):
        try:
            info = sf.info(str(path))
        except Exception:  # not audio, or a header soundfile cannot read: scan_audio says why
            continue
        declared.append(int(info.frames))
        if info.samplerate > 0 and info.frames / info.samplerate > settings.MAX_EXCERPT_SECONDS:
            raise ServiceError(
                f"{name}: {info.frames / info.samplerate:.0f} s is longer than the "
                f"{settings.MAX_EXCERPT_SECONDS:.0f} s an excerpt may last (MAX_EXCERPT_SECONDS); "
                "cut it to the passage participants should hear"
            )

    def scan(path: Path, name: str, measure: int | None) -> AudioStats:
        try:
            return scan_audio(path, measure_frames=measure)
        except ModelRunnerError as exc:
            raise ServiceError(str(exc).replace(path.name, name)) from None

    # Measured over the common length the headers declare; measured again only where a
    # header's count was not the number of frames that decode.
    guess = min(declared) if len(declared) == 2 else None
    dry = scan(dry_path, dry_name, guess)
    ref = scan(ref_path, ref_name, guess)
    dry_sr = dry.sample_rate
    if dry_sr != ref.sample_rate:
        raise ServiceError(f"{dry_name} is at {dry_sr} Hz but {ref_name} is at {ref.sample_rate} Hz; they must match")
    warnings: list[str] = []
    n = min(dry.frames, ref.frames)
    if dry.frames != ref.frames:
        diff = abs(dry.frames - ref.frames)
        if diff > 0.05 * max(dry.frames, ref.frames):
            raise ServiceError(
                f"{dry_name} has {dry.frames} frames and {ref_name} has {ref.frames}; lengths differ by more than 5 %"
            )
        warnings.append(f"lengths differed by {diff} frames ({diff / dry_sr * 1000:.1f} ms); both trimmed to {n}")
    if dry.measured_frames != n or ref.measured_frames != n:
        dry = scan(dry_path, dry_name, n)
        ref = scan(ref_path, ref_name, n)
    seconds = n / dry_sr
    if seconds < 0.5:
        raise ServiceError(f"{dry_name}: {seconds:.2f} s is too short for a listening test (at least 0.5 s)")
    if seconds > LONG_EXCERPT_SECONDS:
        warnings.append(f"{seconds:.1f} s long; BS.1534-3 recommends excerpts of about 10 s")
    for stats, name in ((dry, dry_name), (ref, ref_name)):
        if stats.peak == 0.0:
            raise ServiceError(f"{name}: the file is silent")
        if stats.rms < 1e-4:
            warnings.append(f"{name}: nearly silent (RMS {20 * np.log10(stats.rms):.1f} dBFS)")
        if stats.full_scale:
            warnings.append(f"{name}: {stats.full_scale} samples at full scale (possible clipping)")
    return ExcerptCheck(sample_rate=dry_sr, frames=n, channels=ref.channels, warnings=warnings)


def store_checked_excerpt(check: ExcerptCheck, dry_path: Path, ref_path: Path) -> None:
    """Rewrite a checked pair in place as float32 WAV of ``check.frames`` frames (trimmed if
    needed), in blocks: exactly what was checked is stored."""
    from modelrunner.audio import copy_as_float_wav

    for path in (dry_path, ref_path):
        try:
            copy_as_float_wav(path, path, frames=check.frames)
        except ModelRunnerError as exc:
            raise ServiceError(str(exc)) from None


def add_excerpt(
    *,
    experiment: Experiment,
    name: str,
    dry: UploadedFile | str | os.PathLike,
    reference: UploadedFile | str | os.PathLike,
    lookback_dry: UploadedFile | str | os.PathLike | None = None,
    lookback_reference: UploadedFile | str | os.PathLike | None = None,
    is_training: bool = False,
) -> Excerpt:
    """Validate and store an excerpt; on any problem nothing is left behind.

    ``is_training``: heard in training trials only, never in the test.

    ``lookback_dry``/``lookback_reference``: optional context recorded immediately before
    the excerpt, for models that estimate their starting state from it (SPTMod).
    """
    require_editable(experiment)
    if (lookback_dry is None) != (lookback_reference is None):
        raise ServiceError("look-back: give both the dry input and the device recording before the excerpt, or neither")
    dry_tmp, dry_name = save_upload(dry)
    ref_tmp, ref_name = save_upload(reference)
    lb = (
        [save_upload(lookback_dry), save_upload(lookback_reference)]
        if lookback_dry is not None and lookback_reference is not None
        else []
    )
    guard = FileGuard()
    try:
        check_size(dry_tmp, dry_name)
        check_size(ref_tmp, ref_name)
        check = check_excerpt_audio(dry_tmp, dry_name, ref_tmp, ref_name)
        lookback = None
        if lb:
            (lbd_tmp, lbd_name), (lbr_tmp, lbr_name) = lb
            check_size(lbd_tmp, lbd_name)
            check_size(lbr_tmp, lbr_name)
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
                frames=check.frames,
                channels=check.channels,
                warnings=check.warnings,
                is_training=bool(is_training),
            )
            store_checked_excerpt(check, dry_tmp, ref_tmp)
            with open(dry_tmp, "rb") as fh:
                excerpt.dry_file.save(wav_name(dry_name), File(fh), save=False)
            guard.stored(excerpt.dry_file)
            with open(ref_tmp, "rb") as fh:
                excerpt.reference_file.save(wav_name(ref_name), File(fh), save=False)
            guard.stored(excerpt.reference_file)
            if lookback is not None:
                store_checked_excerpt(lookback, lb[0][0], lb[1][0])
                for (tmp, fname), field in (
                    (lb[0], excerpt.lookback_dry_file),
                    (lb[1], excerpt.lookback_reference_file),
                ):
                    with open(tmp, "rb") as fh:
                        field.save(wav_name(fname), File(fh), save=False)
                    guard.stored(field)
                excerpt.warnings = excerpt.warnings + [
                    f"look-back: {w}" for w in lookback.warnings if "recommends" not in w
                ]
            excerpt.save()
            invalidate_renders(experiment)
        return excerpt
    except BaseException:
        guard.rollback()
        raise
    finally:
        for p in (dry_tmp, ref_tmp, *(t for t, _ in lb)):
            p.unlink(missing_ok=True)


def add_checkpoint(
    *,
    experiment: Experiment,
    name: str,
    file: UploadedFile | str | os.PathLike,
    config: UploadedFile | str | os.PathLike | None = None,
    sample_rate: int | None = None,
    slimmable_size: float | None = None,
) -> Checkpoint:
    """Validate (safe load, architecture recognised) and store a checkpoint. ``slimmable_size``
    (NAM only, 0..1): the size a slimmable model runs at, kept as its config file."""
    from modelrunner import formats

    require_editable(experiment)
    if slimmable_size is not None:
        if config is not None:
            raise ServiceError("slimmable_size: give either a config file or a slimmable size, not both")
        config = SimpleUploadedFile("slimmable.json", json.dumps({"slimmable_size": slimmable_size}).encode())
    tmp, filename = save_upload(file)
    cfg_tmp, cfg_name = save_upload(config) if config is not None else (None, "")
    guard = FileGuard()
    try:
        size = check_size(tmp, filename)
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
        if slimmable_size is not None and model.format != "nam":
            raise ServiceError(f"slimmable_size: only NAM files have sizes to choose ({filename} is {model.format})")
        sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
        summary = model.summary()
        # Provenance names the file as the researcher named it, not the temporary upload.
        provenance = summary.get("provenance") or {}
        if provenance:
            provenance["file_name"] = filename
            provenance["warnings"] = [str(w).replace(tmp.name, filename) for w in provenance.get("warnings", [])]
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


def add_prerendered_audio(
    *, condition: Condition, excerpt: Excerpt, audio: UploadedFile | str | os.PathLike
) -> PrerenderedAudio:
    """Store one excerpt's audio for a pre-rendered condition (checked like an excerpt, in
    blocks: only its header and length are kept)."""
    from modelrunner.audio import check_audio

    if condition.kind != ConditionKind.PRERENDERED:
        raise ServiceError(f"condition {condition.label!r} is not a pre-rendered condition")
    if excerpt.experiment_id != condition.experiment_id:
        raise ServiceError("excerpt: it belongs to another experiment")
    require_editable(condition.experiment)
    tmp, name = save_upload(audio)
    guard = FileGuard()
    try:
        check_size(tmp, name)
        try:
            info = check_audio(tmp)
        except ModelRunnerError as exc:
            raise ServiceError(str(exc).replace(tmp.name, name)) from None
        sr = info.sample_rate
        if sr != excerpt.sample_rate:
            raise ServiceError(f"{name} is at {sr} Hz but the excerpt {excerpt.name!r} is at {excerpt.sample_rate} Hz")
        with transaction.atomic():
            row = PrerenderedAudio(condition=condition, excerpt=excerpt, sample_rate=sr, frames=info.frames)
            with open(tmp, "rb") as fh:
                row.file.save(wav_name(name) if name.lower().endswith(".wav") else name, File(fh), save=False)
            guard.stored(row.file)
            PrerenderedAudio.objects.filter(condition=condition, excerpt=excerpt).delete()
            row.save()
            invalidate_renders(condition.experiment)
        return row
    except BaseException:
        guard.rollback()
        raise
    finally:
        tmp.unlink(missing_ok=True)
