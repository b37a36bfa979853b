"""A researcher in Chromium: log in, create, upload, render with a real worker, preview,
publish and download the ratings."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.browser.conftest import screenshot
from tests.conftest import evaluate_across_navigation, wait_js
from tests.paths import fixture_path

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("sync_orm_beside_playwright"),
]


def wait_rendered(page: Any, stall_s: float = 90, most_s: float = 300) -> None:
    """Wait until the page says every render job is done: as long as a job's state or progress
    moves (a loaded machine renders slowly), up to ``most_s``; said with every job's state if not."""
    from webmushra.models import RenderJob

    started = moved = time.monotonic()
    seen: Any = None
    while True:
        if evaluate_across_navigation(page, "() => document.getElementById('status').dataset.status") == "ready":
            return
        jobs = list(RenderJob.objects.order_by("pk").values_list("kind", "status", "progress", "error"))
        if jobs != seen:
            seen, moved = jobs, time.monotonic()
        now = time.monotonic()
        if now - moved > stall_s or now - started > most_s:
            raise AssertionError(
                f"not rendered after {now - started:.0f} s, nothing moved for {now - moved:.0f} s; jobs: {jobs}"
            )
        page.wait_for_timeout(250)


def test_researcher_builds_renders_previews_publishes_and_downloads(
    django_db_setup, live_server, page: Any, start_worker, excerpt_files, researcher, tmp_path
):
    from webmushra.models import Experiment

    start_worker()
    base = live_server.url
    pairs = [excerpt_files(seconds=1.5, offset=i * 1.0, name=f"take{i}") for i in range(2)]

    page.goto(base + "/r/")
    page.fill("#id_username", "researcher")
    page.fill("#id_password", "a-long-password-1")
    page.click("button[type=submit]")
    page.click("#new-experiment")
    page.fill("#id_title", "Three amps")
    page.click("#create")
    assert page.locator("h1").inner_text() == "Three amps"

    page.set_input_files("#id_dry", [str(d) for d, _ in pairs])
    page.set_input_files("#id_reference", [str(r) for _, r in pairs])
    page.click("#upload-excerpts")
    assert "Added 2 excerpt(s)." in page.locator(".messages").inner_text()

    # A refused upload: the reason shows beside the upload form, in view and focused.
    bad = tmp_path / "notes_dry.wav"
    bad.write_text("these are notes, not audio")
    page.set_input_files("#id_dry", str(bad))
    page.set_input_files("#id_reference", str(bad))
    page.click("#upload-excerpts")
    said = page.locator("#excerpts #section-messages")
    assert "not added" in said.inner_text() and "notes_dry.wav" in said.inner_text()
    box, height = said.bounding_box(), page.viewport_size["height"]
    assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= height, (box, height)
    wait_js(page, "document.activeElement && document.activeElement.id === 'section-messages'", timeout=5000)
    assert page.locator("main > .messages").count() == 0, "the message is shown at the top as well"

    page.set_input_files("#id_file", str(fixture_path("models", "coreaudioml", "ht1_lstm32.json")))
    page.fill("#id_name", "HT-1")
    page.click("#upload-checkpoint")
    assert "Recognised ht1_lstm32.json" in page.locator(".messages").inner_text()

    page.select_option("#id_checkpoint", index=1)
    page.fill("#id_label", "HT-1 LSTM")
    page.click("#add-condition")
    assert "Added condition 'HT-1 LSTM'." in page.locator(".messages").inner_text()
    screenshot(page, "researcher-built")

    page.click("#render")
    # The page polls the progress and reloads itself once every job is done.
    wait_rendered(page)
    assert page.locator("#overall-text").inner_text() == "100 %"
    screenshot(page, "researcher-rendered")

    page.click("#preview-link")
    sources = page.eval_on_selector_all("audio", "els => els.map(e => e.getAttribute('src'))")
    assert len(sources) == 2 * 5  # per excerpt: the reference and four conditions
    statuses = page.evaluate("srcs => Promise.all(srcs.map(s => fetch(s).then(r => r.status)))", sources)
    assert set(statuses) == {200}
    duration = page.evaluate(
        """src => new Promise((ok, fail) => {
        const a = new Audio(src); a.onloadedmetadata = () => ok(a.duration); a.onerror = () => fail('no audio');
    })""",
        sources[1],
    )
    assert duration == pytest.approx(1.5, abs=0.05)
    screenshot(page, "researcher-preview")

    page.go_back()
    page.click("#publish")
    link = page.locator("#participant-link").inner_text()
    exp = Experiment.objects.get(title="Three amps")
    assert exp.status == "open" and link.endswith(f"/t/{exp.public_token}/")
    assert "PROLIFIC_PID={{%PROLIFIC_PID%}}" in page.input_value("#prolific-url")
    screenshot(page, "researcher-published")

    with page.expect_download() as info:
        page.click("#download-csv")
    path = tmp_path / "ratings.csv"
    info.value.save_as(path)
    assert re.match(r"participant,item,condition,kind,rating", path.read_text())
    assert page.js_errors == []
