"""Stored media through the storage API on the local file system (the default), and the start-up
checks of ``MEDIA_STORAGE``. The object store itself: tests/integration/test_object_storage.py."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import RequestFactory

from tests.paths import REPO
from webmushra.http import serve_blinded_file
from webmushra.services import files


def test_store_puts_a_file_in_place_whole_with_the_mode_the_web_server_reads(settings):
    media = Path(settings.MEDIA_ROOT)
    assert files.is_local()
    assert files.store("stimuli/e1/x1_c1.wav", b"first") == 5
    path = media / "stimuli" / "e1" / "x1_c1.wav"
    assert path.read_bytes() == b"first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    # A rerun replaces it under the same name (no "_abc123" variant), from bytes or from a file.
    source = media / "tmp-source"
    source.write_bytes(b"second, longer")
    assert files.store("stimuli/e1/x1_c1.wav", source) == 14
    assert path.read_bytes() == b"second, longer"
    assert sorted(p.name for p in path.parent.iterdir()) == ["x1_c1.wav"]


def test_a_failed_store_leaves_the_previous_file_and_no_temp_file(settings):
    files.store("reports/r.zip", b"complete")
    with pytest.raises(OSError):
        files.store("reports/r.zip", Path(settings.MEDIA_ROOT) / "no-such-source")
    folder = Path(settings.MEDIA_ROOT) / "reports"
    assert (folder / "r.zip").read_bytes() == b"complete"
    assert [p.name for p in folder.iterdir()] == ["r.zip"]


def test_local_copy_is_the_stored_file_itself_and_delete_removes_an_upload_folder(settings):
    files.store("uploads/abc/take.wav", b"RIFF....")
    with files.local_copy("uploads/abc/take.wav") as path:
        assert path == Path(settings.MEDIA_ROOT) / "uploads" / "abc" / "take.wav"
        assert path.read_bytes() == b"RIFF...."
    assert files.exists("uploads/abc/take.wav")
    files.delete_stored("uploads/abc/take.wav", "uploads/abc/never-stored.wav", "")
    assert not (Path(settings.MEDIA_ROOT) / "uploads" / "abc").exists()


def test_serving_reads_through_the_storage_by_range():
    """RFC 9110 §14: one range 206 with Content-Range, an unsatisfiable one 416, a missing file 404."""
    data = bytes(range(200)) * 5
    files.store("stimuli/e2/probe.wav", data)
    rf = RequestFactory()
    whole = serve_blinded_file(rf.get("/"), "stimuli/e2/probe.wav")
    assert whole.status_code == 200 and b"".join(whole.streaming_content) == data
    assert whole["Content-Length"] == "1000" and whole["Accept-Ranges"] == "bytes"
    part = serve_blinded_file(rf.get("/", HTTP_RANGE="bytes=10-19"), "stimuli/e2/probe.wav")
    assert part.status_code == 206 and b"".join(part.streaming_content) == data[10:20]
    assert part["Content-Range"] == "bytes 10-19/1000" and part["Content-Length"] == "10"
    assert serve_blinded_file(rf.get("/", HTTP_RANGE="bytes=1000-"), "stimuli/e2/probe.wav").status_code == 416
    assert serve_blinded_file(rf.get("/"), "stimuli/e2/gone.wav").status_code == 404
    assert serve_blinded_file(rf.get("/"), "../outside.wav").status_code == 404


def _start(tmp_path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MEDIA_STORAGE", "SERVE_MEDIA"))}
    clean.update(VAR_DIR=str(tmp_path), **env)
    probe = "import config.settings as s; print(s.STORAGES['default']['BACKEND'])"
    return subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=clean, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "name", "accepted"),
    [
        ({"MEDIA_STORAGE": "gcs"}, "MEDIA_STORAGE", "filesystem, s3"),
        ({"MEDIA_STORAGE": "s3"}, "AWS_STORAGE_BUCKET_NAME", "name the bucket"),
        (
            {"MEDIA_STORAGE": "s3", "AWS_STORAGE_BUCKET_NAME": "b", "AWS_S3_ENDPOINT_URL": "minio:9000"},
            "AWS_S3_ENDPOINT_URL",
            "http:// or https://",
        ),
        (
            {"MEDIA_STORAGE": "s3", "AWS_STORAGE_BUCKET_NAME": "b", "AWS_S3_ADDRESSING_STYLE": "dns"},
            "AWS_S3_ADDRESSING_STYLE",
            "auto, path, virtual",
        ),
        (
            {"MEDIA_STORAGE": "s3", "AWS_STORAGE_BUCKET_NAME": "b", "SERVE_MEDIA_WITH": "nginx"},
            "SERVE_MEDIA_WITH",
            "use django",
        ),
    ],
)
def test_an_invalid_media_storage_stops_the_start_naming_the_variable(tmp_path, env, name, accepted):
    out = _start(tmp_path, **env)
    assert out.returncode == 2, (out.returncode, out.stderr[-500:])
    assert f"{name}=" in out.stderr and accepted in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_media_storage_selects_the_backend(tmp_path):
    assert _start(tmp_path).stdout.split()[-1] == "django.core.files.storage.FileSystemStorage"
    out = _start(tmp_path, MEDIA_STORAGE="s3", AWS_STORAGE_BUCKET_NAME="media", AWS_S3_ENDPOINT_URL="http://s3:9000")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "storages.backends.s3.S3Storage"
