"""Low-pass anchors made from the reference (ITU-R BS.1534-3, MUSHRA).

ITU-R BS.1534-3 (10/2015) §5.1 asks for a low-range anchor, the reference low-pass
filtered at 3.5 kHz, and a mid-range anchor, the reference low-pass filtered at
7 kHz, in every trial, so that the systems under test can be placed against
well-known quality levels (§5.1 adds that anchors are not for rescaling results
between tests). The Recommendation gives both cut-off frequencies and, for the
3.5 kHz anchor only, the mask of the first row below; the 7 kHz row scales it by two
(this project's choice). Every anchor filter is held to its row, checked in the tests
from the filter actually applied:

==========  ====================  ====================  =====================
anchor      passband (+/-0.1 dB)  >= 25 dB attenuation  >= 50 dB attenuation
==========  ====================  ====================  =====================
3.5 kHz     0 .. 3.5 kHz          at 4 kHz              at 4.5 kHz and above
7 kHz       0 .. 7 kHz            at 8 kHz              at 9 kHz and above
==========  ====================  ====================  =====================

The filter is a linear-phase Kaiser-window FIR of odd length whose group delay of
``(N - 1) / 2`` samples is removed, so the anchor is time-aligned, sample for sample,
with the reference and the other conditions: switching between stimuli in the player
must not move the music in time. Arrays are ``(frames,)`` or ``(frames, channels)``;
the anchor has the input's shape and is float32.

An anchor is only an anchor if the excerpt has energy above its cut-off: :func:`anchor_difference`
measures what the filter removes (energy of ``reference - anchor`` relative to the reference, and
its loudness), and anchors below ``WEAK_ANCHOR_DB`` are reported to the researcher, since such an
anchor sounds like the reference and cannot serve the §4.1.2 post-screening that relies on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import signal

from . import loudness
from .errors import AudioError

#: Cut-off (passband edge) of the low-range anchor, ITU-R BS.1534-3 §5.1.
LOW_ANCHOR_HZ = 3500.0
#: Cut-off (passband edge) of the mid-range anchor, ITU-R BS.1534-3 §5.1.
MID_ANCHOR_HZ = 7000.0
#: Design stopband attenuation; the mask needs 50 dB, the margin covers float32 use.
DESIGN_ATTENUATION_DB = 65.0
#: Mask points relative to the cut-off: 25 dB at 8/7 of it and 50 dB from 9/7 of it.
MASK_25DB_RATIO = 8.0 / 7.0
MASK_50DB_RATIO = 9.0 / 7.0


@lru_cache(maxsize=32)
def _taps(sample_rate: int, cutoff_hz: float) -> np.ndarray:
    nyquist = sample_rate / 2.0
    stop_25 = cutoff_hz * MASK_25DB_RATIO
    if stop_25 >= nyquist:
        raise AudioError(
            f"a {cutoff_hz:g} Hz anchor needs a sample rate above {2 * stop_25:.0f} Hz, got {sample_rate} Hz"
        )
    # The full design attenuation is reached just below the 25 dB mask point, which
    # then also clears the 50 dB point with room to spare.
    stop_edge = cutoff_hz + 0.92 * (stop_25 - cutoff_hz)
    numtaps, beta = signal.kaiserord(DESIGN_ATTENUATION_DB, (stop_edge - cutoff_hz) / nyquist)
    numtaps |= 1  # odd length: integer group delay, removable exactly
    taps = signal.firwin(numtaps, (cutoff_hz + stop_edge) / 2.0, window=("kaiser", beta), fs=sample_rate)
    taps.setflags(write=False)
    return taps


def design_anchor_filter(sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """Linear-phase Kaiser-window FIR taps (odd length) for a low-pass anchor (ITU-R BS.1534-3 §5.1)."""
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"sample rate must be a positive integer, got {sample_rate!r}")
    if not cutoff_hz > 0:
        raise AudioError(f"anchor cut-off must be positive, got {cutoff_hz!r} Hz")
    return _taps(int(sample_rate), float(cutoff_hz)).copy()


def lowpass_anchor(reference: np.ndarray, sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """Reference low-pass filtered at ``cutoff_hz``, delay-compensated (ITU-R BS.1534-3 §5.1 anchors)."""
    ref = np.asarray(reference)
    if ref.ndim not in (1, 2) or ref.shape[0] == 0:
        raise AudioError(f"reference must be (frames,) or (frames, channels), got shape {ref.shape}")
    if not np.isfinite(ref).all():
        raise AudioError("reference contains NaN or infinite samples")
    taps = design_anchor_filter(sample_rate, cutoff_hz)
    kernel = taps if ref.ndim == 1 else taps[:, None]
    # mode="same" with an odd kernel keeps the centre of the full convolution, which
    # drops exactly the (N - 1) / 2 samples of group delay.
    out = signal.oaconvolve(ref.astype(np.float64), kernel, mode="same", axes=0)
    return out.astype(np.float32)


def anchor_35(reference: np.ndarray, sample_rate: int) -> np.ndarray:
    """Low-range anchor: reference low-pass filtered at 3.5 kHz (ITU-R BS.1534-3 §5.1)."""
    return lowpass_anchor(reference, sample_rate, LOW_ANCHOR_HZ)


def anchor_70(reference: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mid-range anchor: reference low-pass filtered at 7 kHz (ITU-R BS.1534-3 §5.1)."""
    return lowpass_anchor(reference, sample_rate, MID_ANCHOR_HZ)


#: An anchor whose difference from the reference is below this (dB relative to the reference's
#: energy) is barely an anchor: the excerpt has almost nothing above the anchor's cut-off.
WEAK_ANCHOR_DB = -30.0


@dataclass(frozen=True)
class AnchorDifference:
    """What a low-pass anchor removes from its reference (see :func:`anchor_difference`)."""

    cutoff_hz: float
    #: ``10 log10(sum(d^2) / sum(ref^2))`` with ``d = ref - anchor``; ``-inf`` when nothing is
    #: removed, ``nan`` when the reference is silent.
    difference_db: float
    #: Integrated loudness of ``d`` (ITU-R BS.1770-4); ``-inf`` for silence or all blocks gated,
    #: ``nan`` when the excerpt is too short for a 400 ms gating block.
    difference_lufs: float
    threshold_db: float = WEAK_ANCHOR_DB

    @property
    def weak(self) -> bool:
        """True when the anchor barely differs from the reference (or the difference is undefined)."""
        return not self.difference_db >= self.threshold_db

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: non-finite values become ``None``."""

        def finite(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "cutoff_hz": self.cutoff_hz,
            "difference_db": finite(self.difference_db),
            "difference_lufs": finite(self.difference_lufs),
            "threshold_db": self.threshold_db,
            "weak": self.weak,
        }


def anchor_difference(
    reference: np.ndarray,
    anchor: np.ndarray,
    sample_rate: int,
    cutoff_hz: float,
    threshold_db: float = WEAK_ANCHOR_DB,
) -> AnchorDifference:
    """Energy and loudness an anchor removes from the reference (ITU-R BS.1534-3 §5.1 anchors, §4.1.2 screening)."""
    ref = np.asarray(reference, dtype=np.float64)
    anc = np.asarray(anchor, dtype=np.float64)
    if ref.shape != anc.shape:
        raise AudioError(f"reference {ref.shape} and anchor {anc.shape} differ in shape")
    diff = ref - anc
    ref_energy = float(np.sum(ref**2))
    diff_energy = float(np.sum(diff**2))
    if ref_energy == 0.0:
        difference_db = math.nan
    elif diff_energy == 0.0:
        difference_db = -math.inf
    else:
        difference_db = 10.0 * math.log10(diff_energy / ref_energy)
    try:
        difference_lufs = loudness.integrated_loudness(diff, sample_rate)
    except AudioError:
        difference_lufs = math.nan
    return AnchorDifference(float(cutoff_hz), difference_db, float(difference_lufs), float(threshold_db))
