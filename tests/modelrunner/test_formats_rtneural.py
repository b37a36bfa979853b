"""RTNeural / AIDA-X JSON: the real AIDA-X fixture and a synthetic file using every layer type,
each against a plain numpy forward written from RTNeural's layers and AIDA-X's ``applyModel``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelrunner.errors import CheckpointError
from modelrunner.formats import detect_format, load
from tests.modelrunner._helpers import assert_chunked_equals_whole, guitar, run_whole
from tests.modelrunner._reference import assert_matches, mutated, sigmoid, ten_seconds
from tests.paths import fixture_path


def aidax() -> Path:
    return fixture_path("models", "aidax", "tw40_california_clean.json")


def reference(data: dict[str, Any], x: np.ndarray, params: list[float]) -> np.ndarray:
    """Sample by sample, as RTNeural's ``Model::forward`` inside AIDA-X's ``applyModel``."""
    in_gain = 10 ** (data.get("in_gain", 0.0) / 20)
    out_gain = 10 ** (data.get("out_gain", 0.0) / 20)
    layers = data["layers"]
    w = [[np.asarray(a, dtype=np.float64) for a in layer["weights"]] for layer in layers]
    hist: list[list[np.ndarray]] = [[] for _ in layers]
    h = [None] * len(layers)
    c = [None] * len(layers)
    y = np.zeros(len(x))
    for t in range(len(x)):
        xin = x[t] * in_gain
        v = np.array([xin, *params])
        for i, layer in enumerate(layers):
            kind, act = layer["type"], layer.get("activation", "")
            if kind in ("dense", "time-distributed-dense"):
                v = v @ w[i][0] + w[i][1]
            elif kind == "conv1d":
                k, d = layer["kernel_size"][-1], layer["dilation"][-1]
                hist[i].append(v)
                acc = w[i][1].copy()
                for tap in range(k):
                    back = (k - 1 - tap) * d
                    if back < len(hist[i]):
                        acc = acc + hist[i][-1 - back] @ w[i][0][tap]
                v = acc
            elif kind == "lstm":
                n = w[i][1].shape[0]
                hp = np.zeros(n) if h[i] is None else h[i]
                cp = np.zeros(n) if c[i] is None else c[i]
                g = v @ w[i][0] + hp @ w[i][1] + w[i][2]
                gi, gf, gc, go = sigmoid(g[:n]), sigmoid(g[n : 2 * n]), np.tanh(g[2 * n : 3 * n]), sigmoid(g[3 * n :])
                c[i] = gf * cp + gi * gc
                h[i] = go * np.tanh(c[i])
                v = h[i]
                act = ""
            elif kind == "gru":
                n = w[i][1].shape[0]
                hp = np.zeros(n) if h[i] is None else h[i]
                xs = v @ w[i][0] + w[i][2][0]
                hs = hp @ w[i][1] + w[i][2][1]
                z = sigmoid(xs[:n] + hs[:n])
                r = sigmoid(xs[n : 2 * n] + hs[n : 2 * n])
                cand = np.tanh(xs[2 * n :] + r * hs[2 * n :])
                h[i] = z * hp + (1 - z) * cand
                v = h[i]
                act = ""
            elif kind == "prelu":
                alpha = w[i][0][0]
                v = np.where(v >= 0, v, alpha * v)
            if act == "tanh":
                v = np.tanh(v)
            elif act == "relu":
                v = np.maximum(v, 0)
            elif act == "sigmoid":
                v = sigmoid(v)
            elif act == "elu":
                v = np.where(v > 0, v, np.exp(v) - 1)
        out = v[0] + (xin if data.get("in_skip", 0) else 0.0)
        y[t] = out * out_gain
    return y


def synthetic(seed: int = 3) -> dict[str, Any]:
    """Every layer type AIDA-X files use, one knob, in_skip and both gains."""
    rng = np.random.default_rng(seed)

    def r(*shape: int, scale: float = 0.4) -> list:
        return (scale * rng.standard_normal(shape)).tolist()

    return {
        "in_shape": [None, None, 2],
        "in_skip": 1,
        "in_gain": -3.0,
        "out_gain": 2.5,
        "metadata": {"samplerate": 44100},
        "layers": [
            {
                "type": "conv1d",
                "activation": "tanh",
                "shape": [None, None, 4],
                "kernel_size": [3],
                "dilation": [2],
                "weights": [r(3, 2, 4), r(4)],
            },
            {"type": "gru", "activation": "", "shape": [None, None, 6], "weights": [r(4, 18), r(6, 18), r(2, 18)]},
            {"type": "prelu", "shape": [None, None, 6], "weights": [[r(6)]]},
            {"type": "lstm", "activation": "", "shape": [None, None, 5], "weights": [r(6, 20), r(5, 20), r(20)]},
            {
                "type": "time-distributed-dense",
                "activation": "elu",
                "shape": [None, None, 3],
                "weights": [r(5, 3), r(3)],
            },
            {"type": "activation", "activation": "sigmoid", "shape": [None, None, 3], "weights": []},
            {"type": "dense", "activation": "", "shape": [None, None, 1], "weights": [r(3, 1), r(1)]},
        ],
    }


def test_aidax_fixture_matches_reference_over_ten_seconds() -> None:
    path = aidax()
    model = load(path)
    x = ten_seconds()
    y = run_whole(model, x)
    ref = reference(json.loads(path.read_text()), x.double().numpy()[0], [])
    assert_matches(y, ref)


def test_aidax_summary() -> None:
    path = aidax()
    assert detect_format(path) == "rtneural"
    model = load(path)
    assert model.format == "rtneural" and model.architecture == "lstm-12+dense-1"
    assert model.sample_rate == 48000  # metadata.samplerate, written as a string in this file
    assert model.knob_names == [] and model.stateful and model.receptive_field == 1
    # torch's LSTM holds a second (zero) bias vector beside the file's one
    assert model.parameter_count == 4 * 12 * (1 + 12) + 2 * 4 * 12 + 12 + 1
    assert model.summary()["metadata"]["file_metadata"]["based"] == "Egnater Tweaker 40"
    assert_chunked_equals_whole(model, guitar(0.5))


def test_every_layer_type_matches_reference(tmp_path: Path) -> None:
    data = synthetic()
    path = tmp_path / "model.json"
    path.write_text(json.dumps(data))
    model = load(path)
    assert model.knob_names == ["param1"] and model.sample_rate == 44100
    x = guitar(1.0)
    y = run_whole(model, x, {"param1": 0.3})
    assert_matches(y, reference(data, x.double().numpy()[0], [0.3]))
    assert_chunked_equals_whole(model, guitar(0.3), {"param1": 0.7})


def test_convolutional_stack_is_not_stateful(tmp_path: Path) -> None:
    data = synthetic()
    data["layers"] = [data["layers"][0], {"type": "dense", "shape": [None, None, 1], "weights": [[[0.5]] * 4, [0.0]]}]
    model = load(mutated_dict(tmp_path, data))
    assert not model.stateful and model.receptive_field == 1 + 2 * 2


def mutated_dict(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / "model.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["layers"][0]["weights"][0].pop(),
            r"layers\[0\]\.weights\[0\] has shape \[0\], expected \[1, 48\]",
        ),
        (lambda d: d["layers"][0]["weights"].pop(), r"layers\[0\]\.weights has 2 arrays, lstm needs 3"),
        (
            lambda d: d["layers"][0]["weights"][1].__setitem__(0, d["layers"][0]["weights"][1][0][:5]),
            r"'layers\[0\]\.weights\[1\]' is not a \(rectangular\) list",
        ),
        (
            lambda d: d["layers"][0].__setitem__("shape", [None, None, 10**9]),
            r"layers\[0\]\.shape\[-1\] 1000000000 is outside 1\.\.1024",
        ),
        (lambda d: d.__setitem__("in_shape", [None, None, 7]), r"in_shape\[-1\] 7 is outside 1\.\.3"),
        (lambda d: d["layers"][1].__setitem__("type", "conv2d"), r"layers\[1\]\.type 'conv2d' is not supported"),
        (lambda d: d["layers"][1].__setitem__("activation", "swish"), r"layers\[1\]\.activation 'swish' is not one of"),
        (
            lambda d: d["layers"][1].__setitem__("shape", [None, None, 2]),
            r"layers\[1\]\.weights\[0\] has shape \[12, 1\], expected \[12, 2\]",
        ),
        (lambda d: d.__setitem__("in_skip", 2), r"in_skip 2 is not 0 or 1"),
        (lambda d: d.__setitem__("out_gain", 1e9), r"out_gain 1000000000\.0 must be a number of dB"),
        (lambda d: d["metadata"].__setitem__("samplerate", "fast"), r"metadata\.samplerate 'fast' is not a number"),
    ],
)
def test_malformed_files_are_refused_naming_the_field(tmp_path: Path, change, message: str) -> None:
    path = mutated(aidax(), tmp_path, change)
    with pytest.raises(CheckpointError, match=r"^model\.json: .*" + message):
        load(path)


def test_absurd_declared_size_is_refused_before_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelrunner.formats import rtneural

    built: list[int] = []
    monkeypatch.setattr(rtneural, "_build", lambda plan: built.append(1) or [])
    data = synthetic()
    data["layers"][0]["kernel_size"] = [10**8]
    with pytest.raises(CheckpointError, match=r"layers\[0\]\.kernel_size\[-1\] 100000000 is outside 1\.\.4096"):
        load(mutated_dict(tmp_path, data))
    assert built == []


def test_other_json_is_refused_listing_the_formats_read(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"layers": {}, "weights_of": [1]}))
    with pytest.raises(CheckpointError, match=r"^model\.json: JSON file is none of CoreAudioML .* RTNeural/AIDA-X"):
        detect_format(path)
