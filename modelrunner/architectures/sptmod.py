"""SPTMod: State Prediction Network plus modulation blocks (Bourdin, Legrand & Roche).

Y. Bourdin, P. Legrand, F. Roche, "Empirical results for adjusting truncated
backpropagation through time while training neural audio effects", 2025; reference
code github.com/ybourdin/sptmod (``sptmod.py`` ``Model``; its ``rnn.RNN`` wraps a
one-layer ``torch.nn.LSTM``/``GRU`` as ``.rnn``, as in the authors' sptvmod repository).

The audio path is only modulated: ``y = x * a_1 + b_1`` then ``* a_2 + b_2`` ... where
each ``(a_j, b_j)`` is a 1x1 convolution of a slowly varying *modulation signal*. The
modulation path runs a stack of causal dilated convolutions over the input; after each,
a TFiLM block max/avg-pools blocks of ``tfilm_block_size`` frames, applies FiLM from
an MLP of the controls, runs an RNN once per block and linearly interpolates the RNN
outputs back to audio rate; that signal modulates both the audio path and the next
convolution's output. The State Prediction Network (``lookback_net``) predicts every
RNN's initial state from a window of input *and target* audio just before the excerpt.

Module and parameter names equal the reference's, so its ``state_dict`` loads with
``strict=True`` given the same constructor arguments (the ``params`` of a native
config). Only mono effects (``input_channels == 1``, no sidechain) are supported.

Streaming (``forward(x (B, T), knobs (B, K), state)``): the reference processes whole
blocks only, and the output inside a block depends on the block's later input frames
(through the pooled RNN step). To keep the module causal for any chunk size, input is
buffered until a block is complete and the output is delayed by exactly
``latency_samples = tfilm_block_size - 1`` frames: ``y[t] = y_ref[t - latency]``, where
``y_ref`` is the reference's cached-padding output (``paddingmode=CachedPadding``) over
the input padded with zeros to whole blocks. :func:`modelrunner.lookback.render_excerpt`
removes the delay. ``state=None`` means zero RNN states and zero caches (silence);
:func:`initial_state_from_lookback` gives the state the reference reaches when it runs
with ``use_spn=True`` in ``NoPadding`` mode over the look-back context.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import ceil
from typing import Any

import torch
from torch import nn

from ._streaming import knob_matrix, members, whole_number

State = tuple[torch.Tensor, ...]

#: Constructor arguments of the reference ``Model`` (all required there).
REFERENCE_ARGS = (
    "input_channels",
    "sidechain_channels",
    "n_params",
    "s_channels_list",
    "s_kernel_size_list",
    "s_dilation_list",
    "tfilm_block_size",
    "tfilm_pooling_type",
    "cond_size",
    "film_hidden_neurons_list",
    "rnn_cell",
    "rnn_hidden_size",
    "lbnet",
    "lbnet_dropout",
    "lbnet_dropout_full_items",
    "lbnet_linear_end",
    "lbnet_out_channels_list",
    "lbnet_kernel_size_list",
    "lbnet_dilation_list",
    "lbnet_stride_list",
    "lbnet_pooling_list",
    "lbnet_pooling_type",
    "lbnet_film_hidden_neurons_list",
)


def film_op(x: torch.Tensor, ab: torch.Tensor, channels: int) -> torch.Tensor:
    """FiLM (Perez et al., AAAI 2018): ``a * x + b`` with ``(a, b)`` ``(B, 2C)`` over ``x`` ``(B, C, L)``."""
    a, b = torch.split(ab, channels, dim=-1)
    return a[..., None] * x + b[..., None]


def _film_mlp(cond_dim: int, hidden: Sequence[int] | None, out: int) -> nn.Sequential:
    """The reference's FiLM generator: ``[Linear -> PReLU] * len(hidden)`` then ``Linear(., 2C)``."""
    layers: list[nn.Module] = []
    h = cond_dim
    if hidden and hidden[0]:
        for i, h in enumerate(hidden):
            layers.append(nn.Sequential(nn.Linear(cond_dim if i == 0 else hidden[i - 1], h), nn.PReLU(h)))
    layers.append(nn.Linear(h, out))
    return nn.Sequential(*layers)


class CachedConv1d(nn.Module):
    """Holds the reference's ``.conv`` (a stride-1 ``nn.Conv1d``); padding is done by the caller."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)

    @property
    def context(self) -> int:
        return (self.conv.kernel_size[0] - 1) * self.conv.dilation[0]


class RNN(nn.Module):
    """One-layer LSTM/GRU over ``(B, C, L)`` with a flat state ``(B, 2H)`` (``[h, c]``) or ``(B, H)``."""

    def __init__(self, input_size: int, hidden_size: int, cell: str) -> None:
        super().__init__()
        if cell not in ("LSTM", "GRU"):
            raise ValueError(f"rnn_cell must be 'LSTM' or 'GRU', got {cell!r}")
        self.cell = cell
        self.hidden_size = hidden_size
        self.rnn = (nn.LSTM if cell == "LSTM" else nn.GRU)(input_size, hidden_size, num_layers=1, batch_first=False)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seq = x.permute(2, 0, 1)
        if self.cell == "LSTM":
            h, c = torch.split(state[None], self.hidden_size, dim=-1)
            out, (h, c) = self.rnn(seq, (h.contiguous(), c.contiguous()))
            new = torch.cat([h, c], dim=-1)[0]
        else:
            out, h = self.rnn(seq, state[None].contiguous())
            new = h[0]
        return out.permute(1, 2, 0), new


class LinearInterp(nn.Module):
    """Upsampling by ``P`` with linear interpolation, as a fixed depthwise transposed convolution."""

    def __init__(self, channels: int, size_factor: int) -> None:
        super().__init__()
        self.convt = nn.ConvTranspose1d(
            channels,
            channels,
            2 * size_factor,
            stride=size_factor,
            padding=size_factor,
            groups=channels,
            bias=False,
        )
        ramp = torch.arange(0, size_factor) / size_factor
        with torch.no_grad():
            self.convt.weight[:] = torch.cat([ramp, 1 - ramp]).view(1, 1, 2 * size_factor)
        self.convt.weight.requires_grad_(False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, C, n)`` -> ``(B, C, (n - 1) * P)``: frame ``m*P + r`` mixes ``z[m]`` and ``z[m+1]``."""
        if z.shape[2] < 2:
            return z.new_zeros(z.shape[0], z.shape[1], 0)
        y: torch.Tensor = self.convt(z)
        return y


class TFiLM(nn.Module):
    """Pool blocks -> FiLM(controls) -> RNN per block -> interpolate (reference ``TurboCachedTFiLM``)."""

    def __init__(
        self,
        in_channels: int,
        block_size: int,
        cond_dim: int,
        pooling_type: str,
        rnn_cell: str,
        rnn_hidden_size: int,
        film_hidden_neurons_list: Sequence[int] | None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.block_size = block_size
        self.maxpool = nn.MaxPool1d(block_size) if pooling_type == "max" else nn.AvgPool1d(block_size)
        self.rnn = RNN(in_channels, rnn_hidden_size, rnn_cell)
        self.upsample = LinearInterp(rnn_hidden_size, block_size)
        self.film_nn = _film_mlp(cond_dim, film_hidden_neurons_list, 2 * in_channels) if cond_dim > 0 else None

    def step(self, z: torch.Tensor, zp: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RNN outputs per block ``(B, H, L / P)`` and the new state, for ``z`` ``(B, C, L)``."""
        z2 = self.maxpool(z)
        if self.film_nn is not None:
            z2 = film_op(z2, self.film_nn(zp), self.in_channels)
        out: tuple[torch.Tensor, torch.Tensor] = self.rnn(z2, state)
        return out


class LookbackNetwork(nn.Module):
    """The State Prediction Network: strided convs -> PReLU -> FiLM -> pool, down to one frame."""

    def __init__(
        self,
        in_channels: int,
        state_size: int,
        linear_end: bool,
        cond_dim: int,
        out_channels_list: list[int],
        kernel_size_list: list[int],
        dilation_list: list[int],
        stride_list: list[int],
        pooling_list: list[int],
        pooling_type: str,
        film_hidden_neurons_list: Sequence[int] | None,
    ) -> None:
        super().__init__()
        lists = (out_channels_list, kernel_size_list, dilation_list, stride_list, pooling_list)
        if len({len(v) for v in lists}) != 1 or not out_channels_list:
            raise ValueError(
                "lbnet_out_channels_list, lbnet_kernel_size_list, lbnet_dilation_list, "
                "lbnet_stride_list and lbnet_pooling_list must be non-empty and of equal length"
            )
        self.out_channels_list = list(out_channels_list)
        self.expected_input_length = lookback_length(kernel_size_list, dilation_list, stride_list, pooling_list)
        self.linear_end = bool(linear_end)
        if self.linear_end:
            self.linear_end_module = nn.Linear(out_channels_list[-1], state_size)
        elif out_channels_list[-1] != state_size:
            raise ValueError(
                f"lbnet_out_channels_list[-1]={out_channels_list[-1]} must equal the total RNN "
                f"state size {state_size} when lbnet_linear_end is false"
            )
        self.convs = nn.ModuleList(
            nn.Conv1d(i, o, k, stride=s, dilation=d)
            for i, o, k, s, d in zip(
                [in_channels] + out_channels_list[:-1], out_channels_list, kernel_size_list, stride_list, dilation_list
            )
        )
        self.films = (
            nn.ModuleList(_film_mlp(cond_dim, film_hidden_neurons_list, 2 * c) for c in out_channels_list)
            if cond_dim > 0
            else None
        )
        self.acts = nn.ModuleList(nn.PReLU(o) for o in out_channels_list)
        pool = nn.MaxPool1d if pooling_type == "max" else nn.AvgPool1d
        self.pools = nn.ModuleList(pool(p) for p in pooling_list)

    def forward(self, lookback: torch.Tensor, zp: torch.Tensor) -> torch.Tensor:
        """``(B, 2, expected_input_length)`` input and target -> ``(B, total state size)``."""
        v = lookback
        for i, (conv, act, pool, c) in enumerate(zip(self.convs, self.acts, self.pools, self.out_channels_list)):
            v = act(conv(v))
            if self.films is not None:
                v = film_op(v, self.films[i](zp), c)
            v = pool(v)
        v = v.squeeze(-1)
        return self.linear_end_module(v) if self.linear_end else v


def lookback_length(
    kernel_size_list: Sequence[int],
    dilation_list: Sequence[int],
    stride_list: Sequence[int],
    pooling_list: Sequence[int],
) -> int:
    """Input frames the State Prediction Network reduces to exactly one frame."""
    n = 1
    for k, d, s, p in list(zip(kernel_size_list, dilation_list, stride_list, pooling_list))[::-1]:
        n = 1 + d * (k - 1) + s * (p * n - 1)
    return n


def _int_list(name: str, value: Any, minimum: int = 1) -> list[int]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and minimum <= v <= 1 << 16 for v in value
    ):
        raise ValueError(f"{name} must be a list of whole numbers >= {minimum}, got {value!r}")
    return list(value)


class SPTMod(nn.Module):
    """The reference ``Model`` at inference, with the streaming protocol of :mod:`modelrunner.model`."""

    stateful = True

    def __init__(
        self,
        num_knobs: int = 0,
        input_channels: int = 1,
        sidechain_channels: int = 0,
        n_params: int | None = None,
        s_channels_list: list[int] = (8, 8),  # type: ignore[assignment]
        s_kernel_size_list: list[int] = (5, 5),  # type: ignore[assignment]
        s_dilation_list: list[int] = (1, 4),  # type: ignore[assignment]
        tfilm_block_size: int = 64,
        tfilm_pooling_type: str = "max",
        cond_size: int | None = 16,
        film_hidden_neurons_list: list[int] | None = (16,),  # type: ignore[assignment]
        rnn_cell: str = "LSTM",
        rnn_hidden_size: int = 8,
        lbnet: bool = True,
        lbnet_dropout: float = 0.0,
        lbnet_dropout_full_items: bool = False,
        lbnet_linear_end: bool = True,
        lbnet_out_channels_list: list[int] = (8, 8),  # type: ignore[assignment]
        lbnet_kernel_size_list: list[int] = (9, 9),  # type: ignore[assignment]
        lbnet_dilation_list: list[int] = (1, 1),  # type: ignore[assignment]
        lbnet_stride_list: list[int] = (4, 4),  # type: ignore[assignment]
        lbnet_pooling_list: list[int] = (4, 4),  # type: ignore[assignment]
        lbnet_pooling_type: str = "max",
        lbnet_film_hidden_neurons_list: list[int] | None = (16,),  # type: ignore[assignment]
    ) -> None:
        super().__init__()
        if input_channels != 1 or sidechain_channels != 0:
            raise ValueError(
                f"only mono effects load: input_channels must be 1 and sidechain_channels 0 "
                f"(got {input_channels!r} and {sidechain_channels!r})"
            )
        if n_params is None:
            n_params = num_knobs
        if n_params != num_knobs:
            raise ValueError(f"n_params={n_params!r} but the config lists {num_knobs} knob(s); they must agree")
        chans = _int_list("s_channels_list", s_channels_list)
        kernels = _int_list("s_kernel_size_list", s_kernel_size_list)
        dils = _int_list("s_dilation_list", s_dilation_list)
        if not chans or not len(chans) == len(kernels) == len(dils):
            raise ValueError(
                "s_channels_list, s_kernel_size_list and s_dilation_list must be non-empty and of equal length"
            )
        whole_number("tfilm_block_size", tfilm_block_size, 1 << 16)
        for name, value in (("tfilm_pooling_type", tfilm_pooling_type), ("lbnet_pooling_type", lbnet_pooling_type)):
            if value not in ("max", "avg"):
                raise ValueError(f"{name} must be 'max' or 'avg', got {value!r}")
        if rnn_cell not in ("LSTM", "GRU"):
            raise ValueError(f"rnn_cell must be 'LSTM' or 'GRU', got {rnn_cell!r}")
        whole_number("rnn_hidden_size", rnn_hidden_size, 4096)
        if cond_size is not None and (not isinstance(cond_size, int) or not 1 <= cond_size <= 4096):
            raise ValueError(f"cond_size must be null or a whole number in 1..4096, got {cond_size!r}")
        for name, sizes in (
            ("film_hidden_neurons_list", film_hidden_neurons_list),
            ("lbnet_film_hidden_neurons_list", lbnet_film_hidden_neurons_list),
        ):
            if sizes is not None and sizes and sizes[0]:
                _int_list(name, sizes)
        self.input_channels = 1
        self.n_params = int(n_params)
        self.num_knobs = int(num_knobs)
        self.tfilm_block_size = int(tfilm_block_size)
        self.rnn_cell = rnn_cell
        self.rnn_hidden_size = int(rnn_hidden_size)
        self.state_size = (2 if rnn_cell == "LSTM" else 1) * self.rnn_hidden_size
        self.s_channels_list = chans
        self.s_convs = nn.ModuleList(
            CachedConv1d(1 if i == 0 else chans[i - 1], c, k, d)
            for i, (c, k, d) in enumerate(zip(chans, kernels, dils))
        )
        self.s_conv11f = nn.ModuleList(nn.Conv1d(rnn_hidden_size, 2, 1) for _ in chans)
        self.s_conv11s = nn.ModuleList(nn.Conv1d(rnn_hidden_size, 2 * c, 1) for c in chans)
        self.condnet: nn.Module = (
            nn.Sequential(
                nn.Linear(n_params, cond_size),
                nn.PReLU(cond_size),
                nn.Linear(cond_size, cond_size),
                nn.PReLU(cond_size),
                nn.Linear(cond_size, cond_size),
                nn.PReLU(cond_size),
            )
            if n_params > 0 and cond_size is not None
            else nn.Identity()
        )
        cond_dim = cond_size if cond_size is not None else n_params
        if n_params == 0 and cond_dim:
            raise ValueError("cond_size must be null for a model without controls (n_params 0)")
        self.s_tfilms = nn.ModuleList(
            TFiLM(
                c,
                self.tfilm_block_size,
                cond_dim,
                tfilm_pooling_type,
                rnn_cell,
                rnn_hidden_size,
                film_hidden_neurons_list,
            )
            for c in chans
        )
        self.s_acts = nn.ModuleList(nn.PReLU(c) for c in chans)
        self.lookback_net = (
            LookbackNetwork(
                2,
                len(chans) * self.state_size,
                lbnet_linear_end,
                cond_dim,
                _int_list("lbnet_out_channels_list", lbnet_out_channels_list),
                _int_list("lbnet_kernel_size_list", lbnet_kernel_size_list),
                _int_list("lbnet_dilation_list", lbnet_dilation_list),
                _int_list("lbnet_stride_list", lbnet_stride_list),
                _int_list("lbnet_pooling_list", lbnet_pooling_list),
                lbnet_pooling_type,
                lbnet_film_hidden_neurons_list,
            )
            if lbnet
            else None
        )

    def _convs(self) -> list[CachedConv1d]:
        return members(self.s_convs, CachedConv1d)

    def _tfilms(self) -> list[TFiLM]:
        return members(self.s_tfilms, TFiLM)

    # -- facts a renderer needs ---------------------------------------------------------
    @property
    def latency_samples(self) -> int:
        """Frames by which the streaming output lags the reference output."""
        return self.tfilm_block_size - 1

    @property
    def lookback_samples(self) -> int:
        """Frames of input and target before the excerpt that :func:`initial_state_from_lookback` needs."""
        input_length, *_ = self.calc_indices(0)
        return input_length

    @property
    def needs_lookback(self) -> bool:
        return self.lookback_net is not None

    @property
    def uses_target(self) -> bool:
        return self.lookback_net is not None

    def label(self) -> str:
        return f"SPTMod ({len(self.s_convs)} blocks, {self.rnn_cell}-{self.rnn_hidden_size}, P={self.tfilm_block_size})"

    def calc_indices(self, target_length: int) -> tuple[int, int, int, int, list[int], list[int]]:
        """The reference's ``Model.calc_indices``: (input length, i0m, i0a, i0l, cmm, cma)."""
        L, N, P = int(target_length), len(self.s_convs), self.tfilm_block_size
        sa = [0] * N
        sm = [conv.context for conv in self._convs()]
        km, cmm, cma = [0] * N, [0] * N, [0] * N
        km[-1] = 1 + ceil(L / P)
        cmm[-1] = cma[-1] = -L + (km[-1] - 1) * P
        for j in range(N - 2, -1, -1):
            sum_sm, sum_sa, sum_cmm = sum(sm[j + 1 :]), sum(sa[j + 1 :]), sum(cmm[j + 1 :])
            km[j] = max(N - j + ceil((L + sum_sm + sum_cmm) / P), 1 + ceil((L + sum_sa) / P))
            cmm[j] = -L + (km[j] - (N - j)) * P - sum_sm - sum_cmm
            cma[j] = -L - sum_sa + (km[j] - 1) * P
        tm0 = L - sm[0] - km[0] * P
        ta0 = -sum(sa)
        tl0 = -self.lookback_net.expected_input_length if self.lookback_net is not None else 0
        input_length = max(L - tm0, L - ta0, L - tl0)
        return (input_length, input_length - (L - tm0), input_length - (L - ta0), input_length - (L - tl0), cmm, cma)

    # -- state --------------------------------------------------------------------------
    def _zero_state(self, batch: int, like: torch.Tensor) -> State:
        parts: list[torch.Tensor] = [like.new_zeros(batch, 0), like.new_zeros(batch, self.latency_samples)]
        for conv in self._convs():
            parts += [
                like.new_zeros(batch, conv.conv.in_channels, conv.context),
                like.new_zeros(batch, self.state_size),
                like.new_zeros(batch, self.rnn_hidden_size, 1),
            ]
        return tuple(parts)

    def _check_state(self, state: State, batch: int) -> None:
        n = len(self.s_convs)
        if (
            not isinstance(state, tuple)
            or len(state) != 2 + 3 * n
            or any(not isinstance(s, torch.Tensor) or s.shape[0] != batch for s in state)
        ):
            raise ValueError("state does not belong to this model or batch size")
        if state[0].shape[1] + state[1].shape[1] != self.latency_samples:
            raise ValueError("state does not belong to this model or batch size")

    def _zp(self, knobs: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.condnet(knobs.to(like)) if self.n_params > 0 else knobs.to(like)

    # -- forward passes -----------------------------------------------------------------
    def _blocks(
        self, x: torch.Tensor, zp: torch.Tensor, layers: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Reference forward in ``CachedPadding`` mode over ``x`` ``(B, L)``, ``L`` a multiple of P."""
        va = x[:, None, :]
        vm = va
        new: list[torch.Tensor] = []
        convs, tfilms = self._convs(), self._tfilms()
        n = len(convs)
        for j in range(n):
            cache, rnn_state, last = layers[3 * j : 3 * j + 3]
            conv = convs[j]
            full = torch.cat([cache, vm], dim=2)
            vm = self.s_acts[j](conv.conv(full))
            tf = tfilms[j]
            out, rnn_state = tf.step(vm, zp, rnn_state)
            tfilm = tf.upsample(torch.cat([last, out], dim=2))
            new += [full[:, :, full.shape[2] - conv.context :], rnn_state, out[:, :, -1:]]
            mul, plus = torch.split(self.s_conv11f[j](tfilm), 1, dim=1)
            va = va * mul + plus
            if j < n - 1:
                mul, plus = torch.split(self.s_conv11s[j](tfilm), self.s_channels_list[j], dim=1)
                vm = vm * mul + plus
        return va[:, 0, :], new

    def forward(
        self, x: torch.Tensor, knobs: torch.Tensor | None = None, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        batch, frames = x.shape
        knobs = knob_matrix(x, knobs, self.num_knobs)
        if state is None:
            state = self._zero_state(batch, x)
        self._check_state(state, batch)
        pending, fifo, layers = state[0].to(x), state[1].to(x), [s.to(x) for s in state[2:]]
        buf = torch.cat([pending, x], dim=1)
        whole = (buf.shape[1] // self.tfilm_block_size) * self.tfilm_block_size
        if whole:
            y, layers = self._blocks(buf[:, :whole], self._zp(knobs, x), layers)
            fifo = torch.cat([fifo, y], dim=1)
        out = fifo[:, :frames]
        new_state = (buf[:, whole:], fifo[:, frames:], *layers)
        return out, tuple(s.detach() for s in new_state)

    def state_after_context(self, x_ctx: torch.Tensor, y_ctx: torch.Tensor | None, knobs: torch.Tensor) -> State:
        """The reference's state after a ``NoPadding`` pass (``use_spn`` when it has an SPN)
        over context ending at the excerpt start, with target length 0: RNNs start from
        the SPN's prediction (zeros without SPN), convolution and interpolation caches end
        at the context's last frame. ``x_ctx``/``y_ctx``: ``(B, >= lookback_samples)``."""
        batch = x_ctx.shape[0]
        input_length, i0m, _, i0l, cmm, _ = self.calc_indices(0)
        if x_ctx.shape[1] < input_length:
            raise ValueError(f"the look-back needs at least {input_length} frames, got {x_ctx.shape[1]}")
        x_ctx = x_ctx[:, x_ctx.shape[1] - input_length :]
        zp = self._zp(knobs, x_ctx)
        n, size = len(self.s_convs), self.state_size
        if self.lookback_net is not None:
            if y_ctx is None or tuple(y_ctx.shape[:1]) != (batch,) or y_ctx.shape[1] < input_length:
                raise ValueError(
                    f"the State Prediction Network needs {input_length} frames of target before the excerpt"
                )
            y_ctx = y_ctx[:, y_ctx.shape[1] - input_length :].to(x_ctx)
            stop = i0l + self.lookback_net.expected_input_length
            window = torch.stack([x_ctx[:, i0l:stop], y_ctx[:, i0l:stop]], dim=1)
            lbstate = self.lookback_net(window, zp)
        else:
            lbstate = x_ctx.new_zeros(batch, n * size)
        vm = x_ctx[:, None, i0m:]
        layers: list[torch.Tensor] = []
        P = self.tfilm_block_size
        convs, tfilms = self._convs(), self._tfilms()
        for j in range(n):
            conv = convs[j]
            layers.append(vm[:, :, vm.shape[2] - conv.context :])
            vm = self.s_acts[j](conv.conv(vm))
            tf = tfilms[j]
            out, rnn_state = tf.step(vm, zp, lbstate[:, j * size : (j + 1) * size])
            layers += [rnn_state, out[:, :, -1:]]
            if j < n - 1:
                tfilm = tf.upsample(out)
                mul, plus = torch.split(self.s_conv11s[j](tfilm), self.s_channels_list[j], dim=1)
                vm = (vm[:, :, P:] * mul + plus)[:, :, cmm[j] :]
        pending = x_ctx.new_zeros(batch, 0)
        fifo = x_ctx.new_zeros(batch, self.latency_samples)
        return tuple(s.detach() for s in (pending, fifo, *layers))


def initial_state_from_lookback(
    module: SPTMod, x_lookback: torch.Tensor, y_lookback: torch.Tensor | None, knobs: torch.Tensor
) -> State:
    """State at the excerpt start predicted from ``(B, N)`` input and target look-back (see
    :meth:`SPTMod.state_after_context`); ``N >= module.lookback_samples``."""
    with torch.no_grad():
        return module.state_after_context(x_lookback, y_lookback, knobs)


def params_from_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """The reference constructor arguments out of a training run's hyper-parameters (other keys dropped)."""
    missing = [k for k in REFERENCE_ARGS if k not in hparams]
    if missing:
        raise ValueError(f"SPTMod hyper-parameters lack {', '.join(missing)}")
    return {k: hparams[k] for k in REFERENCE_ARGS}
