"""The one audio I/O helper: read, validate and write audio files.

Arrays are float32 shaped ``(frames, channels)``. Writes go to a temporary file in
the destination folder and are renamed into place, so a reader never sees a
half-written file and a rerun is harmless.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from . import limits
from .errors import AudioError

#: Formats accepted for upload. soundfile also reads others; we keep to lossless.
ACCEPTED_FORMATS = {"WAV", "FLAC", "WAVEX", "AIFF"}
MIN_SAMPLE_RATE = 8_000
#: The highest experiment rate is 96 kHz; a faster upload only adds storage and render time.
MAX_SAMPLE_RATE = 96_000
MAX_CHANNELS = 2
#: Chunks walked before a WAV's data chunk; real files have a handful.
_MAX_WAV_CHUNKS = 64


def read_audio(
    path: str | os.PathLike[str],
    *,
    max_channels: int = MAX_CHANNELS,
    min_frames: int = 2,
    max_sample_rate: int = MAX_SAMPLE_RATE,
) -> tuple[np.ndarray, int]:
    """Read a WAV/FLAC file as float32 ``(frames, channels)`` and its sample rate.

    Refuses unreadable or non-audio files, formats other than lossless PCM/float,
    too many channels, implausible sample rates, too few frames and NaN/Inf samples,
    each with an ``AudioError`` naming the file and the problem.
    """
    name = Path(path).name
    _header(path, name, max_channels, max_sample_rate)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{name}: audio data is damaged or truncated ({_short(exc)})") from None
    if data.shape[0] < min_frames:
        frames = data.shape[0]
        plural = "" if frames == 1 else "s"
        raise AudioError(f"{name}: only {frames} sample frame{plural}; at least {min_frames} needed")
    if not np.isfinite(data).all():
        raise AudioError(f"{name}: contains NaN or infinite samples")
    return data, int(sr)


def _header(path: str | os.PathLike[str], name: str, max_channels: int, max_sample_rate: int) -> sf._SoundFileInfo:
    """Everything the header alone tells: format, channels, rate and a length within
    ``limits`` (``audio_seconds``), so a forged length is refused before a sample is decoded."""
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError
        raise AudioError(f"{name}: not a readable audio file ({_short(exc)})") from None
    if info.format not in ACCEPTED_FORMATS:
        raise AudioError(f"{name}: format {info.format} is not accepted (use WAV or FLAC)")
    _check_wav_data_size(Path(path), name)
    if info.channels > max_channels:
        raise AudioError(f"{name}: {info.channels} channels; at most {max_channels} are accepted")
    if not (MIN_SAMPLE_RATE <= info.samplerate <= max_sample_rate):
        raise AudioError(f"{name}: sample rate {info.samplerate} Hz is outside {MIN_SAMPLE_RATE}..{max_sample_rate} Hz")
    seconds = limits.get("audio_seconds")
    if info.frames > seconds * info.samplerate:
        cap = limits.CAPS["audio_seconds"]
        raise AudioError(
            f"{name}: the header declares {info.frames} frames ({info.frames / info.samplerate:.0f} s at "
            f"{info.samplerate} Hz), over the cap of {seconds} seconds (set {cap.env} to change it)"
        )
    return info


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`check_audio` found: the file's rate, channels and frames."""

    sample_rate: int
    channels: int
    frames: int


#: Frames per block when a file is checked without being held whole.
CHECK_BLOCK = 1 << 16


def check_audio(
    path: str | os.PathLike[str],
    *,
    max_channels: int = MAX_CHANNELS,
    min_frames: int = 2,
    max_sample_rate: int = MAX_SAMPLE_RATE,
) -> AudioInfo:
    """Check a file as :func:`read_audio` does, reading it in blocks of ``CHECK_BLOCK``
    frames instead of decoding it whole: for callers that keep the file, not its samples."""
    name = Path(path).name
    info = _header(path, name, max_channels, max_sample_rate)
    frames = 0
    try:
        for block in sf.blocks(str(path), blocksize=CHECK_BLOCK, dtype="float32", always_2d=True):
            if not np.isfinite(block).all():
                raise AudioError(f"{name}: contains NaN or infinite samples")
            frames += block.shape[0]
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(f"{name}: audio data is damaged or truncated ({_short(exc)})") from None
    if frames < min_frames:
        plural = "" if frames == 1 else "s"
        raise AudioError(f"{name}: only {frames} sample frame{plural}; at least {min_frames} needed")
    return AudioInfo(sample_rate=int(info.samplerate), channels=int(info.channels), frames=frames)


def _check_wav_data_size(path: Path, name: str) -> None:
    """Refuse a RIFF/WAVE file whose data chunk declares more bytes than the file holds.

    libsndfile quietly reads whatever is present, so a cut-off upload would otherwise pass
    as a shorter (or, with a forged size, an ordinary-looking) file.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        pos = 12
        for _ in range(_MAX_WAV_CHUNKS):
            fh.seek(pos)
            raw = fh.read(8)
            if len(raw) < 8:
                return
            chunk_id, chunk_size = struct.unpack("<4sI", raw)
            if chunk_id == b"data":
                available = size - pos - 8
                if chunk_size > available:
                    raise AudioError(
                        f"{name}: the WAV header declares {chunk_size} bytes of audio but the file holds only "
                        f"{available}; the file is truncated or its header is damaged"
                    )
                return
            pos += 8 + chunk_size + (chunk_size & 1)


def as_2d(audio: np.ndarray) -> np.ndarray:
    """Return ``audio`` as float32 ``(frames, channels)``; 1-D input is one channel."""
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise AudioError(f"audio array must be 1-D or 2-D (frames, channels), got shape {a.shape}")
    return a


#: Mode of every file ``write_wav`` writes: readable by its group, so a web server running as
#: another user of that group (nginx behind X-Accel-Redirect) can serve it. A temp file is 0600.
FILE_MODE = 0o640


def write_wav(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    sample_rate: int,
    *,
    subtype: str = "FLOAT",
    mode: int = FILE_MODE,
) -> Path:
    """Write ``audio`` to ``path`` atomically (temp file in the same folder, then rename).

    ``subtype`` is a libsndfile subtype: ``FLOAT`` (32-bit float, never clips) or
    ``PCM_16``/``PCM_24``. Non-finite samples are refused rather than written. The file gets
    permission bits ``mode`` (``FILE_MODE``) before it appears under its name.
    """
    a = as_2d(audio)
    if not np.isfinite(a).all():
        raise AudioError("refusing to write audio with NaN or infinite samples")
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Encode in memory, then write with plain file I/O: libsndfile reports a full disk as
    # "System error." with no errno, while os-level writes raise a clear OSError.
    buf = io.BytesIO()
    sf.write(buf, a, int(sample_rate), subtype=subtype, format="WAV")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".wav", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.getbuffer())
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return dest


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
