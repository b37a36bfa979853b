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
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import scipy.fft
from scipy import signal

from .errors import AudioError
from .loudness import integrated_loudness

#: auraloss 0.4.0 ``MultiResolutionSTFTLoss`` defaults (Yamamoto et al. 2020 resolutions).
MR_STFT_FFT_SIZES = (1024, 2048, 512)
MR_STFT_HOP_SIZES = (120, 240, 50)
MR_STFT_WIN_LENGTHS = (600, 1200, 240)
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
    return _esr(*_pair(output, target))


def preemphasis(x: np.ndarray, coeff: float = PREEMPH_COEFF) -> np.ndarray:
    """First-order high-pass pre-emphasis H(z) = 1 - coeff z^-1 along axis 0 (Wright et al. 2019)."""
    return signal.lfilter([1.0, -coeff], [1.0], x, axis=0)


def esr_preemph(output: np.ndarray, target: np.ndarray, coeff: float = PREEMPH_COEFF) -> float:
    """ESR after pre-emphasis H(z) = 1 - 0.85 z^-1 of both signals (Wright et al., Appl. Sci. 2020, §3.1)."""
    o, t = _pair(output, target)
    return _esr(preemphasis(o, coeff), preemphasis(t, coeff))


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


def esr_aweighted(output: np.ndarray, target: np.ndarray, sample_rate: int) -> float:
    """ESR after A-weighting both signals (Wright & Välimäki, ICASSP 2020; IEC 61672-1 curve)."""
    o, t = _pair(output, target)
    sos = a_weighting_sos(int(sample_rate))
    return _esr(signal.sosfilt(sos, o, axis=0), signal.sosfilt(sos, t, axis=0))


def dc_loss(output: np.ndarray, target: np.ndarray) -> float:
    """DC loss |mean(y - ŷ)|² / mean(y²), per channel then averaged (Wright et al., Appl. Sci. 2020, §3.1)."""
    o, t = _pair(output, target)
    num = np.mean(t - o, axis=0) ** 2
    den = np.mean(t * t, axis=0)
    if np.any(den == 0):
        raise AudioError("a target channel is digital silence; the DC loss is undefined")
    return float(np.mean(num / den))


def mae(output: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error mean(|y - ŷ|) over all samples and channels (L1 loss)."""
    o, t = _pair(output, target)
    return float(np.mean(np.abs(t - o)))


def mse(output: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error mean((y - ŷ)²) over all samples and channels (L2 loss)."""
    o, t = _pair(output, target)
    return float(np.mean((t - o) ** 2))


@functools.lru_cache(maxsize=8)
def _hann(win: int) -> np.ndarray:
    """Periodic Hann window of ``win`` samples (``torch.hann_window``'s default)."""
    w = signal.get_window("hann", win, fftbins=True)
    w.setflags(write=False)
    return w


def _stft_mag(x: np.ndarray, n_fft: int, hop: int, win: int) -> np.ndarray:
    """STFT magnitudes ``max(|X|, sqrt(STFT_EPS))`` of ``x`` ``(channels, frames)``, float64,
    shaped ``(channels, stft frames, n_fft // 2 + 1)``: the frames of ``torch.stft`` with
    ``center=True, pad_mode="reflect"`` and a Hann window of ``win`` centred in ``n_fft``.

    Each frame's ``win`` windowed samples sit at the start of a zeroed ``n_fft`` buffer
    instead of at its centre: a circular shift, which changes the phase of every bin and
    not its magnitude. ``scipy.fft`` transforms the buffer; magnitudes agree with
    ``torch.stft``'s within a few 1e-13 relative (tests/modelrunner/test_metrics.py).
    """
    half = n_fft // 2
    padded = np.pad(x, ((0, 0), (half, half)), mode="reflect")
    count = 1 + (padded.shape[1] - n_fft) // hop
    left = (n_fft - win) // 2
    frames = np.lib.stride_tricks.sliding_window_view(padded[:, left:], win, axis=1)[:, : (count - 1) * hop + 1 : hop]
    buf = np.zeros((x.shape[0], count, n_fft))
    np.multiply(frames, _hann(win), out=buf[:, :, :win])
    mag: np.ndarray = np.abs(scipy.fft.rfft(buf, axis=-1, overwrite_x=True))
    np.maximum(mag, math.sqrt(STFT_EPS), out=mag)
    return mag


def mr_stft(output: np.ndarray, target: np.ndarray, sample_rate: int | None = None) -> float:
    """Multi-resolution STFT loss: mean over resolutions of spectral convergence + mean |log S_ŷ - log S_y|.

    Yamamoto, Song & Kim, ICASSP 2020 (Parallel WaveGAN), with auraloss 0.4.0 defaults:
    FFT 1024/2048/512, hop 120/240/50, Hann windows 600/1200/240, centred reflect-padded
    frames, magnitudes sqrt(max(|X|², 1e-8)), w_sc = w_log_mag = 1. ``sample_rate`` is
    unused (the resolutions are in samples); it is accepted for a uniform signature.
    """
    o, t = _pair(output, target)
    if o.shape[0] <= max(MR_STFT_FFT_SIZES) // 2:
        raise AudioError(f"MR-STFT needs more than {max(MR_STFT_FFT_SIZES) // 2} frames, got {o.shape[0]}")
    # channels act as the batch, as in auraloss
    x, y = np.ascontiguousarray(o.T), np.ascontiguousarray(t.T)
    total = 0.0
    for n_fft, hop, win in zip(MR_STFT_FFT_SIZES, MR_STFT_HOP_SIZES, MR_STFT_WIN_LENGTHS):
        x_mag, y_mag = _stft_mag(x, n_fft, hop, win), _stft_mag(y, n_fft, hop, win)
        # spectral convergence (Arik et al. 2018): Frobenius norm over the whole batch
        diff = np.subtract(y_mag, x_mag)
        sc = math.sqrt(float(np.vdot(diff, diff)) / float(np.vdot(y_mag, y_mag)))
        # |log x - log y| as |log(x / y)|: one logarithm per bin instead of two
        ratio = np.divide(x_mag, y_mag, out=diff)
        total += sc + float(np.mean(np.abs(np.log(ratio, out=ratio), out=ratio)))
    return total / len(MR_STFT_FFT_SIZES)


def _frame_energy(x: np.ndarray, win: int, hop: int) -> np.ndarray:
    """Mean square over rectangular frames of ``win`` samples every ``hop`` samples, per channel."""
    frames = np.lib.stride_tricks.sliding_window_view(x * x, win, axis=0)[::hop]
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
    o, t = _pair(output, target)
    if o.shape[0] < max(w for w, _ in MR_EESR_WINDOWS):
        raise AudioError(f"MR-EESR needs at least {max(w for w, _ in MR_EESR_WINDOWS)} frames, got {o.shape[0]}")
    values = []
    for win, hop in MR_EESR_WINDOWS:
        e_o, e_t = _frame_energy(o, win, hop), _frame_energy(t, win, hop)
        values.append(float(np.mean(np.abs(e_o - e_t) / (e_t + MR_EESR_EPS))))
    return float(np.mean(values))


def delta_lufs(output: np.ndarray, target: np.ndarray, sample_rate: int) -> float:
    """|LUFS(ŷ) - LUFS(y)|, integrated loudness difference in LU (ITU-R BS.1770-4).

    A silent target is refused; a silent output gives ``inf``.
    """
    o, t = _pair(output, target)
    l_t = integrated_loudness(t, sample_rate)
    if not math.isfinite(l_t):
        raise AudioError("target is silent (below the -70 LUFS gate); loudness difference is undefined")
    l_o = integrated_loudness(o, sample_rate)
    return abs(l_o - l_t) if math.isfinite(l_o) else math.inf


def crest_factor_db(x: np.ndarray) -> float:
    """Crest factor 20 log10(peak / RMS) in dB over all samples and channels (IEC 60050-103)."""
    a = np.asarray(x, dtype=np.float64)
    rms = math.sqrt(float(np.mean(a * a))) if a.size else 0.0
    if rms == 0.0:
        return math.nan
    return 20.0 * math.log10(float(np.max(np.abs(a))) / rms)


def delta_crest_db(output: np.ndarray, target: np.ndarray) -> float:
    """|crest(ŷ) - crest(y)| in dB, crest = peak / RMS (a dynamics-preservation check).

    A silent target is refused; a silent output gives ``inf``.
    """
    o, t = _pair(output, target)
    c_t = crest_factor_db(t)
    if math.isnan(c_t):
        raise AudioError("target is digital silence; its crest factor is undefined")
    c_o = crest_factor_db(o)
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


def compute_all(output: np.ndarray, target: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Every metric of ``METRICS`` for one (model output, device recording) pair, by key."""
    o, t = _pair(output, target)
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"sample rate must be a positive integer, got {sample_rate!r}")
    _energy(t)
    results: dict[str, float] = {}
    for key, info in METRICS.items():
        args = (o, t, int(sample_rate)) if key in _NEEDS_RATE else (o, t)
        results[key] = float(info.function(*args))
    return results
