"""A corpus of hostile uploads, each generated at test time, with the refusal it must get.

Every ``Case`` writes its file(s) into a temporary folder with ``make`` (nothing binary is
kept in the repository) and names the service that receives it (``kind``):

* ``excerpt_dry`` / ``excerpt_reference``: ``uploads.add_excerpt`` with the hostile file
  as the dry input / the device recording; ``pair`` makes the other file (a good one when
  ``None``).
* ``checkpoint``: ``uploads.add_checkpoint``.
* ``checkpoint_config``: ``uploads.add_checkpoint`` with the hostile file as the config
  and ``pair`` making the weights.
* ``prerendered``: ``uploads.add_prerendered_audio`` for a good excerpt.
* ``webmushra_yaml``: ``interop.import_directory`` on the config file ``make`` returns.

``expect`` is a regular expression the refusal message must match. Payload cases write a
pickle or YAML document whose construction would create ``marker_path(folder)``; the test
asserts that file never appears. ``docs/hostile-inputs.md`` lists the same cases.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import shlex
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

KINDS = ("excerpt_dry", "excerpt_reference", "checkpoint", "checkpoint_config", "prerendered", "webmushra_yaml")

#: The rate and length of the good audio every excerpt case is paired with.
GOOD_RATE = 48_000
GOOD_SECONDS = 1.0


@dataclass(frozen=True)
class Case:
    """One hostile upload: what is sent, to which service, and the refusal expected."""

    name: str
    kind: str
    make: Callable[[Path], Path]
    expect: str
    sends: str
    http_status: int = 400
    pair: Callable[[Path], Path] | None = None
    payload: bool = False
    max_upload_mb: int | None = None
    #: Whether the message must name the hostile file (False where no single file is at fault).
    names_file: bool = True
    #: Seconds the refusal may take (a bomb must be refused quickly, not after exhausting memory).
    time_limit_s: float = 30.0


def marker_path(folder: Path) -> Path:
    """The file a payload would create if it ever ran."""
    return folder / "payload-ran"


# ----------------------------------------------------------------------------- audio material


def tone(seconds: float = GOOD_SECONDS, rate: int = GOOD_RATE, channels: int = 1, amplitude: float = 0.3) -> np.ndarray:
    """A 220 Hz sine, float32 ``(frames, channels)``."""
    t = np.arange(int(round(seconds * rate))) / rate
    x = (amplitude * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1)


def write(
    folder: Path, name: str, audio: np.ndarray, rate: int = GOOD_RATE, subtype: str = "FLOAT", fmt: str = "WAV"
) -> Path:
    path = folder / name
    sf.write(path, audio, rate, subtype=subtype, format=fmt)
    return path


def good_dry(folder: Path) -> Path:
    return write(folder, "riff_dry.wav", tone())


def good_reference(folder: Path) -> Path:
    return write(folder, "riff_device.wav", np.tanh(2.0 * tone()) * 0.5)


def pcm16_header(frames_bytes: int, rate: int = GOOD_RATE, channels: int = 1, riff_size: int | None = None) -> bytes:
    """A canonical 44-byte RIFF/WAVE header for 16-bit PCM declaring ``frames_bytes`` of data."""
    block = 2 * channels
    riff = 36 + frames_bytes if riff_size is None else riff_size
    return (
        b"RIFF"
        + struct.pack("<I", riff & 0xFFFFFFFF)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
        + b"data"
        + struct.pack("<I", frames_bytes & 0xFFFFFFFF)
    )


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def _bytes(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content)
        return path

    return make


def _wav(
    name: str, audio_fn: Callable[[], np.ndarray], rate: int = GOOD_RATE, subtype: str = "FLOAT", fmt: str = "WAV"
) -> Callable[[Path], Path]:
    return lambda folder: write(folder, name, audio_fn(), rate, subtype, fmt)


def _with_sample(value: float, index: int = 1000) -> Callable[[], np.ndarray]:
    def audio() -> np.ndarray:
        a = tone()
        a[index, 0] = value
        return a

    return audio


def mpeg_frames(count: int = 40) -> bytes:
    """MPEG-1 Layer III frame headers (128 kb/s, 44.1 kHz) with silent payloads: what an
    MP3 file looks like to a sniffer, without an encoder."""
    header = bytes([0xFF, 0xFB, 0x90, 0x64])
    frame_len = 144 * 128_000 // 44_100
    return b"ID3\x03\x00\x00\x00\x00\x00\x00" + (header + bytes(frame_len - 4)) * count


def png_bytes() -> bytes:
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes(3 * 8) for _ in range(8))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _real_encoded(name: str, fmt: str, subtype: str) -> Callable[[Path], Path]:
    """A genuine compressed file (written by libsndfile) renamed ``.wav``; falls back to
    hand-made MPEG frames when this libsndfile cannot encode MP3."""

    def make(folder: Path) -> Path:
        path = folder / name
        try:
            with io.BytesIO() as buf:
                sf.write(buf, tone(rate=44_100), 44_100, format=fmt, subtype=subtype)
                path.write_bytes(buf.getvalue())
        except Exception:
            path.write_bytes(mpeg_frames() if fmt == "MP3" else b"OggS" + bytes(200))
        return path

    return make


# ----------------------------------------------------------------------------- pickle payloads


class ShellPayload:
    """Unpickling calls ``os.system("touch marker")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class OpenPayload:
    """Unpickling calls ``open(marker, "w")``, creating the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


class ExecPayload:
    """Unpickling runs Python source through ``exec``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _pickle(name: str, payload: type, protocol: int) -> Callable[[Path], Path]:
    import pickle

    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(pickle.dumps({"state_dict": payload(marker_path(folder))}, protocol=protocol))
        return path

    return make


def _torch_save(name: str, obj_fn: Callable[[Path], object]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        import torch

        path = folder / name
        torch.save(obj_fn(folder), path)
        return path

    return make


# ----------------------------------------------------------------------------- zip archives


def _zip_bomb_ratio(folder: Path) -> Path:
    """One member of 24 MB of zeros, deflated to a few kB, written in 1 MB pieces."""
    path = folder / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("archive/data.pkl", "w") as member:
            block = bytes(1 << 20)
            for _ in range(24):
                member.write(block)
    return path


def _zip_bomb_forged(folder: Path) -> Path:
    """A small stored member whose central-directory entry claims ~4 GB unpacked."""
    path = folder / "forged.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    data = bytearray(path.read_bytes())
    at = data.rfind(b"PK\x01\x02")
    data[at + 24 : at + 28] = struct.pack("<I", 0xFFFFFFF0)
    path.write_bytes(bytes(data))
    return path


def _zip_many_entries(folder: Path) -> Path:
    from modelrunner.safety import MAX_ZIP_ENTRIES

    path = folder / "many.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(MAX_ZIP_ENTRIES + 1):
            zf.writestr(f"a/{i}", b"")
    return path


def _zip_escape(folder: Path) -> Path:
    path = folder / "escape.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("../../evil.pkl", b"\x80\x02}q\x00.")
    return path


def _torchscript(folder: Path) -> Path:
    import torch

    path = folder / "scripted.pt"
    torch.jit.script(torch.nn.Linear(1, 1)).save(str(path))
    return path


# ----------------------------------------------------------------------------- weights


NATIVE_CONFIG = {
    "format_version": 1,
    "architecture": "recurrent",
    "sample_rate": 48000,
    "params": {"unit_type": "LSTM", "hidden_size": 2},
}


def recurrent_state_dict(hidden: int = 2) -> dict:
    """A finite state_dict for the registry's ``recurrent`` LSTM with ``hidden`` units."""
    import torch

    g = torch.Generator().manual_seed(0)
    shapes = {
        "rec.weight_ih_l0": (4 * hidden, 1),
        "rec.weight_hh_l0": (4 * hidden, hidden),
        "rec.bias_ih_l0": (4 * hidden,),
        "rec.bias_hh_l0": (4 * hidden,),
        "lin.weight": (1, hidden),
        "lin.bias": (1,),
    }
    return {k: 0.1 * torch.randn(s, generator=g) for k, s in shapes.items()}


def _native_pt(name: str, state: Callable[[], dict], config: dict | None = NATIVE_CONFIG) -> Callable[[Path], Path]:
    def obj(folder: Path) -> object:
        out: dict = {"state_dict": state()}
        if config is not None:
            out["config"] = config
        return out

    return _torch_save(name, obj)


def _safetensors(name: str, state: Callable[[], dict], config: dict | None = NATIVE_CONFIG) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        from safetensors.torch import save_file

        path = folder / name
        save_file(state(), str(path), metadata={"config": json.dumps(config)} if config is not None else None)
        return path

    return make


def _poisoned(key: str, value: float) -> Callable[[], dict]:
    def state() -> dict:
        sd = recurrent_state_dict()
        sd[key].view(-1)[0] = value
        return sd

    return state


def _safetensors_raw(name: str, header_len: int, rest: bytes) -> Callable[[Path], Path]:
    return _bytes(name, struct.pack("<Q", header_len) + rest)


def _safetensors_truncated_data(folder: Path) -> Path:
    header = json.dumps(
        {
            "w": {"dtype": "F32", "shape": [16], "data_offsets": [0, 64]},
            "__metadata__": {"config": json.dumps(NATIVE_CONFIG)},
        }
    ).encode()
    path = folder / "cut.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    return path


def _lightning(name: str, state: Callable[[], dict], hparams: dict) -> Callable[[Path], Path]:
    return _torch_save(
        name,
        lambda folder: {
            "state_dict": state(),
            "hyper_parameters": hparams,
            "epoch": 3,
            "pytorch-lightning_version": "2.1.0",
        },
    )


def _pruned_without_mask() -> dict:
    sd = {f"model.{k}": v for k, v in recurrent_state_dict().items()}
    sd["model.lin.weight_orig"] = sd.pop("model.lin.weight")
    return sd


LIGHTNING_HP = {"architecture": "recurrent", "sample_rate": 48000, "params": {"hidden_size": 2}}


# ----------------------------------------------------------------------------- JSON checkpoints


def coreaudioml(hidden: int = 2, **model_data) -> dict:
    """A valid CoreAudioML SimpleRNN export (LSTM, ``hidden`` units, skip 1)."""
    md = {
        "model": "SimpleRNN",
        "unit_type": "LSTM",
        "input_size": 1,
        "hidden_size": hidden,
        "output_size": 1,
        "skip": 1,
        "num_layers": 1,
        "bias_fl": True,
        **model_data,
    }
    sd = {k: v.tolist() for k, v in recurrent_state_dict(hidden).items()}
    return {"model_data": md, "state_dict": sd}


def _json(name: str, obj_fn: Callable[[], object]) -> Callable[[Path], Path]:
    return lambda folder: _write_text(folder / name, json.dumps(obj_fn()))


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _cam(mutate: Callable[[dict], None], **model_data) -> Callable[[], dict]:
    def obj() -> dict:
        d = coreaudioml(**model_data)
        mutate(d)
        return d

    return obj


def _set_sd(key: str, value) -> Callable[[dict], None]:
    return lambda d: d["state_dict"].__setitem__(key, value)


def _drop_sd(key: str) -> Callable[[dict], None]:
    return lambda d: d["state_dict"].pop(key)


def _set_md(key: str, value) -> Callable[[dict], None]:
    return lambda d: d["model_data"].__setitem__(key, value)


def nam_linear(weights: list | None = None, **extra) -> dict:
    """A valid NAM ``Linear`` file: 4 taps and a bias."""
    doc = {
        "version": "0.5.4",
        "architecture": "Linear",
        "config": {"receptive_field": 4, "bias": True},
        "weights": [0.5, 0.25, 0.125, 0.0625, 0.0] if weights is None else weights,
        "sample_rate": 48000,
    }
    doc.update(extra)
    return doc


def rtneural_tiny(**changes) -> dict:
    """A valid RTNeural / AIDA-X file: LSTM-2 then dense-1."""
    doc = {
        "in_shape": [None, None, 1],
        "layers": [
            {
                "type": "lstm",
                "activation": "",
                "shape": [None, None, 2],
                "weights": [[[0.1] * 8], [[0.1] * 8, [0.1] * 8], [0.0] * 8],
            },
            {"type": "dense", "activation": "", "shape": [None, None, 1], "weights": [[[0.5], [0.5]], [0.0]]},
        ],
    }
    doc.update(changes)
    return doc


def wavenet_tiny(**changes) -> dict:
    """A valid GuitarML WaveNet file: 2 channels, one gated layer of width 2."""
    doc = {
        "activation": "gated",
        "input_channels": 1,
        "output_channels": 1,
        "residual_channels": 2,
        "filter_width": 2,
        "dilations": [1],
        "variables": [
            {"layer_idx": -1, "name": "W", "data": ["0.5", "0.5"]},
            {"layer_idx": -1, "name": "b", "data": ["0", "0"]},
            {"layer_idx": 0, "name": "W_conv", "data": ["0.1"] * 16},
            {"layer_idx": 0, "name": "b_conv", "data": ["0"] * 4},
            {"layer_idx": 0, "name": "W_out", "data": ["0.1"] * 4},
            {"layer_idx": 0, "name": "b_out", "data": ["0"] * 2},
            {"layer_idx": 1, "name": "W", "data": ["1", "1"]},
            {"layer_idx": 1, "name": "b", "data": ["0"]},
        ],
    }
    doc.update(changes)
    return doc


def smartamppro_tiny(**changes) -> dict:
    """A valid SmartAmpPro file: a 4-sample window, conv 2/2 then 2/2, LSTM-2, dense."""
    doc = {
        "input_size": 4,
        "conv1d_stride": 2,
        "conv1d_1_stride": 2,
        "conv1d": {"kernel:0": [[[0.1]], [[0.1]]], "bias:0": [0.0]},
        "conv1d_1": {"kernel:0": [[[0.1]], [[0.1]]], "bias:0": [0.0]},
        "lstm": {"lstm_cell": {}, "kernel:0": [[0.1] * 8], "bias:0": [0.0] * 8},
        "dense": {"kernel:0": [[0.5], [0.5]], "bias:0": [0.0]},
    }
    doc.update(changes)
    return doc


def _truncated_lstm_kernel() -> dict:
    doc = rtneural_tiny()
    doc["layers"][0]["weights"][1].pop()
    return doc


def _wavenet_truncated() -> dict:
    doc = wavenet_tiny()
    doc["variables"][2]["data"] = doc["variables"][2]["data"][:10]
    return doc


def _smartamppro_truncated() -> dict:
    doc = smartamppro_tiny()
    doc["dense"]["kernel:0"].pop()
    return doc


def _nam_text(name: str, text: str) -> Callable[[Path], Path]:
    return lambda folder: _write_text(folder / name, text)


NAM_WAVENET_HUGE = {
    "version": "0.5.4",
    "architecture": "WaveNet",
    "sample_rate": 48000,
    "weights": [0.0],
    "config": {
        "head": None,
        "head_scale": 0.02,
        "layers": [
            {
                "input_size": 1,
                "condition_size": 1,
                "channels": 100_000,
                "kernel_size": 3,
                "dilations": [1],
                "activation": "Tanh",
                "gated": False,
                "head_size": 1,
                "head_bias": True,
            }
        ],
    },
}


def nam_container(bounds: list[float]) -> dict:
    """A ``SlimmableContainer`` of Linear submodels with these ``max_value`` bounds."""
    return {
        "version": "0.7.0",
        "architecture": "SlimmableContainer",
        "config": {"submodels": [{"max_value": b, "model": nam_linear()} for b in bounds]},
        "weights": [],
        "sample_rate": 48000,
    }


def nam_with_layer_option(**option) -> dict:
    """A one-layer WaveNet ``.nam`` (right weight count) with extra layer-array keys."""
    layer = {
        "input_size": 1,
        "condition_size": 1,
        "channels": 1,
        "kernel_size": 1,
        "dilations": [1],
        "activation": "Tanh",
        "gated": False,
        "head_size": 1,
        "head_bias": True,
        **option,
    }
    # rechannel 1, conv 1 + 1, mixer 1, 1x1 1 + 1, head 1 + 1, head_scale
    return {
        "version": "0.7.0",
        "architecture": "WaveNet",
        "config": {"layers": [layer], "head": None, "head_scale": 1.0},
        "weights": [0.5] * 9,
        "sample_rate": 48000,
    }


def nam_condition_dsp(inner: dict) -> dict:
    doc = nam_with_layer_option()
    doc["config"]["condition_dsp"] = inner
    return doc


# ----------------------------------------------------------------------------- webMUSHRA configs


def _site(folder: Path, pages: str, extra_audio: bool = True) -> Path:
    """A webMUSHRA site: ``configs/test.yaml`` and good audio under ``configs/resources/audio``."""
    audio = folder / "site" / "configs" / "resources" / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    if extra_audio:
        write(audio, "ref.wav", tone())
        write(audio, "c1.wav", np.tanh(2.0 * tone()) * 0.5)
    return _write_text(
        folder / "site" / "configs" / "test.yaml",
        "testname: Hostile\ntestId: hostile\nbufferSize: 2048\npages:\n" + pages,
    )


MUSHRA_PAGE = """\
 - type: mushra
   id: trial1
   name: Trial 1
   content: Rate the signals.
   reference: configs/resources/audio/ref.wav
   createAnchor35: true
   createAnchor70: true
   stimuli:
    C1: {stimulus}
"""


def _yaml(pages: str) -> Callable[[Path], Path]:
    return lambda folder: _site(folder, pages)


def _yaml_with_marker(template: str) -> Callable[[Path], Path]:
    return lambda folder: _site(folder, template.format(cmd=f"touch {marker_path(folder)}", marker=marker_path(folder)))


def _billion_laughs(folder: Path) -> Path:
    """Nine levels of ten aliases: 10^9 pages once expanded, a few hundred bytes on disk."""
    lines = ["x: &a {type: generic, id: lol, content: lol}"]
    prev = "a"
    for level in "bcdefghij":
        lines.append(f"{level}: &{level} [" + ", ".join([f"*{prev}"] * 10) + "]")
        prev = level
    lines.append(f"pages: [*{prev}]")
    path = folder / "site" / "configs" / "bomb.yaml"
    path.parent.mkdir(parents=True)
    return _write_text(path, "testname: Bomb\n" + "\n".join(lines) + "\n")


def _outside_folder(folder: Path) -> Path:
    """The reference points at a real WAV two folders above the site (``../../outside``)."""
    outside = folder / "outside"
    outside.mkdir()
    write(outside, "secret.wav", tone())
    return _site(
        folder,
        MUSHRA_PAGE.replace("configs/resources/audio/ref.wav", "../../outside/secret.wav").format(
            stimulus="configs/resources/audio/c1.wav"
        ),
    )


def _absolute_path(folder: Path) -> Path:
    return _site(
        folder,
        MUSHRA_PAGE.replace("configs/resources/audio/ref.wav", "/etc/passwd").format(
            stimulus="configs/resources/audio/c1.wav"
        ),
    )


# ----------------------------------------------------------------------------- the corpus


def _short_pair(folder: Path) -> Path:
    return write(folder, "riff_device.wav", np.tanh(2.0 * tone(seconds=0.2)) * 0.5)


def _pair_192k(folder: Path) -> Path:
    return write(folder, "riff_device.wav", tone(rate=192_000), rate=192_000)


CASES: list[Case] = [
    # --- excerpts: not audio, or damaged audio
    Case(
        "wav-empty",
        "excerpt_dry",
        _bytes("take.wav", b""),
        r"take\.wav: the file is empty",
        "a zero-byte `take.wav` as the dry input",
    ),
    Case(
        "wav-header-only",
        "excerpt_dry",
        _bytes("take.wav", pcm16_header(0)),
        r"take\.wav: only 0 sample frames",
        "a 44-byte RIFF/WAVE header declaring no data",
    ),
    Case(
        "wav-truncated-data",
        "excerpt_dry",
        _bytes("take.wav", pcm16_header(2 * GOOD_RATE) + pcm16(tone(0.01))),
        r"take\.wav: .*declares 96000 bytes of audio but the file holds only 960",
        "a 16-bit WAV whose header declares 1 s of samples but which is cut off after 10 ms",
    ),
    Case(
        "wav-absurd-data-size",
        "excerpt_dry",
        _bytes("take.wav", pcm16_header(0xFFFFFFF0) + pcm16(tone())),
        r"take\.wav: .*declares 4294967280 bytes of audio but the file holds only 96000",
        "a WAV whose data chunk claims 4 GB while the file holds 1 s",
    ),
    Case(
        "wav-one-sample",
        "excerpt_dry",
        _wav("take.wav", lambda: tone()[:1]),
        r"take\.wav: only 1 sample frame\b",
        "a valid WAV holding a single sample",
    ),
    Case(
        "wav-nan-samples",
        "excerpt_dry",
        _wav("take.wav", _with_sample(np.nan)),
        r"take\.wav: contains NaN or infinite samples",
        "a float WAV with one NaN sample",
    ),
    Case(
        "wav-positive-inf",
        "excerpt_reference",
        _wav("device.wav", _with_sample(np.inf)),
        r"device\.wav: contains NaN or infinite samples",
        "a float WAV recording with one +Inf sample",
    ),
    Case(
        "wav-negative-inf",
        "excerpt_reference",
        _wav("device.wav", _with_sample(-np.inf, 0)),
        r"device\.wav: contains NaN or infinite samples",
        "a float WAV recording whose first sample is -Inf",
    ),
    Case(
        "wav-8-channels",
        "excerpt_dry",
        _wav("take.wav", lambda: tone(channels=8)),
        r"take\.wav: 8 channels; at most 2",
        "an 8-channel WAV",
    ),
    Case(
        "wav-3-channels",
        "excerpt_reference",
        _wav("device.wav", lambda: tone(channels=3)),
        r"device\.wav: 3 channels; at most 2",
        "a 3-channel recording",
    ),
    Case(
        "wav-192k",
        "excerpt_dry",
        _wav("take.wav", lambda: tone(rate=192_000), rate=192_000),
        r"take\.wav: sample rate 192000 Hz is outside 8000\.\.96000 Hz",
        "dry input and recording both at 192 kHz",
        pair=_pair_192k,
    ),
    Case(
        "wav-4k",
        "excerpt_dry",
        _wav("take.wav", lambda: tone(rate=4000), rate=4000),
        r"take\.wav: sample rate 4000 Hz is outside 8000\.\.",
        "a WAV at 4 kHz",
    ),
    Case(
        "text-renamed-wav",
        "excerpt_dry",
        _bytes("take.wav", b"Gain 7, tone 5, level 6\n" * 40),
        r"take\.wav: not a readable audio file",
        "plain text renamed `take.wav`",
    ),
    Case(
        "mp3-renamed-wav",
        "excerpt_dry",
        _real_encoded("take.wav", "MP3", "MPEG_LAYER_III"),
        r"take\.wav: (format (MP3|MPEG) is not accepted|not a readable audio file)",
        "an MP3 renamed `take.wav`",
    ),
    Case(
        "mpeg-frames-renamed-wav",
        "excerpt_reference",
        _bytes("device.wav", mpeg_frames()),
        r"device\.wav: (format (MP3|MPEG) is not accepted|not a readable audio file|audio data is damaged)",
        "an ID3 tag and MPEG-1 Layer III frame headers renamed `device.wav`",
    ),
    Case(
        "ogg-renamed-wav",
        "excerpt_dry",
        _real_encoded("take.wav", "OGG", "VORBIS"),
        r"take\.wav: (format OGG is not accepted|not a readable audio file)",
        "an Ogg Vorbis file renamed `take.wav`",
    ),
    Case(
        "png-renamed-wav",
        "excerpt_dry",
        _bytes("take.wav", png_bytes()),
        r"take\.wav: not a readable audio file",
        "a PNG image renamed `take.wav`",
    ),
    Case(
        "riff-garbage",
        "excerpt_dry",
        _bytes("take.wav", b"RIFF\xff\xff\xff\xffWAVEjunk" + os.urandom(64)),
        r"take\.wav: not a readable audio file",
        "`RIFF....WAVE` followed by random bytes",
    ),
    Case(
        "rifx-garbage",
        "excerpt_dry",
        _bytes("take.wav", b"RIFX\x00\x00\x01\x00WAVEfmt " + bytes(40)),
        r"take\.wav: not a readable audio file",
        "a big-endian `RIFX` header with a zeroed format chunk",
    ),
    Case(
        "wav-over-size-limit",
        "excerpt_dry",
        _wav("take.wav", lambda: tone(seconds=11.0)),
        r"take\.wav: \d+\.\d MB is over the 1 MB upload limit",
        "a 2.1 MB WAV with the upload limit set to 1 MB",
        max_upload_mb=1,
    ),
    Case(
        "wav-silent",
        "excerpt_reference",
        _wav("device.wav", lambda: np.zeros((GOOD_RATE, 1), np.float32)),
        r"device\.wav: the file is silent",
        "a recording of digital silence",
    ),
    Case(
        "rate-mismatch",
        "excerpt_reference",
        _wav("device.wav", lambda: tone(rate=44_100), rate=44_100),
        r"riff_dry\.wav is at 48000 Hz but device\.wav is at 44100 Hz",
        "a 44.1 kHz recording for a 48 kHz dry input",
    ),
    Case(
        "length-mismatch",
        "excerpt_reference",
        _wav("device.wav", lambda: tone(seconds=0.8)),
        r"riff_dry\.wav has 48000 frames and device\.wav has 38400; lengths differ by more than 5 %",
        "a recording 20 % shorter than its dry input",
    ),
    Case(
        "excerpt-too-short",
        "excerpt_dry",
        _wav("take.wav", lambda: tone(seconds=0.2)),
        r"take\.wav: 0\.20 s is too short for a listening test",
        "dry input and recording both 0.2 s long",
        pair=_short_pair,
    ),
    # --- checkpoints: not checkpoints, archives, pickles
    Case("ckpt-empty", "checkpoint", _bytes("model.pt", b""), r"model\.pt: the file is empty", "a zero-byte `.pt`"),
    Case(
        "ckpt-text",
        "checkpoint",
        _bytes("model.pt", b"not a checkpoint, just words\n"),
        r"model\.pt: unrecognised checkpoint",
        "plain text renamed `model.pt`",
    ),
    Case(
        "ckpt-over-size-limit",
        "checkpoint",
        _bytes("model.nam", b"{" + b" " * (2 << 20) + b"}"),
        r"model\.nam: \d+\.\d MB is over the 1 MB upload limit",
        "a 2 MB JSON file with the upload limit set to 1 MB",
        max_upload_mb=1,
    ),
    Case(
        "zip-bomb-ratio",
        "checkpoint",
        _zip_bomb_ratio,
        r"bomb\.pt: zip archive unpacks to \d+x its size \(zip bomb",
        "a `.pt` zip whose one member is 24 MB of zeros deflated to ~25 kB",
    ),
    Case(
        "zip-bomb-forged-size",
        "checkpoint",
        _zip_bomb_forged,
        r"forged\.pt: zip archive unpacks to 4294967280 bytes, over the \d+-byte limit",
        "a `.pt` zip whose central directory claims a 4 GB member",
    ),
    Case(
        "zip-too-many-entries",
        "checkpoint",
        _zip_many_entries,
        r"many\.pt: zip archive has 10001 entries \(limit 10000\)",
        "a `.pt` zip with 10 001 empty members",
    ),
    Case(
        "zip-member-escapes",
        "checkpoint",
        _zip_escape,
        r"escape\.pt: zip member '\.\./\.\./evil\.pkl' escapes",
        "a `.pt` zip with a member named `../../evil.pkl`",
    ),
    Case(
        "pickle-p2-os-system",
        "checkpoint",
        _pickle("model.pth", ShellPayload, 2),
        r"model\.pth: refused by the safe \(weights_only\) loader: .*(system|GLOBAL)",
        "a protocol-2 pickle whose `__reduce__` calls `os.system('touch marker')`",
        payload=True,
    ),
    Case(
        "pickle-p4-open",
        "checkpoint",
        _pickle("model.pth", OpenPayload, 4),
        r"model\.pth: refused by the safe \(weights_only\) loader: .*(open|not a file written by torch\.save)",
        "a protocol-4 pickle whose `__reduce__` calls `open(marker, 'w')`",
        payload=True,
    ),
    Case(
        "pickle-p0-os-system",
        "checkpoint",
        _pickle("model.pkl", ShellPayload, 0),
        r"model\.pkl: unrecognised checkpoint",
        "a text-protocol (0) pickle calling `os.system`",
        payload=True,
    ),
    Case(
        "torch-zip-exec-payload",
        "checkpoint",
        _torch_save("model.pt", lambda folder: {"state_dict": {"w": ExecPayload(marker_path(folder))}}),
        r"model\.pt: refused by the safe \(weights_only\) loader: .*exec",
        "a `torch.save` zip archive whose pickle calls `exec(...)`",
        payload=True,
    ),
    Case(
        "lightning-hparams-payload",
        "checkpoint",
        _torch_save(
            "model.ckpt",
            lambda folder: {
                "state_dict": recurrent_state_dict(),
                "hyper_parameters": ShellPayload(marker_path(folder)),
            },
        ),
        r"model\.ckpt: refused by the safe \(weights_only\) loader: .*system",
        "a Lightning-shaped `.ckpt` whose hyper-parameters unpickle through `os.system`",
        payload=True,
    ),
    Case(
        "pickled-module",
        "checkpoint",
        _torch_save("model.pt", lambda folder: __import__("torch").nn.Linear(1, 1)),
        r"model\.pt: refused by the safe \(weights_only\) loader: .*Linear.*save model\.state_dict\(\)",
        "`torch.save(nn.Linear(1, 1))`: a whole pickled module",
    ),
    Case(
        "torchscript",
        "checkpoint",
        _torchscript,
        r"scripted\.pt: TorchScript archive",
        "`torch.jit.script(nn.Linear(1, 1)).save(...)`",
    ),
    Case(
        "state-dict-nan",
        "checkpoint",
        _native_pt("model.pt", _poisoned("rec.weight_hh_l0", float("nan"))),
        r"model\.pt: weight 'rec\.weight_hh_l0' contains NaN or infinite values",
        "a native `.pt` state_dict with a NaN weight",
    ),
    Case(
        "state-dict-inf",
        "checkpoint",
        _safetensors("model.safetensors", _poisoned("lin.bias", float("inf"))),
        r"model\.safetensors: weight 'lin\.bias' contains NaN or infinite values",
        "a native safetensors file with an +Inf bias",
    ),
    Case(
        "native-unknown-architecture",
        "checkpoint",
        _safetensors("model.safetensors", recurrent_state_dict, {**NATIVE_CONFIG, "architecture": "transformer"}),
        r"model\.safetensors: unknown architecture 'transformer'",
        "safetensors whose embedded config names architecture `transformer`",
    ),
    Case(
        "native-unknown-params",
        "checkpoint",
        _safetensors(
            "model.safetensors",
            recurrent_state_dict,
            {**NATIVE_CONFIG, "params": {"hidden_size": 2, "flux_capacitor": 1}},
        ),
        r"model\.safetensors: architecture 'recurrent' has no parameter 'flux_capacitor'",
        "a native config with an unknown constructor parameter",
    ),
    Case(
        "native-unknown-config-key",
        "checkpoint",
        _native_pt("model.pt", recurrent_state_dict, {**NATIVE_CONFIG, "exec": "import os"}),
        r"model\.pt: unknown config keys: exec",
        "a native config with an unknown top-level key",
    ),
    Case(
        "native-no-config",
        "checkpoint",
        _native_pt("model.pt", recurrent_state_dict, None),
        r"model\.pt: no architecture config",
        "a bare state_dict with no config anywhere",
    ),
    Case(
        "native-declares-huge-model",
        "checkpoint",
        _safetensors(
            "model.safetensors",
            recurrent_state_dict,
            {**NATIVE_CONFIG, "params": {"hidden_size": 4096, "num_layers": 16}},
        ),
        r"model\.safetensors: (weights do not match|.*declares|.*implausible|.*too large)",
        "a 1 kB safetensors whose config asks for a 4096x16 LSTM (~2 G parameters)",
    ),
    Case(
        "safetensors-truncated-header",
        "checkpoint",
        _safetensors_raw("model.safetensors", 200, b'{"w": {"dt'),
        r"model\.safetensors: safetensors header length 200 is implausible",
        "a safetensors header length of 200 with 10 header bytes present",
    ),
    Case(
        "safetensors-10gb-header",
        "checkpoint",
        _safetensors_raw("model.safetensors", 10_000_000_000, b'{"w": {"dtype": "F32"}}'),
        r"model\.safetensors: (unrecognised checkpoint|.*header length 10000000000)",
        "a safetensors header length field claiming 10 GB",
    ),
    Case(
        "safetensors-truncated-data",
        "checkpoint",
        _safetensors_truncated_data,
        r"cut\.safetensors: damaged safetensors file",
        "a valid header for 64 bytes of tensor data, 16 present",
    ),
    Case(
        "lightning-orig-without-mask",
        "checkpoint",
        _lightning("model.ckpt", _pruned_without_mask, LIGHTNING_HP),
        r"model\.ckpt: pruned weight 'model\.lin\.weight_orig' has no 'model\.lin\.weight_mask'",
        "a Lightning `.ckpt` with a pruned `_orig` weight and no `_mask`",
    ),
    Case(
        "lightning-no-architecture",
        "checkpoint",
        _lightning("model.ckpt", recurrent_state_dict, {"lr": 0.001, "batch_size": 40}),
        r"model\.ckpt: cannot tell the architecture from the hyper-parameters \(batch_size, lr\)",
        "a Lightning `.ckpt` whose hyper-parameters name no architecture",
    ),
    # --- CoreAudioML JSON
    Case(
        "cam-wrong-shape",
        "checkpoint",
        _json("model.json", _cam(_set_sd("lin.weight", [[0.1, 0.2, 0.3]]))),
        r"model\.json: weight 'lin\.weight' has shape \(1, 3\), expected \(1, 2\)",
        "CoreAudioML JSON with a 1x3 `lin.weight` for 2 hidden units",
    ),
    Case(
        "cam-missing-weight",
        "checkpoint",
        _json("model.json", _cam(_drop_sd("lin.weight"))),
        r"model\.json: weights do not match the architecture \(missing keys: lin\.weight\)",
        "CoreAudioML JSON without `lin.weight`",
    ),
    Case(
        "cam-ragged-weight",
        "checkpoint",
        _json("model.json", _cam(_set_sd("rec.weight_hh_l0", [[0.1, 0.2]] * 7 + [[0.1]]))),
        r"model\.json: weight 'rec\.weight_hh_l0' is not a \(rectangular\) list of numbers",
        "CoreAudioML JSON with a ragged weight matrix",
    ),
    Case(
        "cam-unknown-unit",
        "checkpoint",
        _json("model.json", _cam(_set_md("unit_type", "Transformer"))),
        r"model\.json: unit_type 'Transformer' is not one of LSTM, GRU, RNN",
        "`unit_type: Transformer`",
    ),
    Case(
        "cam-hidden-size-mismatch",
        "checkpoint",
        _json("model.json", _cam(_set_md("hidden_size", 3))),
        r"model\.json: weight 'rec\.weight_ih_l0' has shape \(8, 1\), expected \(12, 1\)",
        "`hidden_size: 3` over weights for 2 units",
    ),
    Case(
        "cam-hidden-size-100000",
        "checkpoint",
        _json("model.json", _cam(_set_md("hidden_size", 100_000))),
        r"model\.json: implausible sizes in model_data",
        "`hidden_size: 100000` declared",
    ),
    Case(
        "cam-declares-huge-model",
        "checkpoint",
        _json("model.json", _cam(lambda d: d["model_data"].update(hidden_size=4096, num_layers=16))),
        r"model\.json: (weights do not match|.*declares|.*implausible|.*too large)",
        "a 1 kB file declaring a 4096-unit, 16-layer LSTM (~2 G parameters)",
    ),
    Case(
        "cam-huge-array",
        "checkpoint",
        _json("model.json", _cam(_set_sd("lin.weight", [[0.0] * 200_000]))),
        r"model\.json: weight 'lin\.weight' has shape \(1, 200000\), expected \(1, 2\)",
        "a 200 000-element `lin.weight`",
    ),
    Case(
        "json-not-object",
        "checkpoint",
        _nam_text("model.json", "  [1, 2, 3]"),
        r"model\.json: (unrecognised checkpoint|top level of the JSON file must be an object)",
        "a JSON array instead of an object",
    ),
    Case(
        "json-nested-10000",
        "checkpoint",
        _nam_text("model.json", '{"a":' * 10_000 + "1" + "}" * 10_000),
        r"model\.json: JSON nested too deeply",
        "an object nested 10 000 levels deep",
    ),
    Case(
        "json-invalid-utf8",
        "checkpoint",
        _bytes("model.json", b'{"model_data": {}, "state_dict": "\xff\xfe"}'),
        r"model\.json: not valid JSON",
        "JSON with bytes that are not UTF-8",
    ),
    Case(
        "json-nan-literal",
        "checkpoint",
        _nam_text("model.nam", json.dumps(nam_linear([0.5, float("nan"), 0, 0, 0]))),
        r"model\.nam: JSON contains NaN, weights must be finite",
        "a `.nam` with a bare `NaN` in its weights",
    ),
    # --- NAM
    Case(
        "nam-wrong-weight-count",
        "checkpoint",
        _json("model.nam", lambda: nam_linear([0.5, 0.25, 0.125])),
        r"model\.nam: config implies 5 weights, file has 3",
        "a Linear `.nam` with 3 weights where 5 are needed",
    ),
    Case(
        "nam-unknown-architecture",
        "checkpoint",
        _json("model.nam", lambda: nam_linear(architecture="Transformer")),
        r"model\.nam: NAM architecture 'Transformer' is not supported",
        "`architecture: Transformer`",
    ),
    Case(
        "nam-overflowing-weight",
        "checkpoint",
        _nam_text("model.nam", json.dumps(nam_linear()).replace("0.125", "1e999")),
        r"model\.nam: weights\[2\] is NaN or infinite",
        "a weight written `1e999` (parses to +Inf)",
    ),
    Case(
        "nam-negative-sample-rate",
        "checkpoint",
        _json("model.nam", lambda: nam_linear(sample_rate=-48000)),
        r"model\.nam: sample rate -48000 is not a whole number of Hz",
        "`sample_rate: -48000`",
    ),
    Case(
        "nam-wavenet-huge",
        "checkpoint",
        _json("model.nam", lambda: NAM_WAVENET_HUGE),
        r"model\.nam: (config implies \d+ weights, file has 1|.*implausible|.*too large)",
        "a WaveNet `.nam` declaring 100 000 channels (3e10 weights) with one weight present",
    ),
    Case(
        "nam-container-unsorted",
        "checkpoint",
        _json("model.nam", lambda: nam_container([1.0, 0.5])),
        r"model\.nam: SlimmableContainer submodels must ascend in 'max_value'",
        "a `SlimmableContainer` whose submodels' `max_value` descend",
    ),
    Case(
        "nam-container-many-submodels",
        "checkpoint",
        _json("model.nam", lambda: nam_container([(i + 1) / 5000 for i in range(5000)])),
        r"model\.nam: SlimmableContainer 'submodels' must be a list of 1\.\.16 models",
        "a `SlimmableContainer` with 5000 submodels",
    ),
    Case(
        "nam-condition-dsp-huge",
        "checkpoint",
        _json("model.nam", lambda: nam_condition_dsp(NAM_WAVENET_HUGE)),
        r"model\.nam condition_dsp: (config implies \d+ weights, file has 1|.*implausible|.*too large)",
        "a WaveNet whose `condition_dsp` declares 100 000 channels with one weight present",
    ),
    Case(
        "nam-condition-dsp-wrong-weight-count",
        "checkpoint",
        _json("model.nam", lambda: nam_condition_dsp(nam_linear([0.5]))),
        r"model\.nam condition_dsp: config implies 5 weights, file has 1",
        "a WaveNet whose `condition_dsp` (a Linear) has 1 weight where 5 are needed",
    ),
    Case(
        "nam-slimmable-bad-channels",
        "checkpoint",
        _json(
            "model.nam",
            lambda: nam_with_layer_option(
                slimmable={"method": "slice_channels_uniform", "kwargs": {"allowed_channels": [1, 100_000]}}
            ),
        ),
        r"model\.nam: NAM WaveNet layer array 0: slimmable allowed_channels \[1, 100000\] must ascend",
        "a slimmable WaveNet layer array whose `allowed_channels` end at 100 000 (it has 1 channel)",
    ),
    Case(
        "nam-film-block",
        "checkpoint",
        _json("model.nam", lambda: nam_with_layer_option(conv_pre_film={"active": True, "shift": True})),
        r"model\.nam: NAM WaveNet layer array 0: FiLM block conv_pre_film=.* is not supported",
        "a WaveNet layer array with an active `conv_pre_film` FiLM block",
    ),
    Case(
        "nam-blended-gating",
        "checkpoint",
        _json("model.nam", lambda: nam_with_layer_option(gating_mode=["blended"])),
        r"model\.nam: NAM WaveNet layer array 0: gating_mode 'blended' is not supported",
        '`gating_mode: ["blended"]`',
    ),
    # --- RTNeural / AIDA-X, GuitarML WaveNet, SmartAmpPro JSON
    Case(
        "rtneural-truncated-weights",
        "checkpoint",
        _json("model.json", _truncated_lstm_kernel),
        r"model\.json: layers\[0\]\.weights\[1\] has shape \[1, 8\], expected \[2, 8\]",
        "an AIDA-X LSTM-2 whose recurrent kernel lost a row",
    ),
    Case(
        "rtneural-wrong-shape",
        "checkpoint",
        _json("model.json", lambda: rtneural_tiny(in_shape=[None, None, 3])),
        r"model\.json: layers\[0\]\.weights\[0\] has shape \[1, 8\], expected \[3, 8\]",
        "`in_shape` declaring 3 inputs for an LSTM kernel made for 1",
    ),
    Case(
        "rtneural-absurd-width",
        "checkpoint",
        _json(
            "model.json",
            lambda: rtneural_tiny(
                layers=[{"type": "dense", "shape": [None, None, 10**9], "weights": [[[0.5]], [0.0]]}]
            ),
        ),
        r"model\.json: layers\[0\]\.shape\[-1\] 1000000000 is outside 1\.\.1024",
        "a dense layer declaring 10⁹ outputs with one weight present",
    ),
    Case(
        "guitarml-wavenet-truncated-weights",
        "checkpoint",
        _json("model.json", _wavenet_truncated),
        r"model\.json: variables\[2\]\.data \(W_conv, layer_idx 0\) has 10 values, expected 16",
        "a WaveNet whose first convolution kernel is cut from 16 to 10 values",
    ),
    Case(
        "guitarml-wavenet-absurd-channels",
        "checkpoint",
        _json("model.json", lambda: wavenet_tiny(residual_channels=10**6)),
        r"model\.json: residual_channels 1000000 is outside 1\.\.256",
        "`residual_channels: 1000000` with weights for 2",
    ),
    Case(
        "guitarml-wavenet-absurd-dilation",
        "checkpoint",
        _json("model.json", lambda: wavenet_tiny(dilations=[2**40])),
        r"model\.json: dilations\[0\] 1099511627776 is outside 1\.\.65536",
        "a dilation of 2⁴⁰ samples",
    ),
    Case(
        "smartamppro-truncated-weights",
        "checkpoint",
        _json("model.json", _smartamppro_truncated),
        r"model\.json: dense/kernel:0 has shape \[1, 1\], expected \[2, 1\]",
        "a SmartAmpPro dense kernel missing a row",
    ),
    Case(
        "smartamppro-wrong-shape",
        "checkpoint",
        _json("model.json", lambda: smartamppro_tiny(lstm={"kernel:0": [[0.1] * 8], "bias:0": [0.0] * 7})),
        r"model\.json: lstm/bias:0 has 7 values, expected 4 x hidden size",
        "an LSTM bias of 7 values (not 4 × hidden size)",
    ),
    Case(
        "smartamppro-absurd-window",
        "checkpoint",
        _json("model.json", lambda: smartamppro_tiny(input_size=10**9)),
        r"model\.json: input_size 1000000000 is outside 1\.\.8192",
        "`input_size: 1000000000` (a 10⁹-sample window per output sample)",
    ),
    # --- separate config files
    Case(
        "config-not-json",
        "checkpoint_config",
        _nam_text("model_config.json", "architecture: recurrent\n"),
        r"model_config\.json.* is not valid JSON",
        "weights plus a YAML-looking config file",
        pair=_safetensors("weights.safetensors", recurrent_state_dict, None),
    ),
    Case(
        "config-unknown-architecture",
        "checkpoint_config",
        _json("model_config.json", lambda: {**NATIVE_CONFIG, "architecture": "transformer"}),
        r"unknown architecture 'transformer'",
        "a separate config naming architecture `transformer`",
        pair=_safetensors("weights.safetensors", recurrent_state_dict, None),
        names_file=False,
    ),
    Case(
        "config-future-version",
        "checkpoint_config",
        _json("model_config.json", lambda: {**NATIVE_CONFIG, "format_version": 99}),
        r"config format_version 99 is not supported",
        "a separate config with `format_version: 99`",
        pair=_safetensors("weights.safetensors", recurrent_state_dict, None),
        names_file=False,
    ),
    # --- pre-rendered condition audio
    Case(
        "prerendered-nan",
        "prerendered",
        _wav("c1.wav", _with_sample(np.nan)),
        r"c1\.wav: contains NaN or infinite samples",
        "pre-rendered audio with a NaN sample",
    ),
    Case(
        "prerendered-rate-mismatch",
        "prerendered",
        _wav("c1.wav", lambda: tone(rate=44_100), rate=44_100),
        r"c1\.wav is at 44100 Hz but the excerpt 'x' is at 48000 Hz",
        "44.1 kHz audio for a 48 kHz excerpt",
    ),
    Case(
        "prerendered-text",
        "prerendered",
        _bytes("c1.wav", b"<html>not audio</html>"),
        r"c1\.wav: not a readable audio file",
        "an HTML page renamed `c1.wav`",
    ),
    Case(
        "prerendered-8-channels",
        "prerendered",
        _wav("c1.wav", lambda: tone(channels=8)),
        r"c1\.wav: 8 channels; at most 2",
        "8-channel pre-rendered audio",
    ),
    # --- webMUSHRA YAML
    Case(
        "yaml-paired-comparison",
        "webmushra_yaml",
        _yaml(
            MUSHRA_PAGE.format(stimulus="configs/resources/audio/c1.wav")
            + " - type: paired_comparison\n   id: pc1\n   reference: configs/resources/audio/ref.wav\n"
        ),
        r"test\.yaml: paired_comparison page 'pc1' has no stimuli",
        "a config with a `paired_comparison` page without stimuli next to a mushra page",
    ),
    Case(
        "yaml-bs1116",
        "webmushra_yaml",
        _yaml(" - type: bs1116\n   id: b1\n   stimuli:\n    C1: configs/resources/audio/c1.wav\n"),
        r"test\.yaml: bs1116 page 'b1' has no reference",
        "a config whose only test page is a `bs1116` page without its reference",
    ),
    Case(
        "yaml-likert-12-points",
        "webmushra_yaml",
        _yaml(
            " - type: likert_single_stimulus\n   id: l1\n   stimuli:\n    C1: configs/resources/audio/c1.wav\n"
            "   response:\n" + "".join(f"    - value: p{i}\n      label: P{i}\n" for i in range(12))
        ),
        r"test\.yaml: unsupported page types: likert_single_stimulus page 'l1'\. "
        r"likert_single_stimulus page 'l1': a 12-point response list; ACR blocks take lists of 2 to 11 points",
        "a config whose only test page is a likert page with a 12-point response list (2 to 11 import)",
    ),
    Case(
        "yaml-python-object",
        "webmushra_yaml",
        _yaml_with_marker(' - !!python/object/apply:os.system ["{cmd}"]\n'),
        r"test\.yaml: not valid YAML",
        "a page list holding `!!python/object/apply:os.system`",
        payload=True,
    ),
    Case(
        "yaml-python-name",
        "webmushra_yaml",
        _yaml_with_marker(
            ' - type: generic\n   id: g\n   content: !!python/object/apply:builtins.open ["{marker}", "w"]\n'
        ),
        r"test\.yaml: not valid YAML",
        "a page whose content is `!!python/object/apply:builtins.open`",
        payload=True,
    ),
    Case(
        "yaml-billion-laughs",
        "webmushra_yaml",
        _billion_laughs,
        r"bomb\.yaml: .*(alias|anchor|too many|too large|expan)",
        "nine levels of ten YAML aliases (10^9 pages once expanded)",
        time_limit_s=10.0,
    ),
    Case(
        "yaml-not-a-config",
        "webmushra_yaml",
        lambda folder: _write_text(folder / "test.yaml", "- a\n- b\n"),
        r"test\.yaml: not a webMUSHRA config \(no 'pages' list\)",
        "a YAML list instead of a config",
    ),
    Case(
        "yaml-path-outside-folder",
        "webmushra_yaml",
        _outside_folder,
        r"\.\./\.\./outside/secret\.wav.*(outside|escapes|not allowed)",
        "a mushra page whose reference is `../../outside/secret.wav` (a real WAV)",
    ),
    Case(
        "yaml-absolute-path",
        "webmushra_yaml",
        _absolute_path,
        r"/etc/passwd.*(outside|escapes|not allowed)",
        "a mushra page whose reference is `/etc/passwd`",
    ),
]


# ----------------------------------------------------------------------------- declared sizes over the caps
# Small files declaring what would take gigabytes (or hours) once believed; each is refused
# from its declared sizes, naming the field, before anything is allocated
# (modelrunner/limits.py). tests/hostile/test_peak_memory.py loads each in a fresh process
# and measures the refusing process's peak memory.


def _expanded_pruned_lightning(folder: Path) -> Path:
    """A Lightning ``.ckpt`` whose pruned weight and mask are one stored zero each, expanded
    (stride 0) to 100 000 x 100 000: folding ``orig * mask`` would allocate 40 GB."""
    import torch

    sd = {f"model.{k}": v for k, v in recurrent_state_dict().items()}
    del sd["model.lin.weight"]
    sd["model.lin.weight_orig"] = torch.zeros(1).expand(100_000, 100_000)
    sd["model.lin.weight_mask"] = torch.ones(1).expand(100_000, 100_000)
    path = folder / "model.ckpt"
    torch.save({"state_dict": sd, "hyper_parameters": LIGHTNING_HP}, path)
    return path


class _StorageRef:
    """Pickled by ``_ForgedPickler`` as a torch storage of ``numel`` floats."""

    def __init__(self, numel: int) -> None:
        self.numel = numel


class _ForgedTensor:
    """Unpickles through ``torch._utils._rebuild_tensor_v2`` as a 1-D view of a forged storage."""

    def __init__(self, numel: int) -> None:
        self.numel = numel

    def __reduce__(self):
        import collections

        import torch

        return (
            torch._utils._rebuild_tensor_v2,
            (_StorageRef(self.numel), 0, (self.numel,), (1,), False, collections.OrderedDict()),
        )


def _forged_pickle(obj: object, legacy: bool) -> bytes:
    import pickle

    import torch

    class _ForgedPickler(pickle.Pickler):
        def persistent_id(self, item):
            if isinstance(item, _StorageRef):
                extra = (None,) if legacy else ()
                return ("storage", torch.FloatStorage, "0", "cpu", item.numel, *extra)
            return None

    out = io.BytesIO()
    _ForgedPickler(out, protocol=2).dump(obj)
    return out.getvalue()


def _zip_forged_storage(folder: Path) -> Path:
    """A ``torch.save`` zip whose pickle declares a storage of 2^32 floats (16 GB) over the
    16 bytes its ``data/0`` member holds."""
    import torch

    template = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, template)
    forged = _forged_pickle({"w": _ForgedTensor(1 << 32)}, legacy=False)
    path = folder / "model.pt"
    with zipfile.ZipFile(io.BytesIO(template.getvalue())) as src, zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, forged if name.endswith("/data.pkl") else src.read(name))
    return path


def _legacy_forged_storage(folder: Path) -> Path:
    """A legacy-format (non-zip) ``torch.save`` file whose storage declares 2 * 10^9 floats:
    ``torch.load`` reserves the declared 8 GB before reading the 16 bytes present."""
    import pickle

    head = b"".join(
        pickle.dumps(o, protocol=2)
        for o in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True})
    )
    body = _forged_pickle({"w": _ForgedTensor(2_000_000_000)}, legacy=True)
    path = folder / "model.pt"
    path.write_bytes(head + body + pickle.dumps(["0"], protocol=2) + struct.pack("<q", 4) + bytes(16))
    return path


def _safetensors_huge_shape(folder: Path) -> Path:
    header = json.dumps(
        {
            "w": {"dtype": "F32", "shape": [1_000_000, 1_000_000], "data_offsets": [0, 16]},
            "__metadata__": {"config": json.dumps(NATIVE_CONFIG)},
        }
    ).encode()
    path = folder / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    return path


def nam_wavenet_long_memory() -> dict:
    """A NAM WaveNet of 20 layers (kernel 4096, dilation 65536, 1 channel) with every weight
    present (about 82 000, a 400 kB file): its receptive field is 5.4 * 10^9 samples, the
    context each rendered segment would need."""
    n, kernel = 20, 4096
    count = 1 + n * (kernel + 4) + 2 + 1  # rechannel; per layer conv, bias, mixer, 1x1 + bias; head + bias; scale
    layer = {
        "input_size": 1,
        "condition_size": 1,
        "channels": 1,
        "kernel_size": kernel,
        "dilations": [65_536] * n,
        "activation": "Tanh",
        "gated": False,
        "head_size": 1,
        "head_bias": True,
    }
    return {
        "version": "0.5.4",
        "architecture": "WaveNet",
        "config": {"layers": [layer], "head": None, "head_scale": 1.0},
        "weights": [0.0] * count,
        "sample_rate": 48000,
    }


def rtneural_long_conv() -> dict:
    """An RTNeural conv1d of kernel 4096 at dilation 65536 (4096 weights): 2.7 * 10^8 samples
    of receptive field."""
    return {
        "in_shape": [None, None, 1],
        "layers": [
            {
                "type": "conv1d",
                "activation": "",
                "shape": [None, None, 1],
                "kernel_size": [4096],
                "dilation": [65_536],
                "weights": [[[[0.0]]] * 4096, [0.0]],
            }
        ],
    }


def wavenet_long_memory() -> dict:
    """A GuitarML WaveNet of 64 gated layers, filter width 64, dilation 65536, 1 channel,
    every variable present (9 000 values): 2.6 * 10^8 samples of receptive field."""
    n, f = 64, 64
    variables = [{"layer_idx": -1, "name": "W", "data": [0.5]}, {"layer_idx": -1, "name": "b", "data": [0.0]}]
    for i in range(n):
        variables += [
            {"layer_idx": i, "name": "W_conv", "data": [0.0] * (f * 2)},
            {"layer_idx": i, "name": "b_conv", "data": [0.0] * 2},
            {"layer_idx": i, "name": "W_out", "data": [0.0]},
            {"layer_idx": i, "name": "b_out", "data": [0.0]},
        ]
    variables += [{"layer_idx": n, "name": "W", "data": [0.0] * n}, {"layer_idx": n, "name": "b", "data": [0.0]}]
    return wavenet_tiny(residual_channels=1, filter_width=f, dilations=[65_536] * n, variables=variables)


def smartamppro_wide_window() -> dict:
    """A SmartAmpPro whose 8192-sample window, stride 1 and 512 first-layer channels make
    every 4096-sample render block hold 4096 x 8192 x 512 floats (68 GB); 1 000 weights."""
    return smartamppro_tiny(
        input_size=8192,
        conv1d_stride=1,
        conv1d_1_stride=1,
        conv1d={"kernel:0": [[[0.1] * 512]], "bias:0": [0.0] * 512},
        conv1d_1={"kernel:0": [[[0.1]] * 512], "bias:0": [0.0]},
        lstm={"kernel:0": [[0.1] * 4], "bias:0": [0.0] * 4},
        dense={"kernel:0": [[0.5]], "bias:0": [0.0]},
    )


def _flac_streaminfo(name: str, *, frames: int | None = None, rate: int | None = None) -> Callable[[Path], Path]:
    """A 1 s FLAC whose STREAMINFO block is rewritten to declare ``frames`` samples or a
    ``rate`` (both read from the header: libsndfile reports them as they stand)."""

    def make(folder: Path) -> Path:
        path = write(folder, name, tone(), subtype="PCM_16", fmt="FLAC")
        raw = bytearray(path.read_bytes())
        start = 8 + 10  # "fLaC", the block header, then min/max block and frame sizes
        bits = int.from_bytes(raw[start : start + 8], "big")
        if frames is not None:
            bits = (bits & ~((1 << 36) - 1)) | frames
        if rate is not None:
            bits = (bits & ~(((1 << 20) - 1) << 44)) | (rate << 44)
        raw[start : start + 8] = bits.to_bytes(8, "big")
        path.write_bytes(bytes(raw))
        return path

    return make


SIZE_CASES: list[Case] = [
    Case(
        "torch-expanded-tensor",
        "checkpoint",
        _expanded_pruned_lightning,
        r"model\.ckpt: tensor state_dict\['model\.lin\.weight_(orig|mask)'\] declares shape \[100000, 100000\]: "
        r"10000000000 elements over a storage of 1 \(an expanded view, stride \[0, 0\]\), over the cap of \d+ weights",
        "a Lightning `.ckpt` whose pruned `weight_orig`/`weight_mask` are one stored value expanded "
        "(stride 0) to 100 000 x 100 000 (folding them would allocate 40 GB)",
    ),
    Case(
        "torch-zip-forged-storage",
        "checkpoint",
        _zip_forged_storage,
        r"model\.pt: storage 0 declares 4294967296 elements \(17179869184 bytes\) but the file holds 16 bytes",
        "a `torch.save` zip whose pickle declares a storage of 2^32 floats over a 16-byte `data/0` member",
    ),
    Case(
        "torch-legacy-forged-storage",
        "checkpoint",
        _legacy_forged_storage,
        r"model\.pt: storage 0 declares 2000000000 elements; the storages declare 8000000000 bytes but the file "
        r"holds \d+ bytes after its pickle",
        "a legacy (non-zip) `torch.save` file whose storage declares 2·10⁹ floats (torch reserves 8 GB before reading)",
    ),
    Case(
        "safetensors-huge-shape",
        "checkpoint",
        _safetensors_huge_shape,
        r"model\.safetensors: tensor 'w' declares shape \[1000000, 1000000\]: 1000000000000 elements, over the cap",
        "a safetensors header declaring a 10⁶ x 10⁶ tensor over 16 bytes of data",
    ),
    Case(
        "nam-wavenet-receptive-field",
        "checkpoint",
        _json("model.nam", nam_wavenet_long_memory),
        r"model\.nam: config\.layers\[0\]\.dilations with kernel_size 4096 bring the receptive field to "
        r"5367398401 samples, over the cap of \d+ samples \(set MODELRUNNER_MAX_RECEPTIVE_FIELD",
        "a 400 kB NAM WaveNet, every weight present, of 20 layers with kernel 4096 at dilation 65536 "
        "(5.4·10⁹ samples of context per rendered segment)",
    ),
    Case(
        "rtneural-receptive-field",
        "checkpoint",
        _json("model.json", rtneural_long_conv),
        r"model\.json: layers\[0\]\.dilation with kernel_size 4096 brings the receptive field to 268369921 samples, "
        r"over the cap of \d+ samples",
        "an AIDA-X conv1d of kernel 4096 at dilation 65536 with its 4096 weights (2.7·10⁸ samples of context)",
    ),
    Case(
        "guitarml-wavenet-receptive-field",
        "checkpoint",
        _json("model.json", wavenet_long_memory),
        r"model\.json: dilations with filter_width 64 give a receptive field of 264241153 samples, "
        r"over the cap of \d+ samples",
        "a GuitarML WaveNet, every variable present, of 64 layers with filter width 64 at dilation 65536",
    ),
    Case(
        "smartamppro-working-memory",
        "checkpoint",
        _json("model.json", smartamppro_wide_window),
        r"model\.json: input_size with conv1d_stride 1, conv1d kernel 1 and 512 conv1d channels needs \d+ bytes of "
        r"working memory per 4096-sample render block(, bringing the model to \d+ bytes)?, over the cap of \d+ bytes",
        "a 9 kB SmartAmpPro with an 8192-sample window, stride 1 and 512 channels (68 GB per render block)",
    ),
    Case(
        "flac-absurd-length",
        "prerendered",
        _flac_streaminfo("c1.flac", frames=(1 << 36) - 1),
        r"c1\.flac: the header declares 68719476735 frames \(1431656 s at 48000 Hz\), over the cap of \d+ seconds",
        "a 1 s FLAC whose STREAMINFO declares 2^36 - 1 frames (decoding allocates 256 GB up front)",
    ),
    Case(
        "flac-absurd-rate",
        "prerendered",
        _flac_streaminfo("c1.flac", rate=(1 << 20) - 1),
        r"c1\.flac: sample rate 1048575 Hz is outside 8000\.\.96000 Hz",
        "a 1 s FLAC whose STREAMINFO declares 1 048 575 Hz",
    ),
]
CASES += SIZE_CASES


# ----------------------------------------------------------------- large excerpts, accepted

#: Rate and channels of the large excerpts: the most an excerpt may have (96 kHz stereo).
LARGE_RATE, LARGE_CHANNELS = 96_000, 2


@dataclass(frozen=True)
class LargeExcerpt:
    """An excerpt pair within every cap but large on disk: the check must accept it while
    holding a block of it at a time, never the file (``test_peak_memory.py``)."""

    name: str
    subtype: str
    seconds: float
    sends: str

    def make(self, folder: Path) -> tuple[Path, Path]:
        """Write the pair block by block (a 1 s tone whose level changes each second, so no
        two blocks are alike), never holding more than a second of it."""
        paths = (folder / f"{self.name}-dry.wav", folder / f"{self.name}-device.wav")
        seconds = int(self.seconds)
        t = np.arange(LARGE_RATE) / LARGE_RATE
        for path, shape in zip(paths, (lambda x: x, lambda x: np.tanh(2.0 * x) * 0.5)):
            with sf.SoundFile(
                path, "w", samplerate=LARGE_RATE, channels=LARGE_CHANNELS, subtype=self.subtype, format="WAV"
            ) as fh:
                for second in range(seconds):
                    level = 0.1 + 0.4 * ((second * 7919) % 100) / 100
                    x = shape(level * np.sin(2 * np.pi * (220.0 + second % 50) * t)).astype(np.float32)
                    fh.write(np.repeat(x[:, None], LARGE_CHANNELS, axis=1))
        return paths


LARGE_EXCERPTS: list[LargeExcerpt] = [
    LargeExcerpt(
        "excerpt-8bit-50mb",
        "PCM_U8",
        260.0,
        "a dry input and a device recording of 260 s each, 96 kHz stereo 8-bit WAV: 50 MB per file, "
        "200 MB per file decoded to float32",
    ),
    LargeExcerpt(
        "excerpt-24bit-290s",
        "PCM_24",
        290.0,
        "a dry input and a device recording of 290 s each (under the 300 s `MAX_EXCERPT_SECONDS`), "
        "96 kHz stereo 24-bit WAV: 167 MB per file, 223 MB per file decoded to float32",
    ),
]
