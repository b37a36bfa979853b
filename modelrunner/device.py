"""Where models render: the ``RENDER_DEVICE`` setting, read and checked in one place.

==========  ===========================================================================
setting     device
==========  ===========================================================================
``auto``    ``cuda`` when ``torch.cuda.is_available()``, else ``cpu`` (the default)
``cpu``     the CPU: the compiled kernels (``modelrunner.native``) or PyTorch's, whichever
            measured faster here (``modelrunner.pathchoice``)
``cuda``    the current CUDA device; ``cuda:N`` the N-th. Always PyTorch's kernels (the
            compiled ones run on the CPU), in full float32 (TF32 off, :func:`prepare`)
==========  ===========================================================================

:func:`parse` checks the spelling (the web process and every worker refuse a typo at
start); :func:`resolve` also checks that the device exists here, so a worker or
``python -m modelrunner render --device cuda`` on a machine without one stops with a
clear message (:class:`DeviceError`) instead of a stack trace at its first render.

Availability is asked through NVML (``PYTORCH_NVML_BASED_CUDA_CHECK=1``), which does not
initialise CUDA: a Celery worker checks its device in its main process and then forks
its pool, and a process that has initialised CUDA cannot hand it to a forked child.
Nothing here imports Django, and torch only when a device is resolved, so the web
process's settings check the spelling without loading it.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from .errors import ModelRunnerError

if TYPE_CHECKING:
    import torch

__all__ = ["ACCEPTED", "ENV", "DeviceError", "describe", "parse", "prepare", "resolve"]

#: The environment variable the platform's settings and the command line read.
ENV = "RENDER_DEVICE"
#: What the setting accepts, for messages.
ACCEPTED = "auto, cpu, cuda or cuda:N (N = 0, 1, ...)"
DEFAULT = "auto"
_SPELLING = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class DeviceError(ModelRunnerError):
    """A device setting that is misspelt, or names a device this machine lacks."""


def parse(value: str | None, source: str = ENV) -> str:
    """The setting in its canonical spelling (``auto``, ``cpu``, ``cuda`` or ``cuda:N``);
    empty or ``None`` is ``auto``. Anything else raises :class:`DeviceError` naming ``source``."""
    text = (value or "").strip().lower() or DEFAULT
    if not _SPELLING.match(text):
        raise DeviceError(f"{source}={value!r} is not valid; use {ACCEPTED}")
    if text.startswith("cuda:"):
        text = f"cuda:{int(text[5:])}"
    return text


def from_environment() -> str:
    """``RENDER_DEVICE`` from the environment, checked (``auto`` when unset)."""
    return parse(os.environ.get(ENV))


def cuda_count() -> int:
    """CUDA devices visible here, counted without initialising CUDA (fork-safe)."""
    import torch

    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    if not torch.cuda.is_available():
        return 0
    return int(torch.cuda.device_count())


def resolve(value: str | None = None, source: str | None = None) -> torch.device:
    """The device ``value`` (else ``RENDER_DEVICE``) selects here: ``auto`` falls back to the
    CPU; ``cuda`` or ``cuda:N`` that this machine lacks raises :class:`DeviceError`, whose
    message names ``source`` (default: ``RENDER_DEVICE``)."""
    import torch

    source = source or ENV
    text = parse(value, source) if value is not None else from_environment()
    if text == "cpu":
        return torch.device("cpu")
    count = cuda_count()
    if text == "auto":
        return torch.device("cuda") if count else torch.device("cpu")
    if count == 0:
        build = "a CPU-only build of PyTorch" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build"
        raise DeviceError(
            f"{source}={text} but no CUDA device is available here (PyTorch {torch.__version__}, {build}); "
            "use cpu or auto, or run on a GPU host with the CUDA build of the image"
        )
    index = int(text.split(":")[1]) if ":" in text else None
    if index is not None and index >= count:
        raise DeviceError(f"{source}={text} but this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
    return torch.device(text)


def prepare(device: torch.device | str) -> torch.device:
    """Make ``device`` ready to render: on CUDA, float32 stays float32 (TF32 off for matrix
    products, convolutions and cuDNN's recurrent kernels, which would otherwise round
    inputs to 10 bits of mantissa), so renders match the CPU's to float rounding."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        _full_float32()
    return dev


def _full_float32() -> None:
    import torch

    backends = torch.backends
    for flags in (getattr(backends.cuda, "matmul", None), getattr(backends.cudnn, "conv", None)):
        if flags is not None and hasattr(flags, "fp32_precision"):
            flags.fp32_precision = "ieee"
    rnn = getattr(backends.cudnn, "rnn", None)
    if rnn is not None and hasattr(rnn, "fp32_precision"):
        rnn.fp32_precision = "ieee"
    if not hasattr(getattr(backends.cuda, "matmul", None), "fp32_precision"):  # older PyTorch
        backends.cuda.matmul.allow_tf32 = False
        backends.cudnn.allow_tf32 = False


def describe(device: torch.device | str) -> str:
    """The device in words for reports: ``cpu`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return str(dev)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    try:
        name = torch.cuda.get_device_name(index)
    except (RuntimeError, AssertionError):
        return f"cuda:{index}"
    return f"cuda:{index} ({name})"
