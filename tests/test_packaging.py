"""``pyproject.toml`` installs the science packages (modelrunner, evaluation) without Django.

The fast checks read the declarations and build a wheel; the integration test installs
into a clean virtual environment (no system site-packages, so a missing dependency shows)
the way the Makefile does (torch first, exactly pinned), then imports and renders from a
folder outside the checkout. It takes one to two minutes.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.paths import REPO, fixture_path

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
SCIENCE = ("modelrunner", "evaluation")
#: Never copied into a build: caches and local state.
_SKIP = shutil.ignore_patterns(".venv", "var", ".git", "*cache*", "__pycache__", "build", "*.egg-info", "node_modules")


def _requirements(lines: list[str]) -> dict[str, str]:
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): str(r) for r in reqs}


def _file_requirements(path: Path) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("-")]


def _imported_top_levels(package: str) -> set[str]:
    """Top-level names of every absolute import in ``package``, function-level ones included."""
    names = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_requirements_txt_repeats_the_declared_dependencies() -> None:
    declared = _requirements(PROJECT["dependencies"] + PROJECT["optional-dependencies"]["web"])
    assert _requirements(_file_requirements(REPO / "requirements.txt")) == declared


def test_science_packages_import_only_declared_distributions() -> None:
    core = set(_requirements(PROJECT["dependencies"]))
    web = set(_requirements(PROJECT["optional-dependencies"]["web"]))
    owners = packages_distributions()
    for package in SCIENCE:
        third_party = _imported_top_levels(package) - set(sys.stdlib_module_names) - set(SCIENCE)
        for name in sorted(third_party):
            dists = {canonicalize_name(d) for d in owners.get(name, [])}
            assert dists, f"{package} imports {name!r}, which no installed distribution provides"
            assert dists & core, f"{package} imports {name!r} ({', '.join(dists)}), not in [project].dependencies"
            assert not dists & web, f"{package} imports {name!r}, a dependency of the web app only"


@pytest.mark.slow
def test_wheel_holds_the_science_packages_and_the_kernel_sources(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=_SKIP)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == set(SCIENCE)
    for source in ("rnn.c", "wavenet.c", "vec.h", "api.h"):
        assert f"modelrunner/kernels/{source}" in names
    packaged = {n for n in names if n.endswith(".py")}
    for package in SCIENCE:
        for path in (REPO / package).rglob("*.py"):
            assert path.relative_to(REPO).as_posix() in packaged
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert "torch==2.13.0" in requires
    django = [r for r in requires if r.lower().startswith("django")]
    assert django and all('extra == "web"' in r for r in django)  # Django comes with the web extra only


@pytest.mark.integration
def test_clean_venv_installs_imports_and_renders_without_django(tmp_path: Path) -> None:
    model = fixture_path("models", "coreaudioml", "ht1_lstm32.json")
    dry = fixture_path("audio", "guitar_example_44k.wav")
    src, venv, outside = tmp_path / "src", tmp_path / "venv", tmp_path / "elsewhere"
    shutil.copytree(REPO, src, ignore=_SKIP)
    outside.mkdir()
    base = getattr(sys, "_base_executable", sys.executable)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE")}
    env["MODELRUNNER_CACHE_DIR"] = str(tmp_path / "kernels")  # the kernels are compiled from the installed sources

    def run(*cmd: str | Path, timeout: float = 600) -> str:
        proc = subprocess.run(
            [str(c) for c in cmd], cwd=outside, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    run(base, "-m", "venv", venv)
    py = venv / "bin" / "python"
    # torch first and exactly pinned, as the Makefile does. --no-compile: no .pyc for every module
    # of every package at install time (three quarters of torch's install, 19 of 26 s here);
    # Python compiles what is imported when it is imported.
    run(py, "-m", "pip", "install", "-q", "--no-compile", "torch==2.13.0")
    run(py, "-m", "pip", "install", "-q", "--no-compile", src)
    out = run(
        py,
        "-c",
        "import importlib.util as u, sys, modelrunner, evaluation\n"
        "from modelrunner import native\n"
        "from evaluation import analyse\n"
        "from evaluation.simulate import simulate_ratings\n"
        "assert analyse(simulate_ratings(n_participants=6, n_items=2)).conditions\n"
        "print(modelrunner.__file__, evaluation.__file__, native.reason())\n"
        "web = ('django', 'celery', 'rest_framework', 'webmushra', 'config')\n"
        "print({m: u.find_spec(m) is not None for m in web})\n",
    )
    assert str(venv) in out and str(REPO) not in out and "compiled kernels in use" in out
    assert "{'django': False, 'celery': False, 'rest_framework': False, 'webmushra': False, 'config': False}" in out
    out = run(venv / "bin" / "modelrunner", "render", model, dry, "-o", outside / "out.wav", "--no-progress")
    assert "44100 Hz float32" in out and "(start: zero)" in out and (outside / "out.wav").stat().st_size > 1000
