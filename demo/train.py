"""Train the demo's small recurrent models of the demo pedal and write CoreAudioML JSON files.

    nice python -m demo.train            # all three, a few minutes on one CPU core
    nice python -m demo.train lstm4      # only one of them

Training follows Wright, Damskägg & Välimäki, "Real-time black-box modelling with
recurrent neural networks", DAFx 2019: half-second segments, a warm-up of 1000 samples
to settle the hidden state, truncated back-propagation through time every 2048 samples,
loss = ESR + DC, Adam. A knob is an extra constant input channel (Wright et al.,
Applied Sciences 10(3), 2020). The files use CoreAudioML's ``SimpleRNN`` layout
(``model_data`` + ``state_dict``) plus a ``metadata`` object that CoreAudioML loaders
ignore; it records the sample rate (48 kHz) and the training summary.

The committed checkpoints in ``demo/checkpoints/`` were written by this script; it is
deterministic given its seeds (on the same torch build and thread count).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .device import DemoDevice
from .guitar import guitar_phrase

SAMPLE_RATE = 48_000
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
#: Phrase seeds. The demo excerpts (``demo.material``) use seeds 1..99: disjoint from both.
TRAIN_SEEDS = tuple(range(1000, 1030))
VALID_SEEDS = (900, 901, 902)
TRAIN_SECONDS = 4.0
VALID_SECONDS = 4.0
VALID_GAIN = 0.5
#: Gains the conditioned model also hears (every phrase is also rendered at 0.5).
OTHER_GAINS = (0.0, 0.25, 0.75, 1.0)
SEGMENT = SAMPLE_RATE // 2
WARMUP = 1000
TBPTT = 2048


@dataclass(frozen=True)
class Recipe:
    """One model to train: architecture, conditioning and optimisation budget."""

    name: str
    filename: str
    unit_type: str
    hidden_size: int
    conditioned: bool
    steps: int
    batch_size: int
    lr: float
    seed: int
    tbptt: int = TBPTT


RECIPES = {
    "lstm16": Recipe("lstm16", "demo_lstm16_gain.json", "LSTM", 16, True, steps=3000, batch_size=16, lr=5e-3, seed=16),
    # torch's CPU GRU is several times slower per time step than its LSTM: shorter TBPTT, more updates.
    "gru8": Recipe("gru8", "demo_gru8.json", "GRU", 8, False, steps=300, batch_size=32, lr=1e-2, seed=8, tbptt=1024),
    "lstm4": Recipe(
        "lstm4", "demo_lstm4_undertrained.json", "LSTM", 4, False, steps=400, batch_size=16, lr=5e-3, seed=4
    ),
}


class SimpleRNN(nn.Module):
    """CoreAudioML's ``SimpleRNN``: ``y = lin(rec(x)) + x[..., :1]``, ``x`` shaped ``(B, T, 1 + knobs)``."""

    def __init__(self, unit_type: str, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.rec = {"LSTM": nn.LSTM, "GRU": nn.GRU}[unit_type](input_size, hidden_size, 1, batch_first=True)
        self.lin = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor, state=None):
        out, state = self.rec(x, state)
        return self.lin(out) + x[..., :1], state


def esr(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Error-to-signal ratio ``sum((y - y_hat)^2) / sum(y^2)`` (Wright et al., DAFx 2019, eq. 4)."""
    return ((target - pred) ** 2).sum() / (target**2).sum().clamp_min(1e-10)


def dc_loss(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """DC loss ``mean(y - y_hat)^2 / mean(y^2)`` over time (Wright et al., DAFx 2019, eq. 5)."""
    return ((target - pred).mean(dim=1) ** 2).mean() / (target**2).mean().clamp_min(1e-10)


def render_pairs(seeds: tuple[int, ...], seconds: float, gains: list[float]) -> tuple[np.ndarray, ...]:
    """Dry phrases, their knob values and the pedal's output, each ``(len(seeds), frames)`` / ``(len(seeds),)``."""
    device = DemoDevice()
    dry = np.stack([guitar_phrase(s, seconds, SAMPLE_RATE) for s in seeds])
    wet = np.stack([device.process(d, SAMPLE_RATE, g) for d, g in zip(dry, gains)])
    return dry, np.asarray(gains, dtype=np.float32), wet


def model_input(dry: np.ndarray, knobs: np.ndarray | None) -> torch.Tensor:
    """``(B, T)`` audio and ``(B,)`` knob values -> ``(B, T, 1 + knobs)`` network input."""
    x = torch.from_numpy(np.ascontiguousarray(dry, dtype=np.float32))[..., None]
    if knobs is None:
        return x
    k = torch.from_numpy(np.asarray(knobs, dtype=np.float32))[:, None, None].expand(-1, x.shape[1], 1)
    return torch.cat([x, k], dim=2)


def segments(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut ``(B, T, C)`` inputs and ``(B, T)`` targets into half-second segments."""
    n = x.shape[1] // SEGMENT
    xs = x[:, : n * SEGMENT].reshape(-1, n, SEGMENT, x.shape[2]).reshape(-1, SEGMENT, x.shape[2])
    ys = y[:, : n * SEGMENT].reshape(-1, SEGMENT)
    return xs, ys


@torch.no_grad()
def validation_esr(model: SimpleRNN, x: torch.Tensor, y: torch.Tensor) -> float:
    """ESR over whole validation phrases, the hidden state starting from zero."""
    pred, _ = model(x)
    return float(esr(y, pred[..., 0]))


def train(recipe: Recipe, data: dict, log: Callable[[str], None] = print) -> tuple[SimpleRNN, dict]:
    """Train one recipe with TBPTT; returns the model and its training summary."""
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    input_size = 2 if recipe.conditioned else 1
    model = SimpleRNN(recipe.unit_type, input_size, recipe.hidden_size)
    xs, ys = data["train_cond"] if recipe.conditioned else data["train"]
    if not recipe.conditioned:
        xs = xs[..., :1]
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    # Halve the rate for the last third: the final steps polish rather than explore.
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(recipe.steps * 0.7), int(recipe.steps * 0.9)], 0.4)
    started = time.perf_counter()
    step, epoch, running = 0, 0, []
    while step < recipe.steps:
        epoch += 1
        order = torch.randperm(xs.shape[0], generator=gen)
        for b in range(0, len(order) - recipe.batch_size + 1, recipe.batch_size):
            idx = order[b : b + recipe.batch_size]
            xb, yb = xs[idx], ys[idx]
            with torch.no_grad():
                _, state = model(xb[:, :WARMUP])
            for t0 in range(WARMUP, SEGMENT - recipe.tbptt + 1, recipe.tbptt):
                pred, state = model(xb[:, t0 : t0 + recipe.tbptt], state)
                target = yb[:, t0 : t0 + recipe.tbptt]
                loss = esr(target, pred[..., 0]) + dc_loss(target, pred[..., 0])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
                running.append(float(loss.detach()))
                step += 1
                if step % 25 == 0 or step == recipe.steps:
                    log(
                        f"  {recipe.name}: step {step}/{recipe.steps} epoch {epoch} "
                        f"loss {np.mean(running[-25:]):.4f} ({time.perf_counter() - started:.0f} s)"
                    )
                if step >= recipe.steps:
                    break
            if step >= recipe.steps:
                break
    seconds = time.perf_counter() - started
    vx, vy = data["valid"]
    val = validation_esr(model, vx if recipe.conditioned else vx[..., :1], vy)
    summary = {
        "sample_rate": SAMPLE_RATE,
        "device": "demo.device.DemoDevice() (overdrive pedal)",
        "knobs": ["gain"] if recipe.conditioned else [],
        "trained_at_gain": None if recipe.conditioned else VALID_GAIN,
        "train_gains": sorted({VALID_GAIN, *OTHER_GAINS}) if recipe.conditioned else [VALID_GAIN],
        "train_seeds": [TRAIN_SEEDS[0], TRAIN_SEEDS[-1]],
        "train_seconds_per_phrase": TRAIN_SECONDS,
        "validation_seeds": list(VALID_SEEDS),
        "validation_seconds_per_phrase": VALID_SECONDS,
        "validation_gain": VALID_GAIN,
        "validation_esr": round(val, 5),
        "steps": step,
        "epochs": epoch,
        "batch_size": recipe.batch_size,
        "segment_samples": SEGMENT,
        "warmup_samples": WARMUP,
        "tbptt_samples": recipe.tbptt,
        "loss": "ESR + DC",
        "optimizer": f"Adam lr {recipe.lr}",
        "torch_seed": recipe.seed,
        "training_seconds": round(seconds, 1),
    }
    log(f"  {recipe.name}: validation ESR {val:.4f} after {step} steps, {seconds:.0f} s")
    return model, summary


def coreaudioml_json(model: SimpleRNN, recipe: Recipe, summary: dict) -> dict:
    """The CoreAudioML ``SimpleRNN`` export (``model_data``, ``state_dict``) plus ``metadata``."""
    sd = {k: v.detach().to(torch.float32).numpy().tolist() for k, v in model.state_dict().items()}
    return {
        "model_data": {
            "model": "SimpleRNN",
            "input_size": 2 if recipe.conditioned else 1,
            "skip": 1,
            "output_size": 1,
            "unit_type": recipe.unit_type,
            "num_layers": 1,
            "hidden_size": recipe.hidden_size,
            "bias_fl": True,
        },
        "state_dict": sd,
        "metadata": summary,
    }


def build_data(log: Callable[[str], None] = print) -> dict:
    """Render the training and validation sets (same for every recipe)."""
    started = time.perf_counter()
    rng = np.random.default_rng(7)
    n = len(TRAIN_SEEDS)
    dry, knobs, wet = render_pairs(TRAIN_SEEDS, TRAIN_SECONDS, [VALID_GAIN] * n)
    other = rng.choice(OTHER_GAINS, size=n).tolist()
    device = DemoDevice()
    wet2 = np.stack([device.process(d, SAMPLE_RATE, g) for d, g in zip(dry, other)])
    knobs2 = np.asarray(other, dtype=np.float32)
    x_half = model_input(dry, knobs)
    y_half = torch.from_numpy(wet)
    train = segments(x_half, y_half)
    x_all = torch.cat([x_half, model_input(dry, knobs2)])
    y_all = torch.cat([y_half, torch.from_numpy(wet2)])
    train_cond = segments(x_all, y_all)
    vdry, vknobs, vwet = render_pairs(VALID_SEEDS, VALID_SECONDS, [VALID_GAIN] * len(VALID_SEEDS))
    log(
        f"rendered {n} training phrases ({n * TRAIN_SECONDS:.0f} s, at gain 0.5 and at {sorted(set(other))}) "
        f"and {len(VALID_SEEDS)} validation phrases in {time.perf_counter() - started:.0f} s"
    )
    return {"train": train, "train_cond": train_cond, "valid": (model_input(vdry, vknobs), torch.from_numpy(vwet))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.train", description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help=f"which to train: {', '.join(RECIPES)} (default: all)")
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR, help="folder for the JSON files")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.models or list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    started = time.perf_counter()
    data = build_data(log=lambda m: print(m, flush=True))
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        recipe = RECIPES[name]
        model, summary = train(recipe, data, log=lambda m: print(m, flush=True))
        path = args.out / recipe.filename
        path.write_text(json.dumps(coreaudioml_json(model, recipe, summary)) + "\n")
        print(
            f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB): validation ESR {summary['validation_esr']}",
            flush=True,
        )
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
