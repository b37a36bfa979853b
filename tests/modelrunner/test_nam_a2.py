"""NAM A2 files load and render as the ``neural-amp-modeler`` package renders them.

A2 is the WaveNet layout TONE3000 trains by default (``.nam`` 0.7): a ``SlimmableContainer``
of two WaveNets, 3 and 8 channels (``max_value`` 0.5 and 1.0), each one layer array of 23
layers with per-layer ``kernel_sizes`` (6, two of 15), dilations 1..239, LeakyReLU(0.01),
a kernel-16 head and ``head_scale`` 0.01 (NeuralAmpModelerCore ``example_models/A2.nam``,
commit b5a68c3e). No A2 file is shared, so the package (0.13.0, in ``.venv-nam``) writes
one here: that architecture, seeded random weights, its own ``export``
(``nam_reference_render.py``, ``generate``). Then, as ``test_nam_reference.py`` does, 10 s
of the guitar fixture go through ``modelrunner.policy.render_excerpt`` with the compiled
kernel and with PyTorch's, against the package's output: max abs error <= 1e-4, ESR <= 1e-6.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from modelrunner import native
from modelrunner.architectures.nam import NamLayerArray, NamWaveNet
from modelrunner.errors import CheckpointError
from modelrunner.formats import load
from modelrunner.policy import render_excerpt
from tests.modelrunner.test_nam_reference import NAM_VERSION, _input, _reference_python, run_reference_jobs

pytestmark = pytest.mark.slow

_FILMS = (
    "conv_pre_film",
    "conv_post_film",
    "input_mixin_pre_film",
    "input_mixin_post_film",
    "activation_pre_film",
    "activation_post_film",
    "layer1x1_post_film",
    "head1x1_post_film",
)
A2_KERNEL_SIZES = [6] * 14 + [15, 15] + [6] * 7
A2_DILATIONS = [1, 3, 7, 17, 41, 101, 239] * 2 + [1, 13] + [1, 3, 7, 17, 41, 101, 239]
#: A2.nam's receptive field: 1 + sum((k - 1) d) + (16 - 1).
A2_RECEPTIVE_FIELD = 6347


def a2_layer_array(channels: int) -> dict[str, Any]:
    """One A2 layer array, every key as A2.nam writes it."""
    n = len(A2_DILATIONS)
    return {
        "input_size": 1,
        "condition_size": 1,
        "head": {"out_channels": 1, "kernel_size": 16, "bias": True},
        "channels": channels,
        "kernel_sizes": list(A2_KERNEL_SIZES),
        "dilations": list(A2_DILATIONS),
        "activation": [{"type": "LeakyReLU", "negative_slope": 0.01} for _ in range(n)],
        "bottleneck": channels,
        "head1x1": {"active": False, "out_channels": 1, "groups": 1},
        "layer1x1": {"active": True, "groups": 1},
        "groups_input": 1,
        "groups_input_mixin": 1,
        **{key: {"active": False, "shift": True, "groups": 1} for key in _FILMS},
        "gating_mode": ["none"] * n,
        "secondary_activation": [None] * n,
        "slimmable": None,
    }


def a2_wavenet(channels: int) -> dict[str, Any]:
    return {
        "version": "0.7.0",
        "architecture": "WaveNet",
        "config": {"layers": [a2_layer_array(channels)], "head": None, "head_scale": 0.01},
        "sample_rate": 48000,
    }


A2_CONTAINER = {
    "version": "0.7.0",
    "architecture": "SlimmableContainer",
    "config": {"submodels": [{"max_value": 0.5, "model": a2_wavenet(3)}, {"max_value": 1.0, "model": a2_wavenet(8)}]},
    "weights": [],
    "sample_rate": 48000.0,
}
#: (case id, the project's loader config, the container's submodel NeuralAmpModelerCore runs).
CASES: list[tuple[str, dict[str, Any] | None, int]] = [
    ("a2-default", None, 1),
    ("a2-size-0.3", {"slimmable_size": 0.3}, 0),
    ("a2-size-0.5", {"slimmable_size": 0.5}, 1),
]


@pytest.fixture(scope="module")
def a2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The package writes the A2 file, then renders each case's submodel of it."""
    python = _reference_python()
    folder = tmp_path_factory.mktemp("nam_a2")
    model = folder / "a2.nam"
    x = _input(48000)
    np.save(folder / "in.npy", x)
    jobs = []
    for i, (case, _config, submodel) in enumerate(CASES):
        job: dict[str, Any] = {"model": str(model), "submodel": submodel, "slimming": None}
        job.update(input=str(folder / "in.npy"), output=str(folder / f"{case}.out.npy"))
        if i == 0:
            job["generate"] = {"model": A2_CONTAINER, "seed": 20260504, "head_gain": 30.0}
        jobs.append(job)
    summary = run_reference_jobs(python, folder, jobs)
    outputs = {case: np.load(folder / f"{case}.out.npy") for case, *_ in CASES}
    return {"model": model, "input": x, "outputs": outputs, "summary": summary}


def test_the_package_wrote_an_a2_file(a2: dict[str, Any]) -> None:
    assert a2["summary"]["nam"] == NAM_VERSION
    data = json.loads(a2["model"].read_text())
    assert data["architecture"] == "SlimmableContainer"
    for sub, channels in zip(data["config"]["submodels"], (3, 8)):
        written = sub["model"]
        assert written["version"] == "0.7.0" and written["architecture"] == "WaveNet"
        (lc,) = written["config"]["layers"]
        assert lc["channels"] == channels and lc["kernel_sizes"] == A2_KERNEL_SIZES
        assert lc["dilations"] == A2_DILATIONS and lc["activation"][0] == {"type": "LeakyReLU", "negative_slope": 0.01}
    jobs = a2["summary"]["jobs"]
    assert jobs[0]["notes"][0].startswith("generated") and all(j["class"] == "WaveNet" for j in jobs)
    assert {j["receptive_field"] for j in jobs} == {A2_RECEPTIVE_FIELD}


def test_an_a2_file_loads_with_its_sizes(a2: dict[str, Any]) -> None:
    model = load(a2["model"])
    assert model.sample_rate == 48000 and model.receptive_field == A2_RECEPTIVE_FIELD
    assert "submodel 2 of 2" in model.architecture
    layers = model.module.layer_arrays()[0].wavenet_layers()
    assert [layer.conv.kernel_size[0] for layer in layers] == A2_KERNEL_SIZES
    assert [layer.conv.dilation[0] for layer in layers] == A2_DILATIONS
    assert {(type(layer.activation).__name__, layer.activation.negative_slope) for layer in layers} == {
        ("LeakyReLU", 0.01)
    }
    small = load(a2["model"], config={"slimmable_size": 0.2}).module.layer_arrays()[0].wavenet_layers()
    assert layers[0].channels == 8 and small[0].channels == 3


@pytest.mark.parametrize("kernel", ["inspect", "torch"])
@pytest.mark.parametrize(("case", "config", "submodel"), CASES, ids=[c[0] for c in CASES])
def test_an_a2_render_matches_the_package(
    a2: dict[str, Any],
    kernel: str,
    case: str,
    config: dict[str, Any] | None,
    submodel: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, ref = a2["input"], a2["outputs"][case]
    if kernel == "torch":
        monkeypatch.setattr(native, "library", lambda: None)
    model = load(a2["model"], config=config)
    assert f"submodel {submodel + 1} of 2" in model.architecture
    used = str(model.module.render_kernel)
    assert used.startswith("PyTorch" if kernel == "torch" else "compiled"), used
    y, start = render_excerpt(model, x, model.sample_rate)
    assert start["mode"] == "zero" and y.shape == (x.shape[0], 1)
    out = y[:, 0].astype(np.float64)
    assert ref.shape == out.shape and x.shape[0] >= 10 * model.sample_rate
    err = float(np.max(np.abs(out - ref)))
    esr = float(np.sum((out - ref) ** 2) / np.sum(ref**2))
    print(f"{case} [{used}]: max abs error {err:.3g}, ESR {esr:.3g}, output rms {np.std(ref):.3g}")
    assert err <= 1e-4, f"{case}: max abs error {err} (ESR {esr})"
    assert esr <= 1e-6, f"{case}: ESR {esr} (max abs error {err})"
    assert float(np.std(ref)) > 1e-2  # the package's output is not near silence


def _max_layer_array(**change: Any) -> dict[str, Any]:
    """An A2 layer array with one of ``wavenet_a2_max.nam``'s further options."""
    lc = copy.deepcopy(a2_layer_array(3))
    lc.update(change)
    return lc


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"groups_input": 3}, "groups_input=3"),
        ({"bottleneck": 6}, "bottleneck=6"),
        ({"layer1x1": {"active": True, "groups": 3}}, "layer1x1="),
        ({"head1x1": {"active": True, "out_channels": 6, "groups": 3}}, "head1x1="),
        ({"head_1x1": {"active": True, "out_channels": 6, "groups": 3}}, "head_1x1="),
        ({"conv_pre_film": {"active": True, "shift": True, "groups": 1}}, "conv_pre_film="),
        ({"gating_mode": ["blended"] + ["none"] * 22}, "gating_mode 'blended'"),
        ({"activation": [{"type": "PReLU", "negative_slopes": [0.04, 0.05]}] * 23}, "PReLU"),
        ({"activation": [{"type": "LeakyReLU", "negative_slope": 0.01, "inplace": 1}] * 23}, "LeakyReLU"),
    ],
)
def test_the_a2_max_options_are_refused_by_key(tmp_path: Path, change: dict[str, Any], named: str) -> None:
    """``wavenet_a2_max.nam`` (NeuralAmpModelerCore's test file of every option considered for
    A2: FiLM, grouped convolutions, a bottleneck, head 1x1, blended gating, PReLU, LeakyHardtanh)
    is refused, the message naming the key, never read as another network."""
    model = a2_wavenet(3)
    model["config"]["layers"] = [_max_layer_array(**change)]
    model["weights"] = [0.0] * 10
    path = tmp_path / "a2_max_like.nam"
    path.write_text(json.dumps(model))
    with pytest.raises(CheckpointError, match="layer array 0") as raised:
        load(path)
    assert named in str(raised.value)


@pytest.mark.parametrize("slope", [0.0, 0.2, 1.0, 1.5])
def test_the_compiled_kernel_runs_leaky_relu_slopes_in_0_1(slope: float) -> None:
    """The compiled kernel's LeakyReLU, max(a, s a), for 0 <= s <= 1 against torch's
    ``nn.LeakyReLU`` (``forward``); a slope above 1 renders through PyTorch and ``inspect`` says why."""
    if native.library() is None:
        pytest.skip(f"no compiled kernels here ({native.reason()})")
    torch.manual_seed(1)
    leaky = {"type": "LeakyReLU", "negative_slope": slope}
    arr = NamLayerArray(1, 1, 4, [3, 6, 15], [1, 7, 13], [leaky] * 3, [False, True, False], 1, 16, True)
    net = NamWaveNet([arr], 0.5).eval()
    x = torch.randn(2, 3000) * 0.3
    with torch.no_grad():
        want, _ = net.forward(x)
        if slope > 1.0:
            assert net.render_kernel == "PyTorch (an activation the kernel lacks)"
            return
        assert net.render_kernel.startswith("compiled")
        got, _ = net.path_run("compiled", x, None)
    assert float(want.std()) > 1e-2
    assert float((got - want).abs().max()) <= 1e-5
