"""The one audio I/O helper: read, validate and write audio files.

Arrays are float32 shaped ``(frames, channels)``. Writes go to a temporary file in
the destination folder and are renamed into place, so a reader never sees a
half-written file and a rerun is harmless.
"""

from __future__ import annotations

import io
import math
import os
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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


#: A sample at or above this magnitude counts as full scale (possible clipping).
FULL_SCALE = 0.999


@dataclass(frozen=True)
class AudioStats:
    """What :func:`scan_audio` found: the file's rate, channels and frames, and statistics of
    its first ``measured_frames`` frames: the sample peak ``max |x|``, the sum of squares
    (float64, for the RMS level) and the count of samples at or above ``FULL_SCALE``."""

    sample_rate: int
    channels: int
    frames: int
    measured_frames: int
    peak: float
    sum_squares: float
    full_scale: int

    @property
    def rms(self) -> float:
        """RMS over the measured samples, every channel pooled (0 when none were measured)."""
        count = self.measured_frames * self.channels
        return math.sqrt(self.sum_squares / count) if count else 0.0


def check_audio(
    path: str | os.PathLike[str],
    *,
    max_channels: int = MAX_CHANNELS,
    min_frames: int = 2,
    max_sample_rate: int = MAX_SAMPLE_RATE,
) -> AudioInfo:
    """Check a file as :func:`read_audio` does, reading it in blocks of ``CHECK_BLOCK``
    frames instead of decoding it whole: for callers that keep the file, not its samples."""
    stats = scan_audio(
        path, max_channels=max_channels, min_frames=min_frames, max_sample_rate=max_sample_rate, measure_frames=0
    )
    return AudioInfo(sample_rate=stats.sample_rate, channels=stats.channels, frames=stats.frames)


def scan_audio(
    path: str | os.PathLike[str],
    *,
    max_channels: int = MAX_CHANNELS,
    min_frames: int = 2,
    max_sample_rate: int = MAX_SAMPLE_RATE,
    measure_frames: int | None = None,
) -> AudioStats:
    """Check a file as :func:`read_audio` does and measure it, in one pass of ``CHECK_BLOCK``
    frames at a time: memory stays bounded by the block, whatever the file's length.

    Every frame is checked (decodable, finite) and counted; the statistics cover the first
    ``measure_frames`` frames (all when ``None``), so a pair trimmed to a common length is
    measured as trimmed. Peak and full-scale count are exact; the sum of squares is summed
    per block, so it may differ from a whole-array ``np.sum`` in the last bits only.
    """
    name = Path(path).name
    info = _header(path, name, max_channels, max_sample_rate)
    limit = None if measure_frames is None else max(0, int(measure_frames))
    frames = 0
    peak = sum_squares = 0.0
    full_scale = 0
    try:
        for block in sf.blocks(str(path), blocksize=CHECK_BLOCK, dtype="float32", always_2d=True):
            if not np.isfinite(block).all():
                raise AudioError(f"{name}: contains NaN or infinite samples")
            head = block if limit is None else block[: max(0, limit - frames)]
            frames += block.shape[0]
            if head.size:
                magnitude = np.abs(head)
                peak = max(peak, float(magnitude.max()))
                sum_squares += float(np.sum(np.square(head, dtype=np.float64)))
                full_scale += int(np.count_nonzero(magnitude >= FULL_SCALE))
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(f"{name}: audio data is damaged or truncated ({_short(exc)})") from None
    if frames < min_frames:
        plural = "" if frames == 1 else "s"
        raise AudioError(f"{name}: only {frames} sample frame{plural}; at least {min_frames} needed")
    return AudioStats(
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=frames,
        measured_frames=frames if limit is None else min(frames, limit),
        peak=peak,
        sum_squares=sum_squares,
        full_scale=full_scale,
    )


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


def encode_wav(audio: np.ndarray, sample_rate: int, *, subtype: str = "FLOAT") -> bytes:
    """``audio`` as the bytes of a WAV file (``subtype`` as for ``write_wav``), for a caller that
    stores them elsewhere than a local file; non-finite samples are refused."""
    a = as_2d(audio)
    if not np.isfinite(a).all():
        raise AudioError("refusing to write audio with NaN or infinite samples")
    buf = io.BytesIO()
    sf.write(buf, a, int(sample_rate), subtype=subtype, format="WAV")
    return buf.getvalue()


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
    dest = Path(path)
    # Encode in memory, then write with plain file I/O: libsndfile reports a full disk as
    # "System error." with no errno, while os-level writes raise a clear OSError.
    data = encode_wav(audio, sample_rate, subtype=subtype)
    with atomic_file(dest, mode) as fh:
        fh.write(data)
    return dest


@contextmanager
def atomic_file(dest: Path, mode: int = FILE_MODE) -> Iterator[BinaryIO]:
    """A temp file beside ``dest`` to write into; on success it is flushed, given ``mode``,
    synced and renamed to ``dest``; on any error it is removed and ``dest`` is untouched."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=dest.suffix, dir=dest.parent)
    try:
        with os.fdopen(fd, "w+b") as fh:
            yield fh
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


def copy_as_float_wav(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    frames: int,
    mode: int = FILE_MODE,
) -> Path:
    """Write the first ``frames`` frames of the audio file ``source`` to ``dest`` as 32-bit
    float WAV, ``CHECK_BLOCK`` frames at a time: the file :func:`write_wav` writes from
    ``read_audio(source)[0][:frames]``, byte for byte, without holding the samples.

    Atomic as :func:`write_wav` (temp file in the destination folder, then rename), so
    ``dest`` may be ``source`` itself. A failed write raises its own ``OSError`` (a full disk
    as ``ENOSPC``), not libsndfile's errno-less "System error.".
    """
    src = Path(source)
    name = src.name
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    info = sf.info(str(src))
    with atomic_file(dest, mode) as fh:
        sink = _ReportingFile(fh)
        try:
            rate, channels = int(info.samplerate), int(info.channels)
            with sf.SoundFile(sink, "w", rate, channels, subtype="FLOAT", format="WAV") as out:
                for block in sf.blocks(
                    str(src), blocksize=CHECK_BLOCK, frames=int(frames), dtype="float32", always_2d=True
                ):
                    if not np.isfinite(block).all():
                        raise AudioError(f"{name}: refusing to write audio with NaN or infinite samples")
                    out.write(block)
                    sink.raise_error()
        except Exception:
            sink.raise_error()
            raise
        sink.raise_error()
    return dest


class _ReportingFile:
    """A file for libsndfile's virtual I/O that keeps the ``OSError`` of a failed write
    (libsndfile only learns that fewer bytes were written), for the caller to raise."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            return 0

    def read(self, size: int = -1) -> bytes:
        return self._fh.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
