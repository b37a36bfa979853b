"""Shared fixtures: real Celery worker processes, services required under CI, test material."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.paths import REPO, fixture_path

IN_CI = os.environ.get("CI", "").lower() == "true"
# Tests name the kernel they check; a measured choice (modelrunner.pathchoice) would make it
# depend on the machine's load. tests/modelrunner/test_pathchoice.py tests the choice itself.
os.environ.setdefault("MODELRUNNER_RENDER_PATH", "compiled")


def require(condition: bool, message: str) -> None:
    """Skip when a real component is missing; under CI=true that is a failure instead."""
    if not condition:
        if IN_CI:
            pytest.fail(f"required under CI: {message}")
        pytest.skip(message)


#: Markers by folder (tests/<folder>/...): what every test there starts.
FOLDER_MARKERS = {"browser": ("browser",), "integration": ("integration",), "faults": ("integration",)}
#: Folders whose tests share session-wide servers: under pytest-xdist one process runs each.
XDIST_GROUPS = ("faults",)
#: Folders whose files each start what they share (browsers, a harness server) in whichever
#: process runs them: under pytest-xdist one process runs each file, so a file's tests keep
#: their order, and the files are spread over the processes.
XDIST_FILE_GROUPS = ("browser",)
#: Markers by fixture, wherever the test lives: real browsers, and real servers or workers.
FIXTURE_MARKERS = {
    "browser": "browser",
    "page": "browser",
    "any_page": "browser",
    "firefox": "browser",
    "webkit": "browser",
    "harness": "browser",
    "start_worker": "integration",
    "worker_env": "integration",
    "live_server": "integration",
    "stack": "integration",
}


def markers_for(path: Path, fixturenames: Iterable[str]) -> set[str]:
    """The markers a test gets from its folder and its fixtures."""
    parts = path.relative_to(Path(__file__).parent).parts if path.is_relative_to(Path(__file__).parent) else ()
    names = set(FOLDER_MARKERS.get(parts[0], ())) if len(parts) > 1 else set()
    return names | {m for f, m in FIXTURE_MARKERS.items() if f in fixturenames}


#: The longest groups and files (measured: a minute or more each in ``make test``), in the order
#: test processes should start them: pytest-xdist hands out work in collection order, so the
#: long ones go first and the short ones fill the gaps at the end.
LONG_FIRST = (
    "browser/test_session.py",
    "integration/test_rehearsal.py",
    "browser/test_paradigm_pages.py",
    "browser/test_player.py",
    "faults/",
    "test_packaging.py",
    "hostile/test_peak_memory.py",
    "browser/",
    "integration/test_render_policy.py",
)


def _long_first(item: pytest.Item) -> int:
    path = (
        item.path.relative_to(Path(__file__).parent).as_posix()
        if item.path.is_relative_to(Path(__file__).parent)
        else ""
    )
    return next((i for i, prefix in enumerate(LONG_FIRST) if path.startswith(prefix)), len(LONG_FIRST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by folder and by the fixtures they use, so ``-m "not integration and not browser"``
    (``make test-fast``) never starts a browser, a server or a worker. Under pytest-xdist
    (``-n``), the files of ``LONG_FIRST`` go first, each file's tests in their order."""
    xdist = config.pluginmanager.hasplugin("xdist")
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a test process of ``-n``: the controller collects nothing
        items.sort(key=_long_first)  # stable: the order within a file and among the rest is kept
    for item in items:
        names = markers_for(item.path, getattr(item, "fixturenames", ()))
        for name in sorted(names - {m.name for m in item.iter_markers()}):
            item.add_marker(name)
        if _runs_in_firefox(item):
            from tests.browser.firefox import BrowserHung

            # A deadlock inside Firefox (see BrowserHung), told apart from any other failure by
            # the kernel's view of its main thread: the test runs once more, in a fresh browser.
            item.add_marker(pytest.mark.flaky(reruns=1, only_rerun=[BrowserHung]))
        folder = item.path.parent.name
        if xdist and item.path.parent.parent == Path(__file__).parent:
            # With --dist loadgroup, one test process runs the folder (one server stack) or the file.
            if folder in XDIST_GROUPS:
                item.add_marker(pytest.mark.xdist_group(folder))
            elif folder in XDIST_FILE_GROUPS:
                item.add_marker(pytest.mark.xdist_group(f"{folder}/{item.path.name}"))


def _runs_in_firefox(item: pytest.Item) -> bool:
    """A test with a Firefox of its own (the ``firefox`` fixture, or ``any_page``'s Firefox)."""
    callspec = getattr(item, "callspec", None)
    return "firefox" in getattr(item, "fixturenames", ()) or (
        callspec is not None and any(isinstance(v, str) and v == "firefox" for v in callspec.params.values())
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``BROWSER_REPEAT=N`` (``make test-browsers-repeat``) runs every browser test N times."""
    repeat = int(os.environ.get("BROWSER_REPEAT") or 1)
    definition = metafunc.definition
    if repeat > 1 and (
        "browser" in markers_for(definition.path, metafunc.fixturenames) or any(definition.iter_markers("browser"))
    ):
        metafunc.fixturenames.append("_browser_repeat")
        metafunc.parametrize("_browser_repeat", range(1, repeat + 1), indirect=True, ids=lambda i: f"run{i}")


@pytest.fixture
def _browser_repeat(request: pytest.FixtureRequest) -> int:
    """Which of the ``BROWSER_REPEAT`` runs this is."""
    return request.param


def pytest_configure(config: pytest.Config) -> None:
    """Refuse pytest-xdist workers that would share one broker folder, cache and var/."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and Path(os.environ.get("VAR_DIR", "")).name != worker:
        raise pytest.UsageError(f"pytest-xdist worker {worker} shares VAR_DIR: run it with -p tests.isolation")


def database_url_for_workers() -> str:
    """The URL of the database the tests use right now (the test database)."""
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Worker:
    """A real ``celery worker`` process consuming the render and default queues.

    ``beat`` embeds the periodic scheduler (the reaper); ``prefix`` runs it through another
    command (e.g. ``setpriv``); ``preexec`` runs in the child before exec (resource limits);
    ``args`` are more worker options (e.g. ``--max-tasks-per-child``).
    """

    def __init__(
        self,
        env: dict[str, str],
        queues: str = "render,default",
        *,
        beat: bool = False,
        prefix: list[str] | None = None,
        preexec=None,
        args: list[str] | None = None,
    ) -> None:
        self.name = f"test-{uuid.uuid4().hex[:8]}@%h"
        self.args = args or []
        self.env = env
        self.queues = queues
        self.beat = beat
        self.prefix = prefix or []
        self.preexec = preexec
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> Worker:
        cmd = [
            *self.prefix,
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            self.queues,
            "-c",
            "1",
            "-P",
            "prefork",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            self.name,
            "-l",
            "INFO",
            *self.args,
        ]
        if self.beat:
            schedule = Path(self.env.get("VAR_DIR", "var")) / f"beat-{self.name.split('@')[0]}"
            cmd += ["-B", "-s", str(schedule)]
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=self.preexec,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(" ready." in line for line in self.lines):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("celery worker did not start:\n" + "".join(self.lines[-40:]))

    def _pump(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line)

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children), as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def log(self) -> str:
        return "".join(self.lines)


@pytest.fixture(autouse=True)
def _no_rate_limits(request):
    """Tests make many sessions from 127.0.0.1; the limiter's own tests switch it back on."""
    if request.config.pluginmanager.hasplugin("django"):
        request.getfixturevalue("settings").RATELIMIT_ENABLED = False
    yield


@pytest.fixture
def worker_env(transactional_db, settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url_for_workers(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        VAR_DIR=str(Path(settings.VAR_DIR)),
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
    )
    return env


@pytest.fixture
def start_worker(worker_env):
    """Start real worker processes; all are stopped at the end of the test."""
    workers: list[Worker] = []

    def start(**overrides: str) -> Worker:
        w = Worker({**worker_env, **overrides}).start()
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop()


@pytest.fixture(autouse=True)
def _media_root(request, tmp_path_factory):
    """Each Django test gets its own media folder (shared with the workers it starts)."""
    if not request.config.pluginmanager.hasplugin("django"):
        yield None
        return
    settings = request.getfixturevalue("settings")
    media = tmp_path_factory.mktemp("media")
    settings.MEDIA_ROOT = media
    yield media


#: The fixtures that give a test the database, and with it services that send task messages.
DATABASE_FIXTURES = frozenset({"db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback"})


@contextlib.contextmanager
def _broker_channel():
    """A channel of the configured broker, on one connection."""
    from config.celery import app

    with app.connection_for_write() as conn:
        yield conn.default_channel


def _on_queue(call: Callable[[str], int | None], queue: str) -> int:
    """``call(queue)`` (a purge or a passive declare): a queue that does not exist yet (nothing
    was ever sent to it) holds 0 messages."""
    try:
        return call(queue) or 0
    except Exception:  # noqa: BLE001 - the queue does not exist yet
        return 0


@pytest.fixture(autouse=True)
def _empty_broker(request):
    """A test that reaches the database starts with the broker's queues empty, as it starts with
    its tables empty. A message an earlier test left names rows that no longer exist, yet a worker
    started now takes it before the test's own: one message a second on the filesystem broker
    (kombu's polling interval while a message is unacknowledged), so a hundred of them held a
    test's render for over 90 s. Set up before the test's own fixtures, which may send messages."""
    if not request.config.pluginmanager.hasplugin("django") or not (
        DATABASE_FIXTURES & set(request.fixturenames) or request.node.get_closest_marker("django_db")
    ):
        return
    from django.conf import settings

    queues = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()} | {settings.CELERY_TASK_DEFAULT_QUEUE}
    with _broker_channel() as channel:
        for queue in sorted(queues):
            _on_queue(channel.queue_purge, queue)


@pytest.fixture
def broker_is_empty(settings):
    """Return the number of messages waiting in a queue of the configured broker."""

    def count(queue: str = "render") -> int:
        with _broker_channel() as channel:
            return _on_queue(lambda q: channel.queue_declare(queue=q, passive=True).message_count, queue)

    return count


# ----------------------------------------------------------------------------- material


def device(x: np.ndarray) -> np.ndarray:
    """A stand-in "device" for tests: asymmetric soft clipping."""
    return (0.5 * np.tanh(3.0 * x + 0.2) - 0.5 * np.tanh(0.2)).astype(np.float32)


@pytest.fixture
def excerpt_files(tmp_path):
    """A real guitar excerpt (shared fixture) and its "device" recording, as WAV files."""
    import soundfile as sf

    def make(seconds: float = 2.0, offset: float = 0.0, name: str = "guitar") -> tuple[Path, Path]:
        audio, sr = sf.read(fixture_path("audio", "guitar_example_44k.wav"), dtype="float32", always_2d=True)
        start = int(offset * sr)
        n = int(seconds * sr)
        dry = audio[start : start + n, :1]
        if dry.shape[0] < n:
            dry = np.resize(dry, (n, 1))
        dry_path, ref_path = tmp_path / f"{name}_dry.wav", tmp_path / f"{name}_device.wav"
        sf.write(dry_path, dry, sr, subtype="FLOAT")
        sf.write(ref_path, device(dry), sr, subtype="FLOAT")
        return dry_path, ref_path

    return make


@pytest.fixture
def researcher(django_user_model):
    return django_user_model.objects.create_user("researcher", "r@example.org", "a-long-password-1")


@pytest.fixture
def build_experiment(researcher, excerpt_files):
    """An experiment with real excerpts and real checkpoints (not rendered)."""
    from webmushra.services import experiments, uploads

    def build(
        n_excerpts: int = 2,
        seconds: float = 2.0,
        checkpoints: tuple[str, ...] = ("ht1_lstm32.json",),
        anchors: bool = True,
        config: dict | None = None,
        training_excerpt: bool | None = None,
    ):
        """``training_excerpt``: add one more excerpt, for training only (default: when training is on)."""
        exp = experiments.create_experiment(
            owner=researcher, title="Test", sample_rate=48000, anchors=anchors, config=config or {}
        )
        for i in range(n_excerpts):
            dry, ref = excerpt_files(seconds=seconds, offset=i * 1.0, name=f"x{i}")
            uploads.add_excerpt(experiment=exp, name=f"Excerpt {i + 1}", dry=dry, reference=ref)
        if training_excerpt if training_excerpt is not None else (config or {}).get("training", True):
            dry, ref = excerpt_files(seconds=seconds, offset=n_excerpts * 1.0 + 0.5, name="practice")
            uploads.add_excerpt(experiment=exp, name="Practice", dry=dry, reference=ref, is_training=True)
        for j, name in enumerate(checkpoints):
            ckpt = uploads.add_checkpoint(experiment=exp, name=name, file=fixture_path("models", "coreaudioml", name))
            experiments.add_model_condition(
                experiment=exp, checkpoint=ckpt, label=f"Model {j + 1}", knobs={k: 0.5 for k in ckpt.knob_names}
            )
        return exp

    return build


def wait_for(predicate, timeout: float = 120, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
#: Headless Chromium on a machine with no network: no background traffic, no sandbox (root).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="session")
def browser():
    """One Playwright and one headless Chromium for the whole run (two sync Playwrights clash)."""
    require(CHROMIUM.exists(), f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the tests' own ORM calls are
    # still synchronous, so Django's async-safety check must not refuse them.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as pw:
        # launch() gives every run a fresh temporary profile (user data dir).
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


#: A JavaScript expression for the MUSHRA page's player as the tests see it (it sets no global):
#: ``{state(), telemetry(), context}``, filled in by the player when its ``.wm`` element gets the
#: ``mushra:inspect`` event (webmushra/static/webmushra/mushra.js); ``state()`` is null until it has started.
PLAYER_JS = (
    "(() => { const d = {state: () => null, telemetry: () => null, context: null};"
    " const root = document.querySelector('.wm');"
    " if (root) root.dispatchEvent(new CustomEvent('mushra:inspect', {detail: d})); return d; })()"
)


#: What every trial page's player holds once (webmushra/participant/_player_controls.html):
#: the bar, its transport, save and messages, and the waveform with its loop handles.
PLAYER_CONTROLS = (
    'class="wm-bar"',
    'class="btn wm-playpause"',
    'class="btn wm-stop"',
    'class="btn primary wm-submit"',
    'class="wm-missing"',
    'class="wm-wavebox"',
    'class="wm-wave"',
    'class="wm-handle wm-handle-start"',
    'class="wm-handle wm-handle-end"',
)


def assert_player_controls_once(html: str) -> None:
    """A trial page's player controls, each exactly once (no copy left by an include)."""
    counts = {marker: html.count(marker) for marker in PLAYER_CONTROLS}
    assert counts == dict.fromkeys(PLAYER_CONTROLS, 1), counts


def evaluate_across_navigation(page, expression: str) -> Any:
    """``page.evaluate(expression)``, or ``None`` when the page navigated (or reloaded) while it
    was asked: the caller asks again."""
    try:
        return page.evaluate(expression)
    except Exception as exc:
        if "context was destroyed" not in str(exc) and "navigat" not in str(exc):
            raise
        return None


def wait_js(page, expression: str, timeout: float = 30_000, interval: float = 50) -> None:
    """Wait until a JavaScript expression is truthy in ``page``.

    Polls with ``page.evaluate`` (run by the browser's debugging protocol) instead of
    Playwright's ``wait_for_function``, which the participant pages' Content-Security-Policy
    rightly blocks as ``eval``.
    """
    deadline = time.monotonic() + timeout / 1000
    while True:
        if evaluate_across_navigation(page, f"() => Boolean({expression})"):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout / 1000:.0f} s waiting for {expression}")
        page.wait_for_timeout(interval)


@pytest.fixture
def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    require(os.path.exists(path), "Debian chromium is not installed (apt-get install chromium)")
    return path
