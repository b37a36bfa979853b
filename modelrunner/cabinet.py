"""Cabinet impulse responses: read and check one, bring it to the model's rate, apply it.

NAM and AIDA-X amp models are captured before the loudspeaker, so they are heard
through a cabinet impulse response (IR): the model's output convolved with the IR of a
loudspeaker and microphone. A condition may therefore be "model, then IR".

The rules, in one place:

* **File.** WAV or FLAC (read by :func:`modelrunner.audio.read_audio`), at most
  ``MAX_IR_SECONDS`` long, checked from the header before any sample is decoded; at
  least one frame; no NaN/Inf; not silent (peak above ``SILENCE_PEAK``).
* **Channels.** The models are mono, so the IR is mono. A stereo file whose two
  channels are identical (a mono IR saved as stereo) is used as that mono IR; a stereo
  file with different channels (two microphones, a stereo room) is refused rather than
  mixed, because averaging two microphone positions comb-filters the sound into
  something neither microphone recorded. Export the channel you want as mono.
* **Rate.** The IR is resampled to the model's rate with the runner's own resampler
  (:func:`modelrunner.render.resample`, polyphase, exact ratio) and multiplied by
  ``from_rate / to_rate``, so its frequency response (the filter's gain at every
  frequency below both Nyquist limits) is unchanged: without that factor a 44.1 kHz IR
  played at 48 kHz would be 0.74 dB louder.
* **Level.** The IR is otherwise not normalised: its gain is part of the chain, as in
  the recording of a real amplifier through a real cabinet. The platform's objective
  metrics see that gain (they are computed on the raw output, where a level error is
  part of the error); the item job then aligns every condition's loudness to the
  target (``modelrunner.loudness.align_item``), so participants hear the IR's colour,
  not its level.
* **Convolution.** :func:`apply_ir` is FFT (overlap-add) convolution
  (``scipy.signal.oaconvolve``) of each channel with the IR, in float64, truncated to
  the input's length: the tail that rings past the excerpt's last frame is cut, as the
  device recording (the reference) also ends there. A unit impulse leaves the audio
  unchanged; an impulse at frame ``d`` delays it by ``d`` frames.

Nothing here imports Django; the platform and the CLI (``--ir``) call the same functions.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import oaconvolve

from .audio import read_audio
from .errors import AudioError
from .render import resample

#: The longest IR accepted. Cabinet IRs last 20-500 ms; a room IR a few seconds.
MAX_IR_SECONDS = 10.0
#: A peak below this (-120 dBFS) is silence, whatever the file's format says.
SILENCE_PEAK = 1e-6


@dataclass(frozen=True)
class ImpulseResponse:
    """A checked mono IR: ``data`` float32 ``(frames,)`` at ``sample_rate``.

    ``info`` is its provenance, stored with every render made through it: ``name`` (the
    file's name as its owner called it), ``sha256`` (of the file's bytes),
    ``sample_rate``/``frames``/``seconds``/``channels`` (of the file), and, once
    resampled, ``rate`` (the rate it is applied at), ``resampled`` and ``gain_scale``.
    """

    data: np.ndarray
    sample_rate: int
    info: dict[str, Any] = field(default_factory=dict)


def read_ir(
    path: str | os.PathLike[str], *, name: str | None = None, max_seconds: float = MAX_IR_SECONDS
) -> ImpulseResponse:
    """Read and check an IR file at its own rate; refusals are ``AudioError`` naming ``name``.

    ``name`` is the file's name in messages and provenance (default: the path's name; the
    platform passes the name the file was uploaded under).
    """
    path = Path(path)
    name = name or path.name
    try:
        header = sf.info(str(path))
    except Exception:  # not audio at all: read_audio below says so in its own words
        header = None
    if header is not None and header.samplerate > 0:
        if header.frames == 0:
            raise AudioError(f"{name}: the impulse response has no samples")
        seconds = header.frames / header.samplerate
        if seconds > max_seconds:
            raise AudioError(
                f"{name}: the impulse response lasts {seconds:.1f} s; at most {max_seconds:g} s is accepted "
                "(a cabinet IR lasts well under a second: trim its silent tail)"
            )
    try:
        data, rate = read_audio(path, min_frames=1)
    except AudioError as exc:
        raise AudioError(str(exc).replace(path.name, name)) from None
    channels = data.shape[1]
    if channels == 2:
        if not np.array_equal(data[:, 0], data[:, 1]):
            raise AudioError(
                f"{name}: a stereo impulse response with two different channels is not used (the models are "
                "mono, and mixing two microphone positions would colour the sound); export one channel as mono"
            )
    mono = np.ascontiguousarray(data[:, 0], dtype=np.float32)
    peak = float(np.max(np.abs(mono)))
    if peak < SILENCE_PEAK:
        raise AudioError(f"{name}: the impulse response is silent (peak below -120 dBFS)")
    info = {
        "name": name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "sample_rate": int(rate),
        "frames": int(mono.shape[0]),
        "seconds": round(mono.shape[0] / rate, 6),
        "channels": int(channels),
    }
    return ImpulseResponse(data=mono, sample_rate=int(rate), info=info)


def at_rate(ir: ImpulseResponse, rate: int) -> ImpulseResponse:
    """The IR at ``rate``: resampled (polyphase) and scaled by ``ir.sample_rate / rate`` so its
    frequency response is kept; the same IR when the rates already agree."""
    rate = int(rate)
    if rate == ir.sample_rate:
        return ImpulseResponse(ir.data, rate, {**ir.info, "rate": rate, "resampled": False, "gain_scale": 1.0})
    scale = ir.sample_rate / rate
    data = resample(ir.data, ir.sample_rate, rate).astype(np.float64) * scale
    return ImpulseResponse(
        np.ascontiguousarray(data, dtype=np.float32),
        rate,
        {**ir.info, "rate": rate, "resampled": True, "gain_scale": scale},
    )


def load_ir(
    path: str | os.PathLike[str], sample_rate: int, *, name: str | None = None, max_seconds: float = MAX_IR_SECONDS
) -> ImpulseResponse:
    """Read, check and bring an IR file to ``sample_rate`` (the model's): :func:`read_ir` then :func:`at_rate`."""
    return at_rate(read_ir(path, name=name, max_seconds=max_seconds), sample_rate)


def apply_ir(audio: np.ndarray, ir: ImpulseResponse | np.ndarray) -> np.ndarray:
    """Convolve every channel of ``audio`` ``(frames, channels)`` (or ``(frames,)``) with a mono IR.

    FFT overlap-add convolution in float64, truncated to the input's length (the tail past
    the last frame is dropped); returns float32 ``(frames, channels)``. The IR must already be
    at the audio's rate (:func:`at_rate`).
    """
    h = np.asarray(ir.data if isinstance(ir, ImpulseResponse) else ir, dtype=np.float64)
    if h.ndim != 1 or h.shape[0] == 0:
        raise AudioError(f"an impulse response must be mono (frames,) with at least one frame, got shape {h.shape}")
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise AudioError(f"audio must be (frames,) or (frames, channels), got shape {x.shape}")
    frames = x.shape[0]
    if frames == 0:
        return np.zeros(x.shape, dtype=np.float32)
    y = oaconvolve(x, h[:, None], mode="full", axes=0)[:frames]
    return np.ascontiguousarray(y, dtype=np.float32)
