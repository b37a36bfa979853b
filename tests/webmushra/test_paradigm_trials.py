"""Blocks of other paradigms (webmushra.paradigms): BS.1116, ABX, AB / ABN, ACR, DCR and ranking
served, refereed and stored over HTTP from the same excerpts, conditions and stimuli as MUSHRA.

Each test runs a participant through a block with answers derived from the conditions it was
shown (known structure), and checks what was stored against what was sent, by condition.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from django.urls import reverse

from tests.conftest import assert_player_controls_once
from tests.trials import answer_body, save_body
from webmushra import paradigms
from webmushra.errors import ConflictError, FieldError
from webmushra.models import Condition, Participant, Rating, StimulusToken, Trial, TrialResponse
from webmushra.rules import validate_config
from webmushra.services import experiments, sessions

CHECKPOINTS = ("ht1_lstm32.json", "ts9_lstm20_gain.json")


def _config(*blocks: dict, training: bool = False) -> dict:
    return {"training": training, "questionnaire": [], "blocks": list(blocks), "rules": {"min_trial_seconds": 0}}


def _post(client, p: Participant, index: int, body: dict):
    return client.post(
        reverse("participant:trial", args=[p.token, index + 1]), json.dumps(body), content_type="application/json"
    )


def _kinds(exp) -> dict[int, str]:
    return dict(Condition.objects.filter(experiment=exp).values_list("pk", "kind"))


def _trial_json(client, p: Participant, index: int) -> tuple[dict, str]:
    page = client.get(reverse("participant:trial", args=[p.token, index + 1]))
    assert page.status_code == 200
    html = page.content.decode()
    assert_player_controls_once(html)
    start = html.index('id="trial-data"')
    data = json.loads(html[html.index(">", start) + 1 : html.index("</script>", start)])
    return data, html


def _no_condition_names(exp, html: str) -> None:
    for c in Condition.objects.filter(experiment=exp):
        assert c.label not in html, c.label
        if c.checkpoint_id:
            assert c.checkpoint.name not in html


def _answer_for(exp, entry: dict) -> dict:
    """The answer a listener with known preferences gives: hears the reference perfectly (ABX
    always right), prefers the first model, grades the reference 5.0 and models 3.4."""
    kinds = _kinds(exp)
    keys = paradigms.signal_keys(entry)
    first_model = min(cid for cid, kind in kinds.items() if kind == "model")
    paradigm = entry["paradigm"]
    if paradigm == "bs1116":
        return {"grades": {k: 5.0 if kinds[cid] == "hidden_reference" else 3.4 for k, cid in keys.items()}}
    if paradigm == "abx":
        return {"choice": "a" if keys["x"] == keys["a"] else "b"}
    if paradigm in ("ab", "abn"):
        if paradigm == "abn" and first_model not in (keys["a"], keys["b"]):
            return {"choice": "none"}
        return {"choice": "a" if keys["a"] == first_model else "b"}
    if paradigm in ("acr", "dcr"):
        return {"score": 5 if kinds[keys["a"]] == "hidden_reference" else 2}
    if paradigm == "ranking":
        order = sorted(keys, key=lambda k: ({"hidden_reference": 0, "model": 1}.get(kinds[keys[k]], 2), keys[k]))
        return {"ranks": {k: order.index(k) + 1 for k in keys}}
    raise AssertionError(paradigm)


def _run(client, exp, p: Participant) -> list[tuple[dict, dict]]:
    """Answer every trial over HTTP; returns (plan entry, answer sent) per trial."""
    sent = []
    for index, entry in enumerate(Participant.objects.get(pk=p.pk).plan):
        data, html = _trial_json(client, p, index)
        assert data["paradigm"] == entry["paradigm"]
        assert [s["key"] for s in data["signals"]] == list(paradigms.signal_keys(entry))
        assert (data["reference"] is not None) == (entry["paradigm"] in paradigms.WITH_OPEN_REFERENCE)
        _no_condition_names(exp, html)
        answer = _answer_for(exp, entry)
        r = _post(client, p, index, answer_body(p, index, answer, client=client))
        assert r.status_code == 200, r.content
        sent.append((entry, answer))
    return sent


@pytest.mark.parametrize("paradigm", ["bs1116", "abx", "ab", "abn", "acr", "dcr", "ranking"])
def test_a_block_is_served_refereed_and_stored_by_condition(client, participant_at_trials, paradigm):
    block = {"paradigm": paradigm, "repetitions": 2 if paradigm == "abx" else 1}
    exp, p = participant_at_trials(n_excerpts=2, seconds=1.0, checkpoints=CHECKPOINTS, config=_config(block))
    kinds = _kinds(exp)
    n_models = sum(k == "model" for k in kinds.values())
    expected_trials = {
        "bs1116": 2 * n_models,
        "abx": 2 * n_models * 2,
        "ab": 2 * 1,
        "abn": 2 * 1,
        "acr": 2 * len(kinds),
        "dcr": 2 * n_models,
        "ranking": 2,
    }[paradigm]
    plan = Participant.objects.get(pk=p.pk).plan
    assert len(plan) == expected_trials
    assert {e["paradigm"] for e in plan} == {paradigm}
    sent = _run(client, exp, p)
    p.refresh_from_db()
    assert p.stage == Participant.Stage.COMPLETED
    assert not Rating.objects.filter(participant=p).exists()
    stored = {r.trial_id: r.answer for r in TrialResponse.objects.filter(participant=p)}
    assert len(stored) == expected_trials
    for entry, answer in sent:
        got = stored[entry["trial"]]
        keys = paradigms.signal_keys(entry)
        assert got["paradigm"] == paradigm
        if paradigm == "bs1116":
            hidden = next(k for k, cid in keys.items() if kinds[cid] == "hidden_reference")
            assert got["hidden_reference_is"] == hidden.upper()
            assert got["grade_reference"] == 5.0 and got["grade_condition"] == 3.4
            assert kinds[got["reference"]] == "hidden_reference" and kinds[got["condition"]] == "model"
        elif paradigm == "abx":
            assert got["correct"] is True and got["answer"] == got["x_is"]
            assert {got["a"], got["b"]} == set(Trial.objects.get(pk=entry["trial"]).design)
        elif paradigm in ("ab", "abn"):
            assert (got["a"], got["b"]) == (keys["a"], keys["b"])
            assert got["choice"] == ("none" if answer["choice"] == "none" else answer["choice"].upper())
        elif paradigm in ("acr", "dcr"):
            assert got == {"paradigm": paradigm, "condition": keys["a"], "score": answer["score"]}
            if paradigm == "dcr":  # the model is rated against the open reference, never the reference itself
                assert list(keys) == ["a"] and kinds[got["condition"]] == "model"
                assert got["condition"] == next(
                    c for c in Trial.objects.get(pk=entry["trial"]).design if c != entry["reference"]
                )
        else:
            assert got["ranks"] == {str(keys[k]): r for k, r in answer["ranks"].items()}
            assert sorted(got["ranks"].values()) == list(range(1, len(kinds) + 1))


def test_abx_x_is_balanced_and_has_a_url_of_its_own(client, participant_at_trials):
    exp, p = participant_at_trials(
        n_excerpts=3, seconds=1.0, checkpoints=CHECKPOINTS, config=_config({"paradigm": "abx", "repetitions": 2})
    )
    plan = Participant.objects.get(pk=p.pk).plan
    per_pair = Counter()
    for entry in plan:
        per_pair[(tuple(sorted(entry["conditions"])), entry["x"])] += 1
        tokens = sessions.key_tokens(p, entry, "token", "stimulus_id")
        assert set(tokens) == {"a", "b", "x"}
        assert len({t for t, _ in tokens.values()}) == 3  # three URLs
        x_stimulus = tokens["x"][1]
        assert x_stimulus == tokens["a" if entry["x"] == 0 else "b"][1]  # X is A's or B's audio
    # 3 excerpts x 2 repetitions = 6 trials per pair: X is A in 3 and B in 3.
    assert set(per_pair.values()) == {3}
    # Every URL of the session is different: no token is served for two signals.
    all_tokens = list(StimulusToken.objects.filter(participant=p).values_list("token", flat=True))
    assert len(all_tokens) == len(set(all_tokens))


def test_the_server_refuses_answers_that_break_the_paradigm(client, participant_at_trials):
    exp, p = participant_at_trials(
        n_excerpts=1, seconds=1.0, checkpoints=CHECKPOINTS, config=_config({"paradigm": "abx"}, {"paradigm": "bs1116"})
    )
    plan = Participant.objects.get(pk=p.pk).plan
    assert [e["paradigm"] for e in plan] == ["abx", "abx", "bs1116", "bs1116"]
    bad = [
        ({"choice": "none"}, "answer.choice"),  # ABX has no "no preference"
        ({"choice": "x"}, "answer.choice"),
        ("A", "answer"),
        (None, "answer"),
    ]
    for answer, field in bad:
        r = _post(client, p, 0, answer_body(p, 0, answer, client=client))
        assert r.status_code == 400 and r.json()["field"] == field, (answer, r.content)
    body = answer_body(p, 0, {"choice": "a"}, client=client)
    body["ratings"] = {"a": 50, "b": 50, "x": 50}
    r = _post(client, p, 0, body)
    assert r.status_code == 400 and r.json()["field"] == "ratings"
    # A MUSHRA-style save of a paradigm trial: no answer.
    r = _post(client, p, 0, save_body(p, 0, {"a": 100, "b": 50, "x": 20}, client=client))
    assert r.status_code == 400
    # Playback is refereed as on a MUSHRA page: X never played.
    body = answer_body(p, 0, {"choice": "a"}, client=client)
    body["telemetry"]["events"] = [e for e in body["telemetry"]["events"] if e.get("key") != "x"]
    r = _post(client, p, 0, body)
    assert r.status_code == 400 and r.json()["rule"] == "must_play_all"
    assert not TrialResponse.objects.filter(participant=p).exists()
    for index in (0, 1):
        assert _post(client, p, index, answer_body(p, index, {"choice": "a"}, client=client)).status_code == 200
    for grades, field in (
        ({"b": 5.0}, "answer.grades"),
        ({"b": 5.0, "c": 5.1}, "answer.grades.c"),
        ({"b": 0.9, "c": 3.0}, "answer.grades.b"),
        ({"b": "5", "c": 3.0}, "answer.grades.b"),
    ):
        r = _post(client, p, 2, answer_body(p, 2, {"grades": grades}, client=client))
        assert r.status_code == 400 and r.json()["field"] == field, (grades, r.content)
    assert TrialResponse.objects.filter(participant=p).count() == 2


def test_ranking_and_category_answers_are_checked():
    entry = {"paradigm": "ranking", "conditions": [7, 8, 9]}
    with pytest.raises(FieldError, match="each rank from 1 to 3 once"):
        paradigms.clean_answer(entry, {"ranks": {"a": 1, "b": 1, "c": 3}})
    with pytest.raises(FieldError, match="rank every signal"):
        paradigms.clean_answer(entry, {"ranks": {"a": 1, "b": 2}})
    assert paradigms.clean_answer(entry, {"ranks": {"a": 2, "b": 3, "c": 1}}) == {"ranks": {"7": 2, "8": 3, "9": 1}}
    for score in (0, 6, 2.5, True, "3"):
        with pytest.raises(FieldError, match="1 to 5"):
            paradigms.clean_answer({"paradigm": "acr", "conditions": [4]}, {"score": score})
    assert paradigms.clean_answer({"paradigm": "dcr", "conditions": [4], "reference": 1}, {"score": 3}) == {
        "condition": 4,
        "score": 3,
    }


def test_blocks_are_validated_and_mixed_blocks_run_in_order(client, participant_at_trials):
    for blocks, field in (
        ([{"paradigm": "mos"}], "blocks[1].paradigm"),
        ([{"paradigm": "abx", "repetitions": 0}], "blocks[1].repetitions"),
        ([{"paradigm": "mushra", "repetitions": 2}], "blocks[1].repetitions"),
        ([{"paradigm": "bs1116", "repetitions": 2}], "blocks[1].repetitions"),
        ([{"paradigm": []}], "blocks[1].paradigm"),
        ([{"paradigm": "abx", "with_reference": True}], "blocks[1].with_reference"),
        ([{"paradigm": "abx", "colour": "red"}], "blocks[1]"),
        ([{"paradigm": "mushra"}, {"paradigm": "mushra"}], "blocks"),
        ([], "blocks"),
    ):
        with pytest.raises(FieldError) as err:
            validate_config({"blocks": blocks})
        assert err.value.field == field
    exp, p = participant_at_trials(
        n_excerpts=1,
        seconds=1.0,
        checkpoints=CHECKPOINTS,
        config=_config({"paradigm": "abx", "instructions": "Which one is X?"}, {"paradigm": "mushra"}, training=True),
    )
    plan = Participant.objects.get(pk=p.pk).plan
    # Each block: its training trial(s) first, then its tests; ABX first, then MUSHRA.
    assert [(paradigms.paradigm_of(e), e["training"]) for e in plan] == [
        ("abx", True),
        ("abx", True),
        ("abx", False),
        ("abx", False),
        ("mushra", True),
        ("mushra", False),
    ]
    data, _ = _trial_json(client, p, 0)
    assert data["block_instructions"] == "Which one is X?"
    assert data["labels"]  # training shows names
    for index in range(4):
        assert _post(client, p, index, answer_body(p, index, {"choice": "a"}, client=client)).status_code == 200
    data, _ = _trial_json(client, p, 4)
    assert data["paradigm"] == "mushra" and data["reference"] is not None
    for index in (4, 5):
        assert _post(client, p, index, save_body(p, index, client=client)).status_code == 200
    p.refresh_from_db()
    assert p.stage == Participant.Stage.COMPLETED
    # Ratings for the MUSHRA test page only; answers for the ABX tests.
    assert Rating.objects.filter(participant=p).count() == len(_kinds(exp))
    assert TrialResponse.objects.filter(participant=p).exclude(answer={}).count() == 4


def test_a_block_with_nothing_to_compare_cannot_open(rendered_experiment):
    exp = rendered_experiment(n_excerpts=1, seconds=1.0, config=_config({"paradigm": "ab"}))
    with pytest.raises(Exception, match="block 1: an AB preference block needs at least two conditions"):
        experiments.open_experiment(experiment=exp)


def test_blocks_change_only_before_the_experiment_opens(open_experiment):
    exp = open_experiment(n_excerpts=1, seconds=1.0, checkpoints=CHECKPOINTS, config=_config({"paradigm": "abx"}))
    trials = Trial.objects.filter(experiment=exp).count()
    # The same blocks again (defaults filled in or not) change nothing and are accepted.
    experiments.update_experiment_settings(experiment=exp, config={"blocks": [{"paradigm": "abx", "repetitions": 1}]})
    for status in ("open", "closed"):
        exp.status = status
        exp.save(update_fields=["status"])
        with pytest.raises(ConflictError, match="the blocks cannot change"):
            experiments.update_experiment_settings(experiment=exp, config={"blocks": [{"paradigm": "bs1116"}]})
        exp.refresh_from_db()
        assert paradigms.blocks(exp.config)[0]["paradigm"] == "abx"
    assert Trial.objects.filter(experiment=exp).count() == trials


def test_every_researcher_page_and_api_read_works_for_blocks_with_answers(client, participant_at_trials):
    """The owner's GET pages and API reads answer 200 for an experiment whose blocks are not MUSHRA
    and whose participant answered them (no MUSHRA ratings at all)."""
    from rest_framework.test import APIClient

    from tests.webmushra.test_access_matrix import EXPECTED, endpoints, url_for
    from webmushra.models import RenderJob, Report, Stimulus
    from webmushra.services import accounts

    exp, p = participant_at_trials(
        n_excerpts=1,
        seconds=1.0,
        checkpoints=CHECKPOINTS,
        config=_config({"paradigm": "abx"}, {"paradigm": "bs1116"}, {"paradigm": "acr"}),
    )
    for index in range(len(Participant.objects.get(pk=p.pk).plan)):
        entry = Participant.objects.get(pk=p.pk).plan[index]
        assert _post(client, p, index, answer_body(p, index, _answer_for(exp, entry), client=client)).status_code == 200
    assert Participant.objects.get(pk=p.pk).stage == Participant.Stage.COMPLETED
    report = Report.objects.create(experiment=exp, status="done", progress=1.0, file="")
    kwargs = {
        "pk": exp.pk,
        "excerpt_id": exp.excerpts.first().pk,
        "which": "reference",
        "checkpoint_id": exp.checkpoints.first().pk,
        "condition_id": exp.conditions.filter(kind="model").first().pk,
        "job_id": RenderJob.objects.filter(experiment=exp).first().pk,
        "stimulus_id": Stimulus.objects.filter(experiment=exp).first().pk,
        "report_id": report.pk,
        "participant_id": p.pk,
        "name": "bs1116.csv",
    }
    client.force_login(exp.owner)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {accounts.api_token_for(user=exp.owner)}")
    failures = []
    visited = 0
    for name, route in endpoints().items():
        method, _ = EXPECTED[name]
        if method != "GET" or name.endswith(("report_download", "schema", "docs", "redoc")):
            continue
        r = (api if name.startswith("api:") else client).get(url_for(name, route, kwargs))
        visited += 1
        if r.status_code != 200:
            failures.append(f"{name}: {r.status_code}")
    assert failures == [] and visited >= 25, (visited, failures)
