"""GuitarML WaveNet JSON: SmartGuitarPedal's TS9 against a plain numpy forward written from
WaveNetVA's ``Convolution``/``ConvolutionLayer``/``ConvolutionStack``/``WaveNet``."""

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


def ts9() -> Path:
    return fixture_path("models", "guitarml_wavenet", "ts9_fullD.json")


def conv(x: np.ndarray, flat: list, bias: list, n_in: int, n_out: int, width: int, dilation: int) -> np.ndarray:
    """WaveNetVA ``Convolution``: ``kernel[width-1-k](row, col) = W[i]`` over (k, row, col);
    ``kernel[j]`` multiplies the input ``j·dilation`` samples back (zeros before the start).
    ``x``: (frames, n_in) -> (frames, n_out)."""
    w = np.asarray(flat, dtype=np.float64)
    kernel = np.zeros((width, n_in, n_out))
    i = 0
    for k in range(width):
        for row in range(n_in):
            for col in range(n_out):
                kernel[width - 1 - k, row, col] = w[i]
                i += 1
    out = np.zeros((x.shape[0], n_out)) + np.asarray(bias, dtype=np.float64)
    for j in range(width):
        lag = j * dilation
        if lag == 0:
            out += x @ kernel[j]
        elif lag < x.shape[0]:
            out[lag:] += x[:-lag] @ kernel[j]
    return out


def reference(data: dict[str, Any], x: np.ndarray) -> np.ndarray:
    c, f, dil = data["residual_channels"], data["filter_width"], data["dilations"]
    n = len(dil)
    var = {(v["layer_idx"], v["name"]): [float(s) for s in v["data"]] for v in data["variables"]}
    h = conv(x[:, None], var[(-1, "W")], var[(-1, "b")], 1, c, 1, 1)
    skips = []
    for i, d in enumerate(dil):
        z = conv(h, var[(i, "W_conv")], var[(i, "b_conv")], c, 2 * c, f, d)
        a = np.tanh(z[:, :c]) * sigmoid(z[:, c:])  # gated
        skips.append(a)
        h = h + conv(a, var[(i, "W_out")], var[(i, "b_out")], c, c, 1, 1)
    return conv(np.concatenate(skips, axis=1), var[(n, "W")], var[(n, "b")], n * c, 1, 1, 1)[:, 0]


def test_ts9_matches_reference_over_ten_seconds() -> None:
    path = ts9()
    model = load(path)
    x = ten_seconds()
    y = run_whole(model, x)
    assert_matches(y, reference(json.loads(path.read_text()), x.double().numpy()[0]))


def test_ts9_summary_and_chunks() -> None:
    path = ts9()
    assert detect_format(path) == "guitarml_wavenet"
    model = load(path)
    assert model.format == "guitarml_wavenet" and model.architecture == "WaveNet-5x10-gated"
    assert model.sample_rate == 44100 and model.knob_names == []
    assert not model.stateful and model.receptive_field == 1 + 2 * 1023
    assert model.parameter_count == 5 + 5 + 10 * (150 + 10 + 25 + 5) + 50 + 1
    assert "assumed 44100" in model.provenance["warnings"][0]
    assert_chunked_equals_whole(model, guitar(0.5))


def _var(d: dict[str, Any], idx: int, name: str) -> dict[str, Any]:
    return next(v for v in d["variables"] if v["layer_idx"] == idx and v["name"] == name)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: _var(d, 3, "W_conv")["data"].pop(),
            r"variables\[14\]\.data \(W_conv, layer_idx 3\) has 149 values, expected 150",
        ),
        (lambda d: d["variables"].pop(), r"variables lack b \(layer_idx 10\)"),
        (lambda d: d.__setitem__("residual_channels", 10**7), r"residual_channels 10000000 is outside 1\.\.256"),
        (
            lambda d: d.__setitem__("residual_channels", 6),
            r"variables\[0\]\.data \(W, layer_idx -1\) has 5 values, expected 6",
        ),
        (lambda d: d["dilations"].__setitem__(2, 2**40), r"dilations\[2\] 1099511627776 is outside 1\.\.65536"),
        (lambda d: d.__setitem__("activation", "swish"), r"activation 'swish' is not one of"),
        (
            lambda d: _var(d, 0, "b_out")["data"].__setitem__(1, "loud"),
            r"variables\[5\]\.data \(b_out, layer_idx 0\) holds 'loud'",
        ),
        (
            lambda d: _var(d, 0, "b_out")["data"].__setitem__(1, "inf"),
            r"variables\[5\]\.data \(b_out, layer_idx 0\) holds NaN or infinite",
        ),
        (lambda d: d["variables"][2].__setitem__("layer_idx", 11), r"variables\[2\]\.layer_idx 11 is outside -1\.\.10"),
        (lambda d: d.__setitem__("input_channels", 2), r"input_channels 2 is outside 1\.\.1"),
    ],
)
def test_malformed_files_are_refused_naming_the_field(tmp_path: Path, change, message: str) -> None:
    path = mutated(ts9(), tmp_path, change)
    with pytest.raises(CheckpointError, match=r"^model\.json: " + message):
        load(path)
