"""Building blocks shared by the streaming architectures.

Convolutional models stream by giving every dilated convolution its own left context:
the last ``(kernel_size - 1) * dilation`` frames of that layer's input, carried in the
state between calls (the "cached padding" of Steinmetz & Reiss 2022, section 3.2, and of
NeuralAmpModelerCore's ring buffers). A whole-file call and any split into chunks then
give the same output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

State = tuple[torch.Tensor, ...]
M = TypeVar("M", bound=nn.Module)


def members(modules: nn.ModuleList, kind: type[M]) -> list[M]:
    """The modules of ``modules`` as a list of ``kind`` (what a constructor put there)."""
    out: list[M] = []
    for m in modules:
        if not isinstance(m, kind):
            raise TypeError(f"expected {kind.__name__} in the module list, found {type(m).__name__}")
        out.append(m)
    return out


class CausalConv1d(nn.Conv1d):
    """``nn.Conv1d`` without padding, applied causally to ``cat(context, x)``.

    ``x``: ``(batch, in_channels, frames)``; returns ``(batch, out_channels, frames)``.
    """

    @property
    def context(self) -> int:
        """Frames of past input this convolution needs: ``(kernel_size - 1) * dilation``."""
        return (self.kernel_size[0] - 1) * self.dilation[0]


class Caches:
    """Hands each causal convolution its cached context in call order, collecting new ones."""

    def __init__(self, state: State | None, batch: int, like: torch.Tensor) -> None:
        self._old = list(state) if state is not None else None
        self._batch = batch
        self._like = like
        self.new: list[torch.Tensor] = []

    def __call__(self, conv: CausalConv1d, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = conv(x if conv.context == 0 else self.with_context(conv, x))
        return y

    def with_context(self, conv: CausalConv1d, x: torch.Tensor) -> torch.Tensor:
        """``cat(context, x)`` for ``conv`` (``(B, C, context + T)``), keeping the new context."""
        n = conv.context
        full = torch.cat([self._stored(conv, 0).to(x), x], dim=2)
        self.new.append(full[:, :, full.shape[2] - n :].detach())
        return full

    def take(self, conv: CausalConv1d, offset: int = 0) -> torch.Tensor:
        """A copy the caller may overwrite of the context stored for the convolution
        ``offset`` places after the next one (zeros at the start of a stream):
        ``(B, in_channels, context)``, contiguous. ``keep`` then stores the new ones."""
        return self._stored(conv, offset).clone(memory_format=torch.contiguous_format)

    def _stored(self, conv: CausalConv1d, offset: int) -> torch.Tensor:
        """The context stored for the convolution ``offset`` places after the next one."""
        shape = (self._batch, conv.in_channels, conv.context)
        if self._old is None:
            return self._like.new_zeros(shape)
        index = len(self.new) + offset
        if index >= len(self._old) or tuple(self._old[index].shape) != shape:
            raise ValueError("state does not belong to this model or batch size")
        return self._old[index].to(self._like)

    def keep(self, contexts: list[torch.Tensor]) -> None:
        self.new.extend(c.detach() for c in contexts)

    def state(self) -> State:
        return tuple(self.new)


class StreamingConvNet(nn.Module):
    """Base for convolutional models following the ``EffectModel`` streaming protocol.

    Subclasses implement ``_forward(x (B, 1, T), knobs (B, K), caches) -> (B, 1, T)``,
    passing every dilated convolution through ``caches``. With ``state=None`` the model
    hears silence before the start: the input is prefixed with ``receptive_field - 1``
    zeros whose outputs are dropped (``silence_is_input=True``), or each layer starts
    from zero padding of its own input (``silence_is_input=False``, as in models trained
    with per-layer zero padding such as PedalNet).
    """

    silence_is_input: bool = True

    @property
    def receptive_field(self) -> int:
        return 1 + sum(m.context for m in self.modules() if isinstance(m, CausalConv1d))

    def forward(
        self, x: torch.Tensor, knobs: torch.Tensor | None = None, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        return self._stream(self._forward, x, knobs, state)

    def _stream(
        self,
        body: Callable[[torch.Tensor, torch.Tensor, Caches], torch.Tensor],
        x: torch.Tensor,
        knobs: torch.Tensor | None,
        state: State | None,
    ) -> tuple[torch.Tensor, State]:
        """The streaming protocol around ``body`` (``_forward`` or a faster equivalent)."""
        batch = x.shape[0]
        if knobs is None:
            knobs = x.new_zeros(batch, 0)
        skip = 0
        if state is None and self.silence_is_input and self.receptive_field > 1:
            skip = self.receptive_field - 1
            x = torch.cat([x.new_zeros(batch, skip), x], dim=1)
        caches = Caches(state, batch, x)
        y = body(x[:, None, :], knobs, caches)[:, 0, :]
        return y[:, skip:], caches.state()

    def _forward(self, x: torch.Tensor, knobs: torch.Tensor, caches: Caches) -> torch.Tensor:
        raise NotImplementedError


_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "fasttanh": nn.Tanh,
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "hardtanh": nn.Hardtanh,
    "leakyrelu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "softsign": nn.Softsign,
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    """An activation module from its (case-insensitive) torch class name."""
    try:
        kind = _ACTIVATIONS[name.lower().replace("_", "")]
    except KeyError:
        raise ValueError(f"unknown activation {name!r} (known: {', '.join(sorted(_ACTIVATIONS))})") from None
    return kind()


def whole_number(name: str, value: object, top: int) -> int:
    """A constructor argument that must be an ``int`` in ``1..top`` (``bool`` is refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise ValueError(f"{name} must be a whole number in 1..{top}, got {value!r}")
    return value


def knob_matrix(x: torch.Tensor, knobs: torch.Tensor | None, num_knobs: int) -> torch.Tensor:
    """The knobs of a forward call as ``(B, num_knobs)``: ``None`` means no knobs."""
    batch = x.shape[0]
    if knobs is None:
        knobs = x.new_zeros(batch, 0)
    if tuple(knobs.shape) != (batch, num_knobs):
        raise ValueError(f"knobs must have shape ({batch}, {num_knobs})")
    return knobs
