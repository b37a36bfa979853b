"""The project's native format: weights plus a JSON config naming a registry architecture.

Weights are a safetensors file (preferred: no pickle at all) or a PyTorch ``.pt``/``.pth``
file holding a plain state_dict (read with ``weights_only=True``). The config is a JSON
object, format version 1::

    {"format_version": 1,
     "architecture": "tcn",                 # a name in modelrunner.architectures.REGISTRY
     "sample_rate": 48000,                  # the rate the model was trained at
     "knobs": [{"name": "gain", "min": 0, "max": 1, "default": 0.5}],
     "params": {"channels": 16}}            # constructor arguments of the architecture

It is found, in this order: the ``config=`` argument (a dict, or a path to a JSON file);
the safetensors header's ``__metadata__["config"]`` (a JSON string); the ``"config"``
entry of a ``.pt`` file saved as ``{"state_dict": ..., "config": ...}``. :func:`save`
writes the safetensors form. Knob values are passed to the module in the order listed.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
from pathlib import Path
from typing import Any

import torch

from .. import architectures, declared, limits, safety
from ..errors import CheckpointError
from ..model import EffectModel
from ._common import check_sample_rate, make_model

FORMAT_VERSION = 1
_KNOB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
_MAX_HEADER = 100_000_000


def parse_config(config: Any, *, source: str = "config") -> dict[str, Any]:
    """Validate a native config (dict, JSON string or path) and return it normalised."""
    if isinstance(config, (str, os.PathLike)) and not str(config).lstrip().startswith("{"):
        p = Path(config)
        try:
            config = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"{source}: config file {p.name} does not exist") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{source}: config file {p.name} is not valid JSON ({exc})") from None
    elif isinstance(config, str):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{source}: embedded config is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{source}: config must be a JSON object")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: config format_version {version!r} is not supported (expected {FORMAT_VERSION})"
        )
    unknown = set(config) - {"format_version", "architecture", "sample_rate", "knobs", "params", "metadata"}
    if unknown:
        raise CheckpointError(f"{source}: unknown config keys: {', '.join(sorted(unknown))}")
    arch = config.get("architecture")
    if arch not in architectures.REGISTRY:
        raise CheckpointError(
            f"{source}: unknown architecture {arch!r} (known: {', '.join(sorted(architectures.REGISTRY))})"
        )
    if "sample_rate" not in config:
        raise CheckpointError(f"{source}: config lacks 'sample_rate'")
    rate = check_sample_rate(config["sample_rate"], source)
    knobs = config.get("knobs", [])
    if not isinstance(knobs, list):
        raise CheckpointError(f"{source}: 'knobs' must be a list")
    clean_knobs = []
    for k in knobs:
        if not isinstance(k, dict) or not isinstance(k.get("name"), str) or not _KNOB_NAME.match(k["name"]):
            raise CheckpointError(f"{source}: every knob needs a 'name' (letters, digits, _ or -), got {k!r}")
        try:
            lo, hi = float(k.get("min", 0.0)), float(k.get("max", 1.0))
            default = float(k.get("default", (lo + hi) / 2))
        except (TypeError, ValueError):
            raise CheckpointError(f"{source}: knob {k['name']!r} has a non-numeric min/max/default") from None
        if not (lo < hi) or not (lo <= default <= hi):
            raise CheckpointError(f"{source}: knob {k['name']!r} needs min < max and min <= default <= max")
        clean_knobs.append({"name": k["name"], "min": lo, "max": hi, "default": default})
    names = [k["name"] for k in clean_knobs]
    if len(set(names)) != len(names):
        raise CheckpointError(f"{source}: knob names repeat: {names}")
    params = config.get("params", {})
    if not isinstance(params, dict):
        raise CheckpointError(f"{source}: 'params' must be an object")
    return {
        "format_version": FORMAT_VERSION,
        "architecture": arch,
        "sample_rate": rate,
        "knobs": clean_knobs,
        "params": params,
        "metadata": config.get("metadata", {}),
    }


def _safetensors_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path.name}: truncated safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if n > min(_MAX_HEADER, path.stat().st_size - 8):
            raise CheckpointError(f"{path.name}: safetensors header length {n} is implausible")
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path.name}: damaged safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name}: damaged safetensors header")
    return header


def _read_weights(
    p: Path, max_bytes: int | None, device: torch.device | str = "cpu"
) -> tuple[dict[str, torch.Tensor], Any]:
    """Return (state_dict on ``device``, embedded config or None)."""
    safety.check_environment()
    safety.check_size(p, max_bytes)
    with open(p, "rb") as fh:
        head = fh.read(9)
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= _MAX_HEADER:
        header = _safetensors_header(p)
        declared.check_safetensors_header(p.name, header)
        embedded = (header.get("__metadata__") or {}).get("config")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device=str(torch.device(device))), embedded
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{p.name}: damaged safetensors file ({exc})") from None
    obj = safety.torch_load(p, max_bytes, map_location=device)
    embedded = None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        embedded = obj.get("config")
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{p.name}: expected a state_dict (a mapping of names to tensors)")
    return obj, embedded


def build_model(
    *,
    path: Path,
    state_dict: dict[str, torch.Tensor],
    cfg: dict[str, Any],
    fmt: str,
    started: float,
    sample_rate: int | None,
    metadata: dict[str, Any] | None = None,
    warnings: list[str] | None = None,
) -> EffectModel:
    """Check the weights against the config's architecture (sized on the meta device, so a
    config declaring a gigantic model allocates nothing), then build it, load strictly, wrap it."""
    plan = architectures.build_plan(cfg["architecture"], cfg["params"], len(cfg["knobs"]))
    safety.check_weights_fit(plan, state_dict, source=path.name)
    rf = architectures.receptive_field(plan)
    limits.at_most("receptive_field", rf, source=path.name, field="params", what=f"give a receptive field of {rf}")
    module = architectures.build(cfg["architecture"], cfg["params"], len(cfg["knobs"]))
    safety.load_state_dict_strict(module, state_dict, source=path.name)
    rate = cfg["sample_rate"] if sample_rate is None else check_sample_rate(sample_rate, path.name)
    meta = dict(cfg.get("metadata") or {})
    meta.update(metadata or {})
    meta["config"] = {k: v for k, v in cfg.items() if k != "metadata"}
    return make_model(
        path=path,
        module=module,
        sample_rate=rate,
        fmt=fmt,
        architecture=architectures.label(cfg["architecture"], module),
        stateful=architectures.is_stateful(module),
        receptive_field=architectures.receptive_field(module),
        knob_names=[k["name"] for k in cfg["knobs"]],
        knob_ranges=[(k["min"], k["max"]) for k in cfg["knobs"]],
        knob_defaults=[k["default"] for k in cfg["knobs"]],
        metadata=meta,
        started=started,
        warnings=warnings,
    )


def load(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    config: str | os.PathLike[str] | dict[str, Any] | None = None,
    max_bytes: int | None = None,
    device: torch.device | str = "cpu",
) -> EffectModel:
    """Load native weights (safetensors or ``.pt``, onto ``device``) with their config as an ``EffectModel``."""
    started = time.perf_counter()
    p = Path(path)
    state_dict, embedded = _read_weights(p, max_bytes, device)
    if config is None and embedded is None:
        raise CheckpointError(
            f"{p.name}: no architecture config; pass config= (JSON file or dict) or embed it "
            "with modelrunner.formats.native.save"
        )
    cfg = parse_config(config if config is not None else embedded, source=p.name)
    return build_model(path=p, state_dict=state_dict, cfg=cfg, fmt="native", started=started, sample_rate=sample_rate)


def save(path: str | os.PathLike[str], module_state_dict: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write ``module_state_dict`` as safetensors with ``config`` embedded, after checking
    that the config builds an architecture these weights fit exactly."""
    cfg = parse_config(config, source=Path(path).name)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in module_state_dict.items()}
    plan = architectures.build_plan(cfg["architecture"], cfg["params"], len(cfg["knobs"]))
    safety.check_weights_fit(plan, tensors, source=Path(path).name)
    module = architectures.build(cfg["architecture"], cfg["params"], len(cfg["knobs"]))
    safety.load_state_dict_strict(module, tensors, source=Path(path).name)
    from safetensors.torch import save_file

    dest = Path(path)
    tmp = dest.with_name(f".tmp-{dest.name}")
    save_file(tensors, str(tmp), metadata={"config": json.dumps(cfg)})
    os.replace(tmp, dest)
    return dest
