"""The platform's JSON API (docs/api.md) from Python, with the standard library only.

Every method answers with the API's JSON as plain dicts and lists, shaped as ``/api/schema/``
types them. An answer other than 2xx raises :class:`ApiError` (or the subclass for its
status) carrying the HTTP status and the API's ``{"error"}`` message, which starts with the
field or file it concerns. An experiment, checkpoint, condition or job may be passed as its
id or as the dict the API answered with.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

#: A file to upload: a path, ``(file name, bytes)``, ``(file name, binary file)``, or an open
#: binary file (its ``name`` names the upload).
FileInput = str | os.PathLike[str] | tuple[str, bytes] | tuple[str, IO[bytes]] | IO[bytes]
#: An object of the API given by its id or by the dict the API answered with.
Ref = int | Mapping[str, Any]
#: Called with each status read while waiting for a render.
Progress = Callable[[dict[str, Any]], None]

#: Experiment states in which nothing renders any more and every cell is rendered.
RENDERED = frozenset({"ready", "open", "closed"})


class ApiError(Exception):
    """An answer other than 2xx: ``status`` (None when no answer came), ``message`` (the API's
    ``error``), ``body`` (the whole answer, parsed when it was JSON), ``method`` and ``url``."""

    def __init__(self, message: str, *, status: int | None = None, body: Any = None, method: str = "", url: str = ""):
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body
        self.method = method
        self.url = url

    def __str__(self) -> str:
        where = f"{self.method} {self.url}: " if self.method else ""
        code = f"{self.status} " if self.status is not None else ""
        return f"{where}{code}{self.message}"


class BadRequest(ApiError):
    """400: bad input; the message names the field or file."""


class Unauthorized(ApiError):
    """401: no token, or one the server does not know."""


class NotFound(ApiError):
    """404: no such object, or one this token may not see."""


class Conflict(ApiError):
    """409: not possible in the experiment's state (rendering, open, ...)."""


class ApiConnectionError(ApiError):
    """No answer: the server could not be reached or did not answer in time."""


class RenderFailed(ApiError):
    """The render ended without every cell rendered: ``jobs`` lists the failed (or cancelled)
    jobs with their errors; the experiment is editable again."""

    def __init__(self, message: str, *, jobs: list[dict[str, Any]], body: Any = None):
        super().__init__(message, body=body)
        self.jobs = jobs


class WaitTimeout(ApiError, TimeoutError):
    """The thing waited for did not happen in time; ``body`` is the last status read."""


_BY_STATUS: dict[int, type[ApiError]] = {400: BadRequest, 401: Unauthorized, 404: NotFound, 409: Conflict}


def _id(ref: Ref) -> int:
    value = ref.get("id") if isinstance(ref, Mapping) else ref
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an id or an object with an 'id', got {ref!r}")
    return value


def _read_file(file: FileInput) -> tuple[str, bytes]:
    """The upload's file name and content."""
    if isinstance(file, tuple):
        name, content = file
        data = content if isinstance(content, bytes) else content.read()
        return str(name), data
    if isinstance(file, (str, os.PathLike)):
        path = Path(file)
        return path.name, path.read_bytes()
    if isinstance(file, io.IOBase) or hasattr(file, "read"):
        data = file.read()
        if not isinstance(data, bytes):
            raise TypeError("open the file in binary mode ('rb')")
        return Path(str(getattr(file, "name", "upload"))).name, data
    raise TypeError(f"expected a path, (name, bytes) or a binary file, got {type(file).__name__}")


def _quote_header(value: str) -> str:
    """A form-data name or file name as browsers write it (WHATWG HTML: ``"``, CR, LF escaped)."""
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def encode_multipart(fields: Mapping[str, str], files: Mapping[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body (RFC 7578) and its Content-Type."""
    boundary = f"listening-client-{secrets.token_hex(16)}"
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote_header(name)}"\r\n\r\n'.encode())
        out.write(value.encode("utf-8") + b"\r\n")
    for name, (filename, data) in files.items():
        disposition = f'form-data; name="{_quote_header(name)}"; filename="{_quote_header(filename)}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: application/octet-stream\r\n\r\n"
        out.write(head.encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def print_progress(status: dict[str, Any]) -> None:
    """A progress line on standard error: overall percentage and jobs done."""
    counts = status.get("counts") or {}
    total = sum(counts.values())
    sys.stderr.write(
        f"\r{status.get('status', '?')}: {100 * float(status.get('overall') or 0):5.1f} % "
        f"({counts.get('done', 0)}/{total} jobs done)"
    )
    if status.get("status") != "rendering":
        sys.stderr.write("\n")
    sys.stderr.flush()


class Client:
    """The API at ``base_url`` (the site, e.g. ``http://127.0.0.1:8000``, or its ``/api/``),
    authenticated by a researcher's API token."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 120.0) -> None:
        base = base_url.rstrip("/")
        self.api_url = base if base.endswith("/api") else f"{base}/api"
        self.token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Client({self.api_url!r})"

    # --- HTTP

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        fields: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, bytes]] | None = None,
        query: Mapping[str, str] | None = None,
        raw: bool = False,
    ) -> Any:
        """Send one request to ``path`` (below ``/api/``); the parsed JSON answer (``None`` for
        204), or the bytes when ``raw``."""
        url = f"{self.api_url}/{path.lstrip('/')}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Authorization": f"Token {self.token}", "Accept": "*/*" if raw else "application/json"}
        data: bytes | None = None
        if files is not None or fields is not None:
            data, headers["Content-Type"] = encode_multipart(fields or {}, files or {})
        elif json_body is not None:
            data = json.dumps(json_body, allow_nan=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            raise self._error(exc.code, exc.read(), method, url) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiConnectionError(f"no answer ({reason})", method=method, url=url) from None
        if raw:
            return body
        if status == 204 or not body:
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise ApiError(f"the answer is not JSON: {body[:200]!r}", status=status, method=method, url=url) from None

    @staticmethod
    def _error(status: int, raw: bytes, method: str, url: str) -> ApiError:
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            message = body["error"]
        else:
            message = str(body).strip()[:500] or f"HTTP {status}"
        return _BY_STATUS.get(status, ApiError)(message, status=status, body=body, method=method, url=url)

    def _exp(self, experiment: Ref, rest: str = "") -> str:
        return f"experiments/{_id(experiment)}/{rest}"

    # --- experiments

    def experiments(self) -> list[dict[str, Any]]:
        """Your experiments and those shared with you."""
        result: list[dict[str, Any]] = self.request("GET", "experiments/")
        return result

    def create_experiment(
        self,
        title: str,
        *,
        description: str = "",
        sample_rate: int = 48000,
        anchors: bool = True,
        config: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A new experiment, with its hidden reference (and the two low-pass anchors)."""
        body = {
            "title": title,
            "description": description,
            "sample_rate": sample_rate,
            "anchors": anchors,
            "config": dict(config or {}),
        }
        result: dict[str, Any] = self.request("POST", "experiments/", json_body=body)
        return result

    def experiment(self, experiment: Ref) -> dict[str, Any]:
        """One experiment with its excerpts, checkpoints and conditions."""
        result: dict[str, Any] = self.request("GET", self._exp(experiment))
        return result

    def update_experiment(self, experiment: Ref, **changes: Any) -> dict[str, Any]:
        """Change texts and settings (``title``, ``instructions``, ``config`` (merged), ...)."""
        result: dict[str, Any] = self.request("PATCH", self._exp(experiment), json_body=changes)
        return result

    def delete_experiment(self, experiment: Ref) -> None:
        """Delete it with its files, participants and ratings (an open one: close it first)."""
        self.request("DELETE", self._exp(experiment))

    # --- material

    def excerpts(self, experiment: Ref) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", self._exp(experiment, "excerpts/"))
        return result

    def upload_excerpt(
        self, experiment: Ref, dry: FileInput, reference: FileInput, *, name: str = "", is_training: bool = False
    ) -> dict[str, Any]:
        """An excerpt: the dry input and the real device's recording of it (WAV or FLAC)."""
        fields = {"name": name, "is_training": "true" if is_training else "false"}
        files = {"dry": _read_file(dry), "reference": _read_file(reference)}
        result: dict[str, Any] = self.request("POST", self._exp(experiment, "excerpts/"), fields=fields, files=files)
        return result

    def checkpoints(self, experiment: Ref) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", self._exp(experiment, "checkpoints/"))
        return result

    def upload_checkpoint(
        self,
        experiment: Ref,
        file: FileInput,
        *,
        name: str = "",
        config: FileInput | Mapping[str, Any] | None = None,
        sample_rate: int | None = None,
    ) -> dict[str, Any]:
        """A checkpoint in any format the model runner reads (docs/formats.md); ``config``: the
        native format's JSON config, as a file or a dict. Answers with what was recognised."""
        fields = {"name": name}
        if sample_rate is not None:
            fields["sample_rate"] = str(int(sample_rate))
        files = {"file": _read_file(file)}
        if isinstance(config, Mapping):
            files["config"] = ("config.json", json.dumps(dict(config), allow_nan=False).encode("utf-8"))
        elif config is not None:
            files["config"] = _read_file(config)
        result: dict[str, Any] = self.request("POST", self._exp(experiment, "checkpoints/"), fields=fields, files=files)
        return result

    def conditions(self, experiment: Ref) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", self._exp(experiment, "conditions/"))
        return result

    def add_condition(
        self,
        experiment: Ref,
        checkpoint: Ref,
        label: str,
        *,
        knobs: Mapping[str, float] | None = None,
        display_name: str = "",
    ) -> dict[str, Any]:
        """A model condition: a checkpoint at knob settings, under a label (never shown to
        participants; ``display_name`` is what training trials show)."""
        body = {"checkpoint": _id(checkpoint), "label": label, "knobs": dict(knobs or {}), "display_name": display_name}
        result: dict[str, Any] = self.request("POST", self._exp(experiment, "conditions/"), json_body=body)
        return result

    def set_condition_ir(self, experiment: Ref, condition: Ref, file: FileInput) -> dict[str, Any]:
        """Attach or replace a model condition's cabinet impulse response (mono WAV/FLAC, <= 10 s)."""
        path = self._exp(experiment, f"conditions/{_id(condition)}/ir/")
        result: dict[str, Any] = self.request("PUT", path, files={"file": _read_file(file)})
        return result

    def remove_condition_ir(self, experiment: Ref, condition: Ref) -> dict[str, Any]:
        result: dict[str, Any] = self.request("DELETE", self._exp(experiment, f"conditions/{_id(condition)}/ir/"))
        return result

    # --- rendering

    def render(self, experiment: Ref, *, force: bool = False) -> dict[str, Any]:
        """Queue the render jobs for what changed or failed (``force``: every cell); the status."""
        query = {"force": "1"} if force else None
        result: dict[str, Any] = self.request("POST", self._exp(experiment, "render/"), query=query)
        return result

    def cancel_render(self, experiment: Ref) -> dict[str, Any]:
        """Stop rendering; finished cells are kept and the experiment is editable again."""
        result: dict[str, Any] = self.request("POST", self._exp(experiment, "render/cancel/"))
        return result

    def retry_job(self, experiment: Ref, job: Ref) -> dict[str, Any]:
        """Queue a failed or cancelled render job again."""
        result: dict[str, Any] = self.request("POST", self._exp(experiment, f"jobs/{_id(job)}/retry/"))
        return result

    def status(self, experiment: Ref) -> dict[str, Any]:
        """Render progress (``overall`` 0..1, ``counts``, every job) and participant counts."""
        result: dict[str, Any] = self.request("GET", self._exp(experiment, "status/"))
        return result

    def wait_for_render(
        self,
        experiment: Ref,
        *,
        timeout: float = 3600.0,
        interval: float = 1.0,
        progress: Progress | bool | None = None,
    ) -> dict[str, Any]:
        """Poll the status until nothing renders; the last status when every cell is rendered.

        ``progress``: called with each status read (``True``: a line on standard error).
        Raises :class:`RenderFailed` naming the failed or cancelled jobs when the render ended
        otherwise, and :class:`WaitTimeout` after ``timeout`` seconds."""
        report = print_progress if progress is True else progress or None
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(experiment)
            if report is not None:
                report(status)
            if status["status"] != "rendering":
                break
            if time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"experiment {_id(experiment)} still rendering after {timeout:g} s "
                    f"({100 * status['overall']:.0f} % done)",
                    body=status,
                )
            time.sleep(interval)
        unfinished = [j for j in status["jobs"] if j["status"] in ("failed", "canceled")]
        if status["status"] in RENDERED and not unfinished:
            return status
        if not status["jobs"]:
            raise ApiError(f"experiment {_id(experiment)} has no render jobs: call render() first", body=status)
        if not unfinished:
            unfinished = [j for j in status["jobs"] if j["status"] != "done"]
        lines = "; ".join(
            f"{j['condition'] or 'item'} x {j['excerpt']}: {j['status']}" + (f" ({j['error']})" if j["error"] else "")
            for j in unfinished
        )
        raise RenderFailed(f"experiment {_id(experiment)} is {status['status']}: {lines}", jobs=unfinished, body=status)

    # --- running the test

    def open(self, experiment: Ref) -> dict[str, Any]:
        """Publish; the answer's ``participant_url`` is the link to hand out."""
        result: dict[str, Any] = self.request("POST", self._exp(experiment, "open/"))
        return result

    def close(self, experiment: Ref) -> dict[str, Any]:
        """Stop new sessions."""
        result: dict[str, Any] = self.request("POST", self._exp(experiment, "close/"))
        return result

    def participants(self, experiment: Ref) -> list[dict[str, Any]]:
        """One row per participant session: stage, times, trials answered, flags, exclusion, pilot."""
        rows: list[dict[str, Any]] = self.request("GET", self._exp(experiment, "participants/"))["participants"]
        return rows

    # --- results

    def metrics(self, experiment: Ref) -> list[dict[str, Any]]:
        """Objective metrics: rows of ``condition, item, metric, value``."""
        rows: list[dict[str, Any]] = self.request("GET", self._exp(experiment, "metrics/"))["metrics"]
        return rows

    def ratings(self, experiment: Ref) -> dict[str, Any]:
        """``{"experiment", "ratings": [...], "catch_trials": [...], "repeat_trials": [...],
        "p808_checks": [...], "comments": [...]}`` (docs/api.md names the columns)."""
        result: dict[str, Any] = self.request("GET", self._exp(experiment, "ratings/"))
        return result

    def ratings_csv(self, experiment: Ref) -> str:
        data: bytes = self.request("GET", self._exp(experiment, "ratings.csv"), raw=True)
        return data.decode("utf-8")

    def mushra_csv(self, experiment: Ref) -> str:
        """The ratings in webMUSHRA's ``mushra.csv`` layout."""
        data: bytes = self.request("GET", self._exp(experiment, "mushra.csv"), raw=True)
        return data.decode("utf-8")

    def request_report(self, experiment: Ref) -> dict[str, Any]:
        """Start building a report bundle in the background."""
        result: dict[str, Any] = self.request("POST", self._exp(experiment, "report/"))
        return result

    def report(self, experiment: Ref) -> dict[str, Any]:
        """The latest report's ``status``, ``progress`` and, when done, ``download_url``."""
        result: dict[str, Any] = self.request("GET", self._exp(experiment, "report/"))
        return result

    def wait_for_report(self, experiment: Ref, *, timeout: float = 1800.0, interval: float = 1.0) -> dict[str, Any]:
        """Poll until the latest report is done; raises :class:`ApiError` with its error if it failed."""
        deadline = time.monotonic() + timeout
        while True:
            report = self.report(experiment)
            if report["status"] == "done":
                return report
            if report["status"] == "failed":
                raise ApiError(f"report {report['id']} failed: {report['error']}", body=report)
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"report {report['id']} not done after {timeout:g} s", body=report)
            time.sleep(interval)

    def download_report(self, experiment: Ref, dest: str | os.PathLike[str], *, report: Ref | None = None) -> Path:
        """Write a finished report bundle (ZIP; the latest unless ``report`` is given) to ``dest``
        (a file, or a folder to put ``report-<experiment>-<id>.zip`` in)."""
        report_id = _id(report) if report is not None else _id(self.report(experiment))
        data: bytes = self.request("GET", self._exp(experiment, f"report/{report_id}/download/"), raw=True)
        path = Path(dest)
        if path.is_dir():
            path = path / f"report-{_id(experiment)}-{report_id}.zip"
        path.write_bytes(data)
        return path
