"""Within a session, a reload of a trial takes its audio from the browser's cache.

The server's own record of delivery (``StimulusToken.fetches``) shows whether Chromium asked
for a stimulus again: the stimuli are sent with ``Cache-Control: private, max-age=N`` and no
validators, so a reload must not fetch them (nor revalidate them) a second time.
"""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from tests.conftest import PLAYER_JS, wait_js
from tests.webmushra.conftest import render_inline
from webmushra.models import StimulusToken
from webmushra.services import experiments, sessions


def fetches(participant) -> list[int]:
    return list(StimulusToken.objects.filter(participant=participant).order_by("pk").values_list("fetches", flat=True))


def loaded(page: Any) -> None:
    wait_js(page, f"{PLAYER_JS}.telemetry() !== null")


def test_a_reload_takes_the_stimuli_from_the_browser_cache(browser, live_server, transactional_db, build_experiment):
    exp = build_experiment(n_excerpts=1, seconds=1.0, config={"training": False})
    render_inline(exp)
    exp = experiments.open_experiment(experiment=exp)
    p = sessions.start_participant(experiment=exp)
    p = sessions.set_level(participant=sessions.give_consent(participant=p, agreed=True), gain_db=0.0)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(live_server.url + reverse("participant:trial", args=[p.token, 1]))
        loaded(page)
        assert fetches(p) == [1] * exp.conditions.count()
        page.reload()
        loaded(page)
        assert fetches(p) == [1] * exp.conditions.count(), "a reload fetched the audio again"
    finally:
        context.close()
