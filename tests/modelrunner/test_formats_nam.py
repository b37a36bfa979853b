"""NAM ``.nam`` files: identity models, independent numpy references, chunking, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modelrunner import native
from modelrunner.architectures.nam import NamLayerArray, NamWaveNet
from modelrunner.errors import CheckpointError
from modelrunner.formats import detect_format, load
from modelrunner.model import EffectModel
from tests.modelrunner._helpers import assert_chunked_equals_whole, guitar, run_chunked, run_whole
from tests.paths import fixture_path


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def lstm_reference(nam: dict, x: np.ndarray) -> np.ndarray:
    """Per-sample LSTM as in NeuralAmpModelerCore's lstm.cpp, read straight from the flat weights."""
    cfg, w = nam["config"], np.asarray(nam["weights"], dtype=np.float64)
    H, L = cfg["hidden_size"], cfg["num_layers"]
    i = 0
    cells = []
    for layer in range(L):
        n_in = 1 if layer == 0 else H
        W = w[i : i + 4 * H * (n_in + H)].reshape(4 * H, n_in + H)
        i += W.size
        b = w[i : i + 4 * H]
        i += 4 * H
        h = w[i : i + H].copy()
        i += H
        c = w[i : i + H].copy()
        i += H
        cells.append([W, b, h, c])
    head_w, head_b = w[i : i + H], w[i + H]
    assert i + H + 1 == len(w)
    out = np.empty_like(x, dtype=np.float64)
    for t, sample in enumerate(x):
        inp = np.array([sample])
        for cell in cells:
            W, b, h, c = cell
            g = W @ np.concatenate([inp, h]) + b
            c = _sigmoid(g[H : 2 * H]) * c + _sigmoid(g[:H]) * np.tanh(g[2 * H : 3 * H])
            h = _sigmoid(g[3 * H :]) * np.tanh(c)
            cell[2], cell[3] = h, c
            inp = h
        out[t] = head_w @ inp + head_b
    return out


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, dilation: int = 1) -> np.ndarray:
    """Valid 1-D cross-correlation: x (Cin, T), w (Cout, Cin, K) -> (Cout, T - (K-1)d)."""
    k = w.shape[2]
    span = (k - 1) * dilation
    T = x.shape[1] - span
    y = sum(w[:, :, j] @ x[:, j * dilation : j * dilation + T] for j in range(k))
    return y + (b[:, None] if b is not None else 0.0)


def wavenet_reference(nam: dict, x: np.ndarray) -> np.ndarray:
    """NAM WaveNet with valid convolutions on a zero-padded input (neural-amp-modeler's forward)."""
    cfg, w = nam["config"], np.asarray(nam["weights"], dtype=np.float64)
    pos = 0

    def take(*shape: int) -> np.ndarray:
        nonlocal pos
        n = int(np.prod(shape))
        out = w[pos : pos + n].reshape(shape)
        pos += n
        return out

    acts = {"Tanh": np.tanh, "ReLU": lambda v: np.maximum(v, 0.0)}
    rf = 1 + sum((lc["kernel_size"] - 1) * sum(lc["dilations"]) for lc in cfg["layers"])
    xp = np.concatenate([np.zeros(rf - 1), x])[None, :]
    cond, y, head = xp, xp, None
    for lc in cfg["layers"]:
        C, K = lc["channels"], lc["kernel_size"]
        y = take(C, lc["input_size"], 1)[:, :, 0] @ y
        for d in lc["dilations"]:
            mid = 2 * C if lc["gated"] else C
            z = _conv(y, take(mid, C, K), take(mid), d)
            T = z.shape[1]
            z = z + take(mid, lc["condition_size"], 1)[:, :, 0] @ cond[:, -T:]
            post = acts[lc["activation"]](z)
            y = y[:, -T:] + take(C, C, 1)[:, :, 0] @ post + take(C)[:, None]
            head = post if head is None else head[:, -T:] + post
        if "head" in lc:
            hk, hb, hout = lc["head"]["kernel_size"], lc["head"]["bias"], lc["head"]["out_channels"]
        else:
            hk, hb, hout = 1, lc["head_bias"], lc["head_size"]
        hw = take(hout, C, hk)
        head = _conv(head, hw, take(hout) if hb else None)
    scale = take(1)[0]
    assert pos == len(w)
    return (scale * head)[0, -len(x) :]


@pytest.mark.parametrize("name", ["identity_linear_1.nam", "identity_wavenet_minimal.nam"])
def test_identity_models_return_input(name: str) -> None:
    model = load(fixture_path("models", "nam", name))
    x = guitar(1.0)
    assert x.abs().max() < 1.0  # the minimal WaveNet is relu(1 + x) - 1: identity for x >= -1
    y = run_whole(model, x)
    assert torch.allclose(y, x, atol=1e-6)


def test_lstm_matches_core_per_sample_reference() -> None:
    path = fixture_path("models", "nam", "lstm_h3.nam")
    model = load(path)
    assert model.architecture == "NAM LSTM-3" and model.stateful and model.receptive_field == 1
    x = guitar(0.05)
    ref = lstm_reference(json.loads(path.read_text()), x[0].double().numpy())
    y = run_whole(model, x)[0].numpy()
    assert np.abs(y - ref).max() < 1e-5
    assert np.abs(y).max() > 1e-3


def test_lstm_compiled_kernel_matches_core_reference_in_chunks() -> None:
    # What renders call (the compiled kernel, from NAM's learned initial state) against
    # the per-sample reference, in uneven chunks carrying the state.
    path = fixture_path("models", "nam", "lstm_h3.nam")
    model = load(path)
    assert model.streaming_call() == model.module.fast_forward and model.module._kernel() is not None
    x = guitar(0.05)
    ref = lstm_reference(json.loads(path.read_text()), x[0].double().numpy())
    state, outs = None, []
    with torch.inference_mode():
        for a, b in ((0, 1), (1, 8), (8, 1000), (1000, x.shape[1])):
            y, state = model.module.fast_forward(x[:, a:b], None, state)
            outs.append(y[0].numpy())
    assert np.abs(np.concatenate(outs) - ref).max() < 1e-5


def test_wavenet_matches_reference() -> None:
    path = fixture_path("models", "nam", "wavenet_tiny_v054.nam")
    model = load(path)
    assert model.receptive_field == 1 + 2 * (1 + 2) + 2 * 8
    x = guitar(0.25)
    ref = wavenet_reference(json.loads(path.read_text()), x[0].double().numpy())
    y = run_whole(model, x)[0].numpy()
    assert np.abs(y - ref).max() < 1e-5
    assert np.abs(y).max() > 1e-3


def test_metadata_and_sample_rate() -> None:
    path = fixture_path("models", "nam", "wavenet_tiny_v054.nam")
    assert detect_format(path) == "nam"
    model = load(path)
    assert model.format == "nam" and model.sample_rate == 48000
    assert model.metadata["gear_make"] == "Darkglass Electronics"
    assert model.metadata["training"]["validation_esr"] == pytest.approx(0.13345033695550146)
    assert model.knob_names == []
    json.dumps(model.summary())


def test_sample_rate_defaults_to_48k(tmp_path) -> None:
    data = json.loads(fixture_path("models", "nam", "identity_linear_1.nam").read_text())
    del data["sample_rate"]
    path = tmp_path / "old.nam"
    path.write_text(json.dumps(data))
    model = load(path)
    assert model.sample_rate == 48000
    assert any("48000" in w for w in model.provenance["warnings"])


@pytest.mark.parametrize("name", ["lstm_h3.nam", "wavenet_tiny_v054.nam", "identity_linear_1.nam"])
def test_chunked_equals_whole(name: str) -> None:
    model = load(fixture_path("models", "nam", name))
    assert_chunked_equals_whole(model, guitar(0.2))


def test_linear_fir_with_bias(tmp_path) -> None:
    taps = [0.5, -0.25, 2.0]
    data = {
        "version": "0.5.4",
        "architecture": "Linear",
        "config": {"receptive_field": 3, "bias": True},
        "weights": taps + [0.1],
        "sample_rate": 44100,
    }
    path = tmp_path / "fir.nam"
    path.write_text(json.dumps(data))
    model = load(path)
    assert model.receptive_field == 3 and model.sample_rate == 44100
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0, 3.0]])
    y = run_whole(model, x)
    # torch-style correlation: the last tap multiplies the newest sample.
    expected = np.convolve(x[0].numpy(), taps[::-1])[:5] + 0.1
    assert np.allclose(y[0].numpy(), expected, atol=1e-6)
    assert np.allclose(run_chunked(model, x, [1]).numpy(), y.numpy(), atol=1e-6)


def _mutated(tmp_path, name: str, mutate) -> object:
    data = json.loads(fixture_path("models", "nam", name).read_text())
    mutate(data)
    path = tmp_path / "bad.nam"
    path.write_text(json.dumps(data))
    return path


def test_wrong_weight_count_refused(tmp_path) -> None:
    path = _mutated(tmp_path, "wavenet_tiny_v054.nam", lambda d: d["weights"].pop())
    with pytest.raises(CheckpointError, match="implies 131 weights, file has 130"):
        load(path)
    path = _mutated(tmp_path, "lstm_h3.nam", lambda d: d["weights"].append(0.0))
    with pytest.raises(CheckpointError, match="implies 70 weights, file has 71"):
        load(path)


def test_unknown_architecture_and_options_refused(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="'ConvNet' is not supported"):
        load(_mutated(tmp_path, "lstm_h3.nam", lambda d: d.update(architecture="ConvNet")))

    def film(d):
        d["config"]["layers"][0]["film_params"] = {"conv_pre_film": {"active": True}}

    with pytest.raises(CheckpointError, match="FiLM"):
        load(_mutated(tmp_path, "wavenet_tiny_v054.nam", film))
    path = _mutated(tmp_path, "identity_linear_1.nam", lambda d: d.update(weights=[12345.0]))
    path.write_text(path.read_text().replace("12345.0", "1e999"))  # valid JSON, parses to inf
    with pytest.raises(CheckpointError, match="weights\\[0\\] is NaN or infinite"):
        load(path)


# --- the renderer's fast WaveNet path (NamWaveNet.fast_forward) against the plain module


def _random_wavenet(seed: int, arrays: list[tuple]) -> NamWaveNet:
    """A NamWaveNet with random weights.

    ``arrays``: (in, channels, kernel, dilations, act, gated, head_out, head_kernel, head_bias).
    """
    torch.manual_seed(seed)
    net = NamWaveNet(
        [NamLayerArray(i, 1, c, k, d, act, g, ho, hk, hb) for i, c, k, d, act, g, ho, hk, hb in arrays], 0.3
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.4)
    return net.eval()


FAST_CASES = {
    # NAM's "standard" shape, shrunk: tanh, not gated, two arrays
    "tanh": [(1, 6, 3, [1, 2, 4, 8], "Tanh", False, 4, 1, False), (6, 4, 3, [1, 2, 4], "Tanh", False, 1, 1, True)],
    "gated": [(1, 5, 3, [1, 3, 9], "Tanh", True, 1, 1, True)],
    "relu, head kernel 3": [(1, 4, 2, [1, 2, 4, 8, 16], "ReLU", False, 1, 3, True)],
    "mixed activations": [(1, 4, 3, [1, 2], "Tanh", False, 3, 1, False), (4, 3, 3, [4, 8], "SiLU", False, 1, 2, True)],
}


@pytest.mark.parametrize("kernel", ["compiled", "torch"])
@pytest.mark.parametrize("case", sorted(FAST_CASES))
def test_fast_forward_matches_forward_in_any_chunking(case: str, kernel: str, monkeypatch) -> None:
    # Both fast paths: the compiled kernel (kernels/wavenet.c, tanh and ReLU layers, gated
    # or not) and PyTorch's (what runs without a compiler, or for other activations).
    if kernel == "torch":
        monkeypatch.setattr(native, "library", lambda: None)
    net = _random_wavenet(7, FAST_CASES[case])
    model = EffectModel(net, 48000, [], [], False, net.receptive_field, "nam", "NAM WaveNet", 0)
    assert model.streaming_call() == net.fast_forward  # what render and render_batch call
    if kernel == "compiled" and case != "mixed activations":
        assert net.render_kernel == "compiled WaveNet kernel"
    elif kernel == "compiled":
        assert net.render_kernel == "PyTorch (an activation the kernel lacks)"
    else:
        assert net.render_kernel.startswith("PyTorch") and net._compiled() is None
    x = torch.cat([guitar(0.2), guitar(0.2, offset=2.0)])  # two batch rows
    whole = run_whole(model, x)
    assert float(whole.abs().max()) > 1e-2
    # One call per chunk: chunks of 1 and 7 samples run on the first 1,000 and 2,000 samples
    # (over 20 receptive fields, so the state is carried across many), the others on all of it.
    assert float(whole[:, :1000].abs().max()) > 1e-2
    for sizes, frames in (([1], 1000), ([7], 2000), ([4096], None), ([3, 1, 50, 333], None)):
        part = x[:, :frames]
        fast = run_chunked(model, part, sizes, fast=True)
        diff = float((fast - whole[:, : part.shape[1]]).abs().max())
        assert diff <= 1e-5, f"{case}, chunks {sizes}: max abs diff {diff}"
    # The state it carries is the plain module's state: the two can take over from each other.
    with torch.no_grad():
        _, plain_state = net(x[:, :1000])
        _, fast_state = net.fast_forward(x[:, :1000])
        assert len(plain_state) == len(fast_state)
        for a, b in zip(plain_state, fast_state):
            assert a.shape == b.shape and float((a - b).abs().max()) <= 1e-5
        y_plain, _ = net(x[:, 1000:3000], None, fast_state)
    assert float((y_plain - whole[:, 1000:3000]).abs().max()) <= 1e-5


def test_fast_forward_matches_the_numpy_reference() -> None:
    path = fixture_path("models", "nam", "wavenet_tiny_v054.nam")
    model = load(path)
    assert model.module.render_kernel == "compiled WaveNet kernel"
    x = guitar(0.25)
    ref = wavenet_reference(json.loads(path.read_text()), x[0].double().numpy())
    y = run_chunked(model, x, [4096], fast=True)[0].numpy()
    assert np.abs(y - ref).max() < 1e-5
    identity = load(fixture_path("models", "nam", "identity_wavenet_minimal.nam"))
    assert torch.allclose(run_chunked(identity, x, [1000], fast=True), x, atol=1e-6)


@pytest.mark.parametrize("kernel", ["compiled", "torch"])
def test_fast_forward_follows_changed_weights(kernel: str, monkeypatch) -> None:
    # The packed (compiled) and folded (PyTorch) weights are kept between calls; changing a
    # parameter in place must remake them, or renders would use the old weights.
    if kernel == "torch":
        monkeypatch.setattr(native, "library", lambda: None)
    net = _random_wavenet(11, FAST_CASES["tanh"])
    x = guitar(0.1)
    with torch.inference_mode():
        before, _ = net.fast_forward(x)
    with torch.no_grad():
        net.arrays[0].layers[1].conv.weight.mul_(0.5)
    with torch.inference_mode():
        after, _ = net.fast_forward(x)
        want, _ = net(x)
    assert float((after - before).abs().max()) > 1e-3
    assert float((after - want).abs().max()) <= 1e-5
