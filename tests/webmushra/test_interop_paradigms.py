"""webMUSHRA's bs1116, paired_comparison and likert pages import as paradigm blocks
(webmushra.paradigms): the blocks, conditions, excerpts and trials are checked against the config
page by page, and a participant runs the imported blocks over HTTP."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import soundfile as sf
import yaml
from django.urls import reverse

from tests.paths import fixture_path
from tests.trials import answer_body, save_body
from tests.webmushra.conftest import render_inline
from tests.webmushra.test_training_resume import trial_json
from webmushra import interop, paradigms
from webmushra.models import Condition, Experiment, Participant, PrerenderedAudio, Trial, TrialResponse
from webmushra.services import experiments, sessions

pytestmark = pytest.mark.django_db

CONFIGS = ("webmushra", "configs")
#: complete.yaml's pages and the paradigm each becomes (likert pages there have 2 or 4 points).
COMPLETE_BLOCKS = [("bs1116_nowav", "bs1116"), ("AB_noloop", "ab"), ("ABN", "abn"), ("mushra", "mushra")]
FIVE = [{"value": f"v{i}", "label": f"Point {i}"} for i in range(1, 6)]


def complete_pages() -> dict[str, dict]:
    config = yaml.safe_load(fixture_path(*CONFIGS, "complete.yaml").read_text())
    return {p.id: p.data for p in interop.flatten_pages(config["pages"])}


def samples(path) -> np.ndarray:
    data, _rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data


def write_config(tmp_path, pages: list[dict], name: str = "likert.yaml"):
    config = tmp_path / "configs" / name
    config.parent.mkdir(exist_ok=True)
    config.write_text(yaml.safe_dump({"testname": "Likert", "testId": "likert", "pages": pages}, sort_keys=False))
    return config


def likert_page(kind: str, page_id: str, stimuli: dict[str, str], response: list | None = None) -> dict:
    return {
        "type": kind,
        "id": page_id,
        "name": "Likert",
        "content": f"Rate {page_id}.",
        "stimuli": {k: f"configs/resources/audio/{v}" for k, v in stimuli.items()},
        "response": [dict(r) for r in (FIVE if response is None else response)],  # no YAML aliases
    }


def labels_of(exp) -> dict[int, str]:
    """Condition id -> the name webMUSHRA gives the signal (the stimulus key, or "reference")."""
    return {c.pk: interop.stimulus_name(c) for c in Condition.objects.filter(experiment=exp)}


def trials_by_block(exp) -> dict[int, list[tuple[str, str, tuple[str, ...]]]]:
    """block -> [(paradigm, excerpt, condition labels compared)] of the test trials."""
    labels = labels_of(exp)
    out: dict[int, list] = {}
    for t in Trial.objects.filter(experiment=exp, is_catch=False, repeat_of=None).select_related("excerpt"):
        out.setdefault(t.block, []).append((t.paradigm, t.excerpt.name, tuple(labels[c] for c in t.design)))
    return {b: sorted(rows) for b, rows in out.items()}


def expected_designs(paradigm: str, keys: list[str], with_reference_label: str) -> list[tuple[str, ...]]:
    if paradigm == "mushra":
        return [()]
    if paradigm == "bs1116":
        return [(with_reference_label, k) for k in keys]
    if paradigm in ("ab", "abn"):
        return list(itertools.combinations([with_reference_label, *keys], 2))
    if paradigm == "acr":
        return [(label,) for label in [with_reference_label, *keys]]
    raise AssertionError(paradigm)


def run_over_http(client, exp) -> Participant:
    """One participant through every block of ``exp``: MUSHRA scores, a grade, choice or score per trial."""
    p = sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=True)
    if p.stage == "level":
        p = sessions.set_level(participant=p, gain_db=0.0)
    for index, entry in enumerate(Participant.objects.get(pk=p.pk).plan):
        paradigm = paradigms.paradigm_of(entry)
        if paradigm == "mushra":
            body = save_body(p, index, client=client)
        else:
            answer = {
                "bs1116": {"grades": {"b": 4.0, "c": 2.5}},
                "ab": {"choice": "a"},
                "abn": {"choice": "none"},
                "acr": {"score": 4},
            }[paradigm]
            body = answer_body(p, index, answer, client=client)
        url = reverse("participant:trial", args=[p.token, index + 1])
        r = client.post(url, json.dumps(body), content_type="application/json")
        assert r.status_code == 200, (paradigm, r.content)
    p.refresh_from_db()
    if p.stage == "questionnaire":
        answers = {q["name"]: (q["options"][0] if q["options"] else "30") for q in exp.config["questionnaire"]}
        p = sessions.submit_questionnaire(participant=p, answers=answers)
    assert p.stage == "completed"
    return p


def test_complete_config_pages_become_blocks_that_match_the_config_page_by_page(client, researcher):
    pages = complete_pages()
    result = interop.import_directory(
        owner=researcher, config_path=fixture_path(*CONFIGS, "complete.yaml"), allow_partial=True
    )
    exps = result.experiments
    # The mushra-only experiments are as before: the bs1116 and paired comparison pages joined the first one;
    # the likert pages (other audio: no reference) are experiments of their own, one per stimulus set.
    assert [e.conditions.count() for e in exps] == [4, 4, 6, 8, 7, 2]
    assert all("blocks" not in e.config for e in exps[2:5])
    exp = exps[0]
    # One block per page type, in page order; the four pages present the same audio: one excerpt.
    assert [(b["paradigm"], b["with_reference"]) for b in paradigms.blocks(exp.config)] == [
        ("bs1116", False),
        ("ab", True),
        ("abn", True),
        ("mushra", False),
    ]
    for block, (page_id, _p) in zip(exp.config["blocks"][:3], COMPLETE_BLOCKS, strict=False):
        assert block["instructions"] == pages[page_id]["content"].strip()
    assert exp.config["webmushra"]["page_map"] == [
        {"page": page_id, "type": pages[page_id]["type"], "paradigm": paradigm, "excerpt": "bs1116_nowav"}
        for page_id, paradigm in COMPLETE_BLOCKS
    ]
    for page_id, _p in COMPLETE_BLOCKS:  # the page map's promise: every page has this audio
        assert pages[page_id]["reference"] == pages["bs1116_nowav"]["reference"]
        assert pages[page_id]["stimuli"] == pages["bs1116_nowav"]["stimuli"]
    keys = list(pages["bs1116_nowav"]["stimuli"])
    assert [(c.kind, interop.stimulus_name(c)) for c in exp.conditions.order_by("position")] == [
        ("hidden_reference", "reference"),
        *[("prerendered", k) for k in keys],
    ]
    (excerpt,) = exp.excerpts.all()
    audio = fixture_path("webmushra")
    assert np.array_equal(samples(excerpt.reference_file.path), samples(audio / pages["bs1116_nowav"]["reference"]))
    for row in PrerenderedAudio.objects.filter(excerpt=excerpt).select_related("condition"):
        wanted = samples(audio / pages["bs1116_nowav"]["stimuli"][row.condition.label])
        assert np.array_equal(samples(row.file.path), wanted), row.condition.label

    render_inline(exp)
    exp = experiments.open_experiment(experiment=exp)
    got = trials_by_block(exp)
    want = {
        number: sorted((paradigm, "bs1116_nowav", design) for design in expected_designs(paradigm, keys, "reference"))
        for number, (_page, paradigm) in enumerate(COMPLETE_BLOCKS)
    }
    assert got == want
    assert [len(rows) for _b, rows in sorted(got.items())] == [3, 6, 6, 1]

    p = run_over_http(client, exp)
    stored = {r.trial_id: r.answer for r in TrialResponse.objects.filter(participant=p)}
    trials = {t.pk: t for t in Trial.objects.filter(experiment=exp)}
    kinds = dict(Condition.objects.filter(experiment=exp).values_list("pk", "kind"))
    for trial_id, answer in stored.items():
        t = trials[trial_id]
        if t.paradigm == "bs1116":
            assert [answer["reference"], answer["condition"]] == t.design
            assert kinds[answer["reference"]] == "hidden_reference"
            assert {answer["grade_reference"], answer["grade_condition"]} == {4.0, 2.5}
        elif t.paradigm in ("ab", "abn"):
            assert sorted([answer["a"], answer["b"]]) == sorted(t.design)
            assert answer["choice"] == ("none" if t.paradigm == "abn" else "A")
    answered = sorted(trials[i].paradigm for i in stored)
    assert answered == sorted(["bs1116"] * 3 + ["ab"] * 6 + ["abn"] * 6 + ["mushra"])
    assert p.ratings.count() == 4  # the MUSHRA page: every signal rated

    # What differs from webMUSHRA's pages is in the report; every page of complete.yaml is imported.
    lines = result.report.lines()
    assert result.report.unsupported == []
    text = "\n".join(lines)
    assert "asks which of A and B is the reference" in text and "6 pairs per excerpt" in text
    assert 'not "I don\'t know"' in text
    assert "grades are kept to one decimal" in text
    assert "Blocks run in page order" in text
    assert exp.config["import_notes"] == lines


def test_complete_configs_two_and_four_point_likert_pages_become_acr_blocks_with_their_own_scales(client, researcher):
    """complete.yaml's likert pages: lms1 / lss1 (2 points, C1-C3) and lms2 / lss2 (4 points, C1)."""
    pages = complete_pages()
    result = interop.import_directory(owner=researcher, config_path=fixture_path(*CONFIGS, "complete.yaml"))
    exps = result.experiments
    labels = {pid: [r["label"] for r in pages[pid]["response"]] for pid in ("lms1", "lms2", "lss1", "lss2")}
    assert labels["lms1"] == labels["lss1"] == ["Not at all", "Not a lot"]
    assert labels["lms2"] == labels["lss2"] == ["Not at all", "Not a lot", "A bit", "Much"]
    two, four = exps[1], exps[5]
    assert two.config["blocks"] == [
        paradigms.BLOCK_DEFAULTS
        | {"paradigm": "acr", "instructions": pages["lms1"]["content"].strip(), "scale": labels["lms1"]}
    ]
    assert four.config["blocks"] == [
        paradigms.BLOCK_DEFAULTS
        | {"paradigm": "acr", "instructions": pages["lms2"]["content"].strip(), "scale": labels["lms2"]}
    ]
    assert [m["page"] for m in two.config["webmushra"]["page_map"]] == ["lms1", "lss1"]
    assert [m["page"] for m in four.config["webmushra"]["page_map"]] == ["lms2", "lss2"]
    text = "\n".join(result.report.lines())
    assert "the 4 responses (Not at all, Not a lot, A bit, Much) are ACR scores 1 to 4 in list order" in text
    assert "shown with the page's own labels" in text

    # A participant sees the page's four labels and answers on them; a fifth category is refused.
    render_inline(four)
    four = experiments.open_experiment(experiment=four)
    p = sessions.give_consent(participant=sessions.start_participant(experiment=four), agreed=True)
    if p.stage == "level":
        p = sessions.set_level(participant=p, gain_db=0.0)
    data = trial_json(client, p, 1)
    assert [s["label"] for s in data["scale"]] == labels["lms2"]
    assert [s["value"] for s in data["scale"]] == [1, 2, 3, 4]
    url = reverse("participant:trial", args=[p.token, 1])
    body = answer_body(p, 0, {"score": 5}, client=client)
    refused = client.post(url, json.dumps(body), content_type="application/json")
    assert refused.status_code == 400 and "1 to 4" in refused.json()["error"]
    assert not TrialResponse.objects.filter(participant=p).exists()
    p = run_over_http(client, four)
    answers = list(TrialResponse.objects.filter(participant=p).values_list("answer", flat=True))
    # Two excerpts (lms2, lss2), each rated for the reference (C1 stands in) and C1.
    assert [a["score"] for a in answers] == [4] * 4


def test_likert_single_and_multi_stimulus_pages_become_one_acr_block(client, researcher, tmp_path):
    stimuli = {"C1": "mono_c1.wav", "C2": "mono_c2.wav", "C3": "mono_c3.wav"}
    rotated = {"C1": "mono_c2.wav", "C2": "mono_c3.wav", "C3": "mono_c1.wav"}
    config = write_config(
        tmp_path,
        [
            {"type": "generic", "id": "hello", "name": "Hello", "content": "Welcome."},
            likert_page("likert_single_stimulus", "lss5", stimuli),
            likert_page("likert_multi_stimulus", "lms5", rotated),
            {"type": "finish", "name": "Thanks", "content": "Thank you."},
        ],
    )
    result = interop.import_directory(owner=researcher, config_path=config, root=fixture_path("webmushra"))
    (exp,) = result.experiments
    assert exp.config["blocks"] == [
        paradigms.BLOCK_DEFAULTS
        | {"paradigm": "acr", "instructions": "Rate lss5.", "scale": [f"Point {i}" for i in range(1, 6)]}
    ]
    assert exp.config["webmushra"]["page_map"] == [
        {"page": "lss5", "type": "likert_single_stimulus", "paradigm": "acr", "excerpt": "lss5"},
        {"page": "lms5", "type": "likert_multi_stimulus", "paradigm": "acr", "excerpt": "lms5"},
    ]
    assert [(c.kind, interop.stimulus_name(c)) for c in exp.conditions.order_by("position")] == [
        ("hidden_reference", "reference"),
        ("prerendered", "C1"),
        ("prerendered", "C2"),
        ("prerendered", "C3"),
    ]
    audio = fixture_path(*CONFIGS, "resources", "audio")
    for excerpt, files in (("lss5", stimuli), ("lms5", rotated)):
        e = exp.excerpts.get(name=excerpt)
        # No reference on a likert page: its first stimulus is the excerpt's reference.
        assert np.array_equal(samples(e.reference_file.path), samples(audio / files["C1"]))
        for row in PrerenderedAudio.objects.filter(excerpt=e).select_related("condition"):
            assert np.array_equal(samples(row.file.path), samples(audio / files[row.condition.label]))
    render_inline(exp)
    exp = experiments.open_experiment(experiment=exp)
    designs = expected_designs("acr", ["C1", "C2", "C3"], "reference")
    assert trials_by_block(exp) == {0: sorted(("acr", e, d) for e in ("lss5", "lms5") for d in designs)}
    p = run_over_http(client, exp)
    answers = list(TrialResponse.objects.filter(participant=p).values_list("answer", flat=True))
    assert len(answers) == 8 and {a["score"] for a in answers} == {4} and {a["paradigm"] for a in answers} == {"acr"}
    text = "\n".join(result.report.lines())
    assert "ACR scores 1 to 5 in list order" in text and "Point 1, Point 2, Point 3, Point 4, Point 5" in text
    assert "shown with the page's own labels" in text
    assert "likert_multi_stimulus page(s) 'lms5': webMUSHRA rates the stimuli side by side" in text
    assert "its first stimulus (C1) is the excerpt's reference" in text
    assert result.report.unsupported == []


def test_a_likert_page_outside_2_to_11_points_is_refused_by_name_and_reason(researcher, tmp_path):
    twelve = [{"value": str(i), "label": str(i)} for i in range(12)]
    twice = [{"value": "a", "label": "Same"}, {"value": "b", "label": "same"}]
    p800 = [{"value": str(v), "label": str(label)} for v, label in paradigms.ACR_SCALE]
    stimuli = {"C1": "mono_c1.wav", "C2": "mono_c2.wav"}
    config = write_config(
        tmp_path,
        [
            likert_page("likert_single_stimulus", "twelve", stimuli, twelve),
            likert_page("likert_single_stimulus", "twice", stimuli, twice),
            likert_page("likert_single_stimulus", "p800", stimuli, p800),
        ],
    )
    with pytest.raises(interop.ImportRefused) as refused:
        interop.import_directory(owner=researcher, config_path=config, root=fixture_path("webmushra"))
    message = str(refused.value)
    assert "likert_single_stimulus page 'twelve'" in message
    assert "'twelve': a 12-point response list; ACR blocks take lists of 2 to 11 points" in message
    assert "'twice': two responses with the same label" in message
    assert "'p800'" not in message and Experiment.objects.count() == 0
    result = interop.import_directory(
        owner=researcher, config_path=config, root=fixture_path("webmushra"), allow_partial=True
    )
    (exp,) = result.experiments
    assert list(exp.excerpts.values_list("name", flat=True)) == ["p800"]
    # A list with ITU-T P.800's labels is P.800's scale: the block keeps no labels of its own.
    assert exp.config["blocks"][0]["scale"] == []
    assert exp.config["webmushra"]["skipped"] == [
        {"type": "likert_single_stimulus", "id": "twelve"},
        {"type": "likert_single_stimulus", "id": "twice"},
    ]
    assert result.report.lines()[:3] == [
        "Skipped unsupported pages: likert_single_stimulus page 'twelve', likert_single_stimulus page 'twice'.",
        "likert_single_stimulus page 'twelve': a 12-point response list; ACR blocks take lists of 2 to 11 points, "
        "so this Likert scale has no counterpart here.",
        "likert_single_stimulus page 'twice': two responses with the same label.",
    ]


def test_pages_with_other_audio_become_linked_experiments_not_crossed_blocks(researcher, tmp_path):
    pages = complete_pages()
    bs1116 = dict(pages["bs1116_nowav"])
    mushra = dict(pages["mushra_nowav_noloop"], createAnchor35=False, createAnchor70=False)  # other reference
    config = write_config(tmp_path, [bs1116, mushra], "mixed.yaml")
    result = interop.import_directory(owner=researcher, config_path=config, root=fixture_path("webmushra"))
    first, second = result.experiments
    assert first.config["blocks"][0]["paradigm"] == "bs1116" and len(first.config["blocks"]) == 1
    assert "blocks" not in second.config and second.config["block_of"] == first.pk
    assert list(first.excerpts.values_list("name", flat=True)) == ["bs1116_nowav"]
    assert list(second.excerpts.values_list("name", flat=True)) == ["mushra_nowav_noloop"]
    assert any("same stimulus names but other audio" in n for n in result.report.notes)
