"""Objective metrics: raw model output against the real device's recording.

Every function takes ``output`` (the model's rendering) and ``target`` (the device
recording) as arrays of equal shape, ``(frames,)`` or ``(frames, channels)``, and
returns a Python float; lower is better for all of them. Channels are treated like a
batch, as auraloss does with its default ``reduction="mean"``: ratios (ESR, DC, EESR)
are taken per channel and averaged; MAE/MSE average over every sample; the MR-STFT
spectral convergence is one Frobenius-norm ratio over all channels, as in auraloss. The
metrics are computed on the raw output, before any loudness
alignment, because a level error is part of a model's error.

``compute_all`` returns every metric under a stable key; ``METRICS`` maps each key to
``(function, human name, citation, lower_is_better)`` for reports and the web app.

The device recording's side of the metrics (its MR-STFT magnitudes, filtered versions,
energies, loudness) depends on the recording alone: ``prepare_reference`` computes it once,
and ``compute_all(..., reference=prepared)`` reuses it for every model output compared with
that recording, with the same values as without it. ``ReferenceCache`` keeps prepared
recordings between calls (a render worker's model jobs of one excerpt).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any, NamedTuple, cast

import numpy as np
from scipy import signal

from .errors import AudioError
from .loudness import integrated_loudness

#: auraloss 0.4.0 ``MultiResolutionSTFTLoss`` defaults (Yamamoto et al. 2020 resolutions).
MR_STFT_FFT_SIZES = (1024, 2048, 512)
MR_STFT_HOP_SIZES = (120, 240, 50)
MR_STFT_WIN_LENGTHS = (600, 1200, 240)
_MR_STFT_RESOLUTIONS = tuple(zip(MR_STFT_FFT_SIZES, MR_STFT_HOP_SIZES, MR_STFT_WIN_LENGTHS))
#: Reflect padding on each side of a signal for the MR-STFT: that of its largest FFT.
_MR_STFT_PAD = max(MR_STFT_FFT_SIZES) // 2
#: Spectrum bins per block of the blocked STFT (``_stft_blocks``): 512 KiB of float64 magnitudes.
STFT_BLOCK_BINS = 1 << 16
#: auraloss clamps squared STFT magnitudes at this value before the square root.
STFT_EPS = 1e-8
#: Pre-emphasis coefficient of Wright et al. (2019), H(z) = 1 - 0.85 z^-1.
PREEMPH_COEFF = 0.85
#: IEC 61672-1:2013 Annex E pole frequencies of the A-weighting curve, in Hz.
A_WEIGHTING_POLES_HZ = (20.598997, 107.65265, 737.86223, 12194.217)
#: MR-EESR frame lengths and hops (75 % overlap) and the floor under a frame's energy,
#: as in the SPTMod training loss (see ``mr_eesr``).
MR_EESR_WINDOWS = ((512, 128), (1024, 256), (2048, 512))
MR_EESR_EPS = 1e-8


def _as_2d_f64(x: np.ndarray, name: str) -> np.ndarray:
    # float64 throughout: the ratios of small errors must not drown in float32 rounding
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise AudioError(f"{name} must be (frames,) or (frames, channels), got shape {a.shape}")
    return a


def _pair(output: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair and return both as float64 ``(frames, channels)``."""
    o = _as_2d_f64(output, "output")
    t = _as_2d_f64(target, "target")
    if o.shape[0] != t.shape[0]:
        diff = o.shape[0] - t.shape[0]
        raise AudioError(
            f"output has {o.shape[0]} frames and target {t.shape[0]}: output is "
            f"{abs(diff)} frames {'longer' if diff > 0 else 'shorter'}; trim or align them first"
        )
    if o.shape[1] != t.shape[1]:
        raise AudioError(f"output has {o.shape[1]} channel(s) and target {t.shape[1]}; they must match")
    if o.shape[0] == 0:
        raise AudioError("output and target are empty")
    if not (np.isfinite(o).all() and np.isfinite(t).all()):
        raise AudioError("output or target contains NaN or infinite samples")
    return o, t


def _energy(x: np.ndarray, name: str = "target") -> np.ndarray:
    """Energy per channel (axis 0 is time); refuses a silent channel."""
    e = np.asarray(np.sum(x * x, axis=0))
    if np.any(e == 0.0):
        raise AudioError(f"{name} has a digitally silent channel; a ratio to its energy is undefined")
    return e


def _esr(o: np.ndarray, t: np.ndarray) -> float:
    # per channel, then the mean over channels (auraloss reduction="mean")
    return float(np.mean(np.sum((t - o) ** 2, axis=0) / _energy(t)))


def esr(output: np.ndarray, target: np.ndarray) -> float:
    """Error-to-signal ratio sum((y - ŷ)²) / sum(y²) per channel, averaged (Wright, Damskägg & Välimäki, DAFx 2019)."""
    return _esr_of(_output(output, target))


def preemphasis(x: np.ndarray, coeff: float = PREEMPH_COEFF) -> np.ndarray:
    """First-order high-pass pre-emphasis H(z) = 1 - coeff z^-1 along axis 0 (Wright et al. 2019)."""
    return signal.lfilter([1.0, -coeff], [1.0], x, axis=0)


def esr_preemph(output: np.ndarray, target: np.ndarray, coeff: float = PREEMPH_COEFF) -> float:
    """ESR after pre-emphasis H(z) = 1 - 0.85 z^-1 of both signals (Wright et al., Appl. Sci. 2020, §3.1)."""
    if coeff != PREEMPH_COEFF:
        o, t = _pair(output, target)
        return _esr(preemphasis(o, coeff), preemphasis(t, coeff))
    return _esr_preemph_of(_output(output, target))


def a_weighting_sos(sample_rate: int) -> np.ndarray:
    """Digital A-weighting filter (second-order sections), bilinear transform of IEC 61672-1 Annex E.

    Normalised to exactly 0 dB at 1 kHz at this sample rate. Below 5 kHz it follows the
    analog curve within 0.1 dB at 44.1 kHz and above; the bilinear transform warps the
    top octave, so it falls faster than the analog curve there (at 44.1/48/96 kHz:
    -1.5/-1.2/-0.3 dB extra at 10 kHz), as does the bilinear design that Wright &
    Välimäki's FIR approximates. Both signals pass the same filter, so the ratio stays
    a fair comparison.
    """
    f1, f2, f3, f4 = A_WEIGHTING_POLES_HZ
    w = [2 * math.pi * f for f in (f1, f1, f2, f3, f4, f4)]
    zeros = np.zeros(4)
    poles = -np.array(w)
    z, p, k = signal.bilinear_zpk(zeros, poles, 1.0, fs=sample_rate)
    sos = signal.zpk2sos(z, p, k)
    _, h = signal.sosfreqz(sos, worN=[1000.0], fs=sample_rate)
    sos[0, :3] /= abs(h[0])
    return sos


@functools.lru_cache(maxsize=8)
def _a_weighting_sos(sample_rate: int) -> np.ndarray:
    """``a_weighting_sos`` designed once per sample rate (shared: not to be changed; it stays
    writable, as ``signal.sosfilt`` takes no read-only sections)."""
    return a_weighting_sos(sample_rate)


def esr_aweighted(output: np.ndarray, target: np.ndarray, sample_rate: int) -> float:
    """ESR after A-weighting both signals (Wright & Välimäki, ICASSP 2020; IEC 61672-1 curve)."""
    return _esr_aweighted_of(_output(output, target, int(sample_rate)))


def dc_loss(output: np.ndarray, target: np.ndarray) -> float:
    """DC loss |mean(y - ŷ)|² / mean(y²), per channel then averaged (Wright et al., Appl. Sci. 2020, §3.1)."""
    return _dc_of(_output(output, target))


def mae(output: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error mean(|y - ŷ|) over all samples and channels (L1 loss)."""
    return _mae_of(_output(output, target))


def mse(output: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error mean((y - ŷ)²) over all samples and channels (L2 loss)."""
    return _mse_of(_output(output, target))


@functools.lru_cache(maxsize=8)
def _hann(win: int) -> np.ndarray:
    """Periodic Hann window of ``win`` samples (``torch.hann_window``'s default)."""
    w = signal.get_window("hann", win, fftbins=True)
    w.setflags(write=False)
    return w


def _reflect_padded(x: np.ndarray) -> np.ndarray:
    """``x`` ``(channels, frames)`` reflect-padded by ``_MR_STFT_PAD`` samples on each side: the
    reflect padding of every resolution (``n_fft // 2``) is its middle part."""
    if x.shape[1] <= _MR_STFT_PAD:
        raise AudioError(f"MR-STFT needs more than {_MR_STFT_PAD} frames, got {x.shape[1]}")
    return np.pad(x, ((0, 0), (_MR_STFT_PAD, _MR_STFT_PAD)), mode="reflect")


def _stft_blocks(
    padded: np.ndarray, n_fft: int, hop: int, win: int, out: np.ndarray | None = None
) -> Iterator[tuple[int, int, np.ndarray]]:
    """STFT magnitudes ``max(|X|, sqrt(STFT_EPS))`` of a signal ``(channels, frames)``, float64,
    given reflect-padded by ``_reflect_padded``, a block of STFT frames at a time:
    ``(start, stop, magnitudes)`` with the magnitudes of frames ``start:stop`` shaped
    ``(channels, stop - start, n_fft // 2 + 1)``, written into ``out[:, start:stop]`` when
    ``out`` is given. The frames are those of ``torch.stft`` with ``center=True,
    pad_mode="reflect"`` and a Hann window of ``win`` centred in ``n_fft``.

    Each frame's ``win`` windowed samples sit at the start of a zeroed ``n_fft`` buffer
    instead of at its centre: a circular shift, which changes the phase of every bin and
    not its magnitude. ``numpy.fft`` (pocketfft, as ``scipy.fft``) transforms the buffer;
    magnitudes agree with ``torch.stft``'s within a few 1e-13 relative
    (tests/modelrunner/test_metrics.py). A block
    holds about ``STFT_BLOCK_BINS`` bins, so that its buffers stay in the CPU's cache and are
    reused instead of a whole signal's spectra being written to memory and read back. The
    magnitudes yielded live in a buffer that the next block overwrites.
    """
    channels, half = padded.shape[0], n_fft // 2
    count = _stft_frames(padded.shape[1] - 2 * _MR_STFT_PAD, n_fft, hop)
    first = _MR_STFT_PAD - half + (n_fft - win) // 2  # the first frame's first windowed sample
    frames = np.lib.stride_tricks.sliding_window_view(padded[:, first:], win, axis=1)[:, : (count - 1) * hop + 1 : hop]
    step = min(count, max(1, STFT_BLOCK_BINS // (channels * (half + 1))))
    # One set of buffers for every block. Only the first ``win`` samples of each row of ``buf``
    # are written: the rest stays zero.
    buf = np.zeros((channels, step, n_fft))
    spectrum = np.empty((channels, step, half + 1), dtype=np.complex128)
    mags = np.empty((channels, step, half + 1))
    window = _hann(win)
    for start in range(0, count, step):
        stop = min(count, start + step)
        m = stop - start
        np.multiply(frames[:, start:stop], window, out=buf[:, :m, :win])
        np.fft.rfft(buf[:, :m], axis=-1, out=spectrum[:, :m])
        mag = np.abs(spectrum[:, :m], out=mags[:, :m] if out is None else out[:, start:stop])
        np.maximum(mag, math.sqrt(STFT_EPS), out=mag)
        yield start, stop, mag


def _sum_of_squares(a: np.ndarray) -> float:
    """Σ a², squaring ``a`` in place: numpy's own summation, not BLAS (whose threads cost more
    than they save on one block, and whose result would depend on their number)."""
    return float(np.sum(np.square(a, out=a)))


def _stft_frames(frames: int, n_fft: int, hop: int) -> int:
    """STFT frames of a signal of ``frames`` samples (centred, padded by ``n_fft // 2`` each side)."""
    return 1 + (frames + 2 * (n_fft // 2) - n_fft) // hop


def mr_stft(output: np.ndarray, target: np.ndarray, sample_rate: int | None = None) -> float:
    """Multi-resolution STFT loss: mean over resolutions of spectral convergence + mean |log S_ŷ - log S_y|.

    Yamamoto, Song & Kim, ICASSP 2020 (Parallel WaveGAN), with auraloss 0.4.0 defaults:
    FFT 1024/2048/512, hop 120/240/50, Hann windows 600/1200/240, centred reflect-padded
    frames, magnitudes sqrt(max(|X|², 1e-8)), w_sc = w_log_mag = 1. ``sample_rate`` is
    unused (the resolutions are in samples); it is accepted for a uniform signature.
    """
    return _mr_stft_of(_output(output, target))


def _frame_energy(x: np.ndarray, win: int, hop: int, squares: np.ndarray | None = None) -> np.ndarray:
    """Mean square over rectangular frames of ``win`` samples every ``hop`` samples, per channel
    (``squares``: ``x * x`` when the caller has it)."""
    sq = x * x if squares is None else squares
    frames = np.lib.stride_tricks.sliding_window_view(sq, win, axis=0)[::hop]
    return np.asarray(frames.mean(axis=-1))


def mr_eesr(output: np.ndarray, target: np.ndarray, sample_rate: int | None = None) -> float:
    """Multi-resolution energy ESR (Bourdin, Legrand & Roche, DAFx 2025, eq. 4, the SPTMod loss term).

    For each (window W, hop W/4) in ``MR_EESR_WINDOWS`` the frame energies
    E_k = (1/W) Σ y[τ]² over rectangular frames k = 1..K are compared as
    (1/K) Σ_k |Ê_k − E_k| / (E_k + ε), ε = ``MR_EESR_EPS``, averaged over channels; the
    result is the mean over the three resolutions. It scores the energy envelope (what
    a compressor model must get right) and ignores waveform phase. ``sample_rate`` is
    unused.
    """
    return _mr_eesr_of(_output(output, target))


def delta_lufs(output: np.ndarray, target: np.ndarray, sample_rate: int) -> float:
    """|LUFS(ŷ) - LUFS(y)|, integrated loudness difference in LU (ITU-R BS.1770-4).

    A silent target is refused; a silent output gives ``inf``.
    """
    return _delta_lufs_of(_output(output, target, sample_rate))


def crest_factor_db(x: np.ndarray) -> float:
    """Crest factor 20 log10(peak / RMS) in dB over all samples and channels (IEC 60050-103)."""
    a = np.asarray(x, dtype=np.float64)
    return _crest_db(a, a * a)


def _crest_db(a: np.ndarray, squares: np.ndarray) -> float:
    """``crest_factor_db`` of ``a`` given ``a * a``; the peak max |a| as max(max a, -min a)."""
    rms = math.sqrt(float(np.mean(squares))) if a.size else 0.0
    if rms == 0.0:
        return math.nan
    return 20.0 * math.log10(max(float(np.max(a)), -float(np.min(a))) / rms)


def delta_crest_db(output: np.ndarray, target: np.ndarray) -> float:
    """|crest(ŷ) - crest(y)| in dB, crest = peak / RMS (a dynamics-preservation check).

    A silent target is refused; a silent output gives ``inf``.
    """
    return _delta_crest_of(_output(output, target))


# --- the device recording's side, computed once ------------------------------------------


class _Reference:
    """The device recording's side of every metric, each part computed when first asked for and
    kept: its energy, its pre-emphasised and A-weighted versions, its frame energies, loudness,
    crest factor and the MR-STFT magnitudes. ``target`` is a validated float64
    ``(frames, channels)`` array that nobody changes while this object is in use."""

    def __init__(self, target: np.ndarray, sample_rate: int | None) -> None:
        self.target = target
        self.sample_rate = sample_rate
        self._parts: dict[Hashable, Any] = {}

    def _part(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        if key not in self._parts:
            self._parts[key] = compute()
        return self._parts[key]

    def _rate(self) -> int:
        if self.sample_rate is None:
            raise AudioError("this metric needs the sample rate")
        return self.sample_rate

    def energy(self) -> np.ndarray:
        return cast(np.ndarray, self._part("energy", lambda: _energy(self.target)))

    def preemphasized(self) -> tuple[np.ndarray, np.ndarray]:
        """The pre-emphasised recording and its energy per channel."""

        def compute() -> tuple[np.ndarray, np.ndarray]:
            p = preemphasis(self.target)
            return p, _energy(p)

        return cast(tuple[np.ndarray, np.ndarray], self._part("preemph", compute))

    def aweighted(self) -> tuple[np.ndarray, np.ndarray]:
        """The A-weighted recording and its energy per channel."""

        def compute() -> tuple[np.ndarray, np.ndarray]:
            a = signal.sosfilt(_a_weighting_sos(self._rate()), self.target, axis=0)
            return a, _energy(a)

        return cast(tuple[np.ndarray, np.ndarray], self._part(("aweighted", self._rate()), compute))

    def mean_square(self) -> np.ndarray:
        return cast(np.ndarray, self._part("mean_square", lambda: np.mean(self.target * self.target, axis=0)))

    def squares(self) -> np.ndarray:
        return cast(np.ndarray, self._part("squares", lambda: self.target * self.target))

    def frame_energy(self, win: int, hop: int) -> np.ndarray:
        return cast(
            np.ndarray,
            self._part(("frame_energy", win, hop), lambda: _frame_energy(self.target, win, hop, self.squares())),
        )

    def loudness(self) -> float:
        rate = self._rate()
        return cast(float, self._part(("loudness", rate), lambda: integrated_loudness(self.target, rate)))

    def crest_db(self) -> float:
        return cast(float, self._part("crest", lambda: _crest_db(self.target, self.squares())))

    def padded(self) -> np.ndarray:
        """The recording as ``(channels, frames)``, reflect-padded for the MR-STFT."""
        return cast(np.ndarray, self._part("padded", lambda: _reflect_padded(np.ascontiguousarray(self.target.T))))

    def spectrum(self, n_fft: int, hop: int, win: int) -> tuple[np.ndarray, float]:
        """MR-STFT magnitudes ``(channels, stft frames, bins)`` and their squared Frobenius norm."""

        def compute() -> tuple[np.ndarray, float]:
            channels, frames = self.target.shape[1], self.target.shape[0]
            mag = np.empty((channels, _stft_frames(frames, n_fft, hop), n_fft // 2 + 1))
            norm2 = 0.0
            for _start, _stop, block in _stft_blocks(self.padded(), n_fft, hop, win, out=mag):
                norm2 += float(np.sum(np.square(block)))
            mag.setflags(write=False)
            return mag, norm2

        return cast(tuple[np.ndarray, float], self._part(("stft", n_fft, hop, win), compute))

    def forget(self, *keys: Hashable) -> None:
        """Drop these parts (computed again if asked for)."""
        for key in keys:
            self._parts.pop(key, None)

    def nbytes(self) -> int:
        """Bytes held: the recording and every part computed so far."""
        total = self.target.nbytes
        for value in self._parts.values():
            for item in value if isinstance(value, tuple) else (value,):
                total += item.nbytes if isinstance(item, np.ndarray) else 0
        return total


class PreparedReference:
    """One device recording's side of every metric of ``compute_all``, computed once by
    :func:`prepare_reference` and reused for each model output compared with it (the model
    conditions of one excerpt): its MR-STFT magnitudes, pre-emphasised and A-weighted
    versions, energies, frame energies, loudness and crest factor. Metric values are the same
    as without it, to the last bit: ``compute_all`` without a prepared reference prepares one
    for the call. It holds a read-only copy of the recording and refuses another one."""

    def __init__(self, reference: _Reference) -> None:
        self._reference = reference

    @property
    def target(self) -> np.ndarray:
        """The recording, float64 ``(frames, channels)``, read-only."""
        return self._reference.target

    @property
    def sample_rate(self) -> int:
        return self._reference._rate()

    @property
    def nbytes(self) -> int:
        """Memory it holds, in bytes."""
        return self._reference.nbytes()

    def matches(self, target: np.ndarray, sample_rate: int) -> bool:
        """Whether it was prepared from these very samples at this sample rate."""
        t = np.asarray(target)
        if t.ndim == 1:
            t = t[:, None]
        return (
            int(sample_rate) == self.sample_rate
            and t.shape == self.target.shape
            # compared as float64 value by value, without a float64 copy of a float32 recording
            and bool(np.array_equal(t, self.target))
        )


def prepare_reference(target: np.ndarray, sample_rate: int) -> PreparedReference:
    """The device recording's side of every metric, computed now, for ``compute_all(...,
    reference=...)`` to reuse with each model output compared with this recording.

    A recording that a metric refuses (silence, too short for one) is prepared all the same:
    ``compute_all`` raises the metric's ``AudioError`` when it is used."""
    _check_rate(sample_rate)
    t = np.array(_as_2d_f64(target, "target"), dtype=np.float64, copy=True)
    if t.shape[0] == 0:
        raise AudioError("target is empty")
    if not np.isfinite(t).all():
        raise AudioError("target contains NaN or infinite samples")
    t.setflags(write=False)
    reference = _Reference(t, int(sample_rate))
    parts: list[Callable[[], object]] = [
        reference.energy,
        reference.preemphasized,
        reference.aweighted,
        reference.mean_square,
        reference.loudness,
        reference.crest_db,
        *(functools.partial(reference.frame_energy, win, hop) for win, hop in MR_EESR_WINDOWS),
    ]
    if t.shape[0] > max(MR_STFT_FFT_SIZES) // 2:
        parts += [functools.partial(reference.spectrum, *r) for r in _MR_STFT_RESOLUTIONS]
    for part in parts:
        with contextlib.suppress(AudioError):  # raised again by the metric that needs the part
            part()
    # what the parts above were computed from, and no metric needs again
    reference.forget("padded", "squares")
    return PreparedReference(reference)


class ReferenceCache:
    """Prepared references kept for reuse, least recently used first out, at most ``max_bytes``
    in all (one larger than that is prepared and not kept). An entry is found by ``key`` (the
    recording's stored name, say) and used only when its samples and sample rate equal those
    asked for; otherwise the recording is prepared again and replaces it. For one thread."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[Hashable, PreparedReference] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, target: np.ndarray, sample_rate: int) -> PreparedReference:
        found = self._entries.get(key)
        if found is not None and found.matches(target, sample_rate):
            self._entries.move_to_end(key)
            self.hits += 1
            return found
        self.misses += 1
        self._entries.pop(key, None)
        prepared = prepare_reference(target, sample_rate)
        size = prepared.nbytes
        if size <= self.max_bytes:
            while self._entries and self.nbytes + size > self.max_bytes:
                self._entries.popitem(last=False)
            self._entries[key] = prepared
        return prepared

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


# --- each metric on a validated output and the recording's side -----------------------


class _Output:
    """A validated float64 model output ``o`` ``(frames, channels)`` against a recording's side
    ``ref``, with what several metrics share computed once: the error y - ŷ and its square, and
    ŷ², in as few signal-sized arrays as the arithmetic allows."""

    def __init__(self, o: np.ndarray, ref: _Reference) -> None:
        self.o = o
        self.ref = ref
        self._errors: dict[str, Any] | None = None
        self._squares: np.ndarray | None = None

    def errors(self) -> dict[str, Any]:
        """Of e = y - ŷ: the mean per channel, mean |e|, Σ e² per channel and mean e²."""
        if self._errors is None:
            e = np.subtract(self.ref.target, self.o)
            mean = np.mean(e, axis=0)
            # one signal-sized array: |e| in place, then |e|² (= e², exactly) in place
            abs_mean = float(np.mean(np.abs(e, out=e)))
            sq = np.square(e, out=e)
            self._errors = {"mean": mean, "abs_mean": abs_mean, "sum_sq": np.sum(sq, axis=0), "sq_mean": np.mean(sq)}
        return self._errors

    def squares(self) -> np.ndarray:
        if self._squares is None:
            self._squares = self.o * self.o
        return self._squares


def _output(output: np.ndarray, target: np.ndarray, sample_rate: int | None = None) -> _Output:
    o, t = _pair(output, target)
    return _Output(o, _Reference(t, sample_rate))


def _esr_filtered(o_f: np.ndarray, t_f: np.ndarray, energy: np.ndarray) -> float:
    """``_esr`` of filtered signals, ``o_f`` (a temporary) overwritten by the squared error."""
    e = np.subtract(t_f, o_f, out=o_f)
    return float(np.mean(np.sum(np.square(e, out=e), axis=0) / energy))


def _esr_of(out: _Output) -> float:
    # per channel, then the mean over channels (auraloss reduction="mean")
    return float(np.mean(out.errors()["sum_sq"] / out.ref.energy()))


def _esr_preemph_of(out: _Output) -> float:
    t, energy = out.ref.preemphasized()
    return _esr_filtered(preemphasis(out.o), t, energy)


def _esr_aweighted_of(out: _Output) -> float:
    t, energy = out.ref.aweighted()
    return _esr_filtered(signal.sosfilt(_a_weighting_sos(out.ref._rate()), out.o, axis=0), t, energy)


def _dc_of(out: _Output) -> float:
    num = out.errors()["mean"] ** 2
    den = out.ref.mean_square()
    if np.any(den == 0):
        raise AudioError("a target channel is digital silence; the DC loss is undefined")
    return float(np.mean(num / den))


def _mae_of(out: _Output) -> float:
    return float(out.errors()["abs_mean"])


def _mse_of(out: _Output) -> float:
    return float(out.errors()["sq_mean"])


def _mr_stft_of(out: _Output) -> float:
    # channels act as the batch, as in auraloss; refuses a signal of no more than _MR_STFT_PAD frames
    x = _reflect_padded(np.ascontiguousarray(out.o.T))
    total = 0.0
    for n_fft, hop, win in _MR_STFT_RESOLUTIONS:
        y_mag, y_norm2 = out.ref.spectrum(n_fft, hop, win)
        diff_norm2 = log_sum = 0.0
        ratios = np.empty(0)
        for start, stop, x_mag in _stft_blocks(x, n_fft, hop, win):
            y_block = y_mag[:, start:stop]
            if ratios.size < x_mag.size:
                ratios = np.empty(x_mag.size)
            # |log x - log y| as |log(x / y)|: one logarithm per bin instead of two
            ratio = np.divide(x_mag, y_block, out=ratios[: x_mag.size].reshape(x_mag.shape))
            log_sum += float(np.sum(np.abs(np.log(ratio, out=ratio), out=ratio)))
            diff = np.subtract(y_block, x_mag, out=x_mag)
            diff_norm2 += _sum_of_squares(diff)
        # spectral convergence (Arik et al. 2018): Frobenius norm over the whole batch
        total += math.sqrt(diff_norm2 / y_norm2) + log_sum / y_mag.size
    return total / len(_MR_STFT_RESOLUTIONS)


def _mr_eesr_of(out: _Output) -> float:
    o = out.o
    if o.shape[0] < max(w for w, _ in MR_EESR_WINDOWS):
        raise AudioError(f"MR-EESR needs at least {max(w for w, _ in MR_EESR_WINDOWS)} frames, got {o.shape[0]}")
    values = []
    for win, hop in MR_EESR_WINDOWS:
        e_o, e_t = _frame_energy(o, win, hop, out.squares()), out.ref.frame_energy(win, hop)
        values.append(float(np.mean(np.abs(e_o - e_t) / (e_t + MR_EESR_EPS))))
    return float(np.mean(values))


def _delta_lufs_of(out: _Output) -> float:
    l_t = out.ref.loudness()
    if not math.isfinite(l_t):
        raise AudioError("target is silent (below the -70 LUFS gate); loudness difference is undefined")
    l_o = integrated_loudness(out.o, out.ref._rate())
    return abs(l_o - l_t) if math.isfinite(l_o) else math.inf


def _delta_crest_of(out: _Output) -> float:
    c_t = out.ref.crest_db()
    if math.isnan(c_t):
        raise AudioError("target is digital silence; its crest factor is undefined")
    c_o = _crest_db(out.o, out.squares())
    return abs(c_o - c_t) if not math.isnan(c_o) else math.inf


class MetricInfo(NamedTuple):
    """How to compute, name and cite one metric."""

    function: Callable[..., float]
    name: str
    citation: str
    lower_is_better: bool


_WRIGHT_2019 = (
    'A. Wright, E.-P. Damskägg, V. Välimäki, "Real-time black-box modelling with recurrent '
    'neural networks", DAFx 2019; A. Wright et al., "Real-time guitar amplifier emulation '
    'with deep learning", Applied Sciences 10(3):766, 2020'
)

#: key -> (function, human name, citation, lower_is_better); keys are stable.
METRICS: dict[str, MetricInfo] = {
    "esr": MetricInfo(esr, "Error-to-signal ratio", _WRIGHT_2019, True),
    "esr_preemph": MetricInfo(esr_preemph, "ESR with 1 - 0.85 z⁻¹ pre-emphasis", _WRIGHT_2019, True),
    "esr_aweighted": MetricInfo(
        esr_aweighted,
        "ESR with A-weighting",
        'A. Wright, V. Välimäki, "Perceptual loss function for neural modelling of audio '
        'systems", ICASSP 2020; A-weighting per IEC 61672-1:2013',
        True,
    ),
    "dc": MetricInfo(dc_loss, "DC error", _WRIGHT_2019, True),
    "mae": MetricInfo(mae, "Mean absolute error", "L1 distance", True),
    "mse": MetricInfo(mse, "Mean squared error", "L2 distance", True),
    "mr_stft": MetricInfo(
        mr_stft,
        "Multi-resolution STFT loss",
        'R. Yamamoto, E. Song, J.-M. Kim, "Parallel WaveGAN", ICASSP 2020; '
        "defaults of C. Steinmetz, J. Reiss, auraloss 0.4.0",
        True,
    ),
    "mr_eesr": MetricInfo(
        mr_eesr,
        "Multi-resolution energy-envelope ESR",
        'after Y. Bourdin, P. Legrand, F. Roche, "Empirical results for adjusting truncated '
        'backpropagation through time while training neural audio effects", DAFx 2025',
        True,
    ),
    "delta_lufs": MetricInfo(delta_lufs, "Loudness difference (LU)", "ITU-R BS.1770-4 integrated loudness", True),
    "delta_crest_db": MetricInfo(delta_crest_db, "Crest factor difference (dB)", "crest factor = peak / RMS", True),
}

_NEEDS_RATE = {"esr_aweighted", "mr_stft", "mr_eesr", "delta_lufs"}

#: key -> the metric on a validated output and the recording's side (``_Output``).
_OF: dict[str, Callable[[_Output], float]] = {
    "esr": _esr_of,
    "esr_preemph": _esr_preemph_of,
    "esr_aweighted": _esr_aweighted_of,
    "dc": _dc_of,
    "mae": _mae_of,
    "mse": _mse_of,
    "mr_stft": _mr_stft_of,
    "mr_eesr": _mr_eesr_of,
    "delta_lufs": _delta_lufs_of,
    "delta_crest_db": _delta_crest_of,
}


def _check_rate(sample_rate: object) -> None:
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"sample rate must be a positive integer, got {sample_rate!r}")


def compute_all(
    output: np.ndarray, target: np.ndarray, sample_rate: int, *, reference: PreparedReference | None = None
) -> dict[str, float]:
    """Every metric of ``METRICS`` for one (model output, device recording) pair, by key.

    ``reference``: the recording's side prepared once (:func:`prepare_reference`) for every
    output compared with it; it must have been prepared from ``target`` at ``sample_rate``.
    The values are the same with it and without it."""
    if reference is None:
        o, t = _pair(output, target)
        _check_rate(sample_rate)
        ref = _Reference(t, int(sample_rate))
    else:
        _check_rate(sample_rate)
        if not reference.matches(target, int(sample_rate)):
            raise AudioError("the prepared reference is of another recording or sample rate than the target")
        ref = reference._reference
        o, _ = _pair(output, ref.target)
    ref.energy()
    out = _Output(o, ref)
    return {key: float(_OF[key](out)) for key in METRICS}
