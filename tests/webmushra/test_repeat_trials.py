"""Repeated trials: one of a participant's own test trials again, later, for test-retest.

ITU-R BS.1534-3 asks for each listener's reliability; a trial presented twice gives it as the
agreement of the two sets of scores. The repeat must look like any test trial (same signals, same
"Trial k of n", no URL shared with the first presentation), never follow its original directly,
be refereed like any trial, and its scores must reach the test-retest only: the ratings,
``mushra.csv`` and the main analysis keep the first presentation.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.test import RequestFactory
from django.urls import reverse

from tests.trials import save_body
from webmushra import interop
from webmushra.errors import ConflictError, ServiceError
from webmushra.models import Rating, Report, Trial, TrialResponse
from webmushra.rules import validate_config
from webmushra.selectors import analysis_rows, ratings_csv, ratings_rows, repeat_rows, retest_rows
from webmushra.services import experiments, reports, sessions
from webmushra.views import participant as participant_views

CONFIG = {"training": False, "repeat_trials": 2, "questionnaire": [], "rules": {"require_one_100": False}}


def _urls(data: dict) -> set[str]:
    return {s["url"] for s in data["signals"]} | {data["reference"]["url"]}


def _post(client, p, index: int, body: dict):
    return client.post(
        reverse("participant:trial", args=[p.token, index + 1]), json.dumps(body), content_type="application/json"
    )


def test_repeats_follow_their_original_later_never_directly_and_share_no_url(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=3, seconds=1.0, config=CONFIG)
    assert exp.trials.filter(repeat_of__isnull=False).count() == 3  # one per test trial, made on opening
    plans = [p.plan] + [sessions.start_participant(experiment=exp).plan for _ in range(15)]
    for plan in plans:
        repeats = [i for i, e in enumerate(plan) if e.get("repeat")]
        assert len(plan) == 5 and len(repeats) == 2
        for i in repeats:
            entry = plan[i]
            trial = Trial.objects.get(pk=entry["trial"])
            (original,) = [j for j, e in enumerate(plan) if e["trial"] == trial.repeat_of_id]
            assert not plan[original].get("repeat")
            assert original + 2 <= i, f"the repeat at {i} follows its original at {original} directly"
            assert sorted(entry["conditions"]) == sorted(plan[original]["conditions"])
            assert entry["key"] != plan[original]["key"]
    request = RequestFactory().get("/")
    pages = [participant_views.trial_data(request, p, i) for i in range(len(p.plan))]
    for i, entry in enumerate(p.plan):
        if not entry.get("repeat"):
            continue
        others = set().union(*(_urls(d) for j, d in enumerate(pages) if j != i))
        assert _urls(pages[i]).isdisjoint(others)
        assert "repeat" not in json.dumps(pages[i]).lower()
        assert pages[i]["trial"]["title"] == f"Trial {i + 1} of 5"
        # The same audio as the first presentation, under other URLs.
        original = next(
            j for j, e in enumerate(p.plan) if e["trial"] == Trial.objects.get(pk=entry["trial"]).repeat_of_id
        )
        first = {c: s["url"] for c, s in zip(p.plan[original]["conditions"], pages[original]["signals"], strict=True)}
        again = {c: s["url"] for c, s in zip(entry["conditions"], pages[i]["signals"], strict=True)}
        for cid in first:
            a, b = client.get(first[cid]), client.get(again[cid])
            assert a.status_code == b.status_code == 200
            assert b"".join(a.streaming_content) == b"".join(b.streaming_content)


def test_repeat_scores_feed_test_retest_only(client, participant_at_trials):
    fast = {"bootstrap_resamples": 200, "permutation_resamples": 500, "correlation_resamples": 200}
    exp, p = participant_at_trials(n_excerpts=3, seconds=1.0, config={**CONFIG, "analysis": fast})
    kinds = dict(exp.conditions.values_list("pk", "kind"))
    first_scores = {"hidden_reference": 100, "anchor35": 10, "anchor70": 40, "model": 70}
    again_scores = {"hidden_reference": 96, "anchor35": 17, "anchor70": 33, "model": 61}
    for i, entry in enumerate(p.plan):
        table = again_scores if entry.get("repeat") else first_scores
        scores = {k: table[kinds[cid]] for k, cid in sessions.signal_keys(entry).items()}
        r = _post(client, p, i, save_body(p, i, scores, client=client))
        assert r.status_code == 200, r.content
    repeated = [e for e in p.plan if e.get("repeat")]
    # Kept on the response, never as ratings.
    for entry in repeated:
        response = TrialResponse.objects.get(participant=p, trial_id=entry["trial"])
        assert response.repeat["of"] == Trial.objects.get(pk=entry["trial"]).repeat_of_id
        assert response.repeat["scores"] == {str(c): again_scores[kinds[c]] for c in entry["conditions"]}
        assert not Rating.objects.filter(trial_id=entry["trial"]).exists()
    n = exp.conditions.count()
    assert Rating.objects.filter(participant=p).count() == 3 * n
    # The ratings exports and the main analysis: first presentations only.
    assert {r["rating"] for r in ratings_rows(exp)} == set(first_scores.values())
    assert len(analysis_rows(exp)) == 3 * n and "repeat" not in analysis_rows(exp)[0]
    exported = list(csv.DictReader(io.StringIO(ratings_csv(exp))))
    assert len(exported) == 3 * n and {int(r["rating"]) for r in exported} == set(first_scores.values())
    mushra = list(csv.DictReader(io.StringIO(interop.mushra_csv(exp))))
    assert len(mushra) == 3 * n
    assert {int(r["rating_score"]) for r in mushra} == set(first_scores.values())
    # Test-retest sees both: rows with repeat 0 and 1.
    rows = analysis_rows(exp, repeats=True)
    assert sorted({r["repeat"] for r in rows}) == [0, 1] and len(repeat_rows(exp)) == 2 * n
    # Pearson r of first against repeated scores over the repeated cells (np.corrcoef).
    first = [first_scores[kinds[c]] for e in repeated for c in sorted(e["conditions"])]
    again = [again_scores[kinds[c]] for e in repeated for c in sorted(e["conditions"])]
    (row,) = retest_rows(exp)
    assert row["participant"] == f"P{p.pk}" and row["n_pairs"] == 2 * n
    assert row["r"] == pytest.approx(np.corrcoef(first, again)[0, 1])
    assert row["mean_abs_difference"] == pytest.approx(np.mean(np.abs(np.subtract(again, first))))
    assert row["mean_difference"] == pytest.approx(np.mean(np.subtract(again, first)))
    # The monitor shows it per listener.
    client.force_login(exp.owner)
    page = client.get(reverse("researcher:monitor", args=[exp.pk])).content.decode()
    assert 'id="retest"' in page and f'data-participant="P{p.pk}"' in page
    monitor = client.get(reverse("researcher:monitor_json", args=[exp.pk])).json()
    assert monitor["retest"] == [{**row, "r": pytest.approx(row["r"])}]
    data = client.get(reverse("researcher:ratings_json", args=[exp.pk])).json()
    assert len(data["ratings"]) == 3 * n and len(data["repeat_trials"]) == 2 * n
    assert {r["rating"] for r in data["repeat_trials"]} == set(again_scores.values())
    # The report's reliability section computes the same from the bundle's ratings.
    report = reports.request_report(experiment=exp)
    assert reports.build_report(report_id=report.pk) == "done", Report.objects.get(pk=report.pk).error
    report.refresh_from_db()
    bundle = zipfile.ZipFile(Path(settings.MEDIA_ROOT) / report.file)
    assert "comments.csv" in bundle.namelist()
    retest = next(n for n in bundle.namelist() if n.endswith("retest.csv"))
    (listener,) = [r for r in csv.DictReader(io.StringIO(bundle.read(retest).decode())) if r["participant"]]
    assert float(listener["r"]) == pytest.approx(row["r"])


def test_a_repeat_is_refereed_like_any_trial(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=2, seconds=1.0, config={**CONFIG, "repeat_trials": 1})
    index = next(i for i, e in enumerate(p.plan) if e.get("repeat"))
    for i in range(index):
        assert _post(client, p, i, save_body(p, i, client=client)).status_code == 200
    body = save_body(p, index, client=client)
    played = [e for e in body["telemetry"]["events"] if e["type"] == "play" and e["key"] != "ref"]
    body["telemetry"]["events"].remove(played[0])
    r = _post(client, p, index, body)
    assert r.status_code == 400 and r.json()["rule"] == "must_play_all"
    assert not TrialResponse.objects.filter(participant=p, trial_id=p.plan[index]["trial"]).exists()
    assert _post(client, p, index, save_body(p, index, client=client)).status_code == 200


@pytest.mark.parametrize("value", [-1, 11, 1.5, "2", True, [1]])
def test_repeat_trials_setting_is_checked(value):
    with pytest.raises(ServiceError, match="repeat_trials"):
        validate_config({"repeat_trials": value})


def test_repeat_trials_are_locked_while_open_and_on_the_settings_page(client, open_experiment):
    exp = open_experiment(n_excerpts=1, seconds=1.0, config={"training": False})
    with pytest.raises(ConflictError, match="repeat_trials"):
        experiments.update_experiment_settings(experiment=exp, config={"repeat_trials": 1})
    client.force_login(exp.owner)
    page = client.get(reverse("researcher:settings", args=[exp.pk])).content.decode()
    assert 'name="repeat_trials"' in page
    # With one test trial nothing can follow the original: no repeat, nothing else changes.
    experiments.close_experiment(experiment=exp)
    experiments.update_experiment_settings(experiment=exp, config={"repeat_trials": 3})
    exp = experiments.open_experiment(experiment=exp)
    p = sessions.start_participant(experiment=exp)
    assert len(p.plan) == 1 and not p.plan[0].get("repeat")
