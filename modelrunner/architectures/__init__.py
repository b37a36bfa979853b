"""Registry of the architectures a native or Lightning checkpoint may name.

Each entry builds a streaming module (see :mod:`modelrunner.model`) from a ``params``
dict and the number of knobs; unknown names and unknown or ill-typed parameters raise
``CheckpointError`` naming them.

============  =====================================================  ==================
name          module                                                 params (defaults)
============  =====================================================  ==================
recurrent     :class:`recurrent.RecurrentModel` (Wright et al. 2019)  unit_type "LSTM",
                                                                     hidden_size 32,
                                                                     num_layers 1, skip 1,
                                                                     bias true
tcn           :class:`tcn.TCN` (Steinmetz & Reiss 2022)              channels 32,
                                                                     kernel_size 13,
                                                                     num_blocks 4,
                                                                     dilation_growth 10,
                                                                     dilations null,
                                                                     cond_dim 32
wavenet       :class:`wavenet.WaveNet` (van den Oord et al. 2016)    channels 16,
                                                                     kernel_size 3,
                                                                     dilations null,
                                                                     dilation_depth 10,
                                                                     num_repeat 1
pedalnet      :class:`pedalnet.PedalNetWaveNet` (PedalNetRT)         num_channels 16,
                                                                     dilation_depth 8,
                                                                     num_repeat 1,
                                                                     kernel_size 2
sptmod        :class:`sptmod.SPTMod` (Bourdin et al. 2025)           the reference
                                                                     code's constructor
                                                                     arguments
stn           :class:`stn.StateTrajectoryNetwork` (Parker et al.     state_size 8,
              2019; Peussa et al. 2021)                              hidden_size 16, ...
statematch    :class:`statematch.StateMatchingGRU` (Peussa et al.    hidden_size 16,
              2021)                                                  init_len 256, ...
armlp         :class:`armlp.ARMLP` (autoregressive MLP)              m 16, hidden [32, 32]
============  =====================================================  ==================
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from ..errors import CheckpointError
from .armlp import ARMLP
from .pedalnet import PedalNetWaveNet
from .recurrent import RecurrentModel
from .sptmod import SPTMod
from .statematch import StateMatchingGRU
from .stn import StateTrajectoryNetwork
from .tcn import TCN
from .wavenet import WaveNet

REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "recurrent": RecurrentModel,
    "tcn": TCN,
    "wavenet": WaveNet,
    "pedalnet": PedalNetWaveNet,
    "sptmod": SPTMod,
    "stn": StateTrajectoryNetwork,
    "statematch": StateMatchingGRU,
    "armlp": ARMLP,
}

# Generous bounds so a hostile config cannot ask for a gigantic module.
_MAX_INT = {
    "hidden_size": 4096,
    "num_layers": 16,
    "channels": 1024,
    "num_channels": 1024,
    "kernel_size": 4096,
    "num_blocks": 64,
    "dilation_depth": 24,
    "num_repeat": 16,
    "dilation_growth": 1 << 16,
    "cond_dim": 1024,
}


def build(name: str, params: dict[str, Any] | None, num_knobs: int) -> nn.Module:
    """Construct the registered architecture ``name`` with ``params`` for ``num_knobs`` knobs."""
    if name not in REGISTRY:
        raise CheckpointError(f"unknown architecture {name!r} (known: {', '.join(sorted(REGISTRY))})")
    factory = REGISTRY[name]
    params = dict(params or {})
    accepted = [p for p in inspect.signature(factory).parameters if p != "num_knobs"]
    for key, value in params.items():
        if key not in accepted:
            raise CheckpointError(f"architecture {name!r} has no parameter {key!r} (accepted: {', '.join(accepted)})")
        if key in _MAX_INT:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_INT[key]:
                raise CheckpointError(
                    f"architecture {name!r}: {key}={value!r} must be a whole number in 1..{_MAX_INT[key]}"
                )
        if key == "dilations" and value is not None:
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(d, int) and 1 <= d <= 1 << 16 for d in value)
            ):
                raise CheckpointError(f"architecture {name!r}: dilations must be a non-empty list of positive integers")
    try:
        return factory(num_knobs=int(num_knobs), **params)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"architecture {name!r}: bad parameters ({exc})") from None


def label(name: str, module: nn.Module) -> str:
    """A short human-readable architecture name, e.g. ``LSTM-32`` or ``TCN (4 blocks)``."""
    if isinstance(module, RecurrentModel):
        return f"{module.unit_type}-{module.rec.hidden_size}" + (
            f"x{module.rec.num_layers}" if module.rec.num_layers > 1 else ""
        )
    if isinstance(module, TCN):
        return f"TCN ({len(module.blocks)} blocks)"
    if isinstance(module, PedalNetWaveNet):
        return "PedalNet WaveNet"
    if isinstance(module, WaveNet):
        return f"WaveNet ({len(module.layers)} layers)"
    own = getattr(module, "label", None)
    if callable(own):
        return str(own())
    return name


def is_stateful(module: nn.Module) -> bool:
    """True for recurrent modules (unbounded memory), False for convolutional ones."""
    return isinstance(module, RecurrentModel) or bool(getattr(module, "stateful", False))


def receptive_field(module: nn.Module) -> int:
    """Input frames one output depends on; 1 for recurrent models."""
    return int(getattr(module, "receptive_field", 1)) if not is_stateful(module) else 1


#: While a config is being sized, tensors of up to this many elements are created for real
#: and larger ones on PyTorch's meta device (shape only, no memory). Keeping small tensors
#: real keeps construction-time arithmetic (e.g. fixed interpolation kernels) on the CPU:
#: many meta kernels are Python decompositions whose first use takes seconds.
_PLAN_REAL_ELEMENTS = 1 << 16
# Constructors whose meta kernels are cheap; others are sized from their arguments.
_SHAPED = {"empty", "empty_strided", "empty_permuted", "zeros", "ones", "full", "rand", "randn", "randint"}
# Constructors copying data that already exists in memory.
_FROM_DATA = {"tensor", "as_tensor", "asarray", "scalar_tensor"}


def _range_elements(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """Elements ``torch.arange``/``torch.range`` will create, or None when not computable."""
    try:
        nums = [float(a) for a in args[:3]]
        start, end, step = (0.0, nums[0], 1.0) if len(nums) == 1 else (nums + [1.0])[:3]
        start = float(kwargs.get("start", start))
        end = float(kwargs.get("end", end))
        step = float(kwargs.get("step", step))
        count = math.ceil((end - start) / step) + (1 if func.__name__ == "range" else 0)
    except (TypeError, ValueError, IndexError, ZeroDivisionError, OverflowError):
        return None
    return max(count, 0)


class _SizingMode(TorchFunctionMode):
    """Route every large tensor a constructor creates to the meta device."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = dict(kwargs or {})
        if func in _device_constructors() and kwargs.get("device") is None:
            name = getattr(func, "__name__", "")
            if name in _FROM_DATA:
                return func(*args, **kwargs)
            count = _range_elements(func, args, kwargs) if name in ("arange", "range") else None
            if count is not None and count <= _PLAN_REAL_ELEMENTS:
                return func(*args, **kwargs)
            planned = func(*args, **{**kwargs, "device": "meta"})
            if name not in _SHAPED or planned.numel() > _PLAN_REAL_ELEMENTS:
                return planned
        return func(*args, **kwargs)


def build_plan(name: str, params: dict[str, Any] | None, num_knobs: int) -> nn.Module:
    """Like :func:`build`, but every large tensor lives on the meta device: the module's
    state_dict gives names, shapes and sizes while allocating at most a few small tensors.

    Lets a loader compare what a config declares with what a file holds before the real
    module is allocated.
    """
    try:
        with _SizingMode():
            return build(name, params, num_knobs)
    except RuntimeError:
        # A constructor combined a large (meta) tensor with a small (real) one: size it
        # wholly on the meta device instead.
        with torch.device("meta"):
            return build(name, params, num_knobs)
