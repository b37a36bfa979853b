"""Command line: ``python -m modelrunner {inspect,render,metrics,bench,build-kernels} ...``.

Bad input (a missing or unreadable file, a malformed ``--param``, an unknown knob, a
checkpoint the loaders refuse) ends with exit status 2 and one line on stderr; long
work shows a progress bar on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .audio import read_audio, write_wav
from .errors import ModelRunnerError
from .model import EffectModel
from .progress import progress_bar

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line instead of argparse's usage block, as for every other refusal.
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m modelrunner``."""
    parser = _Parser(prog="python -m modelrunner", description="Load, render and score neural audio effect models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("checkpoint", help="model file (.nam, CoreAudioML .json, .safetensors, .ckpt, .pt)")
        p.add_argument("--sample-rate", type=int, metavar="HZ", help="the model's sample rate, when the file has none")
        p.add_argument("--config", metavar="JSON", help="architecture config: a JSON object or a path to a .json file")
        p.add_argument(
            "--device",
            metavar="DEVICE",
            help="where the model renders: auto, cpu, cuda or cuda:N (default: $RENDER_DEVICE, else auto)",
        )

    p = sub.add_parser("inspect", help="describe a checkpoint")
    model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--threads", type=int, default=1, metavar="N", help="torch threads the render path is chosen for (default 1)"
    )

    p = sub.add_parser(
        "render",
        help="render an audio file through a model as the platform does (modelrunner.policy; raw output)",
    )
    model_args(p)
    p.add_argument("input", help="dry input audio (WAV/FLAC)")
    p.add_argument(
        "-o", "--output", required=True, help="output WAV (32-bit float, at the model's rate unless --input-rate)"
    )
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="knob setting; repeatable")
    p.add_argument(
        "--lookback-dry",
        metavar="AUDIO",
        help="input recorded just before the excerpt, for models that estimate their start state from it",
    )
    p.add_argument(
        "--lookback-reference",
        metavar="AUDIO",
        help="the device's recording of --lookback-dry (same length); give both or neither",
    )
    p.add_argument(
        "--ir",
        metavar="AUDIO",
        help="cabinet impulse response (mono WAV/FLAC, at most 10 s) applied after the model, at the model's rate",
    )
    p.add_argument(
        "--input-rate",
        action="store_true",
        help="write the output at the input's rate, as the platform's render files, instead of the model's",
    )
    # Renders always stream the whole file from the policy's start state, as the platform does;
    # the flag that used to choose that over parallel segments is still accepted.
    p.add_argument("--sequential", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch threads (default 1: extra threads contend on busy machines)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    p = sub.add_parser("metrics", help="objective metrics of a model output against the device recording")
    p.add_argument("output", help="model output audio")
    p.add_argument("target", help="device recording (same rate and channels)")
    p.add_argument("--trim", action="store_true", help="trim both to the shorter length instead of refusing")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("bench", help="real-time factor of batched/parallel rendering against whole-file calls")
    model_args(p)
    p.add_argument("--seconds", type=float, default=10.0, help="length of each excerpt (default 10)")
    p.add_argument("--excerpts", type=int, default=12, help="number of excerpts (default 12)")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads (default 1)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="knob setting; repeatable")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "build-kernels",
        help="compile the render kernels ahead of their first use (an image's build step, `make run`)",
    )
    p.add_argument(
        "--portable",
        action="store_true",
        help="one build per CPU level (x86-64-v2..v4 and the baseline), for an image run on other machines",
    )
    p.add_argument(
        "--into", metavar="DIR", help="where to put them (default: the cache the renders read; see modelrunner.native)"
    )
    return parser


def parse_params(items: Sequence[str]) -> dict[str, float]:
    """``["gain=0.5", ...]`` -> ``{"gain": 0.5}``; malformed items raise ``UsageError``."""
    knobs: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"--param {item!r} is not NAME=VALUE")
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"--param {item!r}: {value.strip()!r} is not a number") from None
        if not math.isfinite(number):
            raise UsageError(f"--param {item!r}: value must be finite")
        if name in knobs:
            raise UsageError(f"--param {name!r} is given twice")
        knobs[name] = number
    return knobs


def _config(value: str | None) -> dict[str, Any] | str | None:
    if value is None:
        return None
    if value.lstrip().startswith("{"):
        try:
            config: dict[str, Any] = json.loads(value)  # a JSON text starting with "{" is an object
        except json.JSONDecodeError as exc:
            raise UsageError(f"--config is not valid JSON ({exc.msg} at character {exc.pos})") from None
        return config
    if not Path(value).is_file():
        raise UsageError(f"--config {value}: no such file (give a JSON object or a path)")
    return value


def _existing(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{what} {path}: no such file")
    if not p.is_file():
        raise UsageError(f"{what} {path}: not a file")
    return p


def _device(args: argparse.Namespace) -> torch.device:
    """``--device``, else ``RENDER_DEVICE``, else auto; a device this machine lacks is refused
    (``DeviceError``: one line, exit status 2)."""
    from . import device

    return device.resolve(args.device, "--device" if args.device is not None else None)


def _load(args: argparse.Namespace) -> tuple[EffectModel, float]:
    from . import formats

    path = _existing(args.checkpoint, "checkpoint")
    where = _device(args)
    t0 = time.perf_counter()
    model = formats.load(path, sample_rate=args.sample_rate, config=_config(args.config), device=where)
    return model, time.perf_counter() - t0


def state_size(model: EffectModel) -> int:
    """Numbers carried between streaming calls for one mono signal (hidden state or caches)."""
    with torch.inference_mode():
        where = model.device
        _, state = model.module(torch.zeros(1, 1, device=where), model.knob_tensor(None, 1).to(where), None)
    return _count(state)


def _count(state: Any) -> int:
    if isinstance(state, torch.Tensor):
        return int(state.numel())
    if isinstance(state, (list, tuple)):
        return sum(_count(s) for s in state)
    if isinstance(state, dict):
        return sum(_count(s) for s in state.values())
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise UsageError("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    model, seconds = _load(args)
    info = model.summary()
    info["state_size"] = state_size(model)
    info["load_seconds"] = round(seconds, 6)
    info["render_kernel"] = str(getattr(model.module, "render_kernel", "PyTorch"))
    info["render_path"] = _render_path(model)
    info["device"] = _describe_device(model)
    info.update(_paper_facts(model))
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    sr = model.sample_rate
    rows = [
        ("format", model.format),
        ("architecture", model.architecture),
        ("parameters", f"{model.parameter_count:,}"),
        ("sample rate", f"{sr} Hz"),
    ]
    if model.knob_names:
        defaults = model.default_knobs()
        knobs = ", ".join(
            f"{n} [{lo:g}, {hi:g}] default {defaults[n]:g}" for n, (lo, hi) in zip(model.knob_names, model.knob_ranges)
        )
    else:
        knobs = "none"
    rows.append(("knobs", knobs))
    if model.stateful:
        rows.append(("state", f"recurrent, {info['state_size']} values per channel"))
    elif info["state_size"]:
        rows.append(("state", f"cached context, {info['state_size']} values per channel"))
    slim = model.metadata.get("nam_slimmable")
    if isinstance(slim, dict):
        rows.append(("slimmable", f"runs {slim['runs']}: {slim['note']}"))
    rows.append(("receptive field", f"{model.receptive_field} samples ({1000 * model.receptive_field / sr:.1f} ms)"))
    if "pruning" in info:
        pr = info["pruning"]
        dead = "; ".join(
            f"{layer}: {len(units)} of {size} ({', '.join(map(str, units)) or 'none'})"
            for (layer, units), size in zip(pr["dead_units"].items(), pr["hidden_sizes"])
        )
        rows.append(("sparsity", f"{pr['overall_sparsity']:.1%} of {pr['parameters']:,} weights are zero"))
        rows.append(("dead units", dead or "none"))
    if "lookback" in info:
        lb = info["lookback"]
        rows.append(
            (
                "look-back",
                f"{lb['lookback_samples']} samples of input"
                + (" and target" if lb["uses_target"] else "")
                + (" (needed)" if lb["needs_lookback"] else ""),
            )
        )
    if info.get("latency_samples"):
        rows.append(("latency", f"{info['latency_samples']} samples (removed by modelrunner.lookback.render_excerpt)"))
    rows.append(("device", info["device"]))
    rows.append(("render kernel", info["render_kernel"]))
    rows.append(("render path", info["render_path"]["why"]))
    rows.append(("load time", f"{seconds:.3f} s"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _render_path(model: EffectModel) -> dict[str, Any]:
    """Which path renders and why (``modelrunner.pathchoice``; measured here at first use)."""
    from . import pathchoice

    choice = getattr(model.module, "render_choice", None)
    if not isinstance(choice, pathchoice.Choice):
        choice = pathchoice.unavailable("no compiled kernel for this architecture")
    return choice.summary(model.sample_rate)


def _describe_device(model: EffectModel) -> str:
    from . import device

    return device.describe(model.device)


def _paper_facts(model: EffectModel) -> dict[str, Any]:
    """Sparsity and dead units of pruned recurrent layers; look-back and latency needs."""
    from . import lookback, pruning

    out: dict[str, Any] = {}
    if "rec.weight_hh_l0" in model.module.state_dict():
        report = pruning.analyse(model)
        out["pruning"] = {
            "overall_sparsity": report["overall_sparsity"],
            "parameters": report["parameters"],
            "dead_units": report["dead_units"],
            "dead_unit_count": report["dead_unit_count"],
            "hidden_sizes": [layer["hidden_size"] for layer in report["layers"]],
        }
    req = lookback.requirements(model)
    if req["supports_lookback"]:
        out["lookback"] = {k: req[k] for k in ("needs_lookback", "lookback_samples", "uses_target")}
    if req["latency_samples"]:
        out["latency_samples"] = req["latency_samples"]
    return out


def cmd_render(args: argparse.Namespace) -> int:
    from .cabinet import load_ir
    from .lookback import requirements
    from .policy import render_excerpt, uses_start_context
    from .render import resample

    knobs = parse_params(args.param)
    if args.threads < 1:
        raise UsageError("--threads must be >= 1")
    if (args.lookback_dry is None) != (args.lookback_reference is None):
        raise UsageError("give both --lookback-dry and --lookback-reference, or neither")
    torch.set_num_threads(args.threads)
    input_path = _existing(args.input, "input")
    lookback_paths = [
        _existing(path, option)
        for path, option in ((args.lookback_dry, "--lookback-dry"), (args.lookback_reference, "--lookback-reference"))
        if path is not None
    ]
    ir_path = _existing(args.ir, "--ir") if args.ir is not None else None
    model, _ = _load(args)
    model.knob_tensor(knobs, 1)  # refuse unknown knobs before reading audio
    ir = load_ir(ir_path, model.sample_rate) if ir_path is not None else None
    audio, rate = read_audio(input_path)
    # The policy renders at the rate it is given: the input's (as the platform does with an
    # excerpt) or the model's (the input resampled first); look-back audio follows it.
    sr = rate if args.input_rate else model.sample_rate
    x = resample(audio, rate, sr)
    context = []
    for path in lookback_paths:
        a, a_rate = read_audio(path)
        context.append(resample(a, a_rate, sr))
    lb_dry, lb_reference = context if context else (None, None)
    t0 = time.perf_counter()
    with progress_bar("render", enabled=not args.no_progress) as update:
        y, start = render_excerpt(
            model, x, sr, knobs=knobs, lookback_dry=lb_dry, lookback_reference=lb_reference, progress=update, ir=ir
        )
    seconds = time.perf_counter() - t0
    out = write_wav(args.output, y, sr, subtype="FLOAT")
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak > 1.0:
        print(f"warning: output peaks at {peak:.3f} (above full scale); kept as float, not clipped", file=sys.stderr)
    if "lookback_unavailable" in start and requirements(model)["supports_lookback"]:
        print(f"warning: look-back not used: {start['lookback_unavailable']}", file=sys.stderr)
    if context and not uses_start_context(model):
        print("warning: the model starts from silence; the look-back audio is not used", file=sys.stderr)
    if ir is not None:
        i = ir.info
        print(
            f"cabinet IR {i['name']}: {i['frames']} frames at {i['sample_rate']} Hz"
            + (f", resampled to {i['rate']} Hz" if i["resampled"] else "")
            + f", sha256 {i['sha256'][:12]}"
        )
    speed = (x.shape[0] / sr) / seconds if seconds > 0 else float("inf")
    print(
        f"wrote {out}: {y.shape[0]} frames, {y.shape[1]} channel(s), {sr} Hz float32, "
        f"peak {peak:.3f}, {speed:.1f}x real time on {_describe_device(model)} (start: {start['mode']})"
    )
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from . import metrics

    output, out_rate = read_audio(_existing(args.output, "output"))
    target, target_rate = read_audio(_existing(args.target, "target"))
    if out_rate != target_rate:
        raise UsageError(
            f"output is {out_rate} Hz but target is {target_rate} Hz; render or resample to the same rate first"
        )
    if args.trim:
        n = min(output.shape[0], target.shape[0])
        output, target = output[:n], target[:n]
    values = metrics.compute_all(output, target, out_rate)
    if args.json:
        print(json.dumps(values, indent=2))
        return 0
    width = max(len(k) for k in values)
    for key, value in values.items():
        print(f"{key:<{width}}  {value:.6g}")
    return 0


def bench_excerpts(count: int, frames: int, sample_rate: int = 44100, seed: int = 0) -> list[np.ndarray]:
    """Deterministic guitar-like test excerpts: decaying plucked tones over soft noise, ``(frames, 1)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / float(sample_rate)
    out = []
    for _ in range(count):
        f0 = rng.uniform(80, 400)
        period = rng.uniform(0.3, 1.0)
        env = np.exp(-4.0 * np.mod(t, period))
        tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
        x = 0.3 * env * tone + 0.01 * rng.standard_normal(frames)
        out.append(x.astype(np.float32)[:, None])
    return out


def cmd_bench(args: argparse.Namespace) -> int:
    from .render import reference_forward, render_batch

    if args.excerpts < 1 or not args.seconds > 0 or args.threads < 1:
        raise UsageError("--excerpts and --threads must be >= 1 and --seconds > 0")
    torch.set_num_threads(args.threads)
    knobs = parse_params(args.param)
    model, _ = _load(args)
    model.knob_tensor(knobs, 1)
    sr = model.sample_rate
    items = bench_excerpts(args.excerpts, int(round(args.seconds * sr)), sr)
    audio_seconds = args.excerpts * args.seconds
    with progress_bar("naive") as update:
        t0 = time.perf_counter()
        naive = []
        for i, x in enumerate(items):
            naive.append(reference_forward(model, x, knobs))
            update((i + 1) / len(items))
        naive_s = time.perf_counter() - t0
    with progress_bar("batched") as update:
        outs, report = render_batch(model, items, sr, knobs=knobs, progress=update, with_report=True)
    num = sum(float(np.sum((o.astype(np.float64) - n) ** 2)) for o, n in zip(outs, naive))
    den = sum(float(np.sum(n.astype(np.float64) ** 2)) for n in naive)
    result = {
        "audio_seconds": audio_seconds,
        "naive_seconds": naive_s,
        "naive_realtime": audio_seconds / naive_s,
        "batched_seconds": report.seconds,
        "batched_realtime": report.realtime_factor,
        "speedup": naive_s / report.seconds,
        "path": report.path,
        "segments": report.segments,
        "esr_vs_naive": num / den if den > 0 else 0.0,
        "threads": torch.get_num_threads(),
        "device": report.device,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{args.excerpts} x {args.seconds:g} s at {sr} Hz on {report.device}, {result['threads']} thread(s)\n"
        f"naive (whole-file call per excerpt): {naive_s:8.3f} s  {result['naive_realtime']:8.1f}x real time\n"
        f"batched ({report.path}, {report.segments} rows):{report.seconds:8.3f} s  "
        f"{report.realtime_factor:8.1f}x real time\n"
        f"speed-up over naive: {result['speedup']:.2f}x   ESR vs naive: {result['esr_vs_naive']:.2e}"
    )
    return 0


def cmd_build_kernels(args: argparse.Namespace) -> int:
    from . import native

    try:
        built = native.build_kernels(Path(args.into) if args.into else None, portable=args.portable)
    except native.KernelBuildError as exc:
        raise UsageError(f"cannot build the render kernels: {exc}; renders will use PyTorch's") from None
    for path, fresh in built:
        print(f"{'built' if fresh else 'up to date'}: {path}")
    return 0


COMMANDS = {
    "inspect": cmd_inspect,
    "render": cmd_render,
    "metrics": cmd_metrics,
    "bench": cmd_bench,
    "build-kernels": cmd_build_kernels,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (UsageError, ModelRunnerError) as exc:
        print(f"modelrunner: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"modelrunner: error: {where}{exc.strerror or _one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("modelrunner: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
