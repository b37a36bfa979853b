"""The synthesised guitar: deterministic, in tune, decaying, at the stated level."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from demo.guitar import (
    HIGHEST_MIDI,
    LOWEST_MIDI,
    Note,
    Phrase,
    compose_phrase,
    guitar_phrase,
    midi_to_hz,
    note_name,
    pluck,
    render_phrase,
)


def autocorrelation_pitch(x: np.ndarray, sample_rate: int, fmin: float = 60.0, fmax: float = 1000.0) -> float:
    """Fundamental from the autocorrelation's highest peak, refined by a parabola through it."""
    x = x - x.mean()
    ac = signal.correlate(x, x, mode="full", method="fft")[len(x) - 1 :]
    lo, hi = int(sample_rate / fmax), int(sample_rate / fmin)
    k = lo + int(np.argmax(ac[lo:hi]))
    a, b, c = ac[k - 1], ac[k], ac[k + 1]
    shift = 0.5 * (a - c) / (a - 2 * b + c)
    return sample_rate / (k + shift)


def test_same_seed_same_samples_other_seed_other_phrase() -> None:
    a = guitar_phrase(3, 2.0, 48000)
    b = guitar_phrase(3, 2.0, 48000)
    c = guitar_phrase(4, 2.0, 48000)
    assert a.dtype == np.float32 and a.shape == (96000,)
    np.testing.assert_array_equal(a, b)
    assert np.corrcoef(a, c)[0, 1] < 0.5


def test_peak_is_minus_six_dbfs_at_both_rates() -> None:
    for rate in (44100, 48000):
        x = guitar_phrase(11, 3.0, rate)
        assert x.shape == (3 * rate,)
        assert 20 * np.log10(np.max(np.abs(x))) == pytest.approx(-6.0, abs=0.01)


@pytest.mark.parametrize("midi", [40, 45, 50, 55, 59, 64, 69, 76])
@pytest.mark.parametrize("rate", [44100, 48000])
def test_plucked_string_is_in_tune(midi: int, rate: int) -> None:
    target = midi_to_hz(midi)
    y = pluck(target, 1.2, rate, seed=midi).astype(np.float64)
    f0 = autocorrelation_pitch(y[int(0.2 * rate) :], rate)
    assert f0 == pytest.approx(target, rel=0.005), note_name(midi)


def test_rendered_phrase_sounds_the_requested_note() -> None:
    # A3 alone, through the pickup filter and normalisation of a whole phrase.
    phrase = Phrase(seed=5, key="A minor", bpm=100.0, seconds=2.0, notes=[Note(0.05, 57, 0.8, 1.8)])
    x = render_phrase(phrase, 48000).astype(np.float64)
    f0 = autocorrelation_pitch(x[int(0.3 * 48000) : int(1.5 * 48000)], 48000)
    assert f0 == pytest.approx(220.0, rel=0.005)
    # Its spectrum's strongest low partial is the fundamental or a harmonic of it, never a buzz in between.
    f, p = signal.welch(x, 48000, nperseg=16384)
    peak = f[np.argmax(p)]
    assert abs(peak / 220.0 - round(peak / 220.0)) < 0.02


def test_strings_decay_and_a_release_damps_them() -> None:
    rate = 48000
    ring = pluck(110.0, 3.0, rate, seed=1).astype(np.float64)
    damped = pluck(110.0, 3.0, rate, seed=1, release=0.5).astype(np.float64)

    def rms(x: np.ndarray, t0: float, t1: float) -> float:
        return float(np.sqrt(np.mean(x[int(t0 * rate) : int(t1 * rate)] ** 2)))

    assert 20 * np.log10(rms(ring, 2.6, 3.0) / rms(ring, 0.05, 0.45)) < -6.0
    assert 20 * np.log10(rms(ring, 2.6, 3.0) / rms(ring, 0.05, 0.45)) > -40.0  # it sustains
    assert 20 * np.log10(rms(damped, 0.8, 1.0) / rms(damped, 0.05, 0.45)) < -40.0


def test_phrases_stay_in_guitar_range_and_vary_in_key() -> None:
    keys = set()
    for seed in range(12):
        phrase = compose_phrase(seed, 8.0)
        keys.add(phrase.key)
        assert len(phrase.notes) >= 8
        assert all(LOWEST_MIDI <= n.midi <= HIGHEST_MIDI for n in phrase.notes)
        assert all(0.0 <= n.onset < n.release and 0.0 < n.velocity <= 1.0 for n in phrase.notes)
        # power chords and strums: several notes within 60 ms of each other
        onsets = np.array([n.onset for n in phrase.notes])
        assert np.any(np.diff(onsets) < 0.06)
    assert len(keys) >= 4


def test_sounds_like_a_guitar_not_a_buzz() -> None:
    x = guitar_phrase(8, 4.0, 48000).astype(np.float64)
    f, p = signal.welch(x, 48000, nperseg=4096)
    centroid = float(np.sum(f * p) / np.sum(p))
    assert 150.0 < centroid < 2500.0
    # Energy above 8 kHz is 20 dB down: the pickup resonance rolls the top off.
    assert np.sum(p[f > 8000]) / np.sum(p) < 1e-2


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="frequency"):
        pluck(10.0, 1.0, 48000)
    with pytest.raises(ValueError, match="velocity"):
        pluck(110.0, 1.0, 48000, velocity=0.0)
    with pytest.raises(ValueError, match="seconds"):
        guitar_phrase(1, 0.0, 48000)
    with pytest.raises(ValueError, match="sample_rate"):
        guitar_phrase(1, 1.0, 100)
