"""Shared helpers for the format tests: short fixture audio and chunked rendering."""

from __future__ import annotations

import numpy as np
import torch

from modelrunner.audio import read_audio
from modelrunner.model import EffectModel
from tests.paths import fixture_path

# Many tiny forward calls: thread start-up costs more than it saves on a shared machine.
torch.set_num_threads(1)


def guitar(seconds: float = 1.0, offset: float = 1.0) -> torch.Tensor:
    """``(1, frames)`` float32 of the guitar fixture (44.1 kHz), from ``offset`` seconds."""
    data, sr = read_audio(fixture_path("audio", "guitar_example_44k.wav"))
    start = int(offset * sr)
    return torch.from_numpy(np.ascontiguousarray(data[start : start + int(seconds * sr), 0]))[None, :]


def run_whole(model: EffectModel, x: torch.Tensor, knobs: dict | None = None) -> torch.Tensor:
    with torch.no_grad():
        y, _ = model.module(x, model.knob_tensor(knobs, x.shape[0]))
    return y


def run_chunked(
    model: EffectModel, x: torch.Tensor, sizes: list[int], knobs: dict | None = None, fast: bool = False
) -> torch.Tensor:
    """Render ``x`` in chunks cycling through ``sizes``, carrying the state.

    ``fast``: call what the renderer calls (``model.streaming_call()``) instead of the module.
    """
    k = model.knob_tensor(knobs, x.shape[0])
    step = model.streaming_call() if fast else model.module
    state = None
    out = []
    pos = 0
    i = 0
    with torch.no_grad():
        while pos < x.shape[1]:
            n = sizes[i % len(sizes)]
            y, state = step(x[:, pos : pos + n], k, state)
            out.append(y)
            pos += n
            i += 1
    return torch.cat(out, dim=1)


#: (chunk sizes cycled, frames rendered): small chunks on a short prefix keep tests fast.
CHUNKINGS = [([1], 150), ([7], 700), ([4096], None), ([3, 1, 50, 333], 1500)]


def assert_chunked_equals_whole(model: EffectModel, x: torch.Tensor, knobs: dict | None = None) -> float:
    """Render whole and in chunks; assert max abs difference <= 1e-5 and return it."""
    whole = run_whole(model, x, knobs)
    worst = 0.0
    for sizes, frames in CHUNKINGS:
        n = x.shape[1] if frames is None else min(frames, x.shape[1])
        diff = float((run_chunked(model, x[:, :n], sizes, knobs) - whole[:, :n]).abs().max())
        assert diff <= 1e-5, f"chunks {sizes}: max abs diff {diff}"
        worst = max(worst, diff)
    return worst
