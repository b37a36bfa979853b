"""Running render jobs: claim the row, call the model runner, record the result.

Called by the Celery tasks in ``webmushra/tasks.py``. Inputs are read from the media
storage (``services.files.local_copy``: on another host than the web server too) and
every result is put in place whole or not at all (``services.files.store``), so a rerun
after a crash is harmless and no half-written stimulus is ever served.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import traceback
from typing import TYPE_CHECKING

import numpy as np
from django.conf import settings
from django.db import DatabaseError, connection

from modelrunner import limits
from modelrunner.errors import ModelRunnerError

from . import errors
from .models import ConditionKind, RenderJob
from .services import cabinet, files, rendering

if TYPE_CHECKING:
    from modelrunner.metrics import ReferenceCache

log = logging.getLogger(__name__)

#: Stimuli are 24-bit PCM WAV: one identical format (and byte length) per trial.
STIMULUS_SUBTYPE = "PCM_24"
#: The highest sample peak a stored stimulus may have (−0.1 dBFS): PCM cannot hold 1.0, and an
#: item whose resampled or aligned peak reaches it is turned down as a whole to this peak.
HEADROOM_PEAK = 10 ** (-0.1 / 20)


#: Memory a worker process keeps its excerpts' prepared device recordings in between model jobs
#: (``modelrunner.metrics.ReferenceCache``; about 56 MB per 10 s at 44.1 kHz, 122 MB at 96 kHz),
#: at most an eighth of ``RENDER_MEMORY_MB`` where that is set.
REFERENCE_CACHE_MB = 256


@functools.cache
def _reference_cache() -> ReferenceCache:
    """This process's prepared device recordings: a model job's metrics reuse the recording's side
    (its spectra, filtered versions, loudness) computed by an earlier job of the same excerpt."""
    from modelrunner.metrics import ReferenceCache

    cap = int(settings.RENDER_MEMORY_MB)
    mb = min(REFERENCE_CACHE_MB, cap // 8) if cap > 0 else REFERENCE_CACHE_MB
    return ReferenceCache(max_bytes=mb * 2**20)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class _Beat:
    """Throttled heartbeat: progress reaches the row at most every ``interval`` seconds."""

    def __init__(self, claim: rendering.Claim, interval: float = 0.5) -> None:
        self.claim = claim
        self.interval = interval
        self.last = 0.0

    def __call__(self, progress: float) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval or progress >= 1.0:
            self.last = now
            rendering.heartbeat(claim=self.claim, progress=progress)


def _read_stored(name: str) -> tuple[np.ndarray, int]:
    """A stored audio file's samples (``modelrunner.audio.read_audio`` on a local copy)."""
    from modelrunner.audio import read_audio

    with files.local_copy(name) as path:
        return read_audio(path)


class _KeepAlive:
    """Writes the job's heartbeat every ``RENDER_HEARTBEAT_SECONDS`` from a thread of its own
    while the job runs, so steps that report no progress (metrics, loudness, anchors, writing)
    never look like a dead worker. Stops when the job ends or is no longer ours."""

    def __init__(self, claim: rendering.Claim) -> None:
        self.claim = claim
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{claim.job.pk}", daemon=True)

    def _run(self) -> None:
        interval = float(settings.RENDER_HEARTBEAT_SECONDS)
        try:
            while not self.stop.wait(interval):
                try:
                    if not rendering.keep_alive(claim=self.claim):
                        return
                except DatabaseError:  # a busy or restarting database: try again next time
                    log.warning("heartbeat of job %s not written; retrying", self.claim.job.pk)
        finally:
            connection.close()

    def __enter__(self) -> _KeepAlive:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def run_job(job_id: int) -> str:
    """Run one job if it can be claimed; return what happened (for logs and tests)."""
    claim = rendering.claim_job(job_id=job_id, worker=worker_name())
    if claim is None:
        return "skipped"
    with _KeepAlive(claim):
        return _run_claimed(claim, job_id)


def _run_claimed(claim: rendering.Claim, job_id: int) -> str:
    try:
        if claim.job.kind == RenderJob.Kind.MODEL:
            _run_model(claim)
        else:
            _run_item(claim)
    except rendering.JobLost:
        log.warning("job %s was taken back while running; result discarded", job_id)
        return "lost"
    except (ModelRunnerError, errors.ServiceError) as exc:
        rendering.fail_job(claim=claim, error=str(exc))
        return "failed"
    except OSError as exc:
        # Disk full, permissions: say so plainly; nothing was renamed into place.
        rendering.fail_job(
            claim=claim, error=f"could not write the result: {exc.strerror or exc} ({exc.filename or ''})"
        )
        return "failed"
    except Exception as exc:  # an unexpected bug: keep the trace for the operator
        if limits.is_out_of_memory(exc):
            # Not transient: another attempt asks for the same memory, so the job fails now, once.
            log.warning("render job %s ran out of memory: %s", job_id, exc)
            rendering.fail_job(claim=claim, error=out_of_memory_message(exc))
            return "failed"
        log.exception("render job %s failed", job_id)
        rendering.fail_job(claim=claim, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        return "failed"
    return "done"


def out_of_memory_message(exc: BaseException) -> str:
    """The reason a job that ran out of memory shows to the researcher and the operator."""
    cap = int(settings.RENDER_MEMORY_MB)
    limit = f"the worker's cap of {cap} MB (RENDER_MEMORY_MB)" if cap > 0 else "the memory this worker has"
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return (
        f"out of memory: rendering needed more than {limit} ({type(exc).__name__}: {detail}); not retried, "
        "as another attempt would need the same: use a smaller model or a shorter excerpt, or raise the cap"
    )


def _run_model(claim: rendering.Claim) -> None:
    from modelrunner import device, metrics, policy
    from modelrunner.audio import encode_wav

    job = claim.job
    excerpt = job.excerpt
    beat = _Beat(claim)
    dry, sr = _read_stored(excerpt.dry_file.name)
    reference, _ = _read_stored(excerpt.reference_file.name)
    # Look-back context is at the excerpt's rate (checked on upload); the policy decides whether it is used.
    lb_dry = lb_reference = None
    if excerpt.lookback_dry_file:
        lb_dry, _ = _read_stored(excerpt.lookback_dry_file.name)
        lb_reference, _ = _read_stored(excerpt.lookback_reference_file.name)
    condition = job.condition
    if condition is None or condition.checkpoint is None:
        raise ModelRunnerError(f"render job {job.pk} renders a model but has no condition with a checkpoint")
    # On RENDER_DEVICE: a GPU worker loads the weights onto its GPU and renders there.
    model = rendering.load_checkpoint_model(condition.checkpoint, device=rendering.render_device())
    # The condition's cabinet IR (if any) is applied after the model, at the model's rate.
    ir = cabinet.load_condition_ir(condition, model.sample_rate)
    beat(0.05)
    started = time.perf_counter()
    output, start_state = policy.render_excerpt(
        model,
        dry,
        sr,
        knobs=condition.knobs or None,
        ir=ir,
        lookback_dry=lb_dry,
        lookback_reference=lb_reference,
        progress=lambda p: beat(0.05 + 0.85 * float(p)),
    )
    seconds = time.perf_counter() - started
    output = np.asarray(output, dtype=np.float32)
    if output.ndim == 1:
        output = output[:, None]
    if not np.isfinite(output).all():
        raise ModelRunnerError("the model produced NaN or infinite samples")
    n = min(output.shape[0], reference.shape[0])
    ref_mono = reference[:n].mean(axis=1)
    out_mono = output[:n].mean(axis=1)
    prepared = _reference_cache().get(excerpt.reference_file.name, ref_mono, sr)
    values = metrics.compute_all(out_mono, ref_mono, sr, reference=prepared)
    beat(0.95)
    rel = f"renders/e{job.experiment_id}/x{job.excerpt_id}_c{job.condition_id}.wav"
    files.store(rel, encode_wav(output, sr, subtype="FLOAT"))
    report = {
        "metrics": {k: (None if not np.isfinite(v) else float(v)) for k, v in values.items()},
        "render_seconds": round(seconds, 3),
        "realtime_factor": round((dry.shape[0] / sr) / seconds, 2) if seconds > 0 else None,
        "model": {
            "architecture": model.architecture,
            "sample_rate": model.sample_rate,
            "format": model.format,
            # The compiled kernel or PyTorch's, and why (modelrunner.pathchoice).
            "render_kernel": str(getattr(model.module, "render_kernel", "PyTorch")),
            # Where it rendered: cpu, or the GPU (RENDER_DEVICE, modelrunner.device).
            "device": device.describe(model.device),
        },
        "peak_dbfs": float(20 * np.log10(max(float(np.max(np.abs(output))), 1e-12))),
        "start_state": start_state,
        # Metrics above are of model + IR (what is heard) against the reference.
        "cabinet_ir": ir.info if ir is not None else None,
    }
    rendering.complete_model_job(claim=claim, output_file=rel, report=report)


def _run_item(claim: rendering.Claim) -> None:
    from modelrunner import anchors, loudness

    job = claim.job
    experiment = job.experiment
    excerpt = job.excerpt
    beat = _Beat(claim)
    reference, sr = _read_stored(excerpt.reference_file.name)
    signals: dict[str, np.ndarray] = {}
    metrics_by_condition: dict[int, dict] = {}
    info_by_condition: dict[int, dict] = {}
    conditions = list(experiment.conditions.all())
    for condition in conditions:
        if condition.kind == ConditionKind.HIDDEN_REFERENCE:
            continue
        if condition.kind == ConditionKind.MODEL:
            model_job = RenderJob.objects.get(kind=RenderJob.Kind.MODEL, condition=condition, excerpt=excerpt)
            audio, _ = _read_stored(model_job.output_file)
            audio = _fit(audio, reference.shape)
            metrics_by_condition[condition.pk] = model_job.report.get("metrics", {})
            info_by_condition[condition.pk] = {
                k: model_job.report.get(k)
                for k in ("start_state", "render_seconds", "realtime_factor", "model", "cabinet_ir")
            }
        elif condition.kind == ConditionKind.PRERENDERED:
            pre = condition.prerendered_audio.get(excerpt=excerpt)
            audio, _ = _read_stored(pre.file.name)
            audio = _fit(audio, reference.shape)
        else:
            cutoff = ConditionKind.anchor_cutoff_hz(condition.kind)
            if cutoff is None:
                raise ModelRunnerError(f"condition {condition.pk}: no signal for kind {condition.kind!r}")
            audio = anchors.lowpass_anchor(reference, sr, cutoff)
            # An excerpt with little energy above the cut-off gives an anchor that sounds like the
            # reference; the researcher is told on the experiment page and in the report.
            difference = anchors.anchor_difference(reference, audio, sr, cutoff)
            info_by_condition[condition.pk] = {"anchor_difference": difference.to_dict()}
        signals[str(condition.pk)] = np.asarray(audio, dtype=np.float32).reshape(reference.shape)
    beat(0.3)
    aligned_ref, aligned, report = loudness.align_item(
        reference, signals, sr, target_lufs=experiment.loudness_target_lufs
    )
    beat(0.6)
    out_sr = experiment.sample_rate
    everything = {**aligned}
    for condition in conditions:
        if condition.kind == ConditionKind.HIDDEN_REFERENCE:
            everything[str(condition.pk)] = aligned_ref
    stimuli: list[dict] = []
    written: list[str] = []
    try:
        _write_stimuli(
            conditions,
            everything,
            sr,
            out_sr,
            experiment,
            excerpt,
            report,
            metrics_by_condition,
            info_by_condition,
            stimuli,
            written,
        )
        beat(0.95)
        rendering.complete_item_job(claim=claim, stimuli=stimuli, report={"loudness": report.to_dict()})
    except BaseException:
        # Complete files under their final names but with no Stimulus row would never be served;
        # remove them anyway so a failed attempt leaves nothing behind.
        files.delete_stored(*written)
        raise


def _write_stimuli(
    conditions,
    everything,
    sr,
    out_sr,
    experiment,
    excerpt,
    report,
    metrics_by_condition,
    info_by_condition,
    stimuli,
    written,
) -> None:
    from modelrunner import loudness
    from modelrunner.audio import encode_wav
    from modelrunner.render import resample

    resampled = {c.pk: resample(everything[str(c.pk)], sr, out_sr) for c in conditions}
    # Resampling (and loudness alignment) can push a peak past full scale. The whole item is then
    # turned down by one gain, so the conditions keep their aligned loudness relative to each
    # other; the gain is recorded with every stimulus.
    item_peak = max(float(np.max(np.abs(a))) for a in resampled.values())
    headroom_db = 0.0
    if item_peak >= HEADROOM_PEAK:
        headroom_db = 20 * float(np.log10(HEADROOM_PEAK / item_peak))
        scale = np.float32(10 ** (headroom_db / 20))
        resampled = {k: (a * scale).astype(np.float32) for k, a in resampled.items()}
    for condition in conditions:
        audio = resampled[condition.pk]
        peak = float(np.max(np.abs(audio)))
        rel = f"stimuli/e{experiment.pk}/x{excerpt.pk}_c{condition.pk}.wav"
        data = encode_wav(audio, out_sr, subtype=STIMULUS_SUBTYPE)
        size = files.store(rel, data)
        written.append(rel)
        stimuli.append(
            {
                "condition_id": condition.pk,
                "file": rel,
                "sample_rate": out_sr,
                "frames": audio.shape[0],
                "channels": audio.shape[1],
                "size": size,
                "loudness_lufs": _finite(loudness.integrated_loudness(audio, out_sr)),
                "gain_db": _gain_for(report, str(condition.pk), condition.kind) + headroom_db,
                "peak_dbfs": float(20 * np.log10(max(peak, 1e-12))),
                "metrics": metrics_by_condition.get(condition.pk, {}),
                "render_info": {
                    **info_by_condition.get(condition.pk, {}),
                    "loudness_gain_db": _gain_for(report, str(condition.pk), condition.kind),
                    "headroom_gain_db": headroom_db,
                },
            }
        )
    sizes = {s["size"] for s in stimuli}
    if len(sizes) != 1:
        raise ModelRunnerError(f"stimuli of one trial differ in byte length ({sorted(sizes)}); refusing to unblind")


def _fit(audio: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Trim or zero-pad to the reference's length; match its channel count."""
    frames, channels = shape
    audio = audio[:frames]
    if audio.shape[0] < frames:
        audio = np.pad(audio, ((0, frames - audio.shape[0]), (0, 0)))
    if audio.shape[1] != channels:
        audio = np.repeat(audio.mean(axis=1, keepdims=True), channels, axis=1)
    return audio


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _gain_for(report, key: str, kind: str) -> float:
    """Total gain applied to a signal (item headroom gain included), from the loudness report."""
    sig = report.reference if kind == ConditionKind.HIDDEN_REFERENCE else report.conditions[key]
    return float(sig.gain_db)
