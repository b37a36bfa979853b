"""The trial page in Chromium shows the block's instructions and a required comment box, holds the
save until a comment is written, and the comment typed is the one the server stores."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import reverse

from tests.conftest import PLAYER_JS, wait_js
from tests.webmushra.conftest import render_inline
from webmushra import rules
from webmushra.models import TrialResponse
from webmushra.services import experiments, sessions

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

INSTRUCTIONS = "Block two: judge the attack of each note."
COMMENT = "Signal 2 clicks at the loop start."


@pytest.fixture(autouse=True)
def _orm_beside_playwright() -> Iterator[None]:
    # Playwright's sync API keeps an event loop in this thread; the ORM calls here are synchronous.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


def test_block_instructions_and_the_typed_comment_reach_the_server(page: Any, live_server, build_experiment) -> None:
    config = rules.validate_config(
        {
            "training": False,
            "questionnaire": [],
            "trial_comments": "required",
            "trial_instructions": INSTRUCTIONS,
            # The comment is what is checked here: the listening rules are off (test_session has them).
            "rules": {
                **rules.RULE_DEFAULTS,
                "must_play_all": False,
                "only_playing_slider_moves": False,
                "require_one_100": False,
                "min_trial_seconds": 0,
            },
        }
    )
    exp = build_experiment(n_excerpts=1, seconds=1.0, config=config)
    render_inline(exp)
    exp = experiments.open_experiment(experiment=exp)
    p = sessions.start_participant(experiment=exp)
    p = sessions.set_level(participant=sessions.give_consent(participant=p, agreed=True), gain_db=0.0)

    page.goto(live_server.url + reverse("participant:trial", args=[p.token, 1]))
    wait_js(page, f"{PLAYER_JS}.state()?.ready")
    assert page.locator(".wm-block-instructions").inner_text().strip() == INSTRUCTIONS
    box = page.get_by_label("Your comment on this trial")
    assert box.is_visible()
    n = page.locator(".wm-slider").count()
    for i in range(1, n + 1):
        page.get_by_label(f"Signal {i} rating", exact=True).fill(str(10 * i))
    submit = page.locator(".wm-submit")
    assert submit.is_disabled()
    assert "Write a comment on this trial." in page.locator(".wm-missing").inner_text()
    box.fill(COMMENT)
    assert submit.is_enabled()
    before = page.url
    submit.click()
    page.wait_for_url(lambda url: url != before)
    assert TrialResponse.objects.get(participant=p).comment == COMMENT
    assert not page.js_errors
