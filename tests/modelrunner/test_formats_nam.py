"""NAM ``.nam`` files: identity models, independent numpy references, chunking, refusals."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from modelrunner import native
from modelrunner.architectures.nam import NamLayerArray, NamWaveNet
from modelrunner.errors import CheckpointError
from modelrunner.formats import detect_format, load
from modelrunner.model import EffectModel
from modelrunner.render import reference_forward, render, render_batch
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
        d["config"]["layers"][0]["conv_pre_film"] = {"active": True, "shift": True}

    with pytest.raises(CheckpointError, match="FiLM block conv_pre_film"):
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


@pytest.mark.parametrize("kernel", ["compiled", "torch"])
def test_renders_follow_changed_weights(kernel: str, monkeypatch) -> None:
    # A render reads the weights' version once (native.fixed_weights), not per chunk: the
    # next render must still see a weight changed in place or loaded after the first.
    if kernel == "torch":
        monkeypatch.setattr(native, "library", lambda: None)
    net = _random_wavenet(12, FAST_CASES["tanh"])
    model = EffectModel(net, 48000, [], [], False, net.receptive_field, "nam", "NAM WaveNet", 0)
    x = guitar(0.3)[0].numpy()
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    first = render_batch(model, [x], 48000, chunk_size=1000)[0][:, 0]  # 14 chunks
    with torch.no_grad():
        net.arrays[1].layers[0].layer1x1.weight.mul_(-0.5)
    second = render_batch(model, [x], 48000, chunk_size=1000)[0][:, 0]
    want = reference_forward(model, x)[:, 0]
    assert np.abs(second - first).max() > 1e-3
    assert np.abs(second - want).max() <= 1e-5
    assert np.abs(render(model, x, 48000, chunk_size=777)[:, 0] - want).max() <= 1e-5
    net.load_state_dict(saved)
    again = render_batch(model, [x], 48000, chunk_size=1000)[0][:, 0]
    assert np.abs(again - first).max() <= 1e-6


# --- .nam 0.6-0.7: SlimmableContainer, slimmable WaveNet layers, condition_dsp, A2 options


def _layer_modes(lc: dict, n: int) -> tuple[list[str], list[bool]]:
    """Per-layer activations and gates as NeuralAmpModelerCore's parse_config_json reads them."""
    acts = lc["activation"] if isinstance(lc["activation"], list) else [lc["activation"]] * n
    if "gating_mode" in lc:
        modes = lc["gating_mode"] if isinstance(lc["gating_mode"], list) else [lc["gating_mode"]] * n
        gates = [m == "gated" for m in modes]
    else:
        gates = [bool(lc.get("gated", False))] * n
    return acts, gates


def wavenet_channels(nam: dict, x: np.ndarray, cond: np.ndarray) -> np.ndarray:
    """A NAM WaveNet on ``x`` (1, T) with ``cond`` (condition_size, T), valid convolutions:
    ``(head_size, T - receptive_field + 1)``, head_scale applied (WaveNet::process)."""
    cfg, w = nam["config"], np.asarray(nam["weights"], dtype=np.float64)
    pos = 0

    def take(*shape: int) -> np.ndarray:
        nonlocal pos
        n = int(np.prod(shape))
        out = w[pos : pos + n].reshape(shape)
        pos += n
        return out

    fns = {"Tanh": np.tanh, "ReLU": lambda v: np.maximum(v, 0.0)}
    y, head = x, None
    for lc in cfg["layers"]:
        C, K = lc["channels"], lc["kernel_size"]
        acts, gates = _layer_modes(lc, len(lc["dilations"]))
        y = take(C, lc["input_size"], 1)[:, :, 0] @ y
        for d, act, gated in zip(lc["dilations"], acts, gates):
            mid = 2 * C if gated else C
            z = _conv(y, take(mid, C, K), take(mid), d)
            T = z.shape[1]
            z = z + take(mid, lc["condition_size"], 1)[:, :, 0] @ cond[:, -T:]
            post = fns[act](z[:C]) * (_sigmoid(z[C:]) if gated else 1.0)
            y = y[:, -T:] + take(C, C, 1)[:, :, 0] @ post + take(C)[:, None]
            head = post if head is None else head[:, -T:] + post
        hout, hb = (
            (lc["head_size"], lc["head_bias"])
            if "head_size" in lc
            else (lc["head"]["out_channels"], lc["head"]["bias"])
        )
        head = _conv(head, take(hout, C, 1), take(hout) if hb else None)
    scale = take(1)[0]
    assert pos == len(w)
    return scale * head


def _rf(nam: dict) -> int:
    return 1 + sum((lc["kernel_size"] - 1) * sum(lc["dilations"]) for lc in nam["config"]["layers"])


def wavenet_with_condition_reference(nam: dict, x: np.ndarray) -> np.ndarray:
    """WaveNet whose condition is its ``condition_dsp``'s output; silence before the start."""
    inner = nam["config"].get("condition_dsp")
    lead = _rf(nam) - 1 + (_rf(inner) - 1 if inner else 0)
    xp = np.concatenate([np.zeros(lead), x])[None, :]
    if inner is None:
        return wavenet_channels(nam, xp, xp)[0]
    cond = wavenet_channels(inner, xp, xp)
    return wavenet_channels(nam, xp[:, -cond.shape[1] :], cond)[0]


def _long_guitar() -> torch.Tensor:
    """10 s: the 5 s guitar fixture twice."""
    g = guitar(5.0, offset=0.0)
    return torch.cat([g, g], dim=1)


def _assert_matches(model: EffectModel, ref: np.ndarray, x: torch.Tensor) -> None:
    for y in (run_whole(model, x), run_chunked(model, x, [4096], fast=True)):
        y = y[0].double().numpy()
        err = np.abs(y - ref).max()
        esr = float(np.sum((y - ref) ** 2) / np.sum(ref**2))
        assert err <= 1e-4 and esr <= 1e-6, (err, esr)
    assert np.abs(ref).max() > 1e-3


def _nam(name: str) -> dict:
    return json.loads(fixture_path("models", "nam", name).read_text())


@pytest.mark.parametrize("kernel", ["compiled", "torch"])
def test_condition_dsp_matches_reference_over_10_s(kernel: str, monkeypatch) -> None:
    if kernel == "torch":
        monkeypatch.setattr(native, "library", lambda: None)
    model = load(fixture_path("models", "nam", "wavenet_condition_dsp.nam"))
    nam = _nam("wavenet_condition_dsp.nam")
    assert model.architecture == "NAM WaveNet with condition_dsp"
    assert model.receptive_field == _rf(nam) + _rf(nam["config"]["condition_dsp"]) - 1
    if kernel == "compiled":
        assert model.module.render_kernel == "compiled WaveNet kernel (condition_dsp in PyTorch)"
    else:
        assert model.module.render_kernel.startswith("PyTorch") and model.module._compiled() is None
    x = _long_guitar()
    ref = wavenet_with_condition_reference(nam, x[0].double().numpy())
    _assert_matches(model, ref, x)
    assert_chunked_equals_whole(model, guitar(0.2))
    # The renderer's path in small chunks, carrying the state (condition_dsp contexts first).
    part = guitar(0.2)
    whole = run_whole(model, part)
    for sizes in ([1], [7], [3, 1, 50, 333]):
        fast = run_chunked(model, part[:, :1500], sizes, fast=True)
        assert float((fast - whole[:, :1500]).abs().max()) <= 1e-5


def test_slimmable_wavenet_full_size_by_default_over_10_s() -> None:
    model = load(fixture_path("models", "nam", "slimmable_wavenet.nam"))
    assert model.architecture == "NAM WaveNet"
    assert "full size" in model.metadata["nam_slimmable"]["note"]
    x = _long_guitar()
    _assert_matches(model, wavenet_with_condition_reference(_nam("slimmable_wavenet.nam"), x[0].double().numpy()), x)
    # Its output peaks near 13: float32 rounding alone is ~1e-5 there, so chunks are compared in float64.
    model.module.double()
    assert_chunked_equals_whole(model, guitar(0.2).double())


def _sliced(nam: dict, channels: int) -> dict:
    """One-array slimmable WaveNet cut to ``channels`` (leading rows/columns of every tensor,
    walking the file's weight order as NeuralAmpModelerCore's extract_slimmed_weights)."""
    (lc,) = nam["config"]["layers"]
    C, K, n = lc["channels"], lc["kernel_size"], len(lc["dilations"])
    w = np.asarray(nam["weights"])
    pos, out = 0, []

    def cut(shape: tuple, keep: tuple) -> None:
        nonlocal pos
        size = int(np.prod(shape))
        t = w[pos : pos + size].reshape(shape)
        pos += size
        out.extend(t[tuple(slice(0, k) for k in keep)].ravel().tolist())

    cut((C, 1), (channels, 1))
    for _ in range(n):
        cut((C, C, K), (channels, channels, K))
        cut((C,), (channels,))
        cut((C, 1), (channels, 1))
        cut((C, C), (channels, channels))
        cut((C,), (channels,))
    cut((lc["head_size"], C), (lc["head_size"], channels))
    if lc["head_bias"]:
        cut((lc["head_size"],), (lc["head_size"],))
    cut((1,), (1,))
    assert pos == len(w)
    slim = json.loads(json.dumps(nam))
    slim["config"]["layers"][0].update(channels=channels, slimmable=None)
    slim["weights"] = out
    return slim


@pytest.mark.parametrize(("size", "channels"), [(0.0, 1), (0.4, 2), (0.66, 2), (0.67, 3), (1.0, 3)])
def test_slimmable_wavenet_at_a_chosen_size(size: float, channels: int) -> None:
    # allowed_channels [1, 2, 3]: index min(floor(size * 3), 2) (slimmable.cpp ratio_to_channels).
    model = load(fixture_path("models", "nam", "slimmable_wavenet.nam"), config={"slimmable_size": size})
    arr = model.module.layer_arrays()[0]
    assert arr.rechannel.out_channels == channels
    assert model.metadata["nam_slimmable"]["slimmable_size"] == size
    x = guitar(1.0)
    ref = wavenet_with_condition_reference(_sliced(_nam("slimmable_wavenet.nam"), channels), x[0].double().numpy())
    _assert_matches(model, ref, x)


@pytest.mark.parametrize(
    ("size", "index"), [(None, 2), (0.0, 0), (0.329, 0), (0.33, 1), (0.65, 1), (0.66, 2), (1.0, 2)]
)
def test_slimmable_container_runs_the_chosen_submodel(size: float | None, index: int) -> None:
    config = None if size is None else {"slimmable_size": size}
    model = load(fixture_path("models", "nam", "slimmable_container.nam"), config=config)
    assert f"submodel {index + 1} of 3" in model.architecture
    sub = _nam("slimmable_container.nam")["config"]["submodels"][index]["model"]
    assert model.metadata["nam_config"] == sub["config"]
    if sub["architecture"] == "LSTM":
        x = guitar(0.05)
        ref = lstm_reference(sub, x[0].double().numpy())
        assert np.abs(run_whole(model, x)[0].numpy() - ref).max() < 1e-5
        return
    x = _long_guitar() if size is None else guitar(1.0)
    _assert_matches(model, wavenet_with_condition_reference(sub, x[0].double().numpy()), x)
    if size is None:
        assert_chunked_equals_whole(model, guitar(0.2))


def test_neutral_a2_options_are_read(tmp_path) -> None:
    # Per-layer gating_mode "none", an active ungrouped layer1x1, inactive FiLM and head1x1,
    # bottleneck = channels, per-layer activations: the same network as the plain file.
    def neutral(d):
        for lc in d["config"]["layers"]:
            n = len(lc["dilations"])
            lc.pop("gated")
            lc["gating_mode"] = ["none"] * n
            lc["activation"] = ["Tanh"] * n
            lc["layer1x1"] = {"active": True, "groups": 1}
            lc["head1x1"] = {"active": False, "out_channels": lc["channels"], "groups": 1}
            lc["conv_pre_film"] = False
            lc["activation_post_film"] = {"active": False}
            lc["bottleneck"] = lc["channels"]
            lc["groups_input"] = 1

    model = load(_mutated(tmp_path, "wavenet_tiny_v054.nam", neutral))
    x = guitar(0.5)
    _assert_matches(model, wavenet_with_condition_reference(_nam("wavenet_tiny_v054.nam"), x[0].double().numpy()), x)


def test_gated_per_layer_matches_reference(tmp_path) -> None:
    def mixed(d):
        lc = d["config"]["layers"][0]
        del lc["gated"]
        lc["gating_mode"] = ["gated", "none"]
        C = lc["channels"]
        # The gated first layer has 2C conv rows and 2C mixer rows: C * C * K + C + C more weights.
        d["weights"][C:C] = [0.1] * (C * C * lc["kernel_size"] + C + C)

    path = _mutated(tmp_path, "wavenet_tiny_v054.nam", mixed)
    model = load(path)
    x = guitar(0.5)
    _assert_matches(model, wavenet_with_condition_reference(json.loads(path.read_text()), x[0].double().numpy()), x)


A2_REFUSALS = {
    "layer1x1": ({"layer1x1": {"active": False, "groups": 1}}, "layer1x1"),
    "layer1x1 groups": ({"layer1x1": {"active": True, "groups": 3}}, "layer1x1"),
    "head1x1": ({"head1x1": {"active": True, "out_channels": 2, "groups": 1}}, "head1x1"),
    "conv_pre_film": ({"conv_pre_film": {"active": True, "shift": True}}, "FiLM block conv_pre_film"),
    "activation_post_film": ({"activation_post_film": True}, "FiLM block activation_post_film"),
    "head1x1_post_film": ({"head1x1_post_film": {"shift": False}}, "FiLM block head1x1_post_film"),
    "blended": ({"gating_mode": ["none", "blended"]}, "gating_mode 'blended'"),
    "secondary_activation": (
        {"gating_mode": "gated", "secondary_activation": "ReLU"},
        "secondary_activation",
    ),
    "bottleneck": ({"bottleneck": 2}, "bottleneck=2"),
    "groups_input": ({"groups_input": 3}, "groups_input=3"),
    # Differing per-layer kernel sizes are read (A2 files, tests/modelrunner/test_nam_a2.py); a
    # list that does not give one whole number per layer is not.
    "kernel_sizes": ({"kernel_sizes": [3]}, "kernel_sizes=[3] (one whole number per layer)"),
    "kernel_sizes types": ({"kernel_sizes": [3, 2.5]}, "kernel_sizes=[3, 2.5]"),
    "activation parameters": ({"activation": {"type": "PReLU", "negative_slope": 0.2}}, "activation {'type': 'PReLU'"),
    "slimmable method": ({"slimmable": {"method": "prune_magnitude"}}, "slimmable method 'prune_magnitude'"),
    "allowed_channels": (
        {"slimmable": {"method": "slice_channels_uniform", "kwargs": {"allowed_channels": [2, 1]}}},
        "allowed_channels",
    ),
}


@pytest.mark.parametrize("case", sorted(A2_REFUSALS))
def test_a2_options_refused_by_their_key(case: str, tmp_path) -> None:
    extra, message = A2_REFUSALS[case]

    def put(d):
        lc = d["config"]["layers"][0]
        if "kernel_sizes" in extra:
            del lc["kernel_size"]
        lc.update(extra)

    with pytest.raises(CheckpointError, match=f"layer array 0: .*{re.escape(message)}"):
        load(_mutated(tmp_path, "wavenet_tiny_v054.nam", put))


def test_post_stack_head_and_bad_containers_refused(tmp_path) -> None:
    def head(d):
        d["config"]["head"] = {"channels": 4, "out_channels": 1, "kernel_sizes": [1], "activation": "ReLU"}

    with pytest.raises(CheckpointError, match="post-stack 'head'"):
        load(_mutated(tmp_path, "wavenet_tiny_v054.nam", head))
    cases = {
        "must ascend in 'max_value'": lambda d: d["config"]["submodels"].reverse(),
        "last submodel 'max_value' must be >= 1.0": lambda d: d["config"]["submodels"].pop(),
        "'submodels' must be a list of 1..16": lambda d: d["config"].update(submodels=[]),
        r"submodels\[1\]: config implies 131 weights, file has 130": lambda d: d["config"]["submodels"][1]["model"][
            "weights"
        ].pop(),
        r"submodels\[0\] 'sample_rate' 44100 is not 48000": lambda d: d["config"]["submodels"][0]["model"].update(
            sample_rate=44100
        ),
    }
    for message, mutate in cases.items():
        with pytest.raises(CheckpointError, match=message):
            load(_mutated(tmp_path, "slimmable_container.nam", mutate))
    with pytest.raises(CheckpointError, match="slimmable_size must be a number in 0..1"):
        load(fixture_path("models", "nam", "slimmable_container.nam"), config={"slimmable_size": 2})


def test_bad_condition_dsp_refused(tmp_path) -> None:
    cases = {
        r"condition_dsp: config implies 137 weights, file has 136": lambda d: d["config"]["condition_dsp"][
            "weights"
        ].pop(),
        "condition_size differs from its condition_dsp's 3 output channels": lambda d: d["config"]["layers"][0].update(
            condition_size=2
        ),
        r"condition_dsp: NAM WaveNet layer array 0 has implausible sizes": lambda d: d["config"]["condition_dsp"][
            "config"
        ]["layers"][0].update(channels=10**6),
    }
    for message, mutate in cases.items():
        with pytest.raises(CheckpointError, match=message):
            load(_mutated(tmp_path, "wavenet_condition_dsp.nam", mutate))


def test_slimmable_size_from_a_config_file(tmp_path) -> None:
    # What a researcher uploads next to the checkpoint (webmushra passes the file's path).
    cfg = tmp_path / "size.json"
    cfg.write_text(json.dumps({"slimmable_size": 0.5}))
    model = load(fixture_path("models", "nam", "slimmable_container.nam"), config=str(cfg))
    assert "submodel 2 of 3" in model.architecture
    cfg.write_text(json.dumps({"architecture": "wavenet"}))
    with pytest.raises(CheckpointError, match="slimmable_size"):
        load(fixture_path("models", "nam", "slimmable_container.nam"), config=str(cfg))
