"""Quality control: flags computed on save (values and thresholds), shown on the monitor,
exported, and summed up for the report; exclusion by hand (kept in the exports, left out of
the analysis, listed with its reason in the report) and its undoing."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from tests.trials import fetch_audio, save_body
from webmushra import interop, rules, selectors
from webmushra.models import Participant, Report, TrialResponse
from webmushra.services import quality, reports, sessions

pytestmark = pytest.mark.django_db

THRESHOLDS = {"too_fast_seconds": 15.0, "reference_min": 90.0}


@pytest.fixture
def logged_in(client, researcher):
    client.force_login(researcher)
    return client


def flags_of(**kw) -> dict[str, dict]:
    base = {
        "ratings": {"a": 100, "b": 60, "c": 20},
        "reference_keys": ["a"],
        "heard": {"a": True, "b": True, "c": True},
        "seconds_on_page": 40.0,
        "settings": THRESHOLDS,
    }
    return {f["code"]: f for f in quality.trial_flags(**{**base, **kw})}


def test_a_careful_trial_has_no_flags():
    assert flags_of() == {}


def test_each_flag_with_its_value_and_threshold():
    assert flags_of(seconds_on_page=6.04)["too_fast"] == {
        "code": "too_fast",
        "value": 6.0,
        "threshold": 15.0,
        "message": "6.0 s on the page (below 15 s)",
    }
    assert flags_of(seconds_on_page=15.0) == {}  # at the threshold: not flagged
    assert flags_of(heard={"a": True, "b": False, "c": False})["no_playback"]["value"] == 2
    assert flags_of(ratings={"a": 100, "b": 100, "c": 100})["straight_lining"]["value"] == 100
    ref = flags_of(ratings={"a": 89, "b": 100, "c": 20})["reference_not_found"]
    assert (ref["value"], ref["threshold"]) == (89, 90.0)
    assert flags_of(ratings={"a": 90, "b": 100, "c": 20}) == {}  # 90 is found (below 90 is not)
    everything = quality.trial_flags(
        ratings={"a": 50, "b": 50},
        reference_keys=["a"],
        heard={},
        seconds_on_page=2.0,
        settings=THRESHOLDS,
    )
    # Every flag a test trial's own page can raise, in order (catch_failed: catch trials only;
    # gold_failed, trap_failed: gold and trapping questions of ACR / DCR blocks only).
    assert [f["code"] for f in everything] == [
        c for c in rules.FLAGS if c not in ("catch_failed", "gold_failed", "trap_failed")
    ]


def test_counts_and_export_cell():
    lists = [[{"code": "too_fast"}, {"code": "straight_lining"}], [], [{"code": "too_fast"}]]
    assert selectors.count_flags(lists) == {"too_fast": 2, "straight_lining": 1}
    assert selectors.flag_codes(lists[0]) == "too_fast;straight_lining" and selectors.flag_codes([]) == ""


def test_quality_settings_follow_the_analysis_threshold_and_are_validated():
    assert rules.validate_config({"quality": {"too_fast_seconds": 30}})["quality"] == {"too_fast_seconds": 30.0}
    with pytest.raises(Exception, match="reference_min must be a number between 0 and 100"):
        rules.validate_config({"quality": {"reference_min": 120}})
    with pytest.raises(Exception, match="is not a quality-control setting"):
        rules.validate_config({"quality": {"speed": 1}})


# ----------------------------------------------------------------------------- on save


def post(client, p, body, number=1):
    return client.post(
        reverse("participant:trial", args=[p.token, number]), json.dumps(body), content_type="application/json"
    )


def stored_flags(p) -> dict[str, dict]:
    return {f["code"]: f for f in TrialResponse.objects.get(participant=p).flags}


def test_flags_are_stored_on_save(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0, config={"training": False, "quality": {}})
    # Every signal 100 (the rules ask for one 100): straight-lining, nothing else.
    body = save_body(p, 0, client=client, score_of=lambda kind: 100)
    assert post(client, p, body).status_code == 200
    assert stored_flags(p) == {
        "straight_lining": {
            "code": "straight_lining",
            "value": 100,
            "threshold": None,
            "message": "every signal rated 100",
        }
    }


def test_hidden_reference_not_found_and_too_fast_on_save(client, participant_at_trials):
    exp, p = participant_at_trials(
        n_excerpts=1,
        seconds=1.0,
        config={"training": False, "quality": {"too_fast_seconds": 60}, "analysis": {"reference_threshold": 85}},
    )
    body = save_body(p, 0, client=client, score_of=lambda kind: 80 if kind == "hidden_reference" else 100)
    # The server saw over 60 s since the level page; the page counted 10 s (the shorter one counts).
    body["telemetry"]["time_on_page_ms"] = 10_000
    assert post(client, p, body).status_code == 200
    flags = stored_flags(p)
    assert set(flags) == {"too_fast", "reference_not_found"}
    assert (flags["reference_not_found"]["value"], flags["reference_not_found"]["threshold"]) == (80, 85.0)
    assert (flags["too_fast"]["value"], flags["too_fast"]["threshold"]) == (10.0, 60.0)


def test_no_playback_is_flagged_when_playing_is_not_required(client, participant_at_trials):
    exp, p = participant_at_trials(
        n_excerpts=1, seconds=1.0, config={"training": False, "rules": {"must_play_all": False}}
    )
    keys = list(sessions.signal_keys(p.plan[0]))
    body = save_body(p, 0, client=client)
    # The page never played the first signal and the server never sent its audio.
    Participant.objects.get(pk=p.pk).stimulus_tokens.update(fetches=0, first_fetched_at=None)
    fetch_audio(p, 0, client, only=set(keys[1:]))
    body["telemetry"]["signals"][keys[0]]["listen_ms"] = 0
    assert post(client, p, body).status_code == 200
    assert stored_flags(p)["no_playback"]["value"] == 1


# ----------------------------------------------------------------------------- monitor, exports, exclusion


def two_participants(participant_at_trials, **config):
    """One careless participant (straight-lining) and one careful one, each with two test trials."""
    from tests.webmushra.test_builder import rate_all

    exp, careless = participant_at_trials(n_excerpts=2, seconds=1.0, config={"training": False, **config})
    rate_all(careless, lambda kind: 100)
    careful = sessions.set_level(
        participant=sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=True),
        gain_db=0.0,
    )
    rate_all(careful, lambda kind: {"hidden_reference": 100, "anchor35": 10, "anchor70": 40}.get(kind, 70))
    return exp, careless, careful


def test_monitor_shows_flags_live_and_exports_carry_them(logged_in, participant_at_trials):
    exp, careless, careful = two_participants(participant_at_trials)
    data = logged_in.get(reverse("researcher:monitor_json", args=[exp.pk])).json()
    rows = {r["pk"]: r for r in data["participants"]}
    assert rows[careless.pk]["flags"] == {"straight_lining": 2} and rows[careless.pk]["flagged_trials"] == 2
    assert rows[careful.pk]["flags"] == {} and rows[careful.pk]["flagged_trials"] == 0
    assert data["summary"]["flagged"] == 1 and data["summary"]["excluded"] == 0
    html = logged_in.get(reverse("researcher:monitor", args=[exp.pk])).content.decode()
    assert "straight-lining ×2" in html and 'id="n-flagged">1<' in html
    table = list(csv.DictReader(io.StringIO(selectors.ratings_csv(exp))))
    assert {r["flags"] for r in table if r["participant"] == f"P{careless.pk}"} == {"straight_lining"}
    assert {r["flags"] for r in table if r["participant"] == f"P{careful.pk}"} == {""}
    # mushra.csv holds complete sessions (webMUSHRA writes a session when it ends).
    for p in (careless, careful):
        sessions.submit_questionnaire(participant=p, answers={})
    mushra = list(csv.DictReader(io.StringIO(interop.mushra_csv(exp))))
    assert {r["flags"] for r in mushra if r["session_uuid"] == interop.session_uuid(careless)} == {"straight_lining"}


def test_monitor_means_with_intervals_agree_with_an_independent_computation(logged_in, participant_at_trials):
    """Per-condition means of per-participant means with Student t intervals (BS.1534-3 §10.3)."""
    import numpy as np
    import pandas as pd
    from scipy import stats

    from tests.webmushra.test_builder import rate_all

    exp, first = participant_at_trials(n_excerpts=2, seconds=1.0, config={"training": False})
    people = [first] + [
        sessions.set_level(
            participant=sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=True),
            gain_db=0.0,
        )
        for _ in range(2)
    ]
    for i, p in enumerate(people):
        rate_all(
            p,
            lambda kind, i=i: {"hidden_reference": 100, "anchor35": 5 + 3 * i, "anchor70": 30 + 7 * i}.get(
                kind, 55 + 11 * i
            ),
        )
    data = logged_in.get(reverse("researcher:monitor_json", args=[exp.pk])).json()
    means = {m["condition"]: m for m in data["screening"]["means"]}
    frame = pd.DataFrame(selectors.analysis_rows(exp))
    per_participant = frame.groupby(["condition", "participant"])["rating"].mean()
    assert set(means) == set(frame["condition"])
    for condition, values in per_participant.groupby(level=0):
        v = values.to_numpy(dtype=float)
        # scipy has no interval for a constant sample; it is the point itself.
        low, high = (v.mean(), v.mean()) if v.std() == 0 else stats.t.interval(0.95, len(v) - 1, v.mean(), stats.sem(v))
        assert means[condition]["n"] == 3
        assert means[condition]["mean"] == pytest.approx(v.mean())
        assert (means[condition]["ci_low"], means[condition]["ci_high"]) == pytest.approx((low, high))
    html = logged_in.get(reverse("researcher:monitor", args=[exp.pk])).content.decode()
    model = exp.conditions.get(kind="model").label
    assert f'<tr data-condition="{model}">' in html and f"{np.mean([55, 66, 77]):.1f}" in html


def test_exclusion_by_hand_keeps_the_data_and_leaves_the_analysis(logged_in, participant_at_trials):
    exp, careless, careful = two_participants(participant_at_trials)
    url = reverse("researcher:participant_exclusion", args=[exp.pk, careless.pk])
    # A reason is required.
    r = logged_in.post(url, {"action": "exclude", "reason": "  "}, follow=True)
    assert any("say why" in str(m) for m in r.context["messages"])
    assert Participant.objects.get(pk=careless.pk).excluded_at is None
    r = logged_in.post(url, {"action": "exclude", "reason": "rated every signal 100"})
    assert r.status_code == 302 and r.url == reverse("researcher:monitor", args=[exp.pk])
    p = Participant.objects.get(pk=careless.pk)
    assert p.excluded_at is not None and p.exclusion_reason == "rated every signal 100"

    # Kept in the exports, with the reason ...
    table = list(csv.DictReader(io.StringIO(selectors.ratings_csv(exp))))
    mine = [r for r in table if r["participant"] == f"P{careless.pk}"]
    assert len(mine) == 2 * exp.conditions.count()
    assert {(r["excluded"], r["exclusion_reason"]) for r in mine} == {("True", "rated every signal 100")}
    for participant in (careless, careful):
        sessions.submit_questionnaire(participant=participant, answers={})
    mushra = list(csv.DictReader(io.StringIO(interop.mushra_csv(exp))))
    assert {r["exclusion_reason"] for r in mushra if r["session_uuid"] == interop.session_uuid(careless)} == {
        "rated every signal 100"
    }
    # ... and out of the analysis input and the monitor's post-screening.
    assert {r["participant"] for r in selectors.analysis_rows(exp)} == {f"P{careful.pk}"}
    assert [r["participant"] for r in selectors.post_screening(exp)["rows"]] == [f"P{careful.pk}"]
    summary = quality.quality_summary(exp)
    assert summary["excluded"][0]["participant"] == f"P{careless.pk}"
    assert summary["excluded"][0]["reason"] == "rated every signal 100"
    assert (summary["trials"], summary["flagged_trials"], summary["flagged_participants"]) == (4, 2, 1)
    assert summary["flagged_participants_excluded"] == 1 and summary["trials_by_flag"] == {"straight_lining": 2}
    html = logged_in.get(reverse("researcher:monitor", args=[exp.pk])).content.decode()
    assert "Excluded: rated every signal 100" in html and f'id="include-{careless.pk}"' in html

    # Undone: analysed again, no dead end.
    assert logged_in.post(url, {"action": "include"}).status_code == 302
    p.refresh_from_db()
    assert p.excluded_at is None and p.exclusion_reason == ""
    assert {r["participant"] for r in selectors.analysis_rows(exp)} == {f"P{careless.pk}", f"P{careful.pk}"}


def test_exclusion_needs_access_and_a_csrf_token(logged_in, participant_at_trials, django_user_model):
    exp, careless, careful = two_participants(participant_at_trials)
    url = reverse("researcher:participant_exclusion", args=[exp.pk, careless.pk])
    other = Client()
    other.force_login(django_user_model.objects.create_user("someone", password="someone-password-9"))
    assert other.post(url, {"reason": "x"}).status_code == 404
    assert Client().post(url, {"reason": "x"}).status_code == 302  # anonymous: to the login page
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(exp.owner)
    assert strict.post(url, {"reason": "x"}).status_code == 403
    assert logged_in.get(url).status_code == 405
    # A participant of another experiment is not found under this one.
    exp2, stranger = participant_at_trials(n_excerpts=1, seconds=1.0, config={"training": False})
    r = logged_in.post(reverse("researcher:participant_exclusion", args=[exp.pk, stranger.pk]), {"reason": "x"})
    assert r.status_code == 404
    assert not Participant.objects.filter(excluded_at__isnull=False).exists()


def test_report_states_flags_and_exclusions_and_leaves_the_excluded_out(participant_at_trials):
    fast = {"bootstrap_resamples": 200, "permutation_resamples": 500, "correlation_resamples": 200}
    exp, careless, careful = two_participants(participant_at_trials, analysis=fast)
    third = sessions.set_level(
        participant=sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=True),
        gain_db=0.0,
    )
    from tests.webmushra.test_builder import rate_all

    rate_all(third, lambda kind: {"hidden_reference": 100, "anchor35": 20, "anchor70": 50}.get(kind, 60))
    quality.exclude_participant(participant=careless, reason="straight-lining on every trial")
    report = reports.request_report(experiment=exp)
    assert reports.build_report(report_id=report.pk) == "done", Report.objects.get(pk=report.pk).error
    report.refresh_from_db()
    bundle = zipfile.ZipFile(Path(settings.MEDIA_ROOT) / report.file)
    stats = json.loads(bundle.read("stats.json"))
    qc = stats["quality_control"]
    assert stats["participants"]["total"] == 2  # the excluded participant is not analysed
    assert qc["excluded"][0]["participant"] == f"P{careless.pk}"
    assert qc["excluded"][0]["reason"] == "straight-lining on every trial"
    assert (qc["flagged_trials"], qc["trials"], qc["flagged_participants_excluded"]) == (2, 6, 1)
    page = bundle.read("report.html").decode()
    assert "Quality control" in page and "straight-lining on every trial" in page
    assert f"1 participant was excluded by the experimenter before the analysis (P{careless.pk}: straight" in page
    assert "2 of 6 test trials were flagged" in page
    # Everyone excluded: nothing to analyse, said before a build is queued.
    quality.exclude_participant(participant=careful, reason="x")
    quality.exclude_participant(participant=third, reason="y")
    with pytest.raises(Exception, match="every participant with ratings is excluded"):
        reports.request_report(experiment=exp)


def test_exports_carry_the_order_heard_and_what_the_page_recorded_per_signal(participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=3, seconds=1.0, config={"training": False})
    sent = {}
    for index, entry in enumerate(p.plan):
        body = save_body(p, index)
        sessions.submit_trial(
            participant=p,
            index=index,
            idempotency_key=body["idempotency_key"],
            ratings=body["ratings"],
            telemetry=body["telemetry"],
        )
        for key, cid in sessions.signal_keys(entry).items():
            sent[(entry["trial"], cid)] = (index, ord(key) - ord("a") + 1, body["telemetry"]["signals"][key])
    trials = {t.excerpt.name: t.pk for t in exp.trials.all()}
    labels = {c.label: c.pk for c in exp.conditions.all()}
    rows = selectors.ratings_rows(exp)
    assert len(rows) == len(sent)
    for row in rows:
        order, page, heard = sent[(trials[row["item"]], labels[row["condition"]])]
        # The order this participant heard the trials in (the plan is shuffled per participant).
        assert row["trial_position"] == order
        assert row["signal_position"] == page
        assert (row["plays"], row["listen_ms"]) == (heard["plays"], heard["listen_ms"])
    heard_order = sorted(rows, key=lambda r: r["trial_position"])
    assert [r["trial_position"] for r in heard_order][:: exp.conditions.count()] == [0, 1, 2]
    table = list(csv.DictReader(io.StringIO(selectors.ratings_csv(exp))))
    assert {"signal_position", "plays", "listen_ms", "time_on_page_ms", "stage"} <= set(table[0])
