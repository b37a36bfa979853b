"""A whole deployment in throwaway processes, for breaking parts of it on purpose.

One PostgreSQL and one Redis (``tests/stack.py``, free ports, never the machine's own
services), migrated once per session; a gunicorn web server; Celery workers each test
starts with its own settings. The tests talk to the web server over HTTP, read the
database with plain SQL, and set up experiments through ``tests/faults/_scenario.py``
run with the server's environment. Nothing here uses pytest-django's database.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Worker, require, wait_for
from tests.paths import REPO, fixture_path
from tests.stack import PostgresServer, RedisServer, _wait_port, free_port

CHECKPOINT = ("models", "coreaudioml", "ht1_lstm32.json")
GUITAR = ("audio", "guitar_example_44k.wav")
#: The open experiment every rating test draws participants from.
RATING_EXCERPTS = 3


# ----------------------------------------------------------------------------- HTTP


@dataclass
class Reply:
    status: int | None  # None: no HTTP answer at all (connection refused or reset)
    body: bytes
    url: str

    def json(self) -> Any:
        return json.loads(self.body.decode())


class Client:
    """A cookie-keeping HTTP client that sends Django's CSRF token the way a browser page does."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def cookie(self, name: str) -> str:
        return next((c.value for c in self.jar if c.name == name), "")

    def _send(self, request: urllib.request.Request, timeout: float) -> Reply:
        try:
            with self.opener.open(request, timeout=timeout) as reply:
                return Reply(reply.status, reply.read(), reply.url)
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.read(), exc.url)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            return Reply(None, str(exc).encode(), request.full_url)

    def get(self, path: str, timeout: float = 30, headers: dict[str, str] | None = None) -> Reply:
        return self._send(urllib.request.Request(self.base_url + path, headers=headers or {}), timeout)

    def ensure_csrf_cookie(self, path: str) -> None:
        """Get a CSRF cookie from the page, or make one (as any client may) when the page sets none."""
        if not self.cookie("csrftoken"):
            self.get(path)
        if not self.cookie("csrftoken"):
            host = urllib.parse.urlsplit(self.base_url).hostname or "127.0.0.1"
            self.jar.set_cookie(
                http.cookiejar.Cookie(
                    0,
                    "csrftoken",
                    secrets.token_hex(16),
                    None,
                    False,
                    host,
                    False,
                    False,
                    "/",
                    True,
                    False,
                    None,
                    False,
                    None,
                    None,
                    {},
                )
            )

    def post_form(self, path: str, data: dict[str, str], timeout: float = 30) -> Reply:
        self.ensure_csrf_cookie(path)
        body = urllib.parse.urlencode({**data, "csrfmiddlewaretoken": self.cookie("csrftoken")}).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=body,
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Referer": self.base_url + path},
        )
        return self._send(request, timeout)

    def post_json(self, path: str, data: Any, timeout: float = 30) -> Reply:
        request = urllib.request.Request(
            self.base_url + path,
            data=json.dumps(data).encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "X-CSRFToken": self.cookie("csrftoken"),
                "Referer": self.base_url + path,
            },
        )
        return self._send(request, timeout)


_TRIAL_DATA = re.compile(r'<script id="trial-data" type="application/json">(.*?)</script>', re.S)


def trial_data(reply: Reply) -> dict[str, Any]:
    """The player's JSON embedded in a trial page."""
    match = _TRIAL_DATA.search(reply.body.decode())
    assert reply.status == 200 and match, f"not a trial page ({reply.status}, {reply.url}): {reply.body[:300]!r}"
    return json.loads(match.group(1))


# ----------------------------------------------------------------------------- processes


#: Fault tests use the shared worker class with its beat, prefix and preexec options.
FaultWorker = Worker


@dataclass
class Stack:
    """Handles on the servers, the web process and the shared media folder."""

    pg: PostgresServer
    redis: RedisServer
    var_dir: Path
    env: dict[str, str]
    web_url: str = ""
    web: subprocess.Popen | None = None
    setup_proc: subprocess.Popen | None = None
    workers: list[FaultWorker] = field(default_factory=list)

    @property
    def media(self) -> Path:
        return Path(self.env["MEDIA_ROOT"])

    # -- running Django code with the server's settings

    def scenario(self, command: str, timeout: float = 180, **kwargs: Any) -> dict[str, Any]:
        """Run a set-up step of ``_scenario.py`` in its long-lived process (started on first use)."""
        if self.setup_proc is None or self.setup_proc.poll() is not None:
            self.setup_proc = subprocess.Popen(
                [sys.executable, "-m", "tests.faults._scenario", "--serve"],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        assert self.setup_proc.stdin and self.setup_proc.stdout
        self.setup_proc.stdin.write(json.dumps({"command": command, "kwargs": kwargs}) + "\n")
        self.setup_proc.stdin.flush()
        ready, _, _ = select.select([self.setup_proc.stdout], [], [], timeout)
        if not ready:
            _stop(self.setup_proc)
            raise AssertionError(f"scenario {command} gave no answer in {timeout} s")
        line = self.setup_proc.stdout.readline()
        if not line:
            raise AssertionError(f"the scenario process exited ({self.setup_proc.poll()}) during {command}")
        answer = json.loads(line)
        if "error" in answer:
            raise AssertionError(f"scenario {command} failed:\n{answer['error'][-4000:]}")
        return answer["ok"]

    def manage(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def build(self, tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
        return self.scenario(
            "build",
            guitar=str(fixture_path(*GUITAR)),
            checkpoint=str(fixture_path(*CHECKPOINT)),
            material=str(tmp_path),
            **kwargs,
        )

    # -- reading the database directly

    def sql(self, query: str, params: tuple | dict = ()) -> list[tuple]:
        return self.pg.query(query, params)

    def jobs(self, experiment: int) -> list[dict[str, Any]]:
        rows = self.sql(
            "SELECT id, kind, status, attempts, error, condition_id, excerpt_id, output_file "
            "FROM webmushra_renderjob WHERE experiment_id = %s ORDER BY id",
            (experiment,),
        )
        keys = ("id", "kind", "status", "attempts", "error", "condition_id", "excerpt_id", "output_file")
        return [dict(zip(keys, row)) for row in rows]

    def experiment_status(self, experiment: int) -> str:
        return self.sql("SELECT status FROM webmushra_experiment WHERE id = %s", (experiment,))[0][0]

    def stimuli(self, experiment: int) -> list[tuple[int, int, str, int]]:
        """(excerpt, condition, file, size) of every stimulus row of an experiment."""
        return self.sql(
            "SELECT excerpt_id, condition_id, file, size FROM webmushra_stimulus "
            "WHERE experiment_id = %s ORDER BY excerpt_id, condition_id",
            (experiment,),
        )

    def wait_for_jobs(
        self, experiment: int, statuses: set[str], timeout: float = 180, worker: Worker | None = None
    ) -> list[dict[str, Any]]:
        def settled() -> list[dict[str, Any]] | None:
            jobs = self.jobs(experiment)
            return jobs if jobs and all(j["status"] in statuses for j in jobs) else None

        try:
            return wait_for(
                settled, timeout=timeout, interval=0.2, what=f"jobs of experiment {experiment} to be {statuses}"
            )
        except AssertionError as exc:
            log = worker.log[-3000:] if worker else ""
            raise AssertionError(f"{exc}; jobs: {self.jobs(experiment)}\n{log}") from None

    # -- processes

    def worker(
        self,
        *,
        beat: bool = False,
        prefix: list[str] | None = None,
        preexec: Callable[[], None] | None = None,
        **env: str,
    ) -> FaultWorker:
        w = FaultWorker({**self.env, **env}, beat=beat, prefix=prefix, preexec=preexec)
        self.workers.append(w)
        return w.start()

    def stop_workers(self) -> None:
        while self.workers:
            self.workers.pop().stop()

    def web_log(self) -> str:
        path = self.var_dir / "web.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def ensure_up(self) -> None:
        """Bring back any server a failed test left stopped."""
        if self.redis.proc is None or self.redis.proc.poll() is not None:
            self.redis.start()
        if not (self.pg.data / "postmaster.pid").exists():
            self.pg.start()


def _start_web(stack: Stack) -> None:
    port = free_port()
    log = open(stack.var_dir / "web.log", "ab")
    stack.web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "4",
            "--timeout",
            "60",
            "--graceful-timeout",
            "5",
        ],
        cwd=REPO,
        env=stack.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    _wait_port(port, 60, stack.web)
    stack.web_url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: Client(stack.web_url).get("/healthz").status == 200,
        timeout=60,
        interval=0.2,
        what="the web server to answer /healthz",
    )


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    require(shutil.which("redis-server") is not None, "redis-server is not installed")
    require(
        any(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or shutil.which("initdb") is not None,
        "PostgreSQL is not installed",
    )
    fixture_path(*CHECKPOINT)
    fixture_path(*GUITAR)
    # Outside pytest's private (0700) temp root, so a worker running as another user can reach it.
    var_dir = Path(tempfile.mkdtemp(prefix="fault-stack-"))
    var_dir.chmod(0o750)
    pg, redis = PostgresServer(), RedisServer()
    env = dict(os.environ)
    for name in ("DJANGO_SETTINGS_MODULE", "RENDER_STALE_SECONDS", "RENDER_RESEND_SECONDS", "REAPER_INTERVAL_SECONDS"):
        env.pop(name, None)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=pg.url,
        CELERY_BROKER_URL=redis.url,
        VAR_DIR=str(var_dir),
        MEDIA_ROOT=str(var_dir / "media"),
        SECRET_KEY="fault-tests-" + "x" * 40,
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        LOG_LEVEL="WARNING",
        DEBUG="",
    )
    s = Stack(pg=pg, redis=redis, var_dir=var_dir, env=env)
    try:
        pg.start()
        redis.start()
        migrated = s.manage("migrate", "--noinput", "-v0", timeout=300)
        assert migrated.returncode == 0, migrated.stderr[-3000:]
        s.scenario("researcher")
        _start_web(s)
        yield s
    finally:
        s.stop_workers()
        _stop(s.web)
        _stop(s.setup_proc)
        redis.close()
        pg.close()
        shutil.rmtree(var_dir, ignore_errors=True)


@pytest.fixture
def fault_stack(stack: Stack) -> Iterator[Stack]:
    """The session's stack with every server up at the start; this test's workers stopped at its end."""
    stack.ensure_up()
    yield stack
    stack.stop_workers()
    stack.ensure_up()


@pytest.fixture(scope="session")
def rating_experiment(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An open experiment (rendered by a real worker) that rating tests start participants on.

    The player's rules are relaxed (no play-all requirement, no minimum time) so a browser test
    can rate without listening; the trials and the saving path are unchanged.
    """
    material = tmp_path_factory.mktemp("rating-material")
    built = stack.build(
        material,
        excerpts=RATING_EXCERPTS,
        seconds=1.0,
        render=True,
        title="Rating",
        config={
            "training": False,
            "level_setting": True,
            "rules": {
                "must_play_all": False,
                "only_playing_slider_moves": False,
                "require_one_100": False,
                "min_trial_seconds": 0,
            },
        },
    )
    worker = stack.worker()
    try:
        stack.wait_for_jobs(built["experiment"], {"done"}, timeout=240, worker=worker)
    finally:
        stack.workers.remove(worker)
        worker.stop()
    assert stack.experiment_status(built["experiment"]) == "ready"
    stack.scenario("open", experiment=built["experiment"])
    return built


def start_session(stack: Stack, public_token: str) -> tuple[Client, str]:
    """A participant who consented and set the level; returns the client and the participant token."""
    client = Client(stack.web_url)
    landing = f"/t/{public_token}/"
    assert client.get(landing).status == 200
    reply = client.post_form(landing, {})
    assert reply.status == 200 and "/consent/" in reply.url, (reply.status, reply.url, stack.web_log())
    token = reply.url.rstrip("/").split("/")[-2]
    reply = client.post_form(f"/p/{token}/consent/", {"agree": "yes"})
    assert reply.status == 200 and "/level/" in reply.url, (reply.status, reply.url)
    reply = client.post_form(f"/p/{token}/level/", {"gain_db": "0"})
    assert reply.status == 200 and reply.url.endswith("/trial/1/"), (reply.status, reply.url)
    return client, token


def expected_ratings(stack: Stack, token: str, sent: dict[int, dict[str, int]]) -> dict[tuple[int, int], int]:
    """(trial, condition) -> score, from the participant's stored plan and the keyed scores sent per trial index."""
    plan = stack.sql("SELECT plan FROM webmushra_participant WHERE token = %s", (token,))[0][0]
    out: dict[tuple[int, int], int] = {}
    for index, ratings in sent.items():
        entry = plan[index]
        for i, cid in enumerate(entry["conditions"]):
            out[(entry["trial"], cid)] = ratings[chr(ord("a") + i)]
    return out


def stored_ratings(stack: Stack, token: str) -> dict[tuple[int, int], int]:
    rows = stack.sql(
        "SELECT r.trial_id, r.condition_id, r.score FROM webmushra_rating r "
        "JOIN webmushra_participant p ON p.id = r.participant_id WHERE p.token = %s",
        (token,),
    )
    return {(t, c): s for t, c, s in rows}


def responses_per_trial(stack: Stack, token: str) -> dict[int, int]:
    rows = stack.sql(
        "SELECT r.trial_id, count(*) FROM webmushra_trialresponse r "
        "JOIN webmushra_participant p ON p.id = r.participant_id WHERE p.token = %s "
        "GROUP BY r.trial_id",
        (token,),
    )
    return dict(rows)


def media_leftovers(root: Path) -> list[Path]:
    """Temporary files a writer left behind under a media folder."""
    return sorted(
        p for p in root.rglob("*") if p.is_file() and (p.name.startswith(".tmp-") or p.name.startswith("tmp"))
    )


def wav_is_complete(path: Path) -> bool:
    """True when the RIFF header's sizes agree with the file's length (nothing cut short)."""
    import struct

    data = path.read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return False
    if struct.unpack("<I", data[4:8])[0] + 8 != len(data):
        return False
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if chunk == b"data":
            return pos + 8 + size <= len(data)
        pos += 8 + size + (size & 1)
    return False
