"""The device recording's side of the metrics, prepared once (``metrics.prepare_reference``) and
reused for every model output compared with it: the same value for every metric as without it,
its spectra and filtered versions computed once, another recording refused, and the cache that
a render worker keeps its excerpts' prepared recordings in."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf

from modelrunner import metrics as M
from modelrunner.errors import AudioError
from tests.modelrunner.test_metrics import _mr_stft_torch
from tests.paths import fixture_path

SR = 44_100


@pytest.fixture(scope="module")
def guitar() -> np.ndarray:
    """2 s of the guitar fixture through a soft clipper, a stand-in for a device's recording (mono)."""
    data, sr = sf.read(fixture_path("audio", "guitar_example_44k.wav"), dtype="float32", always_2d=True)
    assert sr == SR
    return (np.tanh(4 * data[: 2 * SR, 0]) / np.tanh(4.0)).astype(np.float32)


def outputs(t: np.ndarray) -> dict[str, np.ndarray]:
    """Model outputs of a recording ``t``: good, bad, near-identical, identical, silent."""
    rng = np.random.default_rng(3)
    n = np.arange(t.shape[0], dtype=np.float64).reshape((-1,) + (1,) * (t.ndim - 1))
    return {
        "close": (0.97 * t + 0.002 * rng.standard_normal(t.shape) + 0.001).astype(np.float32),
        "far": np.clip(3 * t, -0.5, 0.5).astype(np.float32),
        "near-identical": t + 1e-6 * np.sin(n),
        "identical": t.copy(),
        "silent": np.zeros_like(t),
    }


def assert_same(got: dict[str, float], expected: dict[str, float], rel: float = 1e-9) -> None:
    assert set(got) == set(expected) == set(M.METRICS)
    for key, value in expected.items():
        if math.isinf(value) or value == 0.0:
            assert got[key] == value, key
        else:
            assert got[key] == pytest.approx(value, rel=rel, abs=0.0), key


@pytest.mark.parametrize("channels", [1, 2])
def test_every_metric_has_the_same_value_with_the_prepared_reference(guitar, channels):
    t = guitar if channels == 1 else np.stack([guitar, np.roll(guitar, 441)], axis=1)
    prepared = M.prepare_reference(t, SR)
    for name, o in outputs(t).items():
        plain = M.compute_all(o, t, SR)
        assert_same(M.compute_all(o, t, SR, reference=prepared), plain)
        # and each metric's own function gives the value compute_all gives
        for key, info in M.METRICS.items():
            args = (o, t, SR) if key in M._NEEDS_RATE else (o, t)
            assert_same({**plain, key: info.function(*args)}, plain)
        if name == "identical":
            assert all(v == pytest.approx(0.0, abs=1e-12) for v in plain.values()), plain
        if name == "silent":
            assert plain["delta_lufs"] == plain["delta_crest_db"] == math.inf
    # the prepared path's MR-STFT is still the former torch.stft computation (test_metrics.py)
    o = outputs(t)["near-identical"]
    expected = _mr_stft_torch(o if o.ndim == 2 else o[:, None], t if t.ndim == 2 else t[:, None])
    assert M.compute_all(o, t, SR, reference=prepared)["mr_stft"] == pytest.approx(expected, rel=1e-10)


def test_the_recordings_side_is_computed_once_and_reused(guitar, monkeypatch):
    """Counted by the recording's own samples: with the prepared reference its three STFTs,
    its pre-emphasis, A-weighting and loudness are computed once for three outputs; without it,
    once per output."""
    t = guitar
    calls: dict[tuple[str, bool], int] = {}

    def spy(name, real, take):
        def counted(*args, **kwargs):
            x = np.asarray(take(args))
            is_ref = x.size == t.size and np.array_equal(x.reshape(-1), t.astype(np.float64))
            calls[name, is_ref] = calls.get((name, is_ref), 0) + 1
            return real(*args, **kwargs)

        return counted

    pad = M._MR_STFT_PAD  # _stft_blocks takes the reflect-padded signal
    monkeypatch.setattr(M, "_stft_blocks", spy("stft", M._stft_blocks, lambda a: a[0][:, pad:-pad]))
    monkeypatch.setattr(M, "preemphasis", spy("preemph", M.preemphasis, lambda a: a[0]))
    monkeypatch.setattr(M, "integrated_loudness", spy("loudness", M.integrated_loudness, lambda a: a[0]))
    monkeypatch.setattr(M.signal, "sosfilt", spy("aweight", M.signal.sosfilt, lambda a: a[1]))
    outs = [outputs(t)[k] for k in ("close", "far", "near-identical")]

    prepared = M.prepare_reference(t, SR)
    with_prepared = [M.compute_all(o, t, SR, reference=prepared) for o in outs]
    reused = dict(calls)
    calls.clear()
    plain = [M.compute_all(o, t, SR) for o in outs]

    resolutions = len(M.MR_STFT_FFT_SIZES)
    assert reused == {
        ("stft", True): resolutions,
        ("stft", False): 3 * resolutions,
        ("preemph", True): 1,
        ("preemph", False): 3,
        ("aweight", True): 1,
        ("aweight", False): 3,
        ("loudness", True): 1,
        ("loudness", False): 3,
    }
    assert calls[("stft", True)] == 3 * resolutions and calls[("loudness", True)] == 3
    for a, b in zip(with_prepared, plain):
        assert_same(a, b)


def test_a_prepared_reference_is_a_private_read_only_copy_of_its_recording(guitar):
    t = guitar.copy()
    prepared = M.prepare_reference(t, SR)
    assert not prepared.target.flags.writeable and prepared.sample_rate == SR
    assert prepared.nbytes > 20 * t.nbytes  # its spectra
    o = outputs(guitar)["close"]
    before = M.compute_all(o, guitar, SR, reference=prepared)
    t[1000] += 0.5  # the caller's array changes: the prepared one does not
    assert_same(M.compute_all(o, guitar, SR, reference=prepared), before, rel=0.0)
    # ... and the changed recording is not the prepared one
    with pytest.raises(AudioError, match="prepared reference is of another recording"):
        M.compute_all(o, t, SR, reference=prepared)


def test_another_recording_rate_or_length_is_refused(guitar):
    prepared = M.prepare_reference(guitar, SR)
    o = outputs(guitar)["close"]
    for out, target, rate in (
        (o, np.roll(guitar, 1), SR),
        (o, guitar, 48_000),
        (o[:-10], guitar[:-10], SR),
        (np.stack([o, o], axis=1), np.stack([guitar, guitar], axis=1), SR),
    ):
        with pytest.raises(AudioError, match="prepared reference is of another recording"):
            M.compute_all(out, target, rate, reference=prepared)
    assert prepared.matches(guitar, SR) and prepared.matches(guitar[:, None], SR)
    assert not prepared.matches(guitar, 48_000)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("silent", "digitally silent channel"),
        ("short", "too short for BS.1770 loudness"),
        ("quiet", "below the -70 LUFS gate"),
    ],
)
def test_a_recording_a_metric_refuses_is_refused_as_without_preparing(guitar, case, message):
    t = {"silent": np.zeros(SR, np.float32), "short": guitar[:4000], "quiet": 1e-5 * guitar}[case]
    o = 0.9 * t + 1e-3
    with pytest.raises(AudioError, match=message) as plain:
        M.compute_all(o, t, SR)
    prepared = M.prepare_reference(t, SR)  # prepared all the same: the metric refuses it when used
    with pytest.raises(AudioError, match=message) as reused:
        M.compute_all(o, t, SR, reference=prepared)
    assert str(reused.value) == str(plain.value)


def test_prepare_reference_refuses_what_no_metric_takes(guitar):
    with pytest.raises(AudioError, match="sample rate must be a positive integer"):
        M.prepare_reference(guitar, 0)
    with pytest.raises(AudioError, match="NaN or infinite"):
        M.prepare_reference(np.full(SR, np.nan), SR)
    with pytest.raises(AudioError, match="empty"):
        M.prepare_reference(np.zeros(0), SR)


def test_the_reference_cache_reuses_by_key_and_samples_and_keeps_to_its_size(guitar):
    a, b = guitar, np.roll(guitar, 4410)
    size = M.prepare_reference(a, SR).nbytes
    cache = M.ReferenceCache(max_bytes=2 * size)
    first = cache.get("a.wav", a, SR)
    assert cache.get("a.wav", a.copy(), SR) is first and (cache.hits, cache.misses) == (1, 1)
    # the same key with other samples (a replaced file) is prepared again and replaces it
    other = cache.get("a.wav", b, SR)
    assert other is not first and other.matches(b, SR) and len(cache) == 1
    assert cache.get("a.wav", b, SR) is other and (cache.hits, cache.misses) == (2, 2)
    # at most max_bytes: the least recently used goes first
    cache.get("b.wav", a, SR)
    cache.get("a.wav", b, SR)  # a.wav used last
    cache.get("c.wav", a[:SR], SR)
    assert len(cache) == 2 and cache.nbytes <= cache.max_bytes
    assert cache.get("a.wav", b, SR) is other and cache.misses == 4
    # one larger than the whole cache is prepared and not kept
    small = M.ReferenceCache(max_bytes=size // 2)
    assert small.get("a.wav", a, SR).matches(a, SR) and len(small) == 0 and small.nbytes == 0
