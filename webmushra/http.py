"""Serving stimuli as a careful CDN would: Range support, no validators that could tell files apart.

Every answer carries ``X-Content-Type-Options: nosniff`` and never ``ETag``, ``Last-Modified``
or ``Content-Disposition``. A participant's stimulus may stay in their browser cache for the
session (``Cache-Control: private, max-age=N``, N from ``rules.stimulus_cache_seconds``), so a
reload does not fetch the audio again; researchers' previews and every error answer are
``no-store``. One byte range is answered 206, an unsatisfiable one 416, and several ranges
(``bytes=0-99,200-299``) the whole file with 200, as RFC 9110 §14.2 allows.

With ``SERVE_MEDIA_WITH=nginx`` the response is an ``X-Accel-Redirect`` to nginx's
internal location (after the file and the range are checked here); nginx then serves the
bytes with this response's Cache-Control and Content-Type (docker/nginx.conf, ``max_ranges 1``).

Files are read through the media storage (``services.files.StoredReader``). With an object
store (``MEDIA_STORAGE=s3``) the bytes are fetched by range and passed on here, never through a
redirect to a signed URL: the store's own answer would carry an ETag (the content's MD5, equal
for equal files), Last-Modified and the object key, each of which could tell conditions apart.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import TypeVar

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from .models import Report
from .services.files import StoredReader

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
#: Headers every blinded answer carries, whatever its status.
BLIND_HEADERS = {"X-Content-Type-Options": "nosniff"}
#: Cache-Control of error answers and of files that may change under the same URL (previews).
NO_STORE = "private, no-store"
#: Headers a blinded answer never carries: each could tell two files apart or name one.
IDENTIFYING_HEADERS = ("ETag", "Last-Modified", "Content-Disposition")


R = TypeVar("R", bound=HttpResponseBase)


def _blind(response: R, cache_control: str = NO_STORE) -> R:
    for k, v in BLIND_HEADERS.items():
        response[k] = v
    response["Cache-Control"] = cache_control
    for k in IDENTIFYING_HEADERS:
        if k in response:
            del response[k]
    return response


def blinded_error(status: int, reason: str) -> HttpResponse:
    """An error answer for a media URL: a short reason, never stored by any cache."""
    return _blind(HttpResponse(reason, status=status, content_type="text/plain; charset=utf-8"))


def _byte_range(header: str, size: int) -> tuple[int, int] | None | bool:
    """The Range header's one range as (first, last) byte; None: serve the whole file; False: 416.

    RFC 9110 §14.2: a range unit other than bytes is ignored; several ranges are answered with
    the whole file (multipart/byteranges is not worth its complexity for a player that asks
    for one range at a time).
    """
    header = header.strip()
    if header[:6].lower() != "bytes=" or "," in header:
        return None
    header = "bytes=" + header[6:]
    m = _RANGE.match(header)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return False
    if m.group(1) == "":
        length = int(m.group(2))
        if length == 0:
            return False
        start, end = max(0, size - length), size - 1
    else:
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
    if start >= size or start > end:
        return False
    return start, end


def serve_blinded_file(
    request, rel_path: str, content_type: str = "audio/wav", *, max_age: int | None = None
) -> HttpResponseBase:
    """Serve a media file with byte ranges (206/416, several ranges: 200) and no identifying headers.

    ``max_age``: seconds the participant's browser may keep it (``private``); None: ``no-store``.
    """
    cache_control = f"private, max-age={int(max_age)}" if max_age else NO_STORE
    try:
        reader = StoredReader(rel_path)
    except (OSError, SuspiciousFileOperation):
        return blinded_error(404, "the file is missing")
    size = reader.size
    wanted = _byte_range(request.headers.get("Range", ""), size)
    if wanted is False or settings.SERVE_MEDIA_WITH == "nginx":
        reader.close()
    if wanted is False:
        return _unsatisfiable(size)
    if settings.SERVE_MEDIA_WITH == "nginx":
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = settings.PROTECTED_MEDIA_PREFIX + rel_path
        return _blind(response, cache_control)
    start, end = wanted if isinstance(wanted, tuple) else (0, size - 1)
    answer = StreamingHttpResponse(reader.chunks(start, end), status=206 if wanted else 200, content_type=content_type)
    if wanted:
        answer["Content-Range"] = f"bytes {start}-{end}/{size}"
    answer["Content-Length"] = str(end - start + 1)
    answer["Accept-Ranges"] = "bytes"
    return _blind(answer, cache_control)


def _unsatisfiable(size: int) -> HttpResponse:
    response = HttpResponse(status=416)
    response["Content-Range"] = f"bytes */{size}"
    return _blind(response)


def serve_blinded_bytes(request, data: bytes, content_type: str = "audio/wav") -> HttpResponse:
    """Audio made in memory, answered as ``serve_blinded_file`` answers a file, but ``no-store``:
    each fetch reaches the server (the headphone check records them)."""
    size = len(data)
    wanted = _byte_range(request.headers.get("Range", ""), size)
    if wanted is False:
        return _unsatisfiable(size)
    start, end = wanted if isinstance(wanted, tuple) else (0, size - 1)
    response = HttpResponse(data[start : end + 1], status=206 if wanted else 200, content_type=content_type)
    if wanted:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    response["Content-Length"] = str(end - start + 1)
    response["Accept-Ranges"] = "bytes"
    return _blind(response)


def report_file_response(report: Report) -> FileResponse:
    """A finished report bundle as a zip download (researchers only; not blinded)."""
    if report.status != Report.Status.DONE or not report.file:
        raise Http404("the report is not ready")
    try:
        fh = default_storage.open(report.file, "rb")
    except OSError:
        raise Http404("the report file is gone") from None
    name = PurePosixPath(report.file).name
    return FileResponse(fh, as_attachment=True, filename=name, content_type="application/zip")
