"""Render audio through an ``EffectModel``: streaming, batched and segment-parallel.

Shapes: audio arrays are float32 ``(frames, channels)`` (1-D means one channel); the
model's module takes ``(batch, frames)`` mono audio and ``(batch, K)`` knobs and
returns ``(batch, frames)`` plus a state (see :mod:`modelrunner.model`).

* :func:`reference_forward` is one whole-signal forward call: the plain baseline and
  the correctness reference.
* :func:`render` streams one signal in chunks, carrying the model's state, which gives
  the same output as one whole call (the streaming protocol's promise).
* :func:`render_batch` renders every excerpt of a test in one batch and, for long
  excerpts, cuts each into segments rendered side by side as batch items. A segment
  is preceded by context from the signal itself: exactly ``receptive_field - 1``
  frames for convolutional models (exact), or a warm-up for recurrent models whose
  outputs are discarded (an approximation; recurrent amp models are trained the same
  way, on segments whose first stretch only initialises the state: Wright et al.,
  "Real-time guitar amplifier emulation with deep learning", Applied Sciences 10(3),
  2020). Every segment boundary is checked
  against the neighbouring segment's output over a short window (the first segment
  starts at the signal's start, so the first boundary is checked against the true
  sequential output); an excerpt whose error-to-signal ratio exceeds ``max_esr`` is
  rendered again sequentially.

Renders run where the model's weights are (``EffectModel.device``; ``device=`` moves
them first, see :mod:`modelrunner.device`): the input goes there once per batch, state
stays there between chunks, and the output comes back as CPU float32 arrays. On the CPU
a module may render through a compiled kernel (``modelrunner.pathchoice``); elsewhere
always through PyTorch's, with the same chunking, state and segment plan logic.

Stereo input is rendered as two independent mono signals (one batch item per
channel): the models are mono. Output is float and never clipped; peaks above full
scale are flagged in the :class:`RenderReport`. Input at another rate than the model's
is resampled with a polyphase filter (``scipy.signal.resample_poly`` with the exact
rational ratio) to the model's rate, and the output back to the input rate, trimmed
to the input's length.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, overload

import numpy as np
import torch
from scipy.signal import resample_poly

from . import device as devices
from . import native
from .audio import as_2d
from .errors import AudioError, RenderError
from .model import EffectModel

Progress = Callable[[float], None]

#: Samples per call when rendering a batch (batch * chunk stays near this): large enough
#: that per-call overhead vanishes, small enough that activations stay in cache (on one
#: core, 2**16 beat 2**18 by about 1.4x for both LSTM-32 and NAM's standard WaveNet). A
#: module may set its own (``batch_chunk_budget``; the recurrent and NAM WaveNet ones do).
BATCH_CHUNK_BUDGET = 1 << 16
#: Batch size aimed at when cutting recurrent models' signals into segments: matrix-matrix
#: products pay off up to about this many rows on one CPU core, while every extra row
#: adds a warm-up. A module may set its own (``batch_rows``).
RECURRENT_ROWS = 64
#: On a GPU (any device but the CPU): frames per call over all batch rows, and the rows a
#: recurrent model's signals are cut into. A GPU steps every row of a recurrent layer in
#: one kernel launch, so many rows and long calls pay (the warm-ups bound the rows: each
#: segment is at least four warm-ups long, ``_auto_segment``).
DEVICE_CHUNK_BUDGET = 1 << 20
DEVICE_ROWS = 256
#: Default error-to-signal ratio above which parallel output is refused.
MAX_ESR = 1e-7
#: Energy floor per sample (-100 dBFS) so that ESR over near-silence stays meaningful.
_ENERGY_FLOOR = 1e-10


@dataclass
class RenderReport:
    """How a render went.

    ``path`` is ``"parallel"`` (all excerpts segment-parallel), ``"sequential"`` (each
    signal streamed whole, in one batch) or ``"mixed"`` (the excerpts listed in
    ``fallback_items`` failed the boundary check and were rendered sequentially).
    ``esr_check`` is the largest boundary error-to-signal ratio measured (``None`` when
    there was no boundary to check). ``realtime_factor`` is seconds of input audio
    rendered per second of wall-clock time. ``kernel`` is the module's ``render_kernel``:
    the compiled kernel that rendered, or "PyTorch" and why (``modelrunner.pathchoice``).
    ``device`` is where it rendered (``cpu``, or ``cuda:0 (device name)``).
    """

    path: str = "sequential"
    esr_check: float | None = None
    clipped: bool = False
    peak: float = 0.0
    resampled: bool = False
    seconds: float = 0.0
    realtime_factor: float = 0.0
    segments: int = 0
    fallback_items: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    kernel: str = "PyTorch"
    device: str = "cpu"


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling along axis 0 by the exact ratio ``to_rate / from_rate``.

    Uses ``scipy.signal.resample_poly`` (zero-phase Kaiser-windowed FIR) with
    ``up = to_rate / g`` and ``down = from_rate / g``, ``g = gcd``; identity when equal.
    """
    a = np.asarray(audio, dtype=np.float32)
    from_rate, to_rate = int(from_rate), int(to_rate)
    if from_rate <= 0 or to_rate <= 0:
        raise AudioError(f"sample rates must be positive, got {from_rate} and {to_rate}")
    if from_rate == to_rate:
        return a
    g = math.gcd(from_rate, to_rate)
    return resample_poly(a, to_rate // g, from_rate // g, axis=0).astype(np.float32, copy=False)


def _fit_length(a: np.ndarray, frames: int) -> np.ndarray:
    """Trim or zero-pad axis 0 to exactly ``frames``."""
    if a.shape[0] >= frames:
        return a[:frames]
    pad = np.zeros((frames - a.shape[0],) + a.shape[1:], dtype=a.dtype)
    return np.concatenate([a, pad], axis=0)


def _check_audio(audio: np.ndarray, what: str = "audio") -> np.ndarray:
    a = as_2d(audio)
    if a.shape[0] == 0:
        raise AudioError(f"{what} has no sample frames")
    if not np.isfinite(a).all():
        raise AudioError(f"{what} contains NaN or infinite samples")
    return a


def _all_finite(t: torch.Tensor) -> bool:
    """No NaN or infinity in ``t``. On the CPU by its minimum and maximum (both carry a NaN
    and either an infinity), two passes that allocate nothing: a tenth of ``isfinite``'s
    time on a rendered job."""
    if t.numel() == 0:
        return True
    if t.device.type != "cpu":
        return bool(torch.isfinite(t).all())
    a = t.numpy()
    return math.isfinite(float(a.min())) and math.isfinite(float(a.max()))


def _check_rate(sample_rate: int) -> int:
    try:
        rate = int(sample_rate)
    except (TypeError, ValueError):
        raise AudioError(f"sample rate must be an integer, got {sample_rate!r}") from None
    if rate <= 0 or rate != sample_rate:
        raise AudioError(f"sample rate must be a positive integer, got {sample_rate!r}")
    return rate


def _chunk_budget(model: EffectModel) -> int:
    """Frames per call across the batch (the module may say what suits its CPU kernels)."""
    if model.device.type != "cpu":
        return DEVICE_CHUNK_BUDGET
    return int(getattr(model.module, "batch_chunk_budget", BATCH_CHUNK_BUDGET))


def _batch_rows(model: EffectModel) -> int:
    """Rows a recurrent model's signals are cut into (the module may say what suits it)."""
    if model.device.type != "cpu":
        return DEVICE_ROWS
    return int(getattr(model.module, "batch_rows", RECURRENT_ROWS))


def _on_device(model: EffectModel, device: torch.device | str | None) -> torch.device:
    """Move the model to ``device`` when one is given; the device it renders on."""
    if device is not None:
        model.to(devices.prepare(device))
    return devices.prepare(model.device)


def _forward_stream(
    model: EffectModel,
    x: torch.Tensor,
    knobs: torch.Tensor,
    chunk_size: int,
    on_frames: Callable[[int], None] | None = None,
    state: object = None,
) -> torch.Tensor:
    """Run ``x`` ``(B, T)`` through the module in chunks of ``chunk_size`` frames, carrying
    state from ``state`` (``None``: silence; else on the model's device). Runs on the
    model's device; returns the output on the CPU."""
    if chunk_size < 1:
        raise RenderError(f"chunk_size must be >= 1, got {chunk_size}")
    device = _on_device(model, None)
    x = x.to(device)
    knobs = knobs.to(device)
    batch, frames = x.shape
    out = torch.empty_like(x)
    step = model.streaming_call()
    # The weights cannot change between this loop's calls: their version is read once.
    with torch.inference_mode(), native.fixed_weights():
        for start in range(0, frames, chunk_size):
            stop = min(frames, start + chunk_size)
            y, state = step(x[:, start:stop], knobs, state)
            if tuple(y.shape) != (batch, stop - start):
                raise RenderError(f"model returned shape {tuple(y.shape)} for input {(batch, stop - start)}")
            out[:, start:stop] = y
            if on_frames is not None:
                on_frames(stop - start)
    out = out.cpu()
    if not _all_finite(out):
        raise RenderError("model produced NaN or infinite output")
    return out


def reference_forward(
    model: EffectModel, audio_at_model_rate: np.ndarray, knobs: dict[str, float] | None = None
) -> np.ndarray:
    """One whole-signal forward call, no chunking or resampling: the reference output.

    ``audio_at_model_rate``: ``(frames,)`` or ``(frames, channels)`` at
    ``model.sample_rate``; returns float32 ``(frames, channels)`` (on the CPU, whatever
    the model's device).
    """
    a = _check_audio(audio_at_model_rate)
    device = _on_device(model, None)
    k = model.knob_tensor(knobs, a.shape[1]).to(device)
    x = torch.from_numpy(np.ascontiguousarray(a.T)).to(device)
    with torch.inference_mode():
        y, _ = model.module(x, k, None)
    if tuple(y.shape) != tuple(x.shape):
        raise RenderError(f"model returned shape {tuple(y.shape)} for input {tuple(x.shape)}")
    if not bool(torch.isfinite(y).all()):
        raise RenderError("model produced NaN or infinite output")
    return np.ascontiguousarray(y.cpu().numpy().T, dtype=np.float32)


class _ProgressMeter:
    """Maps frames done to a monotonic fraction in [0, 1], even when more work is added.

    A stage fills the fraction from where the previous one stopped up to ``ceiling``; a
    stage that may be followed by a fallback stops at 0.5, so the fallback has room.
    """

    def __init__(self, callback: Progress | None, total: int) -> None:
        self.callback = callback
        self.last = 0.0
        self.start_stage(total)

    def start_stage(self, total: int, ceiling: float = 1.0) -> None:
        """Start a stage of ``total`` frames that fills the fraction up to ``ceiling``."""
        self.base = self.last
        self.ceiling = max(self.base, min(1.0, ceiling))
        self.done = 0
        self.total = max(1, int(total))

    def frames(self, n: int) -> None:
        self.done += n
        frac = self.base + (self.ceiling - self.base) * min(1.0, self.done / self.total)
        self._emit(min(frac, 1.0 - 1e-9))

    def finish(self) -> None:
        self._emit(1.0)

    def _emit(self, frac: float) -> None:
        if frac > self.last or (frac == 1.0 and self.last < 1.0):
            self.last = frac
            if self.callback is not None:
                self.callback(frac)


def render_kernel(model: EffectModel) -> str:
    """Which kernel renders ``model``: the module's ``render_kernel``, else PyTorch's."""
    return str(getattr(model.module, "render_kernel", "PyTorch"))


def _finish_report(report: RenderReport, outputs: Sequence[np.ndarray], seconds_in: float, t0: float) -> None:
    report.seconds = time.perf_counter() - t0
    report.realtime_factor = seconds_in / report.seconds if report.seconds > 0 else float("inf")
    report.peak = float(max((max(-o.min(), o.max()) if o.size else 0.0) for o in outputs))
    report.clipped = report.peak > 1.0
    if report.clipped:
        report.warnings.append(f"output peaks at {report.peak:.3f} (above full scale); kept as float, not clipped")


@overload
def render(
    model: EffectModel,
    audio: np.ndarray,
    sample_rate: int,
    *,
    knobs: dict[str, float] | None = ...,
    chunk_size: int = ...,
    progress: Progress | None = ...,
    parallel: bool = ...,
    device: torch.device | str | None = ...,
    with_report: Literal[False] = ...,
) -> np.ndarray: ...
@overload
def render(
    model: EffectModel,
    audio: np.ndarray,
    sample_rate: int,
    *,
    knobs: dict[str, float] | None = ...,
    chunk_size: int = ...,
    progress: Progress | None = ...,
    parallel: bool = ...,
    device: torch.device | str | None = ...,
    with_report: Literal[True],
) -> tuple[np.ndarray, RenderReport]: ...


def render(
    model: EffectModel,
    audio: np.ndarray,
    sample_rate: int,
    *,
    knobs: dict[str, float] | None = None,
    chunk_size: int = 65536,
    progress: Progress | None = None,
    parallel: bool = True,
    device: torch.device | str | None = None,
    with_report: bool = False,
) -> np.ndarray | tuple[np.ndarray, RenderReport]:
    """Render one signal through ``model`` by streaming it in chunks, carrying state.

    ``audio``: ``(frames,)`` or ``(frames, channels)`` at ``sample_rate``; each channel
    is rendered independently as one batch item (the models are mono). Returns float32
    ``(frames, channels)`` at ``sample_rate`` with the input's length (with
    ``with_report=True``, a ``(output, RenderReport)`` pair). ``parallel`` batches the
    channels together; ``False`` renders them one after the other. ``progress`` is
    called with a fraction in [0, 1] that ends at 1.0. ``device``: move the model there
    first (default: render where it is).
    """
    t0 = time.perf_counter()
    rate = _check_rate(sample_rate)
    a = _check_audio(audio)
    frames, channels = a.shape
    knob_row = model.knob_tensor(knobs, 1)
    where = _on_device(model, device)
    report = RenderReport(
        path="sequential",
        resampled=rate != model.sample_rate,
        kernel=render_kernel(model),
        device=devices.describe(where),
    )
    x = resample(a, rate, model.sample_rate)
    groups = [list(range(channels))] if parallel else [[c] for c in range(channels)]
    meter = _ProgressMeter(progress, x.shape[0] * len(groups))
    y = np.empty_like(x)
    for group in groups:
        xt = torch.from_numpy(np.ascontiguousarray(x[:, group].T))
        yt = _forward_stream(model, xt, knob_row.repeat(len(group), 1), int(chunk_size), meter.frames)
        y[:, group] = yt.numpy().T
    out = _fit_length(resample(y, model.sample_rate, rate), frames)
    out = np.ascontiguousarray(out, dtype=np.float32)
    meter.finish()
    _finish_report(report, [out], frames / rate, t0)
    return (out, report) if with_report else out


@dataclass
class _Row:
    signal: int  # index into the flat list of mono signals
    start: int  # first input frame of the row
    keep_from: int  # first row-relative output frame that is kept
    out_start: int  # signal frame of the first kept output frame
    out_stop: int  # one past the signal frame of the last kept output frame


def plan_segments(frames: int, segment: int, context: int, check: int) -> list[tuple[int, int, int, int]]:
    """Cut a signal of ``frames`` into rows of equal length for parallel rendering.

    Returns ``(start, keep_from, out_start, out_stop)`` per row. Row 0 starts at the
    signal's start (the exact initial condition) and keeps all of its
    ``context + check + segment`` outputs; every later row starts ``context + check``
    frames before the first frame it keeps, so its last ``check`` pre-roll outputs
    overlap the previous row's kept output and can be compared with it.
    """
    length = context + check + segment
    rows = [(0, 0, 0, min(frames, length))]
    out_start = length
    while out_start < frames:
        start = out_start - context - check
        rows.append((start, context + check, out_start, min(frames, out_start + segment)))
        out_start += segment
    return rows


@overload
def render_batch(
    model: EffectModel,
    items: Sequence[np.ndarray],
    sample_rate: int,
    *,
    knobs: dict[str, float] | None = ...,
    progress: Progress | None = ...,
    parallel: bool = ...,
    segment_seconds: float | None = ...,
    warmup_seconds: float = ...,
    check_seconds: float = ...,
    max_esr: float = ...,
    chunk_size: int | None = ...,
    device: torch.device | str | None = ...,
    with_report: Literal[False] = ...,
) -> list[np.ndarray]: ...
@overload
def render_batch(
    model: EffectModel,
    items: Sequence[np.ndarray],
    sample_rate: int,
    *,
    knobs: dict[str, float] | None = ...,
    progress: Progress | None = ...,
    parallel: bool = ...,
    segment_seconds: float | None = ...,
    warmup_seconds: float = ...,
    check_seconds: float = ...,
    max_esr: float = ...,
    chunk_size: int | None = ...,
    device: torch.device | str | None = ...,
    with_report: Literal[True],
) -> tuple[list[np.ndarray], RenderReport]: ...


def render_batch(
    model: EffectModel,
    items: Sequence[np.ndarray],
    sample_rate: int,
    *,
    knobs: dict[str, float] | None = None,
    progress: Progress | None = None,
    parallel: bool = True,
    segment_seconds: float | None = None,
    warmup_seconds: float = 0.5,
    check_seconds: float = 0.02,
    max_esr: float = MAX_ESR,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    with_report: bool = False,
) -> list[np.ndarray] | tuple[list[np.ndarray], RenderReport]:
    """Render all excerpts of a test in one batch; returns one output per item.

    ``items``: arrays ``(frames,)`` or ``(frames, channels)`` at ``sample_rate`` (lengths
    may differ); each output is float32 ``(frames, channels)`` at ``sample_rate`` with
    its item's length. With ``parallel=False`` every channel of every item is one batch
    item streamed whole (exact). With ``parallel=True`` long signals are also cut into
    segments of ``segment_seconds`` (default: see ``_auto_segment``) rendered side by
    side; each segment is preceded by ``receptive_field - 1`` frames of context
    (convolutional models) or ``max(warmup_seconds, receptive_field - 1)`` of warm-up
    (recurrent models), plus ``check_seconds`` used to compare it with the previous
    segment. Items whose boundary ESR exceeds ``max_esr`` are rendered again
    sequentially. ``chunk_size`` is frames per call per batch item (default: about
    ``BATCH_CHUNK_BUDGET / batch``, ``DEVICE_CHUNK_BUDGET / batch`` on a GPU). ``device``:
    move the model there first (default: render where it is); the outputs are CPU arrays.
    """
    t0 = time.perf_counter()
    rate = _check_rate(sample_rate)
    if len(items) == 0:
        raise AudioError("no excerpts to render")
    arrays = [_check_audio(a, f"excerpt {i}") for i, a in enumerate(items)]
    knob_row = model.knob_tensor(knobs, 1)
    sr = int(model.sample_rate)
    where = _on_device(model, device)
    report = RenderReport(resampled=rate != sr, kernel=render_kernel(model), device=devices.describe(where))
    model_rate = [resample(a, rate, sr) for a in arrays]
    signals: list[np.ndarray] = []
    owner: list[tuple[int, int]] = []
    for i, a in enumerate(model_rate):
        for c in range(a.shape[1]):
            signals.append(np.ascontiguousarray(a[:, c]))
            owner.append((i, c))
    rendered: list[np.ndarray | None] = [None] * len(signals)

    sequential: set[int] = set(range(len(arrays)))
    meter = _ProgressMeter(progress, sum(s.shape[0] for s in signals))
    if parallel:
        rf = max(1, int(model.receptive_field))
        context = rf - 1
        if model.stateful:
            context = max(context, int(round(warmup_seconds * sr)))
        check = max(1, int(round(check_seconds * sr)))
        if segment_seconds is None:
            segment = _auto_segment(model.stateful, [s.shape[0] for s in signals], context + check, _batch_rows(model))
        else:
            segment = int(round(segment_seconds * sr))
        segment = max(segment, check)
        rows: list[_Row] = []
        for j, s in enumerate(signals):
            for start, keep_from, out_start, out_stop in plan_segments(s.shape[0], segment, context, check):
                rows.append(_Row(j, start, keep_from, out_start, out_stop))
        report.segments = len(rows)
        if len(rows) > len(signals):
            length = context + check + segment
            meter.start_stage(length, ceiling=0.5 if model.stateful else 1.0)
            outs = _render_rows(model, signals, rows, length, knob_row, chunk_size, meter)
            worst, per_item = _assemble(rows, outs, signals, rendered, owner, check, len(arrays))
            report.esr_check = worst
            sequential = {i for i, e in per_item.items() if not e <= max_esr}
            report.fallback_items = sorted(sequential)
            if sequential:
                report.warnings.append(
                    f"excerpt(s) {', '.join(map(str, sorted(sequential)))} rendered sequentially: segment "
                    f"boundary ESR {max(per_item[i] for i in sequential):.2e} > {max_esr:g} "
                    f"(the model remembers longer than the {context / sr:.3f} s warm-up)"
                )
            if not sequential:
                report.path = "parallel"
            elif len(sequential) < len(arrays):
                report.path = "mixed"
        # else: no signal is long enough to cut, so the parallel plan is the sequential one.
    if sequential:
        todo = [j for j, (i, _) in enumerate(owner) if i in sequential]
        longest = max(signals[j].shape[0] for j in todo)
        meter.start_stage(longest)
        x = np.zeros((len(todo), longest), dtype=np.float32)
        for r, j in enumerate(todo):
            x[r, : signals[j].shape[0]] = signals[j]
        step = chunk_size or max(1, _chunk_budget(model) // len(todo))
        y = _forward_stream(model, torch.from_numpy(x), knob_row.repeat(len(todo), 1), step, meter.frames)
        yn = y.numpy()
        for r, j in enumerate(todo):
            rendered[j] = yn[r, : signals[j].shape[0]]
    done = [r for r in rendered if r is not None]
    if len(done) != len(rendered):
        raise RuntimeError("a signal was left unrendered")
    outputs: list[np.ndarray] = []
    for i, a in enumerate(arrays):
        chans = [done[j] for j, (ii, _) in enumerate(owner) if ii == i]
        stacked = chans[0][:, None] if len(chans) == 1 else np.stack(chans, axis=1)
        out = _fit_length(resample(stacked, sr, rate), a.shape[0])
        outputs.append(np.ascontiguousarray(out, dtype=np.float32))
    meter.finish()
    _finish_report(report, outputs, sum(a.shape[0] for a in arrays) / rate, t0)
    return (outputs, report) if with_report else outputs


def _auto_segment(stateful: bool, lengths: list[int], overlap: int, rows: int = RECURRENT_ROWS) -> int:
    """Segment length when none is given.

    Recurrent models gain from many batch rows (one matrix-matrix product per step
    instead of a matrix-vector product per signal), so their signals are cut into about
    ``rows`` rows (the module's ``batch_rows``, else ``RECURRENT_ROWS``), each at least
    four times its warm-up. Convolutional models
    are already parallel over time, so cutting only evens out unequal lengths: segments
    are the median signal length, and at least 16 times the context. The plan depends
    only on the model's description and the lengths, never on timings, so the same
    render gives the same samples every time.
    """
    if stateful:
        return max(4 * overlap, math.ceil(sum(lengths) / rows))
    return max(16 * overlap, int(np.median(lengths)))


def _render_rows(
    model: EffectModel,
    signals: list[np.ndarray],
    rows: list[_Row],
    length: int,
    knob_row: torch.Tensor,
    chunk_size: int | None,
    meter: _ProgressMeter,
) -> np.ndarray:
    """Forward every row (zero-padded past its signal's end) as one batch; ``(rows, length)``."""
    x = np.zeros((len(rows), length), dtype=np.float32)
    for r, row in enumerate(rows):
        piece = signals[row.signal][row.start : row.start + length]
        x[r, : piece.shape[0]] = piece
    step = chunk_size or max(1, _chunk_budget(model) // len(rows))
    y = _forward_stream(model, torch.from_numpy(x), knob_row.repeat(len(rows), 1), step, meter.frames)
    return y.numpy()


def _assemble(
    rows: list[_Row],
    outs: np.ndarray,
    signals: list[np.ndarray],
    rendered: list[np.ndarray | None],
    owner: list[tuple[int, int]],
    check: int,
    n_items: int,
) -> tuple[float | None, dict[int, float]]:
    """Stitch kept outputs per signal; return the worst and per-item boundary ESR."""
    num: dict[int, float] = {i: 0.0 for i in range(n_items)}
    den: dict[int, float] = {i: 0.0 for i in range(n_items)}
    count: dict[int, int] = {i: 0 for i in range(n_items)}
    for j, s in enumerate(signals):
        rendered[j] = np.zeros(s.shape[0], dtype=np.float32)
    prev: dict[int, int] = {}
    for r, row in enumerate(rows):
        y = rendered[row.signal]
        assert y is not None
        n = row.out_stop - row.out_start
        y[row.out_start : row.out_stop] = outs[r, row.keep_from : row.keep_from + n]
        if row.signal in prev:
            # The check window lies just before this row's kept output, inside the
            # previous row's kept output (already written to ``y``).
            lo = max(0, row.out_start - check)
            mine = outs[r, row.keep_from - (row.out_start - lo) : row.keep_from].astype(np.float64)
            theirs = y[lo : row.out_start].astype(np.float64)
            item = owner[row.signal][0]
            num[item] += float(np.sum((mine - theirs) ** 2))
            den[item] += float(np.sum(theirs**2))
            count[item] += theirs.shape[0]
        prev[row.signal] = r
    per_item: dict[int, float] = {}
    for i in range(n_items):
        if count[i]:
            per_item[i] = num[i] / max(den[i], _ENERGY_FLOOR * count[i])
    worst = max(per_item.values()) if per_item else None
    return worst, per_item
