"""A small HTTP server for browser tests of the participant-side JavaScript.

It serves ``webmushra/static`` under ``/static/``, WAV files from a directory under
``/s/<name>``, the harness pages of ``tests/browser/harness`` rendered with Django's
template engine (so the real ``_mushra_player.html`` / ``_headphone_check.html`` fragments
are exercised), and records every POST under ``/p/``.

Control (JSON over HTTP, for the tests):
  POST /__harness__/config  {"pages": {name: {"template": "trial.html", "context": {...}}},
                             "saves": {"fail_first": 2, "fail_status": 503,
                                       "status": 200, "body": {...}}}
                            replaces the configuration and forgets recorded POSTs
  GET  /__harness__/posts   the recorded POSTs: [{"path", "headers", "body", "status"}]
Pages: GET /page/<name> renders the configured page; GET /done/... is a plain "next page".

Run standalone: ``python tests/browser/harness_server.py --wav-dir DIR [--port 8000]``;
prints ``READY http://127.0.0.1:<port>`` once it listens.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

REPO = Path(__file__).resolve().parents[2]
STATIC_DIR = REPO / "webmushra" / "static"
TEMPLATE_DIRS = [REPO / "webmushra" / "templates", Path(__file__).resolve().parent / "harness"]


def _template_engine() -> Any:
    """A standalone Django template engine with the ``static`` and translation libraries (the
    player's partials mark their texts; with no app installed they render in English)."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(STATIC_URL="/static/", INSTALLED_APPS=[], USE_TZ=True)
        django.setup()
    from django.template import Engine

    libraries = {
        "static": "django.templatetags.static",
        "i18n": "django.templatetags.i18n",
        "webmushra_i18n": "webmushra.templatetags.webmushra_i18n",
    }
    return Engine(dirs=[str(d) for d in TEMPLATE_DIRS], libraries=libraries, debug=True)


class HarnessState:
    """Configuration and recorded POSTs, shared by the handler threads."""

    def __init__(self, wav_dir: Path) -> None:
        self.wav_dir = wav_dir
        self.lock = threading.Lock()
        self.config: dict[str, Any] = {"pages": {}, "saves": {}}
        self.posts: list[dict[str, Any]] = []
        self.failures_left = 0
        self.replies: dict[str, dict[str, Any]] = {}
        self.engine = _template_engine()

    def configure(self, config: dict[str, Any]) -> None:
        with self.lock:
            self.config = {
                "pages": config.get("pages", {}),
                "saves": config.get("saves", {}),
                # Seconds each stimulus waits before it is answered (a slow network).
                "stimulus_delay_s": float(config.get("stimulus_delay_s", 0.0)),
            }
            self.posts = []
            self.replies = {}
            self.failures_left = int(self.config["saves"].get("fail_first", 0))

    def answer_post(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any]]:
        """Record a POST and decide the reply, as the real endpoints would (idempotent on the key)."""
        try:
            body: Any = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
        with self.lock:
            saves = self.config["saves"]
            if body is None:
                status, reply = 400, {"error": "the request body is not valid JSON"}
            elif self.failures_left > 0:
                self.failures_left -= 1
                status, reply = int(saves.get("fail_status", 503)), {"error": "temporarily unavailable"}
            else:
                key = body.get("idempotency_key") if isinstance(body, dict) else None
                status = int(saves.get("status", 200))
                reply = saves.get("body", {"saved": True, "next_url": "/done/next"})
                if status == 200 and key in self.replies:
                    reply = self.replies[key]
                elif status == 200 and key:
                    self.replies[key] = reply
            self.posts.append({"path": path, "headers": headers, "body": body, "status": status})
            return status, reply


class Handler(BaseHTTPRequestHandler):
    server_version = "harness/1"
    state: HarnessState

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if os.environ.get("HARNESS_LOG"):
            super().log_message(format, *args)

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode("utf-8"), "application/json")

    def _file(self, base: Path, rel: str) -> None:
        path = (base / rel).resolve()
        if base.resolve() not in path.parents or not path.is_file():
            self._send(404, b"not found", "text/plain")
            return
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix == ".js":
            kind = "text/javascript; charset=utf-8"
        self._send(200, path.read_bytes(), kind)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = unquote(urlsplit(self.path).path)
        state = self.state
        if path.startswith("/static/"):
            self._file(STATIC_DIR, path[len("/static/") :])
        elif path.startswith("/s/"):
            time.sleep(state.config["stimulus_delay_s"])
            self._file(state.wav_dir, path[len("/s/") :])
        elif path.startswith("/page/"):
            page = state.config["pages"].get(path[len("/page/") :])
            if page is None:
                self._send(404, b"no such page configured", "text/plain")
                return
            html = state.engine.get_template(page["template"]).render(_context(page.get("context", {})))
            self._send(200, html.encode("utf-8"), "text/html; charset=utf-8")
        elif path.startswith("/done/"):
            self._file(TEMPLATE_DIRS[1], "done.html")
        elif path == "/__harness__/posts":
            with state.lock:
                self._json(200, list(state.posts))
        else:
            self._send(404, b"not found", "text/plain")

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        path = unquote(urlsplit(self.path).path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path == "/__harness__/config":
            self.state.configure(json.loads(raw.decode("utf-8")))
            self._json(200, {"ok": True})
        elif path.startswith("/p/"):
            headers = {k: self.headers.get(k, "") for k in ("Content-Type", "X-CSRFToken")}
            status, reply = self.state.answer_post(path, headers, raw)
            self._json(status, reply)
        else:
            self._send(404, b"not found", "text/plain")


def _context(values: dict[str, Any]) -> Any:
    from django.template import Context

    return Context(values)


def make_server(wav_dir: Path, port: int = 0) -> ThreadingHTTPServer:
    """Bind the harness on 127.0.0.1 (port 0: any free port)."""
    state = HarnessState(wav_dir)
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wav-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.wav_dir.is_dir():
        parser.error(f"--wav-dir {args.wav_dir} is not a directory")
    server = make_server(args.wav_dir, args.port)
    print(f"READY http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
