"""Compiled render kernels: built on first use for the machine that runs them.

``kernels/rnn.c`` steps LSTM, GRU and Elman cells over many signals at once (see its
header for why); ``kernels/wavenet.c`` runs the layers of NAM's WaveNet; ``kernels/peak.c``
measures the CPU's peak multiply-add rate (``bench/bench_render.py``). They are compiled
with the system C compiler (``$CC``, else ``cc``) and
``-O3 -march=native`` into a per-user cache (``$MODELRUNNER_CACHE_DIR``, else
``$XDG_CACHE_HOME/modelrunner``, else ``~/.cache/modelrunner``), keyed by the source,
the compiler and the CPU, and loaded with ctypes. Without a compiler, or with
``MODELRUNNER_NATIVE=0``, renders use PyTorch's kernels instead: the same samples to
float rounding. Where both run a model, ``modelrunner.pathchoice`` measures them once on
this CPU and keeps the faster; ``python -m modelrunner inspect`` says which is in use and why.

An image builds them ahead (``python -m modelrunner build-kernels --portable``, see
``build_kernels``) for each x86-64 level a host may have, into ``$MODELRUNNER_KERNELS_DIR``;
a worker loads the best build its CPU runs, so a serving container needs no compiler.

Only our own source is ever compiled or loaded; nothing from an upload is.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

log = logging.getLogger(__name__)
T = TypeVar("T")

KERNELS = Path(__file__).with_name("kernels")
SOURCES = [KERNELS / name for name in ("rnn.c", "wavenet.c", "peak.c")]
#: Everything the build reads, for the cache key.
INPUTS = [*SOURCES, KERNELS / "api.h", KERNELS / "vec.h"]
#: ``-Werror=missing-prototypes``: every exported function is declared in ``kernels/api.h``.
FLAGS = ["-O3", "-march=native", "-std=gnu11", "-fPIC", "-shared", "-Werror=missing-prototypes"]
_P = ctypes.c_void_p
#: ``name: (restype, argtypes)`` of every function in ``kernels/api.h``, in its order; every
#: pointer is passed as an address. ``tests/modelrunner/test_kernel_api.py`` checks it against the header.
SIGNATURES: dict[str, tuple[type[Any] | None, Sequence[type[Any]]]] = {
    "rnn_vector_width": (ctypes.c_int, []),
    "rnn_exp": (None, [_P, _P, ctypes.c_long]),
    "rnn_run": (
        ctypes.c_int,
        [ctypes.c_int] * 6 + [_P, ctypes.c_long] + [_P] * 8 + [ctypes.c_float, ctypes.c_int, _P],
    ),
    "wavenet_layers": (ctypes.c_int, [ctypes.c_int] * 5 + [_P] * 13),
    "peak_fma": (ctypes.c_long, [ctypes.c_long, _P]),
}
CELLS = {"LSTM": 0, "GRU": 1, "RNN_TANH": 2, "RNN_RELU": 3}
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
#: Gates whose pre-activation is doubled in the packed weights, because the kernel
#: evaluates tanh(a) as 2 sigmoid(2a) - 1: LSTM's cell gate g, GRU's candidate n.
_DOUBLED = {"LSTM": (2,), "GRU": (2,), "RNN_TANH": (0,), "RNN_RELU": ()}

_lock = threading.Lock()
_loaded: ctypes.CDLL | None = None
_loaded_path: Path | None = None
_tried = False
_reason = ""


def _cache_dir() -> Path:
    explicit = os.environ.get("MODELRUNNER_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "modelrunner"


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _build(cc: str, out: Path, flags: Sequence[str] = FLAGS) -> None:
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *flags, "-o", tmp, *map(str, SOURCES)], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise OSError(f"{cc} failed: {proc.stderr.strip()[:500]}")
        os.chmod(tmp, 0o644)  # a build made ahead by root (an image) is read by the workers' user
        os.replace(tmp, out)  # atomic: concurrent workers never load a half-written library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


#: The x86-64 micro-architecture levels (x86-64 psABI) as ``/proc/cpuinfo`` names the features
#: each adds (``pni`` is SSE3, ``abm`` LZCNT): a build for a level runs on every CPU that has them.
_X86_64_V2 = frozenset({"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"})
_X86_64_V3 = _X86_64_V2 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
_X86_64_V4 = _X86_64_V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


class KernelBuildError(Exception):
    """The kernels could not be built ahead (no compiler, or it failed): one line saying why."""


def portable_targets() -> list[tuple[str, str | None, frozenset[str]]]:
    """Builds that run on CPUs other than the building one, best first: (name, ``-march``
    value or None for the compiler's default target, CPU features it needs)."""
    baseline: tuple[str, str | None, frozenset[str]] = ("baseline", None, frozenset())
    if platform.machine().lower() in ("x86_64", "amd64"):
        return [
            ("x86-64-v4", "x86-64-v4", _X86_64_V4),
            ("x86-64-v3", "x86-64-v3", _X86_64_V3),
            ("x86-64-v2", "x86-64-v2", _X86_64_V2),
            baseline,
        ]
    return [baseline]


def _portable_flags(march: str | None) -> list[str]:
    return [f for f in FLAGS if f != "-march=native"] + ([f"-march={march}"] if march else [])


def _portable_name(target: str, march: str | None) -> str:
    """Named by the target and a hash of the source and flags (not the compiler: any build of
    this source for that target runs the same)."""
    key = hashlib.sha256("\0".join([*(src.read_text() for src in INPUTS), *_portable_flags(march)]).encode())
    return f"kernels-{target}-{key.hexdigest()[:16]}.so"


def _native_name(cc: str) -> str:
    """The file of a ``-march=native`` build by ``cc`` for this CPU; OSError without ``cc``."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256(
        "\0".join([*(src.read_text() for src in INPUTS), cc, version, " ".join(FLAGS), _cpu_signature()]).encode()
    ).hexdigest()[:16]
    return f"kernels-{key}.so"


def _kernel_dirs() -> list[Path]:
    """Where built kernels are looked for: ``$MODELRUNNER_KERNELS_DIR`` (made ahead, read-only), the cache."""
    ahead = os.environ.get("MODELRUNNER_KERNELS_DIR")
    return [Path(ahead), _cache_dir()] if ahead else [_cache_dir()]


def _cpu_features() -> frozenset[str]:
    return frozenset(_cpu_signature().partition(":")[2].split())


def _find_or_build(cc: str) -> Path:
    """This CPU's own build if there is one, else the best portable build it runs, else a
    build compiled now into the cache."""
    native: str | None = None
    no_compiler: Exception | None = None
    try:
        native = _native_name(cc)
    except (OSError, subprocess.SubprocessError) as exc:
        no_compiler = exc
    dirs = _kernel_dirs()
    found = [d / native for d in dirs if native and (d / native).exists()]
    features = _cpu_features()
    for target, march, needs in portable_targets():
        if needs <= features:
            found += [d / _portable_name(target, march) for d in dirs if (d / _portable_name(target, march)).exists()]
    if found:
        return found[0]
    if native is None:
        raise OSError(f"none built for this CPU in {', '.join(map(str, dirs))} and no compiler ({no_compiler})")
    path = _cache_dir() / native
    _build(cc, path)
    return path


def _check_owner(path: Path) -> None:
    """Load only what this user or root built, and what nobody else may rewrite."""
    st = path.stat()
    if st.st_uid not in (os.getuid(), 0):
        raise OSError(f"{path} belongs to another user; not loading it")
    if st.st_mode & 0o022:
        raise OSError(f"{path} is writable by others; not loading it")


def build_kernels(into: Path | None = None, *, portable: bool = False) -> list[tuple[Path, bool]]:
    """Build the kernels ahead of their first use, into ``into`` (default: the cache the
    runtime reads): for this CPU (``-march=native``), or with ``portable`` one build per
    target of ``portable_targets`` for an image that runs on other CPUs. Returns each file
    and whether it was built now (False: it was there already).

    Raises ``KernelBuildError`` without a compiler (``$CC``, else ``cc``) or when it fails.
    """
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise KernelBuildError(f"no C compiler: {cc!r} is not on PATH (install gcc, or set CC)")
    directory = into or _cache_dir()
    if into is not None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    if portable:
        jobs = [(directory / _portable_name(t, m), _portable_flags(m)) for t, m, _ in portable_targets()]
    else:
        try:
            jobs = [(directory / _native_name(cc), FLAGS)]
        except (OSError, subprocess.SubprocessError) as exc:
            raise KernelBuildError(f"{cc} --version failed: {exc}") from exc
    out: list[tuple[Path, bool]] = []
    for path, flags in jobs:
        fresh = not path.exists()
        if fresh:
            try:
                _build(cc, path, flags)
            except (OSError, subprocess.SubprocessError) as exc:
                raise KernelBuildError(str(exc)) from exc
        out.append((path, fresh))
    return out


def library() -> ctypes.CDLL | None:
    """The compiled kernels, building them once per machine; ``None`` where that fails
    or is switched off (``reason()`` says why)."""
    global _loaded, _loaded_path, _tried, _reason
    if _tried:
        return _loaded
    with _lock:
        if _tried:
            # mypy narrows _tried to False above; another thread may have set it meanwhile.
            return _loaded  # type: ignore[unreachable]
        _tried = True
        setting = os.environ.get("MODELRUNNER_NATIVE", "1").strip()
        if setting.lower() in ("0", "false", "no", "off"):
            _reason = f"forced by MODELRUNNER_NATIVE={setting}"
            return None
        cc = os.environ.get("CC", "cc")
        try:
            path = _find_or_build(cc)
            _check_owner(path)
            lib = ctypes.CDLL(str(path))
        except (OSError, subprocess.SubprocessError) as exc:
            _reason = f"no compiled kernels ({exc}); using PyTorch's"
            log.warning("modelrunner: %s", _reason)
            return None
        for name, (restype, argtypes) in SIGNATURES.items():
            function = getattr(lib, name)
            function.restype = restype
            function.argtypes = argtypes
        _loaded, _loaded_path = lib, path
        _reason = f"compiled kernels in use ({path.name}, {lib.rnn_vector_width()} floats per vector)"
        return lib


def library_path() -> Path | None:
    """The file the compiled kernels were loaded from (``None`` without them)."""
    library()
    return _loaded_path


def reason() -> str:
    """Whether the compiled kernels are in use, and if not, why."""
    library()
    return _reason


def _cell_name(rnn: nn.RNNBase) -> str:
    """PyTorch's own name for the cell (``RNNBase.mode``): LSTM, GRU, RNN_TANH or RNN_RELU."""
    return str(getattr(rnn, "mode", ""))


def supports(rnn: nn.RNNBase) -> bool:
    """Whether ``rnn`` is a shape the kernel runs: unidirectional, float32 on the CPU,
    no LSTM projection."""
    return (
        _cell_name(rnn) in CELLS
        and not rnn.bidirectional
        and getattr(rnn, "proj_size", 0) == 0
        and all(p.dtype == torch.float32 and p.device.type == "cpu" for p in rnn.parameters())
    )


@dataclass
class PackedRecurrent:
    """Weights of ``y = lin(rnn(x)) + skip * x`` in the kernel's padded layout."""

    cell: str
    layers: int
    hidden: int
    padded: int
    inputs: int
    #: Per layer: (wx, bx, wh, bh). Plain tensors, so a module holding this still copies.
    weights: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
    lin_w: torch.Tensor
    lin_b: float
    skip: int


#: Inside ``fixed_weights``: per tuple of module ids, the modules (kept alive, so no id is
#: reused while the entry lives) and their ``version_key``.
_fixed: ContextVar[dict[tuple[int, ...], tuple[tuple[nn.Module, ...], tuple[tuple[int, int], ...]]] | None] = (
    ContextVar("modelrunner_fixed_weights", default=None)
)


@contextmanager
def fixed_weights() -> Iterator[None]:
    """Within this block ``version_key`` walks each set of modules once and then answers
    from memory: for a stream of calls during which the weights do not change (a render's
    chunk loop), which would otherwise walk every parameter several times per chunk.
    Changing weights inside the block goes unnoticed until it ends. Nested blocks share
    the outermost one's memory; each thread (context) has its own."""
    if _fixed.get() is not None:
        yield
        return
    token = _fixed.set({})
    try:
        yield
    finally:
        _fixed.reset(token)


def version_key(modules: list[nn.Module]) -> tuple[tuple[int, int], ...]:
    """Identifies the modules' current weights: packed copies are remade when it changes.

    Walks the submodules' own parameter dicts (``Module.parameters`` builds names and a
    memo set per call, a quarter of a small WaveNet's render time when asked per call);
    inside ``fixed_weights`` only once per set of modules."""
    memo = _fixed.get()
    if memo is None:
        return _walk_versions(modules)
    ids = tuple(map(id, modules))
    hit = memo.get(ids)
    if hit is None:
        hit = memo[ids] = (tuple(modules), _walk_versions(modules))
    return hit[1]


def _walk_versions(modules: list[nn.Module]) -> tuple[tuple[int, int], ...]:
    key: list[tuple[int, int]] = []
    stack = list(reversed(modules))
    while stack:
        m = stack.pop()
        key.extend((p.data_ptr(), p._version) for p in m._parameters.values() if p is not None)
        stack.extend(c for c in reversed(m._modules.values()) if c is not None)
    return tuple(key)


def kept(owner: object, attr: str, key: tuple[object, ...], make: Callable[[], T]) -> T:
    """``make()``, kept on ``owner`` as ``attr`` and made again only once ``key`` (say the
    ``version_key`` of the weights it was made from) changes."""
    cached = owner.__dict__.get(attr)
    if cached is None or cached[0] != key:
        cached = (key, make())
        setattr(owner, attr, cached)
    return cached[1]


def pack_recurrent(rnn: nn.RNNBase, lin: nn.Linear, skip: int, vector_width: int) -> PackedRecurrent:
    """Lay out PyTorch's ``weight_ih_l{k}`` / ``weight_hh_l{k}`` / biases (gate order of the
    PyTorch docs) as zero-padded ``(inputs, gates * padded)`` matrices, doubling the
    pre-activations evaluated through ``tanh(a) = 2 sigmoid(2a) - 1``."""
    cell = _cell_name(rnn)
    gates, hidden = GATES[cell], rnn.hidden_size
    hp = -(-hidden // vector_width) * vector_width
    weights = []
    with torch.no_grad():
        for layer in range(rnn.num_layers):
            w_ih = getattr(rnn, f"weight_ih_l{layer}").float()
            w_hh = getattr(rnn, f"weight_hh_l{layer}").float()
            b_ih = getattr(rnn, f"bias_ih_l{layer}", None)
            b_hh = getattr(rnn, f"bias_hh_l{layer}", None)
            n_in = w_ih.shape[1] if layer == 0 else hp
            wx = torch.zeros(n_in, gates * hp)
            wh = torch.zeros(hp, gates * hp)
            bx = torch.zeros(gates * hp)
            bh = torch.zeros(gates * hp)
            for g in range(gates):
                scale = 2.0 if g in _DOUBLED[cell] else 1.0
                rows = slice(g * hidden, (g + 1) * hidden)
                cols = slice(g * hp, g * hp + hidden)
                wx[: w_ih.shape[1], cols] = w_ih[rows].T * scale
                wh[:hidden, cols] = w_hh[rows].T * scale
                if b_ih is not None:
                    bx[cols] = b_ih[rows].float() * scale
                if b_hh is not None:
                    bh[cols] = b_hh[rows].float() * scale
            if cell != "GRU":  # LSTM and Elman cells add both biases before the nonlinearity
                bx, bh = bx + bh, torch.zeros_like(bh)
            weights.append((wx.contiguous(), bx.contiguous(), wh.contiguous(), bh.contiguous()))
        lin_w = torch.zeros(hp)
        lin_w[:hidden] = lin.weight.detach().float()[0]
        lin_b = float(lin.bias.detach()[0]) if lin.bias is not None else 0.0
    return PackedRecurrent(
        cell=cell,
        layers=rnn.num_layers,
        hidden=hidden,
        padded=hp,
        inputs=rnn.input_size,
        weights=weights,
        lin_w=lin_w,
        lin_b=lin_b,
        skip=int(skip),
    )


def run_recurrent(
    lib: ctypes.CDLL,
    packed: PackedRecurrent,
    x: torch.Tensor,
    knobs: torch.Tensor | None,
    state: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
    """``y (B, T)`` and the end state, in ``nn.LSTM``/``nn.GRU``'s state layout."""
    batch, frames = x.shape
    layers, hidden, hp = packed.layers, packed.hidden, packed.padded
    x = x.float()
    if x.stride(1) != 1:
        x = x.contiguous()
    kn = (knobs.float() if knobs is not None else torch.zeros(batch, 0)).contiguous()
    if tuple(kn.shape) != (batch, packed.inputs - 1):
        raise ValueError(f"knobs must have shape ({batch}, {packed.inputs - 1})")
    lstm = packed.cell == "LSTM"
    h = torch.zeros(layers, batch, hp)
    c = torch.zeros(layers, batch, hp) if lstm else None
    if state is not None:
        if isinstance(state, tuple) != lstm:
            raise ValueError("an LSTM's state is a pair (h, c), another cell's one tensor")
        hs, cs = state if isinstance(state, tuple) else (state, None)
        if tuple(hs.shape) != (layers, batch, hidden):
            raise ValueError(f"state has shape {tuple(hs.shape)}, expected {(layers, batch, hidden)}")
        h[:, :, :hidden] = hs
        if c is not None and cs is not None:
            c[:, :, :hidden] = cs
    y = torch.empty(batch, frames)
    arr = ctypes.c_void_p * layers
    wx, bx, wh, bh = (arr(*(w[i].data_ptr() for w in packed.weights)) for i in range(4))
    if batch and frames:
        rc = lib.rnn_run(
            CELLS[packed.cell],
            layers,
            batch,
            frames,
            packed.inputs,
            hp,
            x.data_ptr(),
            x.stride(0),
            kn.data_ptr(),
            wx,
            bx,
            wh,
            bh,
            h.data_ptr(),
            c.data_ptr() if c is not None else None,
            packed.lin_w.data_ptr(),
            packed.lin_b,
            packed.skip,
            y.data_ptr(),
        )
        if rc != 0:
            raise MemoryError("the recurrent kernel could not allocate its scratch memory")
    h_out = h[:, :, :hidden].contiguous()
    if c is not None:
        return y, (h_out, c[:, :, :hidden].contiguous())
    return y, h_out


#: WaveNet activations the compiled kernel evaluates (its ``act`` codes); LeakyReLU with a
#: ``negative_slope`` in [0, 1] (A2 files use 0.01), as ``max(a, slope a)``.
WAVENET_ACTIVATIONS = {nn.Tanh: 0, nn.ReLU: 1, nn.LeakyReLU: 2}


@dataclass
class PackedLayerArray:
    """One NAM layer array's layers in the kernel's layout (see ``kernels/wavenet.c``)."""

    channels: int
    conditions: int
    contexts: list[int]
    ints: list[ctypes.Array[ctypes.c_int]]
    slopes: ctypes.Array[ctypes.c_float]
    weights: list[list[torch.Tensor]]


class WaveNetLayer(Protocol):
    """What ``pack_wavenet_array`` reads of a ``NamWaveNetLayer`` (which imports this module)."""

    @property
    def channels(self) -> int: ...
    @property
    def gated(self) -> bool: ...
    @property
    def conv(self) -> nn.Conv1d: ...
    @property
    def input_mixer(self) -> nn.Conv1d: ...
    @property
    def activation(self) -> nn.Module: ...
    @property
    def layer1x1(self) -> nn.Conv1d: ...
    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


def pack_wavenet_array(layers: Sequence[WaveNetLayer]) -> PackedLayerArray | None:
    """``layers`` (``NamWaveNetLayer``) packed for ``wavenet_layers``, or ``None`` when one
    of them has an activation or dtype the kernel does not run."""
    ks: list[int] = []
    dil: list[int] = []
    act: list[int] = []
    gated: list[int] = []
    slopes: list[float] = []
    weights: list[list[torch.Tensor]] = []
    channels = layers[0].channels
    conditions = layers[0].input_mixer.in_channels
    with torch.no_grad():
        for layer in layers:
            code = WAVENET_ACTIVATIONS.get(type(layer.activation))
            params = list(layer.parameters())
            b1 = layer.layer1x1.bias
            if code is None or b1 is None or any(p.dtype != torch.float32 or p.device.type != "cpu" for p in params):
                return None
            if layer.channels != channels or layer.input_mixer.in_channels != conditions:
                return None
            slope = float(getattr(layer.activation, "negative_slope", 0.0))
            if not 0.0 <= slope <= 1.0:
                return None
            conv = layer.conv
            mid = conv.out_channels
            k = conv.kernel_size[0]
            taps = conv.weight.permute(0, 2, 1).reshape(mid, k * channels)  # column j * C + c
            w = torch.cat([taps, layer.input_mixer.weight[:, :, 0]], dim=1).contiguous()
            bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(mid)
            weights.append(
                [
                    w,
                    bias.contiguous(),
                    layer.layer1x1.weight[:, :, 0].contiguous(),
                    b1.detach().contiguous(),
                ]
            )
            ks.append(k)
            dil.append(conv.dilation[0])
            act.append(code)
            gated.append(int(bool(layer.gated)))
            slopes.append(slope)
    ints = [(ctypes.c_int * len(v))(*v) for v in (ks, dil, act, gated)]
    contexts = [(k - 1) * d for k, d in zip(ks, dil)]
    return PackedLayerArray(channels, conditions, contexts, ints, (ctypes.c_float * len(slopes))(*slopes), weights)


def run_wavenet_array(
    lib: ctypes.CDLL,
    packed: PackedLayerArray,
    y: torch.Tensor,
    condition: torch.Tensor,
    head: torch.Tensor,
    contexts: list[torch.Tensor],
) -> None:
    """Run the layers in place: ``y`` ``(B, C, T)`` becomes the last layer's output, ``head``
    ``(B, C, T)`` gains every layer's output, each ``contexts[l]`` ``(B, C, n_l)`` becomes
    the layer's next context. All must be contiguous float32 tensors the caller owns."""
    batch, channels, frames = y.shape
    for t in (y, condition, head, *contexts):
        if t.dtype != torch.float32 or not t.is_contiguous():
            raise ValueError("run_wavenet_array needs contiguous float32 tensors")
    count = len(packed.weights)
    arr = ctypes.c_void_p * count
    w, bias, w1, b1 = (arr(*(layer[i].data_ptr() for layer in packed.weights)) for i in range(4))
    ctx = arr(*(c.data_ptr() for c in contexts))
    rc = lib.wavenet_layers(
        batch,
        channels,
        frames,
        packed.conditions,
        count,
        *packed.ints,
        ctypes.addressof(packed.slopes),
        y.data_ptr(),
        condition.data_ptr(),
        head.data_ptr(),
        ctx,
        w,
        bias,
        w1,
        b1,
    )
    if rc != 0:
        raise MemoryError("the WaveNet kernel could not allocate its scratch memory")
