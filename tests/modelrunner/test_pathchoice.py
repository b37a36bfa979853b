"""Choosing the render path (modelrunner.pathchoice): measured once, kept, forced, never the slower.

No test here is timed: speeds are injected (a fake measurement, or a fake clock that
charges each path a set cost); the real figures are printed by ``bench/bench_paths.py``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest
import torch

from modelrunner import native, pathchoice
from modelrunner.architectures.nam import NamLayerArray, NamWaveNet
from modelrunner.architectures.recurrent import RecurrentModel
from modelrunner.cli import main
from modelrunner.formats import load
from modelrunner.model import EffectModel
from modelrunner.pathchoice import COMPILED, PYTORCH, Measurement
from modelrunner.render import render_batch
from tests.modelrunner._helpers import guitar, run_chunked
from tests.paths import REPO, fixture_path

torch.set_num_threads(1)


@pytest.fixture
def auto(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Any:
    """The measured choice, kept under ``tmp_path``, nothing decided in this process yet."""
    assert native.library() is not None, native.reason()
    monkeypatch.setenv(pathchoice.ENV, "auto")
    monkeypatch.setenv("MODELRUNNER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(pathchoice, "_memo", {})
    return tmp_path


def fake(compiled_fps: float, pytorch_fps: float, difference: float = 0.0) -> Measurement:
    return Measurement(
        compiled_fps, pytorch_fps, difference, 0.5, "Test CPU", "2025-01-02 03:04 UTC", "CPU time", 1, 5, 0.8
    )


def counting(monkeypatch: pytest.MonkeyPatch, result: Measurement) -> list[object]:
    """Replace ``measure`` with one returning ``result``; the list collects the modules measured."""
    calls: list[object] = []

    def measure(module: object) -> Measurement:
        calls.append(module)
        return result

    monkeypatch.setattr(pathchoice, "measure", measure)
    return calls


def lstm(hidden: int = 8, layers: int = 1, knobs: int = 0, seed: int = 0, unit: str = "LSTM") -> RecurrentModel:
    torch.manual_seed(seed)
    return RecurrentModel(unit, hidden, layers, knobs).eval()


def wavenet(channels: int = 4, dilations: tuple[int, ...] = (1, 2, 4), act: str = "Tanh", seed: int = 0) -> NamWaveNet:
    torch.manual_seed(seed)
    arrays = [NamLayerArray(1, 1, channels, 3, list(dilations), act, False, 1, 1, True)]
    return NamWaveNet(arrays, 0.5).eval()


def test_decision_is_kept_and_reused(auto, monkeypatch):
    calls = counting(monkeypatch, fake(3e6, 1e6))
    first = lstm(8)
    assert first.render_choice.compiled and len(calls) == 1
    x = 0.3 * torch.randn(2, 700)
    with torch.inference_mode():
        first.fast_forward(x)
        first.fast_forward(x[:, :5])
    assert first.batch_rows == 4 and first.render_kernel == "compiled recurrent kernel"
    # The same sizes with other weights: the decision in memory.
    assert lstm(8, seed=1).render_choice == first.render_choice and len(calls) == 1
    # As in a new process: nothing in memory, the file beside the kernels is read.
    monkeypatch.setattr(pathchoice, "_memo", {})
    assert lstm(8, seed=2).render_choice == first.render_choice and len(calls) == 1
    kept = list((auto / f"{native.library_path().stem}.paths").glob("*.json"))
    assert len(kept) == 1
    data = json.loads(kept[0].read_text())
    assert data["path"] == COMPILED and data["measurement"]["compiled_fps"] == 3e6
    assert data["key"]["sizes"] == {"cell": "LSTM", "inputs": 1, "hidden": 8, "layers": 1}
    assert data["key"]["threads"] == 1 and data["key"]["torch"] == torch.__version__
    # Other sizes are measured.
    assert lstm(9).render_choice.compiled and len(calls) == 2


@pytest.mark.slow
def test_another_process_reads_the_kept_decision(auto, monkeypatch):
    counting(monkeypatch, fake(1e6, 2e6))
    assert lstm(6).render_choice.path == PYTORCH
    lib = native.library_path()
    shutil.copy(lib, auto / lib.name)  # the same build, so the other process need not compile
    code = (
        "from modelrunner import pathchoice\n"
        "from modelrunner.architectures.recurrent import RecurrentModel\n"
        "def refuse(module):\n"
        "    raise AssertionError('measured again')\n"
        "pathchoice.measure = refuse\n"
        "print(RecurrentModel('LSTM', 6).render_kernel)\n"
    )
    env = {**os.environ, "MODELRUNNER_CACHE_DIR": str(auto), pathchoice.ENV: "auto", "PYTHONPATH": str(REPO)}
    env.pop("OMP_NUM_THREADS", None)
    code = "import torch; torch.set_num_threads(1)\n" + code
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "PyTorch (faster here)"


def test_a_forced_path_wins_over_the_measurement(auto, monkeypatch):
    calls = counting(monkeypatch, fake(1e6, 3e6))  # PyTorch measured faster
    monkeypatch.setenv(pathchoice.ENV, "compiled")
    model = lstm(12)
    choice = model.render_choice
    assert choice.compiled and choice.reason == "forced by MODELRUNNER_RENDER_PATH=compiled" and not calls
    assert choice.describe(44100) == "compiled: forced by MODELRUNNER_RENDER_PATH=compiled"
    counting(monkeypatch, fake(3e6, 1e6))  # compiled measured faster
    monkeypatch.setenv(pathchoice.ENV, "pytorch")  # takes effect at once, on the same module
    assert model.render_kernel == "PyTorch (forced by MODELRUNNER_RENDER_PATH=pytorch)"
    x = 0.5 * torch.randn(3, 2000)
    with torch.inference_mode():
        rendered, _ = model.fast_forward(x)
        reference, _ = model(x)
        kernel, _ = model.path_run(COMPILED, x, None)
    assert torch.equal(rendered, reference)  # PyTorch's path itself ran
    assert not torch.equal(kernel, reference)  # (the kernel's rounding differs)
    assert model.batch_rows == 24 and model.batch_chunk_budget == 1 << 14
    monkeypatch.setenv(pathchoice.ENV, "fastest")
    with pytest.raises(ValueError, match="MODELRUNNER_RENDER_PATH must be auto, compiled or pytorch, got 'fastest'"):
        _ = lstm(13).render_choice


@pytest.mark.slow
def test_modelrunner_native_0_means_never_compiled_whatever_the_setting():
    proc = subprocess.run(
        [sys.executable, "-m", "modelrunner", "inspect", str(fixture_path("models", "nam", "lstm_h3.nam")), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "MODELRUNNER_NATIVE": "0", pathchoice.ENV: "compiled"},
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["render_path"] == {"path": PYTORCH, "why": "PyTorch: forced by MODELRUNNER_NATIVE=0", "measured": None}


@pytest.mark.parametrize(
    ("compiled", "pytorch", "difference", "want", "why"),
    [
        (1.0e6, 1.6e6, 0.0, PYTORCH, "PyTorch: faster here (33.3x real time vs compiled 20.8x real time), measured on"),
        (1.05e6, 1.0e6, 0.0, PYTORCH, "PyTorch: the compiled kernel was not 10% faster here (20.8x real time vs"),
        (1.2e6, 1.0e6, 0.0, COMPILED, "compiled: 25.0x real time vs PyTorch 20.8x real time, measured on Test CPU"),
        (5.0e6, 1.0e6, 1e-3, PYTORCH, "PyTorch: the compiled output differed by 1.0e-03 (max abs difference"),
    ],
)
def test_the_slower_path_is_never_chosen(auto, monkeypatch, compiled, pytorch, difference, want, why):
    counting(monkeypatch, fake(compiled, pytorch, difference))
    net = wavenet()
    choice = net.render_choice
    assert choice.path == want
    assert choice.describe(48000).startswith(why)
    assert net.render_kernel == ("compiled WaveNet kernel" if want == COMPILED else f"PyTorch ({choice.short()})")
    x = guitar(0.1)
    with torch.inference_mode():
        rendered, _ = net.fast_forward(x)
        chosen, _ = net.path_run(want, x, None)
    assert torch.equal(rendered, chosen)


class Charged:
    """A module whose paths cost ``cost[path]`` per frame on a fake clock (and may be wrong by ``error``)."""

    def __init__(self, module: NamWaveNet, cost: dict[str, float], error: float = 0.0) -> None:
        self.module, self.cost, self.error, self.now = module, cost, error, 0.0

    def path_sizes(self) -> dict[str, Any]:
        return self.module.path_sizes()

    def path_plan(self, path: str) -> tuple[int, int]:
        return self.module.path_plan(path)

    def path_run(self, path: str, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        self.now += self.cost[path] * x.numel()
        y, state = self.module.path_run(path, x, state)
        return (y + self.error if path == COMPILED else y), state


@pytest.mark.parametrize(
    ("compiled_cost", "error", "want"), [(3.0, 0.0, PYTORCH), (1.0, 0.0, COMPILED), (1.0, 1e-3, PYTORCH)]
)
def test_measure_times_both_paths_and_picks_the_faster(monkeypatch, caplog, compiled_cost, error, want):
    module = Charged(wavenet(), {COMPILED: compiled_cost, PYTORCH: 2.0}, error)
    monkeypatch.setattr(pathchoice, "clock", lambda: ("fake clock", lambda: module.now))
    monkeypatch.setattr(pathchoice, "MEASURE_FRAMES", 2000)
    with caplog.at_level(logging.INFO, logger="modelrunner.pathchoice"):
        m = pathchoice._measure_logged(module, pathchoice.decision_key(module))
    assert m.compiled_fps == pytest.approx(1 / compiled_cost) and m.pytorch_fps == pytest.approx(0.5)
    assert m.repeats == pathchoice.REPEATS and m.clock == "fake clock"
    assert m.path() == want
    assert "measured in" in caplog.text and f"-> {want}" in caplog.text
    assert ("differs from PyTorch's" in caplog.text) == (error > 0)


def test_measurement_stops_after_its_time_limit(monkeypatch):
    module = Charged(wavenet(), {COMPILED: 1.0, PYTORCH: 1.0})
    monkeypatch.setattr(pathchoice, "clock", lambda: ("fake clock", lambda: module.now))
    monkeypatch.setattr(pathchoice, "MEASURE_FRAMES", 2000)
    monkeypatch.setattr(pathchoice, "TIME_LIMIT", 0.0)
    m = pathchoice.measure(module)
    assert m.repeats == 1 and m.frames == 2000


def test_a_small_model_is_timed_on_more_noise(monkeypatch):
    # 2000 frames at 1e-7 s each take 0.2 ms: the noise grows to MAX_SCALE times (0.05 s needs 250).
    module = Charged(wavenet(), {COMPILED: 1e-7, PYTORCH: 2e-7})
    monkeypatch.setattr(pathchoice, "clock", lambda: ("fake clock", lambda: module.now))
    monkeypatch.setattr(pathchoice, "MEASURE_FRAMES", 2000)
    m = pathchoice.measure(module)
    assert m.frames == pathchoice.MAX_SCALE * 2000 and m.repeats == pathchoice.REPEATS
    assert m.compiled_fps == pytest.approx(1e7) and m.path() == COMPILED


def test_the_key_changes_when_the_sizes_do():
    def key(module: Any) -> str:
        return json.dumps(pathchoice.decision_key(module), sort_keys=True)

    base = key(lstm(8))
    assert key(lstm(8, seed=3)) == base  # weights do not matter
    others = [lstm(16), lstm(8, layers=2), lstm(8, knobs=1), lstm(8, unit="GRU")]
    assert len({base, *map(key, others)}) == 5
    net = key(wavenet())
    assert key(wavenet(seed=4)) == net
    variants = [wavenet(channels=8), wavenet(dilations=(1, 2, 8)), wavenet(act="ReLU"), wavenet(dilations=(1, 2))]
    assert len({net, *map(key, variants)}) == 5
    assert json.loads(net)["sizes"]["receptive_field"] == 1 + 2 * (1 + 2 + 4)
    torch.set_num_threads(2)
    try:
        assert key(lstm(8)) != base
    finally:
        torch.set_num_threads(1)


#: Fixtures with a compiled path: (file, knobs).
FIXTURES = [
    ("coreaudioml/ht1_lstm32.json", None),
    ("coreaudioml/ts9_lstm20_gain.json", {"p1": 0.8}),
    ("nam/lstm_h3.nam", None),
    ("nam/wavenet_tiny_v054.nam", None),
    ("nam/wavenet_condition_dsp.nam", None),
    ("nam/slimmable_wavenet.nam", None),
]


@pytest.mark.parametrize(("name", "knobs"), FIXTURES, ids=[f[0] for f in FIXTURES])
def test_both_paths_render_the_same_samples(monkeypatch, name, knobs):
    """Criterion of test_native.test_real_model_is_as_close_to_float64_as_torch_float32: a float64
    forward pass is the exact answer, and neither path strays from it much further than the other."""
    model = load(fixture_path("models", *name.split("/")))
    x = guitar(1.5)
    outs = {}
    for path in (COMPILED, PYTORCH):
        monkeypatch.setenv(pathchoice.ENV, path)
        assert model.module.render_choice.path == path
        outs[path] = run_chunked(model, x, [4096], knobs, fast=True).double()  # what renders call
    with torch.inference_mode():
        exact, _ = copy.deepcopy(model.module).double()(x.double(), model.knob_tensor(knobs, 1).double())
    err = {p: float((outs[p] - exact).abs().max()) for p in outs}
    assert err[COMPILED] <= 3 * err[PYTORCH] + 1e-7 and err[PYTORCH] <= 3 * err[COMPILED] + 1e-7, err
    peak = float(exact.abs().max())
    difference = float((outs[COMPILED] - outs[PYTORCH]).abs().max())
    assert 0.0 < difference <= 2e-5 * max(1.0, peak), (difference, peak)  # different kernels ran, and agree


def test_the_chooser_checks_the_paths_agree_on_a_real_model(auto, monkeypatch):
    model = load(fixture_path("models", "nam", "wavenet_tiny_v054.nam"))
    monkeypatch.setattr(pathchoice, "MEASURE_FRAMES", 4000)
    monkeypatch.setattr(pathchoice, "REPEATS", 2)
    m = pathchoice.measure(model.module)
    assert m.agrees and 0.0 < m.max_difference <= 1e-5 and m.peak > 0.01
    assert m.compiled_fps > 0 and m.pytorch_fps > 0 and m.repeats == 2 and m.clock == "CPU time"
    counting(monkeypatch, m)
    assert model.module.render_choice.path == m.path()


def test_inspect_says_which_path_renders_and_why(auto, monkeypatch, capsys):
    counting(monkeypatch, fake(44100 * 52.0, 44100 * 20.0))
    path = str(fixture_path("models", "coreaudioml", "ht1_lstm32.json"))
    assert main(["inspect", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["render_kernel"] == "compiled recurrent kernel" and info["render_path"]["path"] == COMPILED
    assert info["render_path"]["why"] == (
        "compiled: 52.0x real time vs PyTorch 20.0x real time, measured on Test CPU (1 thread, CPU time) "
        "at 2025-01-02 03:04 UTC"
    )
    assert info["render_path"]["measured"]["pytorch_realtime"] == pytest.approx(20.0)
    assert main(["inspect", str(fixture_path("models", "lightning", "pedalnet.ckpt"))]) == 0
    assert "render path      PyTorch: no compiled kernel for this architecture" in capsys.readouterr().out


def test_render_report_records_the_path(monkeypatch):
    model = EffectModel(lstm(10), 44100, [], [], True, 1, "native", "LSTM", 0)
    x = guitar(0.3)[0].numpy()
    monkeypatch.setenv(pathchoice.ENV, "pytorch")
    _, report = render_batch(model, [x], 44100, with_report=True)
    assert report.kernel == "PyTorch (forced by MODELRUNNER_RENDER_PATH=pytorch)"
