"""RTNeural / AIDA-X JSON: the Keras-exported layer list read by RTNeural's ``parseJson``.

The file is an object with ``in_shape`` (``[null, null, n]``: ``n`` = 1 audio input plus up
to two conditioning inputs) and ``layers``, each ``{type, shape, activation, weights}`` with
``shape[-1]`` the layer's output size and the weights in Keras layout:

* ``dense`` / ``time-distributed-dense``: ``[kernel (in, out), bias (out)]``, then the
  optional ``activation`` (tanh, relu, sigmoid, softmax, elu);
* ``conv1d``: ``kernel_size``/``dilation`` (last element used), ``[kernel (k, in, out),
  bias (out)]``, causal (tap ``i`` sees ``x[t - (k-1-i)·dilation]``), then the activation;
* ``lstm``: ``[kernel (in, 4h), recurrent (h, 4h), bias (4h)]``, gates i, f, c, o;
* ``gru``: ``[kernel (in, 3h), recurrent (h, 3h), bias (2, 3h)]``, gates z, r, h with the
  reset gate applied after the recurrent product (Keras ``reset_after=True``);
* ``prelu``: ``[[alpha (n)]]``; ``activation``: the named activation alone.

AIDA-X adds ``in_skip`` (0/1: the input is added to the network output), ``in_gain`` and
``out_gain`` in dB (``y = out_gain·(net(in_gain·x) + in_skip·in_gain·x)``, as AIDA-X's
``applyModel``) and ``metadata.samplerate`` (48 kHz when absent, AIDA-X's rate). The
conditioning inputs are knobs ``param1``/``param2`` in [0, 1]. Layer types RTNeural reads
that no shared audio model uses (``conv2d``, ``batchnorm``) are refused by name.
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

DEFAULT_SAMPLE_RATE = 48_000
MAX_WIDTH = 1024
MAX_LAYERS = 64
MAX_KERNEL = 4096
MAX_DILATION = 65_536
ACTIVATIONS = ("tanh", "relu", "sigmoid", "softmax", "elu")
LAYER_TYPES = ("dense", "time-distributed-dense", "conv1d", "lstm", "gru", "prelu", "activation")


def looks_like(data: Any) -> bool:
    """True for a parsed JSON object with RTNeural's ``in_shape`` and ``layers`` lists."""
    return isinstance(data, dict) and isinstance(data.get("in_shape"), list) and isinstance(data.get("layers"), list)


def _activate(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "tanh":
        return torch.tanh(x)
    if name == "relu":
        return torch.relu(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "softmax":
        return torch.softmax(x, dim=-1)
    if name == "elu":
        return torch.nn.functional.elu(x)
    return x


class _Layer(nn.Module):
    """One RTNeural layer over ``(batch, frames, channels)`` with its own streaming state."""

    def __init__(self, kind: str, n_in: int, n_out: int, activation: str, kernel: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.kind, self.activation = kind, activation
        self.kernel, self.dilation = kernel, dilation
        if kind == "dense":
            self.op: nn.Module = nn.Linear(n_in, n_out)
        elif kind == "conv1d":
            self.op = nn.Conv1d(n_in, n_out, kernel, dilation=dilation)
        elif kind == "lstm":
            self.op = nn.LSTM(n_in, n_out, batch_first=True)
        elif kind == "gru":
            self.op = nn.GRU(n_in, n_out, batch_first=True)
        else:
            self.op = nn.Identity()
        self.alpha = nn.Parameter(torch.zeros(n_out)) if kind == "prelu" else None

    def forward(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        new_state: Any = None
        if self.kind == "dense":
            y = self.op(x)
        elif self.kind == "conv1d":
            span = (self.kernel - 1) * self.dilation
            seq = x.transpose(1, 2)
            past = seq.new_zeros(seq.shape[0], seq.shape[1], span) if state is None else state
            full = torch.cat([past, seq], dim=2)
            new_state = full[:, :, full.shape[2] - span :].detach()
            y = self.op(full).transpose(1, 2)
        elif self.kind in ("lstm", "gru"):
            y, new_state = self.op(x, state)
            new_state = tuple(s.detach() for s in new_state) if isinstance(new_state, tuple) else new_state.detach()
        elif self.kind == "prelu":
            assert self.alpha is not None
            y = torch.where(x >= 0, x, self.alpha * x)
        else:
            y = x
        return _activate(self.activation, y), new_state


class RTNeuralModel(nn.Module):
    """AIDA-X's processing around an RTNeural layer stack (streaming protocol of ``model.py``)."""

    def __init__(self, layers: list[_Layer], n_knobs: int, in_gain: float, out_gain: float, skip: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.n_knobs, self.in_gain, self.out_gain, self.skip = n_knobs, in_gain, out_gain, skip

    def forward(
        self, x: torch.Tensor, knobs: torch.Tensor | None = None, state: Any = None
    ) -> tuple[torch.Tensor, Any]:
        xg = x * self.in_gain
        h = xg[:, :, None]
        if self.n_knobs:
            assert knobs is not None
            h = torch.cat([h, knobs[:, None, : self.n_knobs].to(h.dtype).expand(-1, h.shape[1], -1)], dim=2)
        states = [None] * len(self.layers) if state is None else list(state)
        for i, layer in enumerate(self.layers):
            h, states[i] = layer(h, states[i])
        y = h[:, :, 0]
        if self.skip:
            y = y + xg
        return y * self.out_gain, states


def _decibels(data: dict[str, Any], key: str, source: str) -> float:
    value = data.get(key)
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -90.0 < float(value) <= 60.0:
        raise CheckpointError(f"{source}: {key} {value!r} must be a number of dB in -90..60")
    return float(10.0 ** (float(value) / 20.0))


def _last(value: Any, field: str, source: str, lo: int, hi: int) -> int:
    if not isinstance(value, list) or not value:
        raise CheckpointError(f"{source}: {field} must be a non-empty list")
    return whole(value[-1], f"{field}[-1]", source, lo, hi)


def _plan(data: dict[str, Any], source: str) -> tuple[int, list[dict[str, Any]]]:
    """Bound every declared size and check every weight's shape, before building anything."""
    n_in = _last(data["in_shape"], "in_shape", source, 1, 3)
    layers = data["layers"]
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise CheckpointError(f"{source}: layers has {len(layers)} entries, expected 1..{MAX_LAYERS}")
    limits.at_most("layers", len(layers), source=source, field="layers", what=f"has {len(layers)} entries")
    width = n_in
    rf = 1
    budget = limits.Budget(source)
    plan: list[dict[str, Any]] = []
    for i, layer in enumerate(layers):
        where = f"layers[{i}]"
        if not isinstance(layer, dict):
            raise CheckpointError(f"{source}: {where} must be an object")
        kind = layer.get("type")
        if kind not in LAYER_TYPES:
            raise CheckpointError(f"{source}: {where}.type {kind!r} is not supported (one of {', '.join(LAYER_TYPES)})")
        out = _last(layer.get("shape"), f"{where}.shape", source, 1, MAX_WIDTH)
        activation = layer.get("activation", "") or ""
        if activation not in ("", *ACTIVATIONS):
            raise CheckpointError(f"{source}: {where}.activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        weights = layer.get("weights", [])
        if not isinstance(weights, list):
            raise CheckpointError(f"{source}: {where}.weights must be a list")
        step: dict[str, Any] = {"kind": kind, "in": width, "out": out, "activation": activation, "weights": []}

        def need(count: int, kind_: str = str(kind), where_: str = where, weights_: list[Any] = weights) -> None:
            if len(weights_) != count:
                raise CheckpointError(f"{source}: {where_}.weights has {len(weights_)} arrays, {kind_} needs {count}")

        cap = "hidden_size" if kind in ("lstm", "gru") else "channels"
        limits.at_most(cap, out, source=source, field=f"{where}.shape[-1]")
        # The weights this layer declares, charged before any of its arrays is made.
        g = {"lstm": 4, "gru": 3}.get(str(kind), 0)
        declared = {
            "dense": width * out + out,
            "time-distributed-dense": width * out + out,
            "lstm": g * out * (width + out + 1),
            "gru": g * out * (width + out + 2),
            "prelu": out,
        }.get(str(kind), 0)
        if kind == "conv1d":
            k = _last(layer.get("kernel_size"), f"{where}.kernel_size", source, 1, MAX_KERNEL)
            d = _last(layer.get("dilation"), f"{where}.dilation", source, 1, MAX_DILATION)
            declared = k * width * out + out
            rf += (k - 1) * d
            what = f"with kernel_size {k} brings the receptive field to {rf} samples"
            limits.at_most("receptive_field", rf, source=source, field=f"{where}.dilation", what=what)
            what = f"needs {4 * width * (k - 1) * d} bytes of streaming state ({width} channels x {(k - 1) * d})"
            budget.charge("model_bytes", 4 * width * (k - 1) * d, field=f"{where}.dilation", what=what)
        what = f"declares {declared} weights ({kind} {width} -> {out})"
        budget.weights(declared, field=f"{where}.weights", what=what)
        if kind in ("dense", "time-distributed-dense"):
            step["kind"] = "dense"
            need(2)
            step["weights"] = [
                shaped(weights[0], (width, out), f"{where}.weights[0]", source),
                shaped(weights[1], (out,), f"{where}.weights[1]", source),
            ]
        elif kind == "conv1d":
            need(2)
            step.update(kernel=k, dilation=d)
            step["weights"] = [
                shaped(weights[0], (k, width, out), f"{where}.weights[0]", source),
                shaped(weights[1], (out,), f"{where}.weights[1]", source),
            ]
        elif kind in ("lstm", "gru"):
            need(3)
            step["activation"] = ""  # RTNeural adds no activation after a recurrent layer
            step["weights"] = [
                shaped(weights[0], (width, g * out), f"{where}.weights[0]", source),
                shaped(weights[1], (out, g * out), f"{where}.weights[1]", source),
                shaped(weights[2], (g * out,) if kind == "lstm" else (2, g * out), f"{where}.weights[2]", source),
            ]
        else:
            if out != width:
                raise CheckpointError(f"{source}: {where}.shape[-1] is {out}, {kind} keeps the width {width}")
            if kind == "prelu":
                need(1)
                if not isinstance(weights[0], list) or not weights[0]:
                    raise CheckpointError(f"{source}: {where}.weights[0] must hold the alpha list")
                step["weights"] = [shaped(weights[0][0], (out,), f"{where}.weights[0][0]", source)]
        plan.append(step)
        width = out
    if width != 1:
        raise CheckpointError(f"{source}: the last layer has {width} outputs, a mono effect needs 1")
    return n_in, plan


def _param(op: nn.Module, name: str) -> torch.Tensor:
    value = getattr(op, name)
    assert isinstance(value, torch.Tensor)
    return value


def _build(plan: list[dict[str, Any]]) -> list[_Layer]:
    layers = []
    with torch.no_grad():
        for s in plan:
            layer = _Layer(s["kind"], s["in"], s["out"], s["activation"], s.get("kernel", 1), s.get("dilation", 1))
            w = s["weights"]
            op = layer.op
            if isinstance(op, nn.Linear):
                op.weight.copy_(w[0].T)
                op.bias.copy_(w[1])
            elif isinstance(op, nn.Conv1d):
                op.weight.copy_(w[0].permute(2, 1, 0))
                assert op.bias is not None
                op.bias.copy_(w[1])
            elif isinstance(op, nn.LSTM):
                _param(op, "weight_ih_l0").copy_(w[0].T)
                _param(op, "weight_hh_l0").copy_(w[1].T)
                _param(op, "bias_ih_l0").copy_(w[2])
                _param(op, "bias_hh_l0").zero_()
            elif isinstance(op, nn.GRU):
                # Keras gate blocks z, r, h; torch's are r, z, n.
                h = s["out"]

                def order(t: torch.Tensor, h: int = h) -> torch.Tensor:
                    return torch.cat([t[..., h : 2 * h], t[..., :h], t[..., 2 * h :]], dim=-1)

                _param(op, "weight_ih_l0").copy_(order(w[0]).T)
                _param(op, "weight_hh_l0").copy_(order(w[1]).T)
                _param(op, "bias_ih_l0").copy_(order(w[2][0]))
                _param(op, "bias_hh_l0").copy_(order(w[2][1]))
            elif layer.alpha is not None:
                layer.alpha.copy_(w[0])
            layers.append(layer)
    return layers


def _file_rate(data: dict[str, Any], source: str) -> int | None:
    meta = data.get("metadata")
    value = meta.get("samplerate") if isinstance(meta, dict) else None
    if value is None:
        value = data.get("samplerate")
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise CheckpointError(f"{source}: metadata.samplerate {value!r} is not a number") from None
    return check_sample_rate(value, source)


def load(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    config: Any = None,
    max_bytes: int | None = None,
) -> EffectModel:
    """Load an RTNeural / AIDA-X JSON model as a streaming ``EffectModel``."""
    started = time.perf_counter()
    p = Path(path)
    data = read_json(p, max_bytes)
    if not looks_like(data):
        raise CheckpointError(f"{p.name}: not an RTNeural file (needs 'in_shape' and 'layers' lists)")
    n_in, plan = _plan(data, p.name)
    skip = data.get("in_skip", 0)
    if skip not in (0, 1) or isinstance(skip, bool):
        raise CheckpointError(f"{p.name}: in_skip {skip!r} is not 0 or 1")
    in_gain, out_gain = _decibels(data, "in_gain", p.name), _decibels(data, "out_gain", p.name)
    stored = _file_rate(data, p.name)
    warnings: list[str] = []
    if sample_rate is not None:
        rate = check_sample_rate(sample_rate, p.name)
    elif stored is not None:
        rate = stored
    else:
        rate = DEFAULT_SAMPLE_RATE
        warnings.append("no sample rate stored; assumed 48000 Hz (AIDA-X)")
    module = RTNeuralModel(_build(plan), n_in - 1, in_gain, out_gain, bool(skip))
    recurrent = any(s["kind"] in ("lstm", "gru") for s in plan)
    rf = 1 + sum((s.get("kernel", 1) - 1) * s.get("dilation", 1) for s in plan)
    label = "+".join(f"{s['kind']}-{s['out']}" for s in plan if s["kind"] != "activation")
    knobs = [f"param{i + 1}" for i in range(n_in - 1)]
    meta = data.get("metadata")
    return make_model(
        path=p,
        module=module,
        sample_rate=rate,
        fmt="rtneural",
        architecture=label,
        stateful=recurrent,
        receptive_field=1 if recurrent else rf,
        knob_names=knobs,
        knob_ranges=[(0.0, 1.0)] * len(knobs),
        metadata={
            "in_skip": int(skip),
            "in_gain_db": data.get("in_gain", 0.0),
            "out_gain_db": data.get("out_gain", 0.0),
            "file_metadata": meta if isinstance(meta, dict) else {},
        },
        started=started,
        warnings=warnings,
    )
