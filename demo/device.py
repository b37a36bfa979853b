"""The demo device: a small overdrive pedal with a compressor in front of its clipper.

Signal chain, in the order of a typical overdrive pedal (cf. Yeh, Abel & Smith,
"Simplified, physically-informed models of distortion and overdrive guitar effects
pedals", DAFx 2007):

1. a tight second-order Butterworth high-pass, so low strings distort less than high ones;
2. a feed-forward compressor: peak detector and gain computer in dB with separate attack
   and release (Giannoulis, Massberg & Reiss, "Digital dynamic range compressor design -
   a tutorial and analysis", JAES 60(6), 2012, the "smooth decoupled" detector); this gives
   the device memory of some hundred milliseconds;
3. the drive: ``gain`` in [0, 1] maps to +0..+30 dB;
4. an asymmetric ``tanh`` waveshaper ``tanh(k x + b) - tanh(b)``: the bias makes it odd
   and even harmonic;
5. a DC blocker, a second-order Butterworth tone low-pass and an output level.

Audio is float32 mono ``(frames,)``; any sample rate from 8 kHz to 192 kHz works (the
filters are designed for it), 44.1 and 48 kHz are what the demo uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal


@dataclass(frozen=True)
class DemoDevice:
    """A small overdrive pedal; ``process(x, sample_rate, gain)`` renders it."""

    drive_db_max: float = 30.0
    highpass_hz: float = 160.0
    threshold_db: float = -28.0
    ratio: float = 3.0
    attack_ms: float = 4.0
    release_ms: float = 120.0
    bias: float = 0.3
    tone_hz: float = 3200.0
    level: float = 0.5

    def process(self, x: np.ndarray, sample_rate: int, gain: float = 0.5) -> np.ndarray:
        """Render ``x`` (float mono ``(frames,)``) through the pedal; returns float32 ``(frames,)``."""
        a = np.asarray(x)
        if a.ndim != 1:
            raise ValueError(f"DemoDevice takes mono audio shaped (frames,), got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
            raise ValueError("DemoDevice input must be finite floating-point samples")
        if not (8000 <= int(sample_rate) <= 192000):
            raise ValueError(f"sample_rate {sample_rate} is outside 8000..192000 Hz")
        if not (0.0 <= float(gain) <= 1.0):
            raise ValueError(f"gain knob must be in [0, 1], got {gain}")
        fs = int(sample_rate)
        v = a.astype(np.float64)
        sos = signal.butter(2, self.highpass_hz, "highpass", fs=fs, output="sos")
        v = signal.sosfilt(sos, v)
        v = v * compressor_gain(v, fs, self.threshold_db, self.ratio, self.attack_ms, self.release_ms)
        drive = 10.0 ** (self.drive_db_max * float(gain) / 20.0)
        v = np.tanh(drive * v + self.bias) - np.tanh(self.bias)
        # The bias leaves a signal-dependent DC offset; a pedal's output capacitor removes it.
        pole = np.exp(-2.0 * np.pi * 12.0 / fs)
        v = signal.lfilter([1.0, -1.0], [1.0, -pole], v)
        sos = signal.butter(2, min(self.tone_hz, 0.45 * fs), "lowpass", fs=fs, output="sos")
        v = signal.sosfilt(sos, v)
        return (self.level * v).astype(np.float32)


def compressor_gain(
    x: np.ndarray,
    sample_rate: int,
    threshold_db: float,
    ratio: float,
    attack_ms: float,
    release_ms: float,
) -> np.ndarray:
    """Linear gain of a feed-forward compressor, ``(frames,)`` (Giannoulis et al., JAES 2012, sec. 2-3).

    Hard-knee gain computer on the instantaneous level in dB, smoothed by the decoupled
    peak detector: attack coefficient while gain reduction grows, release while it falls.
    """
    if ratio < 1.0 or attack_ms <= 0 or release_ms <= 0:
        raise ValueError("compressor needs ratio >= 1 and positive attack/release times")
    level_db = 20.0 * np.log10(np.maximum(np.abs(x), 1e-6))
    over = np.maximum(level_db - threshold_db, 0.0)
    target = (over * (1.0 - 1.0 / ratio)).tolist()  # wanted gain reduction, dB
    a_att = float(np.exp(-1.0 / (attack_ms * 1e-3 * sample_rate)))
    a_rel = float(np.exp(-1.0 / (release_ms * 1e-3 * sample_rate)))
    smoothed = [0.0] * len(target)
    y = 0.0
    # Attack and release differ, so the smoother is nonlinear and must run sample by sample.
    for i, t in enumerate(target):
        y = a_att * y + (1.0 - a_att) * t if t > y else a_rel * y + (1.0 - a_rel) * t
        smoothed[i] = y
    return 10.0 ** (-np.asarray(smoothed) / 20.0)
