"""Refusals of unsafe or malformed checkpoint files, before any of their code can run."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from modelrunner import safety
from modelrunner.errors import CheckpointError
from modelrunner.formats import detect_format, load


class _Payload:
    """Pickles to a call of os.system that creates a marker file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused_and_payload_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load(path)
    assert not marker.exists()
    # The same payload in a legacy (non-zip) pickle file.
    legacy = tmp_path / "evil_legacy.pt"
    legacy.write_bytes(pickle.dumps({"x": _Payload(marker)}, protocol=2))
    with pytest.raises(CheckpointError):
        load(legacy)
    assert not marker.exists()
    # Sanity: the payload is real, it does run when unpickled unsafely.
    pickle.loads(legacy.read_bytes())
    assert marker.exists()


def test_pickled_module_refused(tmp_path: Path) -> None:
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(CheckpointError, match="state_dict"):
        safety.torch_load(path)


def test_torchscript_refused(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(CheckpointError, match="TorchScript"):
        load(path)


def test_zip_with_too_many_entries_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(safety, "MAX_ZIP_ENTRIES", 5)
    path = tmp_path / "many.pt"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(6):
            zf.writestr(f"archive/data/{i}", b"x")
    with pytest.raises(CheckpointError, match="6 entries"):
        safety.torch_load(path)


def test_zip_bomb_refused_before_unpacking(tmp_path: Path) -> None:
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data/0", b"\0" * 50_000_000)
    assert path.stat().st_size < 200_000
    with pytest.raises(CheckpointError, match="zip bomb"):
        safety.torch_load(path)
    with pytest.raises(CheckpointError, match="over the 1000000-byte limit"):
        safety.torch_load(path, max_bytes=1_000_000)


def test_size_limit(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(1000)}, path)
    with pytest.raises(CheckpointError, match="over the 100-byte checkpoint limit"):
        safety.torch_load(path, max_bytes=100)
    monkeypatch.setenv("MODELRUNNER_MAX_CHECKPOINT_BYTES", "100")
    with pytest.raises(CheckpointError, match="100-byte"):
        detect_format(path)
    monkeypatch.setenv("MODELRUNNER_MAX_CHECKPOINT_BYTES", "lots")
    with pytest.raises(CheckpointError, match="whole number"):
        safety.torch_load(path)
    monkeypatch.delenv("MODELRUNNER_MAX_CHECKPOINT_BYTES")
    assert torch.equal(safety.torch_load(path)["w"], torch.zeros(1000))


def test_unsafe_environment_refused(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(3)}, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(CheckpointError, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        safety.torch_load(path)
    with pytest.raises(CheckpointError, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        load(path)


def test_missing_empty_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load(tmp_path / "absent.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load(tmp_path / "empty.pt")
    (tmp_path / "junk.bin").write_bytes(b"hello world, not a model")
    with pytest.raises(CheckpointError, match="unrecognised"):
        load(tmp_path / "junk.bin")


def test_state_dict_checks_name_the_key() -> None:
    module = torch.nn.Linear(3, 2)
    good = {k: v.clone() for k, v in module.state_dict().items()}
    bad_shape = dict(good, weight=torch.zeros(2, 4))
    with pytest.raises(CheckpointError, match=r"'weight' has shape \(2, 4\), expected \(2, 3\)"):
        safety.load_state_dict_strict(module, bad_shape)
    bad_value = dict(good, bias=torch.tensor([0.0, float("inf")]))
    with pytest.raises(CheckpointError, match="'bias' contains NaN or infinite"):
        safety.load_state_dict_strict(module, bad_value)
    with pytest.raises(CheckpointError, match="missing keys: bias"):
        safety.load_state_dict_strict(module, {"weight": good["weight"]})
    safety.load_state_dict_strict(module, good)


# A child process loads files that each declare a ~2 G-weight model (8 GB of float32) while
# holding a few kB. Its address space is capped at 1.5 GB above what it uses after
# importing torch, so building any such module for real would fail with a RuntimeError
# rather than a CheckpointError; the refusal must also come within a second.
_HUGE_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import torch
from safetensors.torch import save_file
from modelrunner import architectures
from modelrunner.errors import CheckpointError
from modelrunner.formats import load

tmp = Path(sys.argv[1])
small = architectures.build("recurrent", {"hidden_size": 8}, 0).state_dict()
config = {"format_version": 1, "architecture": "recurrent", "sample_rate": 48000,
          "params": {"hidden_size": 4096, "num_layers": 16}}
save_file({k: v.contiguous() for k, v in small.items()}, str(tmp / "native.safetensors"),
          metadata={"config": json.dumps(config)})
cam_sd = {k: v.tolist() for k, v in small.items()}
(tmp / "cam.json").write_text(json.dumps({"model_data": {
    "model": "SimpleRNN", "unit_type": "LSTM", "input_size": 1, "hidden_size": 4096, "output_size": 1,
    "skip": 1, "num_layers": 16, "bias_fl": True}, "state_dict": cam_sd}))
(tmp / "lstm.nam").write_text(json.dumps({"version": "0.5.4", "architecture": "LSTM",
    "config": {"input_size": 1, "hidden_size": 4096, "num_layers": 16}, "weights": [0.0], "sample_rate": 48000}))
layer = {"input_size": 1, "condition_size": 1, "channels": 4096, "kernel_size": 3, "dilations": [1] * 64,
         "activation": "Tanh", "gated": False, "head_size": 1, "head_bias": False}
(tmp / "wavenet.nam").write_text(json.dumps({"version": "0.5.4", "architecture": "WaveNet",
    "config": {"layers": [layer], "head": None, "head_scale": 1.0}, "weights": [0.0], "sample_rate": 48000}))

with open("/proc/self/statm") as fh:
    used = int(fh.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + 1_500_000_000, resource.RLIM_INFINITY))
for name in ("native.safetensors", "cam.json", "lstm.nam", "wavenet.nam"):
    started = time.perf_counter()
    try:
        load(tmp / name)
    except CheckpointError as exc:
        print(f"{name}\t{time.perf_counter() - started:.3f}\t{exc}")
    else:
        print(f"{name}\tloaded")
"""


@pytest.mark.slow
def test_huge_declared_model_refused_quickly_without_allocating(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", _HUGE_CHILD, str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert [r[0] for r in rows] == ["native.safetensors", "cam.json", "lstm.nam", "wavenet.nam"]
    for name, seconds, message in rows:
        assert float(seconds) < 1.0, (name, seconds)
        assert message.startswith(f"{name}: config implies "), message
        assert "too large" in message, message
    # The LSTM in each file: 16 layers of 4 * 4096 * (input + 4096) weights plus biases.
    lstm = 16 * 4 * 4096 * 4096 + 4 * 4096 * 1 + 15 * 4 * 4096 * 4096 + 16 * 8 * 4096
    assert f"config implies {lstm + 4097} weights" in rows[0][2]  # + output layer (4096 + bias)
    assert "file has 1" in rows[2][2] and "file has 1" in rows[3][2]


def test_parameter_limit_is_configurable(tmp_path: Path, monkeypatch) -> None:
    from modelrunner import architectures
    from modelrunner.formats import native

    module = architectures.build("recurrent", {"hidden_size": 8}, 0)
    config = {"format_version": 1, "architecture": "recurrent", "sample_rate": 48000, "params": {"hidden_size": 8}}
    path = native.save(tmp_path / "small.safetensors", module.state_dict(), config)
    n = safety.state_size(module.state_dict())
    assert load(path).parameter_count == n
    monkeypatch.setenv(safety.MAX_PARAMETERS_ENV, str(n - 1))
    with pytest.raises(
        CheckpointError, match=rf"small\.safetensors: config implies {n} weights, file has {n}; .*too large"
    ):
        load(path)
    monkeypatch.setenv(safety.MAX_PARAMETERS_ENV, "lots")
    with pytest.raises(CheckpointError, match="MODELRUNNER_MAX_PARAMETERS='lots'"):
        load(path)


@pytest.mark.parametrize("name", ["recurrent", "tcn", "wavenet", "sptmod", "stn", "statematch", "armlp"])
def test_sizing_plan_matches_the_real_module(name: str) -> None:
    from modelrunner import architectures

    plan = architectures.build_plan(name, {}, 1).state_dict()
    real = architectures.build(name, {}, 1).state_dict()
    assert {k: tuple(v.shape) for k, v in plan.items()} == {k: tuple(v.shape) for k, v in real.items()}
    huge = architectures.build_plan("recurrent", {"hidden_size": 4096, "num_layers": 16}, 0)
    assert huge.rec.weight_hh_l15.is_meta and huge.rec.weight_hh_l15.shape == (4 * 4096, 4096)
