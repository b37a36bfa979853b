"""Pruned recurrent models: sparsity, dead hidden units, and the equivalent smaller LSTM.

Südholt, Wright, Erkut & Välimäki, "Pruning deep neural network models of guitar
distortion effects", IEEE/ACM TASLP 31, 2023: magnitude pruning (``torch.nn.utils.prune``,
which stores ``X_orig`` and ``X_mask``) removes most of an LSTM amp model's weights;
when every outgoing weight of a hidden unit is pruned the unit can be removed from the
network, and the smaller dense model runs faster.

**Dead unit** (definition used here). Hidden unit ``j`` of recurrent layer ``l`` is dead
when every weight that reads its output ``h_j`` is zero: column ``j`` of that layer's
``weight_hh`` (all gates) and column ``j`` of the consumer, i.e. the next layer's
``weight_ih`` or, for the last layer, the output ``Linear`` (``lin.weight``). Then
``h_j`` (and its cell state) never reaches another unit or the output, so deleting the
unit (its gate rows in ``weight_ih``, ``weight_hh`` and the biases, its column in
``weight_hh`` and in the consumer) leaves the output unchanged, up to float rounding.
Units whose *incoming* weights are all pruned are not dead by this definition (their
bias still drives a trajectory that reaches the output) and are only counted.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import torch

from . import safety
from .architectures.recurrent import RecurrentModel
from .errors import CheckpointError
from .model import EffectModel

_HH = re.compile(r"^(?P<prefix>.*?)weight_hh_l(?P<layer>\d+)$")


def _state_dict(obj: Any) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(weights with pruning folded, masks by weight name) from a model, file or mapping."""
    if isinstance(obj, EffectModel):
        obj = obj.module
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    elif isinstance(obj, (str, os.PathLike)):
        p = Path(obj)
        with open(p, "rb") as fh:
            head = fh.read(9)
        if head[8:9] == b"{":
            from safetensors.torch import load_file

            obj = load_file(str(p))
        else:
            obj = safety.torch_load(p)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError("expected a state_dict (names to tensors), an EffectModel, a module or a checkpoint path")
    masks = {k[: -len("_mask")]: v for k, v in obj.items() if k.endswith("_mask")}
    from .formats.lightning import fold_pruning

    return fold_pruning(obj), masks


def _consumer(weights: dict[str, torch.Tensor], prefix: str, layer: int) -> tuple[str, torch.Tensor] | None:
    nxt = f"{prefix}weight_ih_l{layer + 1}"
    if nxt in weights:
        return nxt, weights[nxt]
    parent = prefix.rstrip(".").rsplit(".", 1)
    base = parent[0] + "." if len(parent) == 2 else ""
    for name in (f"{base}lin.weight", f"{base}linear.weight", f"{base}fc.weight"):
        if name in weights:
            return name, weights[name]
    return None


def analyse(obj: Any) -> dict[str, Any]:
    """Sparsity per tensor and overall, and the dead hidden units of each recurrent layer.

    ``obj``: an ``EffectModel``, a module, a state_dict (``X_orig``/``X_mask`` allowed) or
    a checkpoint path. Returns ``{"tensors": {name: {"shape", "sparsity", "masked"}},
    "overall_sparsity", "parameters", "zero_parameters", "layers": [{"layer", "hidden_size",
    "dead_units", "no_input_units"}], "dead_units": {layer: [unit, ...]}, "dead_unit_count"}``.
    """
    weights, masks = _state_dict(obj)
    tensors: dict[str, Any] = {}
    total = zeros = 0
    for name, w in weights.items():
        if not w.is_floating_point() or w.numel() == 0:
            continue
        z = int((w == 0).sum())
        tensors[name] = {"shape": list(w.shape), "sparsity": z / w.numel(), "masked": name in masks}
        total += w.numel()
        zeros += z
    layers: list[dict[str, Any]] = []
    for name, w_hh in weights.items():
        match = _HH.match(name)
        if not match or w_hh.dim() != 2:
            continue
        prefix, layer = match["prefix"], int(match["layer"])
        hidden = w_hh.shape[1]
        consumer = _consumer(weights, prefix, layer)
        if consumer is None or consumer[1].shape[-1] != hidden:
            dead: list[int] = []
            note = "no consumer of this layer's output found; dead units not determined"
        else:
            reads = (w_hh != 0).any(dim=0) | (consumer[1] != 0).any(dim=0)
            dead = [int(j) for j in torch.nonzero(~reads).flatten()]
            note = f"outputs read by {name} and {consumer[0]}"
        w_ih = weights.get(f"{prefix}weight_ih_l{layer}")
        gates = w_hh.shape[0] // hidden
        no_input = []
        if w_ih is not None:
            rows_in = (w_ih != 0).any(dim=1) | (w_hh != 0).any(dim=1)
            no_input = [j for j in range(hidden) if not bool(rows_in[[g * hidden + j for g in range(gates)]].any())]
        layers.append(
            {
                "layer": f"{prefix}l{layer}",
                "hidden_size": hidden,
                "dead_units": dead,
                "no_input_units": no_input,
                "note": note,
            }
        )
    return {
        "tensors": tensors,
        "overall_sparsity": zeros / total if total else 0.0,
        "parameters": total,
        "zero_parameters": zeros,
        "layers": layers,
        "dead_units": {entry["layer"]: entry["dead_units"] for entry in layers},
        "dead_unit_count": sum(len(entry["dead_units"]) for entry in layers),
    }


def compress_lstm(model: EffectModel) -> EffectModel:
    """The same model without its dead hidden units: a dense, smaller ``RecurrentModel``.

    Works for one-layer ``recurrent`` models (LSTM, GRU or RNN; keys ``rec.*``, ``lin.*``).
    The result renders the same output as the pruned model (tested to 1e-5).
    """
    module = model.module
    if not isinstance(module, RecurrentModel):
        raise CheckpointError(f"compress_lstm needs a 'recurrent' model, got {model.architecture!r}")
    if module.rec.num_layers != 1:
        raise CheckpointError("compress_lstm supports one recurrent layer (layers must share one hidden size)")
    report = analyse(module)
    dead = set(report["dead_units"].get("rec.l0", []))
    hidden = module.rec.hidden_size
    live = [j for j in range(hidden) if j not in dead] or [0]
    gates = module.rec.weight_hh_l0.shape[0] // hidden
    rows = torch.tensor([g * hidden + j for g in range(gates) for j in live])
    cols = torch.tensor(live)
    small = RecurrentModel(module.unit_type, len(live), 1, module.num_knobs, module.skip, module.lin.bias is not None)
    sd = module.state_dict()
    new = {
        "rec.weight_ih_l0": sd["rec.weight_ih_l0"][rows],
        "rec.weight_hh_l0": sd["rec.weight_hh_l0"][rows][:, cols],
        "rec.bias_ih_l0": sd["rec.bias_ih_l0"][rows],
        "rec.bias_hh_l0": sd["rec.bias_hh_l0"][rows],
        "lin.weight": sd["lin.weight"][:, cols],
    }
    if len(live) == 1 and live[0] in dead:
        new["lin.weight"] = torch.zeros_like(new["lin.weight"])  # every unit was dead
    if "lin.bias" in sd:
        new["lin.bias"] = sd["lin.bias"]
    small.load_state_dict(new, strict=True)
    safety.freeze(small)
    out = copy.copy(model)
    out.module = small
    out.architecture = f"{small.unit_type}-{len(live)} (compressed from {hidden})"
    out.parameter_count = safety.parameter_count(small)
    out.metadata = dict(
        model.metadata, compressed={"from_hidden": hidden, "to_hidden": len(live), "dropped_units": sorted(dead)}
    )
    return out
