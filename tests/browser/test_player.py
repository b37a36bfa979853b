"""Browser tests of the MUSHRA player and the headphone check (headless Chromium)."""

from __future__ import annotations

import base64
import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.browser.conftest import Harness, keys_for, screenshot
from tests.browser.driven import ScriptedPage
from tests.conftest import PLAYER_JS, wait_for
from webmushra import headphone, rules

pytestmark = pytest.mark.browser

KEYS = ["a", "b", "c", "d"]
LABELS = {"a": "Hidden reference", "b": "Anchor 3.5 kHz", "c": "LSTM h32", "d": "WaveNet"}
TRIAL: dict[str, Any] = {
    "trial": {"number": 3, "total": 10, "training": False, "title": "Trial 3 of 10"},
    "reference": {"url": "/s/ref.wav"},
    "signals": [{"key": k, "url": f"/s/{k}.wav"} for k in KEYS],
    # As the server sends them (webmushra/views/participant.py trial_data): the player has no defaults.
    # The minimum listening and page times are off here, so that trials are rated at key speed;
    # test_minimum_listening_and_page_time_hold_the_submit covers them.
    "rules": {**rules.RULE_DEFAULTS, "min_play_seconds": 0.0, "min_trial_seconds": 0.0},
    "max_signals": rules.MAX_SIGNALS_PER_TRIAL,
    "save_url": "/p/ptok/trial/3/",
    "idempotency_key": "0b6f3f0e-3a41-4c1e-9d55-6a1f0b2c7d10",
    "csrf_token": "csrf-123",
    "instructions": "Rate each signal against the reference.",
}


def open_trial(
    page: Any,
    harness: Harness,
    trial: dict[str, Any] | None = None,
    saves: dict[str, Any] | None = None,
) -> None:
    """Open the trial page and wait for its AudioContext to run (Firefox starts its audio
    device asynchronously, a second or so after ``resume()``)."""
    harness.configure({"trial": {"template": "trial.html", "context": {"trial_data": trial or TRIAL}}}, saves)
    page.goto(harness.base_url + "/page/trial")
    page.wait_for_function(f"{PLAYER_JS}.state()?.ready")
    page.wait_for_function(f"{PLAYER_JS}.state().context_state === 'running'")
    settle = getattr(page, "settle_audio", None)  # WebKit here: see WebKitPage.settle_audio
    if settle is not None:
        settle(f"{PLAYER_JS}.context")


def state(page: Any) -> dict[str, Any]:
    return page.evaluate(f"{PLAYER_JS}.state()")


def slider(page: Any, n: int) -> Any:
    return page.get_by_label(f"Signal {n} rating", exact=True)


def rate(page: Any, n: int, value: int) -> None:
    """Play signal n (its key) and set its slider."""
    if state(page)["current"] != KEYS[n - 1] or not state(page)["playing"]:
        page.keyboard.press(str(n))
    slider(page, n).fill(str(value))


def play_for(page: Any, seconds: float) -> None:
    """Wait until the audio clock (in which the player counts listening time) has run ``seconds`` on."""
    until = state(page)["context_time"] + seconds
    page.wait_for_function(f"{PLAYER_JS}.state().context_time >= {until}")


def test_progress_reaches_100_before_the_player_appears(any_page: Any, harness: Harness) -> None:
    page = any_page
    open_trial(page, harness)
    log = state(page)["progress_log"]
    assert log[-1] == 100 and log == sorted(log) and len(log) >= 3
    assert page.evaluate("document.querySelector('.wm-progress').getAttribute('value')") == "100"
    assert page.evaluate(
        "[document.querySelector('.wm-player'), document.querySelector('.wm-loading')]"
        ".map(e => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden')"
    ) == [True, False]
    assert state(page)["context_state"] == "running"
    audio = page.evaluate(f"{PLAYER_JS}.telemetry().audio")
    assert audio == {
        "context_sample_rate": 48000,
        "stimulus_sample_rate": 48000,
        "stimulus_rates_differ": False,
        "resampled": False,
        "base_latency": pytest.approx(page.evaluate(f"{PLAYER_JS}.context.baseLatency")),
        "output_latency": audio["output_latency"],
    }
    # Read once by the page when the context was made; reading it again here is what hangs
    # Firefox ESR on the null sink, so only its range is checked.
    assert audio["output_latency"] is None or 0 <= audio["output_latency"] < 0.5
    screenshot(page, f"trial-loaded-{_engine(page)}")
    assert page.js_errors == []


def _engine(page: Any) -> str:
    agent = page.evaluate("navigator.userAgent")
    return "firefox" if "Firefox/" in agent else "chromium" if "Chrome/" in agent else "webkit"


def test_rating_by_keyboard_and_submit(any_page: Any, harness: Harness) -> None:
    # Keys only (play 1-4, PageUp/PageDown/arrows rate the playing signal) and a real click.
    page = any_page
    open_trial(page, harness)
    page.keyboard.press("r")
    play_for(page, 0.3)
    wanted = {"a": 100, "b": 30, "c": 70, "d": 50}
    for n, value in enumerate(wanted.values(), start=1):
        page.keyboard.press(str(n))
        play_for(page, 0.15)
        for move in keys_for(value):
            page.keyboard.press(move)
    assert state(page)["ratings"] == wanted
    assert page.evaluate("document.querySelector('.wm-submit').disabled") is False
    engine = _engine(page)
    screenshot(page, f"trial-complete-{engine}")
    page.click(".wm-submit")
    # The page moves on after the save (each driver's own wait survives the navigation).
    if isinstance(page, ScriptedPage):
        page.wait_for_path("/done/next", timeout=10)
    else:
        page.wait_for_url("**/done/next", timeout=10_000)
    post = harness.posts()[-1]
    assert post["path"] == TRIAL["save_url"] and post["body"]["ratings"] == wanted
    tel = post["body"]["telemetry"]
    assert all(tel["signals"][k]["plays"] == 1 and tel["signals"][k]["listen_ms"] > 50 for k in KEYS)
    assert [m["key"] for m in tel["slider_moves"]][:1] == ["a"] and tel["slider_moves"][-1]["value"] == 50
    assert tel["audio"]["context_sample_rate"] == 48000 and tel["audio"]["resampled"] is False
    assert ("Firefox/" in tel["user_agent"]) == (engine == "firefox")
    assert page.js_errors == []


def test_sliders_open_only_for_the_played_signal_and_submit_waits(page: Any, harness: Harness) -> None:
    open_trial(page, harness)
    assert [slider(page, n).is_disabled() for n in range(1, 5)] == [True] * 4
    assert page.locator(".wm-submit").is_disabled()
    assert "Play signals 1, 2, 3, 4." in page.locator(".wm-missing").inner_text()
    page.get_by_role("button", name="Play signal 1 (key 1)").click()
    assert [slider(page, n).is_disabled() for n in range(1, 5)] == [False, True, True, True]
    page.get_by_role("button", name="Play signal 2 (key 2)").click()
    # Only the playing signal's slider moves.
    assert [slider(page, n).is_disabled() for n in range(1, 5)] == [True, False, True, True]
    assert state(page)["played"] == {"ref": False, "a": True, "b": True, "c": False, "d": False}
    screenshot(page, "trial-playing")


def test_untouched_slider_has_no_rating_and_blocks_submit(page: Any, harness: Harness) -> None:
    open_trial(page, harness)
    rate(page, 1, 100)
    rate(page, 2, 40)
    rate(page, 3, 20)
    page.keyboard.press("4")
    ratings = state(page)["ratings"]
    assert ratings == {"a": 100, "b": 40, "c": 20, "d": None}
    assert slider(page, 4).get_attribute("aria-valuetext") == "not rated"
    assert slider(page, 2).get_attribute("aria-valuetext") == "40, Fair"
    assert page.locator(".wm-signal[data-key=d] .wm-value").inner_text() == "\u2013"
    assert page.locator(".wm-submit").is_disabled()
    assert page.locator(".wm-missing").inner_text() == "Rate signal 4."
    screenshot(page, "trial-one-unrated")
    slider(page, 4).fill("55")
    assert page.locator(".wm-submit").is_enabled()


def test_requires_one_signal_at_100(page: Any, harness: Harness) -> None:
    open_trial(page, harness)
    for n, v in enumerate([90, 40, 20, 60], start=1):
        rate(page, n, v)
    assert page.locator(".wm-submit").is_disabled()
    assert "at least one signal 100" in page.locator(".wm-missing").inner_text()


def test_rules_and_signal_cap_come_from_the_trial_data(page: Any, harness: Harness) -> None:
    # The player holds no rule defaults and no cap of its own: what the trial JSON says holds.
    relaxed = copy.deepcopy(TRIAL)
    relaxed["rules"] = {**relaxed["rules"], "require_one_100": False, "only_playing_slider_moves": False}
    open_trial(page, harness, relaxed)
    page.keyboard.press("1")
    page.keyboard.press("2")
    assert [slider(page, n).is_disabled() for n in range(1, 5)] == [False, False, True, True]
    for n, v in enumerate([90, 40, 20, 60], start=1):
        rate(page, n, v)
    assert page.locator(".wm-submit").is_enabled() and page.locator(".wm-missing").inner_text() == ""
    for change, error in [
        ({"max_signals": 3}, "a trial needs 1 to 3 signals"),
        ({"rules": None}, "the trial data has no rules or signal cap"),
        ({"max_signals": None}, "the trial data has no rules or signal cap"),
    ]:
        page.js_errors.clear()
        harness.configure({"trial": {"template": "trial.html", "context": {"trial_data": {**TRIAL, **change}}}})
        page.goto(harness.base_url + "/page/trial")  # the module has run when the page has loaded
        deadline = time.monotonic() + 5  # its error reaches the test a moment later
        while not any(error in e for e in page.js_errors) and time.monotonic() < deadline:
            page.wait_for_timeout(20)
        assert any(error in e for e in page.js_errors), (change, page.js_errors)
        assert page.evaluate(f"{PLAYER_JS}.state()") is None


def _thumb_centres(page: Any, shot: Path) -> list[float | None]:
    """Where each slider's thumb is drawn, as a fraction of its travel from the bottom
    (0) to the top (1), read from the pixels: the thumb is the only strongly blue thing
    inside a track (blue minus red above 80 at any opacity the page gives it)."""
    from PIL import Image

    rects = page.evaluate("""() => { const dpr = devicePixelRatio;
        const thumb = parseFloat(getComputedStyle(document.querySelector('.wm')).getPropertyValue('--wm-thumb'));
        return [...document.querySelectorAll('.wm-track')].map(t => { const r = t.getBoundingClientRect();
          return [r.left * dpr, r.top * dpr, r.right * dpr, r.bottom * dpr, thumb * dpr]; }); }""")
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    out: list[float | None] = []
    for left, top, right, bottom, thumb in rects:
        box = image[int(top) : int(bottom), int(left) : int(right)]
        rows = np.nonzero(((box[:, :, 2] - box[:, :, 0]) > 80).any(axis=1))[0]
        if rows.size == 0:
            out.append(None)
            continue
        centre = (rows.min() + rows.max()) / 2
        travel = (bottom - top) - thumb
        out.append(1 - (centre - thumb / 2) / travel)
    return out


def test_slider_thumbs_show_the_ratings(any_page: Any, harness: Harness, tmp_path: Path) -> None:
    # The rating a participant set is where the thumb is drawn, in every engine (vertical
    # range inputs are drawn differently by each).
    page = any_page
    open_trial(page, harness)
    wanted = {"1": 100, "2": 30, "3": 70, "4": 0}
    for key, value in wanted.items():
        page.keyboard.press(key)
        for move in keys_for(value):
            page.keyboard.press(move)
    page.keyboard.press(" ")  # pause: nothing moves while the picture is taken
    assert list(state(page)["ratings"].values()) == list(wanted.values())
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")  # painted
    shot = tmp_path / "sliders.png"
    page.screenshot(path=str(shot))
    screenshot(page, f"trial-sliders-{_engine(page)}")
    got = _thumb_centres(page, shot)
    assert all(g is not None for g in got), got
    assert got == pytest.approx([v / 100 for v in wanted.values()], abs=0.04), got


def test_switching_signal_keeps_the_playhead(any_page: Any, harness: Harness) -> None:
    page = any_page
    open_trial(page, harness)
    page.keyboard.press("1")
    play_for(page, 0.7)
    before = state(page)
    page.keyboard.press("2")
    play_for(page, 0.3)
    after = state(page)
    assert before["current"] == "a" and after["current"] == "b" and after["playing"]
    elapsed = after["context_time"] - before["context_time"]
    assert after["position_s"] - before["position_s"] == pytest.approx(elapsed, abs=0.05)
    assert before["position_s"] > 0.4


def test_keyboard_shortcuts(any_page: Any, harness: Harness) -> None:
    page = any_page
    open_trial(page, harness)
    page.keyboard.press("r")
    s = state(page)
    assert (s["current"], s["playing"], s["played"]["ref"]) == ("ref", True, True)
    page.keyboard.press("1")
    assert (state(page)["current"], state(page)["playing"]) == ("a", True)
    page.keyboard.press(" ")
    assert state(page)["playing"] is False
    page.keyboard.press(" ")
    assert state(page)["playing"] is True
    page.keyboard.press("ArrowUp")
    assert state(page)["ratings"]["a"] == 51  # the first key press rates, starting mid-scale
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowLeft")
    assert state(page)["ratings"]["a"] == 49
    page.keyboard.press("PageUp")
    page.keyboard.press("ArrowRight")
    assert state(page)["ratings"]["a"] == 60
    page.keyboard.press("PageDown")
    assert state(page)["ratings"]["a"] == 50
    page.keyboard.press("l")
    assert state(page)["loop"]["enabled"] is False
    assert state(page)["ratings"]["b"] is None


def test_submit_posts_ratings_and_telemetry_then_navigates(page: Any, harness: Harness) -> None:
    open_trial(page, harness)
    page.keyboard.press("r")
    play_for(page, 0.3)
    wanted = {"a": 100, "b": 23, "c": 67, "d": 81}
    for n, k in enumerate(KEYS, start=1):
        rate(page, n, wanted[k])
        play_for(page, 0.15)
    screenshot(page, "trial-complete")
    with page.expect_navigation(url="**/done/next"):
        page.locator(".wm-submit").click()
    posts = harness.posts()
    assert len(posts) == 1
    post = posts[0]
    assert post["path"] == TRIAL["save_url"] and post["headers"]["X-CSRFToken"] == "csrf-123"
    body = post["body"]
    assert body["idempotency_key"] == TRIAL["idempotency_key"]
    assert body["ratings"] == wanted
    tel = body["telemetry"]
    assert set(tel["signals"]) == set(KEYS)
    for k in KEYS:
        assert tel["signals"][k]["plays"] == 1
        assert tel["signals"][k]["listen_ms"] > 50
    assert tel["reference"]["plays"] == 1 and tel["reference"]["listen_ms"] >= 250
    assert [m["value"] for m in tel["slider_moves"]] == [100, 23, 67, 81]
    assert [m["key"] for m in tel["slider_moves"]] == KEYS
    assert tel["time_on_page_ms"] > 500 and "Chrome" in tel["user_agent"]
    assert tel["audio"]["context_sample_rate"] == 48000 and tel["audio"]["resampled"] is False
    assert tel["loop"]["used"] is False and tel["screen"]["dpr"] == 1
    assert tel["decode_ms"] >= 0
    # The interaction log passes the server's referee (given the audio was fetched).
    rules.check_trial(TRIAL["rules"], KEYS, wanted, tel, rules.Delivery(fetches=dict.fromkeys(KEYS, 1)))


def test_minimum_listening_and_page_time_hold_the_submit(page: Any, harness: Harness) -> None:
    """min_play_seconds and min_trial_seconds come with the trial data; the submit waits for both,
    and the save carries the log the server referees (rules.check_trial), across a reload."""
    trial = copy.deepcopy(TRIAL)
    trial["rules"] = {**rules.RULE_DEFAULTS, "min_play_seconds": 0.6, "min_trial_seconds": 9.0}
    open_trial(page, harness, trial)
    wanted = {"a": 100, "b": 40, "c": 20, "d": 60}
    rate(page, 1, wanted["a"])
    rate(page, 2, wanted["b"])
    # A reload keeps the log and the listening so far (the trial's own sessionStorage).
    before = page.evaluate(f"{PLAYER_JS}.telemetry().events")
    assert [(e["type"], e["key"]) for e in before] == [("play", "a"), ("move", "a"), ("play", "b"), ("move", "b")]
    page.reload()
    page.wait_for_function(f"{PLAYER_JS}.state()?.ready && {PLAYER_JS}.state().context_state === 'running'")
    assert state(page)["restored"] is True and state(page)["ratings"] == {"a": 100, "b": 40, "c": None, "d": None}
    rate(page, 3, wanted["c"])
    rate(page, 4, wanted["d"])
    # Every signal rated. Stopped, the listening no longer adds up: the page names exactly the
    # signals heard for less than 0.6 s (all four, unless a busy machine took 0.6 s between two
    # key presses), and the save stays shut.
    page.locator(".wm-stop").click()
    page.wait_for_function(f"!{PLAYER_JS}.state().playing")
    play_for(page, 0.05)  # past the stop's fade-out
    heard = state(page)["listen_s"]
    short = [str(n) for n, k in enumerate(KEYS, start=1) if heard.get(k, 0) < 0.6]
    said = ("Listen to signals " if len(short) > 1 else "Listen to signal ") + ", ".join(short) + " for at least 0.6 s."
    missing = "document.querySelector('.wm-missing').textContent"
    page.wait_for_function(f"{missing}.includes({said!r})" if short else f"!{missing}.includes('Listen to')")
    assert page.locator(".wm-submit").is_disabled()
    for n, k in enumerate(KEYS, start=1):
        page.keyboard.press(str(n))
        page.wait_for_function(f"{PLAYER_JS}.state().listen_s['{k}'] >= 0.6")
    # Heard enough; the page has been open for less than 9 s: a countdown, still no submit.
    page.wait_for_function("document.querySelector('.wm-missing').textContent.startsWith('You can submit in ')")
    assert page.locator(".wm-submit").is_disabled()
    page.wait_for_function("!document.querySelector('.wm-submit').disabled", timeout=12_000)
    assert page.locator(".wm-missing").inner_text() == ""
    with page.expect_navigation(url="**/done/next"):
        page.locator(".wm-submit").click()
    body = harness.posts()[-1]["body"]
    tel = body["telemetry"]
    assert body["ratings"] == wanted and tel["time_on_page_ms"] >= 9000
    assert all(tel["signals"][k]["listen_ms"] >= 600 for k in KEYS)
    events = tel["events"]
    assert [e["t_ms"] for e in events] == sorted(e["t_ms"] for e in events)
    for k in KEYS:
        first_play = next(i for i, e in enumerate(events) if e["type"] == "play" and e["key"] == k)
        moves = [i for i, e in enumerate(events) if e["type"] == "move" and e["key"] == k]
        assert moves and first_play < moves[0] and events[moves[-1]]["value"] == wanted[k]
    # Signals 1 and 2 were played and rated before the reload: their entries came along.
    assert events[: len(before)] == before
    rules.check_trial(trial["rules"], KEYS, wanted, tel, rules.Delivery(fetches=dict.fromkeys(KEYS, 1)))
    assert page.js_errors == []


def test_save_retries_after_503_and_navigates_only_after_success(page: Any, harness: Harness) -> None:
    open_trial(page, harness, saves={"fail_first": 2, "fail_status": 503})
    for n, v in enumerate([100, 50, 30, 10], start=1):
        rate(page, n, v)
    trial_url = page.url
    page.locator(".wm-submit").click()
    page.wait_for_function("document.querySelector('.wm-save-status').textContent.includes('retrying')")
    assert page.url == trial_url
    screenshot(page, "trial-save-retrying")
    page.wait_for_url("**/done/next", timeout=10_000)
    posts = harness.posts()
    assert [p["status"] for p in posts] == [503, 503, 200]
    assert {p["body"]["idempotency_key"] for p in posts} == {TRIAL["idempotency_key"]}
    assert all(p["body"]["ratings"] == {"a": 100, "b": 50, "c": 30, "d": 10} for p in posts)


def test_save_400_shows_the_reason_and_stays(page: Any, harness: Harness) -> None:
    open_trial(page, harness, saves={"status": 400, "body": {"error": "this trial was already rated"}})
    for n, v in enumerate([100, 50, 30, 10], start=1):
        rate(page, n, v)
    trial_url = page.url
    page.locator(".wm-submit").click()
    status = page.locator(".wm-save-status")
    page.wait_for_function("document.querySelector('.wm-save-status').textContent.includes('Not saved')")
    assert status.inner_text() == "Not saved: this trial was already rated"
    page.wait_for_timeout(800)  # the test itself: in these 0.8 s nothing is sent again and the page stays
    assert page.url == trial_url and len(harness.posts()) == 1
    assert page.locator(".wm-submit").is_enabled()
    screenshot(page, "trial-save-refused")


def test_no_condition_names_outside_training(page: Any, harness: Harness) -> None:
    open_trial(page, harness)
    html = page.content()
    for name in LABELS.values():
        assert name not in html
    assert page.locator(".wm-label").count() == 0
    assert page.locator(".wm-signal .wm-play").all_inner_texts() == ["\u25b71", "\u25b72", "\u25b73", "\u25b74"]

    training = copy.deepcopy(TRIAL)
    training["trial"].update(training=True, title="Training 1 of 2")
    training["labels"] = LABELS
    open_trial(page, harness, training)
    assert page.locator(".wm-label").all_inner_texts() == [LABELS[k] for k in KEYS]
    assert page.locator(".wm-training-note").is_visible()
    screenshot(page, "training-trial")


def test_phone_layout_fits_and_sliders_work(browser: Any, harness: Harness) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    try:
        page = context.new_page()
        open_trial(page, harness)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.get_by_role("button", name="Play signal 1 (key 1)").tap()
        box = slider(page, 1).bounding_box()
        assert box["width"] > 200 and box["width"] > 3 * box["height"]  # a horizontal row
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
        # Tap near the right end of the track: a high rating.
        page.touchscreen.tap(box["x"] + box["width"] - 12, box["y"] + box["height"] / 2)
        rating = state(page)["ratings"]["a"]
        assert rating is not None and rating >= 95
        for n in range(2, 5):
            assert slider(page, n).bounding_box()["x"] == pytest.approx(box["x"], abs=1)
        screenshot(page, "trial-phone")
    finally:
        context.close()


def test_context_runs_at_the_stimulus_rate(any_page: Any, harness: Harness) -> None:
    page = any_page
    trial = copy.deepcopy(TRIAL)
    trial["reference"]["url"] = "/s/ref44.wav"
    trial["signals"] = [{"key": k, "url": f"/s/{k}44.wav"} for k in ("a", "b")]
    open_trial(page, harness, trial)
    audio = page.evaluate(f"{PLAYER_JS}.telemetry().audio")
    assert (audio["context_sample_rate"], audio["stimulus_sample_rate"], audio["resampled"]) == (44100, 44100, False)
    assert state(page)["duration_s"] == pytest.approx(2.0)


def untouched_evaluate(session: Any, expression: str) -> Any:
    """Evaluate in the page of a DevTools ``session`` as no user would: Playwright's own
    ``evaluate`` (and every wait or locator built on it) runs with ``userGesture: true`` in
    Chromium, which gives the document sticky user activation, after which the browser lets an
    AudioContext made later start on its own. ``Runtime.evaluate`` without that flag leaves it
    untouched."""
    reply = session.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
    if "exceptionDetails" in reply:
        raise AssertionError(f"{expression}: {reply['exceptionDetails']}")
    return reply["result"].get("value")


def test_start_button_when_the_browser_blocks_autoplay(browser: Any, harness: Harness) -> None:
    from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS

    # A browser that blocks autoplay until the user acts (said outright: headless Chromium's
    # default lets some pages start sound anyway, which made this test pass or fail by chance).
    args = [a for a in CHROMIUM_ARGS if not a.startswith("--autoplay-policy")]
    args.append("--autoplay-policy=document-user-activation-required")
    strict = browser.browser_type.launch(executable_path=str(CHROMIUM), args=args, headless=True)
    try:
        page = strict.new_page()
        # Stimuli answered late, as over a slow network: the player makes its context once the
        # first one's header has arrived, so that nothing may act as the user until then. A
        # Playwright evaluate before it (open_trial's wait, which this test once used) let the
        # context start running: 1 run in 10 under load, every run with this delay.
        harness.configure({"trial": {"template": "trial.html", "context": {"trial_data": TRIAL}}}, stimulus_delay_s=0.5)
        page.goto(harness.base_url + "/page/trial")
        quiet = page.context.new_cdp_session(page)
        wait_for(
            lambda: untouched_evaluate(quiet, f"!!{PLAYER_JS}.state()?.ready"),
            timeout=30,
            interval=0.05,
            what="the player to be ready",
        )
        assert untouched_evaluate(quiet, "navigator.userActivation.hasBeenActive") is False
        assert untouched_evaluate(quiet, f"{PLAYER_JS}.state().context_state") == "suspended"
        quiet.detach()
        start = page.get_by_role("button", name="Start")
        assert start.is_visible()
        screenshot(page, "trial-start-overlay")
        # The driver's evaluations since count as activation, but the page resumes the context
        # only on the user's own press, click or key.
        assert state(page)["context_state"] == "suspended"
        start.click()
        page.wait_for_function(f"{PLAYER_JS}.state().context_state === 'running'")
        assert not start.is_visible()
        page.keyboard.press("1")
        play_for(page, 0.2)
        assert state(page)["position_s"] > 0.05
    finally:
        strict.close()


def test_loop_handles_and_click_to_seek(page: Any, harness: Harness) -> None:
    open_trial(page, harness)
    box = page.locator(".wm-wavebox").bounding_box()
    x_at = lambda s: box["x"] + box["width"] * s / 3.0  # noqa: E731 - 3 s excerpt
    mid_y = box["y"] + box["height"] / 2
    handle = page.locator(".wm-handle-end").bounding_box()
    page.mouse.move(handle["x"] + handle["width"] / 2, mid_y)
    page.mouse.down()
    page.mouse.move(x_at(1.5), mid_y, steps=5)
    page.mouse.up()
    assert state(page)["loop"]["end"] == pytest.approx(1.5, abs=0.03)
    handle = page.locator(".wm-handle-start").bounding_box()
    page.mouse.move(handle["x"] + handle["width"] / 2, mid_y)
    page.mouse.down()
    page.mouse.move(x_at(1.4), mid_y, steps=5)
    page.mouse.up()
    loop = state(page)["loop"]
    assert loop["start"] == pytest.approx(1.0, abs=1e-6) and loop["enabled"]  # held 0.5 s from the end
    page.locator(".wm-handle-end").focus()
    page.keyboard.press("ArrowRight")
    assert state(page)["loop"]["end"] == pytest.approx(1.6, abs=0.03)
    page.mouse.click(x_at(1.25), box["y"] + 5)
    assert state(page)["position_s"] == pytest.approx(1.25, abs=0.03)
    page.keyboard.press("1")
    positions = []
    for _ in range(8):
        play_for(page, 0.15)
        positions.append(state(page)["position_s"])
    # 1.2 s of playback inside a 0.6 s loop: it wrapped, and never left the region.
    assert all(1.0 - 1e-6 <= p <= 1.6 + 1e-6 for p in positions)
    assert any(b < a for a, b in zip(positions, positions[1:]))
    screenshot(page, "trial-loop")
    assert page.evaluate(f"{PLAYER_JS}.telemetry().loop")["used"] is True


def test_headphone_check_posts_the_chosen_answers(page: Any, harness: Harness, wav_dir: Path) -> None:
    # The server's sounds (webmushra/headphone.py) as files the harness serves; the page gets
    # only their URLs, never which interval is the answer.
    secrets = [
        {"test": "antiphase", "target": 2, "antiphase": 3, "seed": 7},
        {"test": "huggins", "target": 3, "seed": 8},
    ]
    for i, trial in enumerate(secrets):
        for position in (1, 2, 3):
            (wav_dir / f"hp{i}-{position}.wav").write_bytes(headphone.interval_wav(trial, position))
    data = {
        "post_url": "/p/ptok/headphones/",
        "csrf_token": "csrf-9",
        "idempotency_key": "hp-1",
        "trials": [
            {"test": t["test"], "urls": [f"/s/hp{i}-{p}.wav" for p in (1, 2, 3)]} for i, t in enumerate(secrets)
        ],
        "intervals": 3,
        "max_plays": 1,
        "gap_s": 0.1,
        "gain_db": -9.0,
    }
    harness.configure({"hp": {"template": "headphones.html", "context": {"headphone_data": data}}})
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url.split("/", 3)[3]))
    page.goto(harness.base_url + "/page/hp")
    screenshot(page, "headphone-intro")
    page.get_by_role("button", name="Begin").click()
    chosen = [3, 3]
    for i, answer in enumerate(chosen):
        assert page.locator(".hp-progress").inner_text() == f"Question {i + 1} of 2"
        page.get_by_role("button", name="Play the three sounds").click()  # waits until the sounds are loaded
        choice = page.get_by_role("button", name=str(answer), exact=True)
        choice.click()  # waits until the sounds have played and the answers open
        assert page.get_by_role("button", name="Play the three sounds").is_disabled()  # one play only
        # The check plays through the level the participant set.
        assert page.evaluate(f"{HEADPHONE_JS}.state()")["gain_db"] == pytest.approx(-9.0, abs=1e-3)
        if i == 0:
            screenshot(page, "headphone-question")
        page.get_by_role("button", name="Next").click()
    page.wait_for_url("**/done/next")
    posts = harness.posts()
    assert len(posts) == 1 and posts[0]["headers"]["X-CSRFToken"] == "csrf-9"
    answers = posts[0]["body"]["answers"]
    assert answers == [
        {"test": "antiphase", "trial": 1, "chosen": 3, "plays": 1, "rt_ms": answers[0]["rt_ms"]},
        {"test": "huggins", "trial": 2, "chosen": 3, "plays": 1, "rt_ms": answers[1]["rt_ms"]},
    ]
    assert posts[0]["body"]["idempotency_key"] == "hp-1"
    # Each interval fetched once, in order, when its question was shown.
    assert ["/" + u for u in fetched if u.startswith("s/hp")] == [u for t in data["trials"] for u in t["urls"]]


#: The headphone check's state, read as the player's is (a mushra:inspect event on its root).
HEADPHONE_JS = (
    "(() => { const d = {};"
    " document.querySelector('.hp').dispatchEvent(new CustomEvent('mushra:inspect', {detail: d})); return d; })()"
)


def _engine_page(page: Any, harness: Harness) -> None:
    harness.configure({"engine": {"template": "engine.html", "context": {}}})
    page.goto(harness.base_url + "/page/engine")
    page.wait_for_function("window.harness")  # engine.html imports the modules and hands them over
    # Float32Arrays travel as base64: a JSON list of 10^5 numbers is slow to pass back.
    page.evaluate("""() => { window.b64 = (x) => {
      const bytes = new Uint8Array(Float32Array.from(x).buffer);
      let s = '';
      for (let i = 0; i < bytes.length; i += 0x8000)
        s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
      return btoa(s);
    }; }""")


def _f32(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float64)


RENDER_SWITCH = """async ([switchAt, loop]) => {
  const sr = 48000, dur = 2.0, n = sr * dur;
  const ctx = new OfflineAudioContext(2, n, sr);
  // Each stimulus is a ramp whose value encodes the playhead: 0.1 + 0.8 * pos / dur.
  const make = (channel) => {
    const b = ctx.createBuffer(2, n, sr);
    const x = b.getChannelData(channel);
    for (let i = 0; i < n; i++) x[i] = 0.1 + 0.8 * i / n;
    return b;
  };
  const engine = new harness.engine.Engine(ctx, {a: make(0), b: make(1)}, {lead: 0, horizon: 10});
  if (loop) engine.setLoop(loop[0], loop[1], true); else engine.setLoop(0, dur, false);
  engine.play('a', 0);
  let at = null;
  if (switchAt !== null) {
    ctx.suspend(switchAt).then(() => { at = ctx.currentTime; engine.switchTo('b'); ctx.resume(); });
  }
  const out = await ctx.startRendering();
  return {at, left: b64(out.getChannelData(0)), right: b64(out.getChannelData(1))};
}"""


@pytest.mark.parametrize("any_page", ["chromium", "webkit"], indirect=True)
def test_switch_is_fade_out_then_fade_in_at_the_same_playhead(any_page: Any, harness: Harness) -> None:
    # Not in Firefox: the render switches at an exact time with OfflineAudioContext.suspend(),
    # which Firefox does not implement (Mozilla bug 1265405). There the switch is checked in
    # real time (test_switching_signal_keeps_the_playhead) and the same fade code runs at
    # every loop wrap (test_loop_wrap_fades_out_at_the_end_and_in_at_the_start).
    page = any_page
    _engine_page(page, harness)
    out = page.evaluate(RENDER_SWITCH, [0.5, None])
    sr, n = 48000, 96000
    left, right = _f32(out["left"]), _f32(out["right"])
    ramp = 0.1 + 0.8 * np.arange(n) / n
    start = int(round(out["at"] * sr))
    fade = int(0.005 * sr)
    # Before the switch only a plays, after it only b, each at the shared playhead.
    assert np.allclose(left[fade:start], ramp[fade:start], atol=1e-4) and np.all(right[:start] == 0)
    assert np.allclose(right[start + 2 * fade : n - fade], ramp[start + 2 * fade : n - fade], atol=1e-4)
    assert right[-1] < 1e-3  # the end of the excerpt fades out too
    assert np.all(left[start + fade :] == 0)
    # Not a cross-fade: the two never sound together, and the output dips to silence.
    assert np.max(np.minimum(np.abs(left), np.abs(right))) < 1e-6
    total = left + right
    assert np.min(total[start : start + 2 * fade]) < 1e-3
    # Raised-cosine envelopes of 5 ms (240 samples), no step anywhere.
    k = np.arange(fade)
    expected_out = 0.5 + 0.5 * np.cos(np.pi * k / fade)
    assert np.allclose(left[start : start + fade] / ramp[start : start + fade], expected_out, atol=0.02)
    assert np.allclose(
        right[start + fade : start + 2 * fade] / ramp[start + fade : start + 2 * fade], expected_out[::-1], atol=0.02
    )
    assert np.max(np.abs(np.diff(total))) < 0.01


PLAY_AFTER_THE_END = """async () => {
  const sr = 48000, dur = 1.0, n = sr * 3;
  const ctx = new OfflineAudioContext(2, n, sr);
  const make = (channel) => {
    const b = ctx.createBuffer(2, sr * dur, sr);
    b.getChannelData(channel).fill(0.5);
    return b;
  };
  const engine = new harness.engine.Engine(ctx, {a: make(0), b: make(1)}, {lead: 0, horizon: 10});
  engine.setLoop(0, dur, false);
  engine.play('a', 0);
  let seen = null;
  // At 1.5 s a has ended, but no tick has run to notice: the press of b comes in between.
  ctx.suspend(1.5).then(() => {
    const before = engine.playing;
    engine.play('b');
    seen = {before, playing: engine.playing, current: engine.current, at: ctx.currentTime};
    ctx.resume();
  });
  const out = await ctx.startRendering();
  return {seen, left: b64(out.getChannelData(0)), right: b64(out.getChannelData(1))};
}"""


@pytest.mark.parametrize("any_page", ["chromium", "webkit"], indirect=True)
def test_play_after_the_last_signal_ended_unnoticed_still_plays(any_page: Any, harness: Harness) -> None:
    # A participant presses B just after A reached the end, before the engine's 100 ms tick (on a
    # busy machine, longer): B must play from the start, not be selected in silence.
    page = any_page
    _engine_page(page, harness)
    out = page.evaluate(PLAY_AFTER_THE_END)
    at = out["seen"].pop("at")
    assert out["seen"] == {"before": True, "playing": True, "current": "b"}
    sr, fade = 48000, 240
    left, right = _f32(out["left"]), _f32(out["right"])
    assert np.allclose(left[fade : sr - fade], 0.5, atol=1e-4) and np.all(left[sr:] == 0)
    start = int(round(at * sr))
    assert 1.5 <= at < 1.51
    assert np.all(right[:start] == 0)
    # b from its start: a second of signal from 1.5 s, faded in and out.
    assert np.allclose(right[start + fade + 1 : start + sr - fade - 1], 0.5, atol=1e-4)
    assert np.all(right[start + sr + 1 :] == 0)


def test_loop_wrap_fades_out_at_the_end_and_in_at_the_start(any_page: Any, harness: Harness) -> None:
    page = any_page
    _engine_page(page, harness)
    out = page.evaluate(RENDER_SWITCH, [None, [0.5, 1.0]])
    sr, n, fade = 48000, 96000, 240
    left = _f32(out["left"])
    ramp = 0.1 + 0.8 * np.arange(n) / n
    # Play starts at 0, outside the loop, so it begins at the loop start and wraps every 0.5 s.
    period = int(0.5 * sr)
    for w in range(4):
        seg = left[w * period : (w + 1) * period]
        pos = np.arange(period) + int(0.5 * sr)
        assert np.allclose(seg[fade:-fade], ramp[pos][fade:-fade], atol=1e-4)
        assert seg[0] < 1e-3 and seg[-1] < 0.01  # fade in from silence, fade out to silence
    assert np.max(np.abs(np.diff(left))) < 0.01
