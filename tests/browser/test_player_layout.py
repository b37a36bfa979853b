"""Browser tests of the MUSHRA page's layout and of a reload mid-trial (Chromium, Firefox ESR, WebKitGTK).

The player bar (reference, playback, save), every slider and the five BS.1534-3 scale labels
stay in view at 1280x800 and on a 390x844 phone; keyboard hints show only where there is a
keyboard; a tap on a slider that cannot move yet says why; a reload keeps the ratings, the
played marks and the loop of the trial in progress.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest

from tests.browser.conftest import Harness, keys_for, screenshot
from tests.browser.driven import ScriptedPage
from tests.browser.firefox import BrowserHung
from tests.browser.test_player import KEYS, TRIAL, open_trial, state
from tests.conftest import PLAYER_JS

pytestmark = pytest.mark.browser

#: Eight signals (the demanding case on a phone), with the progress the server sends.
EIGHT: dict[str, Any] = {
    **copy.deepcopy(TRIAL),
    "signals": [{"key": k, "url": f"/s/{KEYS[i % 4]}.wav"} for i, k in enumerate("abcdefgh")],
    "instructions": "Rate each signal against the reference. Listen to the reference first, "
    "then compare every signal with it, as often as you like.",
    "progress": {"stage": "test", "position": 4, "of": 11, "seconds_per_trial": 60, "minutes_left": 8},
}
BAND_LABELS = ["Excellent", "Good", "Fair", "Poor", "Bad"]


def _page_at(request: pytest.FixtureRequest, engine: str, width: int, height: int) -> Any:
    """A tab of ``engine`` whose viewport is ``width`` x ``height`` CSS pixels."""
    if engine == "chromium":
        context = request.getfixturevalue("browser").new_context(viewport={"width": width, "height": height})
        request.addfinalizer(context.close)
        tab = context.new_page()
        tab.set_default_timeout(10_000)
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.js_errors = errors
        return tab
    if engine == "firefox":
        return request.getfixturevalue("firefox").new_page(width=width, height=height)
    # WebKit sizes the window, not the viewport: its toolbar takes some height, and
    # MiniBrowser keeps the window at least 447 px wide (still a phone-width layout).
    tab = request.getfixturevalue("webkit").new_page(width=width, height=height)
    request.addfinalizer(tab.close)
    tab.goto("about:blank")
    inner = tab.evaluate("[outerWidth - innerWidth, outerHeight - innerHeight]")
    tab.call("POST", "/window/rect", {"width": width + inner[0], "height": height + inner[1]})
    return tab


def _open(page: Any, harness: Harness, trial: dict[str, Any], template: str = "trial.html") -> None:
    """As test_player.open_trial, with the page's template chosen (the participant's real page
    with its site header, or the bare harness page)."""
    harness.configure({"trial": {"template": template, "context": {"trial_data": trial}}})
    page.goto(harness.base_url + "/page/trial")
    page.wait_for_function(f"{PLAYER_JS}.state()?.ready && {PLAYER_JS}.state().context_state === 'running'")
    settle = getattr(page, "settle_audio", None)
    if settle is not None:
        settle(f"{PLAYER_JS}.context")


#: What of the page's controls is not fully in view or is covered (by the sticky bar, say):
#: each box must lie inside the viewport and be what is hit at its centre (a slider's track
#: at its centre and at both ends of the thumb's travel); a scale label must also not be
#: clipped by an ancestor nor overlap another.
OUT_OF_VIEW = """() => {
  const vw = document.documentElement.clientWidth, vh = innerHeight, out = [];
  const box = r => [r.left, r.top, r.right, r.bottom].map(Math.round).join(',');
  const check = (what, el, points) => {
    const r = el.getBoundingClientRect();
    const inside = r.left >= -0.5 && r.top >= -0.5 && r.right <= vw + 0.5 && r.bottom <= vh + 0.5;
    if (!(r.width > 0 && r.height > 0 && inside)) {
      out.push(what + ' is not in view (' + box(r) + ' in ' + vw + 'x' + vh + ')');
      return false;
    }
    for (const [fx, fy] of points) {
      const hit = document.elementFromPoint(r.left + fx * r.width, r.top + fy * r.height);
      if (!hit || !(hit === el || el.contains(hit)))
        out.push(what + ' is covered at ' + fx + ',' + fy + ' by ' + (hit ? hit.className || hit.tagName : 'nothing'));
    }
    return true;
  };
  check('the reference button', document.querySelector('.wm-ref'), [[0.5, 0.5]]);
  check('the save button', document.querySelector('.wm-submit'), [[0.5, 0.5]]);
  const thumb = parseFloat(getComputedStyle(document.querySelector('.wm')).getPropertyValue('--wm-thumb'));
  document.querySelectorAll('.wm-track').forEach((t, i) => {
    const r = t.getBoundingClientRect(), across = r.width > r.height;
    const end = (thumb / 2) / (across ? r.width : r.height);
    const ends = across ? [[end, 0.5], [1 - end, 0.5]] : [[0.5, end], [0.5, 1 - end]];
    check('slider ' + (i + 1), t, [[0.5, 0.5], ...ends]);
  });
  const labels = [...document.querySelectorAll('.wm-band span')];
  labels.forEach(s => {
    if (!check('the label ' + s.textContent, s, [[0.5, 0.5]])) return;
    const r = s.getBoundingClientRect();
    for (let a = s.parentElement; a && a !== document.body; a = a.parentElement) {
      if (getComputedStyle(a).overflowX === 'visible' && getComputedStyle(a).overflowY === 'visible') continue;
      const c = a.getBoundingClientRect();
      if (r.left < c.left - 0.5 || r.right > c.right + 0.5 || r.top < c.top - 0.5 || r.bottom > c.bottom + 0.5)
        out.push('the label ' + s.textContent + ' is clipped by ' + a.className);
    }
  });
  labels.forEach((s, i) => labels.slice(i + 1).forEach(o => {
    const a = s.getBoundingClientRect(), b = o.getBoundingClientRect();
    if (a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom)
      out.push('the labels ' + s.textContent + ' and ' + o.textContent + ' overlap');
  }));
  return out;
}"""

SCROLLS = {
    "at load": "window.scrollTo(0, 0)",
    "at the lowest signal": "[...document.querySelectorAll('.wm-signal')].pop().scrollIntoView({block: 'end'})",
    "at the bottom": "window.scrollTo(0, document.documentElement.scrollHeight)",
}


@pytest.mark.parametrize("size", [(1280, 800), (390, 844)], ids=["desktop", "phone"])
@pytest.mark.parametrize("engine", ["chromium", "firefox", "webkit"])
def test_player_bar_sliders_and_scale_stay_in_view(
    request: pytest.FixtureRequest, harness: Harness, engine: str, size: tuple[int, int]
) -> None:
    page = _page_at(request, engine, *size)
    # The participant's real page (site header included), eight signals and the reference.
    _open(page, harness, EIGHT, template="webmushra/participant/trial.html")
    assert page.evaluate("[...document.querySelectorAll('.wm-band span')].map(s => s.textContent)") == BAND_LABELS
    page.keyboard.press("1")  # a selected, playing signal: its slider is open, the others locked
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    for where, scroll in SCROLLS.items():
        page.evaluate(f"() => {{ {scroll}; }}")
        assert page.evaluate(OUT_OF_VIEW) == [], f"{engine} {size} {where}"
    screenshot(page, f"trial-in-view-{engine}-{size[0]}x{size[1]}")
    if size[0] < 640:  # on the phone the sliders are rows, one under another
        rows = page.evaluate("[...document.querySelectorAll('.wm-track')].map(t => t.getBoundingClientRect().width)")
        assert min(rows) > 200
    assert page.js_errors == []


def test_keyboard_hints_only_where_there_is_a_keyboard(browser: Any, harness: Harness) -> None:
    for viewport, touch, shown in [
        ({"width": 1280, "height": 800}, False, True),
        ({"width": 390, "height": 844}, True, False),
        ({"width": 1024, "height": 768}, True, False),  # a tablet: wide, but no keyboard
    ]:
        extra = {"has_touch": True, "is_mobile": True} if touch else {}
        context = browser.new_context(viewport=viewport, **extra)
        try:
            page = context.new_page()
            open_trial(page, harness)
            assert page.evaluate("matchMedia('(hover: hover) and (pointer: fine)').matches") is not touch
            assert page.locator(".wm-keys").is_visible() is shown, (viewport, touch)
        finally:
            context.close()


HINT = "document.querySelector('.wm-hint')"


def test_tapping_a_locked_slider_says_why(any_page: Any, harness: Harness) -> None:
    page = any_page
    open_trial(page, harness)
    page.keyboard.press("1")
    assert page.evaluate(f"{HINT}.textContent") == ""
    # What a tap in the middle of signal 3's (locked) slider hits: the cover that explains.
    assert (
        page.evaluate(
            """() => { const t = document.querySelector('.wm-signal[data-key=c] .wm-track').getBoundingClientRect();
          const hit = document.elementFromPoint(t.left + t.width / 2, t.top + t.height / 2);
          return hit && hit.classList.contains('wm-lock') && hit.closest('.wm-signal').dataset.key; }"""
        )
        == "c"
    )
    page.click(".wm-signal[data-key=c] .wm-lock")
    page.wait_for_function(f"{HINT}.textContent === 'Play signal 3 to rate it.'")
    assert page.evaluate(
        f"[{HINT}.getAttribute('aria-live'), {HINT}.getAttribute('role'), {HINT}.getClientRects().length > 0]"
    ) == ["polite", "status", True]
    assert state(page)["ratings"]["c"] is None
    page.keyboard.press("3")  # playing it opens the slider and the message goes
    page.wait_for_function(f"{HINT}.textContent === ''")
    assert page.evaluate("[...document.querySelectorAll('.wm-lock')].map(l => l.getClientRects().length > 0)") == [
        True,
        True,
        False,
        True,
    ]
    assert page.js_errors == []


def test_a_touch_tap_on_a_locked_slider_says_why(browser: Any, harness: Harness) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    try:
        page = context.new_page()
        open_trial(page, harness)
        box = page.locator(".wm-signal[data-key=b] .wm-track").bounding_box()
        page.touchscreen.tap(box["x"] + box["width"] * 0.8, box["y"] + box["height"] / 2)
        page.wait_for_function(f"{HINT}.textContent === 'Play signal 2 to rate it.'")
        assert page.locator(".wm-hint").is_visible() and state(page)["ratings"]["b"] is None
        screenshot(page, "trial-phone-locked-slider")
    finally:
        context.close()


def _reload(page: Any) -> None:
    started = time.monotonic()
    page.reload()
    try:
        page.wait_for_function(f"{PLAYER_JS}.state()?.ready")
    except BrowserHung:
        raise
    except AssertionError as exc:  # say how far the reloaded page got, or whether it answers at all
        seen_by_browser = page.diagnose() if hasattr(page, "diagnose") else None
        probe = f"JSON.stringify({{state: {PLAYER_JS}.state(), ready: document.readyState}})"
        seen = page._poll(probe) if isinstance(page, ScriptedPage) else page.evaluate(probe)
        raise AssertionError(
            f"{exc}\nthe page then: {seen}\nthe browser: {seen_by_browser}"
            f" (reload sent at {started:.2f}, now {time.monotonic():.2f})\nscript errors: {page.js_errors}"
        ) from None


#: The trial with no minimum listening or page time, so that it is rated and saved at key speed.
QUICK: dict[str, Any] = {**TRIAL, "rules": {**TRIAL["rules"], "min_play_seconds": 0, "min_trial_seconds": 0}}


def _configure(harness: Harness, trial: dict[str, Any]) -> None:
    harness.configure({"trial": {"template": "trial.html", "context": {"trial_data": trial}}})


FRESH = {
    "ratings": dict.fromkeys(KEYS),
    "played": {"ref": False, **dict.fromkeys(KEYS, False)},
    "restored": False,
}


def _progress(page: Any) -> dict[str, Any]:
    st = state(page)
    return {"ratings": st["ratings"], "played": st["played"], "restored": st["restored"]}


def test_reload_keeps_ratings_played_marks_and_loop(any_page: Any, harness: Harness) -> None:
    page = any_page
    open_trial(page, harness, QUICK)
    page.keyboard.press("r")
    for n, value in [(1, 70), (2, 30)]:
        page.keyboard.press(str(n))
        for move in keys_for(value):
            page.keyboard.press(move)
    page.evaluate("document.querySelector('.wm-handle-end').focus()")
    for _ in range(3):
        page.keyboard.press("ArrowLeft")
    page.evaluate("document.querySelector('.wm-handle-start').focus()")
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("l")  # loop off: the restored loop must keep that too
    before = state(page)
    assert before["ratings"] == {"a": 70, "b": 30, "c": None, "d": None}
    assert before["loop"] == {"start": pytest.approx(0.3), "end": pytest.approx(2.7), "enabled": False}

    _reload(page)
    after = state(page)
    assert after["restored"] is True
    assert after["ratings"] == before["ratings"]
    assert after["played"] == {"ref": True, "a": True, "b": True, "c": False, "d": False}
    assert after["loop"] == {"start": pytest.approx(0.3), "end": pytest.approx(2.7), "enabled": False}
    shown = page.evaluate(
        """() => ['a', 'b', 'c'].map(k => { const s = document.querySelector(`.wm-signal[data-key=${k}]`);
          return [s.querySelector('.wm-slider').value, s.querySelector('.wm-value').textContent,
                  s.classList.contains('played'), s.querySelector('.wm-slider').classList.contains('unrated')]; })"""
    )
    assert shown == [["70", "70", True, False], ["30", "30", True, False], ["50", "\u2013", False, True]]
    assert page.evaluate("document.querySelector('.wm-loop-enabled').checked") is False
    assert page.evaluate(f"{PLAYER_JS}.telemetry().loop.used") is True
    missing = page.evaluate("document.querySelector('.wm-missing').textContent")
    assert missing.startswith("Play signals 3, 4. ") and "Rate signals 3, 4." in missing

    # A successful save forgets the trial: opening it again starts afresh.
    for n, value in [(3, 100), (4, 50)]:
        page.keyboard.press(str(n))
        for move in keys_for(value):
            page.keyboard.press(move)
    assert state(page)["ratings"] == {"a": 70, "b": 30, "c": 100, "d": 50}
    page.click(".wm-submit")
    if isinstance(page, ScriptedPage):
        page.wait_for_path("/done/next")
    else:
        page.wait_for_url("**/done/next")
    assert harness.posts()[-1]["body"]["ratings"] == {"a": 70, "b": 30, "c": 100, "d": 50}
    page.goto(harness.base_url + "/page/trial")
    page.wait_for_function(f"{PLAYER_JS}.state()?.ready")
    assert _progress(page) == FRESH

    # Kept only for this very trial: another idempotency key or other signals restore nothing.
    page.keyboard.press("1")
    page.keyboard.press("ArrowUp")
    kept = {**FRESH, "ratings": {**FRESH["ratings"], "a": 51}, "played": {**FRESH["played"], "a": True}}
    _reload(page)
    assert _progress(page) == {**kept, "restored": True}
    _configure(harness, {**QUICK, "idempotency_key": "another-trial-or-participant"})
    _reload(page)
    assert _progress(page) == FRESH
    _configure(harness, QUICK)
    _reload(page)
    assert _progress(page) == {**kept, "restored": True}
    reordered = {**QUICK, "signals": list(reversed(TRIAL["signals"]))}
    _configure(harness, reordered)
    _reload(page)
    assert _progress(page) == FRESH
    assert page.js_errors == []


def test_stored_trial_is_json_under_the_idempotency_key(page: Any, harness: Harness) -> None:
    # What the tab keeps: only this trial's opaque signal keys, ratings, marks and loop.
    open_trial(page, harness)
    page.keyboard.press("2")
    page.keyboard.press("PageDown")
    stored = page.evaluate(
        "k => Object.keys(sessionStorage).filter(n => n.endsWith(k)).map(n => sessionStorage.getItem(n))",
        TRIAL["idempotency_key"],
    )
    assert len(stored) == 1
    kept = json.loads(stored[0])
    assert kept["idempotency_key"] == TRIAL["idempotency_key"] and kept["keys"] == KEYS
    assert kept["ratings"] == {"a": None, "b": 40, "c": None, "d": None}
    assert kept["played"] == {"ref": False, "a": False, "b": True, "c": False, "d": False}
    assert kept["loop"] == {"start": 0, "end": 3, "enabled": True}
