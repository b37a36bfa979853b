"""Render ``.nam`` files with the ``neural-amp-modeler`` package (run by its own venv's python).

Usage: ``python nam_reference_render.py JOBS.json``. ``JOBS.json`` holds
``{"jobs": [{"model", "input", "output", "submodel", "slimming"}]}``: each job reads a
float32 ``.npy`` (the input at the model's rate), runs the package's model with
``pad_start=True`` (zeros before the start, as the package renders a whole file) and
writes the output as float64 ``.npy``. A summary (package and torch versions, what each
job built) goes to ``JOBS.json`` with ``.out`` appended.

Only the package builds and runs the networks. Three things it cannot read from a
``.nam`` file by itself are bridged here, each without computing anything:

* 0.5.x layer arrays (``head_size``, ``head_bias``): ``init_from_nam`` 0.13 requires the
  0.7 ``head`` object. NeuralAmpModelerCore reads the old keys as a kernel-1 head, so
  they are renamed to ``head: {out_channels: head_size, kernel_size: 1, bias: head_bias}``.
  ``gated: true`` is refused (no shared file uses it; its half order is not checked).
* ``condition_dsp``: ``init_from_nam`` drops it; the nested ``.nam`` object is built by
  ``init_from_nam`` too and set as the package WaveNet's ``_condition_dsp``, whose
  ``forward`` then conditions every layer array on it (``c = condition_dsp(x)``).
* ``SlimmableContainer``: not an architecture of the package; the job names the
  submodel (``submodel``), which the package renders. ``slimming`` calls the package's
  ``set_slimming`` on slimmable layers.

A job with ``generate`` (``{"model": a .nam object without weights, "seed", "head_gain"}``)
first writes its ``model`` file with the package: each WaveNet is built from its config
(``init_from_nam``'s own config reader), its weights drawn by the package's initialisers
after ``torch.manual_seed(seed + i)``, the head convolution's weights multiplied by
``head_gain`` (random weights give a quiet output), and written by the package's
``export``; a ``SlimmableContainer`` lists the submodels so written. This is how the tests
get files with the architecture of a released format (the A2 files) without shipping one.

This file never imports the project; the project's tests never import the package.
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import nam  # type: ignore[import-not-found]  # only in .venv-nam
import numpy as np
import torch
from nam.models import init_from_nam  # type: ignore[import-not-found]
from nam.models._from_nam import _init_wavenet  # type: ignore[import-not-found]


def _renamed(model: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The 0.5.x layer-array keys renamed to the 0.7 ``head`` object; True if any were."""
    if model["architecture"] != "WaveNet":
        return model, False
    model = copy.deepcopy(model)
    renamed = False
    for lc in model["config"]["layers"]:
        if lc.pop("gated", False):
            raise NotImplementedError("a layer array with gated: true (no shared file has one)")
        if "head" not in lc:
            lc["head"] = {"out_channels": lc.pop("head_size"), "kernel_size": 1, "bias": lc.pop("head_bias")}
            renamed = True
    return model, renamed


def build(model: dict[str, Any]) -> tuple[Any, list[str]]:
    """The package's model for one ``.nam`` object, and the bridges used (see the docstring)."""
    model, renamed = _renamed(model)
    notes = ["0.5.x head keys renamed"] if renamed else []
    condition = model["config"].get("condition_dsp")
    net = init_from_nam(model)
    if condition is not None:
        cond_net, cond_notes = build(condition)
        net._net._condition_dsp = cond_net._net
        notes += ["condition_dsp attached"] + [f"condition_dsp: {n}" for n in cond_notes]
    return net, notes


def _exported(model: dict[str, Any], seed: int, head_gain: float) -> dict[str, Any]:
    """A WaveNet ``.nam`` object as the package writes it, with seeded random weights."""
    if model["architecture"] != "WaveNet":
        raise NotImplementedError(f"generating {model['architecture']!r}")
    torch.manual_seed(seed)
    net = _init_wavenet(model["config"], model.get("sample_rate"))
    with torch.no_grad():
        for name, param in net.named_parameters():
            if "_head_rechannel.weight" in name:
                param.mul_(head_gain)
    with tempfile.TemporaryDirectory() as folder:
        net.export(Path(folder), basename="model")
        return json.loads((Path(folder) / "model.nam").read_text())


def generate(spec: dict[str, Any], path: Path) -> list[str]:
    """Write ``spec["model"]`` with the package's weights to ``path`` (see the docstring)."""
    model, seed, gain = spec["model"], int(spec["seed"]), float(spec["head_gain"])
    if model["architecture"] == "SlimmableContainer":
        subs = model["config"]["submodels"]
        written = {
            **model,
            "config": {
                "submodels": [
                    {"max_value": sub["max_value"], "model": _exported(sub["model"], seed + i, gain)}
                    for i, sub in enumerate(subs)
                ]
            },
            "weights": [],
        }
    else:
        written = _exported(model, seed, gain)
    path.write_text(json.dumps(written))
    return [f"generated (seed {seed})"]


def run(job: dict[str, Any]) -> dict[str, Any]:
    generated = generate(job["generate"], Path(job["model"])) if job.get("generate") else []
    model = json.loads(Path(job["model"]).read_text())
    notes = generated
    if model["architecture"] == "SlimmableContainer":
        model = model["config"]["submodels"][job["submodel"]]["model"]
        notes.append(f"submodel {job['submodel']}")
    net, built = build(model)
    notes += built
    if job.get("slimming") is not None:
        net._net.set_slimming(float(job["slimming"]))
        notes.append(f"set_slimming({job['slimming']})")
    net.eval()
    x = torch.from_numpy(np.load(job["input"]).astype(np.float32))
    with torch.no_grad():
        y = net(x, pad_start=True)
    np.save(job["output"], y.numpy().astype(np.float64))
    return {"class": type(net).__name__, "receptive_field": int(net.receptive_field), "notes": notes}


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    jobs_path = Path(argv[1])
    jobs = json.loads(jobs_path.read_text())["jobs"]
    summary = {
        "nam": nam.__version__,
        "torch": torch.__version__,
        "project_imported": any(m == "modelrunner" or m.startswith("modelrunner.") for m in sys.modules),
        "jobs": [run(job) for job in jobs],
    }
    Path(str(jobs_path) + ".out").write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
