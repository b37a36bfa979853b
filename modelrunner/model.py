"""The one in-memory model type every checkpoint format is loaded into.

``EffectModel.module`` follows a small streaming protocol so that renderers never need
to know the architecture::

    y, state = module(x, knobs, state=None)

* ``x``: float32 ``(batch, frames)`` mono audio at ``sample_rate``;
* ``knobs``: float32 ``(batch, K)`` knob values in the model's own units (``K`` may be 0);
* ``state``: ``None`` (silence before the start) or whatever the previous call returned;
* ``y``: float32 ``(batch, frames)``.

The module is causal and calling it over consecutive chunks while carrying ``state``
gives the same output as one call over the whole signal. Recurrent models carry their
hidden (and cell) state; convolutional models carry, per layer, the last
``(kernel_size - 1) * dilation`` input frames of that layer. Every tensor in a state has
the batch in dimension 0 or 1 and is detached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .knobs import check_knobs


def fast_path(module: torch.nn.Module) -> Callable[..., tuple[torch.Tensor, Any]]:
    """The module's ``fast_forward`` where it has one (the same outputs and state as
    ``forward`` to float rounding, checked in the tests), else the module itself."""
    return getattr(module, "fast_forward", None) or module


@dataclass
class EffectModel:
    """A loaded neural audio effect: a streaming torch module plus what a renderer needs."""

    module: torch.nn.Module
    sample_rate: int
    knob_names: list[str]
    knob_ranges: list[tuple[float, float]]
    stateful: bool
    receptive_field: int
    format: str
    architecture: str
    parameter_count: int
    metadata: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    knob_defaults: list[float] | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable description of everything but the module."""
        summary: dict[str, Any] = _jsonable(
            {
                "format": self.format,
                "architecture": self.architecture,
                "sample_rate": int(self.sample_rate),
                "knob_names": list(self.knob_names),
                "knob_ranges": [[float(lo), float(hi)] for lo, hi in self.knob_ranges],
                "knob_defaults": self.default_knobs(),
                "stateful": bool(self.stateful),
                "receptive_field": int(self.receptive_field),
                "parameter_count": int(self.parameter_count),
                "metadata": self.metadata,
                "provenance": self.provenance,
            }
        )
        return summary

    @property
    def device(self) -> torch.device:
        """Where the module's weights are (``cpu`` for a module without any); renders run there."""
        return module_device(self.module)

    def to(self, device: torch.device | str) -> EffectModel:
        """Move the module's weights to ``device`` (in place); returns the model. A render on
        a device other than the CPU runs PyTorch's kernels there (``modelrunner.device``)."""
        self.module.to(torch.device(device))
        return self

    def streaming_call(self) -> Callable[..., tuple[torch.Tensor, Any]]:
        """What chunked renders call (``fast_path`` of the module). The reference pass
        (``render.reference_forward``) always calls the module itself."""
        return fast_path(self.module)

    def default_knobs(self) -> dict[str, float]:
        """Knob settings used when none are given: the stored default, else mid-range."""
        out: dict[str, float] = {}
        for i, (name, (lo, hi)) in enumerate(zip(self.knob_names, self.knob_ranges)):
            if self.knob_defaults is not None and i < len(self.knob_defaults):
                out[name] = float(self.knob_defaults[i])
            else:
                out[name] = (float(lo) + float(hi)) / 2.0
        return out

    def knob_tensor(self, knobs: dict[str, float] | None, batch: int = 1) -> torch.Tensor:
        """Return float32 ``(batch, K)`` knob values; missing knobs take their default.

        An unknown knob name, a non-finite value or a value outside the knob's range
        raises ``RenderError`` naming the knob.
        """
        values = self.default_knobs() | check_knobs(self.knob_names, self.knob_ranges, knobs)
        row = torch.tensor([values[n] for n in self.knob_names], dtype=torch.float32)
        return row.reshape(1, len(self.knob_names)).repeat(int(batch), 1)


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of the module's first parameter or buffer, else the CPU."""
    for parameter in module.parameters():
        return parameter.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
    except ImportError:  # pragma: no cover
        pass
    return str(value)
