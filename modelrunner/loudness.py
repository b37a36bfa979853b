"""Loudness measurement and loudness alignment of the stimuli of one item.

The one place the project measures loudness. Loudness is the gated integrated loudness of
ITU-R BS.1770-4 (K-weighting, 400 ms blocks with 75 % overlap, absolute gate at
-70 LUFS, relative gate at -10 LU), pyloudnorm's meter: its K-weighting filters and its
blocks and gates, with the two filter stages run as one cascade of second-order sections
over every channel at once (about 1.9 times faster on a 10 s excerpt; the same value
within 1e-9 LU, tests/modelrunner/test_loudness.py). Arrays are shaped
``(frames,)`` or ``(frames, channels)`` with at most five channels (BS.1770-4 channel
order L, R, C, Ls, Rs).

ITU-R BS.1534-3 §7.1 has the loudness of each excerpt set before the test so that a
trial plays at one fixed gain, and §8 allows no level adjustment within an item. This
project goes further and presents the stimuli of a trial at equal loudness, so that
listeners judge quality rather than level; :func:`align_item` does that for the hidden
reference, the model outputs and the anchors of one item.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyloudnorm
from scipy.signal import resample_poly, sosfilt

from .audio import as_2d
from .errors import AudioError

#: BS.1770-4 gating block length in seconds; shorter audio has no complete block.
GATING_BLOCK_S = 0.400
#: BS.1770-4 Annex 2 true-peak meters oversample by 4 at 48 kHz.
TRUE_PEAK_OVERSAMPLING = 4
MAX_ALIGN_ITERATIONS = 6

#: BS.1770-4 channel weights G_i (L, R, C, Ls, Rs), as pyloudnorm's meter has them.
_CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)
#: BS.1770-4 absolute gate (LUFS) and relative gate (LU below the absolutely gated loudness).
_ABSOLUTE_GATE = -70.0
_RELATIVE_GATE = -10.0

_k_weighting: dict[int, np.ndarray] = {}


def _k_sos(sample_rate: int) -> np.ndarray:
    """pyloudnorm's K-weighting (its high shelf, then its high pass) at ``sample_rate``, as
    second-order sections for ``scipy.signal.sosfilt``."""
    if sample_rate not in _k_weighting:
        stages = pyloudnorm.Meter(sample_rate)._filters
        if not stages:
            raise RuntimeError("pyloudnorm's meter has no K-weighting filters: an unsupported pyloudnorm version")
        _k_weighting[sample_rate] = np.array(
            [np.concatenate([f.passband_gain * f.b, f.a]) for f in stages.values()], dtype=np.float64
        )
    return _k_weighting[sample_rate]


def _gated_loudness(a: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness of checked float64 ``(frames, channels)`` audio: pyloudnorm's
    ``Meter.integrated_loudness`` step by step (its block bounds, including the rounding of
    the block count, and its gates), with the filters applied by :func:`_k_sos`."""
    y = sosfilt(_k_sos(sample_rate), a, axis=0)
    frames, channels = y.shape
    block, step = GATING_BLOCK_S, 0.25
    count = int(np.round((frames / sample_rate - block) / (block * step))) + 1
    z = np.zeros((channels, count))
    for j in range(count):
        lo = int(block * (j * step) * sample_rate)
        hi = int(block * (j * step + 1) * sample_rate)
        z[:, j] = np.sum(np.square(y[lo:hi]), axis=0) / (block * sample_rate)
    gains = np.asarray(_CHANNEL_GAINS[:channels])
    weighted = gains @ z
    with np.errstate(divide="ignore"):
        blocks = -0.691 + 10.0 * np.log10(weighted)
    above = blocks >= _ABSOLUTE_GATE
    if not above.any():
        return float("-inf")
    relative = -0.691 + 10.0 * math.log10(float(gains @ z[:, above].mean(axis=1)))
    kept = (blocks > relative + _RELATIVE_GATE) & (blocks > _ABSOLUTE_GATE)
    if not kept.any():
        return float("-inf")
    mean = float(gains @ z[:, kept].mean(axis=1))
    return -0.691 + 10.0 * math.log10(mean) if mean > 0 else float("-inf")


def _checked(audio: np.ndarray, sample_rate: int, name: str = "audio") -> np.ndarray:
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"{name}: sample rate must be a positive integer, got {sample_rate!r}")
    a = np.asarray(audio, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise AudioError(f"{name}: audio must be (frames,) or (frames, channels), got shape {a.shape}")
    if a.shape[1] == 0 or a.shape[1] > 5:
        raise AudioError(f"{name}: BS.1770 loudness needs 1 to 5 channels, got {a.shape[1]}")
    if not np.isfinite(a).all():
        raise AudioError(f"{name}: contains NaN or infinite samples")
    needed = math.ceil(GATING_BLOCK_S * sample_rate)
    if a.shape[0] <= needed:
        raise AudioError(
            f"{name}: {a.shape[0]} frames ({a.shape[0] / sample_rate * 1000:.0f} ms) is too short "
            f"for BS.1770 loudness; more than {needed} frames (400 ms gating block) are needed"
        )
    return a


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """Gated integrated loudness in LUFS (ITU-R BS.1770-4 Annex 1, via pyloudnorm).

    ``audio`` is ``(frames,)`` or ``(frames, channels)``. Audio no longer than one
    400 ms gating block is refused with an ``AudioError``. Digital silence, or audio
    whose every block lies below the -70 LUFS absolute gate, returns ``-inf``.
    """
    a = _checked(audio, sample_rate)
    if not a.any():
        return float("-inf")
    return _gated_loudness(a, int(sample_rate))


def sample_peak_dbfs(audio: np.ndarray) -> float:
    """Largest absolute sample value in dBFS (``-inf`` for silence)."""
    peak = float(np.max(np.abs(as_2d(audio)))) if np.size(audio) else 0.0
    return 20.0 * math.log10(peak) if peak > 0 else float("-inf")


def true_peak_dbfs(audio: np.ndarray) -> float:
    """True peak in dBTP estimated by 4x polyphase oversampling (ITU-R BS.1770-4 Annex 2)."""
    a = as_2d(audio).astype(np.float64)
    up = resample_poly(a, TRUE_PEAK_OVERSAMPLING, 1, axis=0)
    peak = max(float(np.max(np.abs(up))), float(np.max(np.abs(a))))
    return 20.0 * math.log10(peak) if peak > 0 else float("-inf")


@dataclass
class SignalLoudness:
    """Loudness of one signal of an item before and after alignment."""

    lufs_before: float
    lufs_after: float
    gain_db: float  # total gain applied, item headroom gain included
    peak_dbfs_after: float


@dataclass
class LoudnessReport:
    """What :func:`align_item` measured and did, for the job log and the report."""

    sample_rate: int
    target_lufs: float | None  # requested absolute target, None = match the reference
    aligned_lufs: float  # loudness every signal was brought to before headroom gain
    item_gain_db: float  # common gain (<= 0) applied to the whole item for peak headroom
    peak_ceiling_dbfs: float
    peak_mode: str  # "sample" or "true" (4x oversampled)
    tolerance_lu: float
    reference: SignalLoudness
    conditions: dict[str, SignalLoudness] = field(default_factory=dict)
    aligned: bool = False  # every condition within tolerance of the reference
    target_met: bool = False  # aligned and, when a target was asked, reference within tolerance of it

    @property
    def max_deviation_lu(self) -> float:
        """Largest |condition - reference| loudness difference after alignment."""
        ref = self.reference.lufs_after
        return max((abs(c.lufs_after - ref) for c in self.conditions.values()), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dictionary."""
        d = asdict(self)
        d["max_deviation_lu"] = self.max_deviation_lu
        return d


def _gain(a: np.ndarray, db: float) -> np.ndarray:
    return np.asarray(a * 10.0 ** (db / 20.0), dtype=np.float32)


def _match(
    a: np.ndarray, sample_rate: int, target: float, tolerance: float, lufs: float | None = None
) -> tuple[np.ndarray, float, float]:
    """Return ``a`` scaled to ``target`` LUFS (float32), its total gain and final loudness.

    Loudness is homogeneous in gain except where the -70 LUFS absolute gate admits or
    drops blocks and where float32 rounding bites, so the gain is refined by
    re-measuring until the result is within ``tolerance / 4``. ``lufs``: the loudness of
    ``a`` when its values are float32 values (then its float32 copy measures the same).
    """
    total_db = 0.0
    out = a.astype(np.float32)
    if lufs is None:
        lufs = integrated_loudness(out, sample_rate)
    for _ in range(MAX_ALIGN_ITERATIONS):
        if abs(lufs - target) <= tolerance / 4:
            break
        total_db += target - lufs
        out = _gain(a, total_db)
        lufs = integrated_loudness(out, sample_rate)
    return out, total_db, lufs


def align_item(
    reference: np.ndarray,
    conditions: dict[str, np.ndarray],
    sample_rate: int,
    *,
    target_lufs: float | None = None,
    peak_ceiling_dbfs: float = -1.0,
    tolerance_lu: float = 0.1,
    true_peak: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray], LoudnessReport]:
    """Gain-align the stimuli of one item to equal integrated loudness (ITU-R BS.1770-4).

    Each condition is brought to the reference's integrated loudness, or, when
    ``target_lufs`` is given, reference and conditions alike are brought to it; each is
    re-measured until within ``tolerance_lu``. If any signal then peaks above
    ``peak_ceiling_dbfs`` (sample peak, or 4x-oversampled true peak when ``true_peak``),
    the whole item, reference included, is turned down by one common gain so relative
    loudness is kept. Arrays come back float32 in their input shape. A silent or
    too-short signal is refused with an ``AudioError`` naming it.
    """
    if tolerance_lu <= 0:
        raise AudioError(f"tolerance_lu must be positive, got {tolerance_lu}")
    if target_lufs is not None and not math.isfinite(target_lufs):
        raise AudioError(f"target_lufs must be a finite LUFS value, got {target_lufs}")
    # Key None is the reference, so a condition may be called anything.
    entries: list[tuple[str | None, str, np.ndarray]] = [(None, "reference", reference)]
    entries += [(name, f"condition {name!r}", audio) for name, audio in conditions.items()]
    signals: dict[str | None, np.ndarray] = {}
    shapes: dict[str | None, tuple[int, ...]] = {}
    before: dict[str | None, float] = {}
    exact: set[str | None] = set()  # given as float32: a float32 copy has the same samples
    for key, label, audio in entries:
        a = _checked(audio, sample_rate, label)
        lufs = integrated_loudness(a, sample_rate)
        if not math.isfinite(lufs):
            raise AudioError(f"{label} is silent (below the -70 LUFS gate of BS.1770) and cannot be loudness-aligned")
        signals[key], shapes[key], before[key] = a, np.shape(audio), lufs
        if np.asarray(audio).dtype == np.float32:
            exact.add(key)

    goal = before[None] if target_lufs is None else float(target_lufs)
    matched: dict[str | None, np.ndarray] = {}
    gains: dict[str | None, float] = {}
    # The loudness of each signal of ``matched`` where it is already known: the measurement
    # is not repeated on the same samples.
    measured: dict[str | None, float] = {}
    for key, a in signals.items():
        known = before[key] if key in exact else None
        if key is None and target_lufs is None:
            matched[key], gains[key] = a.astype(np.float32), 0.0
            if known is not None:
                measured[key] = known
        else:
            matched[key], gains[key], measured[key] = _match(a, sample_rate, goal, tolerance_lu, known)

    peak_of = true_peak_dbfs if true_peak else sample_peak_dbfs
    item_gain_db = 0.0
    worst = max(peak_of(m) for m in matched.values())
    for _ in range(4):
        if worst <= peak_ceiling_dbfs:
            break
        # One common gain for the whole item keeps the loudness alignment intact; the
        # small extra margin absorbs float32 rounding on the next pass.
        item_gain_db += peak_ceiling_dbfs - worst - 1e-4
        matched = {k: _gain(signals[k], gains[k] + item_gain_db) for k in signals}
        measured.clear()
        worst = max(peak_of(m) for m in matched.values())

    results: dict[str | None, SignalLoudness] = {}
    for key, m in matched.items():
        results[key] = SignalLoudness(
            lufs_before=before[key],
            lufs_after=measured[key] if key in measured else integrated_loudness(m, sample_rate),
            gain_db=gains[key] + item_gain_db,
            peak_dbfs_after=peak_of(m),
        )
    ref_result = results.pop(None)
    aligned = all(abs(r.lufs_after - ref_result.lufs_after) <= tolerance_lu for r in results.values())
    target_met = aligned and (target_lufs is None or abs(ref_result.lufs_after - float(target_lufs)) <= tolerance_lu)
    report = LoudnessReport(
        sample_rate=int(sample_rate),
        target_lufs=None if target_lufs is None else float(target_lufs),
        aligned_lufs=goal,
        item_gain_db=item_gain_db,
        peak_ceiling_dbfs=float(peak_ceiling_dbfs),
        peak_mode="true" if true_peak else "sample",
        tolerance_lu=float(tolerance_lu),
        reference=ref_result,
        conditions={k: v for k, v in results.items() if k is not None},
        aligned=aligned,
        target_met=target_met,
    )

    def shaped(key: str | None) -> np.ndarray:
        m = matched[key]
        return m[:, 0] if len(shapes[key]) == 1 else m

    return shaped(None), {name: shaped(name) for name in conditions}, report
