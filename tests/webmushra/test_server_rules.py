"""The server referees every trial (webmushra/rules.py ``check_trial``): each enabled rule is
checked from the page's interaction log and the server's own record of the audio it served.

Each case sends a save with exactly one breach and expects HTTP 400 naming the rule with
nothing stored; the very same save is then accepted once that rule is switched off in the
experiment's config, which shows the check is what refused it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse

from tests.trials import elapse, fetch_audio, save_body, scores_for, telemetry
from webmushra import rules
from webmushra.models import Participant, Rating, TrialResponse
from webmushra.services import sessions

pytestmark = pytest.mark.django_db

#: Rules as in the defaults, with the short minimums these cases are built around.
BASE_RULES = {**rules.RULE_DEFAULTS, "min_play_seconds": 1.0, "min_trial_seconds": 5.0}


def post(client, p: Participant, body: dict, number: int = 1):
    return client.post(
        reverse("participant:trial", args=[p.token, number]), json.dumps(body), content_type="application/json"
    )


def set_rules(exp, **changes: Any) -> None:
    exp.config = rules.validate_config({**exp.config, "rules": {**BASE_RULES, **changes}})
    exp.save(update_fields=["config"])


def keys_of(p: Participant, index: int = 0) -> list[str]:
    return list(sessions.signal_keys(p.plan[index]))


def event(body: dict, kind: str, key: str) -> dict:
    return next(e for e in body["telemetry"]["events"] if e["type"] == kind and e["key"] == key)


def manual_body(
    p: Participant, client, *, listen_s: float = 1.25, page_s: float = 8.0, fetch_only: set[str] | None = None
) -> dict:
    """A save built by hand: the audio fetched through the stimulus view (all signals, or
    ``fetch_only``), ``page_s`` + 0.5 s gone by, the player's log."""
    keys = keys_of(p)
    scores = scores_for(p, 0)
    fetch_audio(p, 0, client, only=fetch_only)
    elapse(p, page_s + 0.5)
    return {
        "idempotency_key": p.plan[0]["key"],
        "ratings": scores,
        "telemetry": telemetry(keys, scores, listen_s=listen_s, page_s=page_s),
    }


def no_100(p, client) -> dict:
    body = save_body(p, 0, client=client)
    key = next(k for k, v in body["ratings"].items() if v == 100)
    body["ratings"][key] = 90
    event(body, "move", key)["value"] = 90
    return body


def never_fetched(p, client) -> dict:
    keys = keys_of(p)
    return manual_body(p, client, fetch_only=set(keys[1:]))


def never_played(p, client) -> dict:
    body = save_body(p, 0, client=client)
    key = keys_of(p)[1]
    body["telemetry"]["events"] = [e for e in body["telemetry"]["events"] if e["key"] != key]
    body["telemetry"]["signals"][key] = {"plays": 0, "listen_ms": 0}
    return body


def heard_too_briefly(p, client) -> dict:
    body = save_body(p, 0, client=client)
    body["telemetry"]["signals"][keys_of(p)[0]]["listen_ms"] = 300
    return body


def heard_longer_than_served(p, client) -> dict:
    """The page claims more listening than has passed since the server sent the audio."""
    keys = keys_of(p)
    scores = scores_for(p, 0)
    elapse(p, 20)  # the previous step long ago ...
    fetch_audio(p, 0, client)  # ... but the audio was fetched just now
    return {
        "idempotency_key": p.plan[0]["key"],
        "ratings": scores,
        "telemetry": telemetry(keys, scores, listen_s=1.5, page_s=19.0),
    }


def moved_before_played(p, client) -> dict:
    body = save_body(p, 0, client=client)
    key = keys_of(p)[1]
    events = body["telemetry"]["events"]
    play, move = event(body, "play", key), event(body, "move", key)
    # The slider is set first, then the signal played: swap the two entries (times kept in order).
    i, j = events.index(play), events.index(move)
    events[i], events[j] = {**move, "t_ms": play["t_ms"]}, {**play, "t_ms": move["t_ms"]}
    return body


def moved_while_reference_selected(p, client) -> dict:
    body = save_body(p, 0, client=client)
    key = keys_of(p)[0]
    events = body["telemetry"]["events"]
    t = events[-1]["t_ms"]
    events += [
        {"t_ms": t + 100, "type": "play", "key": "ref"},
        {"t_ms": t + 200, "type": "move", "key": key, "value": body["ratings"][key]},
    ]
    return body


def rating_not_from_the_slider(p, client) -> dict:
    body = save_body(p, 0, client=client)
    key = next(k for k, v in body["ratings"].items() if v != 100)
    body["ratings"][key] = 77  # the slider was last at another value
    return body


def too_short_on_page(p, client) -> dict:
    body = save_body(p, 0, client=client)
    body["telemetry"]["time_on_page_ms"] = 3000
    return body


def too_soon_for_the_server(p, client) -> dict:
    """The page claims 20 s, but the previous step was finished only 2.5 s ago."""
    keys = keys_of(p)
    scores = scores_for(p, 0)
    fetch_audio(p, 0, client)
    elapse(p, 2.5)
    return {
        "idempotency_key": p.plan[0]["key"],
        "ratings": scores,
        "telemetry": telemetry(keys, scores, listen_s=0.55, page_s=20.0),
    }


#: (case, rule broken, how to switch it off, other rules of the experiment, the save).
CASES: list[tuple[str, str, Any, dict, Callable[..., dict]]] = [
    ("no signal at 100", "require_one_100", False, {}, no_100),
    ("audio never fetched", "must_play_all", False, {}, never_fetched),
    ("signal never played", "must_play_all", False, {"only_playing_slider_moves": False}, never_played),
    ("heard too briefly", "min_play_seconds", 0.0, {}, heard_too_briefly),
    ("heard longer than served", "min_play_seconds", 0.0, {}, heard_longer_than_served),
    ("slider before play", "only_playing_slider_moves", False, {}, moved_before_played),
    ("slider of another signal", "only_playing_slider_moves", False, {}, moved_while_reference_selected),
    ("rating not the slider's", "only_playing_slider_moves", False, {}, rating_not_from_the_slider),
    ("too short on the page", "min_trial_seconds", 0.0, {}, too_short_on_page),
    ("too soon for the server", "min_trial_seconds", 0.0, {"min_play_seconds": 0.5}, too_soon_for_the_server),
]


@pytest.mark.parametrize("case, rule, off, others, make", CASES, ids=[c[0] for c in CASES])
def test_each_rule_is_refused_by_name_and_accepted_when_switched_off(
    client, participant_at_trials, case, rule, off, others, make
):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0, config={"training": False})
    set_rules(exp, **others)
    body = make(p, client)
    stage = Participant.objects.get(pk=p.pk).stage
    r = post(client, p, body)
    assert r.status_code == 400, (case, r.content)
    assert r.json()["rule"] == rule and r.json()["error"].startswith(f"{rule}: "), r.json()
    assert TrialResponse.objects.count() == 0 and Rating.objects.count() == 0
    assert Participant.objects.get(pk=p.pk).stage == stage == "trials"

    set_rules(exp, **others, **{rule: off})
    r = post(client, p, body)
    assert r.status_code == 200, (case, r.content)
    assert TrialResponse.objects.count() == 1 and Rating.objects.count() == exp.conditions.count()


def test_a_legitimate_save_passes_every_rule_and_names_what_breaks(client, participant_at_trials):
    """The default rules, the player's log: accepted; the log is kept with the response."""
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0, config={"training": False})
    body = save_body(p, 0, client=client)
    assert post(client, p, body).status_code == 200
    stored = TrialResponse.objects.get()
    assert stored.telemetry["events"] == body["telemetry"]["events"]
    p.refresh_from_db()
    assert p.stage in ("questionnaire", "completed")


def test_a_scripted_participant_gets_no_completion_code(client, participant_at_trials):
    """The reported case: no audio fetched, everything rated 50, 3 s per page, no log."""
    exp, p = participant_at_trials(n_excerpts=2, seconds=1.0, config={"training": False})
    elapse(p, 3)
    entry = p.plan[0]
    body = {
        "idempotency_key": entry["key"],
        "ratings": {k: 50 for k in sessions.signal_keys(entry)},
        "telemetry": {"time_on_page_ms": 3000},
    }
    r = post(client, p, body)
    assert r.status_code == 400 and r.json()["rule"] == "require_one_100"
    body["ratings"][next(iter(body["ratings"]))] = 100
    r = post(client, p, body)
    assert r.status_code == 400 and r.json()["rule"] == "must_play_all"
    p.refresh_from_db()
    assert p.completion_code == "" and p.stage == "trials" and TrialResponse.objects.count() == 0


def test_training_trials_are_refereed_too(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0)
    assert p.plan[0]["training"] is True and p.stage == "training"
    body = no_100(p, client)
    r = post(client, p, body)
    assert r.status_code == 400 and r.json()["rule"] == "require_one_100"
    assert TrialResponse.objects.count() == 0
    set_rules(exp, require_one_100=False)
    assert post(client, p, body).status_code == 200
    p.refresh_from_db()
    assert p.stage == "trials" and Rating.objects.count() == 0  # practice: no ratings kept


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"events": "play"}, "events must be a list"),
        ({"events": [{"t_ms": 5, "type": "skip", "key": "a"}]}, "expected one of play, stop, move"),
        ({"events": [{"t_ms": 5, "type": "play", "key": "zz"}]}, "names no signal of this trial"),
        ({"events": [{"t_ms": 5, "type": "move", "key": "a", "value": 101}]}, "no value in 0..100"),
        ({"events": [{"t_ms": 9, "type": "play", "key": "a"}, {"t_ms": 5, "type": "stop", "key": "a"}]}, "earlier"),
        ({"signals": {"a": {"listen_ms": "long"}}}, "listening time of signal 1"),
        ({"time_on_page_ms": -5}, "time_on_page_ms is not a number"),
    ],
)
def test_malformed_telemetry_is_refused_with_a_reason(client, participant_at_trials, change, reason):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0, config={"training": False})
    body = save_body(p, 0, client=client)
    body["telemetry"] = {**body["telemetry"], **change}
    r = post(client, p, body)
    assert r.status_code == 400 and reason in r.json()["error"] and r.json()["error"].startswith("telemetry: ")
    assert TrialResponse.objects.count() == 0 and Rating.objects.count() == 0


def test_rules_switched_off_are_not_checked(client, participant_at_trials):
    """Every rule off: a save with no log at all is stored (the old behaviour, by choice)."""
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0, config={"training": False})
    set_rules(
        exp,
        must_play_all=False,
        only_playing_slider_moves=False,
        require_one_100=False,
        min_play_seconds=0,
        min_trial_seconds=0,
    )
    body = {"idempotency_key": p.plan[0]["key"], "ratings": {k: 0 for k in keys_of(p)}}
    assert post(client, p, body).status_code == 200


def test_rule_settings_are_validated():
    with pytest.raises(Exception, match="min_play_seconds must be between 0 and 60"):
        rules.validate_config({"rules": {"min_play_seconds": -1}})
    with pytest.raises(Exception, match="min_trial_seconds must be a number"):
        rules.validate_config({"rules": {"min_trial_seconds": "soon"}})
    assert rules.validate_config({"rules": {"min_trial_seconds": 12}})["rules"]["min_trial_seconds"] == 12.0
