"""One render policy: ``python -m modelrunner render`` and a real Celery worker give the same samples.

A look-back model (the state-matching GRU), a look-back model with latency (SPTMod) and
an ordinary recurrent model are rendered by a worker, for an excerpt with look-back
context and one without; the CLI renders the stored files with the same knobs and
context, and every file must match sample for sample.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from django.conf import settings

from tests.conftest import wait_for
from tests.paths import REPO, fixture_path
from webmushra.models import Experiment, RenderJob
from webmushra.services import experiments, rendering, uploads

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PAPERS = REPO / "demo" / "papers" / "checkpoints"


def cli_render(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "modelrunner", "render", *args, "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
    )


def test_cli_and_worker_render_the_same_samples(researcher, excerpt_files, start_worker, tmp_path):
    exp = experiments.create_experiment(owner=researcher, title="Policy", sample_rate=44100)
    dry, ref = excerpt_files(seconds=0.6, offset=1.5, name="with")
    lb_dry, lb_ref = excerpt_files(seconds=0.5, offset=1.0, name="context")
    with_context = uploads.add_excerpt(
        experiment=exp, name="with", dry=dry, reference=ref, lookback_dry=lb_dry, lookback_reference=lb_ref
    )
    dry, ref = excerpt_files(seconds=0.6, offset=3.0, name="without")
    without = uploads.add_excerpt(experiment=exp, name="without", dry=dry, reference=ref)
    models = {
        "statematch": ([PAPERS / "statematch.safetensors"], {"gain": 0.6}),
        "sptmod": ([PAPERS / "sptmod.pt", "--config", PAPERS / "sptmod.json"], {"gain": 0.4}),
        "lstm": ([fixture_path("models", "coreaudioml", "ht1_lstm32.json")], {}),
    }
    conditions = {}
    for name, (files, knobs) in models.items():
        config = files[2] if len(files) > 1 else None
        ckpt = uploads.add_checkpoint(experiment=exp, name=name, file=files[0], config=config)
        conditions[name] = experiments.add_model_condition(experiment=exp, checkpoint=ckpt, label=name, knobs=knobs)

    rendering.start_render(experiment=exp)
    worker = start_worker()

    def ready() -> bool:
        exp.refresh_from_db()
        failed = RenderJob.objects.filter(experiment=exp, status=RenderJob.Status.FAILED).first()
        assert failed is None, f"job failed: {failed.error}\n{worker.log[-3000:]}"
        return exp.status == Experiment.Status.READY

    wait_for(ready, timeout=300, what="rendering by the worker")

    modes = set()
    for name, (files, knobs) in models.items():
        for excerpt in (with_context, without):
            job = RenderJob.objects.get(kind=RenderJob.Kind.MODEL, condition=conditions[name], excerpt=excerpt)
            args = [str(f) for f in files] + [excerpt.dry_file.path, "-o", str(tmp_path / f"{name}_{excerpt.pk}.wav")]
            args += [f"--param={k}={v}" for k, v in knobs.items()]
            if excerpt.lookback_dry_file:
                args += ["--lookback-dry", excerpt.lookback_dry_file.path]
                args += ["--lookback-reference", excerpt.lookback_reference_file.path]
            proc = cli_render(*args)
            assert proc.returncode == 0, proc.stderr
            cli, cli_rate = sf.read(tmp_path / f"{name}_{excerpt.pk}.wav", dtype="float32", always_2d=True)
            platform, platform_rate = sf.read(settings.MEDIA_ROOT / job.output_file, dtype="float32", always_2d=True)
            assert cli_rate == platform_rate == 44100
            assert cli.shape == platform.shape and np.abs(platform).max() > 1e-3
            assert np.array_equal(cli, platform), (name, excerpt.name, float(np.abs(cli - platform).max()))
            mode = job.report["start_state"]["mode"]
            assert f"(start: {mode})" in proc.stdout
            modes.add((name, mode))
    assert modes == {
        ("statematch", "lookback"),
        ("statematch", "zero-warmup"),
        ("sptmod", "lookback"),
        ("sptmod", "zero-warmup"),
        ("lstm", "zero"),
    }
