"""GRU with state matching: the initial hidden state is estimated from a short segment.

Peussa, Damskägg, Sherson, Mimilakis, Juvela, Gotsopoulos & Välimäki, "Exposure bias and
state matching in recurrent neural network virtual analog models", DAFx 2021: a
recurrent model starts each sequence from a hidden state that an encoder estimates
from an initialisation segment (the ``init_len`` frames of input and, when
``encoder_uses_target``, of the device's output just before the sequence), instead of
from zeros plus a discarded warm-up. The recurrent part is the model of Wright et al.,
DAFx 2019: ``y = Linear(GRU([x, knobs])) + skip * x`` (keys ``rec.*``, ``lin.*``).

Assumption where the paper leaves the encoder open: an MLP
``[x_init, y_init, knobs] -> Linear -> tanh -> Linear -> tanh -> h0`` (``encoder.*``).
``state=None`` (silence before the start) is the encoder's estimate from an all-zero
segment; :meth:`StateMatchingGRU.state_after_context` estimates it from real context.
"""

from __future__ import annotations

import torch
from torch import nn

from ._streaming import knob_matrix, whole_number


class StateMatchingGRU(nn.Module):
    """GRU effect model whose starting state comes from ``encoder``; state ``(1, B, H)``."""

    stateful = True

    def __init__(
        self,
        num_knobs: int = 0,
        hidden_size: int = 16,
        init_len: int = 256,
        encoder_hidden: int = 32,
        encoder_uses_target: bool = True,
        skip: int = 1,
    ) -> None:
        super().__init__()
        for name, value, top in (
            ("hidden_size", hidden_size, 4096),
            ("init_len", init_len, 1 << 16),
            ("encoder_hidden", encoder_hidden, 4096),
        ):
            whole_number(name, value, top)
        if skip not in (0, 1):
            raise ValueError(f"skip must be 0 or 1, got {skip!r}")
        if not isinstance(encoder_uses_target, bool):
            raise ValueError(f"encoder_uses_target must be true or false, got {encoder_uses_target!r}")
        self.num_knobs = int(num_knobs)
        self.init_len = int(init_len)
        self.uses_target = encoder_uses_target
        self.skip = int(skip)
        self.rec = nn.GRU(1 + self.num_knobs, hidden_size, 1, batch_first=True)
        self.lin = nn.Linear(hidden_size, 1)
        width = self.init_len * (2 if encoder_uses_target else 1) + self.num_knobs
        self.encoder = nn.Sequential(
            nn.Linear(width, encoder_hidden), nn.Tanh(), nn.Linear(encoder_hidden, hidden_size), nn.Tanh()
        )

    @property
    def lookback_samples(self) -> int:
        return self.init_len

    @property
    def needs_lookback(self) -> bool:
        return True

    def label(self) -> str:
        return f"GRU-{self.rec.hidden_size} (state matching)"

    def encode(self, x_init: torch.Tensor, y_init: torch.Tensor | None, knobs: torch.Tensor) -> torch.Tensor:
        """Initial hidden state ``(1, B, H)`` from ``(B, init_len)`` input (and target) frames."""
        parts = [x_init]
        if self.uses_target:
            if y_init is None:
                raise ValueError(f"this encoder needs {self.init_len} frames of target before the excerpt")
            parts.append(y_init.to(x_init))
        parts.append(knobs.to(x_init))
        h: torch.Tensor = self.encoder(torch.cat(parts, dim=1))
        return h[None]

    def state_after_context(self, x_ctx: torch.Tensor, y_ctx: torch.Tensor | None, knobs: torch.Tensor) -> torch.Tensor:
        """State at the excerpt start estimated from the last ``init_len`` frames of context."""
        n = self.init_len
        if x_ctx.shape[1] < n or (y_ctx is not None and y_ctx.shape[1] < n):
            raise ValueError(f"the look-back needs at least {n} frames")
        with torch.no_grad():
            return self.encode(x_ctx[:, -n:], None if y_ctx is None else y_ctx[:, -n:], knobs).detach()

    def forward(
        self, x: torch.Tensor, knobs: torch.Tensor | None = None, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, frames = x.shape
        knobs = knob_matrix(x, knobs, self.num_knobs)
        if state is None:
            zeros = x.new_zeros(batch, self.init_len)
            state = self.encode(zeros, zeros if self.uses_target else None, knobs)
        if tuple(state.shape) != (1, batch, self.rec.hidden_size):
            raise ValueError("state does not belong to this model or batch size")
        inp = torch.cat([x[:, :, None], knobs[:, None, :].to(x).expand(batch, frames, self.num_knobs)], dim=2)
        out, h = self.rec(inp, state.to(x).contiguous())
        y = self.lin(out)[:, :, 0]
        if self.skip:
            y = y + x
        return y, h.detach()
