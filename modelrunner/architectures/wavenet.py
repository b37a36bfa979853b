"""Gated WaveNet with residual and skip connections and global knob conditioning.

van den Oord et al., "WaveNet: a generative model for raw audio", arXiv:1609.03499
(2016), section 2.3-2.5 (gated activation ``tanh(W_f * x + V_f k) * sigmoid(W_g * x + V_g k)``
with global conditioning ``k``), used for guitar effects by Damskägg et al., "Real-time
modeling of audio distortion circuits with deep learning", SMC 2019 (PedalNet, NAM).
``(B, T), (B, K) -> (B, T)``.
"""

from __future__ import annotations

import torch
from torch import nn

from ._streaming import Caches, CausalConv1d, StreamingConvNet, members


class WaveNetLayer(nn.Module):
    """Dilated causal conv (+ knob projection) -> gate -> residual 1x1 and skip 1x1."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, num_knobs: int) -> None:
        super().__init__()
        self.channels = channels
        self.conv = CausalConv1d(channels, 2 * channels, kernel_size, dilation=dilation, bias=True)
        self.cond = nn.Linear(num_knobs, 2 * channels, bias=False) if num_knobs else None
        self.residual = nn.Conv1d(channels, channels, 1)
        self.skip = nn.Conv1d(channels, channels, 1)


class WaveNet(StreamingConvNet):
    """Input 1x1, gated dilated layers, summed skips, ReLU, output 1x1."""

    def __init__(
        self,
        num_knobs: int = 0,
        channels: int = 16,
        kernel_size: int = 3,
        dilations: list[int] | None = None,
        dilation_depth: int = 10,
        num_repeat: int = 1,
    ) -> None:
        super().__init__()
        dil = list(dilations) if dilations is not None else [2**d for d in range(dilation_depth)] * num_repeat
        self.num_knobs = int(num_knobs)
        self.input = nn.Conv1d(1, channels, 1)
        self.layers = nn.ModuleList(WaveNetLayer(channels, kernel_size, d, self.num_knobs) for d in dil)
        self.output = nn.Conv1d(channels, 1, 1)

    def _forward(self, x: torch.Tensor, knobs: torch.Tensor, caches: Caches) -> torch.Tensor:
        h = self.input(x)
        skips: torch.Tensor | None = None
        for layer in members(self.layers, WaveNetLayer):
            z = caches(layer.conv, h)
            if layer.cond is not None:
                z = z + layer.cond(knobs.to(x))[:, :, None]
            gated = torch.tanh(z[:, : layer.channels]) * torch.sigmoid(z[:, layer.channels :])
            h = h + layer.residual(gated)
            s = layer.skip(gated)
            skips = s if skips is None else skips + s
        if skips is None:
            raise ValueError("a WaveNet needs at least one layer")
        y: torch.Tensor = self.output(torch.relu(skips))
        return y
