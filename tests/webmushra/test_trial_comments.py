"""Per-trial comments and a block's trial instructions.

BS.1534-3 lets assessors comment; the comment box is off, optional or required
(``config["trial_comments"]``), checked by the server (a required comment missing, or one over
``MAX_COMMENT_CHARS``, is refused with 400 naming the field and nothing stored), exported as
``comments.csv`` and in the ratings JSON with spreadsheet formulas neutralised, and removed
with the participant's personal data.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.urls import reverse

from tests.trials import save_body
from webmushra import interop
from webmushra.errors import ConflictError, ServiceError
from webmushra.models import DataDeletion, Participant, Rating, TrialResponse
from webmushra.rules import MAX_COMMENT_CHARS, validate_config
from webmushra.selectors import comment_rows, comments_csv
from webmushra.services import experiments, sessions

INSTRUCTIONS = "Block one: listen for the hiss in the decay."
CONFIG = {
    "training": False,
    "questionnaire": [],
    "trial_comments": "required",
    "trial_instructions": INSTRUCTIONS,
    "translations": {"de": {"trial_instructions": "Block eins: achten Sie auf das Rauschen im Ausklang."}},
    "rules": {"require_one_100": False},
}


def _post(client, p, index: int, body: dict):
    return client.post(
        reverse("participant:trial", args=[p.token, index + 1]), json.dumps(body), content_type="application/json"
    )


def _nothing_stored(p: Participant, stage: str) -> None:
    assert not TrialResponse.objects.filter(participant=p).exists()
    assert not Rating.objects.filter(participant=p).exists()
    assert Participant.objects.get(pk=p.pk).stage == stage


def test_a_required_comment_is_checked_by_the_server_stored_and_exported(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=2, seconds=1.0, config=CONFIG)
    page = client.get(reverse("participant:trial", args=[p.token, 1])).content.decode()
    assert INSTRUCTIONS in page and 'class="wm-comment-text"' in page and "(required)" in page
    german = client.get(reverse("participant:trial", args=[p.token, 1]), HTTP_ACCEPT_LANGUAGE="de").content.decode()
    assert "Ihr Kommentar zu diesem Durchgang" in german and "(Pflichtangabe)" in german
    assert "Block eins: achten Sie auf das Rauschen im Ausklang." in german and INSTRUCTIONS not in german
    stage = Participant.objects.get(pk=p.pk).stage
    for comment in (None, "   "):
        body = save_body(p, 0, client=client)
        if comment is not None:
            body["comment"] = comment
        r = _post(client, p, 0, body)
        assert r.status_code == 400 and r.json()["field"] == "comment", r.content
        assert "required" in r.json()["error"]
        _nothing_stored(p, stage)
    body = save_body(p, 0, client=client)
    r = _post(client, p, 0, {**body, "comment": "x" * (MAX_COMMENT_CHARS + 1)})
    assert r.status_code == 400 and r.json()["field"] == "comment"
    assert f"at most {MAX_COMMENT_CHARS} characters" in r.json()["error"]
    _nothing_stored(p, stage)
    r = _post(client, p, 0, {**body, "comment": 17})
    assert r.status_code == 400 and r.json()["field"] == "comment"
    _nothing_stored(p, stage)
    # Accepted: stored stripped, exported with the formula neutralised.
    formula = '=HYPERLINK("http://x.invalid","click")'
    assert _post(client, p, 0, {**body, "comment": f"  {formula}  "}).status_code == 200
    assert (
        _post(client, p, 1, {**save_body(p, 1, client=client), "comment": "y" * MAX_COMMENT_CHARS}).status_code == 200
    )
    assert Participant.objects.get(pk=p.pk).stage == Participant.Stage.COMPLETED
    first = TrialResponse.objects.get(participant=p, trial_id=p.plan[0]["trial"])
    assert first.comment == formula
    rows = list(csv.DictReader(io.StringIO(comments_csv(exp))))
    assert [r["comment"] for r in rows] == ["'" + formula, "y" * MAX_COMMENT_CHARS]
    assert rows[0]["participant"] == f"P{p.pk}" and rows[0]["trial_position"] == "0"
    client.force_login(exp.owner)
    data = client.get(reverse("researcher:ratings_json", args=[exp.pk])).json()
    assert [c["comment"] for c in data["comments"]] == [formula, "y" * MAX_COMMENT_CHARS]
    mushra = list(csv.DictReader(io.StringIO(interop.mushra_csv(exp))))
    assert {r["rating_comment"] for r in mushra} == {"'" + formula, "y" * MAX_COMMENT_CHARS}


def test_no_comment_box_when_off_and_an_optional_one_may_stay_empty(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0, config={**CONFIG, "trial_comments": "off"})
    page = client.get(reverse("participant:trial", args=[p.token, 1])).content.decode()
    assert "wm-comment-text" not in page
    body = save_body(p, 0, client=client)
    r = _post(client, p, 0, {**body, "comment": "unasked"})
    assert r.status_code == 400 and r.json()["field"] == "comment"
    assert _post(client, p, 0, body).status_code == 200
    exp2, q = participant_at_trials(n_excerpts=1, seconds=1.0, config={**CONFIG, "trial_comments": "optional"})
    assert "(optional)" in client.get(reverse("participant:trial", args=[q.token, 1])).content.decode()
    assert _post(client, q, 0, save_body(q, 0, client=client)).status_code == 200
    assert TrialResponse.objects.get(participant=q).comment == "" and comment_rows(exp2) == []
    # Open: the instructions (a text) may be corrected, the comment box may not change.
    experiments.update_experiment_settings(experiment=exp2, config={"trial_instructions": "Corrected."})
    r = sessions.give_consent(participant=sessions.start_participant(experiment=exp2), agreed=True)
    r = sessions.set_level(participant=r, gain_db=0.0)
    assert "Corrected." in client.get(reverse("participant:trial", args=[r.token, 1])).content.decode()
    with pytest.raises(ConflictError, match="trial_comments"):
        experiments.update_experiment_settings(experiment=exp2, config={"trial_comments": "required"})


def test_withdrawal_and_purge_remove_the_comments(client, participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0, config=CONFIG)
    q = sessions.set_level(
        participant=sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=True),
        gain_db=0.0,
    )
    for who, text in ((p, "my name is Ada"), (q, "call me on 555")):
        assert _post(client, who, 0, {**save_body(who, 0, client=client), "comment": text}).status_code == 200
    client.force_login(exp.owner)
    r = client.post(reverse("researcher:participant_withdraw", args=[exp.pk, q.pk]), {"confirm": "withdraw"})
    assert r.status_code == 302
    assert [c["comment"] for c in comment_rows(exp)] == ["my name is Ada"]
    experiments.close_experiment(experiment=exp)
    client.post(reverse("researcher:purge", args=[exp.pk]), {"confirm": "purge"})
    assert comment_rows(exp) == [] and TrialResponse.objects.get(participant=p).comment == ""
    assert Rating.objects.filter(participant=p).exists()  # the ratings stay
    assert DataDeletion.objects.get(experiment=exp, kind="purge").counts["trial_comments"] == 1


@pytest.mark.parametrize(
    "config, field",
    [
        ({"trial_comments": "sometimes"}, "trial_comments"),
        ({"trial_comments": True}, "trial_comments"),
        ({"trial_instructions": 5}, "trial_instructions"),
        ({"trial_instructions": "x" * 2001}, "trial_instructions"),
    ],
)
def test_comment_and_instruction_settings_are_checked(config, field):
    with pytest.raises(ServiceError, match=field):
        validate_config(config)
