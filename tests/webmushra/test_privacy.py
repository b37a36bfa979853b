"""A participant can be withdrawn (every record deleted, the deletion logged without personal
data) and a closed experiment's personal data purged while its ratings stay analysable."""

from __future__ import annotations

import json

import pytest
from django.forms.models import model_to_dict
from django.urls import reverse

from tests.webmushra.test_builder import rate_all
from webmushra import selectors
from webmushra.models import DataDeletion, Participant, Rating, StimulusToken, TrialResponse
from webmushra.services import experiments, sessions

pytestmark = pytest.mark.django_db


def _second(exp, pid: str = "PROLIFIC-PERSON-2") -> Participant:
    p = sessions.start_participant(experiment=exp, prolific_pid=pid, session_id="S2", user_agent="Agent/2.0")
    return sessions.set_level(participant=sessions.give_consent(participant=p, agreed=True), gain_db=0.0)


def test_withdrawal_deletes_every_record_of_one_participant_and_logs_counts_only(
    client, researcher, django_user_model, participant_at_trials
):
    exp, first = participant_at_trials(n_excerpts=2, seconds=1.0, config={"training": False})
    second = _second(exp)
    for p in (first, second):
        rate_all(p)
    per_person = 2 * exp.conditions.count()
    url = reverse("researcher:participant_withdraw", args=[exp.pk, second.pk])
    other = django_user_model.objects.create_user("other", password="other-password-5")
    client.force_login(other)
    assert client.post(url, {"confirm": "withdraw"}).status_code == 404
    client.force_login(researcher)
    # Without the confirmation nothing happens.
    r = client.post(url, {}, follow=True)
    assert any("tick the box" in str(m) for m in r.context["messages"])
    assert Participant.objects.filter(pk=second.pk).exists()
    r = client.post(url, {"confirm": "withdraw"}, follow=True)
    assert any(
        f"P{second.pk} withdrawn: 2 trial(s) and {per_person} rating(s)" in str(m) for m in r.context["messages"]
    )
    assert not Participant.objects.filter(pk=second.pk).exists()
    for model in (Rating, TrialResponse, StimulusToken):
        assert not model.objects.filter(participant_id=second.pk).exists(), model
    # The other participant is untouched; the analysis sees only them.
    assert Rating.objects.filter(participant=first).count() == per_person
    assert {r["participant"] for r in selectors.analysis_rows(exp)} == {f"P{first.pk}"}
    (record,) = DataDeletion.objects.filter(experiment=exp)
    assert record.kind == "withdrawal" and record.by == researcher
    assert record.counts == {"sessions": 1, "trials": 2, "ratings": per_person}
    logged = json.dumps(model_to_dict(record), default=str)
    assert "PROLIFIC-PERSON-2" not in logged and f"P{second.pk}" not in logged and "Agent/2.0" not in logged
    page = client.get(reverse("researcher:monitor", args=[exp.pk])).content.decode()
    assert "Participant withdrawn by researcher" in page


def test_purge_needs_a_closed_experiment_and_keeps_the_ratings(client, researcher, participant_at_trials):
    exp, first = participant_at_trials(n_excerpts=1, seconds=1.0, config={"training": False})
    second = _second(exp)
    for p in (first, second):
        rate_all(p)
    sessions.submit_questionnaire(participant=second, answers={"age": "34", "headphones": "HD 600"})
    before = selectors.analysis_rows(exp)
    TrialResponse.objects.filter(participant=second).update(
        telemetry={"user_agent": "Agent/2.0", "screen": {"width": 1}, "time_on_page_ms": 9000}
    )
    client.force_login(researcher)
    url = reverse("researcher:purge", args=[exp.pk])
    r = client.post(url, {"confirm": "purge"}, follow=True)
    assert any("close the experiment first" in str(m) for m in r.context["messages"])
    assert Participant.objects.get(pk=second.pk).prolific_pid == "PROLIFIC-PERSON-2"
    experiments.close_experiment(experiment=exp)
    assert client.post(url, {}).status_code == 302
    assert Participant.objects.get(pk=second.pk).prolific_pid == "PROLIFIC-PERSON-2"
    r = client.post(url, {"confirm": "purge"}, follow=True)
    assert any("Personal data of 2 session(s) purged" in str(m) for m in r.context["messages"])
    p = Participant.objects.get(pk=second.pk)
    assert (p.prolific_pid, p.prolific_session_id, p.user_agent, p.questionnaire) == ("", "", "", {})
    telemetry = TrialResponse.objects.filter(participant=second).values_list("telemetry", flat=True)
    assert all(t == {"time_on_page_ms": 9000} for t in telemetry)
    assert selectors.analysis_rows(exp) == before
    (record,) = DataDeletion.objects.filter(experiment=exp)
    assert record.kind == "purge" and record.counts == {
        "sessions": 2,
        "trials_with_device_data": 1,
        "trial_comments": 0,
    }
