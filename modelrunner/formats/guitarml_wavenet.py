"""GuitarML WaveNet JSON (SmartGuitarPedal / SmartGuitarAmp / SmartAmp; PedalNet-style).

The export read by WaveNetVA's ``WaveNetLoader`` (Damskägg et al., "Real-time modeling of
audio distortion circuits with deep learning", SMC 2019): ``residual_channels`` C,
``input_channels`` and ``output_channels`` (1), ``filter_width`` F, ``dilations`` (one per
layer), ``activation`` (gated, softgated, tanh, sigmoid, relu, softsign, linear) and
``variables``: ``{layer_idx, name, data}`` with flat ``data``:

* ``layer_idx`` -1, ``W`` (C) and ``b`` (C): the 1x1 input layer;
* ``layer_idx`` 0..L-1, ``W_conv`` (F·C·M, M = 2C when gated) and ``b_conv`` (M): the
  causal dilated convolution, ``W_out`` (C·C) and ``b_out`` (C): the 1x1 residual layer;
* ``layer_idx`` L, ``W`` (L·C) and ``b`` (1): the 1x1 output layer over all skips.

Numbers may be written as JSON strings (the plugins' own exports do this; JUCE converts
them). Flat kernels are ordered (tap, input, output) with the first tap the oldest sample. Per
layer: ``z = conv(h)``, ``a = tanh(z[:C])·sigmoid(z[C:])`` (gated), the skip is ``a``,
``h = out1x1(a) + h``; the output layer mixes the concatenated skips linearly. The file
stores no sample rate: 44.1 kHz (the plugins' rate) unless the caller passes one.
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
ACTIVATIONS = ("gated", "softgated", "tanh", "sigmoid", "relu", "softsign", "linear")
MAX_CHANNELS = 256
MAX_LAYERS = 64
MAX_WIDTH = 64
MAX_DILATION = 65_536


def looks_like(data: Any) -> bool:
    """True for a parsed JSON object with WaveNetVA's ``variables`` and ``dilations`` lists."""
    return (
        isinstance(data, dict) and isinstance(data.get("variables"), list) and isinstance(data.get("dilations"), list)
    )


def _softsign(x: torch.Tensor) -> torch.Tensor:
    return x / (1.0 + x.abs())


class GuitarMLWaveNet(nn.Module):
    """WaveNetVA's stack (streaming protocol of ``model.py``; state: each layer's past input)."""

    def __init__(self, channels: int, width: int, dilations: list[int], activation: str) -> None:
        super().__init__()
        self.channels, self.width, self.dilations, self.activation = channels, width, list(dilations), activation
        gated = activation in ("gated", "softgated")
        inner = 2 * channels if gated else channels
        self.input_layer = nn.Conv1d(1, channels, 1)
        self.convs = nn.ModuleList(nn.Conv1d(channels, inner, width, dilation=d) for d in dilations)
        self.outs = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in dilations)
        self.output_layer = nn.Conv1d(channels * len(dilations), 1, 1)

    @property
    def receptive_field(self) -> int:
        return 1 + sum((self.width - 1) * d for d in self.dilations)

    def _act(self, z: torch.Tensor) -> torch.Tensor:
        c = self.channels
        if self.activation == "gated":
            return torch.tanh(z[:, :c]) * torch.sigmoid(z[:, c:])
        if self.activation == "softgated":
            return _softsign(z[:, :c]) * _softsign(z[:, c:])
        if self.activation == "tanh":
            return torch.tanh(z)
        if self.activation == "sigmoid":
            return torch.sigmoid(z)
        if self.activation == "relu":
            return torch.relu(z)
        if self.activation == "softsign":
            return _softsign(z)
        return z

    def forward(
        self, x: torch.Tensor, knobs: torch.Tensor | None = None, state: Any = None
    ) -> tuple[torch.Tensor, Any]:
        h = self.input_layer(x[:, None, :])
        new_state = []
        skips = []
        for i, (conv, out) in enumerate(zip(self.convs, self.outs)):
            span = (self.width - 1) * self.dilations[i]
            past = h.new_zeros(h.shape[0], self.channels, span) if state is None else state[i]
            full = torch.cat([past, h], dim=2)
            new_state.append(full[:, :, full.shape[2] - span :].detach())
            a = self._act(conv(full))
            skips.append(a)
            h = out(a) + h
        return self.output_layer(torch.cat(skips, dim=1))[:, 0, :], new_state


def load(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    config: Any = None,
    max_bytes: int | None = None,
) -> EffectModel:
    """Load a GuitarML WaveNet JSON file as a streaming ``EffectModel``."""
    started = time.perf_counter()
    p = Path(path)
    src = p.name
    data = read_json(p, max_bytes)
    if not looks_like(data):
        raise CheckpointError(f"{src}: not a GuitarML WaveNet file (needs 'variables' and 'dilations' lists)")
    c = whole(data.get("residual_channels"), "residual_channels", src, 1, MAX_CHANNELS)
    whole(data.get("input_channels", 1), "input_channels", src, 1, 1)
    whole(data.get("output_channels", 1), "output_channels", src, 1, 1)
    f = whole(data.get("filter_width"), "filter_width", src, 1, MAX_WIDTH)
    raw = data["dilations"]
    if not 1 <= len(raw) <= MAX_LAYERS:
        raise CheckpointError(f"{src}: dilations has {len(raw)} entries, expected 1..{MAX_LAYERS}")
    dilations = [whole(d, f"dilations[{i}]", src, 1, MAX_DILATION) for i, d in enumerate(raw)]
    activation = data.get("activation")
    if activation not in ACTIVATIONS:
        raise CheckpointError(f"{src}: activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
    n = len(dilations)
    inner = 2 * c if activation in ("gated", "softgated") else c
    expected: dict[tuple[int, str], int] = {(-1, "W"): c, (-1, "b"): c, (n, "W"): n * c, (n, "b"): 1}
    for i in range(n):
        expected.update({(i, "W_conv"): f * c * inner, (i, "b_conv"): inner, (i, "W_out"): c * c, (i, "b_out"): c})
    # What the declared sizes ask for, before any weight list is read.
    limits.at_most("channels", c, source=src, field="residual_channels")
    limits.at_most("layers", n, source=src, field="dilations", what=f"has {n} layers")
    span = (f - 1) * sum(dilations)
    what = f"with filter_width {f} give a receptive field of {span + 1} samples"
    limits.at_most("receptive_field", span + 1, source=src, field="dilations", what=what)
    budget = limits.Budget(src)
    what = f"need {4 * c * span} bytes of streaming state ({c} channels x {span} samples)"
    budget.charge("model_bytes", 4 * c * span, field="dilations", what=what)
    total = sum(expected.values())
    budget.weights(total, field="residual_channels, filter_width and dilations", what=f"declare {total} weights")
    found: dict[tuple[int, str], torch.Tensor] = {}
    for j, var in enumerate(data["variables"]):
        where = f"variables[{j}]"
        if not isinstance(var, dict):
            raise CheckpointError(f"{src}: {where} must be an object")
        idx = whole(var.get("layer_idx"), f"{where}.layer_idx", src, -1, n)
        name = var.get("name")
        if 0 <= idx < n and name in ("W", "b"):
            name += "_conv"
        key = (idx, str(name))
        if key not in expected:
            raise CheckpointError(f"{src}: {where} name {name!r} is unknown for layer_idx {idx}")
        if key in found:
            raise CheckpointError(f"{src}: {where} repeats {name} for layer_idx {idx}")
        field = f"{where}.data ({name}, layer_idx {idx})"
        found[key] = shaped(_numbers(var.get("data"), expected[key], field, src), (expected[key],), field, src)
    missing = [f"{name} (layer_idx {i})" for (i, name) in expected if (i, name) not in found]
    if missing:
        raise CheckpointError(f"{src}: variables lack {', '.join(missing[:6])}")

    module = GuitarMLWaveNet(c, f, dilations, str(activation))
    with torch.no_grad():
        module.input_layer.weight.copy_(found[(-1, "W")].reshape(1, c).T[:, :, None])
        _bias(module.input_layer).copy_(found[(-1, "b")])
        for i, (conv, out) in enumerate(zip(module.convs, module.outs)):
            assert isinstance(conv, nn.Conv1d) and isinstance(out, nn.Conv1d)
            # flat (tap, in, out) -> torch (out, in, tap)
            conv.weight.copy_(found[(i, "W_conv")].reshape(f, c, inner).permute(2, 1, 0))
            _bias(conv).copy_(found[(i, "b_conv")])
            out.weight.copy_(found[(i, "W_out")].reshape(c, c).T[:, :, None])
            _bias(out).copy_(found[(i, "b_out")])
        module.output_layer.weight.copy_(found[(n, "W")].reshape(n * c, 1).T[:, :, None])
        _bias(module.output_layer).copy_(found[(n, "b")])
    warnings: list[str] = []
    if sample_rate is None:
        warnings.append("no sample rate stored; assumed 44100 Hz")
    rate = DEFAULT_SAMPLE_RATE if sample_rate is None else check_sample_rate(sample_rate, src)
    return make_model(
        path=p,
        module=module,
        sample_rate=rate,
        fmt="guitarml_wavenet",
        architecture=f"WaveNet-{c}x{n}-{activation}",
        stateful=False,
        receptive_field=module.receptive_field,
        metadata={
            "residual_channels": c,
            "filter_width": f,
            "dilations": dilations,
            "activation": activation,
        },
        started=started,
        warnings=warnings,
    )


def _numbers(value: Any, count: int, field: str, src: str) -> list[float]:
    """The plugins' exports write numbers as JSON strings (JUCE converts them): accept both."""
    if not isinstance(value, list) or len(value) != count:
        size = len(value) if isinstance(value, list) else "no"
        raise CheckpointError(f"{src}: {field} has {size} values, expected {count}")
    out = []
    for v in value:
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                raise CheckpointError(f"{src}: {field} holds {v[:20]!r}, not a number") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise CheckpointError(f"{src}: {field} holds {v!r}, not a number")
        out.append(float(v))
    return out


def _bias(conv: nn.Conv1d) -> torch.Tensor:
    assert conv.bias is not None
    return conv.bias
