"""The demo pedal: nonlinear (THD rises with gain, even harmonics), with memory, stable."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from demo.device import DemoDevice, compressor_gain


def sine(freq: float, seconds: float, rate: int, amp: float) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def harmonic_levels(y: np.ndarray, freq: float, rate: int, n: int = 8) -> np.ndarray:
    """Amplitudes of harmonics 1..n from a Blackman-Harris windowed FFT over a whole number of periods."""
    periods = int(len(y) * freq / rate)
    seg = y[-int(round(periods * rate / freq)) :].astype(np.float64)
    spec = np.abs(np.fft.rfft(seg * signal.windows.blackmanharris(len(seg))))
    bins = np.fft.rfftfreq(len(seg), 1 / rate)
    return np.array(
        [
            spec[np.argmin(np.abs(bins - k * freq)) - 2 : np.argmin(np.abs(bins - k * freq)) + 3].max()
            for k in range(1, n + 1)
        ]
    )


def thd(y: np.ndarray, freq: float, rate: int) -> float:
    """Total harmonic distortion sqrt(sum H2..H8^2) / H1 (IEEE Std 1057 definition)."""
    h = harmonic_levels(y, freq, rate)
    return float(np.sqrt(np.sum(h[1:] ** 2)) / h[0])


def test_deterministic_float32_same_length() -> None:
    x = sine(196.0, 0.5, 48000, 0.3) + 0.01 * np.random.default_rng(0).standard_normal(24000).astype(np.float32)
    a = DemoDevice().process(x, 48000, 0.7)
    b = DemoDevice().process(x, 48000, 0.7)
    assert a.dtype == np.float32 and a.shape == x.shape
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rate", [44100, 48000])
def test_distortion_rises_with_gain_and_has_even_harmonics(rate: int) -> None:
    x = sine(220.0, 1.0, rate, 0.3)
    dev = DemoDevice()
    values = [thd(dev.process(x, rate, g), 220.0, rate) for g in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(b > a for a, b in zip(values, values[1:])), values
    assert values[0] < 0.05 and values[-1] > 0.2
    h = harmonic_levels(dev.process(x, rate, 0.5), 220.0, rate)
    assert h[1] / h[0] > 0.01  # second harmonic within 40 dB: the clipper is asymmetric


def test_output_is_not_a_scaled_copy_of_the_input() -> None:
    x = sine(220.0, 1.0, 48000, 0.3)
    y = DemoDevice().process(x, 48000, 0.5).astype(np.float64)
    # Least-squares best linear gain still leaves a large residual.
    g = float(np.dot(x, y) / np.dot(x, x))
    assert np.sum((y - g * x) ** 2) / np.sum(y**2) > 0.05


def test_compressor_gives_the_device_memory() -> None:
    rate = 48000
    loud = sine(440.0, 0.5, rate, 0.5)
    quiet = sine(440.0, 0.6, rate, 0.02)
    dev = DemoDevice()
    after_loud = dev.process(np.concatenate([loud, quiet]), rate, 0.0)[len(loud) :]
    alone = dev.process(np.concatenate([np.zeros_like(loud), quiet]), rate, 0.0)[len(loud) :]

    def rms(x: np.ndarray, t0: float, t1: float) -> float:
        return float(np.sqrt(np.mean(x[int(t0 * rate) : int(t1 * rate)].astype(np.float64) ** 2)))

    # Right after the loud part the gain is still reduced; 0.5 s later it has recovered.
    assert 20 * np.log10(rms(after_loud, 0.01, 0.03) / rms(alone, 0.01, 0.03)) < -3.0
    assert 20 * np.log10(rms(after_loud, 0.5, 0.6) / rms(alone, 0.5, 0.6)) == pytest.approx(0.0, abs=0.5)


def test_compressor_gain_matches_its_definition() -> None:
    rate = 48000
    x = np.full(rate, 0.5)  # -6.02 dBFS, 21.98 dB over a -28 dB threshold
    g = compressor_gain(x, rate, threshold_db=-28.0, ratio=3.0, attack_ms=5.0, release_ms=100.0)
    target_db = (20 * np.log10(0.5) + 28.0) * (1 - 1 / 3.0)
    assert 20 * np.log10(g[-1]) == pytest.approx(-target_db, abs=0.01)
    # After one attack time constant the reduction reaches 1 - 1/e of its final value.
    assert -20 * np.log10(g[int(0.005 * rate) - 1]) == pytest.approx(target_db * (1 - np.exp(-1)), rel=0.01)
    below = compressor_gain(np.full(1000, 0.01), rate, -28.0, 3.0, 5.0, 100.0)
    np.testing.assert_allclose(below, 1.0)


def test_stable_for_loud_noise_and_silent_after_an_impulse() -> None:
    rng = np.random.default_rng(1)
    x = (2.0 * rng.standard_normal(48000)).astype(np.float32)
    y = DemoDevice().process(x, 48000, 1.0)
    assert np.isfinite(y).all() and np.max(np.abs(y)) < 1.0
    imp = np.zeros(48000, dtype=np.float32)
    imp[100] = 1.0
    z = DemoDevice().process(imp, 48000, 1.0)
    assert np.max(np.abs(z[24000:])) < 1e-4


def test_bad_input_is_refused() -> None:
    dev = DemoDevice()
    with pytest.raises(ValueError, match="mono"):
        dev.process(np.zeros((100, 2), np.float32), 48000)
    with pytest.raises(ValueError, match="finite"):
        dev.process(np.array([0.0, np.nan], np.float32), 48000)
    with pytest.raises(ValueError, match="gain"):
        dev.process(np.zeros(100, np.float32), 48000, gain=1.5)
    with pytest.raises(ValueError, match="sample_rate"):
        dev.process(np.zeros(100, np.float32), 1000)
