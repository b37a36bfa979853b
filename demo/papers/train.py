"""Train the small demo checkpoints of the paper architectures on the demo pedal.

``python -m demo.papers.train [--out demo/papers/checkpoints] [--quick]`` writes, for the
demo device (:class:`demo.device.DemoDevice`, knob ``gain``) at 44.1 kHz:

* ``sptmod.pt`` + ``sptmod.json``: SPTMod, a plain ``state_dict`` (the reference code's
  key names) and a native config whose ``params`` are the reference constructor
  arguments; trained with the State Prediction Network reading 1 look-back window;
* ``lstm_pruned.ckpt``: a Lightning-style checkpoint of an LSTM-48 with
  ``torch.nn.utils.prune`` masks (``*_orig``/``*_mask``): 36 of its 48 hidden units have
  all their outgoing weights pruned (Südholt et al. 2023), plus 30 % magnitude pruning;
* ``stn.safetensors``, ``statematch.safetensors``, ``armlp.safetensors``: native format.

Tiny models, a few hundred optimiser steps each, one CPU thread, fixed seeds: the point
is that the files are real training output of each architecture, not that they sound
like the pedal. Run time is about two minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import prune

from demo.device import DemoDevice
from demo.guitar import guitar_phrase
from modelrunner import architectures
from modelrunner.formats import native

SAMPLE_RATE = 44_100
KNOBS = [{"name": "gain", "min": 0.0, "max": 1.0, "default": 0.5}]
GAINS = (0.2, 0.5, 0.8)
OUT = Path(__file__).resolve().parent / "checkpoints"

SPTMOD_PARAMS = {
    "input_channels": 1,
    "sidechain_channels": 0,
    "n_params": 1,
    "s_channels_list": [6, 6],
    "s_kernel_size_list": [5, 5],
    "s_dilation_list": [1, 4],
    "tfilm_block_size": 64,
    "tfilm_pooling_type": "max",
    "cond_size": 8,
    "film_hidden_neurons_list": [8],
    "rnn_cell": "LSTM",
    "rnn_hidden_size": 8,
    "lbnet": True,
    "lbnet_dropout": 0.0,
    "lbnet_dropout_full_items": False,
    "lbnet_linear_end": True,
    "lbnet_out_channels_list": [8, 8],
    "lbnet_kernel_size_list": [9, 9],
    "lbnet_dilation_list": [1, 1],
    "lbnet_stride_list": [4, 4],
    "lbnet_pooling_list": [4, 4],
    "lbnet_pooling_type": "max",
    "lbnet_film_hidden_neurons_list": [8],
}
STN_PARAMS = {
    "state_size": 6,
    "hidden_size": 16,
    "num_layers": 2,
    "activation": "tanh",
    "readout": "linear",
    "step": 0.1,
}
STATEMATCH_PARAMS = {"hidden_size": 12, "init_len": 128, "encoder_hidden": 16, "encoder_uses_target": True, "skip": 1}
ARMLP_PARAMS = {"m": 12, "hidden_sizes": [16, 16], "activation": "tanh"}
LSTM_HIDDEN, LSTM_LIVE = 48, 12


def dataset(seconds: float = 6.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dry phrases, the pedal's output at each gain, and the gains: ``(N, T)``, ``(N, T)``, ``(N, 1)``."""
    device = DemoDevice()
    xs, ys, ks = [], [], []
    for seed, gain in enumerate(GAINS):
        x = guitar_phrase(100 + seed, seconds, SAMPLE_RATE)
        xs.append(x)
        ys.append(device.process(x, SAMPLE_RATE, gain=gain))
        ks.append([gain])
    return torch.tensor(np.stack(xs)), torch.tensor(np.stack(ys)), torch.tensor(ks, dtype=torch.float32)


def batches(
    x: torch.Tensor, y: torch.Tensor, k: torch.Tensor, length: int, batch: int, context: int, gen: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """Random excerpts with ``context`` frames before them: (x_ctx, y_ctx, x, y, knobs)."""
    rows = torch.randint(0, x.shape[0], (batch,), generator=gen)
    starts = torch.randint(context, x.shape[1] - length, (batch,), generator=gen)
    xc = torch.stack([x[r, s - context : s] for r, s in zip(rows, starts)])
    yc = torch.stack([y[r, s - context : s] for r, s in zip(rows, starts)])
    xs = torch.stack([x[r, s : s + length] for r, s in zip(rows, starts)])
    ys = torch.stack([y[r, s : s + length] for r, s in zip(rows, starts)])
    return xc, yc, xs, ys, k[rows]


def esr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Error-to-signal ratio (Wright et al., DAFx 2019, eq. 4)."""
    return ((pred - target) ** 2).sum() / ((target**2).sum() + 1e-8)


def fit(step, params, steps: int, lr: float, name: str) -> None:
    opt = torch.optim.Adam(params, lr=lr)
    t0 = time.perf_counter()
    for i in range(steps):
        opt.zero_grad()
        loss = step()
        loss.backward()
        opt.step()
        if i % max(1, steps // 4) == 0 or i == steps - 1:
            print(f"{name:10s} step {i:4d} ESR {loss.item():.4f} ({time.perf_counter() - t0:.1f} s)", flush=True)


def config(arch: str, params: dict) -> dict:
    return {"format_version": 1, "architecture": arch, "sample_rate": SAMPLE_RATE, "knobs": KNOBS, "params": params}


def train_sptmod(data, out: Path, steps: int, gen: torch.Generator) -> None:
    model = architectures.build("sptmod", SPTMOD_PARAMS, 1)
    need = model.lookback_samples
    P = model.tfilm_block_size

    def step():
        xc, yc, xs, ys, k = batches(*data, 32 * P, 8, need, gen)
        state = model.state_after_context(xc, yc, k)
        y, _ = model._blocks(xs, model._zp(k, xs), list(state[2:]))
        return esr(y, ys)

    fit(step, model.parameters(), steps, 5e-3, "sptmod")
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / "sptmod.pt")
    (out / "sptmod.json").write_text(json.dumps(config("sptmod", SPTMOD_PARAMS), indent=1) + "\n")


def train_pruned_lstm(data, out: Path, steps: int, gen: torch.Generator) -> None:
    params = {"unit_type": "LSTM", "hidden_size": LSTM_HIDDEN, "num_layers": 1, "skip": 1, "bias": True}
    model = architectures.build("recurrent", params, 1)

    def step():
        _, _, xs, ys, k = batches(*data, 1024, 8, 0, gen)
        return esr(model(xs, k)[0], ys)

    fit(step, model.parameters(), steps, 5e-3, "lstm")
    # Structured step: keep the units whose output weight matters most; the others lose
    # every outgoing weight (column of weight_hh and of lin.weight), so they become dead.
    importance = model.lin.weight.detach().abs()[0] * model.rec.weight_hh_l0.detach().abs().sum(0)
    keep = torch.topk(importance, LSTM_LIVE).indices
    col = torch.zeros(LSTM_HIDDEN)
    col[keep] = 1.0
    prune.custom_from_mask(model.lin, "weight", col[None, :].clone())
    hh_mask = col[None, :].repeat(4 * LSTM_HIDDEN, 1)
    w = model.rec.weight_hh_l0.detach().abs() * hh_mask
    threshold = torch.quantile(w[hh_mask > 0], 0.3)
    prune.custom_from_mask(model.rec, "weight_hh_l0", hh_mask * (w > threshold).float())
    fit(step, model.parameters(), steps // 3, 2e-3, "lstm-pruned")
    sd = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    torch.save(
        {
            "epoch": 0,
            "global_step": steps + steps // 3,
            "pytorch-lightning_version": "2.4.0",
            "state_dict": sd,
            "hyper_parameters": config("recurrent", params),
        },
        out / "lstm_pruned.ckpt",
    )


def train_stn(data, out: Path, steps: int, gen: torch.Generator) -> None:
    model = architectures.build("stn", STN_PARAMS, 1)

    def step():
        _, _, xs, ys, k = batches(*data, 96, 16, 0, gen)
        return esr(model(xs, k)[0], ys)

    fit(step, model.parameters(), steps, 3e-3, "stn")
    native.save(out / "stn.safetensors", model.state_dict(), config("stn", STN_PARAMS))


def train_statematch(data, out: Path, steps: int, gen: torch.Generator) -> None:
    model = architectures.build("statematch", STATEMATCH_PARAMS, 1)
    n = STATEMATCH_PARAMS["init_len"]

    def step():
        xc, yc, xs, ys, k = batches(*data, 512, 8, n, gen)
        return esr(model(xs, k, model.encode(xc, yc, k))[0], ys)

    fit(step, model.parameters(), steps, 5e-3, "statematch")
    native.save(out / "statematch.safetensors", model.state_dict(), config("statematch", STATEMATCH_PARAMS))


def train_armlp(data, out: Path, steps: int, gen: torch.Generator) -> None:
    model = architectures.build("armlp", ARMLP_PARAMS, 1)
    m = ARMLP_PARAMS["m"]

    def step():
        # Teacher forcing: the true past outputs are fed back, as in the notebook approach.
        xc, yc, xs, ys, k = batches(*data, 1, 512, m, gen)
        feats = torch.cat([xc[:, 1:], xs, yc[:, 1:], k], dim=1)
        return esr(model.mlp(feats)[:, 0], ys[:, 0])

    fit(step, model.parameters(), steps, 5e-3, "armlp")
    native.save(out / "armlp.safetensors", model.state_dict(), config("armlp", ARMLP_PARAMS))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--quick", action="store_true", help="a tenth of the steps (smoke test)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    scale = 0.1 if args.quick else 1.0
    data = dataset()
    for fn, steps in (
        (train_sptmod, 150),
        (train_pruned_lstm, 90),
        (train_stn, 60),
        (train_statematch, 60),
        (train_armlp, 600),
    ):
        gen = torch.Generator().manual_seed(1)
        torch.manual_seed(1)
        fn(data, args.out, max(3, int(steps * scale)), gen)
    for p in sorted(args.out.iterdir()):
        print(f"{p.name:24s} {p.stat().st_size / 1024:7.1f} KiB")


if __name__ == "__main__":
    main()
