"""SmartAmpPro Keras JSON (GuitarML SmartAmpPro: two strided conv1d layers, an LSTM, a dense).

The file, as SmartAmpPro's ``ModelLoader`` reads it: ``input_size`` N (the window of past
samples each output sees), ``conv1d`` / ``conv1d_1`` each ``{"kernel:0": (k, in, out),
"bias:0": (out)}`` with ``conv1d_stride`` / ``conv1d_1_stride``, ``lstm`` ``{"kernel:0":
(c, 4h), "bias:0": (4h)}`` (no recurrent kernel is used: the LSTM runs one step from a zero
state, Keras ``stateful=False``) and ``dense`` ``{"kernel:0": (h, 1), "bias:0": (1)}``.

Per output sample (the plugin's ``lstm::process``): the last N input samples (zeros before
the start) are zero-padded "same"-style (``pad = max(k - (s if N % s == 0 else N % s), 0)``,
``pad // 2`` on the left), cut into windows of k every s samples and convolved (no
activation); the second convolution pads its input rows the same way and uses its first k
rows; the LSTM step is ``h = σ(o)·tanh(σ(i)·tanh(g))`` (gates i, f, g, o); ``y = dense(h)``.
The file stores no sample rate: 44.1 kHz (the plugin's rate) unless the caller passes one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import limits
from ..errors import CheckpointError
from ..model import EffectModel
from ._common import check_sample_rate, make_model, read_json, shaped, whole

DEFAULT_SAMPLE_RATE = 44_100
MAX_INPUT = 8192
MAX_CHANNELS = 512
MAX_HIDDEN = 1024
#: Output frames computed at once (bounds the unfolded windows' memory).
BLOCK = 4096
KEYS = ("conv1d", "conv1d_1", "lstm", "dense", "input_size")


def looks_like(data: Any) -> bool:
    """True for a parsed JSON object with SmartAmpPro's layer objects and ``input_size``."""
    return isinstance(data, dict) and all(k in data for k in KEYS) and isinstance(data.get("lstm"), dict)


def same_padding(length: int, kernel: int, stride: int) -> tuple[int, int]:
    """(left, right) zero padding of SmartAmpPro's ``pad_init`` for ``length`` rows."""
    rest = length % stride
    width = max(kernel - (stride if rest == 0 else rest), 0)
    return width // 2, width - width // 2


class SmartAmpPro(nn.Module):
    """The plugin's per-sample network over a sliding window (protocol of ``model.py``;
    state: the last ``input_size - 1`` input samples)."""

    def __init__(self, n: int, k1: int, s1: int, c1: int, k2: int, s2: int, c2: int, hidden: int) -> None:
        super().__init__()
        self.n, self.k1, self.s1, self.k2, self.s2, self.hidden = n, k1, s1, k2, s2, hidden
        self.pad1 = same_padding(n, k1, s1)
        self.rows1 = (n + sum(self.pad1)) // s1
        self.pad2 = same_padding(self.rows1, k2, s2)
        self.kernel1 = nn.Parameter(torch.zeros(k1, c1))
        self.bias1 = nn.Parameter(torch.zeros(c1))
        self.kernel2 = nn.Parameter(torch.zeros(k2, c1, c2))
        self.bias2 = nn.Parameter(torch.zeros(c2))
        self.lstm_kernel = nn.Parameter(torch.zeros(c2, 4 * hidden))
        self.lstm_bias = nn.Parameter(torch.zeros(4 * hidden))
        self.dense_kernel = nn.Parameter(torch.zeros(hidden, 1))
        self.dense_bias = nn.Parameter(torch.zeros(1))

    def _frames(self, windows: torch.Tensor) -> torch.Tensor:
        """``(batch, frames, n)`` windows -> ``(batch, frames)`` outputs."""
        w = torch.nn.functional.pad(windows, self.pad1)
        w = w.unfold(2, self.k1, self.s1)[:, :, : self.rows1]  # (b, t, rows1, k1)
        r1 = w @ self.kernel1 + self.bias1  # (b, t, rows1, c1)
        r1 = torch.nn.functional.pad(r1, (0, 0, *self.pad2))[:, :, : self.k2]  # (b, t, k2, c1)
        r2 = torch.einsum("btkc,kcd->btd", r1, self.kernel2) + self.bias2
        g = r2 @ self.lstm_kernel + self.lstm_bias
        h = self.hidden
        i, cell, o = g[..., :h], g[..., 2 * h : 3 * h], g[..., 3 * h :]
        out = torch.sigmoid(o) * torch.tanh(torch.sigmoid(i) * torch.tanh(cell))
        return (out @ self.dense_kernel + self.dense_bias)[..., 0]

    def forward(
        self, x: torch.Tensor, knobs: torch.Tensor | None = None, state: Any = None
    ) -> tuple[torch.Tensor, Any]:
        past = x.new_zeros(x.shape[0], self.n - 1) if state is None else state
        full = torch.cat([past, x], dim=1)
        out = []
        for start in range(0, x.shape[1], BLOCK):
            stop = min(start + BLOCK, x.shape[1])
            out.append(self._frames(full[:, start : stop + self.n - 1].unfold(1, self.n, 1)))
        y = torch.cat(out, dim=1) if out else x.new_zeros(x.shape)
        return y, full[:, full.shape[1] - (self.n - 1) :].detach()


def _layer(data: dict[str, Any], name: str, src: str) -> dict[str, Any]:
    layer = data.get(name)
    if not isinstance(layer, dict) or "kernel:0" not in layer or "bias:0" not in layer:
        raise CheckpointError(f"{src}: {name} must be an object with 'kernel:0' and 'bias:0'")
    return layer


def _dims(value: Any, depth: int) -> list[int]:
    """Outer sizes of a nested list along its first elements (validated later by ``shaped``)."""
    dims = []
    for _ in range(depth):
        if not isinstance(value, list) or not value:
            break
        dims.append(len(value))
        value = value[0]
    return dims


def load(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    config: Any = None,
    max_bytes: int | None = None,
) -> EffectModel:
    """Load a SmartAmpPro JSON model as a streaming ``EffectModel``."""
    started = time.perf_counter()
    p = Path(path)
    src = p.name
    data = read_json(p, max_bytes)
    if not looks_like(data):
        raise CheckpointError(f"{src}: not a SmartAmpPro file (needs {', '.join(KEYS)})")
    n = whole(data["input_size"], "input_size", src, 1, MAX_INPUT)
    s1 = whole(data.get("conv1d_stride"), "conv1d_stride", src, 1, MAX_INPUT)
    s2 = whole(data.get("conv1d_1_stride"), "conv1d_1_stride", src, 1, MAX_INPUT)
    conv1, conv2, lstm, dense = (_layer(data, k, src) for k in ("conv1d", "conv1d_1", "lstm", "dense"))
    # Sizes come from the file's own arrays; bound them before trusting any.
    d1 = _dims(conv1["kernel:0"], 3)
    d2 = _dims(conv2["kernel:0"], 3)
    if len(d1) != 3 or len(d2) != 3:
        raise CheckpointError(f"{src}: conv1d/kernel:0 and conv1d_1/kernel:0 must be (kernel, in, out) arrays")
    k1 = whole(d1[0], "conv1d/kernel:0 kernel size", src, 1, MAX_INPUT)
    c1 = whole(d1[2], "conv1d/kernel:0 channels", src, 1, MAX_CHANNELS)
    k2 = whole(d2[0], "conv1d_1/kernel:0 kernel size", src, 1, MAX_INPUT)
    c2 = whole(d2[2], "conv1d_1/kernel:0 channels", src, 1, MAX_CHANNELS)
    bias = lstm.get("bias:0")
    four_h = len(bias) if isinstance(bias, list) else 0
    if four_h % 4 or not 4 <= four_h <= 4 * MAX_HIDDEN:
        raise CheckpointError(
            f"{src}: lstm/bias:0 has {four_h} values, expected 4 x hidden size (hidden 1..{MAX_HIDDEN})"
        )
    hidden = four_h // 4
    # What the declared sizes ask for, before any weight array is made: the window is the
    # receptive field, and one render block holds every window's first-layer rows.
    limits.at_most("channels", c1, source=src, field="conv1d/kernel:0 channels")
    limits.at_most("channels", c2, source=src, field="conv1d_1/kernel:0 channels")
    limits.at_most("hidden_size", hidden, source=src, field="lstm/bias:0", what=f"declares hidden size {hidden}")
    limits.at_most("receptive_field", n, source=src, field="input_size")
    budget = limits.Budget(src)
    declared = k1 * c1 + c1 + k2 * c1 * c2 + c2 + c2 * 4 * hidden + 4 * hidden + hidden + 1
    budget.weights(declared, field="conv1d, conv1d_1, lstm and dense", what=f"declare {declared} weights")
    rows = -(-(n + k1) // s1)
    block = 4 * BLOCK * (2 * (n + k1) + rows * (k1 + c1) + k2 * c1 + c2 + 4 * hidden)
    what = (
        f"with conv1d_stride {s1}, conv1d kernel {k1} and {c1} conv1d channels needs {block} bytes "
        f"of working memory per {BLOCK}-sample render block"
    )
    budget.charge("model_bytes", block, field="input_size", what=what)
    w1 = shaped(conv1["kernel:0"], (k1, 1, c1), "conv1d/kernel:0", src)
    b1 = shaped(conv1["bias:0"], (c1,), "conv1d/bias:0", src)
    w2 = shaped(conv2["kernel:0"], (k2, c1, c2), "conv1d_1/kernel:0", src)
    b2 = shaped(conv2["bias:0"], (c2,), "conv1d_1/bias:0", src)
    wl = shaped(lstm["kernel:0"], (c2, 4 * hidden), "lstm/kernel:0", src)
    bl = shaped(bias, (4 * hidden,), "lstm/bias:0", src)
    wd = shaped(dense["kernel:0"], (hidden, 1), "dense/kernel:0", src)
    bd = shaped(dense["bias:0"], (1,), "dense/bias:0", src)
    pad1 = same_padding(n, k1, s1)
    rows1 = (n + sum(pad1)) // s1
    if rows1 < 1 or (rows1 - 1) * s1 + k1 > n + sum(pad1):
        raise CheckpointError(f"{src}: conv1d kernel {k1} with conv1d_stride {s1} does not fit input_size {n}")
    # The second convolution's padded rows always hold at least its kernel (see same_padding).
    module = SmartAmpPro(n, k1, s1, c1, k2, s2, c2, hidden)
    with torch.no_grad():
        for param, value in zip(
            (module.kernel1, module.bias1, module.kernel2, module.bias2),
            (w1[:, 0, :], b1, w2, b2),
        ):
            param.copy_(value)
        for param, value in zip(
            (module.lstm_kernel, module.lstm_bias, module.dense_kernel, module.dense_bias), (wl, bl, wd, bd)
        ):
            param.copy_(value)
    warnings: list[str] = []
    if sample_rate is None:
        warnings.append("no sample rate stored; assumed 44100 Hz")
    rate = DEFAULT_SAMPLE_RATE if sample_rate is None else check_sample_rate(sample_rate, src)
    return make_model(
        path=p,
        module=module,
        sample_rate=rate,
        fmt="smartamppro",
        architecture=f"Conv1D-{c1}/{c2}+LSTM-{hidden}+window-{n}",
        stateful=False,
        receptive_field=n,
        metadata={"input_size": n, "conv1d": [k1, s1, c1], "conv1d_1": [k2, s2, c2], "hidden_size": hidden},
        started=started,
        warnings=warnings,
    )
