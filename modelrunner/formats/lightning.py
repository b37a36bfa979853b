"""PyTorch Lightning ``.ckpt`` checkpoints (Lightning 1.x and 2.x).

A Lightning checkpoint is a torch file (legacy pickle or zip) holding a dict with
``state_dict`` and the module's hyper-parameters under ``hparams`` (Lightning < 1.0 and
PedalNetRT) or ``hyper_parameters`` (later); optimizer states and the rest are ignored.
It is read with ``weights_only=True``. The architecture is found from:

1. the ``config=`` argument (the native config schema, see :mod:`.native`);
2. hyper-parameters that themselves follow the native schema (``architecture`` naming a
   registry entry, optional ``sample_rate``, ``knobs``, ``params``), or that hold such a
   config under ``model_config``;
3. PedalNetRT: ``model == "pedalnet"`` or the ``num_channels``/``dilation_depth``/
   ``num_repeat``/``kernel_size`` set with ``wavenet.*`` weights (44.1 kHz, no knobs).

The Lightning module's attribute prefix (``wavenet.``, ``model.``...) is stripped.
Pruned weights (``torch.nn.utils.prune``: ``name_orig`` and ``name_mask``) are folded
into ``name = name_orig * name_mask``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from .. import architectures, safety
from ..errors import CheckpointError
from ..model import EffectModel
from .native import build_model, parse_config

PEDALNET_SAMPLE_RATE = 44_100
_PEDALNET_KEYS = ("num_channels", "dilation_depth", "num_repeat", "kernel_size")


def fold_pruning(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace each ``X_orig``/``X_mask`` pair with ``X = X_orig * X_mask``."""
    out = dict(state_dict)
    for key in [k for k in state_dict if k.endswith("_orig")]:
        base = key[: -len("_orig")]
        mask_key = base + "_mask"
        if mask_key not in state_dict:
            raise CheckpointError(f"pruned weight {key!r} has no {mask_key!r}")
        orig, mask = state_dict[key], state_dict[mask_key]
        if orig.shape != mask.shape:
            raise CheckpointError(
                f"pruned weight {key!r} has shape {tuple(orig.shape)} but its mask {tuple(mask.shape)}"
            )
        out[base] = orig * mask.to(orig.dtype)
        del out[key], out[mask_key]
    stray = [k for k in out if k.endswith("_mask")]
    if stray:
        raise CheckpointError(f"pruning mask {stray[0]!r} has no matching '_orig' weight")
    return out


def strip_prefix(state_dict: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Drop the longest common leading ``attribute.`` path that makes keys match ``expected``."""
    if set(state_dict) == expected:
        return state_dict
    first = next(iter(state_dict), "")
    parts = first.split(".")
    for n in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:n]) + "."
        if all(k.startswith(prefix) for k in state_dict):
            stripped = {k[len(prefix) :]: v for k, v in state_dict.items()}
            if set(stripped) == expected:
                return stripped
    # No prefix makes the keys line up; strip the shortest common one so the
    # strict loader names the real missing/unexpected keys.
    prefix = parts[0] + "."
    if len(parts) > 1 and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def _config_from_hparams(hp: dict[str, Any], state_dict: dict[str, torch.Tensor], source: str) -> dict[str, Any] | None:
    if isinstance(hp.get("model_config"), dict):
        return parse_config(hp["model_config"], source=source)
    if hp.get("architecture") in architectures.REGISTRY:
        return parse_config(
            {
                "format_version": 1,
                "architecture": hp["architecture"],
                "sample_rate": hp.get("sample_rate", 48_000),
                "knobs": hp.get("knobs", []),
                "params": hp.get("params", {}),
            },
            source=source,
        )
    pedal = hp.get("model") == "pedalnet" or (
        all(k in hp for k in _PEDALNET_KEYS) and any(k.startswith("wavenet.") for k in state_dict)
    )
    if pedal:
        try:
            params = {k: int(hp[k]) for k in _PEDALNET_KEYS}
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{source}: PedalNet hparams need integer {', '.join(_PEDALNET_KEYS)}") from None
        return parse_config(
            {
                "format_version": 1,
                "architecture": "pedalnet",
                "sample_rate": hp.get("sample_rate", PEDALNET_SAMPLE_RATE),
                "knobs": [],
                "params": params,
            },
            source=source,
        )
    return None


def load(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    config: str | os.PathLike[str] | dict[str, Any] | None = None,
    max_bytes: int | None = None,
    device: torch.device | str = "cpu",
) -> EffectModel:
    """Load a Lightning checkpoint (its tensors onto ``device``) as an ``EffectModel``."""
    started = time.perf_counter()
    p = Path(path)
    obj = safety.torch_load(p, max_bytes, map_location=device)
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise CheckpointError(f"{p.name}: not a Lightning checkpoint (no 'state_dict')")
    hp = obj.get("hyper_parameters", obj.get("hparams")) or {}
    if not isinstance(hp, dict):
        hp = {}
    state_dict = {k: v for k, v in obj["state_dict"].items()}
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise CheckpointError(f"{p.name}: state_dict must map names to tensors")
    state_dict = fold_pruning(state_dict)
    cfg: dict[str, Any] | None
    if config is not None:
        cfg = parse_config(config, source=p.name)
    else:
        cfg = _config_from_hparams(hp, state_dict, p.name)
    if cfg is None:
        raise CheckpointError(
            f"{p.name}: cannot tell the architecture from the hyper-parameters "
            f"({', '.join(sorted(map(str, hp))) or 'none'}); pass config= naming a registry architecture"
        )
    # Sized on the meta device: a config declaring a huge model allocates nothing here.
    expected = set(architectures.build_plan(cfg["architecture"], cfg["params"], len(cfg["knobs"])).state_dict())
    state_dict = strip_prefix(state_dict, expected)
    warnings = []
    if cfg["architecture"] == "pedalnet" and sample_rate is None and "sample_rate" not in hp:
        warnings.append("no sample rate stored; PedalNet's 44100 Hz assumed")
    lightning_meta = {k: obj[k] for k in ("epoch", "global_step", "pytorch-lightning_version") if k in obj}
    lightning_meta["hyper_parameters"] = {
        str(k): v for k, v in hp.items() if isinstance(v, (str, int, float, bool, type(None)))
    }
    return build_model(
        path=p,
        state_dict=state_dict,
        cfg=cfg,
        fmt="lightning",
        started=started,
        sample_rate=sample_rate,
        metadata={"lightning": lightning_meta},
        warnings=warnings,
    )
