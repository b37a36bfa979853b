"""The test drivers themselves: what the engine tests rely on them to do."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.browser.conftest import Harness
from tests.browser.driven import NavigatedAway
from tests.browser.firefox import NAVIGATION_GRACE, BrowserHung, Firefox, blocked_main_threads
from tests.browser.webkit import WebKit


def test_firefox_script_lost_to_navigation_is_named_and_polls_go_on(firefox: Firefox, harness: Harness) -> None:
    # A script whose page navigates while its promise is pending is answered "no such
    # frame" (or, w3c/webdriver-bidi#378, not at all): the driver says the page navigated
    # away, and waiting for the new page still works.
    page = firefox.new_page()
    harness.configure({"engine": {"template": "engine.html", "context": {}}})
    page.goto(harness.base_url + "/page/engine")
    started = time.monotonic()
    with pytest.raises(NavigatedAway):
        page.evaluate(
            "() => { setTimeout(() => location.assign('/done/next'), 100);"
            " return new Promise(done => setTimeout(() => done(1), 5000)); }"
        )
    assert time.monotonic() - started < NAVIGATION_GRACE + 3
    assert page.wait_for_path("/done/next").endswith("/done/next")
    page.close()


def test_webkit_script_lost_to_navigation_is_named_and_polls_go_on(webkit: WebKit, harness: Harness) -> None:
    # WebKitWebDriver answers a script whose page navigates before its promise settles with
    # "no such frame: Callback was not called before the unload event": the driver says the
    # page navigated away, so a poll asks again on the new page.
    page = webkit.new_page()
    harness.configure({"engine": {"template": "engine.html", "context": {}}})
    page.goto(harness.base_url + "/page/engine")
    with pytest.raises(NavigatedAway):
        page.evaluate(
            "() => { setTimeout(() => location.assign('/done/next'), 100);"
            " return new Promise(done => setTimeout(() => done(1), 5000)); }"
        )
    assert page.wait_for_path("/done/next").endswith("/done/next")
    page.close()


#: A process whose main thread waits on a lock it holds (a deadlock), and one idle in poll().
LOCKED = "import threading; lock = threading.Lock(); lock.acquire(); print('x', flush=True); lock.acquire()"
POLLING = "import select; print('x', flush=True); select.poll().poll()"


def test_a_process_whose_main_thread_is_blocked_on_a_lock_is_told_from_an_idle_one(
    firefox: Firefox, monkeypatch: pytest.MonkeyPatch
) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) for code in (LOCKED, POLLING)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == b"x\n"
        time.sleep(0.2)  # from print() into the wait
        locked, polling = (proc.pid for proc in procs)
        assert blocked_main_threads([locked, polling]) == [locked]
        # An idle Firefox is not taken for a hung one: its content processes wait in poll().
        page = firefox.new_page()
        page.goto("about:blank")
        assert firefox.content_processes() and blocked_main_threads(firefox.content_processes()) == []
        firefox.raise_if_hung(AssertionError("a timeout"))  # raises nothing
        with pytest.raises(BrowserHung, match=r"content process \[\d+\] is blocked"):
            # ... and would be, were one of its processes the blocked one.
            monkeypatch.setattr(firefox, "content_processes", lambda: [locked])
            firefox.raise_if_hung(AssertionError("a timeout"))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
