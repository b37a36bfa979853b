"""A whole render job, end to end: where the CPU goes besides the model.

A listening test of ``--excerpts`` excerpts of ``--seconds`` (real guitar at 44.1 kHz, the
pedal of ``demo.device`` as the device's recording) with two model conditions, NAM's
standard WaveNet (48 kHz, fixed random weights, written as a ``.nam`` file) and the
CoreAudioML LSTM-32 fixture (44.1 kHz), two anchors and the hidden reference, in an
experiment at 48 kHz. The render worker's steps run here in the worker's order with the
worker's arguments (``webmushra/jobs.py``: a model job per (condition, excerpt), then an
item job per excerpt), calling the same model-runner functions, without Django: files are
stored as ``webmushra.services.files.store`` stores them (temp file, sync, rename).

CPU time (``time.process_time``) is charged to the innermost part running: **load**
(reading audio, loading the checkpoint), **resample** (every ``modelrunner.render.resample``,
inside the render too), **model** (the rest of ``policy.render_excerpt``), **loudness**
(``loudness.align_item`` and each stimulus's loudness), **anchors** (filter and
difference), **metrics** (preparing the device recording, cached per excerpt as the worker
does, and ``metrics.compute_all``) and **write** (encoding and storing).
The model part is the baseline: every part is printed as its ratio to it and as its share
of the job. Target: no non-model part above 25 % of the job. Median of ``--repeats`` runs.

Run: ``python -m bench.bench_job [--quick] [--repeats N] [--json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelrunner import anchors, audio, formats, loudness, metrics, policy, render
from modelrunner.formats import nam as nam_format

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
GUITAR = FIXTURES / "audio" / "guitar_example_44k.wav"
LSTM = FIXTURES / "models" / "coreaudioml" / "ht1_lstm32.json"
EXCERPT_RATE = 44_100
EXPERIMENT_RATE = 48_000
PARTS = ("load", "resample", "model", "loudness", "anchors", "metrics", "write")
#: Largest share of the job any part other than the model may take.
MAX_SHARE = 0.25
#: ITU-R BS.1534-3 §5.1 anchors, as ``ConditionKind.anchor_cutoff_hz`` gives them.
ANCHOR_CUTOFFS = (anchors.LOW_ANCHOR_HZ, anchors.MID_ANCHOR_HZ)
HEADROOM_PEAK = 10 ** (-0.1 / 20)
#: ``webmushra.jobs.REFERENCE_CACHE_MB``: a worker process's prepared device recordings.
REFERENCE_CACHE_MB = 256


class Clock:
    """CPU time charged to the innermost running part."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.stack: list[str] = []
        self.mark = time.process_time()

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        now = time.process_time()
        if self.stack:
            self.cpu[self.stack[-1]] += now - self.mark
        self.stack.append(name)
        self.mark = now
        try:
            yield
        finally:
            now = time.process_time()
            self.cpu[self.stack.pop()] += now - self.mark
            self.mark = now

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.part(name):
                return fn(*args, **kwargs)

        return timed


def standard_wavenet_nam(path: Path) -> Path:
    """NAM's "standard" WaveNet (16 then 8 channels, dilations 1..512, kernel 3, tanh) as a
    ``.nam`` file at 48 kHz with fixed random weights kept small, as a trained model's are."""
    dilations = [2**i for i in range(10)]
    layer = {"condition_size": 1, "kernel_size": 3, "dilations": dilations, "activation": "Tanh", "gated": False}
    config = {
        "layers": [
            {**layer, "input_size": 1, "channels": 16, "head_size": 8, "head_bias": False},
            {**layer, "input_size": 16, "channels": 8, "head_size": 1, "head_bias": True},
        ],
        "head": None,
        "head_scale": 0.02,
    }
    module, _, _ = nam_format._build("WaveNet", config, "bench", 0)
    count = nam_format._weight_count(module)
    weights = np.random.default_rng(0).normal(0.0, 0.15, count).tolist()
    doc = {"version": "0.5.4", "architecture": "WaveNet", "config": config, "weights": weights, "sample_rate": 48000}
    path.write_text(json.dumps(doc))
    return path


def make_excerpts(folder: Path, count: int, seconds: float) -> list[tuple[Path, Path]]:
    """``count`` (dry, reference) float WAV pairs of ``seconds``: the guitar fixture, each excerpt
    its own rotation of it, played through the demo pedal for the reference."""
    from demo.device import DemoDevice

    guitar, sr = audio.read_audio(GUITAR)
    assert sr == EXCERPT_RATE, sr
    g = guitar.mean(axis=1)
    frames = int(round(seconds * sr))
    device = DemoDevice()
    pairs = []
    for i in range(count):
        shift = (i * 7919 * 37) % g.size
        reps = -(-(frames + shift) // g.size) + 1
        dry = (0.7 * np.tile(g, reps)[shift : shift + frames]).astype(np.float32)
        wet = device.process(dry.astype(np.float64), sr, 0.3 + 0.4 * i / max(1, count - 1))
        d = audio.write_wav(folder / f"x{i}_dry.wav", dry, sr)
        r = audio.write_wav(folder / f"x{i}_reference.wav", wet, sr)
        pairs.append((d, r))
    return pairs


def store(root: Path, name: str, data: bytes) -> int:
    """``webmushra.services.files.store`` on the local file system: temp file, sync, rename."""
    dest = root / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=dest.suffix, dir=dest.parent)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fchmod(out.fileno(), 0o640)
        os.fsync(out.fileno())
    os.replace(tmp, dest)
    return len(data)


def fit(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``webmushra.jobs._fit``: trim or zero-pad to the reference's length and channels."""
    frames, channels = shape
    a = a[:frames]
    if a.shape[0] < frames:
        a = np.pad(a, ((0, frames - a.shape[0]), (0, 0)))
    if a.shape[1] != channels:
        a = np.repeat(a.mean(axis=1, keepdims=True), channels, axis=1)
    return a


def model_job(
    clock: Clock,
    root: Path,
    checkpoint: tuple[Path, int],
    pair: tuple[Path, Path],
    key: str,
    references: metrics.ReferenceCache,
) -> str:
    """``webmushra.jobs._run_model``: one (model condition, excerpt) cell; ``references`` is the
    worker process's cache of prepared device recordings (``webmushra.jobs._reference_cache``)."""
    with clock.part("load"):
        dry, sr = audio.read_audio(pair[0])
        reference, _ = audio.read_audio(pair[1])
        model = formats.load(checkpoint[0], sample_rate=checkpoint[1])
    with clock.part("model"):
        output, _start = policy.render_excerpt(model, dry, sr, knobs=None, ir=None, progress=lambda p: None)
        output = np.asarray(output, dtype=np.float32)
        if output.ndim == 1:
            output = output[:, None]
        assert np.isfinite(output).all()
    with clock.part("metrics"):
        n = min(output.shape[0], reference.shape[0])
        ref_mono = reference[:n].mean(axis=1)
        prepared = references.get(str(pair[1]), ref_mono, sr)
        metrics.compute_all(output[:n].mean(axis=1), ref_mono, sr, reference=prepared)
    with clock.part("write"):
        rel = f"renders/{key}.wav"
        store(root, rel, audio.encode_wav(output, sr, subtype="FLOAT"))
        float(np.max(np.abs(output)))
    return rel


def item_job(clock: Clock, root: Path, pair: tuple[Path, Path], renders: dict[str, str], index: int) -> None:
    """``webmushra.jobs._run_item``: anchors, loudness alignment and the stimuli of one excerpt."""
    with clock.part("load"):
        reference, sr = audio.read_audio(pair[1])
    signals: dict[str, np.ndarray] = {}
    for key, rel in renders.items():
        with clock.part("load"):
            a, _ = audio.read_audio(root / rel)
            signals[key] = np.asarray(fit(a, reference.shape), dtype=np.float32).reshape(reference.shape)
    for cutoff in ANCHOR_CUTOFFS:
        with clock.part("anchors"):
            a = anchors.lowpass_anchor(reference, sr, cutoff)
            anchors.anchor_difference(reference, a, sr, cutoff).to_dict()
            signals[f"anchor{cutoff:g}"] = np.asarray(a, dtype=np.float32).reshape(reference.shape)
    with clock.part("loudness"):
        aligned_ref, aligned, report = loudness.align_item(reference, signals, sr, target_lufs=None)
        report.to_dict()
    everything = {"reference": aligned_ref, **aligned}
    resampled = {k: render.resample(v, sr, EXPERIMENT_RATE) for k, v in everything.items()}
    with clock.part("write"):
        item_peak = max(float(np.max(np.abs(a))) for a in resampled.values())
        if item_peak >= HEADROOM_PEAK:
            scale = np.float32(HEADROOM_PEAK / item_peak)
            resampled = {k: (a * scale).astype(np.float32) for k, a in resampled.items()}
    sizes = set()
    for key, a in resampled.items():
        with clock.part("write"):
            float(np.max(np.abs(a)))
            sizes.add(
                store(root, f"stimuli/x{index}_{key}.wav", audio.encode_wav(a, EXPERIMENT_RATE, subtype="PCM_24"))
            )
        with clock.part("loudness"):
            loudness.integrated_loudness(a, EXPERIMENT_RATE)
    assert len(sizes) == 1, sizes


def run_once(pairs: list[tuple[Path, Path]], checkpoints: dict[str, tuple[Path, int]], root: Path) -> dict[str, float]:
    """One whole job: every model job, then every item job; CPU seconds per part. The model jobs
    run in the worker's order (``RenderJob`` rows by id, created excerpt by excerpt, each
    excerpt's conditions together), in one worker process with the worker's cache of prepared
    device recordings, empty at the start of each run."""
    clock = Clock()
    references = metrics.ReferenceCache(max_bytes=REFERENCE_CACHE_MB * 2**20)
    original = render.resample
    timed = clock.wrap("resample", original)
    # policy.py calls the name it imported from render.py: both are wrapped.
    render.resample = timed
    policy.resample = timed  # type: ignore[attr-defined]
    try:
        with clock.part("job"):
            renders: list[dict[str, str]] = [{} for _ in pairs]
            for i, pair in enumerate(pairs):
                for name, checkpoint in checkpoints.items():
                    renders[i][name] = model_job(clock, root, checkpoint, pair, f"x{i}_{name}", references)
            for i, pair in enumerate(pairs):
                item_job(clock, root, pair, renders[i], i)
        # each excerpt's recording is prepared once, by its first condition's job
        assert references.misses == len(pairs), (references.hits, references.misses)
    finally:
        render.resample = original
        policy.resample = original  # type: ignore[attr-defined]
    return {p: clock.cpu.get(p, 0.0) for p in PARTS} | {"other": clock.cpu.get("job", 0.0)}


def run(excerpts: int, seconds: float, repeats: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-job-") as tmp:
        folder = Path(tmp)
        pairs = make_excerpts(folder / "excerpts", excerpts, seconds)
        checkpoints = {"wavenet": (standard_wavenet_nam(folder / "standard.nam"), 48_000), "lstm": (LSTM, 44_100)}
        for path, rate in checkpoints.values():  # the render path is chosen (measured once) before the timings
            render.render_kernel(formats.load(path, sample_rate=rate))
        runs = [run_once(pairs, checkpoints, folder / f"media{r}") for r in range(repeats)]
    parts = {p: statistics.median(r[p] for r in runs) for p in (*PARTS, "other")}
    total = sum(parts.values())
    return {
        "excerpts": excerpts,
        "seconds": seconds,
        "repeats": repeats,
        "cpu_seconds": parts,
        "job_cpu_seconds": total,
        "share": {p: v / total for p, v in parts.items()},
        "vs_model": {p: v / parts["model"] for p, v in parts.items()},
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 excerpts of 2 s, 1 run")
    parser.add_argument("--excerpts", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    excerpts, seconds, repeats = (4, 2.0, 1) if args.quick else (args.excerpts, args.seconds, args.repeats)
    result = run(excerpts, seconds, repeats)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{excerpts} excerpts x {seconds:g} s at {EXCERPT_RATE} Hz -> stimuli at {EXPERIMENT_RATE} Hz; models: "
        f"NAM standard WaveNet (48 kHz), CoreAudioML LSTM-32 (44.1 kHz); 1 thread; median CPU of {repeats} run(s)"
    )
    print(f"{'part':<10}{'CPU s':>9}{'vs model':>10}{'share':>8}")
    missed = False
    for p in (*PARTS, "other"):
        share = result["share"][p]
        over = p != "model" and share > MAX_SHARE
        missed |= over
        print(
            f"{p:<10}{result['cpu_seconds'][p]:>9.3f}{result['vs_model'][p]:>9.2f}x{share:>7.1%}"
            f"{'  ABOVE 25 %' if over else ''}"
        )
    audio_s = excerpts * seconds * 2
    print(f"{'job':<10}{result['job_cpu_seconds']:>9.3f}  ({audio_s / result['job_cpu_seconds']:.1f}x real time)")
    return 1 if missed and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
