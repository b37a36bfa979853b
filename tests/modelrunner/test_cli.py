"""``python -m modelrunner``: outputs, exit codes and one-line error messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from modelrunner import formats
from modelrunner.cli import UsageError, main, parse_params
from modelrunner.render import reference_forward, resample
from tests.paths import REPO, fixture_path

torch.set_num_threads(1)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run the real entry point in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "modelrunner", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
    )


def tone(path: Path, sr: int = 44100, seconds: float = 0.5, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.2 * np.sin(2 * np.pi * 220 * t)[:, None] * np.linspace(1.0, 0.5, channels)[None, :]
    sf.write(path, x.astype(np.float32), sr, subtype="PCM_24")
    return sf.read(path, dtype="float32", always_2d=True)[0]


@pytest.mark.slow
def test_render_writes_float32_wav_at_model_rate(tmp_path):
    ckpt = fixture_path("models", "nam", "lstm_h3.nam")  # a 48 kHz model
    x = tone(tmp_path / "in.wav", 44100, 0.5, channels=2)
    out = tmp_path / "sub" / "out.wav"
    proc = run_cli("render", str(ckpt), str(tmp_path / "in.wav"), "-o", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    info = sf.info(out)
    assert (info.samplerate, info.subtype, info.channels) == (48000, "FLOAT", 2)
    assert info.frames == 24000  # 0.5 s at the model's rate
    y, _ = sf.read(out, dtype="float32", always_2d=True)
    want = reference_forward(formats.load(ckpt), resample(x, 44100, 48000))
    err = np.sum((y.astype(np.float64) - want) ** 2) / np.sum(want.astype(np.float64) ** 2)
    assert err < 1e-7
    assert "48000 Hz float32" in proc.stdout


@pytest.mark.slow
def test_bad_param_exits_2_with_one_line(tmp_path):
    ckpt = fixture_path("models", "coreaudioml", "ts9_lstm20_gain.json")
    tone(tmp_path / "in.wav")
    proc = run_cli("render", str(ckpt), str(tmp_path / "in.wav"), "-o", str(tmp_path / "o.wav"), "--param", "gain")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["modelrunner: error: --param 'gain' is not NAME=VALUE"]
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.slow
def test_unknown_knob_exits_2_naming_the_knobs(tmp_path):
    ckpt = fixture_path("models", "coreaudioml", "ts9_lstm20_gain.json")
    tone(tmp_path / "in.wav")
    proc = run_cli("render", str(ckpt), str(tmp_path / "in.wav"), "-o", str(tmp_path / "o.wav"), "--param", "drive=1")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown knob 'drive'" in lines[0] and "p1" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_missing_arguments_exit_2_with_one_line():
    proc = run_cli("render")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelrunner: error: the following arguments are required")


# From here on main() is called in-process: the same code path without an interpreter start.


def test_inspect_json_describes_the_model(capsys):
    assert main(["inspect", str(fixture_path("models", "nam", "wavenet_tiny_v054.nam")), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "nam" and info["sample_rate"] == 48000
    assert info["stateful"] is False and info["receptive_field"] > 1
    assert info["parameter_count"] > 0 and info["load_seconds"] >= 0
    assert info["state_size"] >= info["receptive_field"] - 1  # cached context of every layer
    assert info["render_kernel"] == "compiled WaveNet kernel"


def test_inspect_text_lists_knobs_and_state(capsys):
    assert main(["inspect", str(fixture_path("models", "coreaudioml", "ts9_lstm20_gain.json"))]) == 0
    out = capsys.readouterr().out
    assert "LSTM-20" in out and "p1 [0, 1] default 0.5" in out
    assert "recurrent, 40 values per channel" in out  # h and c of 20 units
    assert "44100 Hz" in out
    assert "render kernel    compiled recurrent kernel" in out


@pytest.mark.slow
def test_inspect_says_when_renders_fall_back_to_torch():
    path = fixture_path("models", "coreaudioml", "ts9_lstm20_gain.json")
    proc = subprocess.run(
        [sys.executable, "-m", "modelrunner", "inspect", str(path), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "MODELRUNNER_NATIVE": "0"},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["render_kernel"] == "PyTorch (forced by MODELRUNNER_NATIVE=0)"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["inspect", "/no/such/model.nam"], "checkpoint /no/such/model.nam: no such file"),
        (["inspect", "SOURCES"], "unrecognised checkpoint"),
        (["inspect", "NAM", "--config", "{oops"], "--config is not valid JSON"),
        (["render", "NAM", "/no/such.wav", "-o", "x.wav"], "input /no/such.wav: no such file"),
        (["render", "NAM", "SOURCES", "-o", "x.wav"], "not a readable audio file"),
        (["metrics", "/no/a.wav", "/no/b.wav"], "output /no/a.wav: no such file"),
        (["bench", "NAM", "--excerpts", "0"], "--excerpts and --threads must be >= 1"),
        (["render", "NAM", "SOURCES", "-o", "x.wav", "--threads", "0"], "--threads must be >= 1"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, capsys, tmp_path):
    subs = {"NAM": str(fixture_path("models", "nam", "lstm_h3.nam")), "SOURCES": str(fixture_path("SOURCES.md"))}
    argv = [subs.get(a, a) for a in argv]
    argv = [str(tmp_path / a) if a == "x.wav" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("modelrunner: error: ") and message in lines[0]


def test_metrics_refuses_different_rates(tmp_path, capsys):
    tone(tmp_path / "a.wav", 44100)
    tone(tmp_path / "b.wav", 48000)
    assert main(["metrics", str(tmp_path / "a.wav"), str(tmp_path / "b.wav")]) == 2
    assert "output is 44100 Hz but target is 48000 Hz" in capsys.readouterr().err


def test_metrics_json_and_length_check(tmp_path, capsys):
    x = tone(tmp_path / "t.wav", 44100, 0.5)
    sf.write(tmp_path / "o.wav", 0.5 * x[:-10], 44100, subtype="FLOAT")
    assert main(["metrics", str(tmp_path / "o.wav"), str(tmp_path / "t.wav")]) == 2
    assert "10 frames shorter" in capsys.readouterr().err
    assert main(["metrics", str(tmp_path / "o.wav"), str(tmp_path / "t.wav"), "--trim", "--json"]) == 0
    values = json.loads(capsys.readouterr().out)
    # ESR of 0.5 * target against target is (0.5)^2 / 1 = 0.25 (Wright et al. 2019, eq. 4).
    assert values["esr"] == pytest.approx(0.25, rel=1e-4)


def test_bench_reports_speed_and_agreement(capsys):
    ckpt = str(fixture_path("models", "nam", "wavenet_tiny_v054.nam"))
    assert main(["bench", ckpt, "--seconds", "0.5", "--excerpts", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["esr_vs_naive"] < 1e-7
    assert result["naive_realtime"] > 0 and result["batched_realtime"] > 0
    assert result["speedup"] == pytest.approx(result["naive_seconds"] / result["batched_seconds"])


def test_parse_params():
    assert parse_params(["gain=0.5", " tone = 1e-1"]) == {"gain": 0.5, "tone": 0.1}
    for bad, message in [("=1", "NAME=VALUE"), ("gain=loud", "not a number"), ("gain=nan", "finite")]:
        with pytest.raises(UsageError, match=message):
            parse_params([bad])
    with pytest.raises(UsageError, match="twice"):
        parse_params(["a=1", "a=2"])
