"""Safe reading of untrusted checkpoint files.

A PyTorch checkpoint is a pickle, and unpickling can run arbitrary code. Every loader
goes through :func:`torch_load`, which always passes ``weights_only=True`` (PyTorch's
restricted unpickler: tensors, containers and primitive types only) and refuses to run
at all when ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set, because that variable silently
turns the restriction off. Before unpickling, zip archives are checked from their
central directory (entry count, unpacked size, TorchScript members), the pickle's declared
storages and views are checked against the file and the caps without building them
(:mod:`modelrunner.declared`), and every file is checked against a size limit. After
loading, weights are checked for NaN/Inf and against the architecture's expected keys and
shapes.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from . import declared, limits
from .errors import CheckpointError

#: Default largest checkpoint accepted, in bytes; override with the environment variable
#: ``MODELRUNNER_MAX_CHECKPOINT_BYTES`` or the ``max_bytes`` argument of a loader.
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
#: Zip archives (PyTorch's default since 1.6) with more members than this are refused.
MAX_ZIP_ENTRIES = 10_000
#: Unpacked size over packed size above this ratio looks like a zip bomb.
MAX_ZIP_RATIO = 100.0
UNSAFE_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def check_environment() -> None:
    """Refuse to load anything when the environment disables PyTorch's safe unpickler."""
    value = os.environ.get(UNSAFE_ENV)
    if value is not None and value.strip() not in ("", "0"):
        raise CheckpointError(
            f"environment variable {UNSAFE_ENV} is set; it disables torch.load's "
            "weights_only protection, so no checkpoint will be loaded until it is unset"
        )


def max_checkpoint_bytes(max_bytes: int | None = None) -> int:
    """The size limit in force: the argument, else the environment variable, else 200 MB."""
    if max_bytes is not None:
        return int(max_bytes)
    env = os.environ.get("MODELRUNNER_MAX_CHECKPOINT_BYTES")
    if env:
        try:
            return int(env)
        except ValueError:
            raise CheckpointError(f"MODELRUNNER_MAX_CHECKPOINT_BYTES={env!r} is not a whole number of bytes") from None
    return DEFAULT_MAX_BYTES


def check_size(path: str | os.PathLike[str], max_bytes: int | None = None) -> int:
    """Return the file size; refuse missing files, non-files and files over the limit."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p.name}: no such checkpoint file")
    size = p.stat().st_size
    limit = max_checkpoint_bytes(max_bytes)
    if size > limit:
        raise CheckpointError(f"{p.name}: {size} bytes is over the {limit}-byte checkpoint limit")
    if size == 0:
        raise CheckpointError(f"{p.name}: file is empty")
    return size


def sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_zip(path: str | os.PathLike[str], max_bytes: int | None = None, *, data: bytes | None = None) -> None:
    """Inspect a zip archive's central directory without unpacking anything.

    Refuses TorchScript archives (``constants.pkl`` or a ``code/`` folder: they carry
    Python source that ``torch.jit.load`` would run), archives with too many members,
    archives whose unpacked size exceeds the size limit or ``MAX_ZIP_RATIO`` times the
    packed size, and member names that escape the archive.
    """
    p = Path(path)
    source = io.BytesIO(data) if data is not None else p
    try:
        with zipfile.ZipFile(source) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"{p.name}: damaged zip archive ({exc})") from None
    if len(infos) > MAX_ZIP_ENTRIES:
        raise CheckpointError(f"{p.name}: zip archive has {len(infos)} entries (limit {MAX_ZIP_ENTRIES})")
    unpacked = 0
    for info in infos:
        parts = info.filename.split("/")
        if info.filename.startswith("/") or ".." in parts:
            raise CheckpointError(f"{p.name}: zip member {info.filename!r} escapes the archive")
        if parts[-1] == "constants.pkl" or "code" in parts[1:-1] or parts[0] == "code":
            raise CheckpointError(
                f"{p.name}: TorchScript archive ({info.filename}); scripted modules carry "
                "code and are not accepted: export the weights (state_dict) instead"
            )
        unpacked += info.file_size
    packed = max(len(data) if data is not None else p.stat().st_size, 1)
    limit = max_checkpoint_bytes(max_bytes)
    if unpacked > limit:
        raise CheckpointError(f"{p.name}: zip archive unpacks to {unpacked} bytes, over the {limit}-byte limit")
    if unpacked > 1_000_000 and unpacked / packed > MAX_ZIP_RATIO:
        raise CheckpointError(f"{p.name}: zip archive unpacks to {unpacked / packed:.0f}x its size (zip bomb?)")


def torch_load(
    path: str | os.PathLike[str], max_bytes: int | None = None, map_location: torch.device | str = "cpu"
) -> object:
    """``torch.load`` with ``weights_only=True`` after the size and zip checks; tensors are
    loaded onto ``map_location`` (the render device, ``modelrunner.device``; default the CPU).

    A pickle that references anything beyond tensors and plain containers (a pickled
    ``nn.Module``, a ``__reduce__`` payload...) is refused by the restricted unpickler
    before any of its code runs; that refusal is re-raised as ``CheckpointError``.
    """
    check_environment()
    p = Path(path)
    check_size(p, max_bytes)
    # Read once so the bytes checked are the bytes unpickled.
    data = p.read_bytes()
    if zipfile.is_zipfile(io.BytesIO(data)):
        check_zip(p, max_bytes, data=data)
    # Declared storage sizes and views against the file and the caps, before torch trusts them.
    declared.check_torch_file(p.name, data)
    try:
        return torch.load(io.BytesIO(data), map_location=torch.device(map_location), weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
        first = str(exc).strip().splitlines()
        detail = next((line for line in first if "Unsupported" in line or "GLOBAL" in line), None)
        detail = detail or (first[0] if first else type(exc).__name__)
        operand = next((line.strip() for line in first if line.strip().startswith("Unsupported operand")), None)
        if operand is not None:
            # torch.save writes protocol 2; other opcodes mean a plain pickle (e.g. protocol 4 framing).
            detail = (
                f"pickle opcode {operand.split()[-1]} is not allowed (a plain pickle, not a file written by torch.save)"
            )
        raise CheckpointError(
            f"{p.name}: refused by the safe (weights_only) loader: {detail[:200]}. "
            "Only plain tensors and containers are accepted; save model.state_dict(), "
            "not the model object"
        ) from None


def check_finite(state_dict: Mapping[str, torch.Tensor], *, source: str = "checkpoint") -> None:
    """Refuse NaN or infinite weights, naming the first offending key."""
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            if not bool(torch.isfinite(value).all()):
                raise CheckpointError(f"{source}: weight {key!r} contains NaN or infinite values")


def load_state_dict_strict(
    module: torch.nn.Module,
    state_dict: Mapping[str, object],
    *,
    source: str = "checkpoint",
) -> None:
    """Copy ``state_dict`` into ``module`` after checking keys, shapes and finiteness.

    Unlike ``Module.load_state_dict`` the message names every missing and unexpected key
    and, for a shape mismatch, the key with the expected and found shapes.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing keys: " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
        if unexpected:
            parts.append("unexpected keys: " + ", ".join(unexpected[:10]) + (" ..." if len(unexpected) > 10 else ""))
        raise CheckpointError(f"{source}: weights do not match the architecture ({'; '.join(parts)})")
    converted: dict[str, torch.Tensor] = {}
    for key, ref in expected.items():
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            try:
                value = torch.as_tensor(value, dtype=ref.dtype)
            except Exception:
                raise CheckpointError(f"{source}: weight {key!r} is not numeric") from None
        if tuple(value.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{source}: weight {key!r} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
            )
        converted[key] = value.to(ref.dtype)
    check_finite(converted, source=source)
    module.load_state_dict(converted, strict=True)


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Put a module in float32 eval mode with gradients off (inference only)."""
    module.float().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def parameter_count(module: torch.nn.Module) -> int:
    """Number of scalar parameters."""
    return int(sum(p.numel() for p in module.parameters()))


#: Default largest model built, in scalar weights (parameters and buffers); override with
#: the environment variable ``MODELRUNNER_MAX_PARAMETERS``.
DEFAULT_MAX_PARAMETERS = limits.CAPS["parameters"].default
MAX_PARAMETERS_ENV = "MODELRUNNER_MAX_PARAMETERS"


def max_parameters() -> int:
    """The model-size limit in force (``limits.get("parameters")``): the environment
    variable, else 50 M weights."""
    return limits.get("parameters")


def check_model_size(implied: int, held: int, *, source: str = "checkpoint") -> None:
    """Refuse a config implying more weights than the limit, before anything is allocated.

    ``implied`` comes from the config (e.g. a module built on the meta device), ``held``
    is what the file actually contains; both are named so a tiny file that declares a
    gigantic model is recognisable as such.
    """
    limit = max_parameters()
    if implied > limit:
        raise CheckpointError(
            f"{source}: config implies {implied} weights, file has {held}; the declared model is "
            f"too large (limit {limit}, set {MAX_PARAMETERS_ENV} to change it)"
        )


def state_size(state_dict: Mapping[str, object]) -> int:
    """Number of scalar weights in a state_dict (tensors only; other values count 0)."""
    return int(sum(v.numel() for v in state_dict.values() if isinstance(v, torch.Tensor)))


def check_weights_fit(
    plan: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str = "checkpoint",
) -> None:
    """Check ``state_dict`` against a module built on the meta device, allocating nothing.

    Refuses, in this order: a declared model over :func:`max_parameters`; missing or
    unexpected keys; a weight whose shape differs from the architecture's. Every message
    states how many weights the config implies and how many the file holds.
    """
    expected = plan.state_dict()
    implied, held = state_size(expected), state_size(state_dict)
    check_model_size(implied, held, source=source)
    counts = f"config implies {implied} weights, file has {held}"
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing keys: " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
        if unexpected:
            parts.append("unexpected keys: " + ", ".join(unexpected[:10]) + (" ..." if len(unexpected) > 10 else ""))
        raise CheckpointError(f"{source}: weights do not match the architecture ({'; '.join(parts)}); {counts}")
    for key, ref in expected.items():
        shape = getattr(state_dict[key], "shape", None)
        if shape is not None and tuple(shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{source}: weight {key!r} has shape {tuple(shape)}, expected {tuple(ref.shape)} ({counts})"
            )
