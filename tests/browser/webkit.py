"""Drive WebKitGTK (Safari's engine, Debian's MiniBrowser) over classic W3C WebDriver.

``WebKitWebDriver`` (package ``webkit2gtk-driver``) starts MiniBrowser in automation mode
on a private X server (Xvfb) with a private PulseAudio null sink for its audio output.
``WebKitPage`` offers the same few operations as ``firefox.FirefoxPage`` (``driven``), so the
engine-level player tests run unchanged. It is WebKit, not Safari: the Web Audio and
media code is WebKit's own, the platform layer (GStreamer decoding, GTK) is not Apple's.

Protocol: https://www.w3.org/TR/webdriver2/ (sessions, navigation, execute/async,
actions, element click, screenshot).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.browser.driven import DriverError, NavigatedAway, PulseAudio, ScriptedPage
from tests.stack import free_port, stop_process

DRIVER = Path(os.environ.get("WEBKIT_DRIVER_PATH", "/usr/bin/WebKitWebDriver"))
MINIBROWSER = Path(os.environ.get("WEBKIT_BROWSER_PATH", "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser"))
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


class WebKit:
    """Xvfb, PulseAudio and WebKitWebDriver; each ``new_page`` is a fresh browser session."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="webkit-"))
        self.sound = PulseAudio(self.home / "pulse")
        display = self._start_xvfb(timeout)
        port = free_port()
        env = {
            **os.environ,
            "HOME": str(self.home),
            "DISPLAY": display,
            "PULSE_SERVER": self.sound.server,
            "XDG_RUNTIME_DIR": str(self.home / "pulse"),
        }
        self.driver = subprocess.Popen(
            [str(DRIVER), f"--port={port}", "--host=127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.call("GET", "/status")
                break
            except (OSError, urllib.error.URLError):
                if self.driver.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise DriverError("WebKitWebDriver did not start") from None
                time.sleep(0.1)

    def _start_xvfb(self, timeout: float) -> str:
        for number in range(90, 140):
            if Path(f"/tmp/.X11-unix/X{number}").exists() or Path(f"/tmp/.X{number}-lock").exists():
                continue
            self.xvfb = subprocess.Popen(
                ["Xvfb", f":{number}", "-screen", "0", "1400x1000x24", "-nolisten", "tcp"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + timeout
            while not Path(f"/tmp/.X11-unix/X{number}").exists():
                if self.xvfb.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            else:
                return f":{number}"
            stop_process(self.xvfb)
        raise DriverError("no free X display for Xvfb")

    def call(self, method: str, path: str, body: Any = None, timeout: float = 120.0) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return json.loads(reply.read() or b"{}").get("value")
        except urllib.error.HTTPError as exc:
            detail = json.loads(exc.read() or b"{}").get("value", {})
            raise DriverError(f"{method} {path}: {detail.get('error')}: {detail.get('message')}") from None

    def new_page(self, width: int = 1280, height: int = 900) -> WebKitPage:
        capabilities = {
            "capabilities": {
                "alwaysMatch": {
                    "webkitgtk:browserOptions": {
                        "binary": str(MINIBROWSER),
                        "args": ["--automation", "--autoplay-policy=allow"],
                    }
                }
            }
        }
        try:
            session = self.call("POST", "/session", capabilities, timeout=60.0)
        except (TimeoutError, OSError):
            # A MiniBrowser that never came up (seen about once in 200 starts on a loaded
            # machine) leaves the driver waiting: start Xvfb, PulseAudio and the driver afresh.
            self.close()
            self.__init__()  # type: ignore[misc]
            session = self.call("POST", "/session", capabilities, timeout=60.0)
        page = WebKitPage(self, session["sessionId"], session["capabilities"])
        page.call("POST", "/timeouts", {"script": 120_000, "pageLoad": 60_000})
        page.call("POST", "/window/rect", {"width": width, "height": height})
        return page

    def close(self) -> None:
        stop_process(self.driver)
        if getattr(self, "xvfb", None) is not None:
            stop_process(self.xvfb)
        self.sound.close()
        shutil.rmtree(self.home, ignore_errors=True)


class WebKitPage(ScriptedPage):
    """One browser session; JavaScript runs in the page as WebDriver's scripts do."""

    #: Errors thrown after the page loaded (WebDriver has no log of load-time ones).
    _COLLECT = (
        "() => { if (!window.__errors) { window.__errors = [];"
        " addEventListener('error', e => window.__errors.push(String(e.message)));"
        " addEventListener('unhandledrejection', e => window.__errors.push(String(e.reason))); } }"
    )

    def __init__(self, browser: WebKit, session: str, capabilities: dict[str, Any]) -> None:
        self.browser = browser
        self.session = session
        self.capabilities = capabilities

    def key_actions(self, actions: list[dict[str, str]]) -> None:
        self.call("POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})
        self.call("DELETE", "/actions")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return self.browser.call(method, f"/session/{self.session}{path}", body)

    def goto(self, url: str) -> None:
        self.call("POST", "/url", {"url": url})
        self.evaluate(self._COLLECT)

    def reload(self) -> None:
        """As the browser's reload button (not a navigation to the same address)."""
        self.call("POST", "/refresh", {})
        self.evaluate(self._COLLECT)

    @property
    def js_errors(self) -> list[str]:
        return self.evaluate("window.__errors || []")

    def _run(self, source: str, poll: bool = False) -> Any:
        script = (
            "const done = arguments[arguments.length - 1];"
            f"({source}).then(done, e => done({{__error: String(e && e.stack || e)}}));"
        )
        try:
            value = self.call("POST", "/execute/async", {"script": script, "args": []})
        except DriverError as exc:
            # A script whose page navigated (or reloaded) while it ran is answered "no such
            # frame: Callback was not called before the unload event".
            if ": no such frame:" in str(exc):
                raise NavigatedAway(str(exc)) from None
            raise
        if isinstance(value, dict) and "__error" in value:
            raise DriverError(f"JavaScript error: {value['__error']}")
        return value

    def settle_audio(self, context: str) -> None:
        """Get the audio output past its start-up stall before timing anything.

        Here (GStreamer's pulsesink on a null sink) the AudioContext clock stops for about
        a second the first time a source sounds in it, then runs on steadily; later
        starts do not stall. A near-silent source (-80 dBFS: an all-zero one does not
        trigger the stall) plays until the clock has run 0.3 s."""
        self.evaluate(f"""async () => {{
            const c = {context};
            const s = c.createConstantSource();
            s.offset.value = 1e-4;
            s.connect(c.destination);
            s.start();
            const t0 = c.currentTime, w0 = performance.now();
            while (c.currentTime - t0 < 0.3 && performance.now() - w0 < 10000)
              await new Promise(r => setTimeout(r, 20));
            s.stop();
            s.disconnect();
        }}""")

    def click(self, selector: str) -> None:
        """WebDriver's element click: scrolled into view, a real click at its centre."""
        element = self.call("POST", "/element", {"using": "css selector", "value": selector})
        self.call("POST", f"/element/{element[ELEMENT]}/click", {})

    def click_button(self, name: str) -> None:
        element = self.call("POST", "/execute/sync", {"script": f"return {self.button_expression(name)};", "args": []})
        if not element:
            raise DriverError(f"no button {name!r}")
        self.call("POST", f"/element/{element[ELEMENT]}/click", {})

    def type_into(self, selector: str, text: str) -> None:
        """Click a field, then type ``text`` into it (WebDriver's element send keys)."""
        element = self.call("POST", "/element", {"using": "css selector", "value": selector})
        self.call("POST", f"/element/{element[ELEMENT]}/click", {})
        self.call("POST", f"/element/{element[ELEMENT]}/value", {"text": text})

    def _capture(self) -> str:
        return self.call("GET", "/screenshot")

    def close(self) -> None:
        self.call("DELETE", "")
