"""Redis stopped while participants rate: ratings never touch the broker, and render jobs
asked for during the outage run once Redis is back (the reaper re-sends them from the rows)."""

from __future__ import annotations

import pytest

from tests.faults._scenario import RESEARCHER, RESEARCHER_PASSWORD
from tests.faults.conftest import (
    RATING_EXCERPTS,
    Client,
    Stack,
    expected_ratings,
    responses_per_trial,
    start_session,
    stored_ratings,
    trial_data,
)

pytestmark = pytest.mark.integration


def login(stack: Stack) -> Client:
    client = Client(stack.web_url)
    reply = client.post_form("/accounts/login/", {"username": RESEARCHER, "password": RESEARCHER_PASSWORD})
    assert reply.status == 200 and "/accounts/login/" not in reply.url, (reply.status, reply.url)
    return client


def test_participants_rate_while_redis_is_down(fault_stack: Stack, rating_experiment):
    s = fault_stack
    client, token = start_session(s, rating_experiment["public_token"])

    s.redis.stop()
    health = Client(s.web_url).get("/healthz")
    assert health.status == 503 and health.json()["broker"].startswith("error") and health.json()["database"] == "ok"

    sent: dict[int, dict[str, int]] = {}
    for index in range(RATING_EXCERPTS):
        data = trial_data(client.get(f"/p/{token}/trial/{index + 1}/"))
        sizes = set()
        for signal in data["signals"]:
            audio = client.get(signal["url"])
            assert audio.status == 200 and audio.body[:4] == b"RIFF"
            sizes.add(len(audio.body))
        assert len(sizes) == 1
        ratings = {sig["key"]: (37 * index + 23 * i + 5) % 101 for i, sig in enumerate(data["signals"])}
        reply = client.post_json(
            data["save_url"],
            {"idempotency_key": data["idempotency_key"], "ratings": ratings, "telemetry": {"time_on_page_ms": 1000}},
        )
        assert reply.status == 200, (reply.status, reply.body[:500], s.web_log())
        assert reply.json()["saved"] is True and reply.json()["replayed"] is False
        sent[index] = ratings
    expected = expected_ratings(s, token, sent)
    assert stored_ratings(s, token) == expected
    assert responses_per_trial(s, token) == {trial: 1 for trial, _ in expected}
    done = client.get(f"/p/{token}/")
    assert done.status == 200 and done.url.endswith(f"/p/{token}/questionnaire/")


def test_render_asked_for_during_the_outage_runs_when_redis_is_back(fault_stack: Stack, tmp_path):
    s = fault_stack
    waiting = s.build(tmp_path, excerpts=1, seconds=1.0, title="Rendered across the outage")["experiment"]
    # A worker with beat (the reaper every second, re-sending jobs queued for over 2 s) lives through the outage.
    worker = s.worker(beat=True, RENDER_RESEND_SECONDS="2", REAPER_INTERVAL_SECONDS="1")
    researcher = login(s)

    s.redis.stop()
    render = researcher.post_form(f"/r/experiments/{waiting}/render/", {})
    # The rows are committed even though the message could not be sent.
    jobs = s.jobs(waiting)
    assert s.experiment_status(waiting) == "rendering"
    assert sorted(j["status"] for j in jobs) == ["pending", "queued"] and all(j["attempts"] == 0 for j in jobs)

    s.redis.start()  # same port, empty: any message sent before the outage is gone too
    jobs = s.wait_for_jobs(waiting, {"done", "failed"}, timeout=180, worker=worker)
    assert [j["status"] for j in jobs] == ["done", "done"], jobs
    assert all(j["attempts"] == 1 for j in jobs), jobs
    assert s.experiment_status(waiting) == "ready"
    assert len(s.stimuli(waiting)) == 4  # hidden reference, two anchors, one model

    # The researcher who pressed "render" during the outage got the experiment page back, not a server error.
    assert render.status == 200 and render.url.endswith(f"/r/experiments/{waiting}/"), (
        f"starting a render while the broker is down answered HTTP {render.status}:\n{s.web_log()[-1500:]}"
    )
