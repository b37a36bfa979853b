"""The token-authenticated JSON API: a training script builds, renders and reads an experiment."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from tests.paths import fixture_path
from webmushra.models import Checkpoint, Excerpt, Experiment, Report
from webmushra.services import accounts, experiments, reports, uploads

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(researcher):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {accounts.api_token_for(user=researcher)}")
    return client


def upload(path, name=None):
    return SimpleUploadedFile(name or path.name, path.read_bytes())


def files_under(root) -> list:
    return [p for p in root.rglob("*") if p.is_file()]


def test_build_render_and_read_through_the_api(api, excerpt_files, researcher):
    r = api.post(
        "/api/experiments/",
        {"title": "From a training loop", "sample_rate": 44100, "config": {"training": False}},
        format="json",
    )
    assert r.status_code == 201, r.content
    pk = r.json()["id"]
    assert [c["kind"] for c in r.json()["conditions"]] == ["hidden_reference", "anchor35", "anchor70"]
    dry, ref = excerpt_files(seconds=1.0)
    r = api.post(
        f"/api/experiments/{pk}/excerpts/",
        {"name": "riff", "dry": upload(dry), "reference": upload(ref)},
        format="multipart",
    )
    assert r.status_code == 201 and r.json()["frames"] == 44100 and r.json()["name"] == "riff"
    r = api.post(
        f"/api/experiments/{pk}/checkpoints/",
        {"name": "epoch42", "file": upload(fixture_path("models", "coreaudioml", "ht1_lstm32.json"))},
        format="multipart",
    )
    assert r.status_code == 201, r.content
    ckpt = r.json()
    assert ckpt["name"] == "epoch42" and ckpt["sample_rate"] == 44100 and "LSTM" in ckpt["architecture"].upper()
    r = api.post(f"/api/experiments/{pk}/conditions/", {"checkpoint": ckpt["id"], "label": "epoch 42"}, format="json")
    assert r.status_code == 201 and r.json()["kind"] == "model"
    assert len(api.get(f"/api/experiments/{pk}/conditions/").json()) == 4
    assert api.get("/api/experiments/").json()[0]["id"] == pk
    r = api.post(f"/api/experiments/{pk}/render/")
    assert r.status_code == 202 and r.json()["status"] == "rendering" and r.json()["counts"]["queued"] == 1
    # A second render while rendering conflicts.
    r = api.post(f"/api/experiments/{pk}/render/")
    assert r.status_code == 409 and "rendering" in r.json()["error"]
    exp = Experiment.objects.get(pk=pk)
    from webmushra import jobs
    from webmushra.models import RenderJob

    for kind in ("model", "item"):
        for job in RenderJob.objects.filter(experiment=exp, kind=kind):
            assert jobs.run_job(job.pk) == "done"
    status = api.get(f"/api/experiments/{pk}/status/").json()
    assert status["status"] == "ready" and status["overall"] == 1.0
    metrics = api.get(f"/api/experiments/{pk}/metrics/").json()["metrics"]
    assert {m["metric"] for m in metrics} >= {"esr"} and metrics[0]["condition"] == "epoch 42"
    r = api.post(f"/api/experiments/{pk}/open/")
    assert r.status_code == 200 and r.json()["participant_url"].endswith(f"/t/{exp.public_token}/")
    assert api.get(f"/api/experiments/{pk}/ratings/").json() == {
        "experiment": pk,
        "ratings": [],
        "catch_trials": [],
        "repeat_trials": [],
        "p808_checks": [],
        "comments": [],
    }
    r = api.get(f"/api/experiments/{pk}/ratings/?format=csv")
    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
    assert r.content.decode().startswith("participant,item,condition,kind,rating")
    assert api.get(f"/api/experiments/{pk}/ratings.csv").content == r.content
    assert api.get(f"/api/experiments/{pk}/mushra.csv").content.decode().startswith("session_test_id,session_uuid")
    r = api.post(f"/api/experiments/{pk}/close/")
    assert r.status_code == 200 and r.json()["status"] == "closed"


def test_upload_errors_name_the_file_and_leave_nothing(api, researcher, tmp_path, settings, excerpt_files):
    exp = experiments.create_experiment(owner=researcher, title="E")
    bad = tmp_path / "weights.json"
    bad.write_text("{not json")
    r = api.post(f"/api/experiments/{exp.pk}/checkpoints/", {"file": upload(bad)}, format="multipart")
    assert r.status_code == 400 and r.json()["error"].startswith("weights.json:")
    dry, _ = excerpt_files(seconds=1.0)
    noise = tmp_path / "device.wav"
    noise.write_bytes(b"RIFF....")
    r = api.post(
        f"/api/experiments/{exp.pk}/excerpts/", {"dry": upload(dry), "reference": upload(noise)}, format="multipart"
    )
    assert r.status_code == 400 and "device.wav" in r.json()["error"]
    r = api.post(f"/api/experiments/{exp.pk}/excerpts/", {"dry": upload(dry)}, format="multipart")
    assert r.status_code == 400 and r.json()["error"].startswith("reference:")
    assert Checkpoint.objects.count() == 0 and Excerpt.objects.count() == 0
    uploads = settings.MEDIA_ROOT / "uploads"
    assert not uploads.exists() or files_under(uploads) == []


def test_condition_and_settings_errors(api, researcher):
    exp = experiments.create_experiment(owner=researcher, title="E")
    other = experiments.create_experiment(owner=researcher, title="Other")
    ckpt = uploads.add_checkpoint(experiment=other, name="x", file=fixture_path("models", "nam", "lstm_h3.nam"))
    r = api.post(f"/api/experiments/{exp.pk}/conditions/", {"checkpoint": ckpt.pk, "label": "x"}, format="json")
    assert r.status_code == 400 and r.json()["error"] == f"checkpoint: {ckpt.pk} is not a checkpoint of this experiment"
    r = api.post(f"/api/experiments/{exp.pk}/conditions/", {"label": "x"}, format="json")
    assert r.status_code == 400 and r.json()["error"].startswith("checkpoint:")
    r = api.post("/api/experiments/", {"title": "x", "sample_rate": 22050}, format="json")
    assert r.status_code == 400 and r.json()["error"].startswith("sample_rate:")
    r = api.patch(f"/api/experiments/{exp.pk}/", {"config": {"trial_subset_size": -1}}, format="json")
    assert r.status_code == 400 and r.json()["error"].startswith("trial_subset_size:")
    r = api.patch(
        f"/api/experiments/{exp.pk}/", {"instructions": "Rate!", "config": {"completion_code": "AB12"}}, format="json"
    )
    assert (
        r.status_code == 200 and r.json()["instructions"] == "Rate!" and r.json()["config"]["completion_code"] == "AB12"
    )
    r = api.post(f"/api/experiments/{exp.pk}/render/")
    assert r.status_code == 400 and "excerpt" in r.json()["error"]
    r = api.post(f"/api/experiments/{exp.pk}/open/")
    assert r.status_code == 409


def test_others_experiments_are_404_and_no_token_is_401(api, django_user_model):
    stranger = django_user_model.objects.create_user("stranger", password="pw-stranger-123")
    theirs = experiments.create_experiment(owner=stranger, title="Theirs")
    assert api.get(f"/api/experiments/{theirs.pk}/").status_code == 404
    assert api.post(f"/api/experiments/{theirs.pk}/render/").status_code == 404
    assert all(e["id"] != theirs.pk for e in api.get("/api/experiments/").json())
    anonymous = APIClient()
    r = anonymous.get("/api/experiments/")
    assert r.status_code == 401 and r["WWW-Authenticate"] == "Token"
    anonymous.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert anonymous.get("/api/experiments/").status_code == 401


def test_report_endpoint(api, participant_at_trials, monkeypatch, django_capture_on_commit_callbacks):
    import sys
    import types

    from tests.webmushra.test_builder import rate_all

    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0, config={"training": False})
    assert api.get(f"/api/experiments/{exp.pk}/report/").status_code == 404
    r = api.post(f"/api/experiments/{exp.pk}/report/")
    assert r.status_code == 400 and "no ratings yet" in r.json()["error"]
    rate_all(p)

    def fake_build(
        ratings, metrics, settings, out_dir, progress=None, design_warnings=(), quality=None, paradigms=None, facts=None
    ):
        (out_dir / "ratings.csv").write_text(ratings.to_csv(index=False))
        return {}

    monkeypatch.setitem(sys.modules, "evaluation.report", types.SimpleNamespace(build_report=fake_build))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        r = api.post(f"/api/experiments/{exp.pk}/report/")
    assert r.status_code == 202 and r.json()["status"] == "queued" and r.json()["download_url"] is None
    assert len(callbacks) == 1
    report = Report.objects.get()
    reports.build_report(report_id=report.pk)
    body = api.get(f"/api/experiments/{exp.pk}/report/").json()
    assert body["status"] == "done" and body["download_url"].endswith(f"/report/{report.pk}/download/")
    r = api.get(f"/api/experiments/{exp.pk}/report/{report.pk}/download/")
    assert r.status_code == 200 and r["Content-Type"] == "application/zip"


def test_openapi_schema_and_docs(api, client):
    r = api.get("/api/schema/?format=json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for p in (
        "/api/experiments/",
        "/api/experiments/{id}/checkpoints/",
        "/api/experiments/{id}/render/",
        "/api/experiments/{id}/status/",
        "/api/experiments/{id}/ratings/",
        "/api/experiments/{id}/report/",
    ):
        assert p in paths, p
    assert "multipart/form-data" in paths["/api/experiments/{id}/checkpoints/"]["post"]["requestBody"]["content"]
    assert api.get("/api/docs/").status_code == 200


def test_create_api_token_command(researcher):
    from django.core.management import CommandError, call_command
    from rest_framework.authtoken.models import Token

    out = io.StringIO()
    call_command("create_api_token", "researcher", stdout=out)
    assert out.getvalue().strip() == Token.objects.get(user=researcher).key
    with pytest.raises(CommandError, match="no user called 'nobody'"):
        call_command("create_api_token", "nobody")


def test_every_error_answers_in_the_documented_shape(api, researcher):
    from rest_framework.test import APIClient

    anonymous = APIClient()
    for client, method, url, status in (
        (anonymous, "get", "/api/experiments/", 401),
        (api, "get", "/api/experiments/999999/", 404),
        (api, "delete", "/api/experiments/", 405),
        (api, "post", "/api/experiments/", 400),
    ):
        r = (
            getattr(client, method)(url, {"title": ""}, format="json")
            if method == "post"
            else getattr(client, method)(url)
        )
        assert r.status_code == status, (url, r.status_code)
        assert set(r.json()) <= {"error", "fields"} and r.json()["error"], (url, r.json())
