"""Render speed: one test set through LSTM-32, GRU-32 and NAM's standard WaveNet.

A test set is ``--excerpts`` excerpts of ``--seconds`` at 44.1 kHz, on one thread.
Models run through the compiled kernels (``modelrunner.native``) where they build and
the chooser (``modelrunner.pathchoice``) finds them faster here, measured before the
timings; ``MODELRUNNER_NATIVE=0`` or ``MODELRUNNER_RENDER_PATH=pytorch`` measures
PyTorch's path instead (``bench_paths`` compares the two). The baseline is the
plain way: one whole-file forward call per excerpt, one excerpt after the other
(``reference_forward``), measured in the same process. The candidate
is ``render_batch`` (all excerpts in one batch, long excerpts cut into segments with
context/warm-up and a boundary check). For each model this prints the real-time
factor of both, their ratio, the ESR of the candidate against the baseline and the
achieved GFLOP/s, with FLOPs counted analytically per architecture (multiply-adds as
two, every bias add, nonlinearity and elementwise product as one).

Run: ``python -m bench.bench_render [--quick] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from modelrunner import native
from modelrunner.architectures.nam import NamLayerArray, NamWaveNet
from modelrunner.architectures.recurrent import RecurrentModel
from modelrunner.cli import bench_excerpts
from modelrunner.model import EffectModel
from modelrunner.render import reference_forward, render_batch, render_kernel

SAMPLE_RATE = 44100
#: Real-time factors the batched renderer should reach on one thread.
TARGETS = {"LSTM-32": 100.0, "GRU-32": 30.0, "NAM WaveNet standard": 15.0}
#: Minimum speed-up of the batched renderer over the whole-file baseline.
MIN_SPEEDUP = 3.0


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


def models() -> list[tuple[str, EffectModel, float]]:
    """(name, model, FLOPs per sample) with fixed random weights."""
    torch.manual_seed(0)
    out = []
    for unit in ("LSTM", "GRU"):
        m = RecurrentModel(unit, 32)
        with torch.no_grad():  # keep the random network tame, as trained amp models are
            m.lin.weight.mul_(0.1)
        out.append((f"{unit}-32", _effect(m, f"{unit}-32", True, 1), recurrent_model_flops(m)))
    w = standard_wavenet()
    out.append(("NAM WaveNet standard", _effect(w, "NAM WaveNet", False, w.receptive_field), wavenet_flops(w)))
    return out


def run(excerpts: int, seconds: float, only: str = "") -> Iterator[dict]:
    """Measure every model; yields one result per model as soon as it is measured."""
    torch.set_num_threads(1)
    items = bench_excerpts(excerpts, int(round(seconds * SAMPLE_RATE)), SAMPLE_RATE)
    audio_s = excerpts * seconds
    frames = excerpts * items[0].shape[0]
    for name, model, flops in models():
        if only.lower() not in name.lower():
            continue
        kernel = render_kernel(model)  # the path is chosen (measured at first use) before the timings
        t0 = time.perf_counter()
        naive = [reference_forward(model, x) for x in items]
        naive_s = time.perf_counter() - t0
        outs, report = render_batch(model, items, SAMPLE_RATE, with_report=True)
        num = sum(float(np.sum((o.astype(np.float64) - n) ** 2)) for o, n in zip(outs, naive))
        den = sum(float(np.sum(n.astype(np.float64) ** 2)) for n in naive)
        yield {
            "model": name,
            "flops_per_sample": flops,
            "naive_realtime": audio_s / naive_s,
            "naive_gflops": flops * frames / naive_s / 1e9,
            "batched_realtime": report.realtime_factor,
            "batched_gflops": flops * frames / report.seconds / 1e9,
            "speedup": naive_s / report.seconds,
            "path": report.path,
            "kernel": kernel,
            "segments": report.segments,
            "esr_vs_naive": num / den,
            "target_realtime": TARGETS[name],
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 excerpts of 2 s instead of 12 of 10 s")
    parser.add_argument("--excerpts", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--only", default="", metavar="TEXT", help="only models whose name contains TEXT")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    excerpts, seconds = (4, 2.0) if args.quick else (args.excerpts, args.seconds)
    if args.json:
        print(json.dumps(list(run(excerpts, seconds, args.only)), indent=2))
        return 0
    print(f"{excerpts} excerpts x {seconds:g} s at {SAMPLE_RATE} Hz, 1 thread; baseline = whole-file call per excerpt")
    print(f"recurrent models: {native.reason()}")
    print(
        f"{'model':<22}{'kFLOP/smp':>10}{'naive xRT':>11}{'GFLOP/s':>9}{'batched xRT':>13}{'GFLOP/s':>9}"
        f"{'vs naive':>10}{'target':>8}  path (rows), ESR vs naive, kernel"
    )
    for r in run(excerpts, seconds, args.only):
        ok = r["batched_realtime"] >= r["target_realtime"] and r["speedup"] >= MIN_SPEEDUP
        print(
            f"{r['model']:<22}{r['flops_per_sample'] / 1e3:>10.1f}{r['naive_realtime']:>11.1f}{r['naive_gflops']:>9.2f}"
            f"{r['batched_realtime']:>13.1f}{r['batched_gflops']:>9.2f}{r['speedup']:>9.2f}x{r['target_realtime']:>7.0f}x"
            f"  {r['path']} ({r['segments']}), {r['esr_vs_naive']:.1e}, {r['kernel']}{'' if ok else '  BELOW TARGET'}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
