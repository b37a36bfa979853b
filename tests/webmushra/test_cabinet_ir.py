"""A model condition heard through a cabinet impulse response: attached and removed over HTTP (owner,
model conditions and editable experiments only), rendered after the model, recorded with the stimulus."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from modelrunner import metrics, policy
from modelrunner.formats import load
from modelrunner.render import resample
from tests.paths import fixture_path
from tests.webmushra.conftest import render_inline
from webmushra import jobs
from webmushra.models import Condition, ConditionKind, Experiment, RenderJob, Stimulus
from webmushra.services import accounts, cabinet, rendering

pytestmark = pytest.mark.django_db


def cab_ir(frames: int = 1200, seed: int = 3) -> np.ndarray:
    """A cabinet-like IR: 10 samples of delay, then decaying noise (about 5 ms)."""
    rng = np.random.default_rng(seed)
    h = rng.standard_normal(frames) * np.exp(-np.arange(frames) / 220.0)
    h[:10] = 0.0
    return (0.3 * h).astype(np.float32)


def _wav_bytes(audio: np.ndarray, rate: int, subtype: str = "FLOAT") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, subtype=subtype, format="WAV")
    return buf.getvalue()


def ir_upload(name: str = "V30 SM57.wav", audio: np.ndarray | None = None, rate: int = 44100) -> SimpleUploadedFile:
    """A 24-bit WAV upload of ``audio`` (default: ``cab_ir()``) under the name its owner gave it."""
    return SimpleUploadedFile(name, _wav_bytes(cab_ir() if audio is None else audio, rate, "PCM_24"))


def token_client(user) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {accounts.api_token_for(user=user)}")
    return api


def stored_uploads(media: Path) -> list[Path]:
    root = Path(media) / "uploads"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_attach_and_remove_over_the_api_owner_model_conditions_and_editable_only(
    build_experiment, researcher, django_user_model, settings, django_capture_on_commit_callbacks
):
    exp = build_experiment(n_excerpts=1, seconds=1.0, training_excerpt=False)
    model = exp.conditions.get(kind=ConditionKind.MODEL)
    reference = exp.conditions.get(kind=ConditionKind.HIDDEN_REFERENCE)
    url = f"/api/experiments/{exp.pk}/conditions/{model.pk}/ir/"
    api = token_client(researcher)
    before = set(stored_uploads(settings.MEDIA_ROOT))

    # Someone else's experiment does not exist for them.
    other = token_client(django_user_model.objects.create_user("other", "o@example.org", "another-password-2"))
    assert other.put(url, {"file": ir_upload()}, format="multipart").status_code == 404
    assert other.delete(url).status_code == 404

    # A bad file is refused with its own name and leaves nothing stored.
    nan = np.where(np.arange(200) == 7, np.nan, 0.1).astype(np.float32)
    bad = SimpleUploadedFile("broken.wav", _wav_bytes(nan, 44100))
    r = api.put(url, {"file": bad}, format="multipart")
    assert r.status_code == 400 and r.json()["error"] == "ir: broken.wav: contains NaN or infinite samples"
    r = api.put(url, {"file": SimpleUploadedFile("notes.txt", b"not audio")}, format="multipart")
    assert r.status_code == 400 and "notes.txt: an impulse response must be a WAV or FLAC file" in r.json()["error"]
    assert set(stored_uploads(settings.MEDIA_ROOT)) == before
    model.refresh_from_db()
    assert not model.ir_file and model.ir_info == {}

    # Not a model condition: a clear 400.
    r = api.put(f"/api/experiments/{exp.pk}/conditions/{reference.pk}/ir/", {"file": ir_upload()}, format="multipart")
    assert r.status_code == 400
    assert r.json()["error"] == (
        "ir: 'Hidden reference' is not a model condition (hidden reference); "
        "a cabinet impulse response applies to model conditions only"
    )

    # The owner attaches one: its real name, rate, length, channels and hash are recorded and answered.
    upload = ir_upload()
    sha = hashlib.sha256(upload.read()).hexdigest()
    upload.seek(0)
    r = api.put(url, {"file": upload}, format="multipart")
    assert r.status_code == 200, r.content
    assert r.json()["ir"] == {
        "name": "V30 SM57.wav",
        "sample_rate": 44100,
        "frames": 1200,
        "seconds": round(1200 / 44100, 6),
        "channels": 1,
        "sha256": sha,
    }
    model.refresh_from_db()
    first_file = Path(model.ir_file.path)
    assert hashlib.sha256(first_file.read_bytes()).hexdigest() == sha
    assert api.get(f"/api/experiments/{exp.pk}/conditions/").json()[-1]["ir"]["name"] == "V30 SM57.wav"

    # Replacing it stores the new file and removes the old one once committed.
    with django_capture_on_commit_callbacks(execute=True):
        r = api.put(url, {"file": ir_upload("Greenback.wav", cab_ir(seed=9))}, format="multipart")
    assert r.status_code == 200 and r.json()["ir"]["name"] == "Greenback.wav"
    assert not first_file.exists()

    # Not while the experiment cannot be edited (rendering, open, closed): 409, nothing changes.
    Experiment.objects.filter(pk=exp.pk).update(status=Experiment.Status.RENDERING)
    assert api.put(url, {"file": ir_upload()}, format="multipart").status_code == 409
    assert api.delete(url).status_code == 409
    model.refresh_from_db()
    assert model.ir_info["name"] == "Greenback.wav"
    Experiment.objects.filter(pk=exp.pk).update(status=Experiment.Status.DRAFT)

    # Removal: gone from the row and the disk; removing again says there is none.
    second_file = Path(model.ir_file.path)
    with django_capture_on_commit_callbacks(execute=True):
        r = api.delete(url)
    assert r.status_code == 200 and r.json()["ir"] == {}
    assert not second_file.exists()
    r = api.delete(url)
    assert r.status_code == 400 and r.json()["error"] == "ir: condition 'Model 1' has no impulse response to remove"


def test_the_builder_page_attaches_shows_and_removes_an_ir(build_experiment, client, researcher):
    exp = build_experiment(n_excerpts=1, seconds=1.0, training_excerpt=False)
    model = exp.conditions.get(kind=ConditionKind.MODEL)
    anchor = exp.conditions.get(kind=ConditionKind.ANCHOR_35)
    client.force_login(researcher)
    page = reverse("researcher:experiment", args=[exp.pk])
    r = client.post(reverse("researcher:condition_ir", args=[exp.pk, model.pk]), {"ir": ir_upload("Mesa 4x12.wav")})
    assert r.status_code == 302
    html = client.get(r["Location"]).content.decode()
    assert "Mesa 4x12.wav</span> (44100 Hz, 1200 samples = 27 ms)" in html
    assert "is heard through Mesa 4x12.wav" in html
    # An anchor has no IR form, and a forged post is refused with the reason.
    assert reverse("researcher:condition_ir", args=[exp.pk, anchor.pk]) not in html
    r = client.post(reverse("researcher:condition_ir", args=[exp.pk, anchor.pk]), {"ir": ir_upload()}, follow=True)
    assert "applies to model conditions only" in r.content.decode()
    assert Condition.objects.get(pk=anchor.pk).ir_info == {}
    r = client.post(reverse("researcher:condition_ir_delete", args=[exp.pk, model.pk]), follow=True)
    assert "Removed the impulse response of &#x27;Model 1&#x27;" in r.content.decode()
    assert Condition.objects.get(pk=model.pk).ir_info == {}
    assert "Mesa 4x12.wav</span>" not in client.get(page).content.decode()


def test_the_stimulus_is_the_model_render_convolved_with_the_ir_and_records_it(build_experiment, settings):
    """The render job's output equals the model's render convolved directly (``np.convolve``) with the IR;
    the stimulus is that output, loudness-aligned and resampled; metrics are of model + IR."""
    exp = build_experiment(n_excerpts=1, seconds=1.0, training_excerpt=False)
    model_condition = exp.conditions.get(kind=ConditionKind.MODEL)
    render_inline(exp)
    plain_job = RenderJob.objects.get(kind="model", condition=model_condition)
    plain_metrics = plain_job.report["metrics"]
    assert plain_job.report["cabinet_ir"] is None
    kept_items = {s.condition_id: s.pk for s in Stimulus.objects.filter(experiment=exp)}

    h = cab_ir()
    cabinet.set_condition_ir(condition=model_condition, file=ir_upload("V30 SM57.wav", h))
    exp.refresh_from_db()
    assert exp.status == Experiment.Status.DRAFT, "a changed IR leaves the experiment to render again"
    queued = rendering.start_render(experiment=exp)
    assert {(j.kind, j.condition_id) for j in queued if j.kind == "model"} == {("model", model_condition.pk)}
    for kind in ("model", "item"):
        for job in RenderJob.objects.filter(experiment=exp, kind=kind):
            assert jobs.run_job(job.pk) == "done", RenderJob.objects.get(pk=job.pk).error
    exp.refresh_from_db()
    assert exp.status == Experiment.Status.READY

    excerpt = exp.excerpts.get()
    dry, sr = sf.read(excerpt.dry_file.path, dtype="float32", always_2d=True)
    reference, _ = sf.read(excerpt.reference_file.path, dtype="float32", always_2d=True)
    model = load(fixture_path("models", "coreaudioml", "ht1_lstm32.json"))
    assert model.sample_rate == sr == 44100  # the IR is at the model's rate: not resampled
    plain, _ = policy.render_excerpt(model, dry, sr)
    h24 = sf.read(Condition.objects.get(pk=model_condition.pk).ir_file.path, dtype="float64")[0]  # as stored
    want = np.convolve(plain[:, 0].astype(np.float64), h24)[: plain.shape[0]][:, None]

    job = RenderJob.objects.get(kind="model", condition=model_condition)
    rendered, _ = sf.read(Path(settings.MEDIA_ROOT) / job.output_file, dtype="float64", always_2d=True)
    np.testing.assert_allclose(rendered, want, rtol=0, atol=1e-5)
    assert np.max(np.abs(want - plain)) > 0.05, "the IR must change the sound for this check to mean anything"

    # Metrics: of model + IR against the reference, not of the bare model.
    assert job.report["metrics"]["esr"] == pytest.approx(metrics.esr(want, reference), rel=1e-4)
    assert job.report["metrics"]["esr"] != pytest.approx(plain_metrics["esr"], rel=1e-2)

    stim = Stimulus.objects.get(experiment=exp, condition=model_condition)
    assert stim.pk == kept_items[model_condition.pk], "the stimulus row is replaced in place"
    heard, rate = sf.read(Path(settings.MEDIA_ROOT) / stim.file, dtype="float64", always_2d=True)
    expected = resample(want.astype(np.float32), sr, 48000)[: heard.shape[0]] * 10 ** (stim.gain_db / 20)
    assert rate == 48000
    np.testing.assert_allclose(heard, expected, rtol=0, atol=2e-5)
    assert stim.metrics["esr"] == job.report["metrics"]["esr"]
    ir = stim.render_info["cabinet_ir"]
    assert ir["name"] == "V30 SM57.wav" and ir["sample_rate"] == 44100 and ir["frames"] == 1200
    stored = Condition.objects.get(pk=model_condition.pk)
    assert (
        ir["sha256"] == stored.ir_info["sha256"] == hashlib.sha256(Path(stored.ir_file.path).read_bytes()).hexdigest()
    )
    assert ir["rate"] == 44100 and ir["resampled"] is False and ir["gain_scale"] == 1.0
    # Conditions without an IR say so.
    anchor = Stimulus.objects.get(experiment=exp, condition__kind=ConditionKind.ANCHOR_35)
    assert "cabinet_ir" not in anchor.render_info


def test_a_render_refuses_an_ir_file_changed_on_disk(build_experiment):
    exp = build_experiment(n_excerpts=1, seconds=1.0, training_excerpt=False)
    condition = cabinet.set_condition_ir(
        condition=exp.conditions.get(kind=ConditionKind.MODEL), file=ir_upload("cab.wav")
    )
    Path(condition.ir_file.path).write_bytes(_wav_bytes(cab_ir(seed=11), 44100))
    rendering.start_render(experiment=exp)
    job = RenderJob.objects.get(kind="model", experiment=exp)
    assert jobs.run_job(job.pk) == "failed"
    job.refresh_from_db()
    assert "the impulse response of condition 'Model 1' changed on disk since it was checked" in job.error
