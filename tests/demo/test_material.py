"""Demo excerpts: written as float32 WAV pairs whose reference is the pedal's output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from demo.device import DemoDevice
from demo.material import demo_checkpoints, make_demo_excerpts
from modelrunner.audio import read_audio


def test_excerpt_pairs_are_written_and_reproducible(tmp_path: Path) -> None:
    items = make_demo_excerpts(tmp_path / "a", n_excerpts=2, seconds=2.0)
    again = make_demo_excerpts(tmp_path / "b", n_excerpts=2, seconds=2.0)
    assert [x["name"] for x in items] == ["Riff 1 (E minor)", "Riff 2 (A minor)"]
    for i, item in enumerate(items, start=1):
        assert item["dry"].name == f"excerpt_{i:02d}_dry.wav"
        assert item["reference"].name == f"excerpt_{i:02d}_device.wav"
        dry, rate = read_audio(item["dry"])
        ref, rate2 = read_audio(item["reference"])
        assert rate == rate2 == 48000 and dry.shape == ref.shape == (96000, 1)
        np.testing.assert_array_equal(ref[:, 0], DemoDevice().process(dry[:, 0], 48000, 0.5))
        np.testing.assert_array_equal(read_audio(again[i - 1]["dry"])[0], dry)
        assert 20 * np.log10(np.max(np.abs(dry))) == pytest.approx(-6.0, abs=0.01)


def test_excerpts_differ_and_follow_the_sample_rate(tmp_path: Path) -> None:
    items = make_demo_excerpts(tmp_path, n_excerpts=3, seconds=1.5, sample_rate=44100, gain=0.8)
    dry = [read_audio(x["dry"])[0][:, 0] for x in items]
    assert all(read_audio(x["reference"])[1] == 44100 for x in items)
    assert len({x["name"] for x in items}) == 3
    assert abs(np.corrcoef(dry[0], dry[1])[0, 1]) < 0.5


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_excerpts"):
        make_demo_excerpts(tmp_path, n_excerpts=0)
    with pytest.raises(ValueError, match="seconds"):
        make_demo_excerpts(tmp_path, seconds=0.1)


def test_checkpoint_list_points_at_committed_files() -> None:
    items = demo_checkpoints()
    assert [c["label"] for c in items] == ["LSTM-16 (gain 0.5)", "GRU-8", "LSTM-4 (under-trained)"]
    assert [c["knobs"] for c in items] == [{"p1": 0.5}, {}, {}]
    assert all(Path(c["path"]).is_file() for c in items)
