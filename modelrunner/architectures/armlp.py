"""Autoregressive MLP: the last ``m`` inputs and ``m - 1`` outputs predict the next output.

The sample-by-sample approach of the "Training Neural Audio Networks" notebook (a
nonlinear ARX model, Ljung, *System Identification*, 1999, section 5.4): at frame ``n``
the MLP reads ``[x[n-m+1] ... x[n], y[n-m+1] ... y[n-1], knobs]`` (oldest first) and
outputs ``y[n]``. Inference is inherently sequential in time; it is batched across
excerpts (``B``). The inputs' share of the first layer is computed for all frames at
once (a convolution), so the loop only does the output feedback and the later layers.

``forward(x (B, T), knobs (B, K), state) -> (y (B, T), state)``; the state is the pair
``(last m - 1 inputs (B, m-1), last m - 1 outputs (B, m-1))``, zeros for silence.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._streaming import activation as make_activation
from ._streaming import knob_matrix, whole_number


class ARMLP(nn.Module):
    """``y[n] = mlp([x[n-m+1..n], y[n-m+1..n-1], knobs])`` (keys ``mlp.*``)."""

    stateful = True

    def __init__(
        self,
        num_knobs: int = 0,
        m: int = 16,
        hidden_sizes: list[int] | tuple[int, ...] = (32, 32),
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        whole_number("m", m, 4096)
        if (
            not isinstance(hidden_sizes, (list, tuple))
            or not hidden_sizes
            or not all(isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= 4096 for h in hidden_sizes)
        ):
            raise ValueError(f"hidden_sizes must be a non-empty list of whole numbers in 1..4096, got {hidden_sizes!r}")
        self.num_knobs = int(num_knobs)
        self.m = int(m)
        widths = [2 * self.m - 1 + self.num_knobs, *hidden_sizes]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), make_activation(activation)]
        layers.append(nn.Linear(widths[-1], 1))
        self.mlp = nn.Sequential(*layers)

    #: The teacher-forced start state reads the device's output.
    uses_target = True

    @property
    def lookback_samples(self) -> int:
        return self.m - 1

    def label(self) -> str:
        return f"AR-MLP (m={self.m})"

    def _zero_state(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return like.new_zeros(batch, self.m - 1), like.new_zeros(batch, self.m - 1)

    def state_after_context(
        self, x_ctx: torch.Tensor, y_ctx: torch.Tensor | None, knobs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced state: the last ``m - 1`` frames of input and of the device's output."""
        n = self.m - 1
        if y_ctx is None or x_ctx.shape[1] < n or y_ctx.shape[1] < n:
            raise ValueError(f"the look-back needs at least {n} frames of input and target")
        return x_ctx[:, x_ctx.shape[1] - n :].clone(), y_ctx[:, y_ctx.shape[1] - n :].to(x_ctx).clone()

    def forward(
        self, x: torch.Tensor, knobs: torch.Tensor | None = None, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch, frames = x.shape
        knobs = knob_matrix(x, knobs, self.num_knobs)
        if state is None:
            state = self._zero_state(batch, x)
        if not isinstance(state, tuple) or len(state) != 2 or any(tuple(s.shape) != (batch, self.m - 1) for s in state):
            raise ValueError("state does not belong to this model or batch size")
        m = self.m
        first = self.mlp[0]
        assert isinstance(first, nn.Linear)  # the constructor puts the input layer first
        w_x, w_y, w_k = first.weight[:, :m], first.weight[:, m : 2 * m - 1], first.weight[:, 2 * m - 1 :]
        x_hist = torch.cat([state[0].to(x), x], dim=1)
        # pre[:, :, n] = w_x @ x[n-m+1..n] + w_k @ knobs + bias, for every n at once.
        pre = F.conv1d(x_hist[:, None, :], w_x[:, None, :]) + (knobs.to(x) @ w_k.T + first.bias)[:, :, None]
        pre = pre.transpose(1, 2).contiguous()
        rest = self.mlp[1:]
        y_hist = state[1].to(x)
        w_yt = w_y.T.contiguous()
        out = x.new_empty(batch, frames)
        for n in range(frames):
            h = torch.addmm(pre[:, n], y_hist, w_yt) if m > 1 else pre[:, n]
            y = rest(h)
            out[:, n] = y[:, 0]
            if m > 1:
                y_hist = torch.cat([y_hist[:, 1:], y], dim=1)
        new_x = x_hist[:, x_hist.shape[1] - (m - 1) :] if m > 1 else x.new_zeros(batch, 0)
        return out, (new_x.detach().clone(), y_hist.detach().clone())
