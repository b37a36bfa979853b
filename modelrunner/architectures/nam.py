"""Neural Amp Modeler networks (Linear, LSTM, WaveNet) in streaming form.

The computations follow NeuralAmpModelerCore (``NAM/linear.cpp``, ``NAM/lstm.cpp``,
``NAM/wavenet.cpp``), i.e. the inference side of the ``.nam`` file format; the weight
layout lives in :mod:`modelrunner.formats.nam`. WaveNet: van den Oord et al.,
"WaveNet: a generative model for raw audio", arXiv:1609.03499 (2016), in the layer-array
form of Atkinson's neural-amp-modeler.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import native, pathchoice
from ._streaming import Caches, CausalConv1d, State, StreamingConvNet, activation, members
from .recurrent import CompiledRecurrent, RecurrentState


class NamLinear(StreamingConvNet):
    """A causal FIR filter of ``receptive_field`` taps: ``(B, T) -> (B, T)``."""

    def __init__(self, receptive_field: int, bias: bool) -> None:
        super().__init__()
        self.conv = CausalConv1d(1, 1, int(receptive_field), bias=bool(bias))

    def _forward(self, x: torch.Tensor, knobs: torch.Tensor, caches: Caches) -> torch.Tensor:
        return caches(self.conv, x)


class NamLSTM(CompiledRecurrent, nn.Module):
    """Stacked LSTM + linear head, starting from the learned initial hidden/cell state.

    NAM exports an initial state per layer (found by running the trained network on
    silence), and NeuralAmpModelerCore starts every stream from it; ``state=None`` does
    the same here. ``(B, T) -> (B, T)``; state ``(h, c)``, each ``(num_layers, B, hidden)``.
    """

    initial_hidden: torch.Tensor
    initial_cell: torch.Tensor

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
        out, (h, c) = self.core(x[:, :, None], self._start(x, state))
        return self.head(out)[:, :, 0], (h.detach(), c.detach())

    def _start(self, x: torch.Tensor, state: RecurrentState | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``state``, or the learned initial state for every row of ``x``."""
        if state is not None:
            if not isinstance(state, tuple):
                raise ValueError("an LSTM's state is a pair (h, c)")
            return state
        batch = x.shape[0]
        return (
            self.initial_hidden[:, None, :].expand(-1, batch, -1).contiguous(),
            self.initial_cell[:, None, :].expand(-1, batch, -1).contiguous(),
        )

    def _recurrent_parts(self) -> tuple[nn.RNNBase, nn.Linear, int]:
        return self.core, self.head, 0

    def _kernel_inputs(
        self, x: torch.Tensor, knobs: torch.Tensor | None, state: RecurrentState | None
    ) -> tuple[None, RecurrentState]:
        return None, self._start(x, state)


#: A layer's activation: a torch class name, or a ``.nam`` activation object
#: (``{"type": name, ...}``) whose parameters are read where ``layer_activation`` knows them.
NamActivation = str | dict[str, Any]


def layer_activation(spec: NamActivation) -> nn.Module:
    """The activation module of ``spec``: ``{"type": "LeakyReLU", "negative_slope": s}`` is
    ``nn.LeakyReLU(s)`` (NeuralAmpModelerCore ``activations.h``, default 0.01), Hardtanh's
    ``min_val``/``max_val`` are read too; any other parameter is refused (``ValueError``),
    never silently replaced by a default."""
    if isinstance(spec, str):
        return activation(spec)
    name = spec.get("type", spec.get("name"))
    if not isinstance(name, str):
        raise ValueError(f"activation {spec!r} is not a name")
    params = {k: v for k, v in spec.items() if k not in ("type", "name")}
    module = activation(name)
    for value in params.values():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} parameter {value!r} is not a number")
    if isinstance(module, nn.LeakyReLU) and set(params) <= {"negative_slope"}:
        return nn.LeakyReLU(float(params.get("negative_slope", 0.01)))
    if isinstance(module, nn.Hardtanh) and set(params) <= {"min_val", "max_val"}:
        return nn.Hardtanh(float(params.get("min_val", -1.0)), float(params.get("max_val", 1.0)))
    if params:
        raise ValueError(f"{name} parameters {sorted(params)}")
    return module


class NamWaveNetLayer(nn.Module):
    """Dilated conv + input mixer (conditioning) -> activation -> 1x1, with residual."""

    def __init__(
        self, condition_size: int, channels: int, kernel_size: int, dilation: int, act: NamActivation, gated: bool
    ) -> None:
        super().__init__()
        mid = 2 * channels if gated else channels
        self.gated = gated
        self.channels = channels
        self.conv = CausalConv1d(channels, mid, kernel_size, dilation=dilation, bias=True)
        self.input_mixer = nn.Conv1d(condition_size, mid, 1, bias=False)
        self.activation = layer_activation(act)
        self.layer1x1 = nn.Conv1d(channels, channels, 1, bias=True)


class NamLayerArray(nn.Module):
    """Rechannel, a stack of ``NamWaveNetLayer``, and the head rechannel."""

    def __init__(
        self,
        input_size: int,
        condition_size: int,
        channels: int,
        kernel_size: int | list[int],
        dilations: list[int],
        act: NamActivation | list[NamActivation],
        gated: bool | list[bool],
        head_out: int,
        head_kernel: int,
        head_bias: bool,
    ) -> None:
        """``kernel_size``, ``act`` and ``gated`` are one value for every layer or a list with
        one per layer (``.nam`` 0.7 ``kernel_sizes``, as in A2 files)."""
        super().__init__()
        kernels = kernel_size if isinstance(kernel_size, list) else [kernel_size] * len(dilations)
        acts = act if isinstance(act, list) else [act] * len(dilations)
        gates = gated if isinstance(gated, list) else [gated] * len(dilations)
        if len(kernels) != len(dilations) or len(acts) != len(dilations) or len(gates) != len(dilations):
            raise ValueError("one kernel size, one activation and one gating mode per layer")
        self.rechannel = nn.Conv1d(input_size, channels, 1, bias=False)
        self.layers = nn.ModuleList(
            NamWaveNetLayer(condition_size, channels, k, d, a, g) for k, d, a, g in zip(kernels, dilations, acts, gates)
        )
        self.head_rechannel = CausalConv1d(channels, head_out, head_kernel, bias=head_bias)

    def wavenet_layers(self) -> list[NamWaveNetLayer]:
        return members(self.layers, NamWaveNetLayer)


def _summed(head: torch.Tensor | None) -> torch.Tensor:
    """The head sum so far (a layer array without layers has none)."""
    if head is None:
        raise ValueError("a NAM WaveNet layer array needs at least one layer")
    return head


@dataclass(frozen=True)
class _FoldedLayer:
    """One layer's weights as ``NamWaveNet._fast_forward`` multiplies with them."""

    folded: bool  # tanh folded into a sigmoid: tanh(z0) = 2 sigmoid(2 z0) - 1
    taps: list[torch.Tensor]
    mixer_scalar: torch.Tensor | None
    mixer: torch.Tensor | None
    bias: torch.Tensor | None
    w1: torch.Tensor
    b1: torch.Tensor


class NamWaveNet(StreamingConvNet):
    """NAM's WaveNet: layer arrays whose head outputs feed the next array's head sum.

    ``(B, T) -> (B, T)``; the conditioning input of every layer is the audio input, or,
    with ``condition_dsp`` (a ``.nam`` 0.6 option), that network's multi-channel output
    for the same input (NeuralAmpModelerCore ``WaveNet::_process_condition``); the first
    layer array still takes the audio itself.
    """

    head_scale: torch.Tensor

    def __init__(self, arrays: list[NamLayerArray], head_scale: float, condition_dsp: NamWaveNet | None = None) -> None:
        super().__init__()
        self.arrays = nn.ModuleList(arrays)
        self.register_buffer("head_scale", torch.tensor(float(head_scale)))
        # A submodule: its convolutions count in the receptive field, its contexts in the state.
        self.condition_dsp = condition_dsp

    def layer_arrays(self) -> list[NamLayerArray]:
        return members(self.arrays, NamLayerArray)

    def _condition(self, x: torch.Tensor, knobs: torch.Tensor, caches: Caches) -> torch.Tensor:
        """Every layer's condition: the input, or the ``condition_dsp``'s output (its
        contexts come first in the state)."""
        return x if self.condition_dsp is None else self.condition_dsp._forward(x, knobs, caches)

    def _forward(self, x: torch.Tensor, knobs: torch.Tensor, caches: Caches) -> torch.Tensor:
        condition = self._condition(x, knobs, caches)
        y = x
        head: torch.Tensor | None = None
        for arr in self.layer_arrays():
            y = arr.rechannel(y)
            for layer in arr.wavenet_layers():
                z = caches(layer.conv, y) + layer.input_mixer(condition)
                if layer.gated:
                    post = layer.activation(z[:, : layer.channels]) * torch.sigmoid(z[:, layer.channels :])
                else:
                    post = layer.activation(z)
                y = y + layer.layer1x1(post)
                head = post if head is None else head + post
            head = caches(arr.head_rechannel, _summed(head))
        return self.head_scale * _summed(head)

    @property
    def batch_chunk_budget(self) -> int:
        """Frames per forward call, all batch rows together. PyTorch's path keeps one call's
        activations in cache at 2**15 (which beat 2**16 by about 1.2x on one core); the
        compiled kernel works through each signal in blocks of 64 frames and runs 51x real
        time at 2**16 against 48x at 2**14 (12 x 10 s, one core)."""
        return self.path_plan(self.render_choice.path)[1]

    def fast_forward(
        self, x: torch.Tensor, knobs: torch.Tensor | None = None, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """``forward``'s output and state (to float rounding, ~1e-7) in fewer, cheaper kernels.

        Used by the renderer; ``forward`` stays the plain reference. A ``condition_dsp``
        runs in PyTorch's plain path and its output feeds either fast path. Where the compiled
        kernel (``kernels/wavenet.c``) is built, every layer's activation is tanh, ReLU or LeakyReLU
        (gated or not) and it is the chosen path (``render_choice``: the faster on this CPU),
        each layer array's layers run there (``_compiled_forward``).
        Otherwise PyTorch's path (``_fast_forward``): each dilated convolution is one
        batched matrix product per tap, on views of the cached input (no copies); the input
        mixer is one fused multiply-add; a tanh layer computes ``tanh(z) = 2 sigmoid(2z) - 1``
        with both factors folded into the weights (PyTorch's CPU sigmoid is about 3.5x
        cheaper than its tanh) and the ``-1`` into the 1x1 bias and the head sum; 1x1
        convolutions are batched matrix products.
        """
        path = self.render_choice.path if x.device.type == "cpu" else pathchoice.PYTORCH
        return self.path_run(path, x, state, knobs)

    @property
    def render_choice(self) -> pathchoice.Choice:
        """The path that renders this model and why (measured once per shape and CPU)."""
        where = self.head_scale.device
        if where.type != "cpu":
            return pathchoice.on_device(where)
        if self._compiled() is None:
            reason = "an activation the kernel lacks" if native.library() is not None else native.reason()
            return pathchoice.unavailable(reason)
        key = (native.version_key([self]), torch.get_num_threads(), pathchoice.setting())
        return native.kept(self, "_render_choice", key, lambda: pathchoice.choose(self))

    @property
    def render_kernel(self) -> str:
        """Which kernel renders this model, for ``inspect`` and the render report."""
        choice = self.render_choice
        if choice.compiled:
            return "compiled WaveNet kernel" + (" (condition_dsp in PyTorch)" if self.condition_dsp is not None else "")
        return f"PyTorch ({choice.short()})"

    def path_sizes(self) -> dict[str, Any]:
        """What sets the render speed of either path (``modelrunner.pathchoice``)."""
        arrays = []
        for arr in self.layer_arrays():
            layers = arr.wavenet_layers()
            head = arr.head_rechannel
            arrays.append(
                {
                    "inputs": arr.rechannel.in_channels,
                    "channels": arr.rechannel.out_channels,
                    "conditions": layers[0].input_mixer.in_channels if layers else 0,
                    "layers": [
                        [
                            layer.conv.kernel_size[0],
                            layer.conv.dilation[0],
                            type(layer.activation).__name__,
                            bool(layer.gated),
                        ]
                        for layer in layers
                    ],
                    "head": [head.out_channels, head.kernel_size[0], head.bias is not None],
                }
            )
        dsp = self.condition_dsp.path_sizes() if self.condition_dsp is not None else None
        return {"arrays": arrays, "condition_dsp": dsp, "receptive_field": self.receptive_field}

    def path_plan(self, path: str) -> tuple[int, int]:
        """``(rows, batch_chunk_budget)`` when ``path`` renders: 4 rows (the number of
        rows barely changes either path's speed per frame)."""
        return 4, (1 << 16 if path == pathchoice.COMPILED else 1 << 15)

    def path_run(
        self, path: str, x: torch.Tensor, state: State | None, knobs: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """One streaming call through ``path`` (for ``fast_forward`` and ``modelrunner.pathchoice``)."""
        if path == pathchoice.COMPILED:
            packed = self._compiled()
            if packed is None:
                raise RuntimeError("the compiled WaveNet kernel does not run this model")
            return self._stream(functools.partial(self._compiled_forward, packed), x, knobs, state)
        return self._stream(self._fast_forward, x, knobs, state)

    def _compiled(self) -> list[native.PackedLayerArray] | None:
        """The layer arrays packed for ``kernels/wavenet.c`` (again when the weights change),
        or ``None`` where the kernel is missing or does not run every layer."""
        if native.library() is None:
            return None

        def pack() -> list[native.PackedLayerArray] | None:
            packed = [native.pack_wavenet_array(list(arr.wavenet_layers())) for arr in self.layer_arrays()]
            complete = [p for p in packed if p is not None]
            return complete if len(complete) == len(packed) else None

        return native.kept(self, "_compiled_cache", native.version_key([self]), pack)

    def _compiled_forward(
        self, arrays: list[native.PackedLayerArray], x: torch.Tensor, knobs: torch.Tensor, caches: Caches
    ) -> torch.Tensor:
        lib = native.library()
        if lib is None:
            raise RuntimeError(f"the compiled WaveNet kernel is not available ({native.reason()})")
        condition = self._condition(x, knobs, caches).contiguous()
        y = x
        head: torch.Tensor | None = None
        for arr, packed in zip(self.layer_arrays(), arrays):
            y = arr.rechannel(y).contiguous()
            # As Caches.__call__ does, only convolutions with a context carry one in the state.
            kept: list[torch.Tensor] = []
            contexts: list[torch.Tensor] = []
            for layer in arr.wavenet_layers():
                if layer.conv.context > 0:
                    kept.append(caches.take(layer.conv, len(kept)))
                    contexts.append(kept[-1])
                else:
                    contexts.append(y.new_zeros(y.shape[0], y.shape[1], 0))
            head = torch.zeros_like(y) if head is None else head.contiguous()
            native.run_wavenet_array(lib, packed, y, condition, head, contexts)
            caches.keep(kept)
            head = caches(arr.head_rechannel, head)
        return self.head_scale * _summed(head)

    def _fast_weights(self, batch: int) -> list[list[_FoldedLayer]]:
        """Per layer: the folded, batch-expanded weights ``_fast_forward`` multiplies with.

        Made once per batch size and kept while the parameters are unchanged (a render
        makes hundreds of calls with the same batch)."""
        return native.kept(self, "_fast_cache", (batch, native.version_key([self])), lambda: self._fold_weights(batch))

    def _fold_weights(self, batch: int) -> list[list[_FoldedLayer]]:
        prepared = []
        with torch.no_grad():
            for arr in self.layer_arrays():
                layers = []
                for layer in arr.wavenet_layers():
                    conv = layer.conv
                    folded = layer.gated is False and isinstance(layer.activation, nn.Tanh)
                    k = 2.0 if folded else 1.0
                    weight = conv.weight * k
                    mixer = layer.input_mixer.weight * k  # (mid, condition, 1)
                    w1 = layer.layer1x1.weight[:, :, 0]
                    b1 = layer.layer1x1.bias
                    assert b1 is not None  # NamWaveNetLayer builds its 1x1 with a bias
                    if folded:  # tanh(z0) = 2 sigmoid(2 z0) - 1: the 2 and the -1 go into the 1x1
                        w1, b1 = w1 * 2.0, b1 - w1.sum(dim=1)
                    layers.append(
                        _FoldedLayer(
                            folded=folded,
                            taps=[
                                weight[:, :, t].expand(batch, -1, -1).contiguous() for t in range(conv.kernel_size[0])
                            ],
                            mixer_scalar=mixer[None, :, 0, :] if mixer.shape[1] == 1 else None,
                            mixer=mixer[:, :, 0].expand(batch, -1, -1).contiguous() if mixer.shape[1] != 1 else None,
                            bias=(conv.bias * k)[None, :, None] if conv.bias is not None else None,
                            w1=w1.expand(batch, -1, -1).contiguous(),
                            b1=b1[None, :, None],
                        )
                    )
                prepared.append(layers)
        return prepared

    def _fast_forward(self, x: torch.Tensor, knobs: torch.Tensor, caches: Caches) -> torch.Tensor:
        batch = x.shape[0]
        condition = self._condition(x, knobs, caches)
        y = x
        head: torch.Tensor | None = None
        for arr, prepared in zip(self.layer_arrays(), self._fast_weights(batch)):
            y = arr.rechannel(y)
            sig_sum: torch.Tensor | None = None  # sum of sigmoid(2z) over tanh layers
            tanh_layers = 0
            post_sum: torch.Tensor | None = None  # sum of the other layers' outputs
            for layer, w in zip(arr.wavenet_layers(), prepared):
                conv = layer.conv
                full = caches.with_context(conv, y)
                frames = y.shape[2]
                d = conv.dilation[0]
                z = torch.bmm(w.taps[0], full[:, :, :frames])
                for tap in range(1, len(w.taps)):
                    z = z.baddbmm_(w.taps[tap], full[:, :, tap * d : tap * d + frames])
                if w.mixer_scalar is not None:
                    z.addcmul_(w.mixer_scalar, condition)
                elif w.mixer is not None:
                    z.baddbmm_(w.mixer, condition)
                if w.bias is not None:
                    z.add_(w.bias)
                if w.folded:
                    post = z.sigmoid_()  # tanh(z0) = 2 * post - 1
                    tanh_layers += 1
                    sig_sum = post if sig_sum is None else sig_sum.add_(post)
                else:
                    if layer.gated:
                        post = layer.activation(z[:, : layer.channels]) * torch.sigmoid(z[:, layer.channels :])
                    else:
                        post = layer.activation(z)
                    post_sum = post.clone() if post_sum is None else post_sum.add_(post)
                # In place: y is this call's own tensor (the caches hold copies of it).
                y = y.baddbmm_(w.w1, post).add_(w.b1)
            if sig_sum is not None:
                sig_sum = sig_sum.mul_(2.0).sub_(float(tanh_layers))
            for part in (sig_sum, post_sum):
                if part is not None:
                    head = part if head is None else head.add_(part)
            head = caches(arr.head_rechannel, _summed(head))
        return self.head_scale * _summed(head)
