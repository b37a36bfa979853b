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
