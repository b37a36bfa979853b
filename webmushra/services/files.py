"""Uploaded and stored files: private temp copies, size checks, clean-up when a create fails, the
sweep of temp files a killed worker left behind, and every read and write of stored media.

Stored media (uploads, renders, stimuli, reports) go through Django's storage API
(``default_storage``): the local file system under ``MEDIA_ROOT`` by default, or an
S3-compatible object store with ``MEDIA_STORAGE=s3`` (docs/deployment.md). Names are
storage names (``stimuli/e1/x2_c3.wav``), never paths. The model runner works on local files:
``local_copy`` hands it one (the file itself on the local file system, a private temp copy
otherwise), and ``store`` puts a result in place whole or not at all. ``MEDIA_ROOT`` stays
each host's own scratch space (``tmp/``) whichever storage holds the media.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage
from django.core.files.uploadedfile import UploadedFile

from modelrunner import audio

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
        self.names: list[str] = []

    def stored(self, field_file) -> None:
        self.names.append(field_file.name)

    def rollback(self) -> None:
        delete_stored(*self.names)


def wav_name(name: str) -> str:
    return Path(name).stem[:80] + ".wav"


def delete_files(*field_files) -> None:
    delete_stored(*(f.name for f in field_files if f))


# --------------------------------------------------------------------------- stored media


def is_local() -> bool:
    """Whether media live on this host's file system (``MEDIA_STORAGE=filesystem``)."""
    return isinstance(default_storage, FileSystemStorage)


def delete_stored(*names: str) -> None:
    """Delete stored files by name; a missing one is not an error. On the local file system an
    upload's own random folder goes with it (other folders stay while they hold files)."""
    for name in names:
        if not name:
            continue
        try:
            default_storage.delete(name)
        except Exception:  # a store that is down: the file stays, nothing refers to it any more
            log.warning("could not delete stored file %s", name, exc_info=True)
            continue
        if is_local() and name.startswith("uploads/"):
            try:
                os.rmdir(os.path.dirname(default_storage.path(name)))
            except OSError:
                pass


def exists(name: str) -> bool:
    return bool(name) and default_storage.exists(name)


@contextmanager
def local_copy(name: str) -> Iterator[Path]:
    """A stored file as a local path for the model runner, under its own base name: on the local
    file system the file itself; otherwise a private temp copy, removed when the block ends."""
    if is_local():
        yield Path(default_storage.path(name))
        return
    folder = Path(tempfile.mkdtemp(prefix="fetch-", dir=tmp_dir()))
    try:
        target = folder / (Path(name).name or "file")
        with default_storage.open(name, "rb") as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def read_stored(name: str) -> bytes:
    with default_storage.open(name, "rb") as fh:
        return fh.read()


def store(name: str, source: bytes | os.PathLike[str] | str) -> int:
    """Put ``source`` (bytes, or a local file) under exactly ``name``, whole or not at all;
    return its size in bytes.

    Local file system: a temp file (``.tmp-*``, mode 0600 while written) in the target's
    folder, given ``FILE_UPLOAD_PERMISSIONS`` (0640: readable by the group nginx serves as),
    synced and renamed over the name. Object store: one upload under the final key; S3 makes
    an object visible only once its upload completes, and a rerun overwrites it whole.
    """
    if is_local():
        dest = Path(default_storage.path(name))
        with audio.atomic_file(dest, settings.FILE_UPLOAD_PERMISSIONS or 0o640) as out:
            if isinstance(source, bytes):
                out.write(source)
            else:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        return dest.stat().st_size
    try:
        if isinstance(source, bytes):
            saved = default_storage.save(name, ContentFile(source))
        else:
            with open(source, "rb") as fh:
                saved = default_storage.save(name, File(fh))
    except OSError:
        raise
    except Exception as exc:  # the store's own errors (refused, unreachable), said as a failed write
        raise OSError(f"the media store did not take {name}: {exc}") from exc
    if saved != name:  # a store that renames instead of overwriting would orphan the row's name
        default_storage.delete(saved)
        raise OSError(f"the media store saved {name!r} as {saved!r}; set it to overwrite (file_overwrite)")
    return default_storage.size(name)


class StoredReader:
    """A stored file opened for serving: its size, and its bytes from ``start`` to ``end``
    (inclusive) in chunks. An object store is asked for the range only (HTTP Range), so a
    seek never downloads the whole object. Raises ``FileNotFoundError`` when it is missing."""

    def __init__(self, name: str) -> None:
        self.file: Any = default_storage.open(name, "rb")
        self.size = int(self.file.size)

    def chunks(self, start: int, end: int, chunk_size: int = 65536) -> Iterator[bytes]:
        try:
            remaining = end - start + 1
            obj = getattr(self.file, "obj", None)  # django-storages' S3File: the boto3 object
            if obj is not None:
                body = obj.get(Range=f"bytes={start}-{end}")["Body"]
                try:
                    for data in body.iter_chunks(chunk_size):
                        yield data[:remaining]
                        remaining -= len(data)
                        if remaining <= 0:
                            break
                finally:
                    body.close()
                return
            self.file.seek(start)
            while remaining > 0:
                data = self.file.read(min(chunk_size, remaining))
                if not data:
                    break
                remaining -= len(data)
                yield data
        finally:
            self.file.close()

    def close(self) -> None:
        self.file.close()


def sweep_temp_files(*, older_than) -> int:
    """Remove temp files left by workers killed mid-write (never served: no row names them) and
    not touched since ``older_than``; returns how many. One that cannot be removed (another
    user's folder) is said in the log with the reason at every sweep, and left."""
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
            except FileNotFoundError:  # another sweep, or the writer's own clean-up, came first
                pass
            except OSError as exc:
                log.warning(
                    "cannot remove the left temp file %s (%s): run the reaper as the user that writes "
                    "the media, or give both users the folder's group with write access",
                    path,
                    exc.strerror or exc,
                )
    return removed
