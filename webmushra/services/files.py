"""Uploaded and stored files: private temp copies, size checks, clean-up when a create fails, and
the sweep of temp files a killed worker left behind."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from ..errors import ServiceError

log = logging.getLogger(__name__)


def save_upload(upload: UploadedFile | str | os.PathLike, name: str | None = None) -> tuple[Path, str]:
    """Copy an upload (or a local path) to a private temp file; return it and its file name."""
    fd, tmp = tempfile.mkstemp(prefix="upload-", dir=tmp_dir())
    with os.fdopen(fd, "wb") as out:
        if isinstance(upload, (str, os.PathLike)):
            with open(upload, "rb") as src:
                shutil.copyfileobj(src, out)
            filename = name or Path(upload).name
        else:
            for chunk in upload.chunks():
                out.write(chunk)
            filename = name or upload.name or "upload"
    return Path(tmp), Path(filename).name


def tmp_dir() -> str:
    path = Path(settings.MEDIA_ROOT) / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def check_size(path: Path, filename: str) -> int:
    size = path.stat().st_size
    limit = settings.MAX_UPLOAD_MB * 1024 * 1024
    if size > limit:
        raise ServiceError(f"{filename}: {size / 1e6:.1f} MB is over the {settings.MAX_UPLOAD_MB} MB upload limit")
    if size == 0:
        raise ServiceError(f"{filename}: the file is empty")
    return size


class FileGuard:
    """Deletes files stored during a failed create, so nothing half-created is left."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def stored(self, field_file) -> None:
        self.paths.append(field_file.path)

    def rollback(self) -> None:
        for p in self.paths:
            try:
                os.unlink(p)
                os.rmdir(os.path.dirname(p))
            except OSError:
                pass


def wav_name(name: str) -> str:
    return Path(name).stem[:80] + ".wav"


def delete_files(*field_files) -> None:
    for f in field_files:
        if f:
            try:
                path = f.path
                os.unlink(path)
                os.rmdir(os.path.dirname(path))
            except OSError:
                pass


def sweep_temp_files(*, older_than) -> int:
    """Remove temp files left by workers killed mid-write (never served: no row names them)."""
    removed = 0
    root = Path(settings.MEDIA_ROOT)
    for sub in ("renders", "stimuli", "reports", "tmp"):
        folder = root / sub
        if not folder.is_dir():
            continue
        for path in folder.rglob("*"):
            name = path.name
            if not (name.startswith(".tmp-") or (sub == "tmp" and name.startswith("upload-"))):
                continue
            try:
                if path.is_file() and path.stat().st_mtime < older_than.timestamp():
                    path.unlink()
                    removed += 1
            except OSError:
                pass
    return removed
