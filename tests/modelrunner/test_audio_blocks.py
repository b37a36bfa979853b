"""Audio checked and copied in blocks (``scan_audio``, ``copy_as_float_wav``) gives what the
whole file gives: the same verdicts, the same peak, level and full-scale count as numpy over
the decoded array (``read_audio``), and the same bytes as ``write_wav``."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from modelrunner import audio
from modelrunner.errors import AudioError

RATE = 48_000


def signal(frames: int, channels: int, seed: int = 1) -> np.ndarray:
    """Noise with a few samples driven past full scale, float32 ``(frames, channels)``."""
    rng = np.random.default_rng(seed)
    x = (0.3 * rng.standard_normal((frames, channels))).astype(np.float32)
    x[rng.integers(0, frames, 20), rng.integers(0, channels, 20)] = 1.2
    return np.clip(x, -1.0, 1.0)


def whole_file(path: Path, frames: int | None = None) -> tuple[float, float, int]:
    """Peak, RMS and full-scale count as a straightforward whole-array numpy computation."""
    data = sf.read(str(path), dtype="float32", always_2d=True)[0][:frames]
    peak = float(np.max(np.abs(data)))
    rms = float(np.sqrt(np.mean(np.square(data, dtype=np.float64))))
    return peak, rms, int(np.sum(np.abs(data) >= 0.999))


def without_peak_time(raw: bytes) -> bytes:
    """A WAV file's bytes with the timestamp of its PEAK chunk (after the chunk's id, size and
    version) zeroed: the one field that depends on when the file was written."""
    at = raw.index(b"PEAK") + 12
    return raw[:at] + bytes(4) + raw[at + 4 :]


@pytest.fixture(params=[1 << 16, 1000], ids=["default-block", "many-blocks"])
def block(request, monkeypatch) -> int:
    monkeypatch.setattr(audio, "CHECK_BLOCK", request.param)
    return request.param


@pytest.mark.parametrize(
    ("subtype", "fmt", "channels"),
    [("PCM_U8", "WAV", 1), ("PCM_16", "WAV", 2), ("PCM_24", "WAV", 2), ("FLOAT", "WAV", 1), ("PCM_24", "FLAC", 2)],
)
def test_block_statistics_equal_the_whole_file_computation(tmp_path, block, subtype, fmt, channels):
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, signal(12_345, channels), RATE, subtype=subtype, format=fmt)
    for limit in (None, 12_345, 7_001, 999, 0):
        stats = audio.scan_audio(path, measure_frames=limit)
        assert (stats.sample_rate, stats.channels, stats.frames) == (RATE, channels, 12_345)
        assert stats.measured_frames == (12_345 if limit is None else limit)
        if limit == 0:
            assert (stats.peak, stats.sum_squares, stats.full_scale) == (0.0, 0.0, 0)
            continue
        peak, rms, full = whole_file(path, limit)
        assert stats.peak == peak and stats.full_scale == full
        if block >= 12_345:  # one block: the same summation as numpy's, to the bit
            assert stats.rms == rms
        else:
            assert stats.rms == pytest.approx(rms, rel=1e-12)
    assert full > 0  # the signal has full-scale samples, so the count is tested


def test_check_audio_and_scan_audio_refuse_as_read_audio_does(tmp_path, block):
    bad = signal(5_000, 1)
    bad[4_321, 0] = np.nan
    sf.write(tmp_path / "nan.wav", bad, RATE, subtype="FLOAT")
    sf.write(tmp_path / "one.wav", np.zeros((1, 1), np.float32), RATE, subtype="FLOAT")
    for name, message in (("nan.wav", "NaN or infinite"), ("one.wav", "only 1 sample frame")):
        with pytest.raises(AudioError, match=message):
            audio.read_audio(tmp_path / name)
        for check in (audio.check_audio, audio.scan_audio):
            with pytest.raises(AudioError, match=message):
                check(tmp_path / name)


@pytest.mark.parametrize("frames", [12_345, 9_000])
def test_a_block_copy_is_the_file_write_wav_writes(tmp_path, block, frames):
    source = tmp_path / "in.wav"
    sf.write(source, signal(12_345, 2), RATE, subtype="PCM_24")
    expected = audio.write_wav(tmp_path / "whole.wav", audio.read_audio(source)[0][:frames], RATE)
    copied = audio.copy_as_float_wav(source, tmp_path / "blocks.wav", frames=frames)
    assert without_peak_time(copied.read_bytes()) == without_peak_time(expected.read_bytes())
    assert (copied.stat().st_mode & 0o777) == audio.FILE_MODE
    # In place, as the excerpt upload stores its checked files.
    audio.copy_as_float_wav(source, source, frames=frames)
    assert without_peak_time(source.read_bytes()) == without_peak_time(expected.read_bytes())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_a_full_disk_during_a_block_copy_raises_its_own_error(tmp_path, monkeypatch):
    """A write that fails as on a full disk (ENOSPC) surfaces as that OSError, not libsndfile's
    "System error.", and leaves no temporary file."""
    source = tmp_path / "in.wav"
    sf.write(source, signal(200_000, 2), RATE, subtype="PCM_16")
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fh):
            self.fh, self.written = fh, 0

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.written += len(data)
            if self.written > 100_000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.fh.write(data)

    monkeypatch.setattr(audio.os, "fdopen", lambda *a, **k: FullDisk(real_fdopen(*a, **k)))
    with pytest.raises(OSError) as caught:
        audio.copy_as_float_wav(source, tmp_path / "out.wav", frames=200_000)
    assert caught.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]
