"""webMUSHRA configs import and run; ratings export in webMUSHRA's mushra.csv layout."""

from __future__ import annotations

import csv
import io
import uuid
import zipfile

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.paths import fixture_path
from tests.trials import save_body
from tests.webmushra.conftest import render_inline
from tests.webmushra.test_builder import rate_all
from webmushra import errors, interop
from webmushra.models import Condition, Experiment, PrerenderedAudio, Rating
from webmushra.services import experiments, rendering, sessions

pytestmark = pytest.mark.django_db

CONFIGS = ("webmushra", "configs")


def files_under(root) -> list:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def kinds(exp) -> list[str]:
    return list(exp.conditions.values_list("kind", flat=True))


def run_one_participant(exp):
    """Render (in process), publish, and let one participant rate every trial and answer the questionnaire."""
    render_inline(exp)
    assert exp.status == "ready"
    exp = experiments.open_experiment(experiment=exp)
    p = sessions.start_participant(experiment=exp)
    p = sessions.give_consent(participant=p, agreed=True)
    if p.stage == "level":
        p = sessions.set_level(participant=p, gain_db=0.0)
    p = rate_all(p, lambda kind: 100 if kind == "hidden_reference" else 60)
    if p.stage == "questionnaire":
        answers = {q["name"]: (q["options"][0] if q["options"] else "30") for q in exp.config["questionnaire"]}
        p = sessions.submit_questionnaire(participant=p, answers=answers)
    assert p.stage == "completed"
    return exp, p


def test_default_config_imports_as_blocks_by_signal_set_and_runs(researcher):
    result = interop.import_directory(owner=researcher, config_path=fixture_path(*CONFIGS, "default.yaml"))
    first, second = result.experiments
    assert first.title == "webMUSHRA Example" and first.sample_rate == 48000
    # trial1 has both anchors; the two random pages have none: different signal sets.
    assert kinds(first) == ["hidden_reference", "anchor35", "anchor70", "prerendered", "prerendered", "prerendered"]
    assert list(first.excerpts.values_list("name", flat=True)) == ["trial1"]
    assert kinds(second) == ["hidden_reference"] + ["prerendered"] * 3
    assert list(second.excerpts.values_list("name", flat=True)) == ["trial_random_1", "trial_random_2"]
    assert second.config["block_of"] == first.pk and second.config["block"] == 2
    assert first.description == "Welcome to webMUSHRA!"
    assert first.config["webmushra"]["random_blocks"] == [["trial_random_1", "trial_random_2"]]
    assert first.config["questionnaire"] == [
        {"name": "email", "label": "eMail", "type": "text", "options": [], "required": True},
        {"name": "age", "label": "Age", "type": "number", "options": [], "required": True},
        {
            "name": "gender",
            "label": "Gender",
            "type": "select",
            "options": ["female", "male", "other"],
            "required": True,
        },
    ]
    assert PrerenderedAudio.objects.filter(condition__experiment=second).count() == 6
    assert any("Random blocks recorded" in n for n in result.report.notes)
    exp, p = run_one_participant(second)
    assert p.ratings.count() == 2 * 4


@pytest.mark.parametrize("name, signals", [("mushra_noloop.yaml", 12), ("mushra_nowav.yaml", 4)])
def test_single_page_configs_import_and_run(researcher, name, signals):
    result = interop.import_directory(owner=researcher, config_path=fixture_path(*CONFIGS, name))
    (exp,) = result.experiments
    assert exp.conditions.count() == signals
    assert exp.config["questionnaire"] == [] and exp.config["training"] is False
    exp, p = run_one_participant(exp)
    assert p.ratings.count() == signals
    assert sorted(p.ratings.values_list("score", flat=True))[-1] == 100


def complete_with_unsupported(tmp_path):
    """complete.yaml (every page of which imports) with two pages that do not: a page type this
    platform does not run and a likert page with 12 responses."""
    config = yaml.safe_load(fixture_path(*CONFIGS, "complete.yaml").read_text())
    twelve = [{"value": str(i), "label": f"Point {i}"} for i in range(12)]
    config["pages"][1:1] = [
        {"type": "spatial", "id": "where", "name": "Where", "content": "Where is it?"},
        {
            "type": "likert_single_stimulus",
            "id": "lss12",
            "name": "Likert",
            "content": "Twelve points.",
            "stimuli": {"C1": "configs/resources/audio/mono_c1.wav"},
            "response": twelve,
        },
    ]
    path = tmp_path / "configs" / "complete_plus.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_unsupported_pages_are_refused_by_name_and_nothing_is_created(researcher, settings, tmp_path):
    with pytest.raises(interop.ImportRefused) as err:
        interop.import_directory(
            owner=researcher, config_path=complete_with_unsupported(tmp_path), root=fixture_path("webmushra")
        )
    message = str(err.value)
    # bs1116, paired_comparison and likert pages import as blocks (test_interop_paradigms); a page
    # type with no counterpart and a likert list of 12 points are named with the reason.
    for expected in (
        "spatial page 'where'",
        "likert_single_stimulus page 'lss12'",
        "'lss12': a 12-point response list",
    ):
        assert expected in message
    assert "bs1116" not in message and "paired_comparison" not in message and "lms1" not in message
    assert len(err.value.report.unsupported) == 2
    assert Experiment.objects.count() == 0 and files_under(settings.MEDIA_ROOT / "uploads") == []


def test_partial_import_of_the_complete_config_lists_what_it_skipped(researcher, tmp_path):
    result = interop.import_directory(
        owner=researcher,
        config_path=complete_with_unsupported(tmp_path),
        root=fixture_path("webmushra"),
        allow_partial=True,
    )
    lines = result.report.lines()
    assert lines[0].startswith("Skipped unsupported pages: spatial page 'where'")
    exps = result.experiments
    # bs1116 + paired comparison + mushra (3 stimuli); the 2-point likert pages (3 stimuli);
    # mushra_nowav_noloop (3 + both anchors); the two 11-stimulus pages with one anchor: 13
    # signals, split into two blocks of at most 12; the 4-point likert pages (1 stimulus).
    assert [e.conditions.count() for e in exps] == [4, 4, 6, 8, 7, 2]
    assert all(e.conditions.count() <= 12 for e in exps)
    assert list(exps[3].excerpts.values_list("name", flat=True)) == ["mushra_randomize_false", "mushra_randomize_true"]
    assert any("13 signals per trial exceed the 12" in n for n in lines)
    assert exps[0].config["level_setting"] is True  # the volume page
    assert exps[0].config["webmushra"]["skipped"] == [
        {"type": "spatial", "id": "where"},
        {"type": "likert_single_stimulus", "id": "lss12"},
    ]
    assert {q["name"]: q["type"] for q in exps[0].config["questionnaire"]} == {
        "email": "text",
        "age": "number",
        "gender": "select",
        "feedback": "textarea",
    }
    assert exps[0].config["questionnaire"][1]["required"] is False
    assert exps[4].config["import_notes"] == lines
    exp, p = run_one_participant(exps[2])
    assert p.ratings.count() == 6


def test_a_missing_audio_file_names_it_and_leaves_nothing(researcher, tmp_path, settings):
    text = fixture_path(*CONFIGS, "mushra_nowav.yaml").read_text().replace("mono_c3.wav", "missing_take.wav")
    config = tmp_path / "configs" / "broken.yaml"
    config.parent.mkdir()
    config.write_text(text)
    with pytest.raises(
        errors.ServiceError, match="configs/resources/audio/missing_take.wav .page 'trial2'. was not found"
    ):
        interop.import_directory(owner=researcher, config_path=config, root=fixture_path("webmushra"))
    assert Experiment.objects.count() == 0 and Condition.objects.count() == 0
    assert files_under(settings.MEDIA_ROOT / "uploads") == []


def test_every_missing_audio_file_is_listed_at_once(researcher, tmp_path, settings):
    text = fixture_path(*CONFIGS, "mushra_nowav.yaml").read_text()
    text = text.replace("mono_c3.wav", "missing_take.wav").replace("mono_c1.wav", "gone.wav")
    config = tmp_path / "configs" / "broken.yaml"
    config.parent.mkdir()
    config.write_text(text)
    with pytest.raises(errors.ServiceError) as refused:
        interop.import_directory(owner=researcher, config_path=config, root=fixture_path("webmushra"))
    message = str(refused.value)
    assert "missing_take.wav" in message and "gone.wav" in message and "missing or unusable" in message
    assert Experiment.objects.count() == 0 and files_under(settings.MEDIA_ROOT / "uploads") == []


def test_mushra_csv_holds_complete_sessions_only(researcher):
    result = interop.import_directory(owner=researcher, config_path=fixture_path(*CONFIGS, "default.yaml"))
    exp, p = run_one_participant(result.experiments[0])
    other = sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=True)
    if other.stage == "level":
        other = sessions.set_level(participant=other, gain_db=0.0)
    body = save_body(other, 0)
    sessions.submit_trial(
        participant=other,
        index=0,
        idempotency_key=body["idempotency_key"],
        ratings=body["ratings"],
        telemetry=body["telemetry"],
    )
    assert Rating.objects.filter(participant=other).exists()
    rows = list(csv.DictReader(io.StringIO(interop.mushra_csv(exp))))
    assert rows and {r["session_uuid"] for r in rows} == {interop.session_uuid(p)}


def test_bad_yaml_is_refused_with_its_line(researcher):
    with pytest.raises(errors.ServiceError, match=r"broken.yaml: not valid YAML \(line 2\)"):
        interop.import_config(
            owner=researcher, text="pages:\n  - [unclosed", resolve=lambda p: None, source="broken.yaml"
        )
    with pytest.raises(errors.ServiceError, match="no 'pages' list"):
        interop.import_config(owner=researcher, text="testname: x", resolve=lambda p: None)


def audio_uploads():
    folder = fixture_path(*CONFIGS, "resources", "audio")
    return [SimpleUploadedFile(p.name, p.read_bytes(), content_type="audio/wav") for p in sorted(folder.glob("*.wav"))]


def test_import_page_with_files_and_with_a_zip(client, researcher, tmp_path):
    client.force_login(researcher)
    config = fixture_path(*CONFIGS, "mushra_nowav.yaml")
    r = client.post(
        reverse("researcher:import"),
        {"config": SimpleUploadedFile(config.name, config.read_bytes()), "audio": audio_uploads()},
    )
    exp = Experiment.objects.get()
    assert r.status_code == 302 and r.url == reverse("researcher:experiment", args=[exp.pk])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in audio_uploads():
            zf.writestr(f"resources/audio/{f.name}", f.read())
    r = client.post(
        reverse("researcher:import"),
        {
            "config": SimpleUploadedFile(config.name, config.read_bytes()),
            "audio": [SimpleUploadedFile("audio.zip", buf.getvalue())],
        },
    )
    assert r.status_code == 302 and Experiment.objects.count() == 2
    unsupported = complete_with_unsupported(tmp_path)
    r = client.post(
        reverse("researcher:import"),
        {"config": SimpleUploadedFile(unsupported.name, unsupported.read_bytes()), "audio": audio_uploads()},
    )
    html = r.content.decode()
    assert r.status_code == 200 and "likert_single_stimulus page “lss12”" in html and Experiment.objects.count() == 2
    # complete.yaml itself imports whole: six experiments.
    complete = fixture_path(*CONFIGS, "complete.yaml")
    r = client.post(
        reverse("researcher:import"),
        {"config": SimpleUploadedFile(complete.name, complete.read_bytes()), "audio": audio_uploads()},
    )
    assert r.status_code == 302 and Experiment.objects.count() == 8


def test_mushra_csv_has_webmushras_columns_and_names(researcher):
    import pandas as pd

    from evaluation.io import from_webmushra, is_webmushra

    result = interop.import_directory(owner=researcher, config_path=fixture_path(*CONFIGS, "default.yaml"))
    exp, p = run_one_participant(result.experiments[0])
    text = interop.mushra_csv(exp)
    rows = list(csv.reader(io.StringIO(text)))
    # write.php's order: the test id, the questionnaire's answers, then the session's UUID.
    assert rows[0] == [
        "session_test_id",
        "email",
        "age",
        "gender",
        "session_uuid",
        "trial_id",
        "rating_stimulus",
        "rating_score",
        "rating_time",
        "rating_comment",
        "flags",
        "excluded",
        "exclusion_reason",
    ]
    body = [dict(zip(rows[0], r)) for r in rows[1:]]
    assert len(body) == 6
    assert {r["rating_stimulus"] for r in body} == {"reference", "anchor35", "anchor70", "C1", "C2", "C3"}
    ref = next(r for r in body if r["rating_stimulus"] == "reference")
    assert ref == {
        "session_test_id": "default_example",
        "session_uuid": interop.session_uuid(p),
        "email": "30",
        "age": "30",
        "gender": "female",
        "trial_id": "trial1",
        "rating_stimulus": "reference",
        "rating_score": "100",
        "rating_time": "23456",
        "rating_comment": "",
        "flags": "",
        "excluded": "False",
        "exclusion_reason": "",
    }
    assert str(uuid.UUID(ref["session_uuid"])) == ref["session_uuid"]
    frame = pd.read_csv(io.StringIO(text), dtype=str)
    assert is_webmushra(frame) and set(from_webmushra(frame)["condition"]) >= {"reference", "C1"}


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_imported_config_renders_on_a_real_worker(researcher, start_worker):
    from tests.conftest import wait_for
    from webmushra.models import RenderJob

    (exp,) = interop.import_directory(
        owner=researcher, config_path=fixture_path(*CONFIGS, "mushra_nowav.yaml")
    ).experiments
    rendering.start_render(experiment=exp)
    start_worker()

    def ready():
        exp.refresh_from_db()
        failed = RenderJob.objects.filter(experiment=exp, status="failed").first()
        assert failed is None, failed.error
        return exp.status == "ready"

    wait_for(ready, timeout=120, what="the imported experiment to render")
    assert exp.stimuli.count() == 4
    exp = experiments.open_experiment(experiment=exp)
    p = sessions.start_participant(experiment=exp)
    p = sessions.give_consent(participant=p, agreed=True)
    p = rate_all(p, lambda kind: 100 if kind == "hidden_reference" else 50)
    assert p.ratings.count() == 4 and p.stage == "completed"
