"""The caps of ``modelrunner.limits``: configurable, applied by every loader from declared
sizes before anything is built (naming the field), by the torch-file and safetensors
readers, by the audio header check, and by a process's own address-space cap."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from modelrunner import audio, declared, limits
from modelrunner.errors import AudioError, CheckpointError
from modelrunner.formats import _common, load
from tests.hostile import corpus
from tests.paths import REPO


def test_a_cap_comes_from_an_override_else_its_variable_else_its_default(monkeypatch) -> None:
    monkeypatch.delenv("MODELRUNNER_MAX_RECEPTIVE_FIELD", raising=False)
    assert limits.get("receptive_field") == 1 << 18
    monkeypatch.setenv("MODELRUNNER_MAX_RECEPTIVE_FIELD", "4096")
    assert limits.get("receptive_field") == 4096
    with limits.override(receptive_field=7):
        assert limits.get("receptive_field") == 7
    assert limits.get("receptive_field") == 4096
    monkeypatch.setenv("MODELRUNNER_MAX_RECEPTIVE_FIELD", "lots")
    with pytest.raises(CheckpointError, match="MODELRUNNER_MAX_RECEPTIVE_FIELD='lots' is not a whole number"):
        limits.get("receptive_field")
    monkeypatch.setenv("MODELRUNNER_MAX_AUDIO_SECONDS", "0")
    with pytest.raises(AudioError, match="MODELRUNNER_MAX_AUDIO_SECONDS='0' must be at least 1"):
        limits.get("audio_seconds")
    with pytest.raises(KeyError):
        with limits.override(flux=1):
            pass


def _nam_lstm() -> dict:
    """A NAM LSTM of 2 units: 4*2*(1+2) + 8 + 2 + 2 weights per layer, head 2 + 1."""
    return {
        "version": "0.5.4",
        "architecture": "LSTM",
        "config": {"input_size": 1, "hidden_size": 2, "num_layers": 1},
        "weights": [0.1] * 39,
        "sample_rate": 48000,
    }


def _write_json(name: str, doc: Callable[[], dict]) -> Callable[[Path], Path]:
    return corpus._json(name, doc)


def _native_tcn(folder: Path) -> Path:
    from modelrunner import architectures
    from modelrunner.formats import native

    config = {"format_version": 1, "architecture": "tcn", "sample_rate": 48000, "params": {}}
    return native.save(folder / "tcn.safetensors", architectures.build("tcn", {}, 0).state_dict(), config)


# (file maker, caps lowered, message naming the field). Each file loads under the defaults.
CASES = [
    (
        _write_json("lin.nam", corpus.nam_linear),
        {"receptive_field": 3},
        r"lin\.nam: config\.receptive_field is 4, over the cap of 3 samples \(set MODELRUNNER_MAX_RECEPTIVE_FIELD",
    ),
    (
        _write_json("lstm.nam", _nam_lstm),
        {"hidden_size": 1},
        r"lstm\.nam: config\.hidden_size is 2, over the cap of 1 units \(set MODELRUNNER_MAX_HIDDEN_SIZE",
    ),
    (
        _write_json(
            "wn.nam", lambda: {**corpus.nam_with_layer_option(kernel_size=3, dilations=[2]), "weights": [0.5] * 11}
        ),
        {"receptive_field": 4},
        r"wn\.nam: config\.layers\[0\]\.dilations with kernel_size 3 bring the receptive field to 5 samples, "
        r"over the cap of 4",
    ),
    (
        _write_json("cam.json", corpus.coreaudioml),
        {"hidden_size": 1},
        r"cam\.json: model_data\.hidden_size is 2, over the cap of 1 units",
    ),
    (
        _write_json("aida.json", corpus.rtneural_tiny),
        {"hidden_size": 1},
        r"aida\.json: layers\[0\]\.shape\[-1\] is 2, over the cap of 1 units",
    ),
    (
        _write_json("aida.json", corpus.rtneural_tiny),
        {"parameters": 10},
        r"aida\.json: layers\[0\]\.weights declares 32 weights \(lstm 1 -> 2\), over the cap of 10 weights",
    ),
    (
        _write_json("wavenet.json", corpus.wavenet_tiny),
        {"channels": 1},
        r"wavenet\.json: residual_channels is 2, over the cap of 1 channels \(set MODELRUNNER_MAX_CHANNELS",
    ),
    (
        _write_json("wavenet.json", corpus.wavenet_tiny),
        {"receptive_field": 1},
        r"wavenet\.json: dilations with filter_width 2 give a receptive field of 2 samples, over the cap of 1",
    ),
    (
        _write_json("amp.json", corpus.smartamppro_tiny),
        {"receptive_field": 3},
        r"amp\.json: input_size is 4, over the cap of 3 samples",
    ),
    (
        _write_json("amp.json", corpus.smartamppro_tiny),
        {"model_bytes": 100_000},
        r"amp\.json: input_size with conv1d_stride 2, conv1d kernel 2 and 1 conv1d channels needs \d+ bytes of "
        r"working memory per 4096-sample render block",
    ),
    (
        _write_json("amp.json", corpus.smartamppro_tiny),
        {"model_bytes": 100},
        r"amp\.json: the JSON text holds up to \d+ values, about \d+ bytes once parsed, over the cap of 100 bytes",
    ),
    (
        corpus._safetensors("model.safetensors", corpus.recurrent_state_dict),
        {"parameters": 10},
        r"model\.safetensors: tensor 'rec\.weight_hh_l0' declares shape \[8, 2\]: 16 elements, over the cap of 10",
    ),
    (
        corpus._native_pt("model.pt", corpus.recurrent_state_dict),
        {"model_bytes": 100},
        r"model\.pt: tensor state_dict\['rec\.bias_ih_l0'\] declares shape \[8\]: 8 elements, bringing the "
        r"model to 128 bytes, over the cap of 100 bytes",
    ),
    (
        _native_tcn,
        {"receptive_field": 1000},
        r"tcn\.safetensors: params give a receptive field of 13333, over the cap of 1000 samples",
    ),
]


@pytest.mark.parametrize(
    ("make", "caps", "message"), CASES, ids=[f"{i}-{next(iter(c[1]))}" for i, c in enumerate(CASES)]
)
def test_each_loader_refuses_a_declared_size_over_a_cap_naming_the_field(tmp_path, make, caps, message) -> None:
    path = make(tmp_path)
    load(path)
    with limits.override(**caps):
        with pytest.raises(CheckpointError, match="^" + message):
            load(path)


def test_a_ragged_or_misshapen_list_is_named_before_a_tensor_is_made(monkeypatch) -> None:
    def no_tensor(*args, **kwargs):
        raise AssertionError("a tensor was made before the list's shape was checked")

    monkeypatch.setattr(_common, "as_tensor", no_tensor)
    with pytest.raises(CheckpointError, match=r"f: f has shape \[2, 3\], expected \[2, 4\]"):
        _common.shaped([[0.0] * 3, [0.0] * 3], (2, 4), "f", "f")
    with pytest.raises(
        CheckpointError,
        match=r"weight 'k' is not a \(rectangular\) list of numbers: k\[1\]\[0\] has 1 values where the first has 2",
    ):
        _common.shaped([[[0.0, 0.0]], [[0.0]]], (2, 1, 2), "k", "f")
    with pytest.raises(CheckpointError, match=r"k\[1\] has no values where the first has 2"):
        _common.shaped([[0.0, 0.0], 5.0], (2, 2), "k", "f")


# ----------------------------------------------------------------------------- torch files


def _saved(obj: object, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_plain_views_and_shared_storages_pass_the_declared_size_check(legacy: bool) -> None:
    base = torch.arange(12.0)
    obj = {
        "state_dict": {
            "a": base.view(3, 4),
            "b": base[2:5],
            "c": base.view(4, 3).t(),
            "d": torch.ones(2, dtype=torch.int64),
        },
        "hyper_parameters": {"lr": 0.1},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}}}],
    }
    declared.check_torch_file("ok.pt", _saved(obj, legacy))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_an_expanded_view_is_refused_before_torch_loads_it(legacy: bool) -> None:
    data = _saved({"state_dict": {"w": torch.zeros(1).expand(10_000, 10_000)}}, legacy)
    with pytest.raises(
        CheckpointError,
        match=r"x\.pt: tensor state_dict\['w'\] declares shape \[10000, 10000\]: 100000000 elements over a storage "
        r"of 1 \(an expanded view, stride \[0, 0\]\), over the cap of 50000000 weights",
    ):
        declared.check_torch_file("x.pt", data)
    with limits.override(parameters=10**9, model_bytes=10**9):
        declared.check_torch_file("x.pt", data)  # within caps raised that far, the view itself is sound


def test_a_view_reaching_past_its_storage_is_refused() -> None:
    data = _saved({"w": torch.arange(8.0)})
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        pkl = next(n for n in names if n.endswith("/data.pkl"))
        text = zf.read(pkl)
        # The view's size (8,) becomes (9,): BININT1 8 -> BININT1 9 right before the size tuple's end.
        forged = text.replace(b"K\x08\x85", b"K\x09\x85", 1)
        assert forged != text
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as dst:
            for n in names:
                dst.writestr(n, forged if n == pkl else zf.read(n))
    with pytest.raises(
        CheckpointError,
        match=r"v\.pt: tensor w \(shape \[9\], stride \[1\], offset 0\) reaches element 9 of a storage of 8",
    ):
        declared.check_torch_file("v.pt", out.getvalue())


def test_the_reader_runs_nothing_from_the_file_and_a_build_cannot_rewrite_a_view(tmp_path: Path) -> None:
    marker = corpus.marker_path(tmp_path)
    data = pickle.dumps({"state_dict": corpus.ShellPayload(marker)}, protocol=2)
    declared.check_torch_file("p.pth", data)  # not a torch file: left to torch.load, which refuses it
    zipped = _saved({"w": torch.zeros(2)})
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        names = zf.namelist()
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as dst:
            for n in names:
                body = zf.read(n)
                if n.endswith("/data.pkl"):
                    payload = pickle.dumps(corpus.ShellPayload(marker), protocol=2)[2:-1]  # without PROTO and STOP
                    body = body[:-1] + b"0" + payload + b"0."  # POP the result, push the payload, POP it, STOP
                dst.writestr(n, body)
    declared.check_torch_file("z.pt", out.getvalue())
    assert not marker.exists()


def test_the_legacy_reader_finds_where_the_data_starts(tmp_path: Path) -> None:
    path = corpus._legacy_forged_storage(tmp_path)
    with pytest.raises(CheckpointError, match=r"the file holds 24 bytes after its pickle"):
        declared.check_torch_file("model.pt", path.read_bytes())


# ----------------------------------------------------------------------------- audio


def test_an_audio_length_over_the_cap_is_refused_from_the_header(tmp_path: Path, monkeypatch) -> None:
    path = corpus.write(tmp_path, "two.wav", corpus.tone(seconds=2.0))
    assert audio.read_audio(path)[0].shape == (96_000, 1)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded before the header was checked")

    monkeypatch.setattr(sf, "read", no_decoding)
    monkeypatch.setattr(sf, "blocks", no_decoding)
    with limits.override(audio_seconds=1):
        for check in (audio.read_audio, audio.check_audio):
            with pytest.raises(
                AudioError,
                match=r"two\.wav: the header declares 96000 frames \(2 s at 48000 Hz\), over the cap of 1 seconds",
            ):
                check(path)


def test_checking_in_blocks_finds_what_reading_whole_finds(tmp_path: Path, monkeypatch) -> None:
    good = corpus.write(tmp_path, "good.wav", corpus.tone(seconds=3.0, channels=2))
    data, rate = audio.read_audio(good)
    info = audio.check_audio(good)
    assert (info.frames, info.channels, info.sample_rate) == (data.shape[0], data.shape[1], rate)
    late = corpus.tone(seconds=3.0)
    late[-5, 0] = np.nan  # in the last block, not the first
    bad = corpus.write(tmp_path, "late.wav", late)
    with pytest.raises(AudioError, match=r"late\.wav: contains NaN or infinite samples"):
        audio.check_audio(bad)
    short = corpus.write(tmp_path, "one.wav", corpus.tone()[:1])
    with pytest.raises(AudioError, match=r"one\.wav: only 1 sample frame; at least 2 needed"):
        audio.check_audio(short)
    # Never the whole file at once: every read is one block.
    sizes: list[int] = []
    real_blocks = sf.blocks

    def counting(*args, **kwargs):
        for block in real_blocks(*args, **kwargs):
            sizes.append(block.shape[0])
            yield block

    monkeypatch.setattr(sf, "read", lambda *a, **k: pytest.fail("read whole"))
    monkeypatch.setattr(sf, "blocks", counting)
    monkeypatch.setattr(audio, "CHECK_BLOCK", 10_000)
    assert audio.check_audio(good).frames == 144_000
    assert max(sizes) == 10_000 and sum(sizes) == 144_000


# ----------------------------------------------------------------------------- the process cap


def test_out_of_memory_is_told_apart_from_other_errors() -> None:
    assert limits.is_out_of_memory(MemoryError())
    assert limits.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert limits.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8"))
    assert not limits.is_out_of_memory(RuntimeError("shape mismatch"))
    assert not limits.is_out_of_memory(ValueError("not enough memory"))


_CAPPED_CHILD = r"""
import json, resource, sys
import numpy as np, torch
from modelrunner import limits
before = resource.getrlimit(resource.RLIMIT_AS)[0]
limit = limits.cap_address_space(int(sys.argv[1]))
out = {"before": before, "limit": limit, "after": resource.getrlimit(resource.RLIMIT_AS)[0]}
for name, make in (("numpy", lambda: np.ones(1 << 28)), ("torch", lambda: torch.ones(1 << 28))):
    try:
        make()
        out[name] = "allocated"
    except BaseException as exc:
        out[name] = [type(exc).__name__, limits.is_out_of_memory(exc)]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_an_address_space_cap_turns_a_large_allocation_into_a_memory_error() -> None:
    def child(extra: int) -> dict:
        done = subprocess.run(
            [sys.executable, "-c", _CAPPED_CHILD, str(extra)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    capped = child(256 << 20)  # 2 GB asked for (numpy float64, torch float32 x 2^28 = 1 GB) over 256 MB
    assert capped["after"] == capped["limit"] != capped["before"]
    assert capped["numpy"][0].endswith("MemoryError") and capped["numpy"][1] is True
    assert capped["torch"][1] is True, capped  # PyTorch 2.13 on CPU: RuntimeError from DefaultCPUAllocator
    uncapped = child(0)
    assert uncapped["limit"] is None and uncapped["after"] == uncapped["before"]
    assert uncapped["numpy"] == uncapped["torch"] == "allocated"
