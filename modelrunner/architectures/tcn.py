"""Conditioned temporal convolutional network (micro-TCN).

Steinmetz & Reiss, "Efficient neural networks for real-time modeling of analog dynamic
range compression", AES 152nd Convention, 2022: a stack of dilated causal convolutions,
each followed by FiLM (Perez et al., AAAI 2018) whose scale and shift come from a small
MLP of the knob values, a PReLU, and a 1x1 residual path. The batch normalisation of the
original FiLM blocks is left out: at inference it is a fixed per-channel affine map that
the convolution can absorb. ``(B, T), (B, K) -> (B, T)``.
"""

from __future__ import annotations

import torch
from torch import nn

from ._streaming import Caches, CausalConv1d, StreamingConvNet


class TCNBlock(nn.Module):
    """Causal dilated conv -> FiLM(knobs) -> PReLU, plus a 1x1 residual projection."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, dilation: int, cond_dim: int) -> None:
        super().__init__()
        self.conv = CausalConv1d(in_ch, out_ch, kernel_size, dilation=dilation, bias=True)
        self.film = nn.Linear(cond_dim, 2 * out_ch) if cond_dim else None
        self.act = nn.PReLU(out_ch)
        self.res = nn.Conv1d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None, caches: Caches) -> torch.Tensor:
        y = caches(self.conv, x)
        if self.film is not None and cond is not None:
            gamma, beta = self.film(cond)[:, :, None].chunk(2, dim=1)
            y = y * gamma + beta
        out: torch.Tensor = self.act(y) + self.res(x)
        return out


class TCN(StreamingConvNet):
    """micro-TCN: ``num_blocks`` blocks with dilations ``dilation_growth ** i``."""

    def __init__(
        self,
        num_knobs: int = 0,
        channels: int = 32,
        kernel_size: int = 13,
        num_blocks: int = 4,
        dilation_growth: int = 10,
        dilations: list[int] | None = None,
        cond_dim: int = 32,
    ) -> None:
        super().__init__()
        dil = list(dilations) if dilations is not None else [dilation_growth**i for i in range(num_blocks)]
        self.num_knobs = int(num_knobs)
        cdim = int(cond_dim) if self.num_knobs else 0
        self.cond = (
            nn.Sequential(
                nn.Linear(self.num_knobs, 16),
                nn.ReLU(),
                nn.Linear(16, 32),
                nn.ReLU(),
                nn.Linear(32, cdim),
                nn.ReLU(),
            )
            if self.num_knobs
            else None
        )
        self.blocks = nn.ModuleList(
            TCNBlock(1 if i == 0 else channels, channels, kernel_size, d, cdim) for i, d in enumerate(dil)
        )
        self.output = nn.Conv1d(channels, 1, 1)

    def _forward(self, x: torch.Tensor, knobs: torch.Tensor, caches: Caches) -> torch.Tensor:
        cond = self.cond(knobs.to(x)) if self.cond is not None else None
        for block in self.blocks:
            x = block(x, cond, caches)
        y: torch.Tensor = self.output(x)
        return y
