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

from ._streaming import Caches, CausalConv1d, State, StreamingConvNet, activation


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

    #: Frames per forward call, all batch rows together, for the fast path: the
    #: activations of one call then stay in cache (2**15 beat 2**16 by about 1.2x on one core).
    batch_chunk_budget = 1 << 15

    def fast_forward(
        self, x: torch.Tensor, knobs: torch.Tensor | None = None, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """``forward``'s output and state (to float rounding, ~1e-7) in fewer, cheaper kernels.

        Used by the renderer; ``forward`` stays the plain reference. Each dilated
        convolution is one batched matrix product per tap, on views of the cached input (no
        copies); the input mixer is one fused multiply-add; a tanh layer computes
        ``tanh(z) = 2 sigmoid(2z) - 1`` with both factors folded into the weights (PyTorch's
        CPU sigmoid is about 3.5x cheaper than its tanh) and the ``-1`` into the 1x1 bias and
        the head sum; 1x1 convolutions are batched matrix products.
        """
        return self._stream(self._fast_forward, x, knobs, state)

    def _fast_forward(self, x: torch.Tensor, knobs: torch.Tensor, caches: Caches) -> torch.Tensor:
        batch = x.shape[0]
        condition = x
        y = x
        head: torch.Tensor | None = None
        for arr in self.arrays:
            y = arr.rechannel(y)
            sig_sum: torch.Tensor | None = None  # sum of sigmoid(2z) over tanh layers
            tanh_layers = 0
            post_sum: torch.Tensor | None = None  # sum of the other layers' outputs
            for layer in arr.layers:
                conv = layer.conv
                folded = layer.gated is False and isinstance(layer.activation, nn.Tanh)
                k = 2.0 if folded else 1.0
                full = caches.with_context(conv, y)
                frames = y.shape[2]
                d = conv.dilation[0]
                weight = conv.weight * k if folded else conv.weight
                z = None
                for tap in range(conv.kernel_size[0]):
                    w = weight[:, :, tap].expand(batch, -1, -1).contiguous()
                    view = full[:, :, tap * d : tap * d + frames]
                    z = torch.bmm(w, view) if z is None else z.baddbmm_(w, view)
                mixer = layer.input_mixer.weight * k  # (mid, condition, 1)
                if mixer.shape[1] == 1:
                    z.addcmul_(mixer[None, :, 0, :], condition)
                else:
                    z.baddbmm_(mixer[:, :, 0].expand(batch, -1, -1).contiguous(), condition)
                if conv.bias is not None:
                    z.add_((conv.bias * k)[None, :, None])
                w1 = layer.layer1x1.weight[:, :, 0]
                b1 = layer.layer1x1.bias
                if folded:
                    post = z.sigmoid_()  # tanh(z0) = 2 * post - 1
                    w1, b1 = w1 * 2.0, b1 - w1.sum(dim=1)
                    tanh_layers += 1
                    sig_sum = post if sig_sum is None else sig_sum.add_(post)
                else:
                    if layer.gated:
                        post = layer.activation(z[:, : layer.channels]) * torch.sigmoid(z[:, layer.channels :])
                    else:
                        post = layer.activation(z)
                    post_sum = post.clone() if post_sum is None else post_sum.add_(post)
                y = torch.baddbmm(y, w1.expand(batch, -1, -1).contiguous(), post).add_(b1[None, :, None])
            if sig_sum is not None:
                sig_sum = sig_sum.mul_(2.0).sub_(float(tanh_layers))
            for part in (sig_sum, post_sum):
                if part is not None:
                    head = part if head is None else head.add_(part)
            head = caches(arr.head_rechannel, head)
        return self.head_scale * head
