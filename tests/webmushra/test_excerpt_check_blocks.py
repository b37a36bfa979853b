"""The excerpt check reads its files in blocks and gives the verdicts, warnings and stored
samples of the straightforward whole-file numpy computation it replaced (``reference_check``
below: decode both files whole, trim, then peak, RMS and full-scale count over the arrays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from modelrunner import audio
from webmushra.errors import ServiceError
from webmushra.services import uploads

RATE = 8_000


def reference_check(dry_path: Path, ref_path: Path) -> tuple[int, int, int, list[str]]:
    """The whole-file computation: (rate, frames, channels, warnings), or ServiceError."""
    dry, dry_sr = audio.read_audio(dry_path)
    ref, ref_sr = audio.read_audio(ref_path)
    if dry_sr != ref_sr:
        raise ServiceError("rates differ")
    warnings: list[str] = []
    if dry.shape[0] != ref.shape[0]:
        n = min(dry.shape[0], ref.shape[0])
        diff = abs(dry.shape[0] - ref.shape[0])
        if diff > 0.05 * max(dry.shape[0], ref.shape[0]):
            raise ServiceError("lengths differ")
        warnings.append(f"lengths differed by {diff} frames ({diff / dry_sr * 1000:.1f} ms); both trimmed to {n}")
        dry, ref = dry[:n], ref[:n]
    seconds = dry.shape[0] / dry_sr
    if seconds < 0.5:
        raise ServiceError("too short")
    if seconds > uploads.LONG_EXCERPT_SECONDS:
        warnings.append(f"{seconds:.1f} s long; BS.1534-3 recommends excerpts of about 10 s")
    for data, name in ((dry, dry_path.name), (ref, ref_path.name)):
        peak = float(np.max(np.abs(data)))
        if peak == 0.0:
            raise ServiceError("silent")
        rms = float(np.sqrt(np.mean(np.square(data, dtype=np.float64))))
        if rms < 1e-4:
            warnings.append(f"{name}: nearly silent (RMS {20 * np.log10(rms):.1f} dBFS)")
        if peak >= 0.999:
            clipped = int(np.sum(np.abs(data) >= 0.999))
            warnings.append(f"{name}: {clipped} samples at full scale (possible clipping)")
    return dry_sr, dry.shape[0], ref.shape[1], warnings


def tone(seconds: float, channels: int = 1, amplitude: float = 0.3, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return np.repeat((amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[:, None], channels, axis=1)


def clipped(seconds: float, channels: int = 2) -> np.ndarray:
    return np.clip(tone(seconds, channels, amplitude=1.5), -1.0, 1.0)


def with_nan(seconds: float) -> np.ndarray:
    x = tone(seconds)
    x[len(x) // 2, 0] = np.nan
    return x


#: (name, dry, reference, reference rate, subtype): pairs covering every verdict and warning.
PAIRS = [
    ("ordinary", tone(1.0), np.tanh(2 * tone(1.0, 2)), RATE, "PCM_24"),
    ("clipped-reference", tone(1.0), clipped(1.0), RATE, "FLOAT"),
    ("clipped-in-the-trimmed-tail", tone(1.0), np.concatenate([tone(1.0, 2), clipped(0.02)]), RATE, "FLOAT"),
    ("nearly-silent", tone(1.0, amplitude=1e-5), tone(1.0), RATE, "FLOAT"),
    ("silent", np.zeros((8_000, 1), np.float32), tone(1.0), RATE, "PCM_16"),
    ("lengths-trimmed", tone(1.0), tone(0.97), RATE, "PCM_U8"),
    ("lengths-too-different", tone(1.0), tone(0.8), RATE, "PCM_16"),
    ("rates-differ", tone(1.0), tone(1.0, rate=16_000), 16_000, "PCM_16"),
    ("too-short", tone(0.4), tone(0.4), RATE, "PCM_16"),
    ("long", tone(12.5), clipped(12.5), RATE, "PCM_24"),
    ("nan", tone(1.0), with_nan(1.0), RATE, "FLOAT"),
]


#: The pairs the whole-file computation refuses, and the reason the block check must give.
REFUSALS = {
    "silent": r"^dry\.wav: the file is silent$",
    "lengths-too-different": r"^dry\.wav has 8000 frames and ref\.wav has 6400; lengths differ by more than 5 %$",
    "rates-differ": r"^dry\.wav is at 8000 Hz but ref\.wav is at 16000 Hz; they must match$",
    "too-short": r"^dry\.wav: 0\.40 s is too short for a listening test",
    "nan": r"^ref\.wav: contains NaN or infinite samples$",
}


@pytest.mark.parametrize("block", [1 << 16, 999], ids=["default-block", "many-blocks"])
@pytest.mark.parametrize(("name", "dry", "ref", "ref_rate", "subtype"), PAIRS, ids=[p[0] for p in PAIRS])
def test_the_block_check_gives_the_whole_file_verdict(tmp_path, monkeypatch, block, name, dry, ref, ref_rate, subtype):
    monkeypatch.setattr(audio, "CHECK_BLOCK", block)
    dry_path, ref_path = tmp_path / "dry.wav", tmp_path / "ref.wav"
    sf.write(dry_path, dry, RATE, subtype=subtype)
    sf.write(ref_path, ref, ref_rate, subtype=subtype)
    try:
        expected = reference_check(dry_path, ref_path)
    except Exception:  # the whole-file verdict is a refusal: the block check refuses, for that reason
        with pytest.raises(ServiceError, match=REFUSALS[name]):
            uploads.check_excerpt_audio(dry_path, dry_path.name, ref_path, ref_path.name)
        return
    assert name not in REFUSALS
    check = uploads.check_excerpt_audio(dry_path, dry_path.name, ref_path, ref_path.name)
    assert (check.sample_rate, check.frames, check.channels, check.warnings) == expected
    assert name != "ordinary" or not check.warnings
    # Stored as checked: the first ``frames`` frames as float32, the samples read_audio decodes.
    wanted = [audio.read_audio(p)[0][: check.frames] for p in (dry_path, ref_path)]
    uploads.store_checked_excerpt(check, dry_path, ref_path)
    for path, samples in zip((dry_path, ref_path), wanted):
        assert sf.info(str(path)).subtype == "FLOAT"
        np.testing.assert_array_equal(audio.read_audio(path)[0], samples)


def test_a_header_count_that_is_not_the_decoded_one_is_measured_again(tmp_path, monkeypatch):
    """Where a header's frame count is not what decodes (the statistics were taken over the
    wrong common length), the pair is measured again over the decoded common length: the
    clipping past it is not counted."""
    from types import SimpleNamespace

    monkeypatch.setattr(audio, "CHECK_BLOCK", 999)
    dry_path, ref_path = tmp_path / "dry.wav", tmp_path / "ref.wav"
    sf.write(dry_path, np.concatenate([tone(0.97), clipped(0.03, 1)]), RATE, subtype="PCM_16")
    sf.write(ref_path, tone(0.97), RATE, subtype="PCM_16")

    def lying_info(path: str):
        info = sf.info(path)
        return SimpleNamespace(samplerate=info.samplerate, frames=8_000)  # both claim 8000

    monkeypatch.setattr(uploads, "sf", SimpleNamespace(info=lying_info))
    check = uploads.check_excerpt_audio(dry_path, dry_path.name, ref_path, ref_path.name)
    assert check.frames == 7_760
    assert check.warnings == [f"lengths differed by 240 frames ({240 / RATE * 1000:.1f} ms); both trimmed to 7760"]
