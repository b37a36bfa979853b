"""CoreAudioML JSON (Wright's Automated-GuitarAmpModelling, GuitarML Proteus/NeuralPi).

Reads the ``SimpleRNN`` export written by CoreAudioML's ``save_model``: an object with

* ``model_data``: ``model`` ("SimpleRNN"), ``unit_type`` (LSTM, GRU or RNN),
  ``input_size`` (1 + number of knobs), ``hidden_size``, ``output_size`` (1), ``skip``
  (0 or 1), ``num_layers``, ``bias_fl`` (output-layer bias);
* ``state_dict``: nested lists keyed ``rec.weight_ih_l0``, ``rec.weight_hh_l0``,
  ``rec.bias_ih_l0``, ``rec.bias_hh_l0`` (... per layer), ``lin.weight``, ``lin.bias``.

The model is ``y = lin(rnn([x, p1, p2, ...])) + x[..., :skip]``: knobs are extra constant
input channels in [0, 1], named ``p1``, ``p2``... in channel order. The file stores no
sample rate: 44.1 kHz is assumed unless the caller passes ``sample_rate=``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from .. import limits, safety
from ..architectures.recurrent import UNITS, RecurrentModel
from ..errors import CheckpointError
from ..model import EffectModel
from ._common import as_tensor, check_sample_rate, make_model, read_json

DEFAULT_SAMPLE_RATE = 44_100


def looks_like(data: Any) -> bool:
    """True for a parsed JSON object with CoreAudioML's two top-level keys."""
    return isinstance(data, dict) and isinstance(data.get("model_data"), dict) and "state_dict" in data


def load(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    config: Any = None,
    max_bytes: int | None = None,
) -> EffectModel:
    """Load a CoreAudioML ``SimpleRNN`` JSON file as a streaming ``EffectModel``."""
    started = time.perf_counter()
    p = Path(path)
    data = read_json(p, max_bytes)
    if not looks_like(data):
        raise CheckpointError(f"{p.name}: not a CoreAudioML file (needs 'model_data' and 'state_dict')")
    md = data["model_data"]
    model_name = md.get("model", "SimpleRNN")
    if model_name != "SimpleRNN":
        raise CheckpointError(f"{p.name}: CoreAudioML model {model_name!r} is not supported (only SimpleRNN)")
    unit = str(md.get("unit_type", "")).upper()
    if unit not in UNITS:
        raise CheckpointError(f"{p.name}: unit_type {md.get('unit_type')!r} is not one of LSTM, GRU, RNN")
    try:
        input_size = int(md["input_size"])
        hidden_size = int(md["hidden_size"])
        output_size = int(md.get("output_size", 1))
        skip = int(md.get("skip", 0))
        num_layers = int(md.get("num_layers", 1))
        bias = bool(md.get("bias_fl", True))
    except KeyError as exc:
        raise CheckpointError(f"{p.name}: model_data lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError):
        raise CheckpointError(f"{p.name}: model_data sizes must be whole numbers") from None
    if output_size != 1:
        raise CheckpointError(f"{p.name}: output_size {output_size} is not supported (mono only)")
    if input_size < 1 or hidden_size < 1 or num_layers < 1 or hidden_size > 4096 or num_layers > 16:
        raise CheckpointError(f"{p.name}: implausible sizes in model_data {md!r}")
    if skip not in (0, 1):
        raise CheckpointError(f"{p.name}: skip={skip} is not supported (0 or 1 for mono output)")
    limits.at_most("hidden_size", hidden_size, source=p.name, field="model_data.hidden_size")
    limits.at_most("layers", num_layers, source=p.name, field="model_data.num_layers")
    limits.at_most("channels", input_size, source=p.name, field="model_data.input_size")
    sd = data["state_dict"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{p.name}: state_dict must be an object of weight lists")
    tensors = {k: as_tensor(v, k, p.name) for k, v in sd.items()}
    # Shapes are checked on the meta device first: a small file may declare a huge network.
    with torch.device("meta"):
        plan = RecurrentModel(unit, hidden_size, num_layers, input_size - 1, skip, bias)
    safety.check_weights_fit(plan, tensors, source=p.name)
    module = RecurrentModel(unit, hidden_size, num_layers, input_size - 1, skip, bias)
    safety.load_state_dict_strict(module, tensors, source=p.name)
    rate = DEFAULT_SAMPLE_RATE if sample_rate is None else check_sample_rate(sample_rate, p.name)
    warnings = [] if sample_rate is not None else ["no sample rate stored; assumed 44100 Hz"]
    knobs = [f"p{i + 1}" for i in range(input_size - 1)]
    return make_model(
        path=p,
        module=module,
        sample_rate=rate,
        fmt="coreaudioml",
        architecture=f"{unit}-{hidden_size}" + (f"x{num_layers}" if num_layers > 1 else ""),
        stateful=True,
        receptive_field=1,
        knob_names=knobs,
        knob_ranges=[(0.0, 1.0)] * len(knobs),
        metadata={"model_data": md},
        started=started,
        warnings=warnings,
    )
