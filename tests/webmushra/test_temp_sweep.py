"""The reaper's sweep of temp files that a killed worker left in the media folder
(``files.sweep_temp_files``, run by ``rendering.reap_stale_jobs``)."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path

from django.utils import timezone

from webmushra.services import files, rendering


def _file(path: Path, age_s: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    when = timezone.now().timestamp() - age_s
    os.utime(path, (when, when))
    return path


def test_old_temp_files_go_and_everything_else_stays(settings):
    media = Path(settings.MEDIA_ROOT)
    hour = 3600.0
    gone = [
        _file(media / "renders" / "e1" / ".tmp-x1_c1.wav.abc", 2 * hour),
        _file(media / "stimuli" / "e1" / ".tmp-x1_ref.wav.def", 2 * hour),
        _file(media / "reports" / ".tmp-report.zip.ghi", 2 * hour),
        _file(media / "tmp" / "upload-abc.part", 2 * hour),
    ]
    kept = [
        _file(media / "renders" / "e1" / ".tmp-x2_c1.wav.jkl", 0.5 * hour),  # a worker may still be writing it
        _file(media / "stimuli" / "e1" / "x1_ref.wav", 5 * hour),  # a stimulus
        _file(media / "renders" / "e1" / "upload-x.wav", 5 * hour),  # upload- names are temp only in tmp/
        # An uploaded file keeps the name it came with, which may begin ".tmp-": uploads are not swept.
        _file(media / "uploads" / "0f3c" / ".tmp-dry.wav", 5 * hour),
    ]
    assert files.sweep_temp_files(older_than=timezone.now() - timedelta(hours=1)) == len(gone)
    assert [p.exists() for p in gone] == [False] * len(gone)
    assert [p.exists() for p in kept] == [True] * len(kept)
    # Nothing more to do on a second sweep.
    assert files.sweep_temp_files(older_than=timezone.now() - timedelta(hours=1)) == 0


def test_the_reaper_sweeps_and_says_how_many(settings, db):
    media = Path(settings.MEDIA_ROOT)
    left = _file(media / "renders" / "e7" / ".tmp-x1_c2.wav.pqr", 3 * 3600.0)
    assert rendering.reap_stale_jobs()["temp_files_removed"] == 1
    assert not left.exists()


def test_a_file_the_reaper_cannot_remove_is_said_and_left(settings, monkeypatch, caplog):
    media = Path(settings.MEDIA_ROOT)
    theirs = _file(media / "renders" / "e2" / ".tmp-x1_c1.wav.stu", 7200.0)
    ours = _file(media / "stimuli" / "e2" / ".tmp-x1_ref.wav.vwx", 7200.0)
    unlink = Path.unlink

    def refuse(self: Path, missing_ok: bool = False) -> None:
        if self == theirs:  # as for a folder another user made (the reaper runs as root in tests)
            raise PermissionError(13, "Permission denied", str(self))
        unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    with caplog.at_level(logging.WARNING, logger="webmushra.services.files"):
        assert files.sweep_temp_files(older_than=timezone.now() - timedelta(hours=1)) == 1
    assert theirs.exists() and not ours.exists()
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(theirs) in record.getMessage() and "Permission denied" in record.getMessage()
    assert "reaper as the user that writes the media" in record.getMessage()
