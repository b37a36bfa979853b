"""The headphone check's stimuli, made on the server so the page never learns the answers.

Two three-interval forced-choice tests; each interval is one stereo WAV of ``INTERVAL_S``
seconds at ``SAMPLE_RATE``, and every interval of every trial has the same length, format and
header, so nothing but the samples tells them apart.

- ``antiphase``: three 200 Hz tones, one 6 dB softer (the answer to "which is quietest?"),
  one of the others in antiphase between the ears; over loudspeakers the antiphase tone
  cancels and sounds quietest (Woods et al. 2017).
- ``huggins``: three white noises; in one, the band 600 Hz +/- 6 % is inverted in the right
  ear, heard as a faint tone only over headphones (Milne et al. 2021).

Plain numpy and soundfile; no Django.
"""

from __future__ import annotations

import io
import random

import numpy as np
import soundfile as sf

from .rules import HEADPHONE_TESTS

SAMPLE_RATE = 48000
#: Length of one interval and the silence the page leaves between intervals (s).
INTERVAL_S = 1.0
GAP_S = 0.5
INTERVALS = 3

TONE_HZ = 200.0
TONE_AMP = 0.25
TARGET_DB = -6.0
TONE_RAMP_S = 0.1
HP_CENTRE_HZ = 600.0
HP_HALF_WIDTH = 0.06
NOISE_RMS = 0.08
NOISE_RAMP_S = 0.01
#: 16-bit PCM: a 44-byte header with no PEAK chunk (a float WAV's PEAK would name the soft tone).
SUBTYPE = "PCM_16"


def _ramp(x: np.ndarray, ramp: int) -> np.ndarray:
    """Raised-cosine onset and offset of ``ramp`` samples on a (frames, channels) array."""
    r = min(ramp, x.shape[0] // 2)
    g = 0.5 - 0.5 * np.cos(np.pi * np.arange(r) / r)
    x[:r] *= g[:, None]
    x[x.shape[0] - r :] *= g[::-1, None]
    return x


def antiphase_interval(kind: str, rate: int = SAMPLE_RATE, seconds: float = INTERVAL_S) -> np.ndarray:
    """Woods et al. 2017 (Atten. Percept. Psychophys. 79:2064) interval: kind standard, target (-6 dB) or antiphase."""
    if kind not in ("standard", "target", "antiphase"):
        raise ValueError(f"unknown antiphase interval {kind!r}")
    n = int(round(rate * seconds))
    amp = TONE_AMP * 10 ** (TARGET_DB / 20) if kind == "target" else TONE_AMP
    left = amp * np.sin(2 * np.pi * TONE_HZ * np.arange(n) / rate)
    out = _ramp(np.stack([left, -left if kind == "antiphase" else left], axis=1), int(round(TONE_RAMP_S * rate)))
    return out


def huggins_interval(
    dichotic: bool, rng: np.random.Generator, rate: int = SAMPLE_RATE, seconds: float = INTERVAL_S
) -> np.ndarray:
    """Milne et al. 2021 (Behav. Res. Methods 53:1551) interval: noise, 600 Hz +/- 6 % inverted in R if dichotic."""
    n = int(round(rate * seconds))
    left = rng.standard_normal(n)
    left *= NOISE_RMS / np.sqrt(np.mean(left**2))
    right = left.copy()
    if dichotic:
        # Negate the DFT bins of the band only: both ears keep one magnitude spectrum and
        # differ by 180 degrees of phase inside the band.
        lo = int(np.ceil(HP_CENTRE_HZ * (1 - HP_HALF_WIDTH) * n / rate))
        hi = int(np.floor(HP_CENTRE_HZ * (1 + HP_HALF_WIDTH) * n / rate))
        spectrum = np.fft.rfft(left)
        spectrum[lo : hi + 1] *= -1
        right = np.fft.irfft(spectrum, n)
    return _ramp(np.stack([left, right], axis=1), int(round(NOISE_RAMP_S * rate)))


def new_trial(test: str, rng: random.Random) -> dict:
    """One trial's secret: its test, the 1-based target interval, the antiphase interval and a noise seed."""
    if test not in HEADPHONE_TESTS:
        raise ValueError(f"unknown headphone test {test!r} (expected one of {', '.join(HEADPHONE_TESTS)})")
    target = rng.randint(1, INTERVALS)
    trial: dict = {"test": test, "target": target, "seed": rng.randrange(2**31)}
    if test == "antiphase":
        trial["antiphase"] = rng.choice([i for i in range(1, INTERVALS + 1) if i != target])
    return trial


def interval(trial: dict, position: int, rate: int = SAMPLE_RATE, seconds: float = INTERVAL_S) -> np.ndarray:
    """Interval ``position`` (1-based) of a trial made by ``new_trial``, as float (frames, 2)."""
    if not 1 <= position <= INTERVALS:
        raise ValueError(f"position must be 1..{INTERVALS}")
    if trial["test"] == "antiphase":
        kind = (
            "target" if position == trial["target"] else "antiphase" if position == trial["antiphase"] else "standard"
        )
        return antiphase_interval(kind, rate, seconds)
    if trial["test"] == "huggins":
        rng = np.random.default_rng([int(trial["seed"]), position])
        return huggins_interval(position == trial["target"], rng, rate, seconds)
    raise ValueError(f"unknown headphone test {trial['test']!r}")


def wav_bytes(audio: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """Encode (frames, channels) audio in [-1, 1] as a WAV file in memory (``SUBTYPE``)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), int(rate), subtype=SUBTYPE, format="WAV")
    return buf.getvalue()


def interval_wav(trial: dict, position: int) -> bytes:
    """The WAV file of one interval: the same size and header for every trial and position."""
    return wav_bytes(interval(trial, position))
