"""Checkpoint formats: one loader module per format, all returning ``EffectModel``.

``load(path)`` detects the format from the file's content (not its extension):

==============  ==============================================  =================
format          recognised by                                   module
==============  ==============================================  =================
``coreaudioml``  JSON object with ``model_data`` + ``state_dict``  ``coreaudioml``
``nam``          JSON object with ``architecture`` + ``weights``   ``nam``
``native``       safetensors header, or a torch file holding a     ``native``
                 plain state_dict (needs ``config=``)
``lightning``    torch file whose dict has ``state_dict`` and      ``lightning``
                 ``hparams``/``hyper_parameters``
``rtneural``     JSON object with ``in_shape`` + ``layers`` lists   ``rtneural``
                 (RTNeural / AIDA-X)
``guitarml_wavenet``  JSON object with ``variables`` +           ``guitarml_wavenet``
                 ``dilations`` lists (SmartGuitarPedal/Amp)
``smartamppro``  JSON object with ``conv1d``, ``conv1d_1``,         ``smartamppro``
                 ``lstm``, ``dense``, ``input_size``
==============  ==============================================  =================

Torch files are only ever opened through :func:`modelrunner.safety.torch_load`
(``weights_only=True``); see ``docs/formats.md`` for the formats and the native schema.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import safety
from ..errors import CheckpointError
from ..model import EffectModel

FORMATS = ("coreaudioml", "nam", "native", "lightning", "rtneural", "guitarml_wavenet", "smartamppro")

__all__ = ["FORMATS", "detect_format", "load"]


def _sniff(path: Path) -> str:
    """Cheap classification from the first bytes: json, safetensors, torch or unknown."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    stripped = head.lstrip(b" \t\r\n\xef\xbb\xbf")
    if stripped.startswith(b"{"):
        return "json"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    return "unknown"


def _torch_kind(obj: Any) -> str:
    if (
        isinstance(obj, dict)
        and isinstance(obj.get("state_dict"), dict)
        and ("hparams" in obj or "hyper_parameters" in obj)
    ):
        return "lightning"
    return "native"


def detect_format(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> str:
    """Return the format name (one of ``FORMATS``) for a file.

    Raises ``CheckpointError`` for anything else (including TorchScript archives and
    pickles that the safe loader refuses).
    """
    p = Path(path)
    safety.check_size(p, max_bytes)
    kind = _sniff(p)
    if kind == "json":
        from ._common import read_json

        data = read_json(p, max_bytes)
        if isinstance(data.get("model_data"), dict) and "state_dict" in data:
            return "coreaudioml"
        if "architecture" in data and "weights" in data:
            return "nam"
        from . import guitarml_wavenet, rtneural, smartamppro

        if rtneural.looks_like(data):
            return "rtneural"
        if guitarml_wavenet.looks_like(data):
            return "guitarml_wavenet"
        if smartamppro.looks_like(data):
            return "smartamppro"
        raise CheckpointError(
            f"{p.name}: JSON file is none of CoreAudioML (model_data + state_dict), NAM (architecture + weights), "
            "RTNeural/AIDA-X (in_shape + layers), GuitarML WaveNet (variables + dilations) or SmartAmpPro "
            "(conv1d, conv1d_1, lstm, dense, input_size)"
        )
    if kind == "safetensors":
        return "native"
    if kind == "torch":
        return _torch_kind(safety.torch_load(p, max_bytes))
    raise CheckpointError(
        f"{p.name}: unrecognised checkpoint (expected CoreAudioML or NAM JSON, "
        "safetensors, or a PyTorch/Lightning state_dict file)"
    )


def load(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    config: str | os.PathLike[str] | dict[str, Any] | None = None,
    max_bytes: int | None = None,
    device: torch.device | str | None = None,
) -> EffectModel:
    """Load any supported checkpoint as an ``EffectModel`` (format detected by content).

    ``sample_rate`` overrides or supplies the model's native rate (CoreAudioML stores
    none); ``config`` is the native format's architecture config (a path or a dict);
    ``max_bytes`` overrides the checkpoint size limit. ``device`` (default the CPU) is
    where the model renders (``modelrunner.device.resolve``): torch files are loaded
    onto it (``map_location``, still ``weights_only=True``) and the module is moved there.
    """
    target = torch.device(device) if device is not None else torch.device("cpu")
    safety.check_environment()
    fmt = detect_format(path, max_bytes=max_bytes)
    from . import coreaudioml, guitarml_wavenet, lightning, nam, native, rtneural, smartamppro

    loaders: dict[str, Callable[..., EffectModel]] = {
        "coreaudioml": coreaudioml.load,
        "nam": nam.load,
        "native": native.load,
        "lightning": lightning.load,
        "rtneural": rtneural.load,
        "guitarml_wavenet": guitarml_wavenet.load,
        "smartamppro": smartamppro.load,
    }
    extra: dict[str, Any] = {"device": target} if fmt in ("native", "lightning") else {}
    model = loaders[fmt](path, sample_rate=sample_rate, config=config, max_bytes=max_bytes, **extra)
    return model if target.type == "cpu" else model.to(target)
