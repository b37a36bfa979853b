"""Recurrent amp/pedal model: ``y = Linear(RNN([x, knobs])) + x``.

Wright, Damskägg & Välimäki, "Real-time black-box modelling with recurrent neural
networks", DAFx 2019; knob conditioning by concatenating constant control channels to
the input (Wright et al., "Real-time guitar amplifier emulation with deep learning",
Applied Sciences 10(3), 2020). The parameter names (``rec.*``, ``lin.*``) are those of
CoreAudioML's ``SimpleRNN``, so its JSON files load into this module unchanged.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import native, pathchoice

UNITS = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}
#: ``nn.GRU``/``nn.RNN``'s hidden state, or ``nn.LSTM``'s ``(h, c)``.
RecurrentState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class CompiledRecurrent:
    """For modules computing ``y = lin(rnn(x, knobs)) + skip * x``: the compiled kernel
    (``modelrunner.native``) with weights packed once (again if they change), the path
    that renders (``modelrunner.pathchoice``: the faster on this CPU) and the render plan
    that suits it. Subclasses name their parts."""

    #: The subclass's ``nn.Module.forward``: ``(x, knobs, state) -> (y, state)``.
    forward: Callable[..., tuple[torch.Tensor, RecurrentState]]

    def _recurrent_parts(self) -> tuple[nn.RNNBase, nn.Linear, int]:
        raise NotImplementedError

    def _kernel_inputs(
        self, x: torch.Tensor, knobs: torch.Tensor | None, state: RecurrentState | None
    ) -> tuple[torch.Tensor | None, RecurrentState | None]:
        """The knobs (``None`` for none) and start state the kernel gets for this call."""
        raise NotImplementedError

    def fast_forward(
        self,
        x: torch.Tensor,
        knobs: torch.Tensor | None = None,
        state: RecurrentState | None = None,
    ) -> tuple[torch.Tensor, RecurrentState]:
        """``forward`` through the compiled kernel where it runs and is the chosen path
        (``render_choice``), else ``forward`` itself; same outputs to float rounding and
        the same state layout."""
        if x.device.type != "cpu" or not self.render_choice.compiled:
            return self.forward(x, knobs, state)
        return self._kernel_forward(x, knobs, state)

    def _kernel_forward(
        self, x: torch.Tensor, knobs: torch.Tensor | None, state: RecurrentState | None
    ) -> tuple[torch.Tensor, RecurrentState]:
        kernel = self._kernel()
        if kernel is None:
            raise RuntimeError(f"the compiled recurrent kernel does not run this model ({native.reason()})")
        y, state = native.run_recurrent(*kernel, x, *self._kernel_inputs(x, knobs, state))
        return y.to(x.dtype), state

    def _kernel(self) -> tuple[ctypes.CDLL, native.PackedRecurrent] | None:
        """The compiled library and this model's packed weights, or ``None`` (PyTorch's path)."""
        lib = native.library()
        rnn, lin, skip = self._recurrent_parts()
        if lib is None or not native.supports(rnn):
            return None
        packed = native.kept(
            self,
            "_packed",
            native.version_key([rnn, lin]),
            lambda: native.pack_recurrent(rnn, lin, skip, lib.rnn_vector_width()),
        )
        return lib, packed

    @property
    def render_choice(self) -> pathchoice.Choice:
        """The path that renders this model and why (measured once per shape and CPU)."""
        where = next(self._recurrent_parts()[0].parameters()).device
        if where.type != "cpu":
            return pathchoice.on_device(where)
        if self._kernel() is None:
            lib = native.library()
            return pathchoice.unavailable(native.reason() if lib is None else "a cell the kernel does not run")
        key = (native.version_key([self._recurrent_parts()[0]]), torch.get_num_threads(), pathchoice.setting())
        return native.kept(self, "_render_choice", key, lambda: pathchoice.choose(self))

    @property
    def render_kernel(self) -> str:
        """Which kernel renders this model, for ``inspect`` and the render report."""
        choice = self.render_choice
        return "compiled recurrent kernel" if choice.compiled else f"PyTorch ({choice.short()})"

    def path_sizes(self) -> dict[str, Any]:
        """What sets the render speed of either path (``modelrunner.pathchoice``)."""
        rnn = self._recurrent_parts()[0]
        return {
            "cell": str(getattr(rnn, "mode", type(rnn).__name__)),
            "inputs": rnn.input_size,
            "hidden": rnn.hidden_size,
            "layers": rnn.num_layers,
        }

    def path_plan(self, path: str) -> tuple[int, int]:
        """``(batch_rows, batch_chunk_budget)`` when ``path`` renders (see those)."""
        if path == pathchoice.COMPILED:
            return 4, 1 << 16
        return (64 if isinstance(self._recurrent_parts()[0], nn.GRU) else 24), 1 << 14

    def path_run(self, path: str, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """One call through ``path`` with knobs at zero (for ``modelrunner.pathchoice``)."""
        knobs = x.new_zeros(x.shape[0], self._recurrent_parts()[0].input_size - 1)
        if path == pathchoice.COMPILED:
            return self._kernel_forward(x, knobs, state)
        return self.forward(x, knobs, state)

    @property
    def batch_chunk_budget(self) -> int:
        """Frames per forward call over all batch rows: PyTorch's CPU RNN kernels run about
        1.2x faster on 2**14 than on 2**16 (measured with 12 x 10 s, one core); the compiled
        kernel keeps its state in registers and only streams input and output, so it takes
        larger calls."""
        return self.path_plan(self.render_choice.path)[1]

    @property
    def batch_rows(self) -> int:
        """Rows the renderer aims at when cutting signals into segments with warm-ups.

        Each row adds a warm-up. The compiled kernel steps tiles of 4 rows on one thread:
        LSTM-32 runs 123x real time on 1 row, 130x on 4 and no faster on 64 (GRU-32: 148x,
        172x, 170x), so it wants 4. ``torch.nn.LSTM`` runs as fast per frame at 24 rows as at 64 (so
        fewer warm-ups win: 36x against 31x real time), ``torch.nn.GRU`` gains up to about
        64 rows (26x against 20x at 24).
        """
        return self.path_plan(self.render_choice.path)[0]


class RecurrentModel(CompiledRecurrent, nn.Module):
    """Single-output RNN with optional residual ``skip`` from the audio input.

    ``forward(x (B, T), knobs (B, K), state) -> (y (B, T), state)``; the state is the
    RNN's hidden state ``(num_layers, B, hidden)`` (a pair ``(h, c)`` for LSTM).
    """

    def __init__(
        self,
        unit_type: str = "LSTM",
        hidden_size: int = 32,
        num_layers: int = 1,
        num_knobs: int = 0,
        skip: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        unit = str(unit_type).upper()
        if unit not in UNITS:
            raise ValueError(f"unit_type {unit_type!r} is not one of {', '.join(UNITS)}")
        if skip not in (0, 1):
            raise ValueError(f"skip must be 0 or 1 for a mono model, got {skip!r}")
        if int(hidden_size) < 1 or int(num_layers) < 1 or int(num_knobs) < 0:
            raise ValueError("hidden_size and num_layers must be >= 1 and num_knobs >= 0")
        self.unit_type = unit
        self.num_knobs = int(num_knobs)
        self.skip = int(skip)
        self.rec = UNITS[unit](1 + self.num_knobs, int(hidden_size), int(num_layers), batch_first=True)
        self.lin = nn.Linear(int(hidden_size), 1, bias=bool(bias))

    def _recurrent_parts(self) -> tuple[nn.RNNBase, nn.Linear, int]:
        return self.rec, self.lin, self.skip

    def _kernel_inputs(
        self, x: torch.Tensor, knobs: torch.Tensor | None, state: RecurrentState | None
    ) -> tuple[torch.Tensor | None, RecurrentState | None]:
        # The kernel checks the knobs' shape as forward does (the same message).
        return (knobs if self.num_knobs else None), state

    def forward(
        self,
        x: torch.Tensor,
        knobs: torch.Tensor | None = None,
        state: RecurrentState | None = None,
    ) -> tuple[torch.Tensor, RecurrentState]:
        batch, frames = x.shape
        inp = x[:, :, None]
        if self.num_knobs:
            if knobs is None or tuple(knobs.shape) != (batch, self.num_knobs):
                raise ValueError(f"knobs must have shape ({batch}, {self.num_knobs})")
            inp = torch.cat([inp, knobs[:, None, :].to(x).expand(batch, frames, self.num_knobs)], dim=2)
        out, state = self.rec(inp, state)
        y = self.lin(out)[:, :, 0]
        if self.skip:
            y = y + x
        if isinstance(state, tuple):
            h, c = state
            state = (h.detach(), c.detach())
        else:
            state = state.detach()
        return y, state
