"""Fixtures for browser tests: WAV stimuli, the harness server, and headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.browser.firefox import FIREFOX, Firefox
from tests.browser.webkit import DRIVER, MINIBROWSER, WebKit
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, require  # noqa: F401 - re-exported for the browser tests

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "var" / "test-artifacts" / "screenshots"
SAMPLE_RATE = 48000
SECONDS = 3.0
# One tone per stimulus, so a recording of the output tells which one played.
TONES = {"ref": 440.0, "a": 440.0, "b": 550.0, "c": 660.0, "d": 770.0}


def write_wav(path: Path, signal: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write a mono float signal in [-1, 1] as 16-bit PCM WAV."""
    pcm = np.clip(np.round(signal * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())


@pytest.fixture(scope="session")
def wav_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("stimuli")
    t = np.arange(int(SAMPLE_RATE * SECONDS)) / SAMPLE_RATE
    for name, freq in TONES.items():
        write_wav(folder / f"{name}.wav", 0.3 * np.sin(2 * np.pi * freq * t))
    # A 44.1 kHz set: the player must open its AudioContext at the stimuli's rate.
    t44 = np.arange(int(44100 * 2.0)) / 44100
    for name in ("ref", "a", "b"):
        write_wav(folder / f"{name}44.wav", 0.3 * np.sin(2 * np.pi * TONES[name] * t44), rate=44100)
    return folder


@dataclass
class Harness:
    """Handle on a running harness server."""

    base_url: str

    def configure(
        self, pages: dict[str, Any], saves: dict[str, Any] | None = None, stimulus_delay_s: float = 0.0
    ) -> None:
        self._post("/__harness__/config", {"pages": pages, "saves": saves or {}, "stimulus_delay_s": stimulus_delay_s})

    def posts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.base_url + "/__harness__/posts", timeout=5) as reply:
            return json.loads(reply.read())

    def _post(self, path: str, data: Any) -> None:
        request = urllib.request.Request(
            self.base_url + path,
            data=json.dumps(data).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as reply:
            reply.read()


@pytest.fixture(scope="session")
def harness(wav_dir: Path) -> Iterator[Harness]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # Run as a script, it sees only its own folder: the repository too, for the template tags.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("harness_server.py")), "--wav-dir", str(wav_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("READY "):
            raise RuntimeError(f"the harness server did not start (it printed {line!r})")
        yield Harness(line.split()[1])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def sync_orm_beside_playwright() -> Iterator[None]:
    """Django's async-safety guard lifted for a module that calls the ORM (and flushes the
    database after each test) in the thread where Playwright's sync API keeps its event loop."""
    before = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if before is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = before


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.js_errors = errors
    yield tab
    context.close()


@pytest.fixture
def firefox() -> Iterator[Firefox]:
    """Debian's Firefox ESR, headless, driven over WebDriver BiDi (tests/browser/firefox.py).

    A fresh browser for every test (about 2 s): one that hangs cannot take the others with it."""
    require(FIREFOX.exists(), f"Firefox is not installed at {FIREFOX} (apt-get install firefox-esr)")
    require(shutil.which("pulseaudio") is not None, "PulseAudio is not installed (apt-get install pulseaudio)")
    browser = Firefox()
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def webkit() -> Iterator[WebKit]:
    """WebKitGTK's MiniBrowser on Xvfb, driven over WebDriver (tests/browser/webkit.py)."""
    require(
        DRIVER.exists() and MINIBROWSER.exists(),
        f"WebKitGTK's WebDriver is not installed ({DRIVER}, {MINIBROWSER}; apt-get install webkit2gtk-driver)",
    )
    require(shutil.which("Xvfb") is not None, "Xvfb is not installed (apt-get install xvfb)")
    require(shutil.which("pulseaudio") is not None, "PulseAudio is not installed (apt-get install pulseaudio)")
    browser = WebKit()
    yield browser
    browser.close()


@pytest.fixture(params=["chromium", "firefox", "webkit"])
def any_page(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A tab in each engine, for the tests that need only JavaScript, keys and clicks."""
    if request.param == "chromium":
        yield request.getfixturevalue("page")
        return
    tab = request.getfixturevalue(request.param).new_page()
    yield tab
    tab.close()


def keys_for(value: int) -> list[str]:
    """Key presses that take an unrated slider (the first press rates it from 50) to ``value``."""
    if value == 50:
        return ["ArrowUp", "ArrowDown"]
    diff = value - 50
    tens = int(diff / 10)
    ones = diff - 10 * tens
    return ["PageUp" if tens > 0 else "PageDown"] * abs(tens) + ["ArrowUp" if ones > 0 else "ArrowDown"] * abs(ones)


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under var/test-artifacts/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
