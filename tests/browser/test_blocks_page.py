"""The settings page's blocks section in Chromium: rows added, moved and saved with the page's
script, and the saved order is the order participants get."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("sync_orm_beside_playwright"),
]


def test_blocks_are_added_moved_and_saved_in_the_browser(django_db_setup, live_server, page: Any, build_experiment):
    exp = build_experiment(n_excerpts=2, seconds=1.0, config={"training": False})
    base = live_server.url
    page.goto(base + "/r/")
    page.fill("#id_username", "researcher")
    page.fill("#id_password", "a-long-password-1")
    page.click("button[type=submit]")
    page.goto(f"{base}/r/experiments/{exp.pk}/settings/#blocks")
    assert page.locator("fieldset.block-row").count() == 2  # the MUSHRA block and an empty row
    page.click("#add-block-row")
    assert page.locator("fieldset.block-row").count() == 3
    assert page.input_value("input[name='blocks-TOTAL_FORMS']") == "3"
    page.select_option("select[name='blocks-1-paradigm']", "abx")
    page.fill("input[name='blocks-1-repetitions']", "2")
    page.select_option("select[name='blocks-2-paradigm']", "ab")
    page.check("input[name='blocks-2-with_reference']")
    page.fill("textarea[name='blocks-2-instructions']", "Which do you prefer?")
    # The AB row, last, moved to the top: the order numbers follow the rows.
    row = page.locator("#block-row-3")
    row.locator("button", has_text="Move up").click()
    row.locator("button", has_text="Move up").click()
    assert page.eval_on_selector_all("fieldset.block-row", "rows => rows.map(r => r.id)") == [
        "block-row-3",
        "block-row-1",
        "block-row-2",
    ]
    assert page.input_value("input[name='blocks-2-order']") == "1"
    page.click("#save-blocks")
    page.wait_for_url("**/settings/#blocks")
    assert "Blocks saved: 3 blocks." in page.locator(".messages").inner_text()
    exp.refresh_from_db()
    assert [(b["paradigm"], b["repetitions"], b["with_reference"]) for b in exp.config["blocks"]] == [
        ("ab", 1, True),
        ("mushra", 1, False),
        ("abx", 2, False),
    ]
    assert exp.config["blocks"][0]["instructions"] == "Which do you prefer?"
    # The page shows what each block gives: AB with the reference over one model, 1 pair x 2 excerpts.
    assert page.locator("#block-plan-1").get_attribute("data-test-trials") == "2"
    assert page.locator("#block-plan-3").get_attribute("data-test-trials") == "4"
    assert page.js_errors == []
