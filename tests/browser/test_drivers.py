"""The test drivers themselves: what the engine tests rely on them to do."""

from __future__ import annotations

import time

import pytest

from tests.browser.conftest import Harness
from tests.browser.driven import NavigatedAway
from tests.browser.firefox import NAVIGATION_GRACE, Firefox
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
