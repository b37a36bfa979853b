"""GPU render workers: one test set on the CPU (the project's default path) and on a GPU.

A test set is ``--excerpts`` excerpts of ``--seconds`` at 44.1 kHz (default 12 x 10 s),
rendered by ``modelrunner.render.render_batch`` through two models: NAM's standard WaveNet
(``bench_render.standard_wavenet``, fixed random weights) and the LSTM-32 CoreAudioML model
of the shared fixtures (``models/coreaudioml/ht1_lstm32.json``; a random LSTM-32 of the same
form where the fixture is absent). The baseline is measured in the same run: the CPU on one
thread, the way a render worker runs (``RENDER_THREADS=1``), through the compiled kernel or
PyTorch's, whichever ``modelrunner.pathchoice`` finds faster (chosen before the timings). The
candidate is the same call with the model on ``--device`` (default ``cuda``): loaded there
(``map_location``), PyTorch's kernels, full float32 (``modelrunner.device.prepare``). Each
side renders once untimed (kernels built, weights packed or copied, cuDNN plans made), then
is timed; the GPU's time includes copying the audio there and the output back.

Prints, per model, both real-time factors, the GPU's speed as a ratio of the CPU's, and
the largest absolute difference between the two outputs, which must be at most 1e-4
(``TOLERANCE``); the exit status is 1 when it is not. Without a CUDA device it says so and
exits 0 having measured nothing.

Run: ``python -m bench.bench_gpu [--quick] [--json] [--device cuda:N]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.bench_render import SAMPLE_RATE, _effect, standard_wavenet
from modelrunner import device as devices
from modelrunner import formats
from modelrunner.architectures.recurrent import RecurrentModel
from modelrunner.cli import bench_excerpts
from modelrunner.model import EffectModel
from modelrunner.render import render_batch, render_kernel

REPO = Path(__file__).resolve().parents[1]
LSTM_FIXTURE = REPO.parent / "shared" / "fixtures" / "models" / "coreaudioml" / "ht1_lstm32.json"
#: Largest absolute difference allowed between the CPU's and the GPU's output.
TOLERANCE = 1e-4


def _lstm32(where: torch.device) -> tuple[str, EffectModel]:
    """The LSTM-32 fixture loaded onto ``where``, else a random LSTM-32 (seed 0) moved there."""
    if LSTM_FIXTURE.exists():
        return "LSTM-32 (ht1_lstm32.json)", formats.load(LSTM_FIXTURE, device=where)
    torch.manual_seed(0)
    m = RecurrentModel("LSTM", 32)
    with torch.no_grad():
        m.lin.weight.mul_(0.1)
    return "LSTM-32 (random)", _effect(m, "LSTM-32", True, 1).to(where)


def _wavenet(where: torch.device) -> tuple[str, EffectModel]:
    torch.manual_seed(0)
    w = standard_wavenet()
    return "NAM WaveNet standard", _effect(w, "NAM WaveNet", False, w.receptive_field).to(where)


def _timed(model: EffectModel, items: list[np.ndarray], sr: int) -> tuple[list[np.ndarray], float, str]:
    render_batch(model, [x[: sr // 2] for x in items[:2]], sr)  # warm-up, untimed
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    t0 = time.perf_counter()
    outs, report = render_batch(model, items, sr, with_report=True)  # outputs are back on the CPU
    return outs, time.perf_counter() - t0, f"{report.path}, {report.segments} rows"


def run(excerpts: int, seconds: float, gpu: torch.device) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    items = bench_excerpts(excerpts, int(round(seconds * SAMPLE_RATE)), SAMPLE_RATE)
    audio_s = excerpts * seconds
    results = []
    for make in (_wavenet, _lstm32):
        name, on_cpu = make(cpu)
        kernel = render_kernel(on_cpu)  # the CPU's path is chosen (measured at first use) first
        _, on_gpu = make(gpu)
        cpu_out, cpu_s, cpu_plan = _timed(on_cpu, items, on_cpu.sample_rate)
        gpu_out, gpu_s, gpu_plan = _timed(on_gpu, items, on_gpu.sample_rate)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(cpu_out, gpu_out))
        results.append(
            {
                "model": name,
                "cpu_kernel": kernel,
                "cpu_plan": cpu_plan,
                "cpu_seconds": cpu_s,
                "cpu_realtime": audio_s / cpu_s,
                "gpu": devices.describe(on_gpu.device),
                "gpu_plan": gpu_plan,
                "gpu_seconds": gpu_s,
                "gpu_realtime": audio_s / gpu_s,
                "gpu_vs_cpu": cpu_s / gpu_s,
                "max_abs_difference": diff,
                "equal": diff <= TOLERANCE,
            }
        )
        del on_gpu
        torch.cuda.empty_cache()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 excerpts of 2 s instead of 12 of 10 s")
    parser.add_argument("--excerpts", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--device", default="cuda", help="the GPU to compare with the CPU (cuda or cuda:N)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.excerpts, args.seconds = 4, 2.0
    try:
        spelled = devices.parse(args.device, "--device")
    except devices.DeviceError as exc:
        print(f"bench_gpu: {exc}", file=sys.stderr)
        return 2
    if not spelled.startswith("cuda"):
        print("bench_gpu: --device must name a CUDA device (cuda or cuda:N)", file=sys.stderr)
        return 2
    try:
        gpu = devices.prepare(devices.resolve(spelled, "--device"))
    except devices.DeviceError as exc:
        print(f"bench_gpu: skipped, nothing measured: {exc}")
        return 0
    results = run(args.excerpts, args.seconds, gpu)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{args.excerpts} x {args.seconds:g} s at {SAMPLE_RATE} Hz; CPU: 1 thread; GPU: {results[0]['gpu']}")
        print(f"{'model':<28} {'CPU':>9} {'GPU':>9} {'GPU/CPU':>8} {'max |diff|':>11}  CPU path / GPU path")
        for r in results:
            flag = "" if r["equal"] else f"  DIFFERS (> {TOLERANCE:g})"
            print(
                f"{r['model']:<28} {r['cpu_realtime']:8.1f}x {r['gpu_realtime']:8.1f}x {r['gpu_vs_cpu']:7.2f}x "
                f"{r['max_abs_difference']:11.2e}  {r['cpu_kernel']}, {r['cpu_plan']} / {r['gpu_plan']}{flag}"
            )
    return 0 if all(r["equal"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
