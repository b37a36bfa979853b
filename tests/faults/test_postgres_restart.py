"""PostgreSQL restarted mid-session: the participant's save is retried with the same
idempotency key until the database is back; nothing is lost or stored twice."""

from __future__ import annotations

import pytest

from tests.conftest import PLAYER_JS, wait_js
from tests.faults.conftest import (
    Stack,
    expected_ratings,
    responses_per_trial,
    start_session,
    stored_ratings,
    trial_data,
)

pytestmark = pytest.mark.integration


def body(data: dict, ratings: dict[str, int]) -> dict:
    return {"idempotency_key": data["idempotency_key"], "ratings": ratings, "telemetry": {"time_on_page_ms": 900}}


def test_save_during_a_database_restart_is_retried_and_stored_once(fault_stack: Stack, rating_experiment):
    s = fault_stack
    client, token = start_session(s, rating_experiment["public_token"])

    first = trial_data(client.get(f"/p/{token}/trial/1/"))
    sent = {0: {sig["key"]: 10 * i for i, sig in enumerate(first["signals"])}}
    reply = client.post_json(first["save_url"], body(first, sent[0]))
    assert reply.status == 200 and reply.json()["replayed"] is False
    second = trial_data(client.get(f"/p/{token}/trial/2/"))
    sent[1] = {sig["key"]: 100 - 7 * i for i, sig in enumerate(second["signals"])}

    s.pg.stop()
    down = client.post_json(second["save_url"], body(second, sent[1]))
    # The page sees a server error (or no answer) and keeps the ratings to send again.
    assert down.status is None or down.status >= 500, (down.status, down.body[:300])
    s.pg.start()

    retried = client.post_json(second["save_url"], body(second, sent[1]))
    assert retried.status == 200, (retried.status, retried.body[:500], s.web_log())
    assert retried.json() == {"saved": True, "replayed": False, "next_url": f"/p/{token}/trial/3/"}
    # The answer to a save can be lost after the commit: sending it again is acknowledged, not stored twice.
    again = client.post_json(second["save_url"], body(second, sent[1]))
    assert again.status == 200 and again.json()["replayed"] is True
    replay_first = client.post_json(first["save_url"], body(first, sent[0]))
    assert replay_first.status == 200 and replay_first.json()["replayed"] is True
    # The same trial with different scores under another key is refused, not merged.
    other = client.post_json(second["save_url"], {**body(second, sent[0]), "idempotency_key": "f" * 16})
    assert other.status == 409

    expected = expected_ratings(s, token, sent)
    assert stored_ratings(s, token) == expected
    assert responses_per_trial(s, token) == {trial: 1 for trial in {t for t, _ in expected}}
    # A reload resumes at the first unsaved trial.
    resumed = client.get(f"/p/{token}/")
    assert resumed.status == 200 and resumed.url.endswith(f"/p/{token}/trial/3/")


@pytest.mark.browser
def test_player_retries_its_save_until_the_database_is_back(fault_stack: Stack, rating_experiment, browser):
    s = fault_stack
    client, token = start_session(s, rating_experiment["public_token"])
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        saves: list[int] = []
        page.on("response", lambda r: saves.append(r.status) if r.request.method == "POST" else None)
        page.goto(f"{s.web_url}/p/{token}/trial/1/")
        wait_js(page, f"{PLAYER_JS}.state()?.ready")
        signals = page.evaluate("JSON.parse(document.getElementById('trial-data').textContent).signals")
        keys = [sig["key"] for sig in signals]
        wanted = {k: 100 - 13 * i for i, k in enumerate(keys)}
        for i, k in enumerate(keys, start=1):
            page.get_by_label(f"Signal {i} rating", exact=True).fill(str(wanted[k]))
        assert page.evaluate(f"{PLAYER_JS}.state().ratings") == wanted

        s.pg.stop()
        try:
            page.locator(".wm-submit").click()
            wait_js(page, "document.querySelector('.wm-save-status').textContent.includes('retrying')", timeout=20_000)
            # At least one more failed attempt while the database is down.
            page.wait_for_event("response", lambda r: r.request.method == "POST", timeout=20_000)
            assert page.url.endswith(f"/p/{token}/trial/1/")
        finally:
            s.pg.start()
        page.wait_for_url(f"**/p/{token}/trial/2/", timeout=30_000)
        assert errors == []
        # Failed attempts while the database was down, then exactly one successful save.
        assert len(saves) >= 3 and all(code >= 500 for code in saves[:-1]) and saves[-1] == 200, saves
    finally:
        context.close()

    assert stored_ratings(s, token) == expected_ratings(s, token, {0: wanted})
    assert sum(responses_per_trial(s, token).values()) == 1
