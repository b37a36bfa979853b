"""Training never unblinds the test; the study link resumes its participant; answers are kept.

ITU-R BS.1534-3 §5.2 allows a training phase in which the conditions are known; it must not
tell the listener which signal of a test trial is which. So training is built from excerpts
marked "training only" (never in the test), served through their own tokens, and named by
display names, never by the labels the analysis uses.
"""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse

from webmushra.errors import ConflictError, ServiceError
from webmushra.models import Condition, Participant, Trial
from webmushra.services import experiments, sessions
from webmushra.views import participant as participant_views

TRIAL_DATA = re.compile(r'<script id="trial-data" type="application/json">(.*?)</script>', re.S)


def trial_json(client: Client, participant: Participant, number: int) -> dict:
    page = client.get(reverse("participant:trial", args=[participant.token, number]))
    assert page.status_code == 200, page.status_code
    return json.loads(TRIAL_DATA.search(page.content.decode()).group(1))


def urls_of(data: dict) -> set[str]:
    return {data["reference"]["url"], *(s["url"] for s in data["signals"])}


# ----------------------------------------------------------------------------- training


def test_training_uses_its_own_excerpt_and_shares_no_url_with_the_test(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=2, seconds=1.0)
    training = Trial.objects.filter(experiment=exp, is_training=True)
    tests = Trial.objects.filter(experiment=exp, is_training=False)
    assert [t.excerpt.is_training for t in training] == [True]
    assert sorted(t.excerpt.is_training for t in tests) == [False, False]
    assert [e["training"] for e in p.plan] == [True, False, False]
    first = trial_json(client, p, 1)
    assert first["trial"]["training"] is True
    request = RequestFactory().get("/")
    seen_in_test = set().union(*(urls_of(participant_views.trial_data(request, p, i)) for i in (1, 2)))
    assert urls_of(first).isdisjoint(seen_in_test)
    # The training trial's stimuli are those of the training excerpt, every one of them.
    training_excerpt = training.get().excerpt
    tokens = {t.token for t in p.stimulus_tokens.filter(stimulus__excerpt=training_excerpt)}
    assert {s["url"] for s in first["signals"]} == {reverse("participant:stimulus", args=[t]) for t in tokens}


def test_training_shows_display_names_never_labels(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0)
    model = exp.conditions.get(kind="model")
    data = trial_json(client, p, 1)
    keys = sessions.signal_keys(p.plan[0])
    by_id = {cid: data["labels"][k] for k, cid in keys.items()}
    hidden = exp.conditions.get(kind="hidden_reference").pk
    assert by_id[hidden] == "Reference"
    assert by_id[model.pk] == "System 1"
    assert sorted(by_id.values()) == ["Low anchor", "Mid anchor", "Reference", "System 1"]
    labels = set(exp.conditions.values_list("label", flat=True))
    page = client.get(reverse("participant:trial", args=[p.token, 1])).content.decode()
    assert not [label for label in labels if label in page], "a condition label reached the training page"


def test_display_names_are_set_by_the_researcher_and_checked(client, researcher, build_experiment):
    exp = build_experiment(n_excerpts=1, seconds=1.0)
    model = exp.conditions.get(kind="model")
    client.force_login(researcher)
    url = reverse("researcher:condition_display_name", args=[exp.pk, model.pk])
    assert client.post(url, {"display_name": "  Crunch   A "}).status_code == 302
    assert Condition.objects.get(pk=model.pk).display_name == "Crunch A"
    client.post(url, {"display_name": "x" * 61}, follow=True)
    assert Condition.objects.get(pk=model.pk).display_name == "Crunch A"
    with pytest.raises(ServiceError, match="60 characters"):
        experiments.set_display_name(condition=model, display_name="y" * 61)
    page = client.get(reverse("researcher:experiment", args=[exp.pk])).content.decode()
    assert 'value="Crunch A"' in page


def test_an_excerpt_can_be_moved_to_training_and_back_while_editable(client, researcher, build_experiment):
    exp = build_experiment(n_excerpts=2, seconds=1.0, training_excerpt=False)
    client.force_login(researcher)
    page = client.get(reverse("researcher:experiment", args=[exp.pk])).content.decode()
    assert 'id="training-warning"' in page and "no excerpt is marked" in page
    first = exp.excerpts.first()
    url = reverse("researcher:excerpt_training", args=[exp.pk, first.pk])
    client.post(url, {"training": "on"})
    first.refresh_from_db()
    assert first.is_training is True
    page = client.get(reverse("researcher:experiment", args=[exp.pk])).content.decode()
    assert 'id="training-warning"' not in page
    client.post(url, {})
    first.refresh_from_db()
    assert first.is_training is False


def test_no_training_trial_without_a_training_excerpt(participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=2, seconds=1.0, training_excerpt=False)
    assert not Trial.objects.filter(experiment=exp, is_training=True).exists()
    assert [e["training"] for e in p.plan] == [False, False]


def test_training_excerpt_moves_are_refused_once_open(client, researcher, open_experiment):
    exp = open_experiment(n_excerpts=1, seconds=1.0)
    excerpt = exp.excerpts.get(is_training=False)
    with pytest.raises(ServiceError):
        experiments.set_excerpt_training(excerpt=excerpt, training=True)
    client.force_login(researcher)
    client.post(reverse("researcher:excerpt_training", args=[exp.pk, excerpt.pk]), {"training": "on"})
    excerpt.refresh_from_db()
    assert excerpt.is_training is False


def test_an_experiment_of_training_excerpts_only_cannot_open(rendered_experiment):
    exp = rendered_experiment(n_excerpts=1, seconds=1.0, training_excerpt=False)
    exp.excerpts.update(is_training=True)
    with pytest.raises(ConflictError, match="at least one test excerpt"):
        experiments.open_experiment(experiment=exp)
    assert not Trial.objects.filter(experiment=exp).exists()


# ----------------------------------------------------------------------------- resume


def start(client: Client, exp, query: str = "") -> Participant:
    r = client.post(reverse("participant:landing", args=[exp.public_token]) + query)
    assert r.status_code == 302, r.status_code
    return Participant.objects.filter(experiment=exp).order_by("-pk").first()


def test_the_same_browser_resumes_its_participant(open_experiment):
    exp = open_experiment(n_excerpts=1, seconds=1.0)
    landing = reverse("participant:landing", args=[exp.public_token])
    browser = Client()
    p = start(browser, exp)
    assert Participant.objects.filter(experiment=exp).count() == 1
    # Reopening the link (GET) or pressing Start again (POST) goes back to the same participant.
    again = browser.get(landing)
    assert again.status_code == 302 and again["Location"] == reverse("participant:consent", args=[p.token])
    assert browser.post(landing)["Location"] == reverse("participant:consent", args=[p.token])
    assert Participant.objects.filter(experiment=exp).count() == 1
    # Another browser is another participant.
    other = start(Client(), exp)
    assert other.pk != p.pk and Participant.objects.filter(experiment=exp).count() == 2


@pytest.mark.parametrize("stage", [Participant.Stage.SCREENED_OUT, Participant.Stage.COMPLETED])
def test_a_screened_out_or_finished_participant_cannot_start_again_in_that_browser(open_experiment, stage):
    exp = open_experiment(n_excerpts=1, seconds=1.0)
    browser = Client()
    p = start(browser, exp)
    Participant.objects.filter(pk=p.pk).update(stage=stage)
    landing = reverse("participant:landing", args=[exp.public_token])
    for method in (browser.get, browser.post):
        r = method(landing)
        assert r.status_code == 302 and r["Location"] == reverse("participant:done", args=[p.token])
    assert Participant.objects.filter(experiment=exp).count() == 1


def test_a_forged_or_foreign_cookie_resumes_nobody(open_experiment):
    exp = open_experiment(n_excerpts=1, seconds=1.0)
    other_exp = open_experiment(n_excerpts=1, seconds=1.0)
    browser = Client()
    mine = start(browser, other_exp)
    # The cookie of another experiment (its path and salt differ) resumes nothing here.
    browser.cookies[participant_views.RESUME_COOKIE] = browser.cookies[participant_views.RESUME_COOKIE].value
    p = start(browser, exp)
    assert p.pk != mine.pk and p.experiment_id == exp.pk
    forged = Client()
    forged.cookies[participant_views.RESUME_COOKIE] = f"{p.token}:forged"
    assert start(forged, exp).pk not in (p.pk, mine.pk)


def test_a_prolific_id_resumes_across_browsers_and_another_id_is_another_person(open_experiment):
    exp = open_experiment(n_excerpts=1, seconds=1.0)
    link = "?PROLIFIC_PID=aaaaaaaaaaaaaaaaaaaaaaaa&STUDY_ID=s&SESSION_ID=sess-1"
    a = start(Client(), exp, link)
    # Prolific's link again (same submission) in another browser: the same participant.
    again = start(Client(), exp, link)
    assert again.pk == a.pk and Participant.objects.filter(experiment=exp).count() == 1
    # The ID alone, or with another session ID, takes over nothing and starts nothing.
    landing = reverse("participant:landing", args=[exp.public_token])
    for query in ("?PROLIFIC_PID=aaaaaaaaaaaaaaaaaaaaaaaa", "?PROLIFIC_PID=aaaaaaaaaaaaaaaaaaaaaaaa&SESSION_ID=x"):
        r = Client().post(landing + query)
        assert r.status_code == 409 and "already started this study" in r.content.decode()
    assert Participant.objects.filter(experiment=exp).count() == 1
    # The same browser with another Prolific ID (a shared lab machine): a new participant.
    shared = Client()
    b = start(shared, exp, "?PROLIFIC_PID=bbbbbbbbbbbbbbbbbbbbbbbb")
    c = start(shared, exp, "?PROLIFIC_PID=cccccccccccccccccccccccc")
    assert len({a.pk, b.pk, c.pk}) == 3 and c.prolific_pid == "cccccccccccccccccccccccc"


# ----------------------------------------------------------------------------- questionnaire


def test_the_questionnaire_keeps_every_answer_when_sent_back(client, open_experiment):
    fields = [
        {"name": "age", "label": "Age", "type": "number", "required": True},
        {"name": "gear", "label": "Headphones", "type": "text", "required": True},
        {"name": "level", "label": "Experience", "type": "select", "options": ["none", "some", "lots"]},
        {"name": "comment", "label": "Comments", "type": "textarea"},
    ]
    exp = open_experiment(n_excerpts=1, seconds=1.0, config={"questionnaire": fields})
    p = sessions.start_participant(experiment=exp)
    Participant.objects.filter(pk=p.pk).update(stage=Participant.Stage.QUESTIONNAIRE)
    url = reverse("participant:questionnaire", args=[p.token])
    r = client.post(url, {"age": "", "gear": "HD 650 <b>", "level": "some", "comment": "loud & clear"})
    assert r.status_code == 400
    html = r.content.decode()
    assert "Please answer: Age" in html and "Headphones" not in html.split("Please answer:")[1].split("<")[0]
    assert 'value="HD 650 &lt;b&gt;"' in html
    assert "<option selected>some</option>" in html
    assert ">loud &amp; clear</textarea>" in html
    assert re.search(r'id="q-age"[^>]*aria-invalid="true"', html)
    assert not re.search(r'id="q-gear"[^>]*aria-invalid', html)
    p.refresh_from_db()
    assert p.stage == Participant.Stage.QUESTIONNAIRE and p.questionnaire == {}
    r = client.post(url, {"age": "41", "gear": "HD 650", "level": "some", "comment": ""})
    assert r.status_code == 302
    p.refresh_from_db()
    assert p.questionnaire["age"] == "41" and p.stage == Participant.Stage.COMPLETED


def test_questionnaire_choices_and_numbers_are_checked_and_exports_neutralise_formulas(
    client, researcher, open_experiment
):
    from tests.webmushra.test_builder import rate_all

    fields = [
        {"name": "age", "label": "Age", "type": "number", "required": True},
        {"name": "level", "label": "Experience", "type": "select", "options": ["none", "some"], "required": True},
        {"name": "comment", "label": "Comments", "type": "text"},
    ]
    exp = open_experiment(n_excerpts=1, seconds=1.0, config={"questionnaire": fields, "training": False})
    p = sessions.set_level(
        participant=sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=True),
        gain_db=0.0,
    )
    rate_all(p)
    url = reverse("participant:questionnaire", args=[p.token])
    r = client.post(url, {"age": "forty", "level": "expert", "comment": '=HYPERLINK("http://x")'})
    assert r.status_code == 400
    html = r.content.decode()
    assert "Age (a number)" in html and "Experience (choose one of the options)" in html
    p.refresh_from_db()
    assert p.questionnaire == {}
    assert client.post(url, {"age": "40", "level": "some", "comment": '=HYPERLINK("http://x")'}).status_code == 302
    client.force_login(researcher)
    mushra = client.get(reverse("researcher:mushra_csv", args=[exp.pk])).content.decode()
    assert "'=HYPERLINK" in mushra and ",=HYPERLINK" not in mushra and '"=HYPERLINK' not in mushra


# ----------------------------------------------------------------------------- pilot


def test_pilot_sessions_are_marked_and_kept_out_of_the_data(client, researcher, open_experiment):
    from tests.webmushra.test_builder import rate_all
    from webmushra import interop, selectors

    exp = open_experiment(n_excerpts=1, seconds=1.0, config={"training": False, "questionnaire": []})
    client.force_login(researcher)
    page = client.get(reverse("researcher:experiment", args=[exp.pk])).content.decode()
    code = re.search(r'id="pilot-url"[^>]*value="[^"]*\?pilot=([^"]+)"', page).group(1)
    landing = reverse("participant:landing", args=[exp.public_token])
    # A forged code is refused with the next step; the real one starts a pilot session each time.
    r = Client().get(landing + "?pilot=forged")
    assert r.status_code == 400 and "copy it again" in r.content.decode()
    browser = Client()
    assert "pilot-note" in browser.get(landing + f"?pilot={code}").content.decode()
    browser.post(landing + f"?pilot={code}")
    browser.post(landing + f"?pilot={code}")
    pilots = list(Participant.objects.filter(experiment=exp, is_pilot=True))
    assert len(pilots) == 2, "every pilot start is a new session"
    real = sessions.set_level(
        participant=sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=True),
        gain_db=0.0,
    )
    for p in [real, *pilots]:
        if p.stage == Participant.Stage.CONSENT:
            p = sessions.set_level(participant=sessions.give_consent(participant=p, agreed=True), gain_db=0.0)
        rate_all(p)
    assert {r["participant"] for r in selectors.ratings_rows(exp)} == {f"P{real.pk}"}
    assert {r["participant"] for r in selectors.analysis_rows(exp)} == {f"P{real.pk}"}
    assert {r["session_uuid"] for r in csv_rows(interop.mushra_csv(exp))} == {interop.session_uuid(real)}
    with_pilots = selectors.ratings_rows(exp, include_pilot=True)
    assert {(r["participant"], r["pilot"]) for r in with_pilots} == {(f"P{real.pk}", False)} | {
        (f"P{p.pk}", True) for p in pilots
    }
    summary = selectors.participant_summary(exp)
    assert (summary["started"], summary["completed"], summary["pilot"]) == (1, 1, 2)
    assert "pilot" in client.get(reverse("researcher:ratings_csv", args=[exp.pk]) + "?pilot=1").content.decode()


def csv_rows(text: str) -> list[dict]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(text)))
