"""The answers of other paradigms' blocks out of the platform: the analyses' long tables
(webmushra.paradigm_data), the report bundle (each block's analysis, table and figure; a bundle
for an experiment without MUSHRA ratings) and webMUSHRA's own result files (webmushra.interop).

Listeners answer every trial over HTTP with answers built from what they were shown and who
they are (known structure); every table is checked against what was sent.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.urls import reverse
from rest_framework.test import APIClient

from tests.trials import answer_body, save_body
from webmushra import interop, paradigm_data, paradigms
from webmushra.models import Condition, Participant, Report, Trial
from webmushra.services import accounts, quality, reports, sessions

pytestmark = pytest.mark.django_db

CHECKPOINTS = ("ht1_lstm32.json", "ts9_lstm20_gain.json")
FAST = {"bootstrap_resamples": 200, "permutation_resamples": 500, "correlation_resamples": 200}
QUESTIONS = [{"name": "age", "label": "Age", "type": "number", "options": [], "required": True}]
#: Ranking order of the condition kinds (best first).
RANK_ORDER = ("hidden_reference", "model:Model 1", "model:Model 2", "anchor70", "anchor35")
#: webMUSHRA's columns after session_test_id and the questionnaire (service/write.php).
WEBMUSHRA = {
    "paired_comparison.csv": [
        "trial_id",
        "choice_reference",
        "choice_non_reference",
        "choice_answer",
        "choice_time",
        "choice_comment",
    ],
    "bs1116.csv": [
        "trial_id",
        "rating_reference",
        "rating_non_reference",
        "rating_reference_score",
        "rating_non_reference_score",
        "rating_time",
        "choice_comment",
    ],
    "lss.csv": ["trial_id", "stimuli_rating", "stimuli", "rating_time"],
    "lms.csv": ["trial_id", "stimuli_rating", "stimuli", "rating_time"],
}
EXTRA = ["session_uuid", "flags", "excluded", "exclusion_reason"]


def _config(*blocks: dict) -> dict:
    return {
        "training": False,
        "questionnaire": QUESTIONS,
        "blocks": list(blocks),
        "rules": {"min_trial_seconds": 0, "require_one_100": False},
        "analysis": FAST,
        "trial_comments": "optional",
        "webmushra": {"testId": "export_test"},
    }


def _post(client, p: Participant, index: int, body: dict):
    return client.post(
        reverse("participant:trial", args=[p.token, index + 1]), json.dumps(body), content_type="application/json"
    )


def _who(exp) -> dict[int, str]:
    """Condition id -> kind, models told apart by label (``model:Model 1``)."""
    return {c.pk: f"model:{c.label}" if c.kind == "model" else c.kind for c in Condition.objects.filter(experiment=exp)}


def _answer(k: int, who: dict[int, str], entry: dict) -> dict:
    """Listener ``k``'s answer: ABX right except listener 0 on Model 2 (and listener 9, excluded,
    always wrong); BS.1116 grades the reference 5.0, Model 1 4.0 - 0.1 k, Model 2 2.5; AB prefers
    Model 1 except listener 2 (AB and ABN); ABN says "none" for listener 0; ACR / DCR fixed per condition;
    ranking in RANK_ORDER."""
    keys = paradigms.signal_keys(entry)
    p = entry["paradigm"]
    if p == "abx":
        right = "a" if keys["x"] == keys["a"] else "b"
        wrong = "b" if right == "a" else "a"
        model = who[keys["a"]] if who[keys["a"]] != "hidden_reference" else who[keys["b"]]
        return {"choice": wrong if k == 9 or (k == 0 and model == "model:Model 2") else right}
    if p == "bs1116":
        grade = {"hidden_reference": 5.0, "model:Model 1": round(4.0 - 0.1 * k, 1), "model:Model 2": 2.5}
        return {"grades": {key: grade[who[cid]] for key, cid in keys.items()}}
    if p in ("ab", "abn"):
        if p == "abn" and k == 0:
            return {"choice": "none"}
        liked = "model:Model 2" if k == 2 else "model:Model 1"
        return {"choice": "a" if who[keys["a"]] == liked else "b"}
    if p in ("acr", "dcr"):
        score = {"hidden_reference": 5, "model:Model 1": 4, "model:Model 2": 3 if p == "acr" else 2}
        return {"score": score.get(who[keys["a"]], 2 if who[keys["a"]] == "anchor70" else 1)}
    if p == "ranking":
        order = sorted(keys, key=lambda key: RANK_ORDER.index(who[keys[key]]))
        return {"ranks": {key: order.index(key) + 1 for key in keys}}
    raise AssertionError(p)


def _listener(client, exp, k: int, *, stop_after: int | None = None) -> tuple[Participant, list[dict[str, Any]]]:
    """A participant who answers every trial over HTTP (``stop_after``: only that many), then
    the questionnaire; returns them and (entry, answer, body) per trial."""
    p = sessions.set_level(
        participant=sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=True),
        gain_db=0.0,
    )
    who = _who(exp)
    sent = []
    plan = Participant.objects.get(pk=p.pk).plan
    for index, entry in enumerate(plan[:stop_after]):
        if paradigms.paradigm_of(entry) == paradigms.MUSHRA:
            body = save_body(p, index, client=client, score_of=lambda kind: 100 if kind == "hidden_reference" else 60)
            answer = None
        else:
            answer = _answer(k, who, entry)
            body = answer_body(p, index, answer, client=client)
        body["comment"] = f"=note {k}-{index}" if index == 0 else ""
        r = _post(client, p, index, body)
        assert r.status_code == 200, r.content
        sent.append({"entry": entry, "answer": answer, "body": body})
    p.refresh_from_db()
    if stop_after is None:
        p = sessions.submit_questionnaire(participant=p, answers={"age": str(30 + k)})
        assert p.stage == Participant.Stage.COMPLETED
    return p, sent


def _read(text: str) -> tuple[list[str], list[dict[str, str]]]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


def _item(s: dict) -> str:
    return Trial.objects.select_related("excerpt").get(pk=s["entry"]["trial"]).excerpt.name


def _model(comparison: str, by_label: dict[str, str]) -> str:
    """The model of an ABX pair ``"<label> vs <label>"`` (the other is the hidden reference)."""
    return next(by_label[c] for c in comparison.split(" vs ") if by_label[c].startswith("model:"))


def _name(c: Condition) -> str:
    return {"hidden_reference": "reference", "anchor35": "anchor35", "anchor70": "anchor70"}.get(c.kind, c.label)


def test_blocks_give_long_tables_a_report_without_mushra_and_webmushra_files(client, rendered_experiment):
    from webmushra.services import experiments

    blocks = [{"paradigm": p} for p in ("abx", "bs1116", "ab", "abn", "acr", "dcr", "ranking")]
    exp = experiments.open_experiment(
        experiment=rendered_experiment(n_excerpts=2, seconds=1.0, checkpoints=CHECKPOINTS, config=_config(*blocks))
    )
    conditions = {c.pk: c for c in Condition.objects.filter(experiment=exp)}
    label = {pk: c.label for pk, c in conditions.items()}
    who = _who(exp)
    by_label = {c.label: who[pk] for pk, c in conditions.items()}
    listeners = [_listener(client, exp, k) for k in range(3)]
    excluded, excluded_sent = _listener(client, exp, 9)
    quality.exclude_participant(participant=excluded, reason="answered at random")
    partial, partial_sent = _listener(client, exp, 1, stop_after=1)  # one ABX trial, never completes
    pilot = sessions.set_level(
        participant=sessions.give_consent(
            participant=sessions.start_participant(experiment=exp, pilot=True), agreed=True
        ),
        gain_db=0.0,
    )
    assert _post(client, pilot, 0, answer_body(pilot, 0, {"choice": "a"}, client=client)).status_code == 200

    # 1. The long tables: every answer of the kept participants, by label, nothing else.
    frames = paradigm_data.paradigm_frames(exp)
    assert set(frames) == {"abx", "bs1116", "ab", "abn", "acr", "dcr", "ranking"}
    for key, frame in frames.items():
        assert list(frame.columns) == paradigm_data.COLUMNS[paradigm_data.analysis_name(key)]
    kept = {f"P{p.pk}" for p, _ in listeners} | {f"P{partial.pk}"}
    assert {p for frame in frames.values() for p in frame["participant"]} == kept
    abx = frames["abx"]
    assert len(abx) == 3 * 2 * 2 + 1
    expected_abx = []
    for p, sent in [*listeners, (partial, partial_sent)]:
        for s in sent:
            if s["entry"]["paradigm"] != "abx":
                continue
            keys = paradigms.signal_keys(s["entry"])
            x_is = "A" if s["entry"]["x"] == 0 else "B"
            expected_abx.append(
                {
                    "participant": f"P{p.pk}",
                    "item": _item(s),
                    "condition_a": label[keys["a"]],
                    "condition_b": label[keys["b"]],
                    "x_is": x_is,
                    "answer": s["answer"]["choice"].upper(),
                }
            )
    assert sorted(abx.to_dict("records"), key=str) == sorted(expected_abx, key=str)
    bs = frames["bs1116"]
    assert len(bs) == 3 * 2 * 2
    for r in bs.to_dict("records"):
        k = [f"P{p.pk}" for p, _ in listeners].index(r["participant"])
        grade = {"model:Model 1": round(4.0 - 0.1 * k, 1), "model:Model 2": 2.5}[by_label[r["condition"]]]
        assert (r["grade_b"], r["grade_c"]) == ((5.0, grade) if r["reference_is"] == "B" else (grade, 5.0))
    acr = frames["acr"]
    assert len(acr) == 3 * 2 * len(conditions)
    assert dict(acr.groupby("condition")["rating"].mean()) == {
        c.label: {"hidden_reference": 5, "model:Model 1": 4, "model:Model 2": 3, "anchor70": 2, "anchor35": 1}[who[pk]]
        for pk, c in conditions.items()
    }
    ab = frames["ab"]
    assert len(ab) == 3 * 2
    # Each row's choice is the side its listener's liked model was shown on (listener 2 likes
    # Model 2, the others Model 1); which side that was is random, so it is worked out per row.
    for r in ab.to_dict("records"):
        k = [f"P{p.pk}" for p, _ in listeners].index(r["participant"])
        liked = "model:Model 2" if k == 2 else "model:Model 1"
        assert r["choice"] == ("A" if by_label[r["condition_a"]] == liked else "B"), r
    assert frames["abn"]["choice"].tolist().count("none") == 2  # listener 0, both excerpts
    # DCR: the model each trial presents against the open reference, and its vote.
    dcr = frames["dcr"]
    expected_dcr = [
        {
            "participant": f"P{p.pk}",
            "item": _item(s),
            "condition": label[next(c for c in s["entry"]["conditions"] if c != s["entry"]["reference"])],
        }
        | {"rating": s["answer"]["score"], "passed_checks": True}  # no gold questions: nobody failed one
        for p, sent in listeners
        for s in sent
        if s["entry"]["paradigm"] == "dcr"
    ]
    assert sorted(dcr.to_dict("records"), key=str) == sorted(expected_dcr, key=str) and len(dcr) == 3 * 2 * 2
    assert set(dcr["condition"].map(by_label)) == {"model:Model 1", "model:Model 2"}
    assert not dcr.duplicated(["participant", "item", "condition"]).any()
    ranking = frames["ranking"]
    assert len(ranking) == 3 * 2 * len(conditions)
    assert {r["condition"]: r["rank"] for r in ranking.to_dict("records")} == {
        c.label: RANK_ORDER.index(who[pk]) + 1 for pk, c in conditions.items()
    }

    # 2. The report: no MUSHRA ratings, each block analysed, with its table, figure and CSVs.
    report = reports.request_report(experiment=exp)
    assert reports.build_report(report_id=report.pk) == "done", Report.objects.get(pk=report.pk).error
    report.refresh_from_db()
    bundle = zipfile.ZipFile(Path(settings.MEDIA_ROOT) / report.file)
    names = set(bundle.namelist())
    stats = json.loads(bundle.read("stats.json"))
    assert stats["mushra"] is None and "no MUSHRA ratings" in stats["statement"]
    refused = [w["message"] for w in stats["warnings"] if w["code"] != "weak_anchor"]
    analysed = {"abx", "bs1116", "ab", "abn", "acr", "dcr", "ranking"}
    assert set(stats["paradigms"]) == analysed
    assert refused == []
    pooled = {r["comparison"]: r for r in stats["paradigms"]["abx"]["tables"]["pooled"]}
    assert len(pooled) == 2
    for comparison, r in pooled.items():
        model = _model(comparison, by_label)
        # Listeners 0-2 on both excerpts, and the partial listener's one trial (right) on its pair.
        first = partial_sent[0]["entry"]["conditions"]
        extra = int(any(who[c] == model for c in first))
        trials = 3 * 2 + extra
        correct = (4 if model == "model:Model 2" else 6) + extra
        assert (r["trials"], r["correct"]) == (trials, correct), comparison
        assert r["proportion"] == pytest.approx(correct / trials)
    bs_conditions = {r["condition"]: r for r in stats["paradigms"]["bs1116"]["tables"]["conditions"]}
    for lab, r in bs_conditions.items():
        expected = -1.1 if by_label[lab] == "model:Model 1" else -2.5
        assert r["mean_difference"] == pytest.approx(expected) and r["n"] == 3
    mos = {r["condition"]: r["mos"] for r in stats["paradigms"]["acr"]["tables"]["conditions"]}
    assert mos == dict(acr.groupby("condition")["rating"].mean())
    dmos = {r["condition"]: r["dmos"] for r in stats["paradigms"]["dcr"]["tables"]["conditions"]}
    assert dmos == dict(dcr.groupby("condition")["rating"].mean())
    assert {by_label[c]: v for c, v in dmos.items()} == {"model:Model 1": 4.0, "model:Model 2": 2.0}
    ranks = {r["condition"]: r["mean_rank"] for r in stats["paradigms"]["ranking"]["tables"]["conditions"]}
    assert {by_label[c]: v for c, v in ranks.items()} == {w: RANK_ORDER.index(w) + 1.0 for w in RANK_ORDER}
    scores = {r["condition"]: r for r in stats["paradigms"]["ab"]["tables"]["scores"]}
    m1 = next(r for c, r in scores.items() if by_label[c] == "model:Model 1")
    assert (m1["wins"], m1["losses"]) == (4, 2) and m1["score"] > 0
    page = bundle.read("report.html").decode()
    assert "id='no-mushra'" in page and "Friedman test over the models" not in page
    assert page.count("<figure>") == len(analysed) and "ABX discrimination (abx)" in page
    table = bundle.read("table.tex").decode()
    assert table.count("\\begin{table}") == len(analysed) and "\\toprule" in table
    for key in analysed:
        assert f"\\label{{tab:{key}}}" in table
    assert {f"figures/abx-proportion-correct.{ext}" for ext in ("svg", "pdf", "png")} <= names
    assert {"figures/bs1116-difference-grades.pdf", "figures/acr-mos.pdf"} <= names
    assert "figures/dcr-dmos.pdf" in names
    assert {"figures/ab-scores.pdf", "figures/ranking-mean-ranks.pdf"} <= names
    assert "fig:mushra-abx-proportion-correct" in bundle.read("figures.tex").decode()
    assert {"abx_pooled.csv", "bs1116_conditions.csv", "acr_conditions.csv", "ranking_pairwise.csv"} <= names
    pooled_csv = list(csv.DictReader(io.StringIO(bundle.read("abx_pooled.csv").decode())))
    assert {r["comparison"]: int(r["correct"]) for r in pooled_csv} == {c: r["correct"] for c, r in pooled.items()}
    assert "mushra.csv" not in " ".join(names)

    # 3. webMUSHRA's files: complete sessions (excluded ones flagged), in write.php's columns.
    files = interop.webmushra_csvs(exp)
    assert set(files) == {"paired_comparison.csv", "bs1116.csv", "lss.csv", "lms.csv"}
    # Each downloads on its own from the results page and through the API, as built here.
    client.force_login(exp.owner)
    page = client.get(reverse("researcher:reports", args=[exp.pk])).content.decode()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {accounts.api_token_for(user=exp.owner)}")
    for name, text in files.items():
        url = reverse("researcher:webmushra_file", args=[exp.pk, name])
        assert url in page
        for got in (client.get(url), api.get(reverse("api:webmushra_file", args=[exp.pk, name]))):
            assert got.status_code == 200 and got.content.decode() == text
            assert got["Content-Disposition"] == f'attachment; filename="{name}"'
    assert client.get(reverse("researcher:webmushra_file", args=[exp.pk, "secrets.csv"])).status_code == 404
    assert api.get(reverse("api:webmushra_file", args=[exp.pk, "secrets.csv"])).status_code == 404
    for name, text in files.items():
        assert bundle.read(f"webmushra/{name}").decode() == text
    complete = [*listeners, (excluded, excluded_sent)]
    ks = [0, 1, 2, 9]

    def rows_of(paradigm_set, make):
        out = []
        for (p, sent), k in zip(complete, ks, strict=True):
            for s in sent:
                if s["entry"]["paradigm"] in paradigm_set:
                    for values in make(s, k):
                        out.append(
                            ["export_test", str(30 + k), *values]
                            + [
                                interop.session_uuid(p),
                                "",
                                str(p.pk == excluded.pk),
                                "answered at random" if p.pk == excluded.pk else "",
                            ]
                        )
        return out

    item = _item

    def time(s):
        return str(s["body"]["telemetry"]["time_on_page_ms"])

    def comment(s):
        return "'" + s["body"]["comment"] if s["body"]["comment"] else ""

    def abx_row(s, k):
        cs = s["entry"]["conditions"]
        x, other = (cs[0], cs[1]) if s["entry"]["x"] == 0 else (cs[1], cs[0])
        right = s["answer"]["choice"] == ("a" if s["entry"]["x"] == 0 else "b")
        verdict = "correct" if right else "incorrect"
        return [[item(s), _name(conditions[x]), _name(conditions[other]), verdict, time(s), comment(s)]]

    def bs_row(s, k):
        keys = paradigms.signal_keys(s["entry"])
        ref = next(cid for cid in keys.values() if who[cid] == "hidden_reference")
        model = next(cid for cid in keys.values() if cid != ref)
        grade = {"model:Model 1": round(4.0 - 0.1 * k, 1), "model:Model 2": 2.5}[who[model]]
        return [[item(s), "reference", _name(conditions[model]), "5.0", str(grade), time(s), comment(s)]]

    def lss_row(s, k):
        cid = next(c for c in s["entry"]["conditions"] if c != s["entry"].get("reference"))
        return [[f"{s['entry']['paradigm']}-{item(s)}", str(s["answer"]["score"]), _name(conditions[cid]), time(s)]]

    def lms_row(s, k):
        cid = s["entry"]["conditions"][0]
        return [[item(s), f" {s['answer']['score']} ", _name(conditions[cid]), time(s)]]

    expected = {
        "paired_comparison.csv": rows_of({"abx"}, abx_row),
        "bs1116.csv": rows_of({"bs1116"}, bs_row),
        "lss.csv": rows_of({"acr", "dcr"}, lss_row),
    }
    # lms.csv: each participant's ACR votes grouped per excerpt (one page), excerpts in order.
    lms = rows_of({"acr"}, lms_row)
    order = {e.name: e.position for e in exp.excerpts.all()}
    uuids = {interop.session_uuid(p): p.pk for p, _ in complete}
    expected["lms.csv"] = sorted(lms, key=lambda r: (uuids[r[-4]], order[r[2]]))
    for name, columns in WEBMUSHRA.items():
        header, rows = _read(files[name])
        assert header == ["session_test_id", "age", *columns, *EXTRA], name
        got = [list(r.values()) for r in rows]
        assert got == expected[name], name
    # The pilot and the partial session are in no webMUSHRA file; the excluded one is, flagged.
    everyone = " ".join(files.values())
    assert interop.session_uuid(pilot) not in everyone and interop.session_uuid(partial) not in everyone
    _, pc = _read(files["paired_comparison.csv"])
    assert {r["excluded"] for r in pc if r["session_uuid"] == interop.session_uuid(excluded)} == {"True"}
    assert all(r["choice_answer"] == "incorrect" for r in pc if r["session_uuid"] == interop.session_uuid(excluded))


def test_a_paradigm_block_joins_the_mushra_report(client, rendered_experiment):
    from webmushra.services import experiments

    exp = experiments.open_experiment(
        experiment=rendered_experiment(
            n_excerpts=2,
            seconds=1.0,
            checkpoints=CHECKPOINTS,
            config=_config({"paradigm": "abx"}, {"paradigm": "mushra"}),
        )
    )
    for k in range(3):
        _listener(client, exp, k)
    frames = paradigm_data.paradigm_frames(exp)
    assert set(frames) == {"abx"} and len(frames["abx"]) == 3 * 2 * 2
    report = reports.request_report(experiment=exp)
    assert reports.build_report(report_id=report.pk) == "done", Report.objects.get(pk=report.pk).error
    report.refresh_from_db()
    bundle = zipfile.ZipFile(Path(settings.MEDIA_ROOT) / report.file)
    stats = json.loads(bundle.read("stats.json"))
    assert stats["participants"]["retained"] == 3 and "mushra" not in stats
    pooled = {r["comparison"]: (r["trials"], r["correct"]) for r in stats["paradigms"]["abx"]["tables"]["pooled"]}
    who = _who(exp)
    by_label = {c.label: who[c.pk] for c in Condition.objects.filter(experiment=exp)}
    assert {_model(c, by_label): v for c, v in pooled.items()} == {"model:Model 1": (6, 6), "model:Model 2": (6, 4)}
    page = bundle.read("report.html").decode()
    assert "Friedman test over the models" in page and "ABX discrimination (abx)" in page
    table = bundle.read("table.tex").decode()
    assert "tab:mushra-descriptives" in table and "tab:abx" in table
    names = set(bundle.namelist())
    assert {"figures/means.pdf", "figures/abx-proportion-correct.pdf", "abx_pooled.csv"} <= names
    assert {"webmushra/mushra.csv", "webmushra/paired_comparison.csv"} <= names
    header, rows = _read(bundle.read("webmushra/mushra.csv").decode())
    assert header[: 2 + 6] == ["session_test_id", "age", *interop.MUSHRA_COLUMNS_AFTER]
    assert len(rows) == 3 * 2 * len(who)
