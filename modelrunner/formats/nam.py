"""Neural Amp Modeler ``.nam`` files (neural-amp-modeler export, versions 0.5.x to 0.7.x).

A ``.nam`` file is a JSON object: ``version``, ``architecture`` (``Linear``, ``LSTM`` or
``WaveNet`` here), ``config``, a flat list ``weights``, ``sample_rate`` (48 kHz when
absent, as in files written before 0.5.2) and optional ``metadata`` (gear, loudness,
validation ESR...), kept as the model's metadata.

``weights`` is consumed in the order of NeuralAmpModelerCore's constructors (the same
order neural-amp-modeler's ``export_weights`` writes); every convolution weight is
``(out_channels, in_channels, kernel_size)`` flattened row-major:

* ``Linear`` (``receptive_field``, ``bias``): the FIR taps, then the bias.
* ``LSTM`` (``input_size`` 1, ``hidden_size``, ``num_layers``): per layer the matrix
  ``[W_ih | W_hh]`` (``4H x (in + H)``, gates i, f, g, o), the summed bias ``b_ih + b_hh``
  (``4H``), the initial hidden state (``H``) and initial cell state (``H``); then the head
  weights (``H``) and head bias (1).
* ``WaveNet`` (``layers``: layer-array configs, ``head`` must be null, ``head_scale``):
  per layer array the rechannel weights (no bias); per layer the dilated conv weights and
  bias, the input-mixer weights (no bias), the 1x1 weights and bias; then the head
  rechannel weights and, if ``head_bias`` (or ``head.bias`` in 0.7), its bias; finally
  ``head_scale`` itself. Layer arrays use the 0.5.x keys ``head_size``/``head_bias`` or
  the 0.7.x key ``head: {out_channels, kernel_size, bias}``. Later options (FiLM,
  bottleneck, grouped convolutions, head 1x1, condition DSP) are refused by name.

A count of weights different from what the config implies is refused, naming both.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import safety
from ..architectures._streaming import StreamingConvNet
from ..architectures.nam import NamLayerArray, NamLinear, NamLSTM, NamWaveNet
from ..errors import CheckpointError
from ..model import EffectModel
from ._common import check_sample_rate, make_model, read_json

DEFAULT_SAMPLE_RATE = 48_000
KNOWN_VERSIONS = ("0.5.", "0.6.", "0.7.")

# Generous bounds (released NAM WaveNets use 16 channels, 2 arrays of 10 layers); they keep a
# hostile config from asking for a network that is slow even to describe.
_MAX_WAVENET = {"channels": 4096, "kernel_size": 4096, "dilation": 1 << 16, "layers": 1024}

# Options of newer layer-array configs we accept only at their neutral value.
_NEUTRAL = {
    "groups_input": 1,
    "groups_input_mixin": 1,
    "slimmable": None,
}


def load(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    config: Any = None,
    max_bytes: int | None = None,
) -> EffectModel:
    """Load a ``.nam`` file as a streaming ``EffectModel``."""
    started = time.perf_counter()
    p = Path(path)
    data = read_json(p, max_bytes)
    for key in ("architecture", "config", "weights"):
        if key not in data:
            raise CheckpointError(f"{p.name}: not a NAM file (no {key!r})")
    arch = data["architecture"]
    cfg = data["config"]
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{p.name}: NAM 'config' must be an object")
    weights = data["weights"]
    if not isinstance(weights, list) or not all(
        isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights
    ):
        raise CheckpointError(f"{p.name}: NAM 'weights' must be a flat list of numbers")
    flat = torch.tensor(weights, dtype=torch.float64).float()
    if not bool(torch.isfinite(flat).all()):
        bad = int((~torch.isfinite(flat)).nonzero()[0, 0])
        raise CheckpointError(f"{p.name}: weights[{bad}] is NaN or infinite")
    version = str(data.get("version", "unknown"))
    warnings: list[str] = []
    if not version.startswith(KNOWN_VERSIONS):
        warnings.append(f"NAM file version {version} is outside the versions read here (0.5-0.7)")
    try:
        # The config is sized on the meta device first: a small file may declare a huge network.
        with torch.device("meta"):
            plan, name, stateful = _build(arch, cfg, p.name)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{p.name}: bad NAM {arch} config ({type(exc).__name__}: {exc})") from None
    expected = _weight_count(plan)
    safety.check_model_size(expected, flat.numel(), source=p.name)
    if expected != flat.numel():
        raise CheckpointError(f"{p.name}: config implies {expected} weights, file has {flat.numel()}")
    module = _build(arch, cfg, p.name)[0]
    _import_weights(module, flat, p.name)
    if sample_rate is not None:
        rate = check_sample_rate(sample_rate, p.name)
    elif data.get("sample_rate") is not None:
        rate = check_sample_rate(data["sample_rate"], p.name)
    else:
        rate = DEFAULT_SAMPLE_RATE
        warnings.append("no sample_rate in file; assumed 48000 Hz")
    metadata = dict(data.get("metadata") or {})
    metadata["nam_version"] = version
    metadata["nam_config"] = cfg
    rf = module.receptive_field if isinstance(module, StreamingConvNet) and not stateful else 1
    return make_model(
        path=p,
        module=module,
        sample_rate=rate,
        fmt="nam",
        architecture=name,
        stateful=stateful,
        receptive_field=rf,
        metadata=metadata,
        started=started,
        warnings=warnings,
    )


def _build(arch: Any, cfg: dict[str, Any], source: str) -> tuple[nn.Module, str, bool]:
    """The module for ``arch``/``cfg`` with its label and whether it is stateful."""
    if arch == "Linear":
        return _linear(cfg, source), "NAM Linear", False
    if arch == "LSTM":
        module = _lstm(cfg, source)
        return module, f"NAM LSTM-{module.core.hidden_size}", True
    if arch == "WaveNet":
        return _wavenet(cfg, source), "NAM WaveNet", False
    raise CheckpointError(f"{source}: NAM architecture {arch!r} is not supported (Linear, LSTM, WaveNet)")


def _lstm_weight_count(hidden: int, layers: int) -> int:
    """Length of a NAM LSTM's flat weight list (see the module docstring)."""
    per_layer = sum(4 * hidden * ((1 if i == 0 else hidden) + hidden) + 4 * hidden + 2 * hidden for i in range(layers))
    return per_layer + hidden + 1


def _weight_count(module: nn.Module) -> int:
    """How many numbers the ``.nam`` weight list must hold for ``module`` (meta or real)."""
    if isinstance(module, NamLSTM):
        return _lstm_weight_count(module.core.hidden_size, module.core.num_layers)
    return sum(t.numel() for t in _weight_order(module))


def _linear(cfg: dict[str, Any], source: str) -> NamLinear:
    rf = int(cfg["receptive_field"])
    if not 1 <= rf <= 1_000_000:
        raise CheckpointError(f"{source}: Linear receptive_field {rf} is out of range")
    return NamLinear(rf, bool(cfg.get("bias", False)))


def _lstm(cfg: dict[str, Any], source: str) -> NamLSTM:
    if int(cfg.get("input_size", 1)) != 1:
        raise CheckpointError(f"{source}: NAM LSTM with input_size {cfg['input_size']} (parametric) is not supported")
    hidden, layers = int(cfg["hidden_size"]), int(cfg["num_layers"])
    if not (1 <= hidden <= 4096 and 1 <= layers <= 16):
        raise CheckpointError(f"{source}: implausible LSTM sizes hidden_size={hidden}, num_layers={layers}")
    return NamLSTM(hidden, layers)


def _activation_name(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("type", value.get("name"))
    if not isinstance(value, str):
        raise ValueError(f"activation {value!r} is not a name")
    return value


def _wavenet(cfg: dict[str, Any], source: str) -> NamWaveNet:
    if cfg.get("head") is not None:
        raise CheckpointError(f"{source}: NAM WaveNet with a post-stack 'head' is not supported")
    if cfg.get("condition_dsp") is not None:
        raise CheckpointError(f"{source}: NAM WaveNet option 'condition_dsp' is not supported")
    arrays = []
    n_layers = 0
    for i, lc in enumerate(cfg["layers"]):
        for key, neutral in _NEUTRAL.items():
            if lc.get(key, neutral) != neutral:
                raise CheckpointError(f"{source}: NAM WaveNet layer option {key}={lc[key]!r} is not supported")
        channels = int(lc["channels"])
        if int(lc.get("bottleneck", channels)) != channels:
            raise CheckpointError(f"{source}: NAM WaveNet layer option 'bottleneck' is not supported")
        l1 = lc.get("layer_1x1_config") or {}
        if not l1.get("active", True) or l1.get("groups", 1) != 1:
            raise CheckpointError(f"{source}: NAM WaveNet layer option 'layer_1x1_config' {l1} is not supported")
        if (lc.get("head_1x1_config") or {}).get("active", False):
            raise CheckpointError(f"{source}: NAM WaveNet layer option 'head_1x1_config' is not supported")
        for film, fcfg in (lc.get("film_params") or {}).items():
            if (fcfg or {}).get("active", False):
                raise CheckpointError(f"{source}: NAM WaveNet FiLM option {film!r} is not supported")
        gating = lc.get("gating_mode")
        if gating is None:
            gated = bool(lc.get("gated", False))
        elif gating in ("none", "gated"):
            gated = gating == "gated"
        else:
            raise CheckpointError(f"{source}: NAM WaveNet gating_mode {gating!r} is not supported")
        head = lc.get("head")
        if isinstance(head, dict):
            head_out, head_kernel, head_bias = (
                int(head["out_channels"]),
                int(head.get("kernel_size", 1)),
                bool(head["bias"]),
            )
        else:
            head_out, head_kernel, head_bias = int(lc["head_size"]), 1, bool(lc["head_bias"])
        dilations = [int(d) for d in lc["dilations"]]
        kernel = int(lc["kernel_size"])
        input_size, condition_size = int(lc["input_size"]), int(lc["condition_size"])
        if (
            not dilations
            or min(dilations) < 1
            or min(kernel, channels, input_size, condition_size, head_out, head_kernel) < 1
        ):
            raise CheckpointError(f"{source}: NAM WaveNet layer array {i} has bad sizes")
        n_layers += len(dilations)
        if (
            max(channels, input_size, condition_size, head_out) > _MAX_WAVENET["channels"]
            or max(kernel, head_kernel) > _MAX_WAVENET["kernel_size"]
            or max(dilations) > _MAX_WAVENET["dilation"]
            or n_layers > _MAX_WAVENET["layers"]
        ):
            raise CheckpointError(
                f"{source}: NAM WaveNet layer array {i} has implausible sizes (channels {channels}, "
                f"kernel_size {kernel}, {len(dilations)} layers, largest dilation {max(dilations)}; limits "
                + ", ".join(f"{k} {v}" for k, v in _MAX_WAVENET.items())
                + ")"
            )
        arrays.append(
            NamLayerArray(
                input_size,
                condition_size,
                channels,
                kernel,
                dilations,
                _activation_name(lc["activation"]),
                gated,
                head_out,
                head_kernel,
                head_bias,
            )
        )
    if not arrays:
        raise CheckpointError(f"{source}: NAM WaveNet has no layer arrays")
    if arrays[0].rechannel.in_channels != 1 or arrays[-1].head_rechannel.out_channels != 1:
        raise CheckpointError(f"{source}: NAM WaveNet must take and return one channel")
    for a, b in zip(arrays, arrays[1:]):
        if (
            b.rechannel.in_channels != a.rechannel.out_channels
            or a.head_rechannel.out_channels != b.rechannel.out_channels
        ):
            raise CheckpointError(f"{source}: NAM WaveNet layer arrays do not chain (channel counts differ)")
    return NamWaveNet(arrays, 1.0)


def _weight_order(module: nn.Module) -> list[torch.Tensor]:
    """The module's tensors in the order of the ``.nam`` flat weight list."""
    if isinstance(module, NamLinear):
        conv = module.conv
        return [conv.weight] + ([conv.bias] if conv.bias is not None else [])
    if isinstance(module, NamLSTM):
        # Filled specially: [W_ih | W_hh] is one matrix in the file.
        raise AssertionError("LSTM weights are imported by _import_lstm")
    if not isinstance(module, NamWaveNet):
        raise TypeError(f"not a NAM module: {type(module).__name__}")
    order: list[torch.Tensor] = []
    for arr in module.layer_arrays():
        order.append(arr.rechannel.weight)
        for layer in arr.wavenet_layers():
            order += [layer.conv.weight, _bias(layer.conv), layer.input_mixer.weight]
            order += [layer.layer1x1.weight, _bias(layer.layer1x1)]
        order.append(arr.head_rechannel.weight)
        if arr.head_rechannel.bias is not None:
            order.append(arr.head_rechannel.bias)
    order.append(module.head_scale)
    return order


def _bias(conv: nn.Conv1d) -> torch.Tensor:
    """The bias of a convolution NAM's WaveNet layer builds with one."""
    if conv.bias is None:
        raise TypeError("a NAM WaveNet layer convolution without a bias")
    return conv.bias


def _import_weights(module: nn.Module, flat: torch.Tensor, source: str) -> None:
    with torch.no_grad():
        if isinstance(module, NamLSTM):
            _import_lstm(module, flat, source)
            return
        order = _weight_order(module)
        expected = sum(t.numel() for t in order)
        if expected != flat.numel():
            raise CheckpointError(f"{source}: config implies {expected} weights, file has {flat.numel()}")
        i = 0
        for t in order:
            n = t.numel()
            t.copy_(flat[i : i + n].reshape(t.shape))
            i += n


def _import_lstm(module: NamLSTM, flat: torch.Tensor, source: str) -> None:
    core = module.core
    hidden, layers = core.hidden_size, core.num_layers
    expected = _lstm_weight_count(hidden, layers)
    if expected != flat.numel():
        raise CheckpointError(f"{source}: config implies {expected} weights, file has {flat.numel()}")
    i = 0

    def take(n: int) -> torch.Tensor:
        nonlocal i
        out = flat[i : i + n]
        i += n
        return out

    for layer in range(layers):
        n_in = 1 if layer == 0 else hidden
        w = take(4 * hidden * (n_in + hidden)).reshape(4 * hidden, n_in + hidden)
        getattr(core, f"weight_ih_l{layer}").copy_(w[:, :n_in])
        getattr(core, f"weight_hh_l{layer}").copy_(w[:, n_in:])
        getattr(core, f"bias_ih_l{layer}").copy_(take(4 * hidden))
        getattr(core, f"bias_hh_l{layer}").zero_()
        module.initial_hidden[layer].copy_(take(hidden))
        module.initial_cell[layer].copy_(take(hidden))
    module.head.weight.copy_(take(hidden).reshape(1, hidden))
    module.head.bias.copy_(take(1))
    safety.check_finite(dict(module.state_dict()), source=source)
