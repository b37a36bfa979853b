from __future__ import annotations

import pytest

from webmushra import jobs
from webmushra.models import RenderJob
from webmushra.services import experiments, rendering, sessions


def render_inline(exp) -> None:
    """Run the render jobs in this process (the worker path is covered by tests/integration)."""
    rendering.start_render(experiment=exp)
    for kind in ("model", "item"):
        for job in RenderJob.objects.filter(experiment=exp, kind=kind):
            assert jobs.run_job(job.pk) == "done", RenderJob.objects.get(pk=job.pk).error
    exp.refresh_from_db()


@pytest.fixture
def rendered_experiment(db, build_experiment):
    def make(**kw):
        exp = build_experiment(**kw)
        render_inline(exp)
        return exp

    return make


@pytest.fixture
def open_experiment(rendered_experiment):
    def make(**kw):
        exp = rendered_experiment(**kw)
        return experiments.open_experiment(experiment=exp)

    return make


@pytest.fixture
def participant_at_trials(open_experiment):
    """An open experiment and a participant who consented and set the level."""

    def make(**kw):
        exp = open_experiment(**kw)
        p = sessions.start_participant(experiment=exp)
        p = sessions.give_consent(participant=p, agreed=True)
        p = sessions.set_level(participant=p, gain_db=0.0)
        return exp, p

    return make
