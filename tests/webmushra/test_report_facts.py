"""The facts the platform passes to the report (recruitment, exclusions, questionnaire, headphone
check, stimuli, checkpoints' SHA-256, rules, version) and the methods paragraph written from them."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
import zipfile
from pathlib import Path

import pytest
from django.conf import settings

from evaluation.facts import check_facts
from tests.webmushra.test_builder import rate_all
from webmushra.models import Checkpoint, Experiment, Participant, Report
from webmushra.rules import player_rules
from webmushra.services import privacy, quality, report_facts, reports, sessions

pytestmark = pytest.mark.django_db

FAST = {"bootstrap_resamples": 200, "permutation_resamples": 500, "correlation_resamples": 200}
QUESTIONS = [
    {"name": "age", "label": "Age", "type": "number", "options": [], "required": True},
    {"name": "experience", "label": "Experience", "type": "select", "options": ["none", "musician"], "required": True},
    {"name": "comment", "label": "Comments", "type": "textarea", "options": [], "required": False},
]


def _listener(exp, age: str, experience: str, comment: str = "") -> Participant:
    p = sessions.set_level(
        participant=sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=True),
        gain_db=0.0,
    )
    rate_all(p, lambda kind: {"hidden_reference": 100, "anchor35": 15, "anchor70": 45}.get(kind, 70))
    p.refresh_from_db()
    return sessions.submit_questionnaire(
        participant=p, answers={"age": age, "experience": experience, "comment": comment}
    )


def test_report_facts_follow_the_database_and_reach_the_methods_paragraph(participant_at_trials) -> None:
    config = {"training": False, "questionnaire": QUESTIONS, "analysis": FAST, "rules": {"require_one_100": False}}
    exp, first = participant_at_trials(n_excerpts=2, seconds=1.0, config=config)
    rate_all(first, lambda kind: {"hidden_reference": 100, "anchor35": 10, "anchor70": 40}.get(kind, 75))
    first.refresh_from_db()
    sessions.submit_questionnaire(
        participant=first, answers={"age": "31", "experience": "musician", "comment": "Alice Smith, room 4"}
    )
    _listener(exp, "25", "none")
    asleep = _listener(exp, "60", "none")
    quality.exclude_participant(participant=asleep, reason="fell asleep during trial 2")
    sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=False)
    screened = sessions.start_participant(experiment=exp)
    sessions.start_participant(experiment=exp)  # still at the consent page
    sessions.start_participant(experiment=exp, pilot=True)
    privacy.withdraw_participant(participant=sessions.start_participant(experiment=exp))
    # The headphone check's outcome as the screening page stores it (enabled afterwards: the
    # listeners above went through the flow without it).
    Experiment.objects.filter(pk=exp.pk).update(config={**exp.config, "headphone_check": {"enabled": True}})
    Participant.objects.filter(pk=first.pk).update(screening={"passed": True})
    Participant.objects.filter(pk=screened.pk).update(stage=Participant.Stage.SCREENED_OUT, screening={"passed": False})
    exp.refresh_from_db()

    facts = report_facts.report_facts(exp)
    assert check_facts(facts) == facts
    assert facts["participants"] == {
        "recruited": 6,
        "completed": 3,
        "screened_out": 1,
        "declined": 1,
        "incomplete": 1,
        "withdrawn": 1,
        "pilot": 1,
        "excluded": [{"participant": f"P{asleep.pk}", "reason": "fell asleep during trial 2"}],
    }
    # Completed and not excluded: the first two listeners; free text is never summarised.
    assert facts["demographics"] == [
        {"question": "Age", "answered": 2, "median": 28.0, "min": 25.0, "max": 31.0},
        {"question": "Experience", "answered": 2, "counts": {"none": 1, "musician": 1}},
    ]
    assert "Alice" not in json.dumps(facts)
    assert facts["headphone_check"]["passed"] == 1 and facts["headphone_check"]["failed"] == 1
    tests = list(exp.excerpts.filter(is_training=False))
    assert facts["excerpts"] == {"count": 2, "durations_s": [t.frames / t.sample_rate for t in tests], "training": 0}
    assert facts["sample_rate_hz"] == 48000 and facts["loudness"]["target_lufs"] is None
    assert sorted(a["cutoff_hz"] for a in facts["anchors"]) == [3500.0, 7000.0]
    checkpoint = Checkpoint.objects.get(experiment=exp)
    digest = hashlib.sha256(Path(checkpoint.file.path).read_bytes()).hexdigest()
    assert [m["sha256"] for m in facts["models"]] == [digest]
    assert facts["rules"] == player_rules(exp) and facts["rules"]["require_one_100"] is False
    project = tomllib.loads((Path(settings.BASE_DIR) / "pyproject.toml").read_text())["project"]
    assert facts["platform"] == f"{project['name']} {project['version']}"

    report = reports.request_report(experiment=exp)
    assert reports.build_report(report_id=report.pk) == "done", Report.objects.get(pk=report.pk).error
    report.refresh_from_db()
    bundle = zipfile.ZipFile(Path(settings.MEDIA_ROOT) / report.file)
    names = set(bundle.namelist())
    assert {"methods.tex", "figures.tex", "paper.tex", "figures/means.svg", "figures/means.pdf"} <= names
    page = bundle.read("report.html").decode()
    methods = re.search(r"<p class='methods'>(.*?)</p>", page, re.S).group(1)
    assert "6 participants started the test; 3 completed it, 1 was screened out by the headphone check" in methods
    assert f"P{asleep.pk}: fell asleep during trial 2" in methods and digest in methods
    assert "Age (n = 2): median 28, range 25–31" in methods and "sample rate of 48 kHz" in methods
    assert json.loads(bundle.read("provenance.json"))["experiment"]["models"][0]["sha256"] == digest
