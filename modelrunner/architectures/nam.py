"""Neural Amp Modeler networks (Linear, LSTM, WaveNet) in streaming form.

The computations follow NeuralAmpModelerCore (``NAM/linear.cpp``, ``NAM/lstm.cpp``,
``NAM/wavenet.cpp``), i.e. the inference side of the ``.nam`` file format; the weight
layout lives in :mod:`modelrunner.formats.nam`. WaveNet: van den Oord et al.,
"WaveNet: a generative model for raw audio", arXiv:1609.03499 (2016), in the layer-array
form of Atkinson's neural-amp-modeler.
"""
from __future__ import annotations

import torch
from torch import nn

from ._streaming import Caches, CausalConv1d, StreamingConvNet, activation


class NamLinear(StreamingConvNet):
    """A causal FIR filter of ``receptive_field`` taps: ``(B, T) -> (B, T)``."""

    def __init__(self, receptive_field: int, bias: bool) -> None:
        super().__init__()
        self.conv = CausalConv1d(1, 1, int(receptive_field), bias=bool(bias))

    def _forward(self, x: torch.Tensor, knobs: torch.Tensor, caches: Caches) -> torch.Tensor:
        return caches(self.conv, x)


class NamLSTM(nn.Module):
    """Stacked LSTM + linear head, starting from the learned initial hidden/cell state.

    NAM exports an initial state per layer (found by running the trained network on
    silence), and NeuralAmpModelerCore starts every stream from it; ``state=None`` does
    the same here. ``(B, T) -> (B, T)``; state ``(h, c)``, each ``(num_layers, B, hidden)``.
    """

    def __init__(self, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.core = nn.LSTM(1, int(hidden_size), int(num_layers), batch_first=True)
        self.head = nn.Linear(int(hidden_size), 1)
        self.register_buffer("initial_hidden", torch.zeros(int(num_layers), int(hidden_size)))
        self.register_buffer("initial_cell", torch.zeros(int(num_layers), int(hidden_size)))

    def forward(
        self,
        x: torch.Tensor,
        knobs: torch.Tensor | None = None,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch = x.shape[0]
        if state is None:
            state = (
                self.initial_hidden[:, None, :].expand(-1, batch, -1).contiguous(),
                self.initial_cell[:, None, :].expand(-1, batch, -1).contiguous(),
            )
        out, (h, c) = self.core(x[:, :, None], state)
        return self.head(out)[:, :, 0], (h.detach(), c.detach())


class NamWaveNetLayer(nn.Module):
    """Dilated conv + input mixer (conditioning) -> activation -> 1x1, with residual."""

    def __init__(
        self, condition_size: int, channels: int, kernel_size: int, dilation: int, act: str, gated: bool
    ) -> None:
        super().__init__()
        mid = 2 * channels if gated else channels
        self.gated = gated
        self.channels = channels
        self.conv = CausalConv1d(channels, mid, kernel_size, dilation=dilation, bias=True)
        self.input_mixer = nn.Conv1d(condition_size, mid, 1, bias=False)
        self.activation = activation(act)
        self.layer1x1 = nn.Conv1d(channels, channels, 1, bias=True)


class NamLayerArray(nn.Module):
    """Rechannel, a stack of ``NamWaveNetLayer``, and the head rechannel."""

    def __init__(
        self,
        input_size: int,
        condition_size: int,
        channels: int,
        kernel_size: int,
        dilations: list[int],
        act: str,
        gated: bool,
        head_out: int,
        head_kernel: int,
        head_bias: bool,
    ) -> None:
        super().__init__()
        self.rechannel = nn.Conv1d(input_size, channels, 1, bias=False)
        self.layers = nn.ModuleList(
            NamWaveNetLayer(condition_size, channels, kernel_size, d, act, gated) for d in dilations
        )
        self.head_rechannel = CausalConv1d(channels, head_out, head_kernel, bias=head_bias)


class NamWaveNet(StreamingConvNet):
    """NAM's WaveNet: layer arrays whose head outputs feed the next array's head sum.

    ``(B, T) -> (B, T)``; the conditioning input of every layer is the audio input.
    """

    def __init__(self, arrays: list[NamLayerArray], head_scale: float) -> None:
        super().__init__()
        self.arrays = nn.ModuleList(arrays)
        self.register_buffer("head_scale", torch.tensor(float(head_scale)))

    def _forward(self, x: torch.Tensor, knobs: torch.Tensor, caches: Caches) -> torch.Tensor:
        condition = x
        y = x
        head: torch.Tensor | None = None
        for arr in self.arrays:
            y = arr.rechannel(y)
            for layer in arr.layers:
                z = caches(layer.conv, y) + layer.input_mixer(condition)
                if layer.gated:
                    post = layer.activation(z[:, : layer.channels]) * torch.sigmoid(z[:, layer.channels :])
                else:
                    post = layer.activation(z)
                y = y + layer.layer1x1(post)
                head = post if head is None else head + post
            head = caches(arr.head_rechannel, head)
        return self.head_scale * head
