"""SmartAmpPro JSON: TubeClean against a plain numpy forward written from SmartAmpPro's
``lstm::process`` (``pad_init``, ``unfold``, ``conv1d_layer``, ``conv1d_layer2``, ``lstm_layer``)."""

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


def tube_clean() -> Path:
    return fixture_path("models", "smartamppro", "TubeClean.json")


def pads(rows: int, kernel: int, stride: int) -> tuple[int, int]:
    rest = rows % stride
    width = max(kernel - stride, 0) if rest == 0 else max(kernel - rest, 0)
    return width // 2, width - width // 2


def reference(data: dict[str, Any], x: np.ndarray) -> np.ndarray:
    n = data["input_size"]
    k1 = np.asarray(data["conv1d"]["kernel:0"])  # (kernel, 1, channels)
    b1 = np.asarray(data["conv1d"]["bias:0"])
    k2 = np.asarray(data["conv1d_1"]["kernel:0"])
    b2 = np.asarray(data["conv1d_1"]["bias:0"])
    wl, bl = np.asarray(data["lstm"]["kernel:0"]), np.asarray(data["lstm"]["bias:0"])
    wd, bd = np.asarray(data["dense"]["kernel:0"]), np.asarray(data["dense"]["bias:0"])
    s1, s2, hs = data["conv1d_stride"], data["conv1d_1_stride"], len(bl) // 4
    # every output sample sees the last n inputs, oldest first, zeros before the start
    buffer = np.concatenate([np.zeros(n - 1), x])
    windows = np.lib.stride_tricks.sliding_window_view(buffer, n)  # (frames, n)
    left, right = pads(n, k1.shape[0], s1)
    padded = np.concatenate([np.zeros((len(x), left)), windows, np.zeros((len(x), right))], axis=1)
    rows = padded.shape[1] // s1
    out1 = np.zeros((len(x), rows, k1.shape[2]))
    for i in range(rows):
        piece = padded[:, i * s1 : i * s1 + k1.shape[0]]
        out1[:, i, :] = piece @ k1[:, 0, :] + b1
    left2, right2 = pads(rows, k2.shape[0], s2)
    padded2 = np.concatenate(
        [np.zeros((len(x), left2, out1.shape[2])), out1, np.zeros((len(x), right2, out1.shape[2]))], axis=1
    )
    out2 = np.zeros((len(x), k2.shape[2])) + b2
    for j in range(k2.shape[0]):
        out2 += padded2[:, j, :] @ k2[j]
    gates = out2 @ wl + bl
    h = sigmoid(gates[:, 3 * hs :]) * np.tanh(sigmoid(gates[:, :hs]) * np.tanh(gates[:, 2 * hs : 3 * hs]))
    return (h @ wd + bd)[:, 0]


def test_tube_clean_matches_reference_over_ten_seconds() -> None:
    path = tube_clean()
    model = load(path)
    x = ten_seconds()
    y = run_whole(model, x)
    assert_matches(y, reference(json.loads(path.read_text()), x.double().numpy()[0]))


def test_tube_clean_summary_and_chunks() -> None:
    path = tube_clean()
    assert detect_format(path) == "smartamppro"
    model = load(path)
    assert model.format == "smartamppro" and model.architecture == "Conv1D-4/4+LSTM-24+window-120"
    assert model.sample_rate == 44100 and model.knob_names == []
    assert not model.stateful and model.receptive_field == 120
    assert model.parameter_count == 12 * 4 + 4 + 12 * 4 * 4 + 4 + 4 * 96 + 96 + 24 + 1
    assert_chunked_equals_whole(model, guitar(0.5))


def test_other_window_geometry_matches_reference(tmp_path: Path) -> None:
    """A 120-sample window cut by 10, then a kernel of 8 over the 12 rows with stride 7: the
    second padding is uneven (1 row before, 2 after), so its side matters."""
    rng = np.random.default_rng(5)
    data = {
        "input_size": 120,
        "conv1d_stride": 10,
        "conv1d_1_stride": 7,
        "conv1d": {"kernel:0": (0.3 * rng.standard_normal((10, 1, 3))).tolist(), "bias:0": [0.1, -0.2, 0.05]},
        "conv1d_1": {"kernel:0": (0.3 * rng.standard_normal((8, 3, 2))).tolist(), "bias:0": [0.0, 0.1]},
        "lstm": {"lstm_cell": {}, "kernel:0": rng.standard_normal((2, 32)).tolist(), "bias:0": [0.1] * 32},
        "dense": {"kernel:0": rng.standard_normal((8, 1)).tolist(), "bias:0": [0.02]},
    }
    path = tmp_path / "model.json"
    path.write_text(json.dumps(data))
    x = guitar(1.0)
    assert_matches(run_whole(load(path), x), reference(data, x.double().numpy()[0]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["lstm"]["kernel:0"].pop(), r"lstm/kernel:0 has shape \[3, 96\], expected \[4, 96\]"),
        (lambda d: d["lstm"]["bias:0"].pop(), r"lstm/bias:0 has 95 values, expected 4 x hidden size"),
        (lambda d: d["dense"]["kernel:0"].pop(), r"dense/kernel:0 has shape \[23, 1\], expected \[24, 1\]"),
        (lambda d: d["conv1d_1"]["kernel:0"][0].pop(), r"'conv1d_1/kernel:0' is not a \(rectangular\) list"),
        (lambda d: d["conv1d"]["bias:0"].append(0.0), r"conv1d/bias:0 has shape \[5\], expected \[4\]"),
        (lambda d: d.__setitem__("input_size", 10**9), r"input_size 1000000000 is outside 1\.\.8192"),
        (lambda d: d.__setitem__("conv1d_stride", 0), r"conv1d_stride 0 is outside 1\.\.8192"),
        (
            lambda d: d.__setitem__("conv1d_stride", 6),
            r"conv1d kernel 12 with conv1d_stride 6 does not fit input_size 120",
        ),
        (lambda d: d.__setitem__("dense", [1, 2]), r"dense must be an object with 'kernel:0' and 'bias:0'"),
    ],
)
def test_malformed_files_are_refused_naming_the_field(tmp_path: Path, change, message: str) -> None:
    path = mutated(tube_clean(), tmp_path, change)
    with pytest.raises(CheckpointError, match=r"^model\.json: .*" + message):
        load(path)
