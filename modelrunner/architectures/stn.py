"""State trajectory network (STN): an MLP learns the explicit-Euler state update.

Parker, Esqueda & Bergner, "Modelling of nonlinear state-space systems using a deep
neural network", DAFx 2019, and Peussa, Damskägg, Sherson, Mimilakis, Juvela, Gotsopoulos
& Välimäki, "Exposure bias and state matching in recurrent neural network virtual
analog models", DAFx 2021 (section 2, the STN baseline). With state ``s`` (``S``
values), input ``u[n]`` and controls ``k``::

    s[n] = s[n-1] + step * MLP([u[n], k, s[n-1]])        (explicit Euler)
    y[n] = readout(s[n])                                  (Linear(S, 1), or s[n][0])

Assumptions where the papers leave choices open: the controls are concatenated to the
MLP's input; ``readout="state0"`` takes the first state as the output (Parker et al.
train the output as one of the states), ``"linear"`` a learned linear map.
``forward(x (B, T), knobs (B, K), state (B, S)) -> (y (B, T), state)``; the loop is per
sample, with the input's share of the first layer computed for all frames at once.
"""

from __future__ import annotations

import torch
from torch import nn

from ._streaming import activation as make_activation
from ._streaming import knob_matrix, whole_number


class StateTrajectoryNetwork(nn.Module):
    """``s <- s + step * mlp([x, knobs, s])``, ``y = readout(s)``; state ``(B, state_size)``."""

    stateful = True

    def __init__(
        self,
        num_knobs: int = 0,
        state_size: int = 8,
        hidden_size: int = 16,
        num_layers: int = 2,
        activation: str = "tanh",
        readout: str = "linear",
        step: float = 1.0,
    ) -> None:
        super().__init__()
        if readout not in ("linear", "state0"):
            raise ValueError(f"readout must be 'linear' or 'state0', got {readout!r}")
        whole_number("state_size", state_size, 1024)
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < float(step) <= 1e3:
            raise ValueError(f"step must be a positive number, got {step!r}")
        self.num_knobs = int(num_knobs)
        self.state_size = int(state_size)
        self.step = float(step)
        width = 1 + self.num_knobs + self.state_size
        layers: list[nn.Module] = []
        for i in range(int(num_layers)):
            layers += [nn.Linear(width if i == 0 else hidden_size, hidden_size), make_activation(activation)]
        layers.append(nn.Linear(hidden_size, self.state_size))
        self.mlp = nn.Sequential(*layers)
        self.readout = nn.Linear(self.state_size, 1) if readout == "linear" else None

    def label(self) -> str:
        return f"STN (state {self.state_size})"

    def forward(
        self, x: torch.Tensor, knobs: torch.Tensor | None = None, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, frames = x.shape
        knobs = knob_matrix(x, knobs, self.num_knobs)
        if state is None:
            state = x.new_zeros(batch, self.state_size)
        if tuple(state.shape) != (batch, self.state_size):
            raise ValueError("state does not belong to this model or batch size")
        first = self.mlp[0]
        assert isinstance(first, nn.Linear)  # the constructor puts the input layer first
        w_in, w_state = first.weight[:, : 1 + self.num_knobs], first.weight[:, 1 + self.num_knobs :]
        # Input and controls enter the first layer linearly: precompute that share for every
        # frame, elementwise so that a frame's value does not depend on the chunk length.
        pre = x.T[:, :, None] * w_in[:, 0] + (knobs.to(x) @ w_in[:, 1:].T + first.bias)[None, :, :]
        rest = self.mlp[1:]
        s = state.to(x)
        states = []
        for n in range(frames):
            s = s + self.step * rest(torch.addmm(pre[n], s, w_state.T))
            states.append(s)
        traj = torch.stack(states, dim=1) if states else x.new_zeros(batch, 0, self.state_size)
        y = self.readout(traj)[:, :, 0] if self.readout is not None else traj[:, :, 0]
        return y, s.detach()
