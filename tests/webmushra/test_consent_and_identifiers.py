"""What participants are told and what researchers are warned of: the default consent text names
everything the participant pages collect, and a webMUSHRA import whose questionnaire asks for an
e-mail address (or another personal identifier) says so."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils.html import strip_tags

from tests.paths import fixture_path
from webmushra import interop
from webmushra.models import Experiment
from webmushra.services import sessions

pytestmark = pytest.mark.django_db

CONFIGS = ("webmushra", "configs")


def test_the_default_consent_text_names_what_the_pages_collect(client, open_experiment):
    exp = open_experiment(n_excerpts=1, seconds=1.0, config={"training": False})
    assert exp.consent_text == ""
    p = sessions.start_participant(experiment=exp)
    html = client.get(reverse("participant:consent", args=[p.token])).content.decode()
    text = " ".join(strip_tags(html).split())
    # What is stored: listening log and slider moves (trial telemetry), comments, the headphone
    # check and level, the browser's user agent, screen and AudioContext facts, the questionnaire,
    # the Prolific ID; and the rights that go with it.
    for words in (
        "what you played and for how long",
        "how you moved the sliders",
        "comments",
        "headphone check and volume setting",
        "browser's name and version",
        "screen and window size",
        "audio settings",
        "questionnaire",
        "Prolific ID",
        "stop at any time",
        "deleted",
    ):
        assert words in text.replace("&#x27;", "'"), words
    # Nothing the pages store is promised away: the Prolific ID and device data are not anonymous.
    assert "anonymous" not in text.lower()


def test_importing_a_questionnaire_that_asks_for_an_email_warns(researcher):
    result = interop.import_directory(owner=researcher, config_path=fixture_path(*CONFIGS, "default.yaml"))
    (warning,) = result.report.warnings
    assert warning.startswith("Questionnaire question 'email' ('eMail') asks for an e-mail address")
    assert warning in result.report.lines()
    assert all(warning in e.config["import_notes"] for e in result.experiments)


def test_a_config_without_identifying_questions_imports_without_the_warning(researcher, tmp_path):
    source = fixture_path(*CONFIGS, "default.yaml")
    text = source.read_text()
    assert re.search(r"label: eMail\n\s+name: email\n", text)
    config = tmp_path / "configs" / "no_email.yaml"
    config.parent.mkdir()
    config.write_text(re.sub(r"\s+- type: text\n\s+label: eMail\n\s+name: email\n", "\n", text))
    result = interop.import_directory(owner=researcher, config_path=config, root=fixture_path("webmushra"))
    assert result.report.warnings == []
    assert [q["name"] for q in result.experiments[0].config["questionnaire"]] == ["age", "gender"]


@pytest.mark.parametrize(
    "question, what",
    [
        ({"name": "phone", "label": "Your phone"}, "a telephone number"),
        ({"name": "q1", "label": "Full name"}, "a name"),
        ({"name": "mail", "label": "Contact"}, "an e-mail address"),
        ({"name": "dob", "label": "Date of birth"}, "a date of birth"),
        ({"name": "age", "label": "Age"}, None),
        ({"name": "username_hint", "label": "Headphone model"}, None),
    ],
)
def test_which_questions_count_as_identifying(question, what):
    found = interop.personal_data_warnings([question])
    assert (found[0].split(" asks for ")[1].split(":")[0] if found else None) == what


def test_the_import_page_shows_the_warning(client, researcher):
    client.force_login(researcher)
    config = fixture_path(*CONFIGS, "default.yaml")
    audio = [
        SimpleUploadedFile(p.name, p.read_bytes(), content_type="audio/wav")
        for p in sorted(fixture_path(*CONFIGS, "resources", "audio").glob("*.wav"))
    ]
    r = client.post(
        reverse("researcher:import"),
        {"config": SimpleUploadedFile(config.name, config.read_bytes()), "audio": audio},
        follow=True,
    )
    assert r.status_code == 200 and Experiment.objects.count() == 2
    shown = [(m.level_tag, str(m)) for m in r.context["messages"]]
    assert any(tag == "warning" and "asks for an e-mail address" in text for tag, text in shown), shown
    assert "asks for an e-mail address" in r.content.decode()
