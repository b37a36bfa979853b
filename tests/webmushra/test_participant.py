"""Participant-side rules: validation of ratings, resume, blinding of stimulus responses."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from tests.conftest import assert_player_controls_once
from tests.trials import save_body
from webmushra import rules
from webmushra.models import Participant, Rating, StimulusToken, TrialResponse
from webmushra.services import experiments, sessions

pytestmark = pytest.mark.django_db


def post(client, url, body):
    return client.post(url, json.dumps(body), content_type="application/json")


def good_body(p, index, client=None):
    """A save that meets every rule of the experiment (tests/trials.py): the audio fetched, the
    time gone by and the player's telemetry."""
    return save_body(p, index, client=client)


def test_ratings_are_validated_and_nothing_is_stored_on_error(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0)
    url = reverse("participant:trial", args=[p.token, 1])
    body = good_body(p, 0)
    keys = list(body["ratings"])
    cases = [
        ({**body, "ratings": {**body["ratings"], keys[0]: 101}}, 400, "outside 0..100"),
        ({**body, "ratings": {**body["ratings"], keys[0]: -1}}, 400, "outside 0..100"),
        ({**body, "ratings": {**body["ratings"], "zz": 10}}, 400, "not a signal of this trial"),
        ({**body, "ratings": {k: 10 for k in keys[:-1]}}, 400, "not rated"),
        ({**body, "ratings": {**body["ratings"], keys[0]: "ten"}}, 400, "not a number"),
        ({**body, "idempotency_key": ""}, 400, "idempotency_key"),
    ]
    for bad, status, reason in cases:
        r = post(client, url, bad)
        assert r.status_code == status and reason in r.json()["error"], (bad, r.content)
    r = client.post(url, "{not json", content_type="application/json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    assert Rating.objects.count() == 0 and TrialResponse.objects.count() == 0


def test_trial_json_carries_the_rules_and_the_signal_cap(client, participant_at_trials):
    """The player keeps no rule defaults and no cap: both come with every trial, from rules.py."""
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0)

    def trial_json() -> dict:
        page = client.get(reverse("participant:trial", args=[p.token, 1])).content.decode()
        assert_player_controls_once(page)
        return json.loads(re.search(r'<script id="trial-data" type="application/json">(.*?)</script>', page, re.S)[1])

    data = trial_json()
    assert data["rules"] == rules.RULE_DEFAULTS and data["max_signals"] == rules.MAX_SIGNALS_PER_TRIAL == 12
    exp.config = {**exp.config, "rules": {**rules.RULE_DEFAULTS, "require_one_100": False, "loop_min_seconds": 1.5}}
    exp.save(update_fields=["config"])
    assert trial_json()["rules"] == {**rules.RULE_DEFAULTS, "require_one_100": False, "loop_min_seconds": 1.5}


def test_a_trial_saved_twice_with_another_key_is_refused(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0)
    url = reverse("participant:trial", args=[p.token, 1])
    assert post(client, url, good_body(p, 0)).status_code == 200
    again = {**good_body(p, 0), "idempotency_key": "another-key-123"}
    r = post(client, url, again)
    assert r.status_code == 409 and "already submitted" in r.json()["error"]


def test_reload_resumes_at_the_first_unsaved_trial(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=2, seconds=1.0)
    assert len(p.plan) == 3  # one training trial + two test trials
    assert post(client, reverse("participant:trial", args=[p.token, 1]), good_body(p, 0)).status_code == 200
    r = client.get(reverse("participant:resume", args=[p.token]))
    assert r.status_code == 302 and r.url == reverse("participant:trial", args=[p.token, 2])
    # Asking for a later trial than the next unsaved one redirects back to it.
    r = client.get(reverse("participant:trial", args=[p.token, 3]))
    assert r.status_code == 302 and r.url == reverse("participant:trial", args=[p.token, 2])


def test_ratings_after_close_are_refused(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0)
    experiments.close_experiment(experiment=exp)
    r = post(client, reverse("participant:trial", args=[p.token, 1]), good_body(p, 0))
    assert r.status_code == 409 and "closed" in r.json()["error"]


def test_another_participants_trial_cannot_be_rated_with_my_keys(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0)
    other = sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=True)
    other = sessions.set_level(participant=other, gain_db=0)
    good_body(other, 0)  # the other participant fetched the audio and took the time
    body = good_body(p, 0)  # p's idempotency key, posted to the other participant's URL
    r = post(client, reverse("participant:trial", args=[other.token, 1]), body)
    # The idempotency key is the one the server issued to each participant for each trial: p's
    # key is refused on the other participant's trial, and nothing is stored for either.
    assert r.status_code == 400 and "idempotency_key" in r.json()["error"]
    assert not TrialResponse.objects.filter(participant__in=[p, other]).exists()


def test_stimulus_responses_do_not_tell_conditions_apart(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0)
    tokens = list(StimulusToken.objects.filter(participant=p, stimulus__excerpt__is_training=False))
    assert len(tokens) == exp.conditions.count()
    lengths = set()
    for t in tokens:
        r = client.get(reverse("participant:stimulus", args=[t.token]))
        assert r.status_code == 200
        assert "ETag" not in r and "Last-Modified" not in r and "Content-Disposition" not in r
        assert r["Cache-Control"] == f"private, max-age={rules.stimulus_cache_seconds(exp.estimated_minutes)}"
        assert r["Content-Type"] == "audio/wav"
        body = b"".join(r.streaming_content)
        assert len(body) == int(r["Content-Length"])
        lengths.add(len(body))
        for c in exp.conditions.all():
            assert c.label.encode() not in body
    assert len(lengths) == 1


def test_stimulus_range_requests(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0)
    t = StimulusToken.objects.filter(participant=p).first()
    url = reverse("participant:stimulus", args=[t.token])
    full = b"".join(client.get(url).streaming_content)
    r = client.get(url, HTTP_RANGE="bytes=10-19")
    assert r.status_code == 206 and r["Content-Range"] == f"bytes 10-19/{len(full)}"
    assert b"".join(r.streaming_content) == full[10:20] and r["Content-Length"] == "10"
    r = client.get(url, HTTP_RANGE="bytes=-5")
    assert r.status_code == 206 and b"".join(r.streaming_content) == full[-5:]
    r = client.get(url, HTTP_RANGE=f"bytes={len(full)}-")
    assert r.status_code == 416 and r["Content-Range"] == f"bytes */{len(full)}"
    assert client.get(reverse("participant:stimulus", args=["not-a-token"])).status_code == 404


def test_nginx_mode_answers_with_x_accel_redirect(client, participant_at_trials, settings):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0)
    settings.SERVE_MEDIA_WITH = "nginx"
    t = StimulusToken.objects.filter(participant=p).first()
    r = client.get(reverse("participant:stimulus", args=[t.token]))
    assert r["X-Accel-Redirect"].startswith("/protected-media/stimuli/")
    assert r["Cache-Control"] == f"private, max-age={rules.stimulus_cache_seconds(exp.estimated_minutes)}"


def test_declining_consent_records_nothing_more(client, open_experiment):
    exp = open_experiment(n_excerpts=1, seconds=1.0)
    client.post(reverse("participant:landing", args=[exp.public_token]))
    p = Participant.objects.get()
    r = client.post(reverse("participant:consent", args=[p.token]), {"agree": "no"})
    p.refresh_from_db()
    assert p.stage == "declined" and r.url == reverse("participant:done", args=[p.token])


def screening_experiment(open_experiment, **cfg):
    exp = open_experiment(n_excerpts=1, seconds=1.0)
    exp.config = {**exp.config, "headphone_check": {"enabled": True, "trials_per_test": 6, **cfg}}
    exp.save()
    p = sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=True)
    p = sessions.set_level(participant=p, gain_db=0.0)
    assert p.stage == "screening"
    return exp, p


def fetch_screening_audio(client, page) -> None:
    """Fetch every interval of every trial, as the page does when it shows each question."""
    for t in page.context["headphone_data"]["trials"]:
        for url in t["urls"]:
            assert client.get(url).status_code == 200


@pytest.mark.parametrize("wrong, passes", [(0, True), (1, True), (2, False)])
def test_headphone_check_is_scored_against_the_servers_targets(client, open_experiment, wrong, passes):
    exp, p = screening_experiment(open_experiment)
    url = reverse("participant:screening", args=[p.token])
    page = client.get(url)
    trials = page.context["headphone_data"]["trials"]
    assert len(trials) == 12 and {t["test"] for t in trials} == {"antiphase", "huggins"}
    # A reload shows the same trials.
    assert client.get(url).context["headphone_data"]["trials"] == trials
    fetch_screening_audio(client, page)
    p.refresh_from_db()
    answers = []
    for i, t in enumerate(p.screening["trials"]):
        # Get `wrong` antiphase answers wrong; claim every target was 1 (ignored by the server).
        chosen = t["target"] if not (t["test"] == "antiphase" and i < wrong) else t["target"] % 3 + 1
        answers.append({"test": t["test"], "trial": i + 1, "target": 1, "chosen": chosen})
    r = client.post(url, json.dumps({"answers": answers}), content_type="application/json")
    assert r.status_code == 200
    p.refresh_from_db()
    assert p.screening["passed"] is passes
    assert p.stage == ("training" if passes else "screened_out")
    assert p.screening["scores"]["antiphase"] == pytest.approx((6 - wrong) / 6)
    if not passes:
        assert "cannot continue" in client.get(r.json()["next_url"]).content.decode()


def test_headphone_check_refuses_malformed_answers(client, open_experiment):
    exp, p = screening_experiment(open_experiment)
    url = reverse("participant:screening", args=[p.token])
    client.get(url)
    r = client.post(url, json.dumps({"answers": [{"chosen": 1}]}), content_type="application/json")
    assert r.status_code == 400 and "expected 12 answers" in r.json()["error"]
    p.refresh_from_db()
    assert p.stage == "screening"


def test_json_endpoints_refuse_form_posts_with_a_reason(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0)
    url = reverse("participant:trial", args=[p.token, 1])
    r = client.post(url, {"ratings": "a=1"})  # multipart form data
    assert r.status_code == 400 and "send JSON" in r.json()["error"]
    assert TrialResponse.objects.count() == 0


def test_trial_page_shows_the_stage_the_trial_number_and_the_time_left(client, participant_at_trials):
    """Before any save the estimate shares the experiment's estimated minutes over its trials; after
    one, it is the participant's own median time on a trial page times the trials left."""
    exp, p = participant_at_trials(n_excerpts=2, seconds=1.0)
    exp.estimated_minutes = 12
    exp.save(update_fields=["estimated_minutes"])
    assert [e["training"] for e in p.plan] == [True, False, False]

    def page(number: int) -> tuple[dict, str]:
        html = client.get(reverse("participant:trial", args=[p.token, number])).content.decode()
        data = json.loads(re.search(r'<script id="trial-data" type="application/json">(.*?)</script>', html, re.S)[1])
        return data, re.sub(r"\s+", " ", html)

    data, html = page(1)
    assert data["progress"] == {
        "stage": "training",
        "position": 1,
        "of": 3,
        "seconds_per_trial": 240,
        "minutes_left": 12,
    }
    assert 'Training</span> <span class="wm-stage-count">trial 1 of 1</span>' in html
    assert "about 12 min left" in html
    body = good_body(p, 0)
    body["telemetry"]["time_on_page_ms"] = 90_000
    assert post(client, reverse("participant:trial", args=[p.token, 1]), body).status_code == 200
    data, html = page(2)
    assert data["progress"] == {"stage": "test", "position": 2, "of": 3, "seconds_per_trial": 90, "minutes_left": 3}
    assert 'Rating</span> <span class="wm-stage-count">trial 1 of 2</span>' in html
    assert "about 3 min left" in html and 'max="3" value="1"' in html


def test_trials_are_saved_in_order_with_the_issued_key_only(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=2, seconds=1.0, config={"training": False})
    # An invented key, well-formed: refused, nothing stored.
    body = good_body(p, 0)
    body["idempotency_key"] = "0123456789abcdef"
    r = post(client, reverse("participant:trial", args=[p.token, 1]), body)
    assert r.status_code == 400 and "idempotency_key" in r.json()["error"]
    # The second trial before the first: refused with the trial that comes first.
    r = post(client, reverse("participant:trial", args=[p.token, 2]), good_body(p, 1))
    assert r.status_code == 409 and "trial 1 comes first" in r.json()["error"]
    assert not TrialResponse.objects.filter(participant=p).exists()
    assert post(client, reverse("participant:trial", args=[p.token, 1]), good_body(p, 0)).status_code == 200
    assert post(client, reverse("participant:trial", args=[p.token, 2]), good_body(p, 1)).status_code == 200


def test_oversized_deep_or_huge_number_saves_are_refused_with_a_reason(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0, config={"training": False})
    url = reverse("participant:trial", args=[p.token, 1])
    body = good_body(p, 0)
    # Telemetry padded past the limit: 413, nothing stored.
    big = {**body, "telemetry": {**body["telemetry"], "junk": "x" * rules.MAX_SAVE_BYTES}}
    r = post(client, url, big)
    assert r.status_code == 413 and "kB" in r.json()["error"]
    # A body nested 100,000 levels deep, and scores past any integer type: 400, never 500.
    deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    r = client.post(url, deep, content_type="application/json")
    assert r.status_code in (400, 413) and "error" in r.json()
    key = next(iter(body["ratings"]))
    for score in (2**64, 10**400):
        text = json.dumps(body).replace(f'"{key}": {body["ratings"][key]}', f'"{key}": {score}', 1)
        r = client.post(url, text, content_type="application/json")
        assert r.status_code == 400, (score if score < 10**20 else "huge", r.content[:200])
    r = client.post(url, '{"ratings": {"a": ' + "9" * 5000 + "}}", content_type="application/json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    assert not TrialResponse.objects.filter(participant=p).exists()
    # The headphone answers have their own, smaller limit.
    screening = reverse("participant:screening", args=[p.token])
    r = client.post(
        screening, json.dumps({"answers": ["x" * rules.MAX_SCREENING_BYTES]}), content_type="application/json"
    )
    assert r.status_code == 413
    assert post(client, url, body).status_code == 200
