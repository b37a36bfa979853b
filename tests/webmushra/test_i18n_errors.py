"""A participant's save is answered in the page's language: the rule a trial broke, the field an
answer got wrong, the order of the saves and a body that is not JSON, in German for a German
session (browser or the link's cookie) and in English otherwise."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from tests.trials import answer_body, save_body
from webmushra.models import Participant, TrialResponse

CHECKPOINTS = ("ht1_lstm32.json", "ts9_lstm20_gain.json")
#: The clients of a session: the browser's Accept-Language, or the cookie a link's ?lang= set.
LANGUAGES = {
    "de-browser": ({"HTTP_ACCEPT_LANGUAGE": "de-DE,de;q=0.9"}, None),
    "de-cookie": ({"HTTP_ACCEPT_LANGUAGE": "en-GB,en;q=0.9"}, "de"),
    "en": ({"HTTP_ACCEPT_LANGUAGE": "en-GB,en;q=0.9"}, None),
}


def _client(how: str) -> Client:
    headers, cookie = LANGUAGES[how]
    c = Client(**headers)
    if cookie:
        c.cookies["django_language"] = cookie
    return c


def _post(client: Client, p: Participant, index: int, body: object, content_type: str = "application/json"):
    return client.post(
        reverse("participant:trial", args=[p.token, index + 1]), json.dumps(body), content_type=content_type
    )


def _answer(r, key: str, status: int = 400) -> tuple[str, str]:
    assert r.status_code == status, r.content
    data = r.json()
    return data.get(key, ""), data["error"]


@pytest.mark.django_db
@pytest.mark.parametrize("how", list(LANGUAGES))
def test_a_mushra_rule_broken_is_named_in_the_participants_language(participant_at_trials, how):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0, config={"training": False, "questionnaire": []})
    c = _client(how)
    body = save_body(p, 0, client=c)
    # Signal 1 (key "a") never played: the first rule the server finds broken.
    body["telemetry"]["events"] = [e for e in body["telemetry"]["events"] if e.get("key") != "a"]
    r = _post(c, p, 0, body)
    rule, error = _answer(r, "rule")
    assert rule == "must_play_all"
    if how == "en":
        assert error == "must_play_all: signal 1 was never played"
        assert r["Content-Language"] == "en"
    else:
        assert error == "must_play_all: Signal 1 wurde nie abgespielt"
        assert r["Content-Language"] == "de"
    # A save played through but with a slider never moved, and one not sent as JSON.
    body = save_body(p, 0, client=c)
    body["telemetry"]["events"] = [e for e in body["telemetry"]["events"] if e["type"] != "move" or e["key"] != "b"]
    rule, error = _answer(_post(c, p, 0, body), "rule")
    assert rule == "only_playing_slider_moves"
    assert error == (
        "only_playing_slider_moves: signal 2 was rated without its slider being moved"
        if how == "en"
        else "only_playing_slider_moves: Signal 2 wurde bewertet, ohne dass sein Schieberegler bewegt wurde"
    )
    _, error = _answer(_post(c, p, 0, "x", content_type="text/plain"), "error")
    assert error == (
        "send JSON (Content-Type: application/json)"
        if how == "en"
        else "senden Sie JSON (Content-Type: application/json)"
    )
    _, error = _answer(_post(c, p, 0, ["a list"]), "error")
    assert error == (
        "the request body must be a JSON object" if how == "en" else "der Inhalt der Anfrage muss ein JSON-Objekt sein"
    )
    assert not TrialResponse.objects.filter(participant=p).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("how", list(LANGUAGES))
def test_a_wrong_answer_and_the_order_of_saves_in_the_participants_language(participant_at_trials, how):
    config = {
        "training": False,
        "questionnaire": [],
        "blocks": [{"paradigm": "abx"}],
        "rules": {"min_trial_seconds": 0},
    }
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0, checkpoints=CHECKPOINTS, config=config)
    assert [e["paradigm"] for e in Participant.objects.get(pk=p.pk).plan] == ["abx", "abx"]
    c = _client(how)
    german = how != "en"
    # ABX has no "no preference".
    field, error = _answer(_post(c, p, 0, answer_body(p, 0, {"choice": "none"}, client=c)), "field")
    assert field == "answer.choice"
    assert error == ("answer.choice: erwartet wird eines von a, b" if german else "answer.choice: expected one of a, b")
    # X never played.
    body = answer_body(p, 0, {"choice": "a"}, client=c)
    body["telemetry"]["events"] = [e for e in body["telemetry"]["events"] if e.get("key") != "x"]
    rule, error = _answer(_post(c, p, 0, body), "rule")
    assert rule == "must_play_all"
    assert error == (
        "must_play_all: Signal 3 wurde nie abgespielt" if german else "must_play_all: signal 3 was never played"
    )
    # The second trial before the first.
    _, error = _answer(_post(c, p, 1, answer_body(p, 1, {"choice": "a"}, client=c)), "error", status=409)
    assert error == (
        "Durchgang 1 kommt zuerst: Durchgänge werden in ihrer Reihenfolge gespeichert"
        if german
        else "trial 1 comes first: trials are saved in their order"
    )
    # A MUSHRA-style save of the ABX trial.
    body = answer_body(p, 0, {"choice": "a"}, client=c)
    body["ratings"] = {"a": 50, "b": 50, "x": 50}
    field, error = _answer(_post(c, p, 0, body), "field")
    assert field == "ratings"
    assert error == (
        "ratings: ein Durchgang vom Typ ABX discrimination wird mit einer Antwort gespeichert"
        if german
        else "ratings: a ABX discrimination trial is saved with an answer"
    )
    # Saved, then the same trial again with another key.
    body = answer_body(p, 0, {"choice": "a"}, client=c)
    assert _post(c, p, 0, body).status_code == 200
    _, error = _answer(_post(c, p, 0, {**body, "idempotency_key": "another-key-1"}), "error", status=409)
    assert error == ("dieser Durchgang wurde bereits abgeschickt" if german else "this trial was already submitted")
    assert TrialResponse.objects.filter(participant=p).count() == 1
