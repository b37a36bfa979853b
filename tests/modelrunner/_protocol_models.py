"""Small modules that follow the ``EffectModel`` streaming protocol, for render tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from modelrunner.model import EffectModel


class CausalFIR(nn.Module):
    """``y = tanh(gain * (w * x))``: a causal FIR whose state is its last ``k - 1`` inputs."""

    def __init__(self, taps: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("taps", taps.float().flip(0)[None, None, :])

    def forward(self, x, knobs, state=None):
        k = self.taps.shape[-1]
        ctx = x.new_zeros(x.shape[0], k - 1) if state is None else state
        full = torch.cat([ctx, x], dim=1)
        y = F.conv1d(full[:, None, :], self.taps)[:, 0, :]
        return torch.tanh(knobs[:, :1] * y), full[:, full.shape[1] - (k - 1) :]


class TinyRNN(nn.Module):
    """``y = Linear(RNN([x, knobs])) + x``; state is the RNN hidden state."""

    def __init__(self, unit: type[nn.RNNBase] = nn.GRU, hidden: int = 8, knobs: int = 1) -> None:
        super().__init__()
        self.rec = unit(1 + knobs, hidden, batch_first=True)
        self.lin = nn.Linear(hidden, 1)

    def forward(self, x, knobs, state=None):
        inp = torch.cat([x[:, :, None], knobs[:, None, :].expand(-1, x.shape[1], -1)], dim=2)
        out, state = self.rec(inp, state)
        return self.lin(out)[:, :, 0] + x, state


class LongMemory(nn.Module):
    """A one-unit tanh RNN with a pole near 1: its state remembers thousands of samples."""

    def __init__(self, pole: float = 0.9995) -> None:
        super().__init__()
        self.rec = nn.RNN(1, 1, batch_first=True)
        with torch.no_grad():
            self.rec.weight_ih_l0.fill_(0.05)
            self.rec.weight_hh_l0.fill_(pole)
            self.rec.bias_ih_l0.fill_(0.01)
            self.rec.bias_hh_l0.zero_()

    def forward(self, x, knobs, state=None):
        out, state = self.rec(x[:, :, None], state)
        return out[:, :, 0], state


def fir_model(taps: int = 33, sample_rate: int = 8000, seed: int = 0) -> EffectModel:
    g = torch.Generator().manual_seed(seed)
    module = CausalFIR(torch.randn(taps, generator=g) / taps**0.5).eval()
    return _wrap(module, sample_rate, stateful=False, receptive_field=taps, architecture="fir")


def rnn_model(unit: type[nn.RNNBase] = nn.GRU, sample_rate: int = 8000, seed: int = 0) -> EffectModel:
    torch.manual_seed(seed)
    module = TinyRNN(unit).eval()
    return _wrap(module, sample_rate, stateful=True, receptive_field=1, architecture=unit.__name__)


def long_memory_model(sample_rate: int = 8000) -> EffectModel:
    return _wrap(LongMemory().eval(), sample_rate, stateful=True, receptive_field=1, architecture="rnn", knobs=False)


def _wrap(module, sample_rate, *, stateful, receptive_field, architecture, knobs=True) -> EffectModel:
    return EffectModel(
        module=module,
        sample_rate=sample_rate,
        knob_names=["gain"] if knobs else [],
        knob_ranges=[(0.0, 4.0)] if knobs else [],
        stateful=stateful,
        receptive_field=receptive_field,
        format="test",
        architecture=architecture,
        parameter_count=sum(p.numel() for p in module.parameters()),
        knob_defaults=[1.0] if knobs else None,
    )
