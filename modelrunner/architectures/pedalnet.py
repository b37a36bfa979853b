"""PedalNet's WaveNet (GuitarML PedalNetRT), parameter for parameter.

Damskägg, Juvela, Thuillier & Välimäki, "Deep learning for tube amplifier emulation",
ICASSP 2019, as implemented in PedalNetRT's ``model.py``: a 1x1 input layer, dilated
causal convolutions with ``2 * num_channels`` outputs split into a tanh * sigmoid gate, a
1x1 residual per layer, and a 1x1 ``linear_mix`` over the concatenated gate outputs of
all layers (no skip 1x1s). PedalNetRT pads every convolution with zeros on the left, so
at the start each layer hears zeros of its own input (``silence_is_input=False``); the
streaming state carries each layer's last ``(kernel_size - 1) * dilation`` inputs.
``(B, T) -> (B, T)``; no knobs.
"""

from __future__ import annotations

import torch
from torch import nn

from ._streaming import Caches, CausalConv1d, StreamingConvNet, members


class PedalNetWaveNet(StreamingConvNet):
    """State-dict keys ``hidden.N``, ``residuals.N``, ``input_layer``, ``linear_mix``."""

    silence_is_input = False

    def __init__(
        self,
        num_knobs: int = 0,
        num_channels: int = 16,
        dilation_depth: int = 8,
        num_repeat: int = 1,
        kernel_size: int = 2,
    ) -> None:
        super().__init__()
        if num_knobs:
            raise ValueError("PedalNet takes no knobs")
        dilations = [2**d for d in range(dilation_depth)] * num_repeat
        self.num_channels = num_channels
        self.hidden = nn.ModuleList(
            CausalConv1d(num_channels, 2 * num_channels, kernel_size, dilation=d) for d in dilations
        )
        self.residuals = nn.ModuleList(nn.Conv1d(num_channels, num_channels, 1) for _ in dilations)
        self.input_layer = nn.Conv1d(1, num_channels, 1)
        self.linear_mix = nn.Conv1d(num_channels * len(dilations), 1, 1)

    def _forward(self, x: torch.Tensor, knobs: torch.Tensor, caches: Caches) -> torch.Tensor:
        out = self.input_layer(x)
        skips = []
        for hidden, residual in zip(members(self.hidden, CausalConv1d), self.residuals):
            z = caches(hidden, out)
            gated = torch.tanh(z[:, : self.num_channels]) * torch.sigmoid(z[:, self.num_channels :])
            skips.append(gated)
            out = residual(gated) + out
        y: torch.Tensor = self.linear_mix(torch.cat(skips, dim=1))
        return y
