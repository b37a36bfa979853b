"""The render policy: how a model is started and warmed for one excerpt, in one place.

The command line (``python -m modelrunner render``), the Python API and the platform's
render worker all call :func:`render_excerpt`, so one model, one excerpt and one
look-back context give the same samples everywhere. The decision:

* A model that estimates its start state from context (``state_after_context``), that
  needs look-back, or whose output lags its input (``latency_samples``) is rendered by
  :func:`modelrunner.lookback.render_excerpt` on the mono mix at the model's rate: from
  the look-back state when the context suffices (mode ``"lookback"``), else from zero
  state after a warm-up over the given context (``"zero-warmup"``), with the latency
  removed. Its output is mono.
* Every other model starts from silence (the streaming protocol's zero state, mode
  ``"zero"``) and streams the whole excerpt with :func:`modelrunner.render.render`,
  each channel as its own signal; look-back context, if given, is not used.

Audio in and out is float32 ``(frames, channels)`` at the excerpt's rate: the excerpt
is resampled to the model's rate and the output back (polyphase, exact ratio), then
trimmed or zero-padded to the excerpt's length.

A cabinet impulse response (``ir``, :mod:`modelrunner.cabinet`) is applied to the
model's output at the model's rate, before the output goes back to the excerpt's rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import cabinet, lookback
from .errors import AudioError
from .model import EffectModel
from .render import Progress, _check_audio, _check_rate, _fit_length, render, resample

#: ``start_state["mode"]`` of models that start from silence and ignore look-back context.
ZERO = "zero"


def uses_start_context(model: EffectModel) -> bool:
    """True when the model is rendered by the look-back path (state from context, or latency)."""
    req = lookback.requirements(model)
    return bool(req["supports_lookback"] or req["needs_lookback"] or req["latency_samples"])


def render_excerpt(
    model: EffectModel,
    dry: np.ndarray,
    sample_rate: int,
    *,
    knobs: dict[str, float] | None = None,
    lookback_dry: np.ndarray | None = None,
    lookback_reference: np.ndarray | None = None,
    progress: Progress | None = None,
    ir: cabinet.ImpulseResponse | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Render ``dry`` through ``model`` under the render policy (see the module docstring).

    ``dry``: ``(frames,)`` or ``(frames, channels)`` at ``sample_rate``.
    ``lookback_dry``/``lookback_reference``: the input and the device's recording just
    before the excerpt, at ``sample_rate`` (same length), or ``None``. Returns float32
    ``(frames, channels)`` at ``sample_rate`` with the excerpt's length (one channel for
    look-back and latency models) and the start state to store with the output:
    ``{"mode": "zero", "stateful", "receptive_field"}`` or the look-back ``mode`` and
    ``info`` of :func:`modelrunner.lookback.render_excerpt`. ``ir``: a cabinet impulse
    response at the model's rate (:func:`modelrunner.cabinet.load_ir`), applied after the model.
    """
    rate = _check_rate(sample_rate)
    x = _check_audio(dry, "dry excerpt")
    if lookback_reference is not None and lookback_dry is None:
        raise AudioError("lookback_reference was given without lookback_dry")
    if ir is not None:
        return _render_with_ir(model, x, rate, ir, knobs, lookback_dry, lookback_reference, progress)
    if not uses_start_context(model):
        output = render(model, x, rate, knobs=knobs, progress=progress)
        return output, {"mode": ZERO, "stateful": model.stateful, "receptive_field": model.receptive_field}
    sr = model.sample_rate
    lb_dry = None if lookback_dry is None else _mono(lookback_dry, "lookback_dry", rate, sr)
    lb_ref = None if lookback_reference is None else _mono(lookback_reference, "lookback_reference", rate, sr)
    y, mode, info = lookback.render_excerpt(model, resample(x.mean(axis=1), rate, sr), lb_dry, lb_ref, knobs=knobs)
    output = _fit_length(resample(y, sr, rate)[:, None], x.shape[0])
    if progress is not None:
        progress(1.0)
    return np.ascontiguousarray(output, dtype=np.float32), {"mode": mode, **info}


def _render_with_ir(
    model: EffectModel,
    x: np.ndarray,
    rate: int,
    ir: cabinet.ImpulseResponse,
    knobs: dict[str, float] | None,
    lookback_dry: np.ndarray | None,
    lookback_reference: np.ndarray | None,
    progress: Progress | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The policy's render at the model's rate, then the IR there, then back to ``rate``."""
    sr = model.sample_rate
    if ir.sample_rate != sr:
        raise AudioError(
            f"the impulse response is at {ir.sample_rate} Hz but the model runs at {sr} Hz; "
            "bring it to the model's rate first (modelrunner.cabinet.at_rate)"
        )
    lb_dry = None if lookback_dry is None else resample(_check_audio(lookback_dry, "lookback_dry"), rate, sr)
    lb_ref = (
        None
        if lookback_reference is None
        else resample(_check_audio(lookback_reference, "lookback_reference"), rate, sr)
    )
    y, start = render_excerpt(
        model, resample(x, rate, sr), sr, knobs=knobs, lookback_dry=lb_dry, lookback_reference=lb_ref, progress=progress
    )
    output = _fit_length(resample(cabinet.apply_ir(y, ir), sr, rate), x.shape[0])
    return np.ascontiguousarray(output, dtype=np.float32), start


def _mono(audio: np.ndarray, what: str, from_rate: int, to_rate: int) -> np.ndarray:
    """The mono mix of look-back audio, at the model's rate."""
    return resample(_check_audio(audio, what).mean(axis=1), from_rate, to_rate)
