"""The experiment's blocks (config["blocks"]) set on the settings page and through the API, and
what the page says each block gives every participant, checked against the trials opening the
experiment really makes and against evaluation's ABX plan."""

from __future__ import annotations

import math
import re

import pytest
from django import forms as django_forms
from django.urls import reverse
from rest_framework.test import APIClient

from evaluation.paradigms.abx import exact_power, trials_needed
from tests.webmushra.conftest import render_inline
from webmushra import forms
from webmushra.errors import FieldError
from webmushra.models import Participant, Trial
from webmushra.rules import validate_config
from webmushra.services import accounts, experiments, sessions

pytestmark = pytest.mark.django_db

CHECKPOINTS = ("ht1_lstm32.json", "ts9_lstm20_gain.json")


@pytest.fixture
def logged_in(client, researcher):
    client.force_login(researcher)
    return client


@pytest.fixture
def api(researcher):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {accounts.api_token_for(user=researcher)}")
    return client


def shown_rows(page) -> list[dict]:
    """The block rows as the page shows them (the unbound formset's values), one per row,
    the empty row to add a block last."""
    formset = page.context["blocks_formset"]
    rows = []
    for form in formset.forms:
        rows.append({name: form.initial.get(name, field.initial) for name, field in form.fields.items()})
    return rows


def rows_post(rows: list[dict], initial: int) -> dict:
    """What a browser sends for these block rows (checkboxes: "on" or left out)."""
    data: dict = {
        "blocks-TOTAL_FORMS": len(rows),
        "blocks-INITIAL_FORMS": initial,
        "blocks-MIN_NUM_FORMS": 0,
        "blocks-MAX_NUM_FORMS": 1000,
    }
    for i, row in enumerate(rows):
        for name, value in row.items():
            if isinstance(value, bool):
                if value:
                    data[f"blocks-{i}-{name}"] = "on"
            elif value is not None:
                data[f"blocks-{i}-{name}"] = value
    return data


def plan_rows(html: str) -> dict[int, dict]:
    """Block number -> what the page's table says: paradigm, test and training trials, problem."""
    out = {}
    for m in re.finditer(
        r'<tr id="block-plan-(\d+)" data-paradigm="(\w+)" data-test-trials="(\d+)" '
        r'data-training-trials="(\d+)"( class="block-problem")?',
        html,
    ):
        out[int(m.group(1))] = {
            "paradigm": m.group(2),
            "test": int(m.group(3)),
            "training": int(m.group(4)),
            "problem": bool(m.group(5)),
        }
    return out


def settings_url(exp) -> str:
    return reverse("researcher:settings", args=[exp.pk])


def blocks_url(exp) -> str:
    return reverse("researcher:experiment_blocks", args=[exp.pk])


def test_blocks_set_on_the_page_give_the_trials_the_page_counted(logged_in, build_experiment):
    # 2 test excerpts + 1 training excerpt; hidden reference, two anchors, two models.
    exp = build_experiment(n_excerpts=2, seconds=1.0, checkpoints=CHECKPOINTS, config={"training": True})
    page = logged_in.get(settings_url(exp))
    assert page.status_code == 200
    rows = shown_rows(page)
    # No blocks stored: the page shows the one MUSHRA block, then an empty row to add one.
    assert [r["paradigm"] for r in rows] == ["mushra", None]
    assert plan_rows(page.content.decode()) == {1: {"paradigm": "mushra", "test": 2, "training": 1, "problem": False}}
    # As a browser without scripts does it: the MUSHRA row moved last, a new ABX block in the empty
    # row; saved, then an AB block (with the reference) added first.
    rows[0]["order"] = 3
    rows[1] |= {"paradigm": "abx", "repetitions": 2, "order": 2, "instructions": "Which one is X?"}
    r = logged_in.post(blocks_url(exp), rows_post(rows, initial=1))
    assert r.status_code == 302, r.content.decode()[:2000]
    exp.refresh_from_db()
    assert [(b["paradigm"], b["repetitions"]) for b in exp.config["blocks"]] == [("abx", 2), ("mushra", 1)]
    assert exp.config["blocks"][0]["instructions"] == "Which one is X?"
    page = logged_in.get(settings_url(exp))
    rows = shown_rows(page)
    assert [(r["paradigm"], r["order"]) for r in rows] == [("abx", 1), ("mushra", 2), (None, 3)]
    rows[2] |= {"paradigm": "ab", "with_reference": True, "training": False, "order": 0}
    r = logged_in.post(blocks_url(exp), rows_post(rows, initial=2))
    assert r.status_code == 302
    exp.refresh_from_db()
    assert [b["paradigm"] for b in exp.config["blocks"]] == ["ab", "abx", "mushra"]
    assert exp.config["blocks"][0] == {
        "paradigm": "ab",
        "repetitions": 1,
        "training": False,
        "instructions": "",
        "with_reference": True,
        "scale": [],
        "gold": [],
        "trapping": [],
        "translations": {},
    }
    html = logged_in.get(settings_url(exp)).content.decode()
    shown = plan_rows(html)
    # AB with the reference: 3 pairs of (reference, model 1, model 2), no training; ABX: 2 models
    # x 2 excerpts x 2 repetitions, 2 training trials; MUSHRA: one page per excerpt.
    assert shown == {
        1: {"paradigm": "ab", "test": 6, "training": 0, "problem": False},
        2: {"paradigm": "abx", "test": 8, "training": 2, "problem": False},
        3: {"paradigm": "mushra", "test": 2, "training": 1, "problem": False},
    }
    assert re.search(r'id="blocks-total-tests">16<', html)
    minutes = [b["minutes"] for b in logged_in.get(settings_url(exp)).context["blocks_plan"]["blocks"]]
    assert all(m > 0 for m in minutes)
    # Open it: the trials made per block are those the page counted, and a participant gets them.
    render_inline(exp)
    experiments.open_experiment(experiment=exp)
    made = {
        n + 1: {
            "test": Trial.objects.filter(
                experiment=exp, block=n, is_training=False, is_catch=False, repeat_of__isnull=True
            ).count(),
            "training": Trial.objects.filter(experiment=exp, block=n, is_training=True).count(),
        }
        for n in range(3)
    }
    assert made == {n: {"test": s["test"], "training": s["training"]} for n, s in shown.items()}
    p = sessions.start_participant(experiment=exp)
    plan = Participant.objects.get(pk=p.pk).plan
    block_of = dict(Trial.objects.filter(experiment=exp).values_list("pk", "block"))
    for n, s in shown.items():
        entries = [e for e in plan if block_of[e["trial"]] == n - 1]
        assert sum(not e["training"] for e in entries) == s["test"]
        assert sum(bool(e["training"]) for e in entries) == s["training"]


def refusal(blocks: list[dict]) -> str:
    """The message ``rules.validate_config`` refuses these blocks with."""
    with pytest.raises(FieldError) as err:
        validate_config({"blocks": blocks})
    return str(err.value)


def test_bad_blocks_are_refused_next_to_the_field_and_change_nothing(logged_in, build_experiment):
    exp = build_experiment(n_excerpts=1, seconds=1.0, checkpoints=CHECKPOINTS, config={"training": False})
    experiments.update_experiment_settings(experiment=exp, config={"blocks": [{"paradigm": "acr"}]})
    exp.refresh_from_db()
    before = dict(exp.config)
    row = {"training": True, "instructions": "", "with_reference": False, "remove": False}
    cases = [
        # Row 2 runs first (order 1): validate_config's blocks[1] is row 2 on the page.
        (
            [row | {"paradigm": "mushra", "order": 2}, row | {"paradigm": "abx", "repetitions": 0, "order": 1}],
            1,
            "repetitions",
            "blocks[1].repetitions: expected a whole number from 1 to 20",
        ),
        (
            [row | {"paradigm": "ranking", "repetitions": 3, "order": 1}],
            0,
            "repetitions",
            refusal([{"paradigm": "ranking", "repetitions": 3}]),
        ),
        (
            [row | {"paradigm": "abx", "order": 1}, row | {"paradigm": "abx", "order": 2, "instructions": "x" * 5001}],
            1,
            "instructions",
            "blocks[2].instructions: expected text of at most 5000 characters",
        ),
        (
            [row | {"paradigm": "abx", "order": 1, "repetitions": "two"}],
            0,
            "repetitions",
            "Enter a whole number.",
        ),
    ]
    for rows, index, field, message in cases:
        r = logged_in.post(blocks_url(exp), rows_post(rows, initial=1))
        assert r.status_code == 400, (rows, r.status_code)
        formset = r.context["blocks_formset"]
        assert message in formset.forms[index].errors[field], formset.forms[index].errors
        html = r.content.decode()
        # The message sits in the row it concerns, and the rows come back as sent.
        row_html = html[html.index(f'id="block-row-{index + 1}"') :]
        row_html = row_html[: row_html.index("</fieldset>")]
        assert message.replace('"', "&quot;") in row_html or message in row_html
        assert "Blocks not saved; nothing was changed." in html
        exp.refresh_from_db()
        assert exp.config == before
    # Errors about the blocks as a whole are shown above the rows.
    for rows, message in (
        ([row | {"paradigm": "mushra", "order": 1}, row | {"paradigm": "mushra", "order": 2}], "at most one MUSHRA"),
        ([row | {"paradigm": "acr", "order": 1, "remove": True}], "blocks: expected a list of at least one block"),
    ):
        r = logged_in.post(blocks_url(exp), rows_post(rows, initial=1))
        assert r.status_code == 400
        assert any(message in e for e in r.context["blocks_formset"].blocks_errors)
        assert message in r.content.decode()
        exp.refresh_from_db()
        assert exp.config == before


def test_blocks_of_an_experiment_that_opened_cannot_change(logged_in, api, open_experiment):
    exp = open_experiment(n_excerpts=1, seconds=1.0, config={"training": False})
    before = dict(exp.config)
    page = logged_in.get(settings_url(exp))
    html = page.content.decode()
    assert 'id="blocks-locked"' in html and 'id="save-blocks"' not in html
    assert re.search(r'<fieldset class="block-row" id="block-row-1" disabled>', html)
    rows = shown_rows(page)
    rows[1] |= {"paradigm": "abx", "order": 2}
    for state in ("open", "closed"):
        r = logged_in.post(blocks_url(exp), rows_post(rows, initial=1))
        assert r.status_code == 409
        assert f"blocks: the experiment is {state}; blocks can only change before it opens" in r.content.decode()
        r = api.put(f"/api/experiments/{exp.pk}/blocks/", {"blocks": [{"paradigm": "abx"}]}, format="json")
        assert r.status_code == 409 and r.json()["error"].startswith("blocks: the experiment is")
        r = api.patch(f"/api/experiments/{exp.pk}/", {"config": {"blocks": [{"paradigm": "abx"}]}}, format="json")
        assert r.status_code == 409
        exp.refresh_from_db()
        assert exp.config == before
        assert not Trial.objects.filter(experiment=exp).exclude(paradigm="mushra").exists()
        if state == "open":
            experiments.close_experiment(experiment=exp)
            exp.refresh_from_db()
    # The blocks it has are not a change (a client sending the whole config back).
    r = api.patch(f"/api/experiments/{exp.pk}/", {"config": {"blocks": [{"paradigm": "mushra"}]}}, format="json")
    assert r.status_code == 200, r.content
    assert api.get(f"/api/experiments/{exp.pk}/blocks/").json()["editable"] is False


def test_blocks_through_the_api_with_the_same_checks(api, build_experiment):
    exp = build_experiment(n_excerpts=3, seconds=1.0, checkpoints=CHECKPOINTS, config={"training": False})
    url = f"/api/experiments/{exp.pk}/blocks/"
    r = api.get(url)
    assert r.status_code == 200
    body = r.json()
    assert body["blocks"] == [
        {
            "paradigm": "mushra",
            "repetitions": 1,
            "training": True,
            "instructions": "",
            "with_reference": False,
            "scale": [],
            "gold": [],
            "trapping": [],
            "translations": {},
        }
    ]
    assert body["editable"] is True and body["plan"][0]["test_trials"] == 3
    blocks = [{"paradigm": "bs1116"}, {"paradigm": "abx", "repetitions": 4, "instructions": "Find X."}]
    r = api.put(url, {"blocks": blocks}, format="json")
    assert r.status_code == 200, r.content
    body = r.json()
    assert [(b["paradigm"], b["repetitions"]) for b in body["blocks"]] == [("bs1116", 1), ("abx", 4)]
    # 3 excerpts x 2 models (x 4 repetitions for ABX).
    assert [p["test_trials"] for p in body["plan"]] == [6, 24]
    assert body["test_trials"] == 30 and body["problems"] == 0
    exp.refresh_from_db()
    assert exp.config["blocks"][1]["instructions"] == "Find X."
    stored = list(exp.config["blocks"])
    for sent, field in (
        ({"blocks": [{"paradigm": "mos"}]}, "blocks[1].paradigm"),
        ({"blocks": [{"paradigm": "abx"}, {"paradigm": "ab", "repetitions": 21}]}, "blocks[2].repetitions"),
        ({"blocks": [{"paradigm": "abx", "training": "yes"}]}, "blocks[1].training"),
        ({"blocks": [{"paradigm": "abx", "colour": "red"}]}, "blocks[1]"),
        ({"blocks": [{"paradigm": "abx"}, {"paradigm": ["abx"]}]}, "blocks[2].paradigm"),
        ({"blocks": []}, "blocks"),
        ({"blocks": "abx"}, "blocks"),
        ({}, "blocks"),
        ({"blocks": [{"paradigm": "abx"}], "training": False}, "training"),
    ):
        r = api.put(url, sent, format="json")
        assert r.status_code == 400, (sent, r.content)
        assert r.json()["field"] == field and r.json()["error"].startswith(f"{field}: "), r.json()
        exp.refresh_from_db()
        assert exp.config["blocks"] == stored
    # The experiment's settings take blocks with the same checks.
    r = api.patch(f"/api/experiments/{exp.pk}/", {"config": {"blocks": [{"paradigm": "dcr", "x": 1}]}}, format="json")
    assert r.status_code == 400 and r.json()["field"] == "blocks[1]"
    r = api.patch(f"/api/experiments/{exp.pk}/", {"config": {"blocks": [{"paradigm": {}}]}}, format="json")
    assert r.status_code == 400 and r.json()["field"] == "blocks[1].paradigm"
    r = api.post("/api/experiments/", {"title": "t", "config": {"blocks": [{"paradigm": [1]}]}}, format="json")
    assert r.status_code == 400 and r.json()["field"] == "blocks[1].paradigm"
    r = api.patch(f"/api/experiments/{exp.pk}/", {"config": {"blocks": [{"paradigm": "dcr"}]}}, format="json")
    assert r.status_code == 200
    assert r.json()["config"]["blocks"][0]["paradigm"] == "dcr"


def test_a_block_that_cannot_open_is_shown_with_its_fix(logged_in, api, rendered_experiment):
    exp = rendered_experiment(n_excerpts=2, seconds=1.0, config={"training": False})  # one model
    experiments.update_experiment_settings(experiment=exp, config={"blocks": [{"paradigm": "ab"}, {"paradigm": "acr"}]})
    html = logged_in.get(settings_url(exp)).content.decode()
    assert plan_rows(html)[1]["problem"] and not plan_rows(html)[2]["problem"]
    assert "Cannot open:</strong> block 1: an AB preference block needs at least two conditions to compare" in html
    assert "tick “Compare the reference too”" in html
    assert 'id="blocks-problems"' in html
    plan = api.get(f"/api/experiments/{exp.pk}/blocks/").json()
    assert plan["problems"] == 1 and "Compare the reference too" in plan["plan"][0]["fix"]
    # The same problem is what opening says.
    with pytest.raises(Exception, match="block 1: an AB preference block needs at least two conditions"):
        experiments.open_experiment(experiment=exp)
    # The fix given: compare the reference too. Then it opens with the trials counted.
    r = api.put(
        f"/api/experiments/{exp.pk}/blocks/",
        {"blocks": [{"paradigm": "ab", "with_reference": True}, {"paradigm": "acr"}]},
        format="json",
    )
    shown = [p["test_trials"] for p in r.json()["plan"]]
    assert r.json()["problems"] == 0 and shown == [2, 2 * 4]  # 1 pair; ACR: 4 conditions per excerpt
    experiments.open_experiment(experiment=exp)
    made = [Trial.objects.filter(experiment=exp, block=n, is_training=False).count() for n in range(2)]
    assert made == shown


@pytest.mark.parametrize("proportion,power", [(0.75, 0.8), (0.9, 0.95)])
def test_the_abx_figures_are_evaluations(logged_in, api, build_experiment, proportion, power):
    exp = build_experiment(n_excerpts=3, seconds=1.0, checkpoints=CHECKPOINTS, config={"training": False})
    experiments.update_experiment_settings(
        experiment=exp, config={"blocks": [{"paradigm": "abx", "repetitions": 2}, {"paradigm": "mushra"}]}
    )
    expected = trials_needed(proportion, power, 0.05)
    per_pair = 3 * 2  # excerpts x repetitions
    query = {"abx_proportion": proportion, "abx_power": power}
    html = logged_in.get(settings_url(exp), query).content.decode()
    m = re.search(
        r'id="abx-plan-1" data-trials-needed="(\d+)" data-per-pair="(\d+)" data-participants-pooled="(\d+)"', html
    )
    assert m, html[html.index('id="blocks"') :][:3000]
    assert int(m.group(1)) == expected["trials"]
    assert int(m.group(2)) == per_pair
    assert int(m.group(3)) == math.ceil(expected["trials"] / per_pair)
    assert 'id="abx-plan-2"' not in html  # MUSHRA: no ABX plan
    abx = api.get(f"/api/experiments/{exp.pk}/blocks/", query).json()["plan"][0]["abx"]
    assert abx["trials_needed"] == expected["trials"] and abx["trials_stable"] == expected["trials_stable"]
    assert abx["pairs"] == 2 and abx["per_participant"] == 2 * per_pair
    assert abx["power_per_participant"] == pytest.approx(exact_power(per_pair, proportion, 0.05)[0])
    assert abx["one_participant_enough"] is (per_pair >= expected["trials"])


def test_abx_plan_inputs_out_of_range_are_named(logged_in, api, build_experiment):
    exp = build_experiment(n_excerpts=1, seconds=1.0, config={"training": False})
    r = logged_in.get(settings_url(exp), {"abx_proportion": "1.5"})
    assert r.status_code == 200
    assert "abx_proportion: the true proportion correct must lie between 0.5 and 1" in r.content.decode()
    r = api.get(f"/api/experiments/{exp.pk}/blocks/", {"abx_power": "x"})
    assert r.status_code == 400 and r.json()["field"] == "abx_power"


def test_the_settings_form_leaves_the_blocks_alone(logged_in, build_experiment):
    exp = build_experiment(n_excerpts=1, seconds=1.0, config={"training": False, "blocks": [{"paradigm": "acr"}]})
    data = {}
    form = forms.SettingsForm.for_experiment(exp)
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if isinstance(field, django_forms.BooleanField):
            if value:
                data[name] = "on"
        elif value is not None:
            data[name] = value
    r = logged_in.post(settings_url(exp), dict(data, title="Renamed"))
    assert r.status_code == 302
    exp.refresh_from_db()
    assert exp.title == "Renamed" and [b["paradigm"] for b in exp.config["blocks"]] == ["acr"]


def test_the_blocks_endpoint_is_typed_in_the_schema(client):
    from webmushra.api import serializers as s

    schema = client.get("/api/schema/?format=json").json()
    path = schema["paths"]["/api/experiments/{id}/blocks/"]
    assert set(path) >= {"get", "put"}

    def component(ref: dict) -> dict:
        ref = ref["allOf"][0] if "allOf" in ref else ref
        return schema["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]

    answer = component(path["get"]["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(answer["properties"]) == set(s.BlocksSerializer().fields)
    row = component(answer["properties"]["plan"]["items"])
    assert {"test_trials", "training_trials", "minutes", "problem", "fix", "abx"} <= set(row["properties"])
    sent = component(path["put"]["requestBody"]["content"]["application/json"]["schema"])
    block = component(sent["properties"]["blocks"]["items"])
    assert component(block["properties"]["paradigm"])["enum"] == [
        "mushra",
        "bs1116",
        "abx",
        "ab",
        "abn",
        "acr",
        "dcr",
        "ranking",
    ]
    assert {p["name"] for p in path["get"]["parameters"]} >= {"abx_proportion", "abx_power"}


def test_a_post_without_the_rows_form_data_changes_nothing(logged_in, build_experiment):
    exp = build_experiment(n_excerpts=1, seconds=1.0, config={"training": False, "blocks": [{"paradigm": "acr"}]})
    r = logged_in.post(blocks_url(exp), {"blocks-0-paradigm": "abx"})
    assert r.status_code == 400
    assert "ManagementForm data is missing or has been tampered with" in r.content.decode()
    exp.refresh_from_db()
    assert [b["paradigm"] for b in exp.config["blocks"]] == ["acr"]


def test_odd_input_to_the_blocks_never_fails(logged_in, api, build_experiment):
    from hypothesis import given
    from hypothesis import strategies as st

    from tests.webmushra.test_no_5xx import FORM, FUZZ, check, dumps, form_values, json_values, urlencoded

    exp = build_experiment(n_excerpts=1, seconds=1.0, config={"training": False})
    before = dict(exp.config)
    base = rows_post(
        [{"paradigm": "abx", "repetitions": 2, "training": True, "order": 1, "instructions": "i", "with_reference": 1}],
        initial=1,
    )
    base = {k: str(v) for k, v in base.items()}
    keys = sorted(base)

    @FUZZ
    @given(
        junk=st.dictionaries(st.sampled_from(keys), form_values, min_size=1, max_size=3),
        query=st.dictionaries(st.sampled_from(["abx_proportion", "abx_power"]), form_values, max_size=2),
        body=json_values,
        block=st.dictionaries(st.sampled_from(["paradigm", "repetitions", "training", "x"]), json_values, max_size=3),
    )
    def send(junk, query, body, block) -> None:
        r = logged_in.post(blocks_url(exp), urlencoded(base | junk), content_type=FORM)
        check(r, f"POST blocks {junk!r:.300}")
        r = logged_in.get(settings_url(exp) + "?" + urlencoded(query))
        check(r, f"GET settings {query!r:.300}")
        for sent in (body, {"blocks": body}, {"blocks": [block]}):
            r = api.put(f"/api/experiments/{exp.pk}/blocks/", dumps(sent), content_type="application/json")
            check(r, f"PUT blocks {sent!r:.300}")
            if r.status_code == 400:
                assert r.json()["error"]
        exp.refresh_from_db()
        if exp.config != before:  # a valid set of blocks was sent: put the ones before back
            experiments.update_experiment_settings(experiment=exp, config={"blocks": before.get("blocks", [{}])})

    send()
