"""What a PyTorch file or a safetensors header declares, read before anything is loaded.

A torch checkpoint's pickle names every storage (its element type and element count) and
every tensor as a view of one: offset, shape and strides. ``torch.load`` trusts those
numbers: the legacy (non-zip) format allocates each storage at its declared size before
reading it, and a view with stride 0 (an ``expand``-ed tensor) can declare billions of
elements over one stored value, which the first arithmetic on it then allocates for real.
:func:`check_torch_file` reads the pickle with an unpickler that builds nothing (every
global it meets becomes an inert placeholder, so no code from the file runs here either;
the real load is still ``torch.load(weights_only=True)``), then checks, before torch sees
the bytes:

* each storage's declared bytes against what the file holds (the zip member
  ``data/<key>``, or the bytes after the pickle in the legacy format);
* each tensor's extent (offset + Σ (size - 1) · stride) against its storage;
* each tensor's element count against the ``parameters`` cap, and the bytes of all tensors
  as declared (expanded views counted in full) against the ``model_bytes`` cap
  (:mod:`modelrunner.limits`).

:func:`check_safetensors_header` applies the same caps to a safetensors header's shapes.
A file whose pickle cannot be read this way is left to ``torch.load``, which refuses it.
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import limits
from .errors import CheckpointError

#: ``torch.save``'s legacy-format magic number (the first pickle of such a file).
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_ITEMSIZE = {
    "Double": 8,
    "Float": 4,
    "Half": 2,
    "BFloat16": 2,
    "Long": 8,
    "Int": 4,
    "Short": 2,
    "Char": 1,
    "Byte": 1,
    "Bool": 1,
    "ComplexFloat": 8,
    "ComplexDouble": 16,
    "QInt8": 1,
    "QUInt8": 1,
    "QInt32": 4,
    "QUInt4x2": 1,
    "QUInt2x4": 1,
    "Untyped": 1,
}
_SAFETENSORS_ITEMSIZE = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
_MAX_WALK = 100_000


class _Inert:
    """Whatever a global stands for in the file: accepts any construction, holds nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class _Sealed:
    """A pickle's BUILD opcode cannot change what was recorded."""

    def __setstate__(self, state: Any) -> None:
        pass


@dataclass
class _StorageType(_Sealed):
    itemsize: int | None


@dataclass
class _Storage(_Sealed):
    key: str
    itemsize: int | None
    numel: int


@dataclass
class _Tensor(_Sealed):
    storage: _Storage | None
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    name: str = field(default="")


class _Scanner(pickle.Unpickler):
    """Reads a torch pickle into placeholders, recording storages and tensor views."""

    def __init__(self, data: bytes) -> None:
        self.stream = io.BytesIO(data)
        super().__init__(self.stream)
        self.storages: dict[str, _Storage] = {}
        self.tensors: list[_Tensor] = []

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return self._rebuild_tensor
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return lambda data, *rest: data
        if module == "torch._tensor" and name == "_rebuild_from_type_v2":
            return lambda func, new_type, args, state: func(*args) if callable(func) else _Inert()
        if module.startswith("torch") and name.endswith("Storage"):
            return _StorageType(_ITEMSIZE.get(name[: -len("Storage")]))
        return _Inert

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage") or len(pid) < 5:
            return _Inert()
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        itemsize = storage_type.itemsize if isinstance(storage_type, _StorageType) else None
        if not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"storage {key} declares {numel!r} elements")
        root = self.storages.setdefault(key, _Storage(key, itemsize, numel))
        view = pid[5] if len(pid) > 5 else None
        if isinstance(view, tuple) and len(view) == 3 and all(isinstance(v, int) for v in view[1:]):
            view_key, offset, count = str(view[0]), view[1], view[2]
            if offset < 0 or count < 0 or offset + count > root.numel:
                raise CheckpointError(
                    f"storage {view_key} is a view of {count} elements at {offset} into storage {key} of {root.numel}"
                )
            return self.storages.setdefault(view_key, _Storage(view_key, itemsize, count))
        return root

    def _rebuild_tensor(self, storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> _Tensor:
        dims = tuple(size) if isinstance(size, (tuple, list)) else ()
        steps = tuple(stride) if isinstance(stride, (tuple, list)) else ()
        if (
            not all(isinstance(n, int) and n >= 0 for n in dims)
            or len(steps) != len(dims)
            or not all(isinstance(s, int) for s in steps)
            or not isinstance(offset, int)
        ):
            raise CheckpointError(f"a tensor declares an unreadable layout (size {size!r}, stride {stride!r})")
        t = _Tensor(storage if isinstance(storage, _Storage) else None, offset, dims, steps)
        self.tensors.append(t)
        return t


def _names(obj: Any, path: str = "") -> Iterator[tuple[str, _Tensor]]:
    """(path, tensor) for tensors reachable through dicts, lists and tuples, breadth-first."""
    queue: deque[tuple[str, Any]] = deque([(path, obj)])
    seen: set[int] = set()
    while queue and len(seen) < _MAX_WALK:
        where, item = queue.popleft()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, _Tensor):
            yield where or "the top-level tensor", item
        elif isinstance(item, Mapping):
            queue.extend((f"{where}[{k!r}]" if where or not isinstance(k, str) else k, v) for k, v in item.items())
        elif isinstance(item, (list, tuple)):
            queue.extend((f"{where}[{i}]", v) for i, v in enumerate(item))


def _check(source: str, scanner: _Scanner, held: Callable[[_Storage], int | None], root: Any) -> None:
    for key, storage in scanner.storages.items():
        have = held(storage)
        if storage.itemsize is not None and have is not None and storage.numel * storage.itemsize > have:
            raise CheckpointError(
                f"{source}: storage {key} declares {storage.numel} elements ({storage.numel * storage.itemsize} "
                f"bytes) but the file holds {have} bytes for it"
            )
    for name, tensor in _names(root):
        tensor.name = name if len(name) <= 200 else name[:200] + "..."
    budget = limits.Budget(source)
    for i, t in enumerate(scanner.tensors):
        label = f"tensor {t.name or f'#{i}'}"
        numel = math.prod(t.size)
        extent = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride)) + 1 if numel else 0
        backing = t.storage.numel if t.storage is not None else None
        if backing is not None and (t.offset < 0 or min(t.stride, default=0) < 0 or extent > backing):
            raise CheckpointError(
                f"{source}: {label} (shape {list(t.size)}, stride {list(t.stride)}, offset {t.offset}) reaches "
                f"element {extent} of a storage of {backing}"
            )
        expanded = backing is not None and numel > backing
        what = f"declares shape {list(t.size)}: {numel} elements" + (
            f" over a storage of {backing} (an expanded view, stride {list(t.stride)})" if expanded else ""
        )
        limits.at_most("parameters", numel, source=source, field=label, what=what)
        itemsize = t.storage.itemsize if t.storage is not None and t.storage.itemsize else 4
        budget.charge("model_bytes", numel * itemsize, field=label, what=what)


def check_torch_file(source: str, data: bytes) -> None:
    """Check a ``torch.save`` file's declared storages and views (see the module docstring)."""
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = {info.filename: info for info in zf.infolist()}
            pickles = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                return
            prefix = pickles[0][: -len("data.pkl")]
            scanner = _Scanner(zf.read(pickles[0]))
        try:
            root = scanner.load()
        except CheckpointError as exc:
            raise CheckpointError(f"{source}: {exc}") from None
        except Exception:  # not a pickle this reader follows: torch.load decides
            return

        def in_zip(storage: _Storage) -> int | None:
            info = infos.get(f"{prefix}data/{storage.key}")
            return None if info is None else info.file_size

        _check(source, scanner, in_zip, root)
        return
    scanner = _Scanner(data)
    try:
        if scanner.load() != LEGACY_MAGIC:
            return
        scanner.load()  # protocol version
        scanner.load()  # system info
        root = scanner.load()
        scanner.load()  # storage keys
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    except Exception:
        return
    # Sequential pickles: the stream stands right after the last one read.
    rest = len(data) - scanner.stream.tell()
    roots = [s for s in scanner.storages.values() if s.itemsize is not None]
    declared = sum(s.numel * (s.itemsize or 1) for s in roots)
    if declared > rest:
        biggest = max(roots, key=lambda s: s.numel * (s.itemsize or 1))
        raise CheckpointError(
            f"{source}: storage {biggest.key} declares {biggest.numel} elements; the storages declare "
            f"{declared} bytes but the file holds {rest} bytes after its pickle"
        )
    _check(source, scanner, lambda s: None, root)


def check_safetensors_header(source: str, header: Mapping[str, Any]) -> None:
    """Apply the ``parameters`` and ``model_bytes`` caps to a safetensors header's shapes."""
    budget = limits.Budget(source)
    for name, entry in header.items():
        if name == "__metadata__" or not isinstance(entry, Mapping):
            continue
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise CheckpointError(f"{source}: tensor {name!r} declares shape {shape!r}")
        numel = math.prod(shape)
        what = f"declares shape {shape}: {numel} elements"
        limits.at_most("parameters", numel, source=source, field=f"tensor {name!r}", what=what)
        itemsize = _SAFETENSORS_ITEMSIZE.get(str(entry.get("dtype")), 8)
        budget.charge("model_bytes", numel * itemsize, field=f"tensor {name!r}", what=what)
