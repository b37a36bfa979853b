"""Which path renders a model that has a compiled kernel: measured once on this CPU, then kept.

A model whose layers the compiled kernels run (``modelrunner.native``: LSTM, GRU and Elman
cells, NAM's WaveNet layers) can render through them or through PyTorch's kernels. Both
give the same samples to float rounding; which is faster depends on the CPU, the model's
sizes, torch's version and the thread count (NAM's standard WaveNet has rendered 8.1x real
time compiled against 12.7x through PyTorch on one CPU, and the other way round on another).
So at first use both are measured here and the faster is kept:

* Before timing, both paths render the same noise (the compiled path's timing input) and
  must agree within ``TOLERANCE`` (scaled by the output's peak, at least 1); where they do
  not, PyTorch's path renders and the difference is logged as a warning. (The equivalence
  tests hold the paths to 1e-5; this check only guards a build that computes something else.)
* Each path renders ``MEASURE_FRAMES`` frames of noise (0.5 s at 48 kHz) cut into the rows
  and calls the renderer gives that path (``path_plan``), carrying on from a stream's state
  as a render does, once untimed to warm up and once to see how long it takes: where the
  faster path took under ``MIN_REPEAT_SECONDS`` (a small model), the noise grows until it
  would take that long (at most ``MAX_SCALE`` times, and only while the slower path's
  repetitions fit in ``TIME_LIMIT``). Then each renders it
  ``REPEATS`` times, the paths interleaved in alternating order (ABBA...) so that a change
  in the machine's load hits both alike. A repetition is timed in the calling thread's CPU
  time when torch runs on one thread (the render workers' setting: other processes on a
  shared machine then cost nothing), in wall-clock time with more threads (where PyTorch's
  own parallelism is part of what is compared). Each path's figure is its median.
* No repetition starts after ``TIME_LIMIT`` seconds (each path gets at least one); the time
  spent is logged and kept with the result.
* The compiled path is chosen only when it is at least ``MARGIN`` faster (10 %): within
  the noise of a shared machine PyTorch's path, the reference the compiled one is tested
  against, keeps rendering.

A result is kept in one JSON file per model shape in a folder beside the compiled kernels
(``kernels-<key>.paths/`` in the kernel cache, see ``modelrunner.native``), keyed by the
architecture, the sizes that set the speed (hidden size, layers, channels, kernel sizes,
dilations, activations, receptive field), the CPU's model name and flags, the kernel build,
torch's version and the thread count: later renders and other processes read it instead
of measuring again. A model on a GPU (``RENDER_DEVICE``, ``modelrunner.device``) always
renders through PyTorch's kernels there, and nothing is measured.
``MODELRUNNER_RENDER_PATH=compiled`` or ``pytorch`` forces a path
(default ``auto``: measured); ``MODELRUNNER_NATIVE=0`` still means never compiled (no
kernel is built). ``python -m modelrunner inspect`` prints the choice and why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import torch

from . import native

log = logging.getLogger(__name__)

COMPILED = "compiled"
PYTORCH = "pytorch"
PATHS = (COMPILED, PYTORCH)
#: The setting that forces a path: ``auto`` (default), ``compiled`` or ``pytorch``.
ENV = "MODELRUNNER_RENDER_PATH"
_ALIASES = {"": "auto", "auto": "auto", COMPILED: COMPILED, PYTORCH: PYTORCH, "torch": PYTORCH}
#: Frames of noise each path renders per timed repetition, over all its rows.
MEASURE_FRAMES = 24000
#: Timed repetitions per path.
REPEATS = 5
#: CPU seconds the faster path should spend per repetition; the noise grows (at most
#: ``MAX_SCALE`` times) where ``MEASURE_FRAMES`` takes less.
MIN_REPEAT_SECONDS = 0.05
MAX_SCALE = 16
#: Seconds (wall clock) after which no further repetition starts.
TIME_LIMIT = 5.0
#: How much faster the compiled path must be before it is preferred.
MARGIN = 1.10
#: Largest difference between the paths' outputs on the check's noise, relative to their
#: peak (at least 1). A guard against a kernel that computes something else (off by far
#: more), not the precision test: tests/modelrunner/test_native.py, test_formats_nam.py and
#: test_pathchoice.py hold both paths to 1e-5 on their signals and to float32's own error
#: against a float64 pass on real models (2e-5 over 1.5 s of guitar through an LSTM-32).
TOLERANCE = 1e-4
#: Part of every key: bump when the measurement changes meaning.
VERSION = 1


class TwoPaths(Protocol):
    """What a module with a compiled path tells the chooser (``CompiledRecurrent``, ``NamWaveNet``)."""

    def path_sizes(self) -> dict[str, Any]:
        """The sizes that set the render speed (JSON-serialisable)."""
        ...

    def path_plan(self, path: str) -> tuple[int, int]:
        """``(rows, frames per call over all rows)`` the renderer gives ``path``."""
        ...

    def path_run(self, path: str, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """One streaming call through ``path``: ``x`` ``(B, T)`` -> ``(y, state)``."""
        ...


@dataclass(frozen=True)
class Measurement:
    """Both paths timed on this CPU: frames rendered per second (median of the repetitions)."""

    compiled_fps: float
    pytorch_fps: float
    #: Largest absolute difference of the two paths' outputs on the same input, and that output's peak.
    max_difference: float
    peak: float
    cpu: str
    date: str
    clock: str
    threads: int
    repeats: int
    seconds: float
    #: Frames each compiled repetition rendered.
    frames: int = 0

    @property
    def agrees(self) -> bool:
        return self.max_difference <= TOLERANCE * max(1.0, self.peak)

    def path(self) -> str:
        """The path this measurement picks: compiled only when it agrees and is ``MARGIN`` faster."""
        return COMPILED if self.agrees and self.compiled_fps >= MARGIN * self.pytorch_fps else PYTORCH


@dataclass(frozen=True)
class Choice:
    """The path that renders a model, and why: measured, forced, or no compiled kernel for it."""

    path: str
    reason: str
    measurement: Measurement | None = None

    @property
    def compiled(self) -> bool:
        return self.path == COMPILED

    def short(self) -> str:
        """Why, in a few words (``render_kernel`` puts it in brackets after "PyTorch")."""
        m = self.measurement
        if m is None:
            return self.reason
        if not m.agrees:
            return f"the compiled output differed by {m.max_difference:.1e}"
        if self.compiled or m.pytorch_fps >= m.compiled_fps:
            return "faster here"
        return f"the compiled kernel was not {MARGIN - 1:.0%} faster here"

    def describe(self, sample_rate: int | None = None) -> str:
        """One line for ``inspect``: the path, then why (speeds as real-time factors at ``sample_rate``)."""
        name = "compiled" if self.compiled else "PyTorch"
        m = self.measurement
        if m is None:
            return f"{name}: {self.reason}"

        def speed(fps: float) -> str:
            return f"{fps / sample_rate:.1f}x real time" if sample_rate else f"{fps / 1e3:.0f} kframes/s"

        where = f"measured on {m.cpu} ({m.threads} thread{'s' if m.threads != 1 else ''}, {m.clock}) at {m.date}"
        if not m.agrees:
            return f"PyTorch: {self.short()} (max abs difference, tolerance {TOLERANCE:g}), {where}"
        if self.compiled:
            return f"compiled: {speed(m.compiled_fps)} vs PyTorch {speed(m.pytorch_fps)}, {where}"
        return f"PyTorch: {self.short()} ({speed(m.pytorch_fps)} vs compiled {speed(m.compiled_fps)}), {where}"

    def summary(self, sample_rate: int | None = None) -> dict[str, Any]:
        """JSON for ``inspect --json``: path, why, and the measurement (real-time factors at ``sample_rate``)."""
        out: dict[str, Any] = {"path": self.path, "why": self.describe(sample_rate), "measured": None}
        if self.measurement is not None:
            out["measured"] = dataclasses.asdict(self.measurement)
            if sample_rate:
                out["measured"]["compiled_realtime"] = self.measurement.compiled_fps / sample_rate
                out["measured"]["pytorch_realtime"] = self.measurement.pytorch_fps / sample_rate
        return out


def unavailable(reason: str) -> Choice:
    """PyTorch's path, because the compiled one cannot run this model (``reason``)."""
    return Choice(PYTORCH, reason)


def on_device(device: torch.device) -> Choice:
    """PyTorch's path, because the model is on ``device`` (a GPU): the compiled kernels run on the CPU."""
    return Choice(PYTORCH, f"on {device}")


def forced() -> Choice | None:
    """The path ``MODELRUNNER_RENDER_PATH`` forces, or ``None`` for ``auto``."""
    raw = os.environ.get(ENV, "").strip()
    setting = _ALIASES.get(raw.lower())
    if setting is None:
        raise ValueError(f"{ENV} must be auto, compiled or pytorch, got {raw!r}")
    return None if setting == "auto" else Choice(setting, f"forced by {ENV}={raw}")


def setting() -> str:
    """The raw setting, for keys of per-module caches (a change takes effect at once)."""
    return os.environ.get(ENV, "")


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@functools.cache
def _cpu_flags() -> str:
    return hashlib.sha256(native._cpu_signature().encode()).hexdigest()[:16]


def decision_key(module: TwoPaths) -> dict[str, Any]:
    """Everything the speed of the two paths depends on."""
    lib = native.library_path()
    return {
        "version": VERSION,
        "architecture": type(module).__name__,
        "sizes": module.path_sizes(),
        "cpu": cpu_model(),
        "cpu_flags": _cpu_flags(),
        "kernel": lib.name if lib is not None else "",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "budget": [MEASURE_FRAMES, REPEATS, MIN_REPEAT_SECONDS],
    }


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


_lock = threading.Lock()
#: Decisions made or read in this process, by key digest.
_memo: dict[str, Choice] = {}


def choose(module: TwoPaths) -> Choice:
    """The path that renders ``module`` (whose compiled path can run): forced, kept, or measured now."""
    force = forced()
    if force is not None:
        return force
    key = decision_key(module)
    digest = _digest(key)
    with _lock:
        choice = _memo.get(digest)
        if choice is None:
            choice = _memo[digest] = _kept_or_measured(module, key, digest)
    return choice


def folder() -> Path | None:
    """Where decisions are kept: beside the compiled kernels (``None`` without them)."""
    lib = native.library_path()
    return None if lib is None else native._cache_dir() / f"{lib.stem}.paths"


def _kept_or_measured(module: TwoPaths, key: dict[str, Any], digest: str) -> Choice:
    where = folder()
    if where is None:
        m = _measure_logged(module, key)
        return Choice(m.path(), "measured", m)
    path = where / f"{digest}.json"
    kept = _read(path, key)
    if kept is not None:
        return kept
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(where / f"{digest}.lock"):
        kept = _read(path, key)  # another process may have measured meanwhile
        if kept is not None:
            return kept
        m = _measure_logged(module, key)
        _write(path, key, m)
    return Choice(m.path(), "measured", m)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One process measures a shape at a time; the others wait and then read its result."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read(path: Path, key: dict[str, Any]) -> Choice | None:
    try:
        data = json.loads(path.read_text())
        if data.get("key") != key:
            return None
        m = Measurement(**data["measurement"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return Choice(m.path(), "measured", m)


def _write(path: Path, key: dict[str, Any], m: Measurement) -> None:
    data = {"key": key, "path": m.path(), "measurement": dataclasses.asdict(m)}
    try:
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".json", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)  # atomic: a reader sees the whole file or none
    except OSError as exc:
        log.warning("modelrunner: could not keep the render path decision in %s: %s", path, exc)


def _measure_logged(module: TwoPaths, key: dict[str, Any]) -> Measurement:
    m = measure(module)
    log.info(
        "modelrunner: render paths of %s %s measured in %.2f s (%d repetitions, %s, %d thread(s)): "
        "compiled %.0f, PyTorch %.0f frames/s, max difference %.1e -> %s",
        key["architecture"],
        json.dumps(key["sizes"], sort_keys=True),
        m.seconds,
        m.repeats,
        m.clock,
        m.threads,
        m.compiled_fps,
        m.pytorch_fps,
        m.max_difference,
        m.path(),
    )
    if not m.agrees:
        log.warning(
            "modelrunner: the compiled path of %s differs from PyTorch's by %.2e (tolerance %g); PyTorch's renders",
            key["architecture"],
            m.max_difference,
            TOLERANCE,
        )
    return m


def clock() -> tuple[str, Callable[[], float]]:
    """The clock repetitions are timed with (see the module docstring)."""
    if torch.get_num_threads() == 1:
        return "CPU time", time.thread_time
    return "wall-clock time", time.perf_counter


def _stream(module: TwoPaths, path: str, x: torch.Tensor, chunk: int, state: Any = None) -> torch.Tensor:
    out = torch.empty_like(x)
    with native.fixed_weights():  # as a render's chunk loop reads the weights' version once
        for start in range(0, x.shape[1], chunk):
            y, state = module.path_run(path, x[:, start : start + chunk], state)
            out[:, start : start + chunk] = y
    return out


def _noise(module: TwoPaths, frames: int, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Per path: noise of about ``frames`` frames cut into its rows, and its frames per call per row."""
    gen = torch.Generator().manual_seed(seed)
    inputs: dict[str, torch.Tensor] = {}
    chunks: dict[str, int] = {}
    for p in PATHS:
        rows, budget = module.path_plan(p)
        inputs[p] = 0.3 * torch.randn(rows, -(-frames // rows), generator=gen)
        chunks[p] = max(1, budget // rows)
    return inputs, chunks


def measure(module: TwoPaths) -> Measurement:
    """Time both paths on this CPU (see the module docstring): about ``2 * (REPEATS + 3)``
    renders of ``MEASURE_FRAMES`` frames or more, no repetition starting after ``TIME_LIMIT`` s."""
    started = time.perf_counter()
    clock_name, now = clock()
    inputs, chunks = _noise(module, MEASURE_FRAMES, 0)
    times: dict[str, list[float]] = {p: [] for p in PATHS}
    with torch.inference_mode():
        # Warm-up (weights packed, buffers allocated) and the equivalence check in one.
        same = inputs[COMPILED]
        compiled = _stream(module, COMPILED, same, chunks[COMPILED])
        reference = _stream(module, PYTORCH, same, chunks[PYTORCH])
        difference = float((compiled - reference).abs().max())
        peak = float(reference.abs().max())
        if inputs[PYTORCH].shape != same.shape:
            _stream(module, PYTORCH, inputs[PYTORCH], chunks[PYTORCH])
        # Timed calls carry on from a stream's state, as a render's do (a stream's first
        # call also renders the receptive field's silence, which a render pays once).
        start = {p: module.path_run(p, inputs[p][:, :1], None)[1] for p in PATHS}

        def timed(p: str) -> float:
            t0 = now()
            _stream(module, p, inputs[p], chunks[p], start[p])
            return now() - t0

        # A small model renders the budget in a few milliseconds, too short to time well:
        # then the noise grows until the faster path takes MIN_REPEAT_SECONDS, as long as
        # the slower path's repetitions still fit in TIME_LIMIT.
        probes = [timed(p) for p in PATHS]
        fast, slow = max(min(probes), 1e-6), max(max(probes), 1e-6)
        scale = min(MAX_SCALE, math.ceil(MIN_REPEAT_SECONDS / fast), max(1, int(TIME_LIMIT / (2 * REPEATS) / slow)))
        if scale > 1:
            inputs, _ = _noise(module, scale * MEASURE_FRAMES, 1)
        for rep in range(REPEATS):
            for p in PATHS if rep % 2 == 0 else PATHS[::-1]:
                times[p].append(timed(p))
            if time.perf_counter() - started > TIME_LIMIT:
                break
    fps = {p: inputs[p].numel() / max(statistics.median(times[p]), 1e-9) for p in PATHS}
    return Measurement(
        compiled_fps=fps[COMPILED],
        pytorch_fps=fps[PYTORCH],
        max_difference=difference if difference == difference else float("inf"),  # NaN never agrees
        peak=peak if peak == peak else 0.0,
        cpu=cpu_model(),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        clock=clock_name,
        threads=torch.get_num_threads(),
        repeats=len(times[COMPILED]),
        frames=int(inputs[COMPILED].numel()),
        seconds=round(time.perf_counter() - started, 3),
    )
