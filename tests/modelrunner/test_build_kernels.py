"""``python -m modelrunner build-kernels``: the render kernels built ahead of their first use.

An image builds one library per CPU level (``--portable``) in a stage with a compiler and
serves from a stage without one; a worker must then load the best build its CPU runs (and
never one for features it lacks), render the same samples as PyTorch, and, where no build
fits, fall back to PyTorch's kernels with a logged warning.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelrunner import native

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

#: For each level in ``LEVELS`` (comma separated; empty: the CPU as it is), pretends the CPU
#: has only that level's features, loads the kernels afresh, renders through the recurrent
#: model's fast path and PyTorch's and asserts they agree, and prints the kernels' reason
#: and vector width.
PROBE = """
import os, torch
from modelrunner import native
from modelrunner.architectures.recurrent import RecurrentModel
real = native._cpu_features
for level in os.environ.get("LEVELS", "").split(","):
    needs = {t: n for t, _, n in native.portable_targets()}.get(level)
    native._cpu_features = (lambda n=needs: n) if needs is not None else real
    native._tried, native._loaded, native._loaded_path = False, None, None
    m = RecurrentModel('LSTM', 4).eval()
    y, _ = m.fast_forward(torch.ones(1, 50))
    w, _ = m(torch.ones(1, 50))
    assert float((y - w).abs().max()) < 1e-5
    lib = native.library()
    print(level or 'this cpu', native.reason(), 'width', lib.rnn_vector_width() if lib is not None else 0)
"""


#: For each level in ``LEVELS``, as ``PROBE``: every cell (stacked, with knobs, hidden sizes
#: that are and are not a multiple of the vector width, 12 and 5 rows, so full register tiles
#: and the rows left over) and WaveNet layers (tanh, ReLU, gated) through the build for that
#: level, in chunkings of 1, 7 and 4096 frames, against the PyTorch forward: the recurrent
#: models within 1e-5, output and state, the WaveNets within 1e-5 as in test_formats_nam.
EXACT = """
import os, torch
from modelrunner import native
from modelrunner.architectures.nam import NamLayerArray, NamWaveNet
from modelrunner.architectures.recurrent import RecurrentModel
torch.set_num_threads(1)
def chunked(step, x, kn, chunk, state=None):
    outs = []
    for start in range(0, x.shape[1], chunk):
        y, state = step(x[:, start:start + chunk], kn, state)
        outs.append(y)
    return torch.cat(outs, dim=1), state
def parts(state):
    return list(state) if isinstance(state, tuple) else [state]
for level in os.environ["LEVELS"].split(","):
    native._cpu_features = lambda n={t: n for t, _, n in native.portable_targets()}[level]: n
    native._tried, native._loaded, native._loaded_path = False, None, None
    assert native.library() is not None and f"kernels-{level}-" in native.reason(), native.reason()
    worst = 0.0
    for unit, hidden, layers, knobs in [("LSTM", 32, 1, 0), ("LSTM", 20, 2, 2), ("GRU", 33, 1, 3), ("GRU", 7, 3, 1),
                                        ("RNN", 16, 1, 0), ("LSTM", 64, 1, 0)]:
        for rows in (12, 5):
            torch.manual_seed(hidden + layers)
            m = RecurrentModel(unit, hidden, layers, knobs).eval()
            x = 0.5 * torch.randn(rows, 3000)
            kn = torch.rand(rows, knobs) if knobs else None
            with torch.inference_mode():
                want, want_state = m(x, kn)
                for chunk in (1, 7, 4096):
                    n = 200 if chunk == 1 else 3000
                    ref, ref_state = (want, want_state) if n == 3000 else m(x[:, :n], kn)
                    got, got_state = chunked(m.fast_forward, x[:, :n], kn, chunk)
                    assert m._kernel() is not None
                    diffs = [float((got - ref).abs().max())]
                    diffs += [float((g - w).abs().max()) for g, w in zip(parts(got_state), parts(ref_state))]
                    assert max(diffs) <= 1e-5, (level, unit, hidden, layers, rows, chunk, diffs)
                    worst = max(worst, *diffs)
    torch.manual_seed(3)
    net = NamWaveNet([NamLayerArray(1, 1, 8, 3, [1, 2, 4, 8], "Tanh", False, 4, 1, False),
                      NamLayerArray(8, 1, 4, 2, [16, 1], "ReLU", True, 1, 1, True)], 0.3)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.4)
    net.eval()
    assert net.render_kernel == "compiled WaveNet kernel", net.render_kernel
    x = 0.5 * torch.randn(3, 3000)
    with torch.inference_mode():
        want, _ = net(x)
        for chunk in (1, 7, 4096):
            n = 500 if chunk == 1 else 3000
            got, _ = chunked(lambda a, k, s: net.fast_forward(a, k, s), x[:, :n], None, chunk)
            d = float((got - want[:, :n]).abs().max())
            assert d <= 1e-5, (level, "wavenet", chunk, d)
            worst = max(worst, d)
    print(level, "width", native.library().rnn_vector_width(), "worst", worst)
"""


def probe(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("MODELRUNNER_KERNELS_DIR", "MODELRUNNER_NATIVE")}
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=180
    )


def build(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelrunner", "build-kernels", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def portable(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The portable builds, made once for this module, and the command's result."""
    ahead = tmp_path_factory.mktemp("ahead") / "kernels"
    return ahead, build("--portable", "--into", str(ahead))


def test_portable_builds_load_without_a_compiler_best_level_first(
    portable: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    ahead, made = portable
    assert made.returncode == 0, made.stderr
    targets = [t for t, _, _ in native.portable_targets()]
    files = sorted(ahead.glob("kernels-*.so"))
    assert [line.split(": ", 1)[0] for line in made.stdout.splitlines()] == ["built"] * len(targets)
    assert [f.name for f in files] == sorted(native._portable_name(t, m) for t, m, _ in native.portable_targets())
    assert all(oct(f.stat().st_mode & 0o777) == "0o644" for f in files)
    again = build("--portable", "--into", str(ahead))
    assert again.returncode == 0 and again.stdout.count("up to date: ") == len(targets)

    # A serving container: no compiler, an empty cache, the builds made ahead.
    env = {"CC": "/nonexistent/cc", "MODELRUNNER_KERNELS_DIR": str(ahead), "MODELRUNNER_CACHE_DIR": str(tmp_path / "c")}
    features = native._cpu_features()
    best = next(t for t, _, needs in native.portable_targets() if needs <= features)
    run = probe(**env)
    assert run.returncode == 0, run.stderr
    assert f"compiled kernels in use (kernels-{best}-" in run.stdout, run.stdout
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").glob("*.so"))  # nothing compiled
    # A CPU with fewer features gets the build for its level, never one it cannot run: vector
    # widths by -march level (vec.h: 16 floats with AVX-512, 8 with AVX, else 4).
    widths = {"x86-64-v4": 16, "x86-64-v3": 8, "x86-64-v2": 4, "baseline": 4}
    levels = [t for t, _, needs in native.portable_targets() if needs <= features]
    run = probe(LEVELS=",".join(levels), **env)
    assert run.returncode == 0, run.stderr
    assert [line.split(" (")[0] for line in run.stdout.splitlines()] == [f"{t} compiled kernels in use" for t in levels]
    for line, level in zip(run.stdout.splitlines(), levels):
        assert f"(kernels-{level}-" in line and line.endswith(f"width {widths[level]}"), line


def test_every_level_renders_as_forward_in_any_chunking(
    portable: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """The portable builds (SSE with 4 floats per vector, AVX2 with 8, AVX-512 with 16 where
    this CPU has it) give PyTorch's forward, as the build for this CPU does (test_native)."""
    ahead, made = portable
    assert made.returncode == 0, made.stderr
    levels = [t for t, _, needs in native.portable_targets() if needs <= native._cpu_features()]
    env = {"CC": "/nonexistent/cc", "MODELRUNNER_KERNELS_DIR": str(ahead), "MODELRUNNER_CACHE_DIR": str(tmp_path / "c")}
    base = {k: v for k, v in os.environ.items() if k not in ("MODELRUNNER_KERNELS_DIR", "MODELRUNNER_NATIVE")}
    run = subprocess.run(
        [sys.executable, "-c", EXACT],
        cwd=ROOT,
        env={**base, **env, "LEVELS": ",".join(levels), "MODELRUNNER_RENDER_PATH": "compiled"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert [line.split(" width")[0] for line in run.stdout.splitlines()] == levels, run.stdout


def test_a_missing_or_untrusted_kernel_falls_back_to_pytorch_with_a_warning(
    portable: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"CC": "/nonexistent/cc", "MODELRUNNER_KERNELS_DIR": str(empty), "MODELRUNNER_CACHE_DIR": str(tmp_path / "c")}
    run = probe(**env)
    assert run.returncode == 0, run.stderr  # PyTorch renders (the probe's assertion held)
    assert "using PyTorch's" in run.stdout and run.stdout.endswith("width 0\n")
    assert "WARNING" in run.stderr or "using PyTorch's" in run.stderr
    assert f"none built for this CPU in {empty}" in run.stderr and "no compiler" in run.stderr

    for f in portable[0].glob("*.so"):
        (empty / f.name).write_bytes(f.read_bytes())
        (empty / f.name).chmod(0o664)  # another member of the group could replace it: never loaded
    run = probe(**env)
    assert run.returncode == 0 and "writable by others" in run.stdout and "using PyTorch's" in run.stdout, run.stdout


def test_build_for_this_cpu_is_what_the_renders_load_and_no_compiler_exits_2(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    made = build(MODELRUNNER_CACHE_DIR=str(cache))
    assert made.returncode == 0, made.stderr
    (built,) = cache.glob("kernels-*.so")
    assert made.stdout == f"built: {built}\n"
    stamp = built.stat().st_mtime_ns
    run = probe(MODELRUNNER_CACHE_DIR=str(cache))
    assert run.returncode == 0 and f"compiled kernels in use ({built.name}," in run.stdout, run.stdout + run.stderr
    assert built.stat().st_mtime_ns == stamp  # loaded, not rebuilt

    none = build(CC="/nonexistent/cc", MODELRUNNER_CACHE_DIR=str(tmp_path / "none"))
    assert none.returncode == 2 and none.stdout == ""
    assert none.stderr.strip() == (
        "modelrunner: error: cannot build the render kernels: no C compiler: '/nonexistent/cc' is not on PATH "
        "(install gcc, or set CC); renders will use PyTorch's"
    )
    assert not (tmp_path / "none").exists()
