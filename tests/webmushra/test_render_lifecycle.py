"""An experiment can always move: failed renders leave it editable, rendering can be cancelled,
only what changed is rendered again, impossible settings are refused up front, and an
experiment can be deleted with its files. Jobs run in this process (the worker path is
covered by tests/integration)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.urls import reverse
from rest_framework.test import APIClient

from tests.paths import fixture_path
from webmushra import jobs
from webmushra.errors import ConflictError, ServiceError
from webmushra.models import Checkpoint, Condition, Excerpt, Experiment, Participant, RenderJob, Stimulus
from webmushra.services import accounts, experiments, rendering, uploads

CKPT = "ht1_lstm32.json"


def run_all(exp: Experiment) -> dict[int, str]:
    """Run every queued job (models first, then the items they release); job id -> outcome."""
    outcomes: dict[int, str] = {}
    for _ in range(4):
        queued = list(RenderJob.objects.filter(experiment=exp, status=RenderJob.Status.QUEUED).order_by("kind"))
        if not queued:
            break
        for job in queued:
            outcomes[job.pk] = jobs.run_job(job.pk)
    exp.refresh_from_db()
    return outcomes


def add_model(exp: Experiment, label: str, name: str = CKPT, **knobs: float) -> Condition:
    ckpt = uploads.add_checkpoint(experiment=exp, name=label, file=fixture_path("models", "coreaudioml", name))
    return experiments.add_model_condition(experiment=exp, checkpoint=ckpt, label=label, knobs=knobs)


def model_jobs(exp: Experiment, condition: Condition) -> list[RenderJob]:
    return list(RenderJob.objects.filter(experiment=exp, kind=RenderJob.Kind.MODEL, condition=condition))


def test_a_knob_outside_its_range_is_refused_when_the_condition_is_added(build_experiment, researcher):
    exp = build_experiment(n_excerpts=1, seconds=1.0, training_excerpt=False)
    ckpt = uploads.add_checkpoint(
        experiment=exp, name="TS9", file=fixture_path("models", "coreaudioml", "ts9_lstm20_gain.json")
    )
    assert ckpt.knob_names, "the fixture model has knobs"
    knob = ckpt.knob_names[0]
    before = exp.conditions.count()
    with pytest.raises(ServiceError, match=rf"{knob}.*1\.5.*\[0, 1\]"):
        experiments.add_model_condition(experiment=exp, checkpoint=ckpt, label="too hot", knobs={knob: 1.5})
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {accounts.api_token_for(user=researcher)}")
    r = api.post(
        f"/api/experiments/{exp.pk}/conditions/",
        {"checkpoint": ckpt.pk, "label": "too hot", "knobs": {knob: 1.5}},
        format="json",
    )
    assert r.status_code == 400 and "1.5" in r.json()["error"] and "[0, 1]" in r.json()["error"]
    assert exp.conditions.count() == before
    # In range is accepted.
    experiments.add_model_condition(experiment=exp, checkpoint=ckpt, label="just right", knobs={knob: 1.0})


def test_a_failed_cell_leaves_the_experiment_editable_and_only_what_changed_renders_again(
    build_experiment, client, researcher
):
    exp = build_experiment(n_excerpts=2, seconds=1.0, training_excerpt=False)
    good = exp.conditions.get(kind="model")
    bad = add_model(exp, "broken")
    # The stored checkpoint becomes unreadable (a disk error, a bad copy): its renders fail.
    Path(bad.checkpoint.file.path).write_bytes(b"{ not json")
    rendering.start_render(experiment=exp)
    outcomes = run_all(exp)
    assert sorted(outcomes.values()).count("failed") == 2
    assert {j.status for j in model_jobs(exp, good)} == {"done"}
    assert {j.status for j in model_jobs(exp, bad)} == {"failed"}
    # Not stranded: editable again, and the page says what failed and what to do.
    assert exp.status == Experiment.Status.DRAFT and exp.is_editable
    client.force_login(researcher)
    page = client.get(reverse("researcher:experiment", args=[exp.pk])).content.decode()
    assert 'id="failed-cells"' in page and "broken" in page and "Render what changed" in page

    kept = {j.pk: j.finished_at for j in model_jobs(exp, good)}
    mtimes = {j.pk: (Path(settings.MEDIA_ROOT) / j.output_file).stat().st_mtime_ns for j in model_jobs(exp, good)}
    experiments.remove_condition(condition=Condition.objects.get(pk=bad.pk))
    rendering.start_render(experiment=exp)
    queued = RenderJob.objects.filter(experiment=exp, status=RenderJob.Status.QUEUED)
    assert {j.kind for j in queued} == {"item"}, "removing a condition re-rendered a model"
    run_all(exp)
    assert exp.status == Experiment.Status.READY
    assert {j.pk: j.finished_at for j in model_jobs(exp, good)} == kept
    assert Stimulus.objects.filter(experiment=exp).count() == exp.conditions.count() * 2

    # Adding a checkpoint renders its cells only.
    third = add_model(exp, "third")
    exp.refresh_from_db()
    assert exp.status == Experiment.Status.DRAFT
    rendering.start_render(experiment=exp)
    new_model_jobs = RenderJob.objects.filter(experiment=exp, kind="model", status=RenderJob.Status.QUEUED)
    assert {j.condition_id for j in new_model_jobs} == {third.pk} and new_model_jobs.count() == 2
    run_all(exp)
    assert exp.status == Experiment.Status.READY
    assert {j.pk: j.finished_at for j in model_jobs(exp, good)} == kept
    assert {
        j.pk: (Path(settings.MEDIA_ROOT) / j.output_file).stat().st_mtime_ns for j in model_jobs(exp, good)
    } == mtimes
    # "force" renders everything again.
    rendering.start_render(experiment=exp, force=True)
    assert RenderJob.objects.filter(experiment=exp, kind="model", status="queued").count() == 4


def test_rendering_can_be_cancelled_and_resumed(build_experiment, client, researcher):
    exp = build_experiment(n_excerpts=2, seconds=1.0, training_excerpt=False)
    rendering.start_render(experiment=exp)
    running = rendering.claim_job(job_id=RenderJob.objects.filter(experiment=exp, kind="model").first().pk, worker="w")
    assert running is not None
    client.force_login(researcher)
    r = client.post(reverse("researcher:render_cancel", args=[exp.pk]))
    assert r.status_code == 302
    exp.refresh_from_db()
    assert exp.status == Experiment.Status.DRAFT
    assert set(RenderJob.objects.filter(experiment=exp).values_list("status", flat=True)) == {"canceled"}
    # The running job stops at its next heartbeat; a queued message finds nothing to claim.
    with pytest.raises(rendering.JobLost):
        rendering.heartbeat(claim=running, progress=0.5)
    assert jobs.run_job(RenderJob.objects.filter(experiment=exp).last().pk) == "skipped"
    with pytest.raises(ConflictError, match="nothing to cancel"):
        rendering.cancel_render(experiment=exp)
    rendering.start_render(experiment=exp)
    run_all(exp)
    assert exp.status == Experiment.Status.READY


def test_a_cancelled_model_job_can_be_retried_alone(build_experiment):
    exp = build_experiment(n_excerpts=1, seconds=1.0, training_excerpt=False)
    rendering.start_render(experiment=exp)
    rendering.cancel_render(experiment=exp)
    job = RenderJob.objects.get(experiment=exp, kind="model")
    rendering.retry_job(job=job)
    assert RenderJob.objects.get(experiment=exp, kind="item").status == RenderJob.Status.PENDING
    run_all(exp)
    assert exp.status == Experiment.Status.READY


def test_an_item_that_would_clip_after_resampling_is_turned_down_as_a_whole(researcher, excerpt_files, monkeypatch):
    import soundfile as sf

    from modelrunner import loudness

    # The loudness alignment keeps sample peaks below its ceiling at the excerpt's rate (tested
    # on its own); here it passes the signals through unchanged, so what reaches the resampler
    # is the excerpt as uploaded.
    real_align = loudness.align_item

    def unchanged(reference, conditions, sample_rate, **kw):
        _, _, report = real_align(reference, conditions, sample_rate, **kw)
        return reference, conditions, report

    monkeypatch.setattr(loudness, "align_item", unchanged)

    exp = experiments.create_experiment(owner=researcher, title="Hot", sample_rate=48000, config={"training": False})
    # 44.1 kHz material whose samples stay below -1 dBFS (the alignment's ceiling) but whose
    # waveform between them does not: a quarter-rate tone sampled at ±45° (true peak +3 dB).
    # Resampled to 48 kHz it overshoots full scale.
    dry, ref = excerpt_files(seconds=1.0, name="hot")
    audio, sr = sf.read(ref, dtype="float32", always_2d=True)
    pattern = np.resize(np.array([1, 1, -1, -1], dtype=np.float32), audio.shape[0])
    sf.write(ref, (0.85 * pattern)[:, None], sr, subtype="FLOAT")
    uploads.add_excerpt(experiment=exp, name="hot", dry=dry, reference=ref)
    add_model(exp, "m")
    rendering.start_render(experiment=exp)
    outcomes = run_all(exp)
    assert set(outcomes.values()) == {"done"}, RenderJob.objects.filter(experiment=exp).values_list("error")
    assert exp.status == Experiment.Status.READY
    stimuli = list(Stimulus.objects.filter(experiment=exp))
    headroom = {s.render_info["headroom_gain_db"] for s in stimuli}
    assert len(headroom) == 1 and headroom.pop() < 0, "one gain for the whole item, recorded"
    for s in stimuli:
        samples, _ = sf.read(Path(settings.MEDIA_ROOT) / s.file, dtype="float32")
        assert float(np.max(np.abs(samples))) <= jobs.HEADROOM_PEAK + 1e-6


def test_changing_the_loudness_target_prepares_the_items_again(rendered_experiment):
    exp = rendered_experiment(n_excerpts=1, seconds=1.0, training_excerpt=False)
    assert exp.status == Experiment.Status.READY
    experiments.update_experiment_settings(experiment=exp, loudness_target_lufs=-30.0)
    exp.refresh_from_db()
    assert exp.status == Experiment.Status.DRAFT
    rendering.start_render(experiment=exp)
    assert list(RenderJob.objects.filter(experiment=exp, status="queued").values_list("kind", flat=True)) == ["item"]
    run_all(exp)
    assert exp.status == Experiment.Status.READY
    hidden = Stimulus.objects.get(experiment=exp, condition__kind="hidden_reference")
    assert hidden.loudness_lufs == pytest.approx(-30.0, abs=0.5)


def test_an_experiment_is_deleted_with_its_files(client, researcher, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0)
    media = Path(settings.MEDIA_ROOT)
    files = [Path(x.dry_file.path) for x in Excerpt.objects.filter(experiment=exp)]
    files += [Path(c.file.path) for c in Checkpoint.objects.filter(experiment=exp)]
    files += [media / s.file for s in Stimulus.objects.filter(experiment=exp)]
    assert files and all(f.is_file() for f in files)
    client.force_login(researcher)
    url = reverse("researcher:experiment_delete", args=[exp.pk])
    # Open: refused, with the next step.
    r = client.post(url, {"confirm_title": exp.title}, follow=True)
    assert "close the experiment before deleting it" in r.content.decode()
    experiments.close_experiment(experiment=exp)
    # A wrong confirmation deletes nothing.
    client.post(url, {"confirm_title": "nope"})
    assert Experiment.objects.filter(pk=exp.pk).exists()
    r = client.post(url, {"confirm_title": exp.title})
    assert r.status_code == 302 and r["Location"] == reverse("researcher:experiments")
    assert not Experiment.objects.filter(pk=exp.pk).exists()
    assert not any(f.exists() for f in files)
    assert not (media / "stimuli" / f"e{exp.pk}").exists()
    assert not Participant.objects.filter(pk=p.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_job_in_a_long_silent_step_keeps_its_heartbeat_and_completes_once(build_experiment, settings, monkeypatch):
    from modelrunner import metrics

    # A step that reports no progress (the objective metrics) outlasts the stale limit; the
    # job's own heartbeat thread keeps it alive, and the reaper leaves it alone.
    settings.RENDER_HEARTBEAT_SECONDS = 0.1
    exp = build_experiment(n_excerpts=1, seconds=1.0, training_excerpt=False)
    rendering.start_render(experiment=exp)
    job = RenderJob.objects.get(experiment=exp, kind="model")
    real = metrics.compute_all
    reaped: list[dict] = []

    def slow_metrics(*args, **kwargs):
        time.sleep(1.2)
        settings.RENDER_STALE_SECONDS = 0.6
        reaped.append(rendering.reap_stale_jobs())
        settings.RENDER_STALE_SECONDS = 120
        return real(*args, **kwargs)

    monkeypatch.setattr(metrics, "compute_all", slow_metrics)
    assert jobs.run_job(job.pk) == "done"
    assert reaped and reaped[0]["requeued"] == 0 and reaped[0]["failed"] == 0
    job.refresh_from_db()
    assert job.status == "done" and job.attempts == 1
