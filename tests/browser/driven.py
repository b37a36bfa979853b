"""What the Firefox and WebKit drivers share: a PulseAudio null sink for the browser's
audio output, WebDriver key codes, and the page operations that are only JavaScript.

The tests use the same page methods as Playwright's (``goto``, ``evaluate``,
``keyboard.press``, ``wait_for_function``, ``wait_for_timeout``, ``screenshot``,
``js_errors``) plus a few of their own (``click``, ``click_button``, ``type_into``,
``content``, ``wait_for_path``), so an engine-level test takes any of the three.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.stack import stop_process

#: WebDriver key codes for the special keys the tests press.
KEYS = {
    "ArrowLeft": "\ue012",
    "ArrowUp": "\ue013",
    "ArrowRight": "\ue014",
    "ArrowDown": "\ue015",
    "PageUp": "\ue00e",
    "PageDown": "\ue00f",
    "Enter": "\ue007",
    "Space": " ",
}


class DriverError(RuntimeError):
    pass


class NavigatedAway(DriverError):
    """A script's result was lost because its page navigated while it ran."""


class PulseAudio:
    """A private PulseAudio server whose only output is a null sink.

    Firefox runs an AudioContext only on a working audio device (without one it stays
    "suspended"), and WebKitGTK plays through GStreamer's pulsesink; this machine has no
    sound card, so the tests give them this one.
    """

    def __init__(self, folder: Path, timeout: float = 20.0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        socket = folder / "native"
        self.server = f"unix:{socket}"
        env = {**os.environ, "HOME": str(folder), "XDG_RUNTIME_DIR": str(folder)}
        self.proc = subprocess.Popen(
            [
                shutil.which("pulseaudio") or "pulseaudio",
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--log-target=stderr",
                "-L",
                "module-null-sink sink_name=null",
                "-L",
                f"module-native-protocol-unix socket={socket} auth-anonymous=1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while not socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                stop_process(self.proc)
                raise DriverError("PulseAudio did not start (apt-get install pulseaudio)")
            time.sleep(0.05)

    def close(self) -> None:
        stop_process(self.proc)


class Keyboard:
    """Playwright's ``page.keyboard``: each press is a WebDriver key-down and key-up."""

    def __init__(self, page: ScriptedPage) -> None:
        self._page = page

    def press(self, key: str) -> None:
        value = KEYS.get(key, key)
        self._page.key_actions([{"type": "keyDown", "value": value}, {"type": "keyUp", "value": value}])


class ScriptedPage:
    """Page operations made of JavaScript and key input; a driver supplies ``_run`` and
    ``key_actions``."""

    def _run(self, source: str, poll: bool = False) -> Any:
        """Run ``source`` (an expression whose value is a promise of a JSON string) in the
        page; return that string, or ``None`` for ``undefined``. ``NavigatedAway`` where a
        navigation lost the result; a ``poll`` (short, and asked again) may be given up
        sooner than other scripts once its page has navigated."""
        raise NotImplementedError

    def key_actions(self, actions: list[dict[str, str]]) -> None:
        """Perform WebDriver key actions (``keyDown``/``keyUp``) as real input."""
        raise NotImplementedError

    def _capture(self) -> str:
        """A PNG of the viewport, base64-encoded (as both protocols send it)."""
        raise NotImplementedError

    def screenshot(self, path: str | Path, full_page: bool = False) -> Path:
        """As Playwright's, of the viewport only (``full_page`` is accepted and ignored)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._capture()))
        return path

    @property
    def keyboard(self) -> Keyboard:
        return Keyboard(self)

    def evaluate(self, expression: str, *arg: Any) -> Any:
        """As Playwright's: the value of a JavaScript expression or, when it is a function,
        of calling it with ``arg``; awaited, and passed back through JSON."""
        return self._evaluate(expression, arg)

    def _evaluate(self, expression: str, arg: tuple[Any, ...], poll: bool = False) -> Any:
        argument = json.dumps(arg[0]) if arg else "undefined"
        value = self._run(
            f"(async () => {{ const v = ({expression.strip()});"
            f" return JSON.stringify(typeof v === 'function' ? await v({argument}) : await v); }})()",
            poll,
        )
        return None if value is None else json.loads(value)

    def wait_for(self, expression: str, timeout: float = 30.0, interval: float = 0.05) -> bool:
        """Poll until the JavaScript expression is truthy (in JavaScript's sense); a poll
        lost to a navigation counts as not yet."""
        deadline = time.monotonic() + timeout
        while not self._poll(f"!!({expression})"):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {expression}")
            time.sleep(interval)
        return True

    def _poll(self, expression: str) -> Any:
        try:
            return self._evaluate(expression, (), poll=True)
        except NavigatedAway:
            return None

    def wait_for_function(self, expression: str, timeout: float = 30_000) -> bool:
        """Playwright's name for ``wait_for`` (timeout in ms)."""
        return self.wait_for(expression, timeout / 1000)

    def wait_for_timeout(self, ms: float) -> None:
        time.sleep(ms / 1000)

    @property
    def url(self) -> str:
        return self.evaluate("location.href")

    def content(self) -> str:
        return self.evaluate("document.documentElement.outerHTML")

    def wait_for_path(self, suffix: str, timeout: float = 15.0) -> str:
        """Wait until the page's path ends with ``suffix`` and it has loaded; returns the path."""
        self.wait_for(
            f"location.pathname.endsWith({json.dumps(suffix)}) && document.readyState === 'complete'", timeout
        )
        return self.evaluate("location.pathname")

    @staticmethod
    def button_expression(name: str) -> str:
        """JavaScript for the visible button whose accessible name (aria-label, else text) is ``name``."""
        return (
            "[...document.querySelectorAll('button')].find(b => b.getClientRects().length > 0 && "
            f"(b.getAttribute('aria-label') || b.textContent).trim() === {json.dumps(name)})"
        )
