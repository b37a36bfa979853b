"""BS.1770-4 loudness and item loudness alignment, checked against pyloudnorm and the
calibration points of ITU-R BS.1770-4 / EBU Tech 3341."""

from __future__ import annotations

import json
import math

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from modelrunner.anchors import anchor_35
from modelrunner.errors import AudioError
from modelrunner.loudness import (
    LoudnessReport,
    align_item,
    integrated_loudness,
    sample_peak_dbfs,
    true_peak_dbfs,
)
from tests.paths import fixture_path

SR = 48_000


def sine(freq: float, seconds: float = 2.0, amp: float = 1.0, sr: int = SR, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def noise(seconds: float = 2.0, channels: int = 1, amp: float = 0.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (amp * rng.standard_normal((int(seconds * SR), channels))).astype(np.float32)


def reference_lufs(a: np.ndarray, sr: int = SR) -> float:
    """Independent measurement straight through pyloudnorm in float64."""
    return pyloudnorm.Meter(sr).integrated_loudness(np.asarray(a, dtype=np.float64))


# --- integrated_loudness ---------------------------------------------------------


def test_full_scale_1khz_sine_in_one_channel_reads_minus_3_01():
    # BS.1770-4 Annex 1: a 0 dBFS 1 kHz sine in one front channel reads -3.01 LKFS.
    assert integrated_loudness(sine(997.0), SR) == pytest.approx(-3.01, abs=0.05)


def test_ebu_3341_case_1_stereo_sine_at_minus_23_dbfs_reads_minus_23():
    s = sine(1000.0, amp=10 ** (-23 / 20))
    assert integrated_loudness(np.stack([s, s], axis=1), SR) == pytest.approx(-23.0, abs=0.1)


def test_gain_shifts_loudness_by_the_same_number_of_db():
    x = noise()
    assert integrated_loudness(x * 0.5, SR) - integrated_loudness(x, SR) == pytest.approx(
        20 * math.log10(0.5), abs=1e-6
    )


@pytest.mark.parametrize("sr", [44_100, 48_000, 96_000])
def test_matches_pyloudnorm_at_common_rates(sr):
    rng = np.random.default_rng(3)
    x = (0.05 * rng.standard_normal((sr, 2))).astype(np.float32)
    assert integrated_loudness(x, sr) == pytest.approx(reference_lufs(x, sr), abs=1e-9)


def test_mono_1d_and_2d_are_the_same():
    x = noise()
    assert integrated_loudness(x[:, 0], SR) == integrated_loudness(x, SR)


def test_silence_is_minus_infinity():
    assert integrated_loudness(np.zeros(SR), SR) == float("-inf")
    # below the -70 LUFS absolute gate counts as silence too
    assert integrated_loudness(sine(1000.0, amp=1e-5), SR) == float("-inf")


def test_shorter_than_one_gating_block_is_refused():
    with pytest.raises(AudioError, match="400 ms"):
        integrated_loudness(np.ones(int(0.3 * SR), dtype=np.float32) * 0.1, SR)


def test_nan_and_too_many_channels_are_refused():
    x = noise()
    x[10, 0] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        integrated_loudness(x, SR)
    with pytest.raises(AudioError, match="1 to 5 channels"):
        integrated_loudness(np.zeros((SR, 6), dtype=np.float32), SR)


def test_true_peak_finds_the_inter_sample_peak():
    # A sine at fs/4 sampled 45 degrees off its crest: every sample is at 1/sqrt(2).
    x = sine(SR / 4, seconds=1.0, phase=math.pi / 4)
    assert sample_peak_dbfs(x) == pytest.approx(-3.01, abs=0.01)
    # the abrupt start and end ring a little in the oversampling filter
    assert -0.2 <= true_peak_dbfs(x) <= 0.2


# --- align_item --------------------------------------------------------------------


def test_conditions_are_aligned_to_the_reference_within_tolerance():
    ref = noise(channels=2, amp=0.05, seed=1)
    conditions = {
        "quiet": ref * 0.1,
        "loud_distorted": np.tanh(ref * 8).astype(np.float32) * 0.3,
        "anchor": anchor_35(ref, SR),
    }
    ref_out, out, report = align_item(ref, conditions, SR)
    target = reference_lufs(ref)
    # reference untouched when no target is asked and nothing clips
    assert np.array_equal(ref_out, ref)
    assert report.item_gain_db == 0.0
    for name, audio in out.items():
        assert abs(reference_lufs(audio) - target) <= 0.1, name
        assert report.conditions[name].lufs_after == pytest.approx(reference_lufs(audio), abs=1e-6)
        assert report.conditions[name].lufs_before == pytest.approx(reference_lufs(conditions[name]), abs=1e-6)
        gain = 20 * math.log10(np.max(np.abs(audio)) / np.max(np.abs(conditions[name])))
        assert report.conditions[name].gain_db == pytest.approx(gain, abs=1e-3)
    assert report.conditions["quiet"].gain_db == pytest.approx(20.0, abs=0.01)
    assert report.aligned and report.target_met
    assert report.max_deviation_lu <= 0.1


def test_target_lufs_moves_the_reference_too():
    ref = noise(amp=0.05)
    ref_out, out, report = align_item(ref, {"a": ref * 3}, SR, target_lufs=-30.0)
    assert reference_lufs(ref_out) == pytest.approx(-30.0, abs=0.1)
    assert reference_lufs(out["a"]) == pytest.approx(-30.0, abs=0.1)
    assert report.target_lufs == -30.0 and report.target_met


def test_peak_ceiling_turns_the_whole_item_down_together():
    ref = noise(amp=0.02, seed=2)
    spiky = ref.copy() * 0.2
    spiky[SR // 2] = 0.9  # one click: aligning its loudness would push it far over 0 dBFS
    ref_out, out, report = align_item(ref, {"spiky": spiky}, SR, peak_ceiling_dbfs=-1.0)
    assert report.item_gain_db < -1.0
    assert max(sample_peak_dbfs(ref_out), sample_peak_dbfs(out["spiky"])) <= -1.0 + 1e-6
    # relative loudness is kept, and the reference moved by the common item gain
    assert abs(reference_lufs(out["spiky"]) - reference_lufs(ref_out)) <= 0.1
    ratio_db = 20 * math.log10(np.max(np.abs(ref_out)) / np.max(np.abs(ref)))
    assert ratio_db == pytest.approx(report.item_gain_db, abs=1e-3)
    assert report.reference.gain_db == pytest.approx(report.item_gain_db)
    assert report.aligned
    # no target was asked, so only relative alignment is promised
    assert report.target_met


def test_true_peak_mode_respects_the_ceiling_between_samples():
    ref = sine(SR / 4, seconds=1.0, amp=0.5, phase=math.pi / 4)
    loud = sine(SR / 4, seconds=1.0, amp=0.05, phase=math.pi / 4)
    _, out, report = align_item(ref, {"x": loud}, SR, target_lufs=0.0, peak_ceiling_dbfs=-1.0, true_peak=True)
    assert report.peak_mode == "true"
    assert report.item_gain_db < 0
    assert true_peak_dbfs(out["x"]) <= -1.0 + 1e-3
    assert sample_peak_dbfs(out["x"]) < -3.0  # sample peaks alone would have hidden the overshoot
    assert not report.target_met  # the ceiling won over the absolute target


def test_shapes_dtypes_and_report_serialise():
    ref = noise(amp=0.05)[:, 0]
    ref_out, out, report = align_item(ref, {"stereo": noise(channels=2, amp=0.01)}, SR)
    assert ref_out.shape == ref.shape and ref_out.dtype == np.float32
    assert out["stereo"].shape == (2 * SR, 2) and out["stereo"].dtype == np.float32
    assert isinstance(report, LoudnessReport)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["tolerance_lu"] == 0.1 and d["peak_mode"] == "sample"
    assert set(d["conditions"]) == {"stereo"}
    assert set(d["reference"]) == {"lufs_before", "lufs_after", "gain_db", "peak_dbfs_after"}


def test_a_condition_may_be_called_reference():
    ref = noise(amp=0.05)
    _, out, report = align_item(ref, {"reference": ref * 0.5}, SR)
    assert set(out) == {"reference"}
    assert report.conditions["reference"].gain_db == pytest.approx(6.02, abs=0.01)


def test_silent_condition_is_refused_by_name():
    ref = noise()
    with pytest.raises(AudioError, match="condition 'broken_model' is silent"):
        align_item(ref, {"ok": ref, "broken_model": np.zeros_like(ref)}, SR)


def test_silent_or_short_reference_is_refused():
    with pytest.raises(AudioError, match="reference is silent"):
        align_item(np.zeros(SR, dtype=np.float32), {"a": noise()}, SR)
    with pytest.raises(AudioError, match="condition 'short'.*too short"):
        align_item(noise(), {"short": noise(seconds=0.2)}, SR)


def test_real_guitar_excerpt_and_its_anchor_align():
    data, sr = sf.read(fixture_path("audio", "guitar_example_44k.wav"), dtype="float32", always_2d=True)
    conditions = {"anchor35": anchor_35(data, sr), "half": data * 0.5}
    ref_out, out, report = align_item(data, conditions, sr)
    target = reference_lufs(ref_out, sr)
    for audio in out.values():
        assert abs(reference_lufs(audio, sr) - target) <= 0.1
    assert max(c.peak_dbfs_after for c in report.conditions.values()) <= -1.0 + 1e-6


def test_matches_pyloudnorm_on_gated_and_multichannel_audio_at_any_length():
    """Every block bound and both gates as pyloudnorm's meter has them (BS.1770-4 Annex 1)."""
    rng = np.random.default_rng(11)
    for sr in (8_000, 22_050, 44_100, 48_000):
        for channels in (1, 2, 5):
            for seconds in (0.41, 1.234, 3.0):
                x = (0.05 * rng.standard_normal((int(seconds * sr) + 7, channels))).astype(np.float32)
                x[: x.shape[0] // 3] *= 1e-4  # blocks under the absolute gate
                x[x.shape[0] // 3 : x.shape[0] // 2] *= 0.05  # blocks under the relative gate
                assert integrated_loudness(x, sr) == pytest.approx(reference_lufs(x, sr), abs=1e-9)


def test_alignment_measures_each_float32_signal_once_and_reports_what_it_returns(monkeypatch):
    """The loudness reported after alignment is that of the returned samples, and a float32
    signal's loudness is not measured twice on the same samples."""
    from modelrunner import loudness

    calls: list[int] = []
    real = loudness._gated_loudness
    monkeypatch.setattr(loudness, "_gated_loudness", lambda a, sr: calls.append(a.shape[0]) or real(a, sr))
    ref = noise(channels=2, amp=0.05, seed=4)
    ref_out, out, report = align_item(ref, {"half": ref * np.float32(0.5)}, SR)
    # reference, condition, the condition turned up by 6.02 dB: three measurements
    assert len(calls) == 3
    monkeypatch.setattr(loudness, "_gated_loudness", real)
    assert report.reference.lufs_after == integrated_loudness(ref_out, SR) == report.reference.lufs_before
    assert report.conditions["half"].lufs_after == integrated_loudness(out["half"], SR)
    assert report.conditions["half"].lufs_after == pytest.approx(reference_lufs(ref), abs=0.025)

    # Given as float64, a signal's float32 copy is measured again; after a headroom gain, all are.
    loud = (np.clip(noise(channels=1, amp=0.5, seed=5), -0.99, 0.99)).astype(np.float64)
    ref_out, out, report = align_item(loud, {"quiet": loud * 0.05}, SR)
    assert report.item_gain_db < 0
    assert report.reference.lufs_after == integrated_loudness(ref_out, SR)
    assert report.conditions["quiet"].lufs_after == integrated_loudness(out["quiet"], SR)
