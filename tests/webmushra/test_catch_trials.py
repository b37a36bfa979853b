"""Catch trials: a test excerpt again with one model's signal replaced by the reference.

The duplicate must be rated like the hidden reference (BS.1534-3 §4.1.2 holds the hidden
reference to 90 or more); a lower score flags the trial ``catch_failed``. The catch trial must
not be told apart from a test trial by its URLs, and its scores never reach the analysis.
"""

from __future__ import annotations

import json

import pytest
from django.test import RequestFactory
from django.urls import reverse

from tests.trials import save_body
from webmushra.errors import ServiceError
from webmushra.models import Rating, TrialResponse
from webmushra.rules import validate_config
from webmushra.selectors import analysis_rows, catch_rows
from webmushra.services import quality, sessions
from webmushra.views import participant as participant_views

CONFIG = {"training": False, "catch_trials": 1, "rules": {"require_one_100": False}}


def _urls(data: dict) -> list[str]:
    return [s["url"] for s in data["signals"]]


def _audio(client, url: str) -> bytes:
    r = client.get(url)
    assert r.status_code == 200, r.status_code
    return b"".join(r.streaming_content) if r.streaming else r.content


def _catch_index(p) -> int:
    (index,) = [i for i, e in enumerate(p.plan) if e.get("catch")]
    return index


def test_plan_places_one_catch_trial_among_the_tests_never_first(participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=2, seconds=1.0, config=CONFIG)
    assert len(p.plan) == 3
    index = _catch_index(p)
    assert index > 0
    entry = p.plan[index]
    models = set(exp.conditions.filter(kind="model").values_list("pk", flat=True))
    assert entry["replaced"] in models
    assert sorted(entry["conditions"]) == sorted(exp.conditions.values_list("pk", flat=True))
    # It repeats one of the participant's own test excerpts.
    from webmushra.models import Trial

    catch = Trial.objects.get(pk=entry["trial"])
    assert catch.is_catch and not catch.is_training
    tests = Trial.objects.filter(pk__in=[e["trial"] for e in p.plan if not e.get("catch")])
    assert catch.excerpt_id in set(tests.values_list("excerpt_id", flat=True))


def test_catch_trial_shares_no_url_with_any_test_trial_and_its_duplicate_is_the_reference(
    client, participant_at_trials
):
    exp, p = participant_at_trials(n_excerpts=2, seconds=1.0, config=CONFIG)
    request = RequestFactory().get("/")
    index = _catch_index(p)
    catch = participant_views.trial_data(request, p, index)
    others = [participant_views.trial_data(request, p, i) for i in range(len(p.plan)) if i != index]
    assert len(catch["signals"]) == len(others[0]["signals"])
    test_urls = {u for d in others for u in _urls(d)}
    assert set(_urls(catch)).isdisjoint(test_urls)
    assert len(set(_urls(catch))) == len(catch["signals"])
    # The page says nothing that tells a catch trial apart.
    assert "catch" not in json.dumps(catch).lower()
    assert catch["trial"]["title"].startswith("Trial ")
    # The replaced model's signal plays the reference: the same bytes as the hidden reference.
    keys = sessions.signal_keys(p.plan[index])
    url_of = dict(zip(keys, _urls(catch), strict=True))
    hidden = exp.conditions.get(kind="hidden_reference").pk
    key_dup = next(k for k, cid in keys.items() if cid == p.plan[index]["replaced"])
    key_hidden = next(k for k, cid in keys.items() if cid == hidden)
    duplicate, reference = _audio(client, url_of[key_dup]), _audio(client, url_of[key_hidden])
    assert duplicate == reference
    # ... while in the test trials that model's own render is served.
    model_audio = {
        _audio(client, u)
        for d, i in zip(others, [i for i in range(len(p.plan)) if i != index], strict=True)
        for k, u in zip(sessions.signal_keys(p.plan[i]), _urls(d), strict=True)
        if sessions.signal_keys(p.plan[i])[k] == p.plan[index]["replaced"]
    }
    assert reference not in model_audio


@pytest.mark.parametrize("duplicate_score, failed", [(40, True), (95, False)])
def test_catch_trial_is_scored_flagged_and_kept_out_of_the_ratings(
    client, participant_at_trials, duplicate_score, failed
):
    exp, p = participant_at_trials(n_excerpts=2, seconds=1.0, config=CONFIG)
    index = _catch_index(p)
    entry = p.plan[index]
    keys = sessions.signal_keys(entry)
    for i in range(len(p.plan)):
        if i == index:
            hidden = exp.conditions.get(kind="hidden_reference").pk
            scores = {
                k: duplicate_score if cid == entry["replaced"] else (100 if cid == hidden else 30)
                for k, cid in keys.items()
            }
            body = save_body(p, i, scores, client=client)
        else:
            body = save_body(p, i, client=client)
        r = client.post(
            reverse("participant:trial", args=[p.token, i + 1]), json.dumps(body), content_type="application/json"
        )
        assert r.status_code == 200, r.content
    response = TrialResponse.objects.get(participant=p, trial_id=entry["trial"])
    assert response.catch["duplicate"] == duplicate_score
    assert response.catch["hidden_reference"] == 100
    assert response.catch["passed"] is (not failed)
    codes = [f["code"] for f in response.flags]
    assert ("catch_failed" in codes) is failed
    # The catch trial's scores are not ratings: the analysis sees only the test trials.
    assert not Rating.objects.filter(trial_id=entry["trial"]).exists()
    assert Rating.objects.filter(participant=p).count() == 2 * exp.conditions.count()
    assert len(analysis_rows(exp)) == 2 * exp.conditions.count()
    (row,) = catch_rows(exp)
    assert row["duplicate_rating"] == duplicate_score
    assert row["replaced_condition"] == exp.conditions.get(pk=entry["replaced"]).label
    assert row["passed"] is (not failed)
    assert row["trial_position"] == index
    summary = quality.quality_summary(exp)["catch_trials"]
    assert summary == {
        "per_participant": 1,
        "threshold": 90.0,
        "answered": 1,
        "failed": int(failed),
        "failed_participants": int(failed),
    }
    from evaluation.report import quality_text

    text = quality_text(quality.quality_summary(exp))
    assert f"{int(failed)} of 1 answered were failed" in text
    # The monitor shows the flag as it comes in.
    client.force_login(exp.owner)
    monitor = client.get(reverse("researcher:monitor_json", args=[exp.pk])).json()
    assert ("catch trial failed" in json.dumps(monitor)) is failed


def test_catch_threshold_follows_the_quality_setting(participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0, config={**CONFIG, "quality": {"catch_min": 30}})
    index = _catch_index(p)
    entry = p.plan[index]
    scores = {k: 40 for k in sessions.signal_keys(entry)}
    for i in range(len(p.plan)):
        body = save_body(p, i, scores if i == index else None)
        sessions.submit_trial(
            participant=p, index=i, idempotency_key=body["idempotency_key"], ratings=body["ratings"],
            telemetry=body["telemetry"],
        )  # fmt: skip
    response = TrialResponse.objects.get(participant=p, trial_id=entry["trial"])
    assert response.catch["passed"] is True
    assert "catch_failed" not in [f["code"] for f in response.flags]


@pytest.mark.parametrize("value", [-1, 11, 1.5, "2", True])
def test_catch_trials_setting_is_checked(value):
    with pytest.raises(ServiceError, match="catch_trials"):
        validate_config({"catch_trials": value})


def test_no_catch_trials_by_default(participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=2, seconds=1.0, config={"training": False})
    assert not [e for e in p.plan if e.get("catch")]
    assert not exp.trials.filter(is_catch=True).exists()
