"""Drive Debian's Firefox ESR headless over WebDriver BiDi (W3C), for the player tests.

Playwright's Firefox needs its own patched build, which cannot be downloaded here, and
its BiDi mode expects commands newer than ESR has; so the tests speak the standard
protocol themselves, through a small synchronous client over one WebSocket
(``websocket-client``). ``FirefoxPage`` offers the few page operations the tests use,
with the same names as Playwright's: ``goto``, ``evaluate``, ``keyboard.press``,
``click``, ``wait_for_timeout``, ``screenshot``, and ``js_errors`` (see ``driven``).

Firefox only runs an AudioContext on a working audio device, so each browser gets a
private PulseAudio server with a null sink (``driven.PulseAudio``).

Protocol: https://w3c.github.io/webdriver-bidi/ (session.new, browsingContext.*,
script.evaluate, input.performActions, log.entryAdded).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import websocket

from tests.browser.driven import DriverError, NavigatedAway, PulseAudio, ScriptedPage
from tests.stack import stop_process

FIREFOX = Path(os.environ.get("FIREFOX_PATH", "/usr/bin/firefox-esr"))

#: A quiet, offline profile that lets audio start without a gesture (as the Chromium
#: tests pass --autoplay-policy=no-user-gesture-required).
PREFS = {
    "media.autoplay.default": 0,
    "media.autoplay.block-webaudio": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.aboutwelcome.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.disabledForTesting": True,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "browser.safebrowsing.update.enabled": False,
    "extensions.update.enabled": False,
    "browser.region.network.url": "",
    "remote.prefs.recommended": True,
}
#: Events that mark a tab's navigation; see ``Firefox.send``.
NAVIGATION_EVENTS = ("browsingContext.navigationStarted", "browsingContext.domContentLoaded", "browsingContext.load")
#: How long a reply may still come after its tab navigated before it counts as lost.
NAVIGATION_GRACE = 2.0
#: How long a poll waits for its reply at most before it is asked again; a page that answers
#: none (its scripts hung) fails at the caller's own deadline, not after ``send``'s 60 s.
POLL_REPLY_LIMIT = 3.0


class BrowserHung(AssertionError):
    """Firefox stopped answering because a content process's main thread is blocked on a lock.

    Seen here with Firefox ESR 153 under load, about once in 40 to 80 reloads of a trial page
    whose AudioContext runs (playing or paused): the page loads and fetches its stimuli, then
    its process's main thread waits on a futex while the audio graph's thread (GraphRunner, or
    the AudioIPC callback thread with ``media.audiograph.single_thread.enabled`` off) waits on
    a mutex, and neither moves again. A deadlock inside the browser, not in the page's
    scripts (none runs); the browser tests run such a test once more (tests/conftest.py)."""


def blocked_main_threads(pids: list[int], looks: int = 3, interval: float = 0.3) -> list[int]:
    """Of ``pids``, the processes whose main thread waits on a futex (a lock or a condition
    variable) at each of ``looks`` looks ``interval`` s apart, as the kernel's wait channel
    says; an idle browser process's main thread waits in poll() for its next event instead."""
    blocked = set(pids)
    for look in range(looks):
        if look:
            time.sleep(interval)
        for pid in list(blocked):
            try:
                channel = Path(f"/proc/{pid}/wchan").read_text()
            except OSError:
                channel = ""
            if not channel.startswith("futex"):
                blocked.discard(pid)
    return sorted(blocked)


class Firefox:
    """One headless Firefox process with a fresh profile and one BiDi session."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="firefox-profile-"))
        (self.profile / "user.js").write_text(
            "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in PREFS.items())
        )
        self.sound = PulseAudio(self.profile / "pulse")
        env = {**os.environ, "MOZ_HEADLESS": "1", "HOME": str(self.profile), "PULSE_SERVER": self.sound.server}
        self.proc = subprocess.Popen(
            [
                str(FIREFOX),
                "--headless",
                "--no-remote",
                "--remote-debugging-port=0",
                "--profile",
                str(self.profile),
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        url = self._listening_url(timeout)
        self.ws = websocket.create_connection(url + "/session", timeout=timeout, suppress_origin=True)
        self.ws.settimeout(None)  # the reader waits for as long as the session lasts; send() has its own timeout
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._replies: dict[int, dict[str, Any]] = {}
        self._ready = threading.Condition()
        self.events: list[dict[str, Any]] = []
        self._navigations: dict[str, int] = {}  # per tab: navigation events seen so far
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.capabilities = self.send("session.new", {"capabilities": {}})["capabilities"]
        self.send("session.subscribe", {"events": ["log.entryAdded", "network.responseCompleted", *NAVIGATION_EVENTS]})

    @property
    def version(self) -> str:
        return str(getattr(self, "capabilities", {}).get("browserVersion", ""))

    def _listening_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        assert self.proc.stderr is not None
        seen = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                if self.proc.poll() is not None:
                    break
                continue
            seen.append(line)
            match = re.search(r"WebDriver BiDi listening on (ws://\S+)", line)
            if match:
                # Keep draining stderr so Firefox never blocks on a full pipe.
                threading.Thread(target=self.proc.stderr.read, daemon=True).start()
                return match.group(1)
        self.close()
        raise DriverError("Firefox did not open its WebDriver BiDi port:\n" + "".join(seen[-20:]))

    def _read(self) -> None:
        while True:
            try:
                message = json.loads(self.ws.recv())
            except Exception:  # noqa: BLE001 - socket closed: wake every waiter
                with self._ready:
                    self._replies[-1] = {"type": "error", "error": "connection closed", "message": ""}
                    self._ready.notify_all()
                return
            if "id" in message and message.get("type") in ("success", "error"):
                with self._ready:
                    self._replies[message["id"]] = message
                    self._ready.notify_all()
            else:
                if message.get("method") in NAVIGATION_EVENTS:
                    with self._ready:
                        tab = message.get("params", {}).get("context", "")
                        self._navigations[tab] = self._navigations.get(tab, 0) + 1
                        self._ready.notify_all()
                message["t"] = time.monotonic()
                self.events.append(message)

    def send(
        self, method: str, params: dict[str, Any], timeout: float = 60.0, tab: str | None = None, poll: bool = False
    ) -> dict[str, Any]:
        """Send one command and wait for its reply.

        With ``tab``: a script command whose page navigates while the script's promise is
        pending ends in ``NavigatedAway``. Firefox answers it with "no such frame", or
        never (w3c/webdriver-bidi#378); so a ``poll`` whose tab has navigated since it was
        sent is given up once ``NAVIGATION_GRACE`` s pass without its reply, and any poll
        after ``POLL_REPLY_LIMIT`` s (its caller asks again until its own deadline). (Only polls:
        a longer script sent during a navigation may run on the new page and answer
        later.)"""
        with self._lock:
            ident = next(self._ids)
            with self._ready:
                navigations = self._navigations.get(tab, 0) if tab is not None else 0
            self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + (min(timeout, POLL_REPLY_LIMIT) if poll else timeout)
        navigated = False
        reply: dict[str, Any] | None = None
        with self._ready:
            while ident not in self._replies and -1 not in self._replies:
                if poll and not navigated and self._navigations.get(tab, 0) != navigations:
                    navigated = True
                    deadline = min(deadline, time.monotonic() + NAVIGATION_GRACE)
                left = deadline - time.monotonic()
                if left <= 0:
                    if navigated:
                        raise NavigatedAway(f"{method}: the page navigated away before the reply came")
                    if poll:
                        raise NavigatedAway(f"{method}: a poll had no reply within {POLL_REPLY_LIMIT} s")
                    break
                self._ready.wait(left)
            else:
                reply = self._replies.pop(ident, None) or self._replies[-1]
        if reply is None:
            lost = DriverError(f"{method}: no reply within {timeout} s")
            self.raise_if_hung(lost)
            raise lost
        if reply["type"] == "error":
            message = f"{method}: {reply.get('error')}: {reply.get('message')}"
            if tab is not None and reply.get("error") == "no such frame":  # its document was discarded
                raise NavigatedAway(message)
            raise DriverError(message)
        return reply["result"]

    def processes(self) -> list[psutil.Process]:
        """The browser's own process and every process below it (none once it has exited)."""
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def content_processes(self) -> list[int]:
        """The browser's content processes (pages and extensions), by process id."""
        out = []
        for child in self.processes()[1:]:
            try:
                if child.cmdline()[-1:] == ["tab"]:
                    out.append(child.pid)
            except psutil.NoSuchProcess:
                pass
        return out

    def raise_if_hung(self, cause: BaseException) -> None:
        """Raise ``BrowserHung`` when a content process's main thread is blocked (see there)."""
        blocked = blocked_main_threads(self.content_processes())
        if blocked:
            raise BrowserHung(
                f"Firefox {self.version}: the main thread of content process {blocked} is blocked on a lock, "
                f"not waiting for events ({cause})"
            ) from cause

    def new_page(self, width: int = 1280, height: int = 900, device_pixel_ratio: float | None = None) -> FirefoxPage:
        context = self.send("browsingContext.create", {"type": "tab"})["context"]
        viewport: dict[str, Any] = {"context": context, "viewport": {"width": width, "height": height}}
        if device_pixel_ratio is not None:
            viewport["devicePixelRatio"] = device_pixel_ratio
        self.send("browsingContext.setViewport", viewport)
        return FirefoxPage(self, context)

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                try:
                    self.send("session.end", {}, timeout=5)
                except Exception:  # noqa: BLE001 - closing anyway
                    pass
                self.ws.close()
        finally:
            stop_process(self.proc)
            self.sound.close()
            shutil.rmtree(self.profile, ignore_errors=True)


class FirefoxPage(ScriptedPage):
    """A tab; JavaScript runs in the page's own realm, as the page's scripts do."""

    def __init__(self, browser: Firefox, context: str) -> None:
        self.browser = browser
        self.context = context
        self._events_seen = len(browser.events)

    @property
    def js_errors(self) -> list[str]:
        """Uncaught errors logged by this tab since it opened."""
        out = []
        for event in self.browser.events[self._events_seen :]:
            params = event.get("params", {})
            if (
                event.get("method") == "log.entryAdded"
                and params.get("type") == "javascript"
                and params.get("level") == "error"
                and params.get("source", {}).get("context") == self.context
            ):
                out.append(params.get("text", ""))
        return out

    def responses(self) -> list[tuple[str, int, dict[str, str]]]:
        """(URL, status, headers) of every response this tab received since it opened."""
        out = []
        for event in self.browser.events[self._events_seen :]:
            params = event.get("params", {})
            if event.get("method") == "network.responseCompleted" and params.get("context") == self.context:
                response = params["response"]
                headers = {h["name"].lower(): h["value"].get("value", "") for h in response.get("headers", [])}
                out.append((params["request"]["url"], int(response["status"]), headers))
        return out

    def goto(self, url: str) -> None:
        self.browser.send("browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"})

    def reload(self) -> None:
        """As the browser's reload button (not a navigation to the same address)."""
        self.browser.send("browsingContext.reload", {"context": self.context, "wait": "complete"})

    def wait_for(self, expression: str, timeout: float = 30.0, interval: float = 0.05) -> bool:
        """As ``ScriptedPage.wait_for``; ``BrowserHung`` when it timed out on a blocked browser."""
        try:
            return super().wait_for(expression, timeout, interval)
        except AssertionError as exc:
            self.browser.raise_if_hung(exc)
            raise

    def diagnose(self) -> dict[str, Any]:
        """What the browser says of this tab when its page stops answering scripts: its address,
        its last events (navigations, responses), and the CPU % of each browser process over 1 s
        (a script that never yields shows as one content process near 100 %)."""
        procs = self.browser.processes()
        for proc in procs:
            proc.cpu_percent(None)
        time.sleep(1.0)
        cpu = {}
        for proc in procs:
            try:
                cpu[proc.pid] = proc.cpu_percent(None)
            except psutil.NoSuchProcess:
                pass
        try:
            tree = self.browser.send("browsingContext.getTree", {"root": self.context}, timeout=5)
        except DriverError as exc:
            tree = {"error": str(exc)}
        mine = []
        for event in self.browser.events:
            params = event.get("params", {})
            if params.get("context") == self.context:
                url = params.get("url") or params.get("request", {}).get("url")
                mine.append((round(event.get("t", 0), 2), event.get("method"), url))
        return {"tree": tree, "events": mine[-12:], "cpu": cpu}

    def _run(self, source: str, poll: bool = False) -> Any:
        reply = self.browser.send(
            "script.evaluate",
            {
                "expression": source,
                "target": {"context": self.context},
                "awaitPromise": True,
                "resultOwnership": "none",
            },
            tab=self.context,
            poll=poll,
        )
        if reply["type"] == "exception":
            raise DriverError(f"JavaScript error: {reply['exceptionDetails'].get('text')}")
        value = reply["result"]
        return value["value"] if value.get("type") == "string" else None

    def click(self, selector: str) -> None:
        """Click the first element matching ``selector``."""
        self._click(f"document.querySelector({json.dumps(selector)})", selector)

    def click_button(self, name: str) -> None:
        """Click the visible button whose accessible name (aria-label, else text) is ``name``."""
        self._click(self.button_expression(name), f"button {name!r}")

    def _click(self, expression: str, what: str) -> None:
        # The page's own click() (a synthetic click event), run after this command returns:
        # a BiDi pointer action whose click navigates away can leave Firefox ESR waiting
        # for ever (seen under load), and then the whole session with it. Key presses stay
        # real input actions; Chromium and WebKit click with real pointer input.
        found = self.evaluate(
            f"() => {{ const el = {expression}; if (!el) return false; setTimeout(() => el.click(), 0); return true; }}"
        )
        if not found:
            raise DriverError(f"no element for {what}")

    def type_into(self, selector: str, text: str) -> None:
        """Focus a field, then type ``text`` key by key."""
        if not self.evaluate(
            f"() => {{ const el = document.querySelector({json.dumps(selector)});"
            " if (!el) return false; el.focus(); return document.activeElement === el; }"
        ):
            raise DriverError(f"cannot focus {selector!r}")
        self.key_actions([{"type": kind, "value": char} for char in text for kind in ("keyDown", "keyUp")])

    def key_actions(self, actions: list[dict[str, str]]) -> None:
        self.browser.send(
            "input.performActions",
            {"context": self.context, "actions": [{"type": "key", "id": "keyboard", "actions": actions}]},
        )

    def _capture(self) -> str:
        return self.browser.send("browsingContext.captureScreenshot", {"context": self.context})["data"]

    def close(self) -> None:
        self.browser.send("browsingContext.close", {"context": self.context})
