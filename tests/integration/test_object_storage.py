"""A whole experiment on an S3-compatible object store (``MEDIA_STORAGE=s3``, docs/deployment.md).

moto's S3 server runs as a process of its own on a free port. Uploads are stored from this
(web) process; a real Celery worker, given an empty ``MEDIA_ROOT`` of its own, renders from the
store and writes the stimuli and the report back to it; participants fetch the stimuli through
the app, byte for byte what the store holds, with equal headers and lengths across conditions
and no key, condition name or id in what they receive.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import soundfile as sf
from django.test import RequestFactory
from django.urls import reverse

from tests.conftest import wait_for
from tests.stack import _wait_port, free_port, stop_process
from tests.trials import save_body
from webmushra.models import Experiment, Participant, Rating, RenderJob, Report, Stimulus
from webmushra.services import experiments, files, rendering, reports, sessions

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BUCKET = "listening-media"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3_server(tmp_path):
    """moto's S3 server (``python -m moto.server``) as a separate process, with an empty bucket."""
    pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    log = open(tmp_path / "moto.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_port(port, 60, proc)
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_keys())
        wait_for(lambda: _create_bucket(client), timeout=60, what=f"moto's S3 server on port {port}")
        yield endpoint, client
        assert proc.poll() is None, (tmp_path / "moto.log").read_text()[-3000:]
    finally:
        stop_process(proc)
        log.close()


def _create_bucket(client) -> bool:
    """Create the bucket; False while the server does not answer yet."""
    from botocore.exceptions import EndpointConnectionError

    try:
        client.create_bucket(Bucket=BUCKET)
    except EndpointConnectionError:
        return False
    return True


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


@pytest.fixture
def s3_media(s3_server, settings, monkeypatch):
    """This process stores media in the bucket, as ``MEDIA_STORAGE=s3`` configures it; returns
    the boto3 client and the environment a worker host needs for the same store."""
    endpoint, client = s3_server
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": endpoint,
                "region_name": "us-east-1",
                "addressing_style": "path",
                "file_overwrite": True,
                "default_acl": None,
            },
        },
    }
    assert not files.is_local()
    env = {
        "MEDIA_STORAGE": "s3",
        "AWS_STORAGE_BUCKET_NAME": BUCKET,
        "AWS_S3_ENDPOINT_URL": endpoint,
        "AWS_S3_ADDRESSING_STYLE": "path",
        "AWS_S3_REGION_NAME": "us-east-1",
        **CREDENTIALS,
    }
    return client, env


def _object(client, key: str) -> bytes:
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def _keys_in_bucket(client) -> set[str]:
    return {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_stored_files_are_served_by_range_from_the_object_store(s3_media):
    """The app streams a stored object itself (RFC 9110 §14: 200, 206, 416), never a redirect."""
    client, _ = s3_media
    data = bytes(range(256)) * 40
    assert files.store("stimuli/e0/probe.wav", data) == len(data)
    assert _object(client, "stimuli/e0/probe.wav") == data
    from webmushra.http import serve_blinded_file

    rf = RequestFactory()
    whole = serve_blinded_file(rf.get("/"), "stimuli/e0/probe.wav", max_age=60)
    assert whole.status_code == 200 and b"".join(whole.streaming_content) == data
    assert whole["Content-Length"] == str(len(data)) and "Location" not in whole
    part = serve_blinded_file(rf.get("/", HTTP_RANGE="bytes=100-1099"), "stimuli/e0/probe.wav")
    assert part.status_code == 206 and part["Content-Range"] == f"bytes 100-1099/{len(data)}"
    assert b"".join(part.streaming_content) == data[100:1100]
    tail = serve_blinded_file(rf.get("/", HTTP_RANGE="bytes=-10"), "stimuli/e0/probe.wav")
    assert b"".join(tail.streaming_content) == data[-10:]
    assert serve_blinded_file(rf.get("/", HTTP_RANGE="bytes=99999-"), "stimuli/e0/probe.wav").status_code == 416
    assert serve_blinded_file(rf.get("/"), "stimuli/e0/missing.wav").status_code == 404
    for r in (whole, part):
        assert not {"ETag", "Last-Modified", "Content-Disposition"} & set(r.headers)
    # A rerun replaces the object whole under the same name.
    assert files.store("stimuli/e0/probe.wav", b"x" * 10) == 10
    assert _object(client, "stimuli/e0/probe.wav") == b"x" * 10
    files.delete_stored("stimuli/e0/probe.wav")
    assert "stimuli/e0/probe.wav" not in _keys_in_bucket(client)


def test_whole_experiment_on_the_object_store_with_a_worker_that_shares_no_disk(
    s3_media, build_experiment, start_worker, client, settings, tmp_path
):
    s3, store_env = s3_media
    web_media = Path(settings.MEDIA_ROOT)

    # Uploads go to the bucket; nothing of them stays on this host.
    exp = build_experiment(n_excerpts=2, seconds=1.5)
    excerpt = exp.excerpts.filter(is_training=False).first()
    assert excerpt.reference_file.name in _keys_in_bucket(s3)
    assert _files_under(web_media) == []

    # A worker on "another host": same database and broker, the store, its own empty MEDIA_ROOT.
    worker_media = tmp_path / "worker-media"
    worker_media.mkdir()
    rendering.start_render(experiment=exp)
    worker = start_worker(MEDIA_ROOT=str(worker_media), **store_env)

    def ready() -> bool:
        exp.refresh_from_db()
        failed = RenderJob.objects.filter(experiment=exp, status=RenderJob.Status.FAILED).first()
        assert failed is None, f"job failed: {failed.error}\n{worker.log[-3000:]}"
        return exp.status == Experiment.Status.READY

    wait_for(ready, timeout=300, what="rendering from the object store")
    keys = _keys_in_bucket(s3)
    stimuli = list(Stimulus.objects.filter(experiment=exp).select_related("condition"))
    assert len(stimuli) == exp.conditions.count() * exp.excerpts.count()
    for s in stimuli:
        assert s.file in keys
        data = _object(s3, s.file)
        assert len(data) == s.size
        info = sf.info(io.BytesIO(data))
        assert info.samplerate == exp.sample_rate and info.subtype == "PCM_24"
    for j in RenderJob.objects.filter(experiment=exp, kind=RenderJob.Kind.MODEL):
        assert j.output_file in keys
    # Neither host kept a media file: the worker's scratch copies are gone, the web host has none.
    assert _files_under(worker_media) == [] and _files_under(web_media) == []

    # Participants fetch every stimulus through the app.
    experiments.open_experiment(experiment=exp)
    assert client.post(reverse("participant:landing", args=[exp.public_token])).status_code == 302
    participant = Participant.objects.get(experiment=exp)
    client.post(reverse("participant:consent", args=[participant.token]), {"agree": "yes"})
    client.post(reverse("participant:level", args=[participant.token]), {"gain_db": "0"})
    participant.refresh_from_db()
    by_condition = {(s.excerpt_id, s.condition_id): s for s in stimuli}
    names = {c.label for c in exp.conditions.all()} | {c.kind for c in exp.conditions.all()}
    for index, entry in enumerate(participant.plan):
        url = reverse("participant:trial", args=[participant.token, index + 1])
        page = client.get(url)
        assert page.status_code == 200
        html = page.content.decode()
        assert "stimuli/e" not in html and BUCKET not in html and store_env["AWS_S3_ENDPOINT_URL"] not in html
        trial_excerpt = exp.trials.get(pk=entry["trial"]).excerpt_id
        headers = []
        for cid, _pk, token in sessions.trial_tokens(participant, entry, "pk", "token"):
            stimulus_url = reverse("participant:stimulus", args=[token])
            r = client.get(stimulus_url)
            assert r.status_code == 200
            body = b"".join(r.streaming_content)
            assert body == _object(s3, by_condition[(trial_excerpt, cid)].file)
            part = client.get(stimulus_url, HTTP_RANGE="bytes=0-43")
            assert part.status_code == 206 and b"".join(part.streaming_content) == body[:44]
            # The URL is a random token (it may spell anything by chance, "amz" included): the
            # headers name nothing, and the URL holds no storage path.
            said = " ".join(f"{k}: {v}" for k, v in r.headers.items())
            assert not any(name and name in said for name in names)
            assert "stimuli/" not in said and f"_c{cid}" not in said and "amz" not in said.lower()
            assert "stimuli/" not in stimulus_url and BUCKET not in stimulus_url
            headers.append(sorted(r.headers.items()))
        assert len(headers) >= 3 and all(h == headers[0] for h in headers), headers
        body = save_body(participant, index, client=client)
        r = client.post(url, json.dumps(body), content_type="application/json")
        assert r.status_code == 200 and r.json()["saved"] is True
    assert Rating.objects.filter(participant=participant).exists()

    # The report is built by the worker and stored in the bucket, downloaded through the app.
    report = reports.request_report(experiment=exp, user=exp.owner)
    wait_for(
        lambda: Report.objects.get(pk=report.pk).status in (Report.Status.DONE, Report.Status.FAILED),
        timeout=300,
        what="the report build",
    )
    report.refresh_from_db()
    assert report.status == Report.Status.DONE, report.error
    assert report.file.startswith("reports/") and report.file in _keys_in_bucket(s3)
    client.force_login(exp.owner)
    r = client.get(reverse("researcher:report_download", args=[exp.pk, report.pk]))
    assert r.status_code == 200
    downloaded = b"".join(r.streaming_content)
    assert downloaded == _object(s3, report.file)
    assert zipfile.ZipFile(io.BytesIO(downloaded)).namelist()
    assert _files_under(worker_media) == [] and _files_under(web_media) == []

    # Deleting the experiment deletes its objects.
    experiments.close_experiment(experiment=exp)
    experiments.delete_experiment(experiment=exp)
    assert not {k for k in _keys_in_bucket(s3) if k.startswith(("stimuli/", "renders/", "reports/", "uploads/"))}
