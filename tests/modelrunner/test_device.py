"""The render device (``RENDER_DEVICE``, ``modelrunner.device``) and the device-generic render path.

This machine has no GPU, so the path a GPU takes is run here on the CPU as far as it goes:
the model loaded with an explicit ``device``, PyTorch's kernels forced, the input moved to the
device, state kept there across chunks, the output brought back to CPU arrays. Its output is
held to the module's own whole-signal forward pass (``render.reference_forward``: one call,
no chunking, no segments), the streaming protocol's reference, within 1e-4.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from modelrunner import device, formats, lookback, pathchoice
from modelrunner.cli import main
from modelrunner.render import (
    DEVICE_CHUNK_BUDGET,
    DEVICE_ROWS,
    _batch_rows,
    _chunk_budget,
    reference_forward,
    render,
    render_batch,
)
from tests.modelrunner._helpers import guitar
from tests.paths import REPO, fixture_path

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
PAPERS = REPO / "demo" / "papers" / "checkpoints"

#: Every format the loaders produce a PyTorch module from: (label, path, config).
MODELS = [
    ("coreaudioml-lstm32", ("models", "coreaudioml", "ht1_lstm32.json"), None),
    ("coreaudioml-lstm20-knob", ("models", "coreaudioml", "ts9_lstm20_gain.json"), None),
    ("coreaudioml-gru8", REPO / "demo" / "checkpoints" / "demo_gru8.json", None),
    ("nam-wavenet", ("models", "nam", "wavenet_tiny_v054.nam"), None),
    ("nam-wavenet-condition-dsp", ("models", "nam", "wavenet_condition_dsp.nam"), None),
    ("nam-lstm", ("models", "nam", "lstm_h3.nam"), None),
    ("lightning-pedalnet", ("models", "lightning", "pedalnet.ckpt"), None),
    ("lightning-lstm-pruned", PAPERS / "lstm_pruned.ckpt", None),
    ("native-stn", PAPERS / "stn.safetensors", None),
    ("native-sptmod", PAPERS / "sptmod.pt", PAPERS / "sptmod.json"),
    ("rtneural-aidax-lstm12", ("models", "aidax", "tw40_california_clean.json"), None),
    ("guitarml-wavenet", ("models", "guitarml_wavenet", "ts9_fullD.json"), None),
    ("smartamppro", ("models", "smartamppro", "TubeClean.json"), None),
]


def _path(where: tuple[str, ...] | Path) -> Path:
    return where if isinstance(where, Path) else fixture_path(*where)


def _excerpts(sr: int) -> list[np.ndarray]:
    """Two guitar excerpts of unequal length (0.4 s and 0.25 s) at the model's rate."""
    x = guitar(0.7, 1.0)[0].numpy()
    if sr != 44100:
        from modelrunner.render import resample

        x = resample(x, 44100, sr)
    a, b = x[: int(0.4 * sr)], x[int(0.4 * sr) : int(0.65 * sr)]
    return [np.ascontiguousarray(a)[:, None], np.ascontiguousarray(0.7 * b)[:, None]]


# --- the setting ---------------------------------------------------------------------------


@NO_CUDA
def test_auto_and_cpu_select_the_cpu_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RENDER_DEVICE", raising=False)
    assert device.resolve() == torch.device("cpu")  # unset: auto
    assert device.resolve("auto") == torch.device("cpu")
    assert device.resolve("cpu") == torch.device("cpu")
    monkeypatch.setenv("RENDER_DEVICE", " CPU ")
    assert device.resolve() == torch.device("cpu")
    assert device.parse("CUDA:01") == "cuda:1" and device.parse("") == "auto"


@NO_CUDA
@pytest.mark.parametrize("value", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_is_refused_where_there_is_none(value: str) -> None:
    with pytest.raises(device.DeviceError) as err:
        device.resolve(value)
    assert str(err.value).startswith(f"RENDER_DEVICE={value} but no CUDA device is available here")
    assert "use cpu or auto" in str(err.value)


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:-1", "cuda0", "mps", "cpu,cuda"])
def test_a_misspelt_device_is_refused_naming_the_setting_and_what_it_accepts(value: str) -> None:
    with pytest.raises(device.DeviceError) as err:
        device.resolve(value)
    assert str(err.value) == f"RENDER_DEVICE={value!r} is not valid; use auto, cpu, cuda or cuda:N (N = 0, 1, ...)"


def test_torch_files_are_loaded_onto_the_device_with_weights_only(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict] = []
    real = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model = formats.load(fixture_path("models", "lightning", "pedalnet.ckpt"), device="cpu")
    assert seen and all(k["weights_only"] is True for k in seen)
    assert seen[-1]["map_location"] == torch.device("cpu") and model.device == torch.device("cpu")


def test_a_model_off_the_cpu_never_takes_the_compiled_kernels() -> None:
    """On the meta device (weights without storage) the choice is made without measuring
    anything: what a model on a GPU gets."""
    for where in (("models", "coreaudioml", "ht1_lstm32.json"), ("models", "nam", "wavenet_tiny_v054.nam")):
        model = formats.load(fixture_path(*where)).to("meta")
        choice = model.module.render_choice
        assert choice.path == pathchoice.PYTORCH and choice.reason == "on meta"
        assert model.module.render_kernel == "PyTorch (on meta)"
        assert _chunk_budget(model) == DEVICE_CHUNK_BUDGET and _batch_rows(model) == DEVICE_ROWS


# --- the device-generic render path ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("label", "where", "config"), MODELS, ids=[m[0] for m in MODELS])
def test_the_device_path_equals_the_reference_forward_pass(
    monkeypatch: pytest.MonkeyPatch, label: str, where: tuple[str, ...] | Path, config: Path | None
) -> None:
    monkeypatch.setenv(pathchoice.ENV, "pytorch")  # as on a GPU: PyTorch's kernels
    path = _path(where)
    reference_model = formats.load(path, config=config)
    model = formats.load(path, config=config, device="cpu")
    assert model.device == torch.device("cpu")
    sr = model.sample_rate
    items = _excerpts(sr)
    want = [reference_forward(reference_model, x) for x in items]
    # Small chunks carry state across many calls; short segments cut the signals into rows
    # with their context or warm-up, as a long render does.
    got, report = render_batch(
        model,
        items,
        sr,
        device="cpu",
        chunk_size=1000,
        segment_seconds=0.08,
        warmup_seconds=0.05,
        with_report=True,
    )
    assert report.device == "cpu" and report.kernel.startswith("PyTorch")
    if not model.stateful:
        assert report.path == "parallel" and report.segments > len(items)
    for g, w in zip(got, want):
        assert g.dtype == np.float32 and g.shape == w.shape
        assert float(np.abs(g - w).max()) <= 1e-4, label
    # One signal streamed whole (the platform's per-excerpt render) on the same path.
    one, one_report = render(model, items[0], sr, device="cpu", chunk_size=777, with_report=True)
    assert one_report.device == "cpu"
    assert float(np.abs(one - want[0]).max()) <= 1e-4, label


@pytest.mark.slow
def test_the_device_path_carries_the_lookback_state_and_removes_the_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    """SPTMod: state estimated from look-back audio, output lagging by ``latency_samples``."""
    monkeypatch.setenv(pathchoice.ENV, "pytorch")
    model = formats.load(PAPERS / "sptmod.pt", config=str(PAPERS / "sptmod.json"), device="cpu")
    x = guitar(0.6, 1.0)[0]
    n = int(0.2 * 44100)
    ctx, ctx_ref, dry = x[:n], torch.tanh(3 * x[:n]), x[n:]
    y, mode, info = lookback.render_excerpt(model, dry.numpy(), ctx.numpy(), ctx_ref.numpy(), knobs={"gain": 0.5})
    assert mode == "lookback" and info["latency_compensated"] == 63
    # Reference: the estimate, then one whole call with the latency's zeros appended.
    k = model.knob_tensor({"gain": 0.5}, 1)
    target = ctx_ref[None] if lookback.requirements(model)["uses_target"] else None
    with torch.no_grad():
        state = model.module.state_after_context(ctx[None], target, k)
        whole, _ = model.module(torch.cat([dry, dry.new_zeros(63)])[None], k, state)
    assert y.shape == dry.shape and float(np.abs(y - whole[0, 63:].numpy()).max()) <= 1e-4


@pytest.mark.slow
def test_the_device_path_equals_the_default_cpu_path() -> None:
    """The CPU's default (the compiled kernel where it is measured faster) and PyTorch's path on
    an explicitly given device render the same samples."""
    path = fixture_path("models", "nam", "wavenet_tiny_v054.nam")
    default = formats.load(path)
    items = _excerpts(default.sample_rate)
    a = render_batch(default, items, default.sample_rate)
    b = render_batch(formats.load(path, device="cpu"), items, default.sample_rate, device="cpu")
    assert max(float(np.abs(x - y).max()) for x, y in zip(a, b)) <= 1e-4


# --- the command line ---------------------------------------------------------------------------


def _wav(tmp_path: Path) -> str:
    path = tmp_path / "in.wav"
    sf.write(path, guitar(0.1, 1.0)[0].numpy(), 44100, subtype="FLOAT")
    return str(path)


@NO_CUDA
def test_cli_render_on_cuda_is_refused_with_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(fixture_path("models", "nam", "wavenet_tiny_v054.nam"))
    out = tmp_path / "out.wav"
    assert main(["render", model, _wav(tmp_path), "-o", str(out), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("modelrunner: error: --device=cuda but no CUDA device is available here")
    assert len(err.splitlines()) == 1 and not out.exists()
    assert main(["render", model, _wav(tmp_path), "-o", str(out), "--device", "tpu"]) == 2
    assert "--device='tpu' is not valid; use auto, cpu, cuda or cuda:N" in capsys.readouterr().err


@NO_CUDA
def test_cli_reads_render_device_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(fixture_path("models", "nam", "wavenet_tiny_v054.nam"))
    monkeypatch.setenv("RENDER_DEVICE", "cuda:1")
    assert main(["inspect", model]) == 2
    assert "RENDER_DEVICE=cuda:1 but no CUDA device" in capsys.readouterr().err
    monkeypatch.setenv("RENDER_DEVICE", "auto")
    assert main(["inspect", model, "--json"]) == 0
    import json

    assert json.loads(capsys.readouterr().out)["device"] == "cpu"
    out = tmp_path / "out.wav"
    assert main(["render", model, _wav(tmp_path), "-o", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert "real time on cpu" in capsys.readouterr().out and out.exists()


@pytest.mark.slow
@NO_CUDA
def test_python_m_modelrunner_render_device_cuda_exits_2_without_a_traceback(tmp_path: Path) -> None:
    model = str(fixture_path("models", "coreaudioml", "ht1_lstm32.json"))
    done = subprocess.run(
        [sys.executable, "-m", "modelrunner", "render", model, _wav(tmp_path), "-o", str(tmp_path / "o.wav")]
        + ["--device", "cuda"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "no CUDA device is available here" in done.stderr and "Traceback" not in done.stderr
