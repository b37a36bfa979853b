"""Resource caps: what a model or an audio file may ask of the machine, in one place.

Every loader works out what a file asks for from its declared sizes (shapes, strides,
storage sizes, channel counts, dilations, header frame counts) and refuses it above these
caps before any tensor or array is made, naming the field that asks too much. A cap is
read from its environment variable when it is needed, so a deployment sets it once for
the web process and the workers alike; :func:`override` sets caps in-process (a script, a
test). Nothing here imports Django.

======================  ==================================  ============  ==========================
cap                     environment variable                default       what it bounds
======================  ==================================  ============  ==========================
``parameters``          ``MODELRUNNER_MAX_PARAMETERS``      50 000 000    scalar weights of a model
``model_bytes``         ``MODELRUNNER_MAX_MODEL_BYTES``     1 GiB         bytes the declared tensors
                                                                          take (expanded views in
                                                                          full), JSON values once
                                                                          parsed, one render
                                                                          block's working memory
``receptive_field``     ``MODELRUNNER_MAX_RECEPTIVE_FIELD`` 262 144       input samples one output
                                                                          sample depends on
``channels``            ``MODELRUNNER_MAX_CHANNELS``        4 096         channels / width of a layer
``layers``              ``MODELRUNNER_MAX_LAYERS``          256           layers of a network
``hidden_size``         ``MODELRUNNER_MAX_HIDDEN_SIZE``     4 096         units of a recurrent layer
``audio_seconds``       ``MODELRUNNER_MAX_AUDIO_SECONDS``   600           length of an audio file,
                                                                          read from its header
======================  ==================================  ============  ==========================

:func:`cap_address_space` is the last line behind these checks: a render worker caps its
own address space (``RLIMIT_AS``), so whatever a check misses ends in a ``MemoryError``
(:func:`is_out_of_memory`) instead of exhausting the machine.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import AudioError, CheckpointError, ModelRunnerError

__all__ = [
    "CAPS",
    "Budget",
    "at_most",
    "cap_address_space",
    "get",
    "is_out_of_memory",
    "override",
]


@dataclass(frozen=True)
class Cap:
    """One configurable limit: its environment variable, default and unit."""

    name: str
    env: str
    default: int
    unit: str
    error: type[ModelRunnerError] = CheckpointError


CAPS: dict[str, Cap] = {
    c.name: c
    for c in (
        Cap("parameters", "MODELRUNNER_MAX_PARAMETERS", 50_000_000, "weights"),
        Cap("model_bytes", "MODELRUNNER_MAX_MODEL_BYTES", 1 << 30, "bytes"),
        Cap("receptive_field", "MODELRUNNER_MAX_RECEPTIVE_FIELD", 1 << 18, "samples"),
        Cap("channels", "MODELRUNNER_MAX_CHANNELS", 4096, "channels"),
        Cap("layers", "MODELRUNNER_MAX_LAYERS", 256, "layers"),
        Cap("hidden_size", "MODELRUNNER_MAX_HIDDEN_SIZE", 4096, "units"),
        Cap("audio_seconds", "MODELRUNNER_MAX_AUDIO_SECONDS", 600, "seconds", AudioError),
    )
}

_overrides: dict[str, int] = {}


def get(name: str) -> int:
    """The cap in force: an :func:`override`, else the environment variable, else the default."""
    cap = CAPS[name]
    if name in _overrides:
        return _overrides[name]
    raw = os.environ.get(cap.env, "").strip()
    if not raw:
        return cap.default
    try:
        value = int(raw)
    except ValueError:
        raise cap.error(f"{cap.env}={raw!r} is not a whole number of {cap.unit}") from None
    if value < 1:
        raise cap.error(f"{cap.env}={raw!r} must be at least 1")
    return value


@contextmanager
def override(**values: int) -> Iterator[None]:
    """Set caps in this process for the duration of a ``with`` block (names as in ``CAPS``)."""
    unknown = set(values) - set(CAPS)
    if unknown:
        raise KeyError(f"unknown caps: {', '.join(sorted(unknown))}")
    saved = dict(_overrides)
    _overrides.update({k: int(v) for k, v in values.items()})
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(saved)


def _refuse(cap: Cap, source: str, field: str, asked: str, limit: int) -> ModelRunnerError:
    return cap.error(f"{source}: {field} {asked}, over the cap of {limit} {cap.unit} (set {cap.env} to change it)")


def at_most(name: str, value: int, *, source: str, field: str, what: str | None = None) -> int:
    """Refuse ``value`` above cap ``name``; the message names ``field`` and says ``what`` it
    asks for (default: the value itself). Returns ``value``."""
    limit = get(name)
    if value > limit:
        cap = CAPS[name]
        raise _refuse(cap, source, field, what or f"is {value}", limit)
    return value


class Budget:
    """Running totals of what one model asks for, checked as each declared size is added.

    ``charge`` adds to a total (weights, bytes) and refuses as soon as the total passes its
    cap, naming the field whose declaration pushed it over and the total so far.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.totals: dict[str, int] = {"parameters": 0, "model_bytes": 0}

    def charge(self, name: str, amount: int, *, field: str, what: str | None = None) -> None:
        cap = CAPS[name]
        total = self.totals[name] + int(amount)
        limit = get(name)
        if total > limit:
            asked = what or f"declares {amount} {cap.unit}"
            if total != amount:
                asked += f", bringing the model to {total} {cap.unit}"
            raise _refuse(cap, self.source, field, asked, limit)
        self.totals[name] = total

    def weights(self, count: int, *, field: str, what: str | None = None) -> None:
        """``count`` float32 weights: charged as parameters and as 4 bytes each."""
        self.charge("parameters", count, field=field, what=what)
        self.charge("model_bytes", 4 * count, field=field, what=what)


def json_values_bytes(raw: bytes) -> int:
    """Bytes a JSON text's values take once parsed, estimated from above: every list or
    object element is separated by a comma, and a parsed number, with its slot in the
    list, takes about 32 bytes (a float object and a pointer)."""
    return 32 * (raw.count(b",") + 1)


def cap_address_space(extra_bytes: int) -> int | None:
    """Cap this process's address space (``RLIMIT_AS``) at its present size plus
    ``extra_bytes``, so an allocation beyond it raises ``MemoryError`` in the job that asked
    instead of waking the kernel's OOM killer. ``0`` leaves the limit as it is. Returns the
    limit set (bytes) or ``None``.

    The address space counts reservations as well as memory in use (thread stacks, malloc
    arenas), so ``extra_bytes`` should be well above the largest job's need; CUDA reserves
    terabytes of address space, so GPU workers rely on a cgroup memory limit instead.
    """
    if extra_bytes <= 0:
        return None
    with open("/proc/self/status") as fh:
        size = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + int(extra_bytes)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return limit


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an allocation that failed: Python's and NumPy's ``MemoryError``, PyTorch's
    ``OutOfMemoryError`` (CPU or GPU) and the allocator errors older PyTorch raises."""
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "DefaultCPUAllocator: can't allocate memory" in text or "not enough memory" in text
    )
