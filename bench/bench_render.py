"""Render speed: one listening-test job through LSTM-32, LSTM-64, GRU-32 and NAM's standard WaveNet.

A job is ``--excerpts`` excerpts of ``--seconds`` at 44.1 kHz, on one thread, rendered by
``render_batch`` (all excerpts in one batch; long excerpts cut into segments with
context/warm-up and a boundary check). Each model is rendered through the compiled
kernels (``modelrunner.native``, ``MODELRUNNER_RENDER_PATH=compiled``) and, as the
baseline, through PyTorch's path (``MODELRUNNER_RENDER_PATH=pytorch``), in the same
process; ``--naive`` adds the plain way, one whole-file forward call per excerpt
(``reference_forward``).

Speed is stated against this machine's own peak: ``peak_fma`` (``kernels/peak.c``, built
with the kernels, so on the same vector width) runs independent multiply-add chains, and
its best rate over a few runs is the peak. Each model's achieved GFLOP/s counts FLOPs
analytically per architecture (multiply-adds as two, every bias add, nonlinearity and
elementwise product as one), over the job's frames (warm-ups and context not counted), and
is the median of ``--repeat`` renders. Targets, as a share of the peak so they hold on any
CPU: recurrent models >= 45 %, WaveNets >= 40 %.

Run: ``python -m bench.bench_render [--quick] [--json]``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from modelrunner import native
from modelrunner.architectures.nam import NamLayerArray, NamWaveNet
from modelrunner.architectures.recurrent import RecurrentModel
from modelrunner.cli import bench_excerpts
from modelrunner.model import EffectModel
from modelrunner.render import reference_forward, render_batch

SAMPLE_RATE = 44100
#: Targets as a share of the peak multiply-add rate, on one thread.
TARGETS = {"LSTM": 0.45, "GRU": 0.45, "NAM WaveNet": 0.40}
#: Environment variable that forces the render path (``modelrunner.pathchoice``).
PATH_ENV = "MODELRUNNER_RENDER_PATH"
#: Every timing is CPU time of this process: on a shared machine the wall clock also counts
#: the time other processes hold the core, which says nothing about the kernels (one thread,
#: so CPU time is the time the work took on the core).
CLOCK = time.process_time


def target(name: str) -> float:
    """The share of the peak a model should reach."""
    return next(share for prefix, share in TARGETS.items() if name.startswith(prefix))


def peak_gflops(lib: ctypes.CDLL, runs: int = 5, seconds: float = 0.2) -> tuple[float, list[float]]:
    """The best and every measured rate (GFLOP/s) of ``peak_fma`` on one thread."""
    sink = np.array([0.999999, 1e-7, 0.5, 0.0], dtype=np.float32)
    iters = 1 << 16
    while True:  # calibrate: one run of about ``seconds``
        t0 = CLOCK()
        lib.peak_fma(iters, sink.ctypes.data)
        if CLOCK() - t0 >= seconds / 4 or iters >= 1 << 34:
            break
        iters *= 4
    rates = []
    for _ in range(runs):
        t0 = CLOCK()
        flops = lib.peak_fma(iters, sink.ctypes.data)
        rates.append(flops / (CLOCK() - t0) / 1e9)
    if not np.isfinite(sink[3]):
        raise RuntimeError("peak_fma produced a non-finite sum")
    return max(rates), rates


def recurrent_flops(rnn: nn.RNNBase) -> float:
    """FLOPs per sample of a (stacked) LSTM/GRU cell step; gate sizes from PyTorch's docs."""
    total = 0.0
    inp, h = rnn.input_size, rnn.hidden_size
    for _ in range(rnn.num_layers):
        if isinstance(rnn, nn.LSTM):
            # 4 gates: W_ih x + W_hh h + 2 biases; 3 sigmoid + 2 tanh; c = f*c + i*g; h = o*tanh(c).
            total += 2 * 4 * h * (inp + h) + 2 * 4 * h + 5 * h + 4 * h
        elif isinstance(rnn, nn.GRU):
            # 3 gates: 2 matvecs + 2 biases; 2 sigmoid + 1 tanh; r*(.), n + ., h = n + z*(h - n).
            total += 2 * 3 * h * (inp + h) + 2 * 3 * h + 3 * h + 2 * h + 3 * h
        else:
            total += 2 * h * (inp + h) + 2 * h + h
        inp = h
    return total


def recurrent_model_flops(module: RecurrentModel) -> float:
    """FLOPs per sample of ``y = Linear(RNN(x)) + x``."""
    return recurrent_flops(module.rec) + 2 * module.rec.hidden_size + 1 + module.skip


def wavenet_flops(module: NamWaveNet) -> float:
    """FLOPs per sample of NAM's WaveNet (van den Oord et al. 2016, NAM layer arrays)."""
    total = 0.0
    for arr in module.arrays:
        c = arr.rechannel.out_channels
        total += 2 * arr.rechannel.in_channels * c
        for layer in arr.layers:
            mid = layer.conv.out_channels
            k = layer.conv.kernel_size[0]
            total += 2 * k * c * mid + mid  # dilated conv + bias
            total += 2 * layer.input_mixer.in_channels * mid + mid  # mixer + add
            total += mid + (mid if layer.gated else 0)  # activation (and gate product)
            total += 2 * c * c + c + c  # 1x1 + bias + residual add
            total += c  # head accumulation
        hr = arr.head_rechannel
        total += 2 * hr.in_channels * hr.out_channels * hr.kernel_size[0] + (
            hr.out_channels if hr.bias is not None else 0
        )
    return total + 1  # head scale


def standard_wavenet() -> NamWaveNet:
    """NAM's "standard" WaveNet: 2 layer arrays (16 then 8 channels), dilations 1..512, kernel 3."""
    dilations = [2**i for i in range(10)]
    arrays = [
        NamLayerArray(1, 1, 16, 3, dilations, "Tanh", False, 8, 1, False),
        NamLayerArray(16, 1, 8, 3, dilations, "Tanh", False, 1, 1, True),
    ]
    return NamWaveNet(arrays, 0.02)


def _effect(module: nn.Module, name: str, stateful: bool, receptive_field: int) -> EffectModel:
    return EffectModel(
        module=module.eval(),
        sample_rate=SAMPLE_RATE,
        knob_names=[],
        knob_ranges=[],
        stateful=stateful,
        receptive_field=receptive_field,
        format="bench",
        architecture=name,
        parameter_count=sum(p.numel() for p in module.parameters()),
    )


#: The recurrent models this benchmark renders (``models`` gives others, such as
#: ``bench_paths``, LSTM-32 and GRU-32 unless asked).
RECURRENT = (("LSTM", 32), ("LSTM", 64), ("GRU", 32))


def models(
    recurrent: tuple[tuple[str, int], ...] = (("LSTM", 32), ("GRU", 32)),
) -> list[tuple[str, EffectModel, float]]:
    """(name, model, FLOPs per sample) with fixed random weights: the ``recurrent`` (cell,
    hidden size) models, then NAM's standard WaveNet."""
    torch.manual_seed(0)
    out = []
    for unit, hidden in recurrent:
        m = RecurrentModel(unit, hidden)
        with torch.no_grad():  # keep the random network tame, as trained amp models are
            m.lin.weight.mul_(0.1)
        name = f"{unit}-{hidden}"
        out.append((name, _effect(m, name, True, 1), recurrent_model_flops(m)))
    w = standard_wavenet()
    out.append(("NAM WaveNet standard", _effect(w, "NAM WaveNet", False, w.receptive_field), wavenet_flops(w)))
    return out


def _render(model: EffectModel, items: list[np.ndarray], path: str) -> tuple[list[np.ndarray], float, str, int]:
    """``render_batch`` through ``path`` (compiled or pytorch): outputs, seconds, path taken, rows."""
    before = os.environ.get(PATH_ENV)
    os.environ[PATH_ENV] = path
    try:
        t0 = CLOCK()
        outs, report = render_batch(model, items, SAMPLE_RATE, with_report=True)
        seconds = CLOCK() - t0
    finally:
        if before is None:
            del os.environ[PATH_ENV]
        else:
            os.environ[PATH_ENV] = before
    return outs, seconds, report.path, report.segments


def _esr(outs: list[np.ndarray], refs: list[np.ndarray]) -> float:
    num = sum(float(np.sum((o.astype(np.float64) - n) ** 2)) for o, n in zip(outs, refs))
    den = sum(float(np.sum(n.astype(np.float64) ** 2)) for n in refs)
    return num / den


def run(
    excerpts: int, seconds: float, only: str = "", repeat: int = 3, naive: bool = False, peak: float = 0.0
) -> Iterator[dict[str, Any]]:
    """Measure every model; yields one result per model as soon as it is measured. ``peak``
    (GFLOP/s) sets each result's share of the peak (0: measured here first)."""
    torch.set_num_threads(1)
    if not peak:
        lib = native.library()
        if lib is None:
            raise RuntimeError(f"the compiled kernels do not load: {native.reason()}")
        peak = peak_gflops(lib)[0]
    items = bench_excerpts(excerpts, int(round(seconds * SAMPLE_RATE)), SAMPLE_RATE)
    audio_s = excerpts * seconds
    frames = excerpts * items[0].shape[0]
    for name, model, flops in models(RECURRENT):
        if only.lower() not in name.lower():
            continue
        _render(model, items[:1], "compiled")  # packs the weights, outside the timings
        times = []
        for _ in range(repeat):
            outs, secs, path, rows = _render(model, items, "compiled")
            times.append(secs)
        kernel_s = statistics.median(times)
        torch_outs, torch_s, _, torch_rows = _render(model, items, "pytorch")
        gflops = flops * frames / kernel_s / 1e9
        result = {
            "model": name,
            "flops_per_sample": flops,
            "peak_gflops": peak,
            "batched_seconds": times,
            "batched_realtime": audio_s / kernel_s,
            "batched_gflops": gflops,
            "peak_share": gflops / peak,
            "target_share": target(name),
            "pytorch_realtime": audio_s / torch_s,
            "pytorch_gflops": flops * frames / torch_s / 1e9,
            "speedup_vs_pytorch": torch_s / kernel_s,
            "path": path,
            "rows": rows,
            "pytorch_rows": torch_rows,
            "esr_vs_pytorch": _esr(outs, torch_outs),
        }
        if naive:
            t0 = CLOCK()
            refs = [reference_forward(model, x) for x in items]
            naive_s = CLOCK() - t0
            result |= {"naive_realtime": audio_s / naive_s, "esr_vs_naive": _esr(outs, refs)}
        yield result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 excerpts of 2 s instead of 12 of 10 s")
    parser.add_argument("--excerpts", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3, help="renders per model through the kernels (median)")
    parser.add_argument("--naive", action="store_true", help="also time one whole-file forward call per excerpt")
    parser.add_argument("--only", default="", metavar="TEXT", help="only models whose name contains TEXT")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    excerpts, seconds = (4, 2.0) if args.quick else (args.excerpts, args.seconds)
    torch.set_num_threads(1)
    lib = native.library()
    if lib is None:
        print(f"no compiled kernels: {native.reason()}", file=sys.stderr)
        return 2
    peak, rates = peak_gflops(lib)
    results = run(excerpts, seconds, args.only, args.repeat, args.naive, peak)
    if args.json:
        print(
            json.dumps(
                {"peak_gflops": peak, "peak_runs": rates, "load": os.getloadavg(), "models": list(results)}, indent=2
            )
        )
        return 0
    print(f"{excerpts} excerpts x {seconds:g} s at {SAMPLE_RATE} Hz, 1 thread; load average {os.getloadavg()[0]:.2f}")
    print(f"kernels: {native.reason()}")
    print(
        f"peak: {peak:.1f} GFLOP/s (best of {len(rates)} runs of peak_fma, {lib.rnn_vector_width()} floats per vector:"
        f" {', '.join(f'{r:.1f}' for r in rates)}); times are CPU seconds of this process"
    )
    print(
        f"{'model':<22}{'kFLOP/smp':>10}{'xRT':>8}{'GFLOP/s':>9}{'% peak':>8}{'target':>8}"
        f"{'PyTorch xRT':>12}{'GFLOP/s':>9}{'vs PyTorch':>11}  rows, ESR vs PyTorch"
    )
    missed = 0
    for r in results:
        ok = r["peak_share"] >= r["target_share"]
        missed += not ok
        naive_text = (
            f", naive {r['naive_realtime']:.1f}x (ESR {r['esr_vs_naive']:.1e})" if "naive_realtime" in r else ""
        )
        print(
            f"{r['model']:<22}{r['flops_per_sample'] / 1e3:>10.1f}"
            f"{r['batched_realtime']:>8.1f}{r['batched_gflops']:>9.2f}"
            f"{100 * r['peak_share']:>7.1f}%{100 * r['target_share']:>7.0f}%{r['pytorch_realtime']:>12.1f}"
            f"{r['pytorch_gflops']:>9.2f}{r['speedup_vs_pytorch']:>10.1f}x  {r['path']} ({r['rows']}),"
            f" {r['esr_vs_pytorch']:.1e}{naive_text}{'' if ok else '  BELOW TARGET'}",
            flush=True,
        )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
