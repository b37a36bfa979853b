"""Render speed of the paper architectures' demo checkpoints, and what pruning buys.

Every model renders the same excerpts (``--excerpts`` of ``--seconds`` at 44.1 kHz, all
in one batch, one whole-signal call, one thread). Printed per model: real-time factor
(seconds of audio per second of wall-clock, per excerpt: batch x duration / time).
The autoregressive MLP and the state trajectory network run a Python loop per sample,
so their factors are low; they are reported as measured.

Pruning (Südholt et al., IEEE/ACM TASLP 2023): the baseline is the pruned LSTM-48 as
loaded (masks folded, zeros still computed); the candidate is
``pruning.compress_lstm`` (dead units dropped, a dense LSTM-12), measured in the same
run on the same audio. Printed: both factors, their ratio, and the largest difference
between the two outputs.

Run: ``python -m bench.bench_papers [--quick] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from modelrunner import pruning
from modelrunner.cli import bench_excerpts
from modelrunner.formats import load
from modelrunner.model import EffectModel

CKPT = Path(__file__).resolve().parents[1] / "demo" / "papers" / "checkpoints"


def _time(model: EffectModel, x: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    """Best wall-clock of ``repeats`` whole-signal calls, and the output."""
    k = model.knob_tensor({"gain": 0.5}, x.shape[0])
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter()
            y, _ = model.module(x, k)
            best = min(best, time.perf_counter() - t0)
    return best, y


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="paper architectures: render speed and pruning speed-up")
    parser.add_argument("--excerpts", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="1 excerpt of 0.5 s")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    count, seconds = (1, 0.5) if args.quick else (args.excerpts, args.seconds)
    rate = 44100
    x = torch.from_numpy(
        np.stack(
            [np.asarray(e, dtype=np.float32).reshape(-1) for e in bench_excerpts(count, int(seconds * rate), rate)]
        )
    )
    audio = count * x.shape[1] / rate
    results: dict[str, dict] = {}
    models = {
        "SPTMod": load(CKPT / "sptmod.pt", config=CKPT / "sptmod.json"),
        "GRU state matching": load(CKPT / "statematch.safetensors"),
        "STN": load(CKPT / "stn.safetensors"),
        "AR-MLP": load(CKPT / "armlp.safetensors"),
    }
    for name, model in models.items():
        slow = name in ("STN", "AR-MLP")
        xs = x[:, : min(x.shape[1], rate // 4)] if slow else x
        t, _ = _time(model, xs, 1 if slow else 2)
        results[name] = {"realtime_factor": xs.numel() / rate / t, "seconds_rendered": xs.numel() / rate}
    masked = load(CKPT / "lstm_pruned.ckpt")
    small = pruning.compress_lstm(masked)
    t_masked, y_masked = _time(masked, x, 3)
    t_small, y_small = _time(small, x, 3)
    results["pruned LSTM-48 (baseline)"] = {"realtime_factor": audio / t_masked, "seconds_rendered": audio}
    results[f"compressed LSTM-{small.module.rec.hidden_size}"] = {
        "realtime_factor": audio / t_small,
        "seconds_rendered": audio,
        "speedup_vs_baseline": t_masked / t_small,
        "max_abs_diff_vs_baseline": float((y_small - y_masked).abs().max()),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'model':28s} {'real-time factor':>16s}  notes")
    for name, r in results.items():
        note = f"{r['seconds_rendered']:.2f} s of audio"
        if "speedup_vs_baseline" in r:
            note += (
                f"; {r['speedup_vs_baseline']:.2f}x the pruned model, max |diff| {r['max_abs_diff_vs_baseline']:.1e}"
            )
        print(f"{name:28s} {r['realtime_factor']:16.1f}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
