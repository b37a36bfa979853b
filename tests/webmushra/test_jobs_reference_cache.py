"""A render worker prepares an excerpt's device recording for the objective metrics once and
reuses it in the model jobs of the excerpt's other conditions: each job's metrics are those of
its stored render against the recording, computed without the cache."""

from __future__ import annotations

import numpy as np
import pytest

from modelrunner import metrics
from webmushra import jobs
from webmushra.models import RenderJob
from webmushra.services import rendering


@pytest.fixture
def fresh_cache():
    jobs._reference_cache.cache_clear()
    yield
    jobs._reference_cache.cache_clear()


def test_model_jobs_of_an_excerpt_share_its_prepared_recording(build_experiment, fresh_cache, monkeypatch):
    exp = build_experiment(
        n_excerpts=2, seconds=1.0, checkpoints=("ht1_lstm32.json", "ts9_lstm20_gain.json"), training_excerpt=False
    )
    prepared: list[metrics.PreparedReference] = []
    real_prepare = metrics.prepare_reference

    def counted(*args, **kwargs):
        prepared.append(real_prepare(*args, **kwargs))
        return prepared[-1]

    monkeypatch.setattr(metrics, "prepare_reference", counted)
    rendering.start_render(experiment=exp)
    # The worker's order: the rows by id, the conditions of an excerpt one after the other.
    model_jobs = list(RenderJob.objects.filter(experiment=exp, kind=RenderJob.Kind.MODEL).order_by("id"))
    assert len(model_jobs) == 4 and [j.excerpt_id for j in model_jobs] == sorted(j.excerpt_id for j in model_jobs)
    for job in model_jobs:
        assert jobs.run_job(job.pk) == "done"

    cache = jobs._reference_cache()
    assert (cache.misses, cache.hits) == (2, 2) and len(prepared) == 2
    for job in model_jobs:
        job.refresh_from_db()
        output, sr = jobs._read_stored(job.output_file)
        reference, _ = jobs._read_stored(job.excerpt.reference_file.name)
        n = min(output.shape[0], reference.shape[0])
        expected = metrics.compute_all(output[:n].mean(axis=1), reference[:n].mean(axis=1), sr)
        got = job.report["metrics"]
        assert set(got) == set(expected)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-9, abs=0.0), (job.pk, key)
    # the two excerpts' recordings differ, and so do their models' metrics
    a, b = (j.report["metrics"]["mr_stft"] for j in model_jobs[::2])
    assert not np.isclose(a, b, rtol=1e-6)
