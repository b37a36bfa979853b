"""Render paths: both paths' real-time factors per model, and the one the chooser picks.

Models: every fixture model with a compiled path (``../shared/fixtures/models``, see
``SOURCES.md`` there; ``--fixtures DIR`` elsewhere), the three models of
``bench_render`` (LSTM-32, GRU-32, NAM's standard WaveNet; random weights, fixed seed) and
the two WaveNets of a NAM A2 file (3 and 8 channels, 23 layers, kernel sizes 6 and 15,
LeakyReLU, a kernel-16 head, as NeuralAmpModelerCore's ``example_models/A2.nam``; random
weights, fixed seed).
Each renders one test set (``--excerpts`` x ``--seconds`` of ``bench_excerpts`` audio at
the model's rate, one thread) with ``render_batch``, through PyTorch's path (the
baseline) and through the compiled path (``MODELRUNNER_RENDER_PATH`` forced), the two
interleaved ``--repeats`` times; each figure is seconds of audio per second of the
thread's CPU time (as the chooser measures: other load on a shared machine then costs
nothing), the median of the repeats. Then the chooser
(``modelrunner.pathchoice``) measures the model afresh, its decisions kept in a
temporary folder, and its pick is printed with its own measured ratio, the time it
took, and whether the pick was the faster in the full renders (``ok``), or the two were
within the chooser's margin of each other (``tie``).

Run: ``python -m bench.bench_paths [--quick] [--only TEXT] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from bench.bench_render import _effect
from bench.bench_render import models as bench_models
from modelrunner import native, pathchoice
from modelrunner.architectures.nam import NamLayerArray, NamWaveNet
from modelrunner.cli import bench_excerpts
from modelrunner.formats import load
from modelrunner.model import EffectModel
from modelrunner.render import render_batch

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "models"
#: Knob settings for fixtures that have knobs (otherwise their defaults).
KNOBS: dict[str, dict[str, float]] = {"ts9_lstm20_gain.json": {"p1": 0.8}}


#: A NAM A2 WaveNet's layers (NeuralAmpModelerCore ``example_models/A2.nam``).
A2_KERNEL_SIZES = [6] * 14 + [15, 15] + [6] * 7
A2_DILATIONS = [1, 3, 7, 17, 41, 101, 239] * 2 + [1, 13] + [1, 3, 7, 17, 41, 101, 239]


def a2_models() -> list[tuple[str, EffectModel]]:
    """The two WaveNets of a NAM A2 file (3 and 8 channels) with fixed random weights."""
    torch.manual_seed(0)
    out = []
    for channels in (3, 8):
        leaky = [{"type": "LeakyReLU", "negative_slope": 0.01}] * len(A2_DILATIONS)
        arr = NamLayerArray(1, 1, channels, A2_KERNEL_SIZES, A2_DILATIONS, leaky, False, 1, 16, True)
        net = NamWaveNet([arr], 0.01)
        name = f"NAM A2 ({channels} channels)"
        out.append((name, _effect(net, name, False, net.receptive_field)))
    return out


def fixture_models(folder: Path) -> Iterator[tuple[str, EffectModel]]:
    """The fixture models under ``folder`` whose module has a compiled path."""
    for path in sorted(p for p in folder.glob("*/*") if p.is_file() and p.suffix != ".md"):
        try:
            model = load(path)
        except (ValueError, OSError) as exc:
            print(f"  skipped {path.parent.name}/{path.name}: {exc}", file=sys.stderr)
            continue
        if hasattr(model.module, "path_sizes"):
            yield f"{path.parent.name}/{path.name}", model


def _render_rate(model: EffectModel, items: list, knobs: dict[str, float] | None, path: str) -> float:
    """Seconds of audio per CPU second of ``render_batch`` through ``path``."""
    os.environ[pathchoice.ENV] = path
    t0 = time.thread_time()
    _, report = render_batch(model, items, model.sample_rate, knobs=knobs, with_report=True)
    cpu = time.thread_time() - t0
    assert report.kernel.startswith("compiled" if path == pathchoice.COMPILED else "PyTorch"), report.kernel
    return sum(len(x) for x in items) / model.sample_rate / cpu


def run(excerpts: int, seconds: float, repeats: int, folder: Path, only: str = "") -> Iterator[dict]:
    """Measure every model; yields one result per model as soon as it is measured."""
    torch.set_num_threads(1)
    if native.library() is None:
        raise SystemExit(f"no compiled kernels here ({native.reason()}): nothing to compare")
    saved = {k: os.environ.get(k) for k in (pathchoice.ENV, "MODELRUNNER_CACHE_DIR")}
    candidates = [(name, model) for name, model, _ in bench_models()] + a2_models()
    candidates += list(fixture_models(folder)) if folder.is_dir() else []
    with tempfile.TemporaryDirectory(prefix="bench-paths-") as tmp:
        try:
            for name, model in candidates:
                if only.lower() not in name.lower():
                    continue
                name_key = name.rsplit("/", 1)[-1]
                knobs = KNOBS.get(name_key)
                items = bench_excerpts(excerpts, int(round(seconds * model.sample_rate)), model.sample_rate)
                times: dict[str, list[float]] = {pathchoice.PYTORCH: [], pathchoice.COMPILED: []}
                for rep in range(repeats):
                    order = list(times) if rep % 2 == 0 else list(times)[::-1]
                    for path in order:
                        times[path].append(_render_rate(model, items, knobs, path))
                rate = {p: statistics.median(v) for p, v in times.items()}
                # The chooser as at first use, with nothing kept yet.
                os.environ[pathchoice.ENV] = "auto"
                os.environ["MODELRUNNER_CACHE_DIR"] = tmp
                pathchoice._memo.clear()
                choice = pathchoice.choose(model.module)
                m = choice.measurement
                assert m is not None
                ratio = rate[pathchoice.COMPILED] / rate[pathchoice.PYTORCH]
                faster = pathchoice.COMPILED if ratio > 1 else pathchoice.PYTORCH
                tie = 1 / pathchoice.MARGIN <= ratio <= pathchoice.MARGIN
                yield {
                    "model": name,
                    "sample_rate": model.sample_rate,
                    "pytorch_realtime": rate[pathchoice.PYTORCH],
                    "compiled_realtime": rate[pathchoice.COMPILED],
                    "compiled_vs_pytorch": ratio,
                    "chooser_ratio": m.compiled_fps / m.pytorch_fps,
                    "chooser_seconds": m.seconds,
                    "chosen": choice.path,
                    "verdict": "ok" if choice.path == faster else ("tie" if tie else "SLOWER PATH CHOSEN"),
                }
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 excerpts of 2 s, 3 repeats, instead of 6 of 5 s, 3")
    parser.add_argument("--excerpts", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fixtures", type=Path, default=FIXTURES, metavar="DIR", help="fixture models folder")
    parser.add_argument("--only", default="", metavar="TEXT", help="only models whose name contains TEXT")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    excerpts, seconds = (4, 2.0) if args.quick else (args.excerpts, args.seconds)
    results = run(excerpts, seconds, args.repeats, args.fixtures, args.only)
    if args.json:
        print(json.dumps(list(results), indent=2))
        return 0
    print(
        f"{excerpts} excerpts x {seconds:g} s at each model's rate, 1 thread, CPU time, median of {args.repeats}; "
        f"baseline = PyTorch's path; {pathchoice.cpu_model()}"
    )
    print(f"{'model':<36}{'PyTorch xRT':>12}{'compiled xRT':>13}{'ratio':>8}{'chooser ratio':>15}{'took':>7}  chosen")
    for r in results:
        print(
            f"{r['model']:<36}{r['pytorch_realtime']:>12.1f}{r['compiled_realtime']:>13.1f}"
            f"{r['compiled_vs_pytorch']:>7.2f}x{r['chooser_ratio']:>14.2f}x{r['chooser_seconds']:>6.2f}s"
            f"  {r['chosen']} ({r['verdict']})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
