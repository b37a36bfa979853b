"""Serving stimuli: Range support, no validators that could tell files apart.

With ``SERVE_MEDIA_WITH=nginx`` the response is an ``X-Accel-Redirect`` to nginx's
internal location; nginx then serves the bytes (Range included) with the same headers.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TypeVar

from django.conf import settings
from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from .models import Report

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
BLIND_HEADERS = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}


R = TypeVar("R", bound=HttpResponseBase)


def _blind(response: R) -> R:
    for k, v in BLIND_HEADERS.items():
        response[k] = v
    for k in ("ETag", "Last-Modified", "Content-Disposition"):
        if k in response:
            del response[k]
    return response


def serve_blinded_file(request, rel_path: str, content_type: str = "audio/wav") -> HttpResponseBase:
    """Serve a media file with byte ranges (206/416) and no identifying headers."""
    if settings.SERVE_MEDIA_WITH == "nginx":
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = settings.PROTECTED_MEDIA_PREFIX + rel_path
        return _blind(response)
    path = os.path.join(settings.MEDIA_ROOT, rel_path)
    size = os.path.getsize(path)
    header = request.headers.get("Range", "").strip()
    if header:
        m = _RANGE.match(header)
        if not m or (m.group(1) == "" and m.group(2) == ""):
            return _unsatisfiable(size)
        if m.group(1) == "":
            length = int(m.group(2))
            if length == 0:
                return _unsatisfiable(size)
            start, end = max(0, size - length), size - 1
        else:
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else size - 1
            end = min(end, size - 1)
        if start >= size or start > end:
            return _unsatisfiable(size)
        fh = open(path, "rb")
        fh.seek(start)
        remaining = end - start + 1

        def chunks(f=fh, n=remaining):
            try:
                while n > 0:
                    data = f.read(min(65536, n))
                    if not data:
                        break
                    n -= len(data)
                    yield data
            finally:
                f.close()

        partial = StreamingHttpResponse(chunks(), status=206, content_type=content_type)
        partial["Content-Range"] = f"bytes {start}-{end}/{size}"
        partial["Content-Length"] = str(remaining)
        partial["Accept-Ranges"] = "bytes"
        return _blind(partial)
    whole = FileResponse(open(path, "rb"), content_type=content_type)
    whole["Content-Length"] = str(size)
    whole["Accept-Ranges"] = "bytes"
    return _blind(whole)


def _unsatisfiable(size: int) -> HttpResponse:
    response = HttpResponse(status=416)
    response["Content-Range"] = f"bytes */{size}"
    return _blind(response)


def report_file_response(report: Report) -> FileResponse:
    """A finished report bundle as a zip download (researchers only; not blinded)."""
    if report.status != Report.Status.DONE or not report.file:
        raise Http404("the report is not ready")
    path = Path(settings.MEDIA_ROOT) / report.file
    if not path.exists():
        raise Http404("the report file is gone")
    return FileResponse(open(path, "rb"), as_attachment=True, filename=path.name, content_type="application/zip")
