"""The shared ``.nam`` files render as the ``neural-amp-modeler`` package renders them.

The package (0.13.0) lives in its own venv, ``.venv-nam`` (``make .venv-nam/.installed``;
``make test`` installs it), and runs in a subprocess (``nam_reference_render.py``); audio
goes both ways as ``.npy`` files, so this interpreter never imports it. Each case renders
10 s of the guitar fixture (the 5 s recording twice) at the model's rate through
``modelrunner.policy.render_excerpt``, what the platform's render worker calls, with the
kernel ``inspect`` reports (the compiled one where it applies) and with PyTorch's kernels,
and asserts max abs error <= 1e-4 and ESR <= 1e-6 against the package's output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelrunner import native
from modelrunner.formats import load
from modelrunner.model import EffectModel
from modelrunner.policy import render_excerpt
from modelrunner.render import resample
from tests.modelrunner._helpers import guitar
from tests.paths import REPO, fixture_path

pytestmark = pytest.mark.slow

NAM_PYTHON = REPO / ".venv-nam" / "bin" / "python"
SCRIPT = Path(__file__).with_name("nam_reference_render.py")
NAM_VERSION = "0.13.0"

#: (case id, file, the project's loader config, the reference job's extras). Container
#: submodels follow NeuralAmpModelerCore's container.cpp (the first whose max_value exceeds
#: the size; the last by default); slimming as slimmable.cpp (allowed[min(floor(v n), n - 1)]).
CASES: list[tuple[str, str, dict[str, Any] | None, dict[str, Any]]] = [
    ("linear", "identity_linear_1.nam", None, {}),
    ("wavenet-0.7-minimal", "identity_wavenet_minimal.nam", None, {}),
    ("lstm", "lstm_h3.nam", None, {}),
    ("wavenet-0.5.4", "wavenet_tiny_v054.nam", None, {}),
    ("wavenet-condition_dsp", "wavenet_condition_dsp.nam", None, {}),
    ("slimmable-full", "slimmable_wavenet.nam", None, {}),
    ("slimmable-0.0", "slimmable_wavenet.nam", {"slimmable_size": 0.0}, {"slimming": 0.0}),
    ("slimmable-0.4", "slimmable_wavenet.nam", {"slimmable_size": 0.4}, {"slimming": 0.4}),
    ("container-default", "slimmable_container.nam", None, {"submodel": 2}),
    ("container-0.0", "slimmable_container.nam", {"slimmable_size": 0.0}, {"submodel": 0}),
    ("container-0.5", "slimmable_container.nam", {"slimmable_size": 0.5}, {"submodel": 1}),
]


def _reference_python() -> Path:
    if not NAM_PYTHON.exists():
        message = (
            f"{NAM_PYTHON} is absent: `make .venv-nam/.installed` installs neural-amp-modeler "
            f"{NAM_VERSION} there (make test does)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return NAM_PYTHON


def _load(name: str, config: dict[str, Any] | None) -> EffectModel:
    return load(fixture_path("models", "nam", name), config=config)


def run_reference_jobs(python: Path, folder: Path, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Run ``jobs`` through the reference script under the package's own interpreter (in
    ``folder``, without this project on its path) and return its summary."""
    (folder / "jobs.json").write_text(json.dumps({"jobs": jobs}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(
        [str(python), str(SCRIPT), str(folder / "jobs.json")],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert done.returncode == 0, f"the reference render failed:\n{done.stderr[-4000:]}"
    summary: dict[str, Any] = json.loads((folder / "jobs.json.out").read_text())
    return summary


def _input(sample_rate: int) -> np.ndarray:
    """10 s of guitar at ``sample_rate``: the 5 s fixture (44.1 kHz) twice, resampled."""
    x = guitar(5.0, offset=0.0)[0].numpy()
    return resample(np.concatenate([x, x]), 44100, sample_rate)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every case rendered by the package in one subprocess: ``{case: (input, output)}`` and the summary."""
    python = _reference_python()
    folder = tmp_path_factory.mktemp("nam_reference")
    jobs, inputs = [], {}
    for case, name, config, extra in CASES:
        x = _input(_load(name, config).sample_rate)
        np.save(folder / f"{case}.in.npy", x)
        inputs[case] = x
        job = {"model": str(fixture_path("models", "nam", name)), "submodel": None, "slimming": None}
        job.update(extra, input=str(folder / f"{case}.in.npy"), output=str(folder / f"{case}.out.npy"))
        jobs.append(job)
    summary = run_reference_jobs(python, folder, jobs)
    outputs = {case: (inputs[case], np.load(folder / f"{case}.out.npy")) for case, *_ in CASES}
    return {"summary": summary, "outputs": outputs}


def test_the_package_runs_apart(reference: dict[str, Any]) -> None:
    summary = reference["summary"]
    assert summary["nam"] == NAM_VERSION
    assert summary["torch"].split("+")[0] == "2.13.0"
    assert summary["project_imported"] is False
    assert "nam" not in sys.modules  # this interpreter never imported the package
    by_case = dict(zip([c[0] for c in CASES], summary["jobs"]))
    assert by_case["wavenet-0.5.4"]["notes"] == ["0.5.x head keys renamed"]
    assert "condition_dsp attached" in by_case["wavenet-condition_dsp"]["notes"]
    assert by_case["container-0.0"]["class"] == "LSTM"


@pytest.mark.parametrize("kernel", ["inspect", "torch"])
@pytest.mark.parametrize(("case", "name", "config", "extra"), CASES, ids=[c[0] for c in CASES])
def test_render_matches_the_package(
    reference: dict[str, Any],
    kernel: str,
    case: str,
    name: str,
    config: dict[str, Any] | None,
    extra: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, ref = reference["outputs"][case]
    if kernel == "torch":
        monkeypatch.setattr(native, "library", lambda: None)
    model = _load(name, config)
    used = str(getattr(model.module, "render_kernel", "PyTorch"))  # what `inspect` prints
    if kernel == "torch" or name == "identity_linear_1.nam":
        assert used.startswith("PyTorch"), used
    else:
        assert used.startswith("compiled"), used
    y, start = render_excerpt(model, x, model.sample_rate)
    assert start["mode"] == "zero" and y.shape == (x.shape[0], 1)
    out = y[:, 0].astype(np.float64)
    assert ref.shape == out.shape and x.shape[0] >= 10 * model.sample_rate
    err = float(np.max(np.abs(out - ref)))
    esr = float(np.sum((out - ref) ** 2) / np.sum(ref**2))
    print(f"{case} [{used}]: max abs error {err:.3g}, ESR {esr:.3g}")
    assert err <= 1e-4, f"{case}: max abs error {err} (ESR {esr})"
    assert esr <= 1e-6, f"{case}: ESR {esr} (max abs error {err})"
    assert float(np.std(ref)) > 1e-3  # the package's output is not silence
