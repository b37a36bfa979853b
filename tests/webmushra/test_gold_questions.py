"""ACR / DCR gold questions (ITU-T P.808) and ACR blocks with a category scale of their own.

Gold questions are asked over HTTP like any trial of their block, refereed by the server, kept out
of the answers the analysis reads, and screen the participants whose answer strays from the known
category; the block's MOS is then checked against a plain mean of the passing participants' votes.
"""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from django.urls import reverse

from tests.trials import answer_body
from tests.webmushra.test_blocks_settings import blocks_url, rows_post, shown_rows
from tests.webmushra.test_paradigm_trials import _answer_for, _no_condition_names, _post, _trial_json
from webmushra import paradigm_data, paradigms
from webmushra.errors import ConflictError, FieldError
from webmushra.models import Condition, Experiment, Participant, StimulusToken, Trial, TrialResponse
from webmushra.rules import validate_config
from webmushra.services import experiments, quality, sessions

pytestmark = pytest.mark.django_db

CHECKPOINTS = ("ht1_lstm32.json", "ts9_lstm20_gain.json")
REFERENCE = "Hidden reference"
LOW_ANCHOR = "Anchor 3.5 kHz"
GOLD = [{"condition": REFERENCE, "expected": 5}, {"condition": LOW_ANCHOR, "expected": 1, "tolerance": 0}]


def _config(*blocks: dict) -> dict:
    return {"training": False, "questionnaire": [], "blocks": list(blocks), "rules": {"min_trial_seconds": 0}}


def _participant(exp) -> Participant:
    p = sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=True)
    return sessions.set_level(participant=p, gain_db=0.0)


def _run(client, exp, p: Participant, gold_answers: dict[str, int]) -> None:
    """Answer every trial over HTTP: gold questions with ``gold_answers`` (condition label ->
    score), the others as a listener with known preferences does (``_answer_for``)."""
    labels = dict(Condition.objects.filter(experiment=exp).values_list("pk", "label"))
    for index, entry in enumerate(Participant.objects.get(pk=p.pk).plan):
        data, html = _trial_json(client, p, index)
        # A gold question looks like every other trial of its block: nothing says it is one.
        assert data["paradigm"] == entry["paradigm"] and len(data["signals"]) == 1
        assert not re.search(r"\bgold\b", html, re.I)
        _no_condition_names(exp, html)
        if entry.get("gold"):
            shown = paradigms.signal_keys(entry)["a"]
            answer = {"score": gold_answers[labels[shown]]}
        else:
            answer = _answer_for(exp, entry)
        r = _post(client, p, index, answer_body(p, index, answer, client=client))
        assert r.status_code == 200, r.content


@pytest.mark.parametrize("paradigm", ["acr", "dcr"])
def test_gold_questions_are_asked_once_each_and_leave_out_who_fails_them(client, open_experiment, paradigm):
    block = {"paradigm": paradigm, "gold": GOLD}
    exp = open_experiment(n_excerpts=2, seconds=1.0, checkpoints=CHECKPOINTS, config=_config(block))
    ids = dict(Condition.objects.filter(experiment=exp).values_list("label", "pk"))
    tests = exp.excerpts.filter(is_training=False).count()
    # One gold trial per question and test excerpt, kept apart from the block's trials (is_catch).
    gold_trials = Trial.objects.filter(experiment=exp, is_catch=True)
    assert sorted(gold_trials.values_list("design_key", flat=True)) == sorted(
        [f"gold:{ids[REFERENCE]}"] * tests + [f"gold:{ids[LOW_ANCHOR]}"] * tests
    )
    if paradigm == "dcr":  # against the open reference; the reference against itself for its own question
        assert {tuple(t.design) for t in gold_trials} == {
            (ids[REFERENCE], ids[REFERENCE]),
            (ids[REFERENCE], ids[LOW_ANCHOR]),
        }

    passing, failing = _participant(exp), _participant(exp)
    models = Condition.objects.filter(experiment=exp, kind="model").count()
    # ACR rates every condition; DCR each model against the reference (the anchor only as a gold question).
    regular = {"acr": tests * len(ids), "dcr": tests * models}[paradigm]
    for p in (passing, failing):
        plan = Participant.objects.get(pk=p.pk).plan
        gold = [e for e in plan if e.get("gold")]
        assert len(plan) == regular + 2 and len(gold) == 2
        assert not plan[0].get("gold")  # never first
        assert sorted(paradigms.signal_keys(e)["a"] for e in gold) == sorted([ids[REFERENCE], ids[LOW_ANCHOR]])
        # The gold trial's signal has a URL of its own and plays the condition's audio.
        for e in gold:
            (token,) = StimulusToken.objects.filter(participant=p, trial_id=e["trial"])
            assert token.stimulus.condition_id == paradigms.signal_keys(e)["a"]
        tokens = list(StimulusToken.objects.filter(participant=p).values_list("token", flat=True))
        assert len(tokens) == len(set(tokens))

    # Within the tolerance (5 ± 1, 1 ± 0) passes; the anchor answered 2 where 1 ± 0 is known fails.
    _run(client, exp, passing, {REFERENCE: 4, LOW_ANCHOR: 1})
    _run(client, exp, failing, {REFERENCE: 5, LOW_ANCHOR: 2})
    outcomes = {
        (r.participant_id, r.answer["condition"]): (r.catch, r.flags)
        for r in TrialResponse.objects.filter(trial__experiment=exp, trial__is_catch=True)
    }
    assert outcomes[(passing.pk, ids[REFERENCE])] == (
        {"check": "gold", "expected": 5, "tolerance": 1, "score": 4, "passed": True},
        [],
    )
    caught, flags = outcomes[(failing.pk, ids[LOW_ANCHOR])]
    assert caught == {"check": "gold", "expected": 1, "tolerance": 0, "score": 2, "passed": False}
    assert [f["code"] for f in flags] == ["gold_failed"]
    assert outcomes[(failing.pk, ids[REFERENCE])][0]["passed"] is True

    # The analysis reads the block's own trials only, and leaves out the participant who failed.
    frames = paradigm_data.paradigm_frames(exp)
    table = frames[paradigm]
    assert len(table) == 2 * regular
    assert dict(table.groupby("participant")["passed_checks"].all()) == {
        f"P{passing.pk}": True,
        f"P{failing.pk}": False,
    }
    results, refused = paradigm_data.paradigm_results(exp)
    assert refused == []
    result = results[paradigm]
    statistic = "mos" if paradigm == "acr" else "dmos"
    screening = result.tables["screening"].set_index("participant")
    assert bool(screening.loc[f"P{failing.pk}", "excluded"]) is True
    assert bool(screening.loc[f"P{passing.pk}", "excluded"]) is False
    kept = table[table["participant"] == f"P{passing.pk}"]
    want = kept.groupby("condition")["rating"].mean()
    got = result.tables["conditions"].set_index("condition")[statistic]
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False)
    assert set(result.tables["conditions"]["n_participants"]) == {1}

    # Every answered check is exported with its outcome (the ratings JSON and the API).
    from webmushra import selectors

    checks = selectors.check_rows(exp)
    assert len(checks) == 4 and {c["check"] for c in checks} == {"gold"}
    assert [c for c in checks if c["passed"] is False] == [
        next(
            c
            for c in checks
            if c["participant"] == f"P{failing.pk}" and c["condition"] == LOW_ANCHOR and c["answer"] == 2
        )
    ]
    summary = quality.quality_summary(exp)["gold_questions"]
    assert summary == {"per_participant": 2, "answered": 4, "failed": 1, "failed_participants": 1}
    from evaluation.report import quality_text

    assert "1 of 4 answered were failed (outside the question's tolerance), by 1 participant(s)" in quality_text(
        quality.quality_summary(exp)
    )
    assert quality.quality_summary(exp)["catch_trials"]["answered"] == 0  # not MUSHRA catch trials


def test_gold_and_scale_settings_are_refused_with_the_setting_named():
    def refused(block: dict) -> FieldError:
        with pytest.raises(FieldError) as err:
            validate_config(_config(block))
        return err.value

    cases = [
        ({"paradigm": "abx", "gold": GOLD}, "blocks[1].gold", "only ACR and DCR blocks ask gold questions"),
        (
            {"paradigm": "acr", "gold": [{"condition": REFERENCE, "expected": 6}]},
            "blocks[1].gold[1].expected",
            "1 to 5",
        ),
        (
            {"paradigm": "acr", "gold": [{"condition": REFERENCE, "expected": 3, "tolerance": 2}]},
            "blocks[1].gold[1].tolerance",
            "cannot be failed",
        ),
        ({"paradigm": "acr", "gold": [{"condition": REFERENCE, "expected": 5, "why": 1}]}, "blocks[1].gold[1]", "why"),
        ({"paradigm": "acr", "gold": [GOLD[0], GOLD[0]]}, "blocks[1].gold", "one gold question per condition"),
        ({"paradigm": "acr", "gold": [{"condition": "", "expected": 5}]}, "blocks[1].gold[1].condition", "label"),
        ({"paradigm": "acr", "gold": GOLD * 3}, "blocks[1].gold", "at most 5"),
        ({"paradigm": "dcr", "scale": ["Bad", "Good"]}, "blocks[1].scale", "only ACR blocks take a scale"),
        ({"paradigm": "acr", "scale": ["Only"]}, "blocks[1].scale", "2 to 11 labels"),
        ({"paradigm": "acr", "scale": [str(i) for i in range(12)]}, "blocks[1].scale", "2 to 11 labels"),
        ({"paradigm": "acr", "scale": ["Same", "same"]}, "blocks[1].scale", "each label once"),
        ({"paradigm": "acr", "scale": ["Fine", " "]}, "blocks[1].scale[2]", "1 to 80 characters"),
        # On a 3-point scale the known category must be one of its three.
        (
            {"paradigm": "acr", "scale": ["Low", "Mid", "High"], "gold": [{"condition": REFERENCE, "expected": 4}]},
            "blocks[1].gold[1].expected",
            "1 to 3",
        ),
    ]
    for block, field, words in cases:
        err = refused(block)
        assert err.field == field and words in str(err), (block, err.field, str(err))
    # Tolerance 0 on a 2-point scale can be failed; tolerance 1 cannot.
    ok = validate_config(
        _config(
            {
                "paradigm": "acr",
                "scale": ["No", "Yes"],
                "gold": [{"condition": REFERENCE, "expected": 2, "tolerance": 0}],
            }
        )
    )
    assert ok["blocks"][0]["gold"] == [{"condition": REFERENCE, "expected": 2, "tolerance": 0}]
    assert refused({"paradigm": "acr", "scale": ["No", "Yes"], "gold": [{"condition": REFERENCE, "expected": 2}]})


def test_a_gold_question_on_no_condition_refuses_opening_and_changes_nothing(rendered_experiment):
    exp = rendered_experiment(
        n_excerpts=1,
        seconds=1.0,
        checkpoints=CHECKPOINTS[:1],
        config=_config({"paradigm": "acr", "gold": [{"condition": "Nope", "expected": 1}]}),
    )
    with pytest.raises(ConflictError) as err:
        experiments.open_experiment(experiment=exp)
    assert "cannot open: block 1: gold question: 'Nope' is not a condition of the experiment" in str(err.value)
    assert REFERENCE in str(err.value)
    exp.refresh_from_db()
    assert exp.status != Experiment.Status.OPEN and not exp.trials.exists()


def test_an_acr_block_with_its_own_scale_is_shown_checked_and_analysed_on_it(client, participant_at_trials):
    scale = ["Not at all", "Somewhat", "Very much"]
    exp, p = participant_at_trials(
        n_excerpts=1, seconds=1.0, checkpoints=CHECKPOINTS[:1], config=_config({"paradigm": "acr", "scale": scale})
    )
    data, _html = _trial_json(client, p, 0)
    assert data["scale"] == [{"value": n, "label": label} for n, label in enumerate(scale, start=1)]
    r = _post(client, p, 0, answer_body(p, 0, {"score": 4}, client=client))
    assert r.status_code == 400 and "answer.score" in r.json()["error"] and "1 to 3" in r.json()["error"]
    assert not TrialResponse.objects.filter(participant=p).exists()
    plan = Participant.objects.get(pk=p.pk).plan
    labels = dict(Condition.objects.filter(experiment=exp).values_list("pk", "label"))
    given = {}
    for index, entry in enumerate(plan):
        score = 1 + index % 3
        given[labels[entry["conditions"][0]]] = score
        r = _post(client, p, index, answer_body(p, index, {"score": score}, client=client))
        assert r.status_code == 200, r.content
    results, refused = paradigm_data.paradigm_results(exp)
    assert refused == []
    result = results["acr"]
    assert result.summary["points"] == 3 and "3-point category scale" in result.method
    got = result.tables["conditions"].set_index("condition")
    assert {c: float(got.loc[c, "mos"]) for c in given} == {c: float(s) for c, s in given.items()}
    assert [c for c in got.columns if c.startswith("votes_")] == ["votes_1", "votes_2", "votes_3"]


def test_the_settings_page_takes_gold_questions_and_labels_as_lines(client, researcher, build_experiment):
    client.force_login(researcher)
    exp = build_experiment(n_excerpts=1, seconds=1.0, checkpoints=CHECKPOINTS[:1], config={"training": False})
    row = {
        "paradigm": "acr",
        "repetitions": 1,
        "training": False,
        "scale": "Bad\nSo-so\nGood",
        "gold": "Hidden reference = 3\nAnchor 3.5 kHz = 1 ± 0",
        "de_instructions": "Bewerten Sie den Klang.",
        "de_scale": "Schlecht\nSo lala\nGut",
        "order": 1,
    }
    r = client.post(blocks_url(exp), rows_post([row], 0))
    assert r.status_code == 302, r.content
    exp.refresh_from_db()
    (block,) = exp.config["blocks"]
    assert block["scale"] == ["Bad", "So-so", "Good"]
    assert block["gold"] == [
        {"condition": REFERENCE, "expected": 3, "tolerance": 1},
        {"condition": LOW_ANCHOR, "expected": 1, "tolerance": 0},
    ]
    assert block["translations"] == {
        "de": {"instructions": "Bewerten Sie den Klang.", "scale": ["Schlecht", "So lala", "Gut"]}
    }
    shown = shown_rows(client.get(reverse("researcher:settings", args=[exp.pk])))[0]
    assert shown["scale"] == "Bad\nSo-so\nGood"
    assert shown["de_scale"] == "Schlecht\nSo lala\nGut" and shown["de_instructions"] == "Bewerten Sie den Klang."
    assert shown["gold"] == "Hidden reference = 3 ± 1\nAnchor 3.5 kHz = 1 ± 0"
    # A line that is not "label = category" is refused next to the field; nothing changes.
    bad = client.post(blocks_url(exp), rows_post([row | {"gold": "Hidden reference is five"}], 1))
    assert bad.status_code == 400
    assert "line 1: expected “condition label = category”" in bad.content.decode()
    unknown = client.post(blocks_url(exp), rows_post([row | {"gold": "Nope = 3"}], 1))
    assert unknown.status_code == 302  # the label is checked against the conditions when the page counts trials
    page = client.get(reverse("researcher:settings", args=[exp.pk])).content.decode()
    assert "gold question: &#x27;Nope&#x27; is not a condition of the experiment" in page
    exp.refresh_from_db()
    assert exp.config["blocks"][0]["gold"] == [{"condition": "Nope", "expected": 3, "tolerance": 1}]
    assert json.dumps(exp.config["blocks"][0]["scale"]) == json.dumps(["Bad", "So-so", "Good"])


def test_a_blocks_instructions_and_labels_are_shown_in_the_participants_language(client, participant_at_trials):
    from webmushra import i18n

    scale = ["Not at all", "Somewhat", "Very much"]
    block = {"paradigm": "acr", "scale": scale, "instructions": "Rate the sound."}
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0, checkpoints=CHECKPOINTS[:1], config=_config(block))
    # Nothing translated yet: the researcher page lists both texts as missing in German.
    assert {"block 1 instructions", "block 1 category labels"} <= set(i18n.missing_translations(exp)["de"])
    german = {"instructions": "Bewerten Sie den Klang.", "scale": ["Gar nicht", "Etwas", "Sehr"]}
    exp.config = validate_config({**exp.config, "blocks": [block | {"translations": {"de": german}}]})
    exp.save(update_fields=["config"])
    assert not {"block 1 instructions", "block 1 category labels"} & set(i18n.missing_translations(exp).get("de", []))
    english, _html = _trial_json(client, p, 0)
    assert [s["label"] for s in english["scale"]] == scale and english["block_instructions"] == "Rate the sound."
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "de"
    data, html = _trial_json(client, p, 0)
    assert [s["label"] for s in data["scale"]] == german["scale"]
    assert data["block_instructions"] == german["instructions"]
    assert "Not at all" not in html and "Rate the sound." not in html
    # A translation must match the block's scale, one label per category.
    with pytest.raises(FieldError) as err:
        validate_config(_config(block | {"translations": {"de": {"scale": ["Gar nicht", "Sehr"]}}}))
    assert err.value.field == "blocks[1].translations.de.scale" and "expected 3 labels" in str(err.value)
    with pytest.raises(FieldError) as err:
        validate_config(_config(block | {"translations": {"fr": {"instructions": "Évaluez."}}}))
    assert err.value.field == "blocks[1].translations" and "'fr' is not a language" in str(err.value)


def test_a_refused_gold_or_scale_setting_is_shown_at_its_field(client, researcher, build_experiment):
    client.force_login(researcher)
    exp = build_experiment(n_excerpts=1, seconds=1.0, checkpoints=CHECKPOINTS[:1], config={"training": False})
    row = {"paradigm": "acr", "repetitions": 1, "training": False, "order": 1}
    for extra, field, words in (
        ({"gold": "Hidden reference = 6"}, "gold", "1 to 5"),
        ({"scale": "Low\nlow"}, "scale", "each label once"),
        ({"scale": "Low\nHigh", "de_scale": "Niedrig"}, "de_scale", "expected 2 labels"),
    ):
        r = client.post(blocks_url(exp), rows_post([row | extra], 0))
        assert r.status_code == 400
        form = r.context["blocks_formset"].forms[0]
        assert any(words in e for e in form.errors.get(field, [])), (field, form.errors)
    exp.refresh_from_db()
    assert "blocks" not in exp.config


def test_a_mushra_block_after_another_shows_its_own_instructions(client, participant_at_trials):
    blocks = [
        {"paradigm": "acr", "instructions": "Rate each sound."},
        {"paradigm": "mushra", "instructions": "Rate all."},
    ]
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0, checkpoints=CHECKPOINTS[:1], config=_config(*blocks))
    plan = Participant.objects.get(pk=p.pk).plan
    index = next(i for i, e in enumerate(plan) if paradigms.paradigm_of(e) == "mushra")
    assert plan[index]["block"] == 1
    for i, e in enumerate(plan[:index]):
        r = _post(client, p, i, answer_body(p, i, _answer_for(exp, e), client=client))
        assert r.status_code == 200, r.content
    data, _html = _trial_json(client, p, index)
    assert data["block_instructions"] == "Rate all."
    # A plan written before MUSHRA entries named their block finds the MUSHRA block all the same.
    old = Participant.objects.get(pk=p.pk)
    old.plan = [
        {k: v for k, v in e.items() if k != "block"} if paradigms.paradigm_of(e) == "mushra" else e for e in old.plan
    ]
    old.save(update_fields=["plan"])
    data, _html = _trial_json(client, p, index)
    assert data["block_instructions"] == "Rate all."
