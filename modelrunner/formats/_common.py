"""What every loader shares: reading JSON safely and wrapping a module as an EffectModel."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from .. import limits, safety
from ..errors import CheckpointError
from ..model import EffectModel

LOADER_VERSION = "1"


def read_json(path: str | os.PathLike[str], max_bytes: int | None = None) -> dict[str, Any]:
    """Parse a JSON checkpoint after the size check; refuse non-objects and NaN literals."""
    safety.check_environment()
    p = Path(path)
    safety.check_size(p, max_bytes)

    def _no_constants(token: str) -> float:
        raise CheckpointError(f"{p.name}: JSON contains {token}, weights must be finite numbers")

    raw = p.read_bytes()
    # Parsed, every number is a Python object: bound that before parsing.
    estimate = limits.json_values_bytes(raw)
    limits.at_most(
        "model_bytes",
        estimate,
        source=p.name,
        field="the JSON text",
        what=f"holds up to {raw.count(b',') + 1} values, about {estimate} bytes once parsed",
    )
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except CheckpointError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{p.name}: not valid JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{p.name}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{p.name}: top level of the JSON file must be an object")
    return data


def check_sample_rate(value: Any, source: str) -> int:
    """A sample rate as a positive int in a plausible range, else ``CheckpointError``."""
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise CheckpointError(f"{source}: sample rate {value!r} is not a number") from None
    if not (rate == rate and 8_000 <= rate <= 384_000 and rate == int(rate)):
        raise CheckpointError(f"{source}: sample rate {value!r} is not a whole number of Hz in 8000..384000")
    return int(rate)


def make_model(
    *,
    path: str | os.PathLike[str],
    module: torch.nn.Module,
    sample_rate: int,
    fmt: str,
    architecture: str,
    stateful: bool,
    receptive_field: int,
    knob_names: list[str] | None = None,
    knob_ranges: list[tuple[float, float]] | None = None,
    knob_defaults: list[float] | None = None,
    metadata: dict[str, Any] | None = None,
    started: float,
    warnings: list[str] | None = None,
    extra_provenance: dict[str, Any] | None = None,
) -> EffectModel:
    """Freeze ``module`` and wrap it with provenance (file name, SHA-256, size, timing)."""
    p = Path(path)
    safety.freeze(module)
    provenance = {
        "file_name": p.name,
        "sha256": safety.sha256(p),
        "size_bytes": p.stat().st_size,
        "loader_version": LOADER_VERSION,
        "torch_version": torch.__version__.split("+")[0],
        "load_time_s": round(time.perf_counter() - started, 6),
        "warnings": list(warnings or []),
    }
    provenance.update(extra_provenance or {})
    return EffectModel(
        module=module,
        sample_rate=int(sample_rate),
        knob_names=list(knob_names or []),
        knob_ranges=[(float(a), float(b)) for a, b in (knob_ranges or [])],
        stateful=bool(stateful),
        receptive_field=int(receptive_field),
        format=fmt,
        architecture=architecture,
        parameter_count=safety.parameter_count(module),
        metadata=dict(metadata or {}),
        provenance=provenance,
        knob_defaults=None if knob_defaults is None else [float(v) for v in knob_defaults],
    )


def as_tensor(value: Any, key: str, source: str) -> torch.Tensor:
    """A nested list of numbers as a float32 tensor, naming ``key`` when it is not one."""
    try:
        t = torch.tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise CheckpointError(f"{source}: weight {key!r} is not a (rectangular) list of numbers") from None
    return t


def shaped(value: Any, shape: tuple[int, ...], field: str, source: str) -> torch.Tensor:
    """A nested list of finite numbers with exactly ``shape`` as float32, naming ``field`` otherwise.

    Called only after the declared sizes have been bounded, so the tensor is never larger
    than what the file itself holds.
    """
    check_dims(value, shape, field, source)
    t = as_tensor(value, field, source)
    if tuple(t.shape) != tuple(shape):
        raise CheckpointError(f"{source}: {field} has shape {list(t.shape)}, expected {list(shape)}")
    if not bool(torch.isfinite(t).all()):
        raise CheckpointError(f"{source}: {field} holds NaN or infinite values")
    return t


def check_dims(value: Any, shape: tuple[int, ...], field: str, source: str) -> None:
    """Compare a nested list's lengths with ``shape`` before any tensor is made from it:
    every sublist must be as long as the first one at its depth (else the first that is
    not is named), and those lengths must be ``shape``."""
    found: list[int] = []
    first = value
    for _ in shape:
        if not isinstance(first, list):
            break
        found.append(len(first))
        if not first:
            break
        first = first[0]
    level: list[tuple[str, Any]] = [(field, value)]
    for depth in range(1, len(found)):
        nxt: list[tuple[str, Any]] = []
        for where, rows in level:
            for i, row in enumerate(rows):
                if not isinstance(row, list) or len(row) != found[depth]:
                    size = len(row) if isinstance(row, list) else "no"
                    raise CheckpointError(
                        f"{source}: weight {field!r} is not a (rectangular) list of numbers: {where}[{i}] has "
                        f"{size} values where the first has {found[depth]}"
                    )
                nxt.append((f"{where}[{i}]", row))
        level = nxt
    if found != list(shape):
        raise CheckpointError(f"{source}: {field} has shape {found}, expected {list(shape)}")


def whole(value: Any, field: str, source: str, lo: int, hi: int) -> int:
    """A whole number in ``lo..hi`` (bools refused), naming ``field`` otherwise."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value == value
        or value
        in (
            float("inf"),
            float("-inf"),
        )
        or value != int(value)
    ):
        raise CheckpointError(f"{source}: {field} {value!r} is not a whole number")
    n = int(value)
    if not lo <= n <= hi:
        raise CheckpointError(f"{source}: {field} {n} is outside {lo}..{hi}")
    return n
