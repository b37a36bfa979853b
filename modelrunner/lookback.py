"""How a stateful model's state at the start of an excerpt is obtained, and recorded.

Some models are trained to start from a state estimated from audio *before* the
excerpt: SPTMod's State Prediction Network reads input and target (Bourdin et al.
2025), the state-matching GRU's encoder reads an initialisation segment (Peussa et al.,
DAFx 2021), the autoregressive MLP is teacher-forced with the device's past output.
Every stimulus is rendered in one of two modes, which the caller stores with it:

``"lookback"``
    The researcher uploaded context immediately before the excerpt (``lookback_dry``
    and, when the model reads it, ``lookback_target``, at the model's rate), at least
    ``requirements(model)["lookback_samples"]`` frames long. The state is the model's
    own estimate from that context (``module.state_after_context``).
``"zero-warmup"``
    Zero states (the streaming protocol's "silence before the start"), then, when
    ``lookback_dry`` is given, the model runs over its last ``W`` frames
    (``warmup_samples``, default all of it) and those outputs are discarded; the
    excerpt itself is never shortened. Without context ``W = 0``.

``info`` says which frames were used and why a look-back was not. Models whose output
lags the reference by ``latency_samples`` (SPTMod processes whole blocks) are
rendered by :func:`render_excerpt` with that lag removed, so the output lines up with
the dry excerpt frame for frame.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import AudioError
from .model import EffectModel, fast_path
from .render import _forward_stream

LOOKBACK = "lookback"
ZERO_WARMUP = "zero-warmup"


def requirements(model: EffectModel) -> dict[str, Any]:
    """What the model wants before an excerpt: ``needs_lookback``, ``lookback_samples``,
    ``uses_target`` (the look-back must include the device's output), ``latency_samples``."""
    m = model.module
    supports = callable(getattr(m, "state_after_context", None))
    return {
        "needs_lookback": bool(getattr(m, "needs_lookback", False)),
        "supports_lookback": supports,
        "lookback_samples": int(getattr(m, "lookback_samples", 0)) if supports else 0,
        "uses_target": bool(getattr(m, "uses_target", False)) if supports else False,
        "latency_samples": int(getattr(m, "latency_samples", 0)),
    }


def _as_tensor(a: Any, what: str) -> torch.Tensor:
    arr = np.asarray(a, dtype=np.float32)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise AudioError(f"{what} must be mono (frames,), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise AudioError(f"{what} contains NaN or infinite samples")
    return torch.from_numpy(np.ascontiguousarray(arr))[None, :]


def prepare(
    model: EffectModel,
    dry: Any,
    lookback_dry: Any = None,
    lookback_target: Any = None,
    *,
    knobs: dict[str, float] | None = None,
    warmup_samples: int | None = None,
) -> tuple[Any, str, dict[str, Any]]:
    """Return ``(state, mode, info)`` for rendering ``dry`` (mono, model rate) from its start.

    ``lookback_dry``/``lookback_target``: the frames just before the excerpt (mono, model
    rate), or ``None``. ``state`` is passed as the first call's state (``None`` means
    silence). ``mode`` is ``"lookback"`` or ``"zero-warmup"`` (see the module docstring).
    """
    _as_tensor(dry, "dry excerpt")
    req = requirements(model)
    # The state is estimated where the model renders (its device), and stays there.
    device = model.device
    k = model.knob_tensor(knobs, 1).to(device)
    x_ctx = None if lookback_dry is None else _as_tensor(lookback_dry, "lookback_dry").to(device)
    y_ctx = None if lookback_target is None else _as_tensor(lookback_target, "lookback_target").to(device)
    if x_ctx is not None and y_ctx is not None and x_ctx.shape[1] != y_ctx.shape[1]:
        raise AudioError(f"lookback_dry has {x_ctx.shape[1]} frames but lookback_target {y_ctx.shape[1]}")
    info: dict[str, Any] = {"lookback_samples_needed": req["lookback_samples"], "uses_target": req["uses_target"]}
    reason = None
    if not req["supports_lookback"]:
        reason = "the architecture has no state estimator"
    elif x_ctx is None:
        reason = "no look-back audio was given"
    elif req["uses_target"] and y_ctx is None:
        reason = "the state estimator needs lookback_target and none was given"
    elif x_ctx.shape[1] < req["lookback_samples"]:
        reason = f"look-back of {x_ctx.shape[1]} frames is shorter than the {req['lookback_samples']} needed"
    if reason is None:
        # Duck-typed: requirements() found a callable state_after_context on the module.
        estimator: Any = model.module
        with torch.no_grad():
            state = estimator.state_after_context(x_ctx, y_ctx if req["uses_target"] else None, k)
        info.update({"lookback_frames_used": req["lookback_samples"], "target_used": req["uses_target"]})
        return state, LOOKBACK, info
    info["lookback_unavailable"] = reason
    state = None
    used = 0
    if x_ctx is not None:
        used = x_ctx.shape[1] if warmup_samples is None else max(0, min(int(warmup_samples), x_ctx.shape[1]))
        if used:
            with torch.no_grad():
                _, state = model.module(x_ctx[:, x_ctx.shape[1] - used :], k, None)
    info.update({"warmup_samples": used, "warmup_source": "lookback_dry" if used else "none"})
    return state, ZERO_WARMUP, info


class _StartFrom(nn.Module):
    """A module that starts from a given state when called with ``state=None``."""

    def __init__(self, inner: nn.Module, initial: Any) -> None:
        super().__init__()
        self.inner = inner
        self.initial = initial

    def forward(
        self, x: torch.Tensor, knobs: torch.Tensor | None = None, state: Any = None
    ) -> tuple[torch.Tensor, Any]:
        out: tuple[torch.Tensor, Any] = self.inner(x, knobs, self.initial if state is None else state)
        return out

    def fast_forward(
        self, x: torch.Tensor, knobs: torch.Tensor | None = None, state: Any = None
    ) -> tuple[torch.Tensor, Any]:
        """The inner module's fast path, from the same state."""
        return fast_path(self.inner)(x, knobs, self.initial if state is None else state)


def bind(model: EffectModel, state: Any) -> EffectModel:
    """A copy of ``model`` whose module starts from ``state`` (batch 1) instead of silence,
    for use with :func:`modelrunner.render.render` (one signal, ``parallel=False``)."""
    bound = copy.copy(model)
    bound.module = _StartFrom(model.module, state)
    bound.metadata = dict(model.metadata, start_state="bound")
    return bound


def render_excerpt(
    model: EffectModel,
    dry: Any,
    lookback_dry: Any = None,
    lookback_target: Any = None,
    *,
    knobs: dict[str, float] | None = None,
    warmup_samples: int | None = None,
    chunk_size: int = 65536,
) -> tuple[np.ndarray, str, dict[str, Any]]:
    """Render mono ``dry`` at the model's rate after :func:`prepare`; returns float32
    ``(frames,)``, the mode and the info to store with the stimulus. The model's
    ``latency_samples`` are removed by feeding that many zeros after the excerpt."""
    state, mode, info = prepare(model, dry, lookback_dry, lookback_target, knobs=knobs, warmup_samples=warmup_samples)
    x = _as_tensor(dry, "dry excerpt")
    latency = requirements(model)["latency_samples"]
    x = torch.cat([x, x.new_zeros(1, latency)], dim=1)
    y = _forward_stream(model, x, model.knob_tensor(knobs, 1), int(chunk_size), state=state)[0, latency:]
    info["latency_compensated"] = latency
    return y.numpy().astype(np.float32), mode, info
