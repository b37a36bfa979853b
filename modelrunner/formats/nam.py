"""Neural Amp Modeler ``.nam`` files (neural-amp-modeler export, versions 0.5.x to 0.7.x).

A ``.nam`` file is a JSON object: ``version``, ``architecture`` (``Linear``, ``LSTM``,
``WaveNet`` or ``SlimmableContainer`` here), ``config``, a flat list ``weights``,
``sample_rate`` (48 kHz when absent, as in files written before 0.5.2) and optional
``metadata`` (gear, loudness, validation ESR...), kept as the model's metadata.

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
  the 0.7.x key ``head: {out_channels, kernel_size, bias}``.
  ``condition_dsp`` (0.6): a nested WaveNet ``.nam`` object with its own weights whose
  output channels are every layer's condition (``condition_size`` must match).
  ``slimmable: {method: slice_channels_uniform, kwargs: {allowed_channels}}`` (0.7): read
  at full size, or cut to ``config={"slimmable_size": v}`` as NeuralAmpModelerCore's
  ``slimmable.cpp`` does (leading rows and columns of every weight).
  Per-layer ``gating_mode`` ("none"/"gated", once or a list), per-layer ``activation``
  lists (LeakyReLU with its ``negative_slope``), per-layer ``kernel_sizes``, ``layer1x1``
  active and ungrouped, ``head1x1`` inactive, FiLM blocks inactive, ``bottleneck`` equal
  to ``channels`` and ``groups_input``/``groups_input_mixin`` 1 are read: this is what
  the A2 files (NeuralAmpModelerCore ``example_models/A2.nam``: a ``SlimmableContainer``
  of two such WaveNets) use. Any other value of these keys (the further options of
  ``wavenet_a2_max.nam``), ``gating_mode`` "blended", a non-sigmoid
  ``secondary_activation``, activation parameters other than LeakyReLU's and a
  post-stack ``head`` are refused under the key the file carries.
* ``SlimmableContainer`` (``submodels``: ``{max_value, model}`` sorted by ``max_value``,
  the last >= 1.0; top-level weights unused): size ``v`` runs the first submodel with
  ``v < max_value``; without a size the last one, as NeuralAmpModelerCore does. Every
  submodel is checked (sizes on the meta device, weight counts); only that one is built.

A count of weights different from what the config implies is refused, naming both.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import limits, safety
from ..architectures._streaming import StreamingConvNet
from ..architectures.nam import NamActivation, NamLayerArray, NamLinear, NamLSTM, NamWaveNet, layer_activation
from ..errors import CheckpointError
from ..model import EffectModel
from ._common import check_sample_rate, make_model, read_json

DEFAULT_SAMPLE_RATE = 48_000
KNOWN_VERSIONS = ("0.5.", "0.6.", "0.7.")

# Generous bounds (released NAM WaveNets use 16 channels, 2 arrays of 10 layers); they keep a
# hostile config from asking for a network that is slow even to describe.
_MAX_WAVENET = {"channels": 4096, "kernel_size": 4096, "dilation": 1 << 16, "layers": 1024}


def load(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    config: Any = None,
    max_bytes: int | None = None,
) -> EffectModel:
    """Load a ``.nam`` file as a streaming ``EffectModel``.

    ``config`` may be ``{"slimmable_size": v}`` (or a JSON file holding it), ``0 <= v <= 1``: the size a
    slimmable model runs at (NeuralAmpModelerCore ``SetSlimmableSize``). Without it a
    ``SlimmableContainer`` runs its last (full-size) submodel and a slimmable WaveNet its
    full channel counts, as NeuralAmpModelerCore does before a size is set.
    """
    started = time.perf_counter()
    p = Path(path)
    data = read_json(p, max_bytes)
    size = _slimmable_size(config, p.name)
    version = str(data.get("version", "unknown"))
    warnings: list[str] = []
    if not version.startswith(KNOWN_VERSIONS):
        warnings.append(f"NAM file version {version} is outside the versions read here (0.5-0.7)")
    module, name, stateful, chosen = _model(data, p.name, size, 0)
    if sample_rate is not None:
        rate = check_sample_rate(sample_rate, p.name)
    elif chosen.get("sample_rate") is not None:
        rate = check_sample_rate(chosen["sample_rate"], p.name)
    else:
        rate = DEFAULT_SAMPLE_RATE
        warnings.append("no sample_rate in file; assumed 48000 Hz")
    metadata = dict(data.get("metadata") or chosen.get("metadata") or {})
    metadata["nam_version"] = version
    metadata["nam_config"] = chosen.get("config")
    if _is_slimmable(data):
        metadata["nam_slimmable"] = {
            "slimmable_size": size,
            "runs": name,
            "note": (
                "full size (the last submodel, every channel), as NeuralAmpModelerCore runs it before a size is set"
                if size is None
                else f"chosen with slimmable_size={size:g}"
            )
            + "; choose with config={'slimmable_size': 0..1}",
        }
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


def _is_slimmable(data: dict[str, Any]) -> bool:
    """A ``SlimmableContainer`` or a WaveNet with a ``slimmable`` layer array."""
    cfg = data.get("config")
    if data.get("architecture") == "SlimmableContainer":
        return True
    layers = cfg.get("layers") if isinstance(cfg, dict) else None
    return isinstance(layers, list) and any(isinstance(lc, dict) and lc.get("slimmable") for lc in layers)


_MAX_NESTING = 4  # a container or condition_dsp inside another, at most this deep
_MAX_SUBMODELS = 16


def _slimmable_size(config: Any, source: str) -> float | None:
    """``config["slimmable_size"]``; ``config`` is a dict or the path of a JSON file holding one."""
    if config is None:
        return None
    if isinstance(config, (str, os.PathLike)):
        config = read_json(Path(config), None)
    if not isinstance(config, dict) or set(config) - {"slimmable_size"}:
        raise CheckpointError(f"{source}: a NAM file takes config={{'slimmable_size': 0..1}} only, not {config!r}")
    value = config.get("slimmable_size")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise CheckpointError(f"{source}: slimmable_size must be a number in 0..1, got {value!r}")
    return float(value)


def _flat_weights(weights: Any, source: str) -> torch.Tensor:
    if not isinstance(weights, list) or not all(
        isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights
    ):
        raise CheckpointError(f"{source}: NAM 'weights' must be a flat list of numbers")
    flat = torch.tensor(weights, dtype=torch.float64, device="cpu").float()
    if not bool(torch.isfinite(flat).all()):
        bad = int((~torch.isfinite(flat)).nonzero()[0, 0])
        raise CheckpointError(f"{source}: weights[{bad}] is NaN or infinite")
    return flat


def _model(
    data: Any, source: str, size: float | None, depth: int, *, condition: bool = False
) -> tuple[nn.Module, str, bool, dict[str, Any]]:
    """The module of one NAM model object (the file, a submodel or a ``condition_dsp``), its
    label, whether it is stateful, and the model object that runs (a container's submodel).

    Under ``torch.device("meta")`` only sizes and weight counts are checked."""
    if depth > _MAX_NESTING:
        raise CheckpointError(f"{source}: NAM models nested more than {_MAX_NESTING} deep")
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: a NAM model must be a JSON object")
    for key in ("architecture", "config"):
        if key not in data:
            raise CheckpointError(f"{source}: not a NAM file (no {key!r})")
    arch = data["architecture"]
    cfg = data["config"]
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{source}: NAM 'config' must be an object")
    if arch == "SlimmableContainer" and not condition:
        return _container(cfg, data, source, size, depth)
    if "weights" not in data:
        raise CheckpointError(f"{source}: not a NAM file (no 'weights')")
    flat = _flat_weights(data["weights"], source)
    try:
        # The config is sized on the meta device first: a small file may declare a huge network.
        with torch.device("meta"):
            plan, name, stateful = _build(arch, cfg, source, depth, condition)
        expected = _weight_count(plan)
        safety.check_model_size(expected, flat.numel(), source=source)
        if expected != flat.numel():
            raise CheckpointError(f"{source}: config implies {expected} weights, file has {flat.numel()}")
        if torch.get_default_device().type == "meta":
            return plan, name, stateful, data
        module = _build(arch, cfg, source, depth, condition)[0]
        _import_weights(module, flat, source)
        if isinstance(module, NamWaveNet) and size is not None:
            module, name = _slimmed(module, cfg, size, source, name)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{source}: bad NAM {arch} config ({type(exc).__name__}: {exc})") from None
    return module, name, stateful, data


def _container(
    cfg: dict[str, Any], data: dict[str, Any], source: str, size: float | None, depth: int
) -> tuple[nn.Module, str, bool, dict[str, Any]]:
    """NeuralAmpModelerCore's ``SlimmableContainer`` (``container.cpp``): submodels sorted by
    ``max_value``, the last covering 1.0; size ``v`` runs the first with ``v < max_value``,
    no size the last. Every submodel is checked; only the one that runs is built."""
    subs = cfg.get("submodels")
    if not isinstance(subs, list) or not 1 <= len(subs) <= _MAX_SUBMODELS:
        raise CheckpointError(f"{source}: SlimmableContainer 'submodels' must be a list of 1..{_MAX_SUBMODELS} models")
    bounds: list[float] = []
    for i, entry in enumerate(subs):
        bound = entry.get("max_value") if isinstance(entry, dict) else None
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
            raise CheckpointError(f"{source}: SlimmableContainer submodels[{i}] needs a numeric 'max_value'")
        if bounds and bound <= bounds[-1]:
            raise CheckpointError(f"{source}: SlimmableContainer submodels must ascend in 'max_value'")
        bounds.append(float(bound))
    if bounds[-1] < 1.0:
        raise CheckpointError(f"{source}: SlimmableContainer's last submodel 'max_value' must be >= 1.0")
    rate = data.get("sample_rate")
    for i, entry in enumerate(subs):
        sub = entry.get("model")
        sub_rate = sub.get("sample_rate") if isinstance(sub, dict) else None
        if rate is not None and sub_rate is not None and sub_rate != rate:
            raise CheckpointError(f"{source}: SlimmableContainer submodels[{i}] 'sample_rate' {sub_rate} is not {rate}")
        with torch.device("meta"):
            _model(sub, f"{source} submodels[{i}]", None, depth + 1)
    index = len(subs) - 1 if size is None else next(i for i, b in enumerate(bounds) if size < b or i == len(bounds) - 1)
    module, name, stateful, chosen = _model(subs[index]["model"], f"{source} submodels[{index}]", None, depth + 1)
    label = f"NAM SlimmableContainer, submodel {index + 1} of {len(subs)} (max_value {bounds[index]:g}): {name}"
    if chosen.get("sample_rate") is None and rate is not None:
        chosen = {**chosen, "sample_rate": rate}
    return module, label, stateful, chosen


def _build(
    arch: Any, cfg: dict[str, Any], source: str, depth: int, condition: bool = False
) -> tuple[nn.Module, str, bool]:
    """The module for ``arch``/``cfg`` with its label and whether it is stateful."""
    if arch == "Linear":
        return _linear(cfg, source), "NAM Linear", False
    if arch == "LSTM":
        module = _lstm(cfg, source)
        return module, f"NAM LSTM-{module.core.hidden_size}", True
    if arch == "WaveNet":
        net = _wavenet(cfg, source, depth, condition)
        return net, "NAM WaveNet" + (" with condition_dsp" if net.condition_dsp is not None else ""), False
    raise CheckpointError(
        f"{source}: NAM architecture {arch!r} is not supported (Linear, LSTM, WaveNet, SlimmableContainer)"
    )


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
    limits.at_most("receptive_field", rf, source=source, field="config.receptive_field")
    return NamLinear(rf, bool(cfg.get("bias", False)))


def _lstm(cfg: dict[str, Any], source: str) -> NamLSTM:
    if int(cfg.get("input_size", 1)) != 1:
        raise CheckpointError(f"{source}: NAM LSTM with input_size {cfg['input_size']} (parametric) is not supported")
    hidden, layers = int(cfg["hidden_size"]), int(cfg["num_layers"])
    if not (1 <= hidden <= 4096 and 1 <= layers <= 16):
        raise CheckpointError(f"{source}: implausible LSTM sizes hidden_size={hidden}, num_layers={layers}")
    limits.at_most("hidden_size", hidden, source=source, field="config.hidden_size")
    limits.at_most("layers", layers, source=source, field="config.num_layers")
    return NamLSTM(hidden, layers)


def _activation_name(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("type", value.get("name"))
    if not isinstance(value, str):
        raise ValueError(f"activation {value!r} is not a name")
    return value


def _activation(value: Any, refuse: Callable[[str], CheckpointError]) -> NamActivation:
    """A layer's ``activation`` entry: a name, or an object whose parameters are read
    (LeakyReLU's ``negative_slope``); any other parameter is refused by name, never
    replaced by torch's default."""
    name = _activation_name(value)
    if isinstance(value, dict):
        try:
            layer_activation(value)
        except ValueError:
            raise refuse(f"activation {value!r} (its parameters)") from None
        return dict(value)
    return name


_FILMS = (
    "conv_pre_film",
    "conv_post_film",
    "input_mixin_pre_film",
    "input_mixin_post_film",
    "activation_pre_film",
    "activation_post_film",
    "layer1x1_post_film",
    "head1x1_post_film",
)


def _per_layer(lc: dict[str, Any], key: str, n: int) -> list[Any]:
    """A layer-array option given once or as a list with one entry per layer."""
    value = lc[key]
    if isinstance(value, list):
        if len(value) != n:
            raise ValueError(f"'{key}' has {len(value)} entries for {n} layers")
        return value
    return [value] * n


def _layer_options(lc: dict[str, Any], i: int, source: str) -> tuple[list[int], list[NamActivation], list[bool]]:
    """Kernel sizes, activations and gating of layer array ``i``; options this loader cannot
    render exactly are refused under the key a ``.nam`` file carries (NeuralAmpModelerCore
    ``wavenet::parse_config_json``)."""

    def refuse(what: str) -> CheckpointError:
        return CheckpointError(f"{source}: NAM WaveNet layer array {i}: {what} is not supported")

    for key in ("groups_input", "groups_input_mixin"):
        if lc.get(key, 1) != 1:
            raise refuse(f"{key}={lc[key]!r} (grouped convolution)")
    channels = int(lc["channels"])
    if int(lc.get("bottleneck", channels)) != channels:
        raise refuse(f"bottleneck={lc['bottleneck']!r} (differs from channels {channels})")
    l1 = lc.get("layer1x1")
    if l1 is not None and (not isinstance(l1, dict) or l1.get("active", True) is not True or l1.get("groups", 1) != 1):
        raise refuse(f"layer1x1={l1!r} (only an active, ungrouped layer1x1 is read)")
    for key in ("head1x1", "head_1x1"):  # NeuralAmpModelerCore reads both spellings
        h1 = lc.get(key)
        if h1 is not None and (not isinstance(h1, dict) or h1.get("active", False) is not False):
            raise refuse(f"{key}={h1!r} (a per-layer head 1x1)")
    for key in _FILMS:
        film = lc.get(key)
        if film is None or film is False or (isinstance(film, dict) and film.get("active", True) is False):
            continue
        raise refuse(f"FiLM block {key}={film!r}")
    n = len(lc["dilations"])
    if "kernel_sizes" in lc:
        # 0.7 (A2 files): one kernel size per layer, here differing (6 and 15).
        sizes = lc["kernel_sizes"]
        if (
            "kernel_size" in lc
            or not isinstance(sizes, list)
            or len(sizes) != n
            or not all(isinstance(k, int) and not isinstance(k, bool) for k in sizes)
        ):
            raise refuse(f"kernel_sizes={sizes!r} (one whole number per layer)")
        kernels = [int(k) for k in sizes]
    else:
        kernels = [int(lc["kernel_size"])] * n
    acts = [_activation(a, refuse) for a in _per_layer(lc, "activation", n)]
    if "gating_mode" in lc:
        modes = _per_layer(lc, "gating_mode", n)
        for mode in modes:
            if mode not in ("none", "gated"):
                raise refuse(f"gating_mode {mode!r}")
        gated = [mode == "gated" for mode in modes]
    else:
        gated = [bool(lc.get("gated", False))] * n
    if any(gated) and "secondary_activation" in lc:
        seconds = _per_layer(lc, "secondary_activation", n)
        if any(g and _activation_name(a).lower() != "sigmoid" for g, a in zip(gated, seconds)):
            raise refuse(f"secondary_activation={lc['secondary_activation']!r} (gates other than Sigmoid)")
    slim = lc.get("slimmable")
    if slim is not None:
        _allowed_channels(slim, channels, i, source)
    return kernels, acts, gated


def _allowed_channels(slim: Any, channels: int, i: int, source: str) -> list[int]:
    """The channel counts of a ``slimmable`` layer array (``slice_channels_uniform``)."""
    if not isinstance(slim, dict) or slim.get("method") != "slice_channels_uniform":
        method = slim.get("method") if isinstance(slim, dict) else slim
        raise CheckpointError(
            f"{source}: NAM WaveNet layer array {i}: slimmable method {method!r} is not supported "
            "(slice_channels_uniform)"
        )
    kwargs = slim.get("kwargs") or {}
    allowed = kwargs.get("allowed_channels", list(range(1, channels + 1)))
    if (
        not isinstance(allowed, list)
        or not allowed
        or not all(isinstance(c, int) and not isinstance(c, bool) for c in allowed)
        or any(b <= a for a, b in zip(allowed, allowed[1:]))
        or allowed[0] < 1
        or allowed[-1] != channels
    ):
        raise CheckpointError(
            f"{source}: NAM WaveNet layer array {i}: slimmable allowed_channels {allowed!r} must ascend "
            f"from 1 and end at channels ({channels})"
        )
    return list(allowed)


def _wavenet(cfg: dict[str, Any], source: str, depth: int, condition: bool) -> NamWaveNet:
    """NAM's WaveNet; ``condition``: it is another's ``condition_dsp`` (any output channels)."""
    if cfg.get("head") is not None:
        raise CheckpointError(f"{source}: NAM WaveNet with a post-stack 'head' is not supported")
    if cfg.get("in_channels", 1) != 1:
        raise CheckpointError(f"{source}: NAM WaveNet in_channels={cfg['in_channels']!r} is not supported (1)")
    condition_dsp: NamWaveNet | None = None
    if cfg.get("condition_dsp") is not None:
        inner = _model(cfg["condition_dsp"], f"{source} condition_dsp", None, depth + 1, condition=True)[0]
        if not isinstance(inner, NamWaveNet):
            raise CheckpointError(f"{source}: NAM 'condition_dsp' must be a WaveNet (it is {type(inner).__name__})")
        condition_dsp = inner
    arrays = []
    n_layers = 0
    # What rendering needs, from the declared sizes: the receptive field and each layer's
    # streaming state (channels x (kernel_size - 1) x dilation past samples).
    rf = 1
    budget = limits.Budget(source)
    for i, lc in enumerate(cfg["layers"]):
        kernels, acts, gated = _layer_options(lc, i, source)
        kernel = max(kernels)
        channels = int(lc["channels"])
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
        input_size, condition_size = int(lc["input_size"]), int(lc["condition_size"])
        if (
            not dilations
            or min(dilations) < 1
            or min(*kernels, channels, input_size, condition_size, head_out, head_kernel) < 1
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
        where = f"config.layers[{i}]"
        widest = max(channels, input_size, condition_size, head_out)
        limits.at_most("channels", widest, source=source, field=where, what=f"declares {widest} channels")
        limits.at_most("layers", n_layers, source=source, field=f"{where}.dilations", what=f"make {n_layers} layers")
        span = sum((k - 1) * d for k, d in zip(kernels, dilations))
        rf += span + head_kernel - 1
        shown = f" {kernel}" if len(set(kernels)) == 1 else f"s up to {kernel}"
        what = f"with kernel_size{shown} bring the receptive field to {rf} samples"
        limits.at_most("receptive_field", rf, source=source, field=f"{where}.dilations", what=what)
        what = f"need {4 * channels * span} bytes of streaming state ({channels} channels x {span} samples)"
        budget.charge("model_bytes", 4 * channels * span, field=f"{where}.dilations", what=what)
        arrays.append(
            NamLayerArray(
                input_size,
                condition_size,
                channels,
                kernels,
                dilations,
                acts,
                gated,
                head_out,
                head_kernel,
                head_bias,
            )
        )
    if not arrays:
        raise CheckpointError(f"{source}: NAM WaveNet has no layer arrays")
    if arrays[0].rechannel.in_channels != 1 or (not condition and arrays[-1].head_rechannel.out_channels != 1):
        raise CheckpointError(f"{source}: NAM WaveNet must take and return one channel")
    if condition_dsp is not None:
        given = condition_dsp.layer_arrays()[-1].head_rechannel.out_channels
        for i, arr in enumerate(arrays):
            if arr.wavenet_layers()[0].input_mixer.in_channels != given:
                raise CheckpointError(
                    f"{source}: NAM WaveNet layer array {i} condition_size differs from its "
                    f"condition_dsp's {given} output channels"
                )
    for a, b in zip(arrays, arrays[1:]):
        if (
            b.rechannel.in_channels != a.rechannel.out_channels
            or a.head_rechannel.out_channels != b.rechannel.out_channels
        ):
            raise CheckpointError(f"{source}: NAM WaveNet layer arrays do not chain (channel counts differ)")
    return NamWaveNet(arrays, 1.0, condition_dsp)


def _slimmed(net: NamWaveNet, cfg: dict[str, Any], size: float, source: str, name: str) -> tuple[NamWaveNet, str]:
    """A slimmable WaveNet at ``size`` (NeuralAmpModelerCore ``slimmable.cpp``): each
    slimmable array runs ``allowed[min(floor(size * n), n - 1)]`` channels, the leading
    rows and columns of every weight; the next array's input and this array's head output
    follow. ``net`` itself when every array keeps its channels."""
    layers = cfg["layers"]
    widths = []
    for i, lc in enumerate(layers):
        full = int(lc["channels"])
        if lc.get("slimmable") is None:
            widths.append(full)
            continue
        allowed = _allowed_channels(lc["slimmable"], full, i, source)
        widths.append(allowed[min(math.floor(size * len(allowed)), len(allowed) - 1)])
    if widths == [int(lc["channels"]) for lc in layers]:
        return net, name
    slim_layers = []
    for i, lc in enumerate(layers):
        if "head" in lc and isinstance(lc["head"], dict) and int(lc["head"].get("kernel_size", 1)) != 1:
            raise CheckpointError(f"{source}: NAM WaveNet layer array {i}: slimming with a head kernel_size > 1")
        new = {**lc, "channels": widths[i], "slimmable": None}
        if i > 0:
            new["input_size"] = widths[i - 1]
        if i + 1 < len(layers):
            if isinstance(lc.get("head"), dict):
                new["head"] = {**lc["head"], "out_channels": widths[i + 1]}
            else:
                new["head_size"] = widths[i + 1]
        slim_layers.append(new)
    slim = _wavenet({**cfg, "layers": slim_layers}, source, 0, False)
    slim.condition_dsp = net.condition_dsp
    with torch.no_grad():
        for small, big in zip(_weight_order(slim), _weight_order(net)):
            small.copy_(big[tuple(slice(0, n) for n in small.shape)])
    return slim, f"{name}, slimmed to channels {widths}"


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
