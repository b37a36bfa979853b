"""What the platform knows of an experiment that its ratings do not say, for the report's methods
paragraph: recruitment and exclusions with reasons, the questionnaire in brief, the headphone
check, the excerpts, sample rate, loudness alignment, anchors, the models' checkpoints with their
SHA-256, the rules enforced and the platform's version.

Plain data in the layout ``evaluation.facts.SCHEMA`` checks (documented in docs/statistics.md,
"Experiment facts"). Pilot sessions are counted apart and described nowhere else; free-text
answers are never summarised (they may name people).
"""

from __future__ import annotations

import statistics
import tomllib
from functools import lru_cache
from importlib import metadata
from typing import Any

from django.conf import settings

from ..models import ConditionKind, DataDeletion, Experiment, Participant
from ..rules import headphone_settings, player_rules, questionnaire_fields

#: The project's distribution name (pyproject.toml).
DISTRIBUTION = "listening-tests"
LOUDNESS_METHOD = "ITU-R BS.1770-4"


@lru_cache(maxsize=1)
def platform_version() -> str:
    """``listening-tests <version>``: from the checkout's pyproject.toml, else the installed package."""
    try:
        with open(settings.BASE_DIR / "pyproject.toml", "rb") as handle:
            project = tomllib.load(handle)["project"]
        return f"{project['name']} {project['version']}"
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        pass
    try:
        return f"{DISTRIBUTION} {metadata.version(DISTRIBUTION)}"
    except metadata.PackageNotFoundError:
        return DISTRIBUTION


def report_facts(experiment: Experiment) -> dict[str, Any]:
    """The experiment's facts for ``evaluation.report.build_report(..., facts=...)``."""
    real = experiment.participants.filter(is_pilot=False)
    stages = list(real.values_list("stage", flat=True))
    finished = {Participant.Stage.COMPLETED, Participant.Stage.SCREENED_OUT, Participant.Stage.DECLINED}
    withdrawn = sum(
        int((d.counts or {}).get("sessions", 1))
        for d in experiment.data_deletions.filter(kind=DataDeletion.Kind.WITHDRAWAL)
    )
    excluded = [
        {"participant": f"P{pk}", "reason": reason or ""}
        for pk, reason in real.filter(excluded_at__isnull=False).order_by("pk").values_list("pk", "exclusion_reason")
    ]
    excerpts = list(experiment.excerpts.all())
    tests = [e for e in excerpts if not e.is_training]
    conditions = list(experiment.conditions.select_related("checkpoint"))
    return {
        "platform": platform_version(),
        "participants": {
            "recruited": len(stages),
            "completed": stages.count(Participant.Stage.COMPLETED),
            "screened_out": stages.count(Participant.Stage.SCREENED_OUT),
            "declined": stages.count(Participant.Stage.DECLINED),
            "incomplete": sum(1 for s in stages if s not in finished),
            "withdrawn": withdrawn,
            "pilot": experiment.participants.filter(is_pilot=True).count(),
            "excluded": excluded,
        },
        "demographics": demographics(experiment),
        "headphone_check": headphone_facts(experiment),
        "excerpts": {
            "count": len(tests),
            "durations_s": [round(e.duration_s, 3) for e in tests],
            "training": len(excerpts) - len(tests),
        },
        "sample_rate_hz": int(experiment.sample_rate),
        "loudness": {"target_lufs": experiment.loudness_target_lufs, "method": LOUDNESS_METHOD},
        "anchors": [
            {"label": c.label, "cutoff_hz": float(ConditionKind.anchor_cutoff_hz(c.kind) or 0.0)}
            for c in conditions
            if ConditionKind.anchor_cutoff_hz(c.kind) is not None
        ],
        "models": [_model(c) for c in conditions if c.kind in (ConditionKind.MODEL, ConditionKind.PRERENDERED)],
        "rules": dict(player_rules(experiment)),
    }


def _model(condition: Any) -> dict[str, Any]:
    checkpoint = condition.checkpoint
    if checkpoint is None:
        return {"label": condition.label, "sha256": None}
    return {
        "label": condition.label,
        "checkpoint": checkpoint.name,
        "format": checkpoint.format,
        "architecture": checkpoint.architecture,
        "sha256": checkpoint.sha256.lower(),
    }


def headphone_facts(experiment: Experiment) -> dict[str, Any]:
    """The headphone check's settings and how many real participants passed and failed it."""
    cfg = headphone_settings(experiment)
    if not cfg.get("enabled"):
        return {"enabled": False}
    results = [
        s.get("passed")
        for s in experiment.participants.filter(is_pilot=False).values_list("screening", flat=True)
        if isinstance(s, dict) and "passed" in s
    ]
    return {
        "enabled": True,
        "tests": [str(t) for t in cfg.get("tests") or []],
        "trials_per_test": int(cfg["trials_per_test"]),
        "pass_threshold": float(cfg["pass_threshold"]),
        "require": str(cfg.get("require", "all")),
        "passed": sum(1 for r in results if r is True),
        "failed": sum(1 for r in results if r is False),
    }


def demographics(experiment: Experiment) -> list[dict[str, Any]]:
    """The questionnaire's number and choice questions over the participants who completed the
    test and were not excluded: median and range of the numbers, counts of each option."""
    answers = list(
        experiment.participants.filter(
            is_pilot=False, stage=Participant.Stage.COMPLETED, excluded_at__isnull=True
        ).values_list("questionnaire", flat=True)
    )
    out: list[dict[str, Any]] = []
    for field in questionnaire_fields(experiment):
        given = [str(a.get(field["name"], "")).strip() for a in answers if isinstance(a, dict)]
        given = [g for g in given if g]
        label = str(field.get("label") or field["name"])
        if field.get("type") == "number":
            numbers = [float(g) for g in given if _is_number(g)]
            if numbers:
                out.append(
                    {
                        "question": label,
                        "answered": len(numbers),
                        "median": statistics.median(numbers),
                        "min": min(numbers),
                        "max": max(numbers),
                    }
                )
        elif field.get("type") == "select" and given:
            options = [str(o) for o in field.get("options") or []]
            counts = {o: given.count(o) for o in options if given.count(o)}
            others = len(given) - sum(counts.values())
            if others:
                counts["other"] = others
            out.append({"question": label, "answered": len(given), "counts": counts})
    return out


def _is_number(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return value == value and abs(value) != float("inf")
