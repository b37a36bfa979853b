"""Reads: tables and summaries built from the database (no writes here)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from typing import Any

from django.db.models import Count, Q, QuerySet

from .models import (
    ANCHOR_KINDS,
    ConditionKind,
    Experiment,
    Participant,
    Rating,
    RenderJob,
    Stimulus,
    TrialResponse,
    training_names,
)
from .paradigms import MUSHRA
from .rules import FLAG_LABELS, FLAGS, MAX_SIGNALS_PER_TRIAL, flow

#: ``trial_position``: the order in which this participant rated the trial (0 = first test
#: trial they heard), not the excerpt's place in the experiment.
RATING_COLUMNS = ["participant", "item", "condition", "kind", "rating", "trial_position", "submitted_at"]
#: Export-only columns: what the page recorded per signal (its place on the page, 1 = first
#: slider; how often it was played; how long it was heard, ms), the trial's time on the page
#: (ms), and the participant's stage ...
TELEMETRY_COLUMNS = ["signal_position", "plays", "listen_ms", "time_on_page_ms", "stage"]
#: ... the trial's quality-control flags (``rules.FLAGS``, ``;``-separated) and the researcher's
#: exclusion (an excluded participant stays in the exports, not in the analysis).
QUALITY_COLUMNS = ["flags", "excluded", "exclusion_reason"]
EXPORT_COLUMNS = RATING_COLUMNS + TELEMETRY_COLUMNS + QUALITY_COLUMNS


def experiments_for(user: Any) -> QuerySet[Experiment]:
    """Experiments a researcher may see: their own and those shared with them. Staff are no
    exception here (no silent view of everyone's data): the admin is where they see the rest."""
    qs = Experiment.objects.filter(Q(owner=user) | Q(shared_with=user)).distinct()
    return qs.select_related("owner")


def ratings_rows(experiment: Experiment, *, include_pilot: bool = False) -> list[dict]:
    """The ratings long table: one row per (participant, item, condition), with the trial's
    flags and the participant's exclusion (``QUALITY_COLUMNS``); every participant is in it,
    pilot sessions only when asked for (``include_pilot``, with a ``pilot`` column)."""
    ratings = Rating.objects.filter(participant__experiment=experiment)
    if not include_pilot:
        ratings = ratings.filter(participant__is_pilot=False)
    rows = ratings.select_related("condition", "trial__excerpt", "response", "participant").order_by(
        "participant_id", "response__submitted_at", "condition__position"
    )
    out = []
    for r in rows:
        tests = [e for e in r.participant.plan if not e.get("training")]
        entry_index = next((i for i, e in enumerate(tests) if e["trial"] == r.trial_id), None)
        entry = tests[entry_index] if entry_index is not None else {"conditions": []}
        page = entry["conditions"].index(r.condition_id) if r.condition_id in entry["conditions"] else None
        telemetry = r.response.telemetry or {}
        heard = (telemetry.get("signals") or {}).get(chr(ord("a") + page), {}) if page is not None else {}
        out.append(
            {
                "participant": f"P{r.participant_id}",
                "item": r.trial.excerpt.name,
                "condition": r.condition.label,
                "kind": ConditionKind.analysis_kind(r.condition.kind),
                "rating": r.score,
                "trial_position": entry_index,
                "submitted_at": r.response.submitted_at.isoformat(),
                "signal_position": None if page is None else page + 1,
                "plays": heard.get("plays") if isinstance(heard, dict) else None,
                "listen_ms": heard.get("listen_ms") if isinstance(heard, dict) else None,
                "time_on_page_ms": telemetry.get("time_on_page_ms"),
                "stage": r.participant.stage,
                "flags": flag_codes(r.response.flags),
                "excluded": r.participant.excluded_at is not None,
                "exclusion_reason": r.participant.exclusion_reason,
                **({"pilot": r.participant.is_pilot} if include_pilot else {}),
            }
        )
    return out


def catch_rows(experiment: Experiment, *, include_pilot: bool = False) -> list[dict]:
    """One row per answered catch trial (kept out of the ratings and the analysis): the score of
    the reference's duplicate, of the hidden reference, the condition it replaced, passed or not."""
    responses = TrialResponse.objects.filter(trial__experiment=experiment, trial__is_catch=True, trial__paradigm=MUSHRA)
    if not include_pilot:
        responses = responses.filter(participant__is_pilot=False)
    labels = dict(experiment.conditions.values_list("pk", "label"))
    out = []
    for r in responses.select_related("participant", "trial__excerpt").order_by("participant_id", "submitted_at"):
        tests = [e for e in r.participant.plan if not e.get("training")]
        outcome = r.catch or {}
        out.append(
            {
                "participant": f"P{r.participant_id}",
                "item": r.trial.excerpt.name,
                "trial_position": next((i for i, e in enumerate(tests) if e["trial"] == r.trial_id), None),
                "replaced_condition": labels.get(int(outcome.get("replaced") or 0)),
                "duplicate_rating": outcome.get("duplicate"),
                "hidden_reference_rating": outcome.get("hidden_reference"),
                "passed": outcome.get("passed"),
                "submitted_at": r.submitted_at.isoformat(),
                **({"pilot": r.participant.is_pilot} if include_pilot else {}),
            }
        )
    return out


def check_responses(experiment: Experiment, *, include_pilot: bool = False) -> QuerySet[TrialResponse]:
    """The responses to gold and trapping questions of the ACR / DCR blocks (ITU-T P.808): the
    catch trials of paradigms other than MUSHRA; their outcome is ``TrialResponse.catch``."""
    responses = TrialResponse.objects.filter(trial__experiment=experiment, trial__is_catch=True).exclude(
        trial__paradigm=MUSHRA
    )
    return responses if include_pilot else responses.filter(participant__is_pilot=False)


def check_rows(experiment: Experiment, *, include_pilot: bool = False) -> list[dict]:
    """One row per answered gold or trapping question of the ACR / DCR blocks (ITU-T P.808; kept
    out of the answers and the analysis): the block, the item, which check, the condition whose
    audio it played (a trapping question: the stimulus its message ends), the category known or
    asked for, the tolerance, the answer, passed or not."""
    responses = check_responses(experiment, include_pilot=include_pilot)
    labels = dict(experiment.conditions.values_list("pk", "label"))
    out = []
    for r in responses.select_related("participant", "trial__excerpt").order_by("participant_id", "submitted_at"):
        outcome = r.catch or {}
        out.append(
            {
                "participant": f"P{r.participant_id}",
                "block": r.trial.block + 1,
                "item": r.trial.excerpt.name,
                "check": outcome.get("check"),
                "condition": labels.get(int((r.answer or {}).get("condition") or 0)),
                "expected": outcome.get("expected"),
                "tolerance": outcome.get("tolerance"),
                "answer": outcome.get("score"),
                "passed": outcome.get("passed"),
                "submitted_at": r.submitted_at.isoformat(),
                **({"pilot": r.participant.is_pilot} if include_pilot else {}),
            }
        )
    return out


def repeat_rows(experiment: Experiment, *, include_pilot: bool = False) -> list[dict]:
    """The scores of answered repeated trials, one row per (participant, item, condition) with
    ``repeat = 1``, in the analysis's columns (``RATING_COLUMNS``): kept out of ``ratings_rows``
    (and so out of the main analysis, ``ratings.csv`` and ``mushra.csv``), fed to the analysis's
    test-retest (``evaluation.reliability``) by ``analysis_rows(..., repeats=True)``."""
    responses = TrialResponse.objects.filter(trial__experiment=experiment, trial__repeat_of__isnull=False)
    if not include_pilot:
        responses = responses.filter(participant__is_pilot=False)
    conditions: dict[int, tuple[str, str]] = {
        pk: (label, kind) for pk, label, kind in experiment.conditions.values_list("pk", "label", "kind")
    }
    out = []
    for r in responses.select_related("participant", "trial__excerpt").order_by("participant_id", "submitted_at"):
        tests = [e for e in r.participant.plan if not e.get("training")]
        position = next((i for i, e in enumerate(tests) if e["trial"] == r.trial_id), None)
        for cid, score in ((r.repeat or {}).get("scores") or {}).items():
            if int(cid) not in conditions:
                continue
            label, kind = conditions[int(cid)]
            out.append(
                {
                    "participant": f"P{r.participant_id}",
                    "item": r.trial.excerpt.name,
                    "condition": label,
                    "kind": ConditionKind.analysis_kind(kind),
                    "rating": score,
                    "trial_position": position,
                    "submitted_at": r.submitted_at.isoformat(),
                    "repeat": 1,
                    "excluded": r.participant.excluded_at is not None,
                    **({"pilot": r.participant.is_pilot} if include_pilot else {}),
                }
            )
    return out


def retest_rows(experiment: Experiment) -> list[dict]:
    """Each listener's test-retest agreement on their repeated trials (first against repeated
    presentation: ``evaluation.reliability.retest_agreement``), participants excluded by hand
    left out as in the analysis; empty when nobody has answered a repeat."""
    rows = analysis_rows(experiment, repeats=True)
    if not any(r.get("repeat") for r in rows):
        return []
    import pandas as pd

    from evaluation.reliability import retest_agreement, split_repeats

    primary, again = split_repeats(pd.DataFrame(rows))
    table, _pooled = retest_agreement(primary, again)
    return table.astype(object).where(table.notna(), None).to_dict("records")


#: ``comments.csv``: one row per trial comment (test trials; ``trial_position`` as in the ratings).
COMMENT_COLUMNS = ["participant", "item", "trial_position", "comment", "submitted_at"]


def comment_rows(experiment: Experiment, *, include_pilot: bool = False) -> list[dict]:
    """The participants' comments on their trials (``config["trial_comments"]``), one row per
    commented trial, in the order they were written."""
    responses = TrialResponse.objects.filter(trial__experiment=experiment).exclude(comment="")
    if not include_pilot:
        responses = responses.filter(participant__is_pilot=False)
    out = []
    for r in responses.select_related("participant", "trial__excerpt").order_by("participant_id", "submitted_at"):
        tests = [e for e in r.participant.plan if not e.get("training")]
        out.append(
            {
                "participant": f"P{r.participant_id}",
                "item": r.trial.excerpt.name,
                "trial_position": next((i for i, e in enumerate(tests) if e["trial"] == r.trial_id), None),
                "comment": r.comment,
                "submitted_at": r.submitted_at.isoformat(),
                **({"pilot": r.participant.is_pilot} if include_pilot else {}),
            }
        )
    return out


def comments_csv(experiment: Experiment, *, include_pilot: bool = False) -> str:
    """``comments.csv``: the comments as a tidy table, every cell through ``csv_cell``."""
    buf = io.StringIO()
    columns = COMMENT_COLUMNS + (["pilot"] if include_pilot else [])
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    rows = comment_rows(experiment, include_pilot=include_pilot)
    writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def _khz(rate: int) -> str:
    return f"{rate / 1000:g} kHz"


def rate_notes(experiment: Experiment) -> list[str]:
    """The sample rates in plain words: each model's native rate (and whether it was assumed),
    the excerpts' and the experiment's, and every resampling the render will do."""
    notes = []
    excerpt_rates = sorted(set(experiment.excerpts.values_list("sample_rate", flat=True)))
    for name, rate, summary in experiment.checkpoints.values_list("name", "sample_rate", "summary"):
        warnings = ((summary or {}).get("provenance") or {}).get("warnings") or []
        assumed = any("assumed" in str(w) for w in warnings)
        text = f"“{name}” runs at {_khz(rate)}" + (
            " (the file states no rate: this is assumed; re-upload it with its rate if that is wrong)."
            if assumed
            else "."
        )
        other = [r for r in excerpt_rates if r != rate]
        if other:
            text += (
                f" Excerpts at {', '.join(map(_khz, other))} are resampled to {_khz(rate)} for it, "
                "and its output back to the excerpt's rate."
            )
        notes.append(text)
    off = [r for r in excerpt_rates if r != experiment.sample_rate]
    if off:
        notes.append(
            f"Excerpts at {', '.join(map(_khz, off))} become stimuli at the experiment's {_khz(experiment.sample_rate)}"
            " (resampled after rendering; the item is turned down as a whole if resampling would clip)."
        )
    elif excerpt_rates:
        notes.append(
            f"Excerpts are at the experiment's {_khz(experiment.sample_rate)}: "
            "stimuli are not resampled after rendering."
        )
    return notes


def analysis_rows(experiment: Experiment, *, repeats: bool = False) -> list[dict]:
    """The ratings the analysis reads: ``ratings_rows`` without the participants the
    researcher excluded, in the analysis's columns (``RATING_COLUMNS``): first presentations
    only. ``repeats``: the repeated trials' scores too, every row with a ``repeat`` column (0 the
    first presentation, 1 the repeat), which the analysis keeps for test-retest only
    (``evaluation.reliability.split_repeats``)."""
    rows = [{k: r[k] for k in RATING_COLUMNS} for r in ratings_rows(experiment) if not r["excluded"]]
    if not repeats:
        return rows
    again = [{**{k: r[k] for k in RATING_COLUMNS}, "repeat": 1} for r in repeat_rows(experiment) if not r["excluded"]]
    return [{**r, "repeat": 0} for r in rows] + again if again else rows


def pilot_rating_rows(experiment: Experiment) -> list[dict]:
    """The pilot sessions' ratings (kept out of the data) as (participant, item, condition,
    kind, rating) rows: what the sample-size planner estimates its SDs from."""
    rows = Rating.objects.filter(participant__experiment=experiment, participant__is_pilot=True).values_list(
        "participant_id", "trial__excerpt__name", "condition__label", "condition__kind", "score"
    )
    return [
        {
            "participant": f"P{p}",
            "item": item,
            "condition": label,
            "kind": ConditionKind.analysis_kind(kind),
            "rating": score,
        }
        for p, item, label, kind, score in rows.order_by("participant_id", "trial_id", "condition_id")
    ]


#: Characters that make a spreadsheet read a cell as a formula (OWASP, "CSV Injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A cell safe to open in a spreadsheet: text starting with a formula character gets a
    leading apostrophe (OWASP "CSV Injection"); numbers and other text pass unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def ratings_csv(experiment: Experiment, *, include_pilot: bool = False) -> str:
    buf = io.StringIO()
    columns = EXPORT_COLUMNS + (["pilot"] if include_pilot else [])
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    rows = ratings_rows(experiment, include_pilot=include_pilot)
    writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


#: ``slider_traces.csv``: one row per recorded slider position of a test (or catch) trial, in
#: the order the page recorded them (``point``, 0 = first); ``t_ms`` since the trial's page opened.
SLIDER_TRACE_COLUMNS = [
    "participant",
    "item",
    "trial_position",
    "catch",
    "condition",
    "signal_position",
    "point",
    "t_ms",
    "value",
]
#: ``sessions.csv``: one row per session, the device and audio context the trial pages reported
#: (from the session's first saved trial that reported them) and how many trials reported them.
SESSION_DEVICE_COLUMNS = [
    "participant",
    "stage",
    "excluded",
    "user_agent",
    "context_sample_rate",
    "stimulus_sample_rate",
    "resampled",
    "base_latency_s",
    "output_latency_s",
    "screen_width",
    "screen_height",
    "device_pixel_ratio",
    "viewport_width",
    "viewport_height",
    "decode_ms",
    "trials_reporting",
]


def _number(value: Any) -> int | float | None:
    """A number the page sent, or nothing (the telemetry is the browser's word, not checked)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _test_responses(experiment: Experiment, include_pilot: bool) -> QuerySet[TrialResponse]:
    responses = TrialResponse.objects.filter(participant__experiment=experiment)
    if not include_pilot:
        responses = responses.filter(participant__is_pilot=False)
    return responses.select_related("participant", "trial__excerpt").order_by("participant_id", "submitted_at", "pk")


def slider_trace_rows(experiment: Experiment, *, include_pilot: bool = False) -> list[dict]:
    """Every slider trace the trial pages stored (``telemetry["slider_moves"]``: ``{key, value,
    t_ms}``), one row per point, with the condition behind the opaque signal key. Training
    trials are left out, as in the ratings."""
    labels = dict(experiment.conditions.values_list("pk", "label"))
    out = []
    for r in _test_responses(experiment, include_pilot):
        plan = r.participant.plan or []
        entry = next((e for e in plan if e.get("trial") == r.trial_id), None)
        if entry is None or entry.get("training"):
            continue
        tests = [e for e in plan if not e.get("training")]
        position = next((i for i, e in enumerate(tests) if e is entry), None)
        conditions = entry.get("conditions") or []
        moves = (r.telemetry or {}).get("slider_moves")
        for point, move in enumerate(moves if isinstance(moves, list) else []):
            if not isinstance(move, dict):
                continue
            key = move.get("key")
            page = ord(key) - ord("a") if isinstance(key, str) and len(key) == 1 else -1
            cid = conditions[page] if 0 <= page < len(conditions) else None
            out.append(
                {
                    "participant": f"P{r.participant_id}",
                    "item": r.trial.excerpt.name,
                    "trial_position": position,
                    "catch": bool(entry.get("catch")),
                    "condition": labels.get(cid) if cid is not None else None,
                    "signal_position": page + 1 if cid is not None else None,
                    "point": point,
                    "t_ms": _number(move.get("t_ms")),
                    "value": _number(move.get("value")),
                }
            )
    return out


def session_device_rows(experiment: Experiment, *, include_pilot: bool = False) -> list[dict]:
    """One row per session: the user agent (the page's ``navigator.userAgent``, else the one the
    session started with), the AudioContext's sample rate and latencies, screen and window sizes
    and decode time, as the session's first trial page that reported them stored them."""
    participants = experiment.participants.all() if include_pilot else experiment.participants.filter(is_pilot=False)
    first: dict[int, dict] = {}
    reporting: dict[int, int] = {}
    for r in _test_responses(experiment, include_pilot):
        telemetry = r.telemetry or {}
        if not any(k in telemetry for k in ("user_agent", "audio", "screen", "viewport")):
            continue
        reporting[r.participant_id] = reporting.get(r.participant_id, 0) + 1
        first.setdefault(r.participant_id, telemetry)
    out = []
    for p in participants.order_by("pk"):
        telemetry = first.get(p.pk, {})
        audio, screen, viewport = (_mapping(telemetry.get(k)) for k in ("audio", "screen", "viewport"))
        agent = telemetry.get("user_agent")
        resampled = audio.get("resampled")
        out.append(
            {
                "participant": f"P{p.pk}",
                "stage": p.stage,
                "excluded": p.excluded_at is not None,
                "user_agent": agent if isinstance(agent, str) and agent else p.user_agent,
                "context_sample_rate": _number(audio.get("context_sample_rate")),
                "stimulus_sample_rate": _number(audio.get("stimulus_sample_rate")),
                "resampled": resampled if isinstance(resampled, bool) else None,
                "base_latency_s": _number(audio.get("base_latency")),
                "output_latency_s": _number(audio.get("output_latency")),
                "screen_width": _number(screen.get("width")),
                "screen_height": _number(screen.get("height")),
                "device_pixel_ratio": _number(screen.get("dpr")),
                "viewport_width": _number(viewport.get("width")),
                "viewport_height": _number(viewport.get("height")),
                "decode_ms": _number(telemetry.get("decode_ms")),
                "trials_reporting": reporting.get(p.pk, 0),
                **({"pilot": p.is_pilot} if include_pilot else {}),
            }
        )
    return out


def table_csv(rows: list[dict], columns: list[str]) -> str:
    """Rows as CSV in the given columns, every cell through ``csv_cell``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: csv_cell(row.get(k)) for k in columns} for row in rows)
    return buf.getvalue()


def metrics_rows(experiment: Experiment) -> list[dict]:
    """The metrics long table: (condition, item, metric, value) for model conditions."""
    rows = []
    for s in Stimulus.objects.filter(experiment=experiment, condition__kind=ConditionKind.MODEL).select_related(
        "condition", "excerpt"
    ):
        for metric, value in (s.metrics or {}).items():
            if value is not None:
                rows.append({"condition": s.condition.label, "item": s.excerpt.name, "metric": metric, "value": value})
    return rows


def render_progress(experiment: Experiment) -> dict:
    jobs = list(RenderJob.objects.filter(experiment=experiment).select_related("condition", "excerpt"))
    total = len(jobs)
    by_status = {s: 0 for s in RenderJob.Status.values}
    for j in jobs:
        by_status[j.status] += 1
    overall = sum(1.0 if j.status == RenderJob.Status.DONE else j.progress for j in jobs) / total if total else 0.0
    return {
        "status": experiment.status,
        "overall": round(overall, 4),
        "counts": by_status,
        "jobs": [
            {
                "id": j.pk,
                "kind": j.kind,
                "status": j.status,
                "progress": round(j.progress, 4),
                "condition": j.condition.label if j.condition else None,
                "excerpt": j.excerpt.name,
                "attempts": j.attempts,
                "error": j.error if j.status == RenderJob.Status.FAILED else "",
            }
            for j in jobs
        ],
    }


def participant_summary(experiment: Experiment) -> dict:
    """Counts of the real participants by stage (pilot sessions counted apart, ``pilot``)."""
    real = experiment.participants.filter(is_pilot=False)
    counts = dict(real.values_list("stage").annotate(n=Count("id")).values_list("stage", "n"))
    durations = sorted(
        (p.completed_at - p.started_at).total_seconds()
        for p in real.filter(stage=Participant.Stage.COMPLETED)
        if p.completed_at
    )
    median = durations[len(durations) // 2] if durations else None
    flagged = sum(1 for row in participant_flags(experiment).values() if row["flagged_trials"])
    return {
        "started": sum(counts.values()),
        "completed": counts.get(Participant.Stage.COMPLETED, 0),
        "screened_out": counts.get(Participant.Stage.SCREENED_OUT, 0),
        "median_duration_s": median,
        "by_stage": counts,
        "flagged": flagged,
        "excluded": real.filter(excluded_at__isnull=False).count(),
        "pilot": experiment.participants.filter(is_pilot=True).count(),
    }


# --- researcher workflow


def metrics_table(experiment: Experiment) -> dict:
    """Objective metrics as a wide table: one row per (condition, item), one column per metric."""
    rows: dict[tuple[str, str], dict] = {}
    names: list[str] = []
    for r in metrics_rows(experiment):
        if r["metric"] not in names:
            names.append(r["metric"])
        rows.setdefault((r["condition"], r["item"]), {"condition": r["condition"], "item": r["item"]})[r["metric"]] = r[
            "value"
        ]
    table = list(rows.values())
    for row in table:
        row["values"] = [row.get(m) for m in names]
    return {"metrics": names, "rows": table}


def preview_items(experiment: Experiment) -> list[dict]:
    """Per excerpt, its rendered stimuli in condition order (the researcher's preview)."""
    stimuli = Stimulus.objects.filter(experiment=experiment).select_related("condition")
    by_excerpt: dict[int, list[Stimulus]] = {}
    for s in stimuli:
        by_excerpt.setdefault(s.excerpt_id, []).append(s)
    return [
        {
            "excerpt": x,
            "stimuli": sorted(by_excerpt.get(x.pk, []), key=lambda s: (s.condition.position, s.condition_id)),
        }
        for x in experiment.excerpts.all()
    ]


def participants_detail(experiment: Experiment) -> list[dict]:
    """One row per participant: stage, times, trials answered, screening and level results,
    quality-control flags (test trials flagged, trials per flag) and the exclusion by hand."""
    answered = dict(experiment.participants.annotate(n=Count("responses")).values_list("pk", "n"))
    flags = participant_flags(experiment)
    out = []
    for p in experiment.participants.all():
        quality = flags.get(p.pk, {"trials": 0, "flagged_trials": 0, "counts": {}})
        duration = (p.completed_at - p.started_at).total_seconds() if p.completed_at else None
        out.append(
            {
                "id": f"P{p.pk}",
                "pk": p.pk,
                "pilot": p.is_pilot,
                "stage": p.stage,
                "stage_display": p.get_stage_display(),
                "started_at": p.started_at,
                "completed_at": p.completed_at,
                "duration_s": duration,
                "trials_answered": answered.get(p.pk, 0),
                "trials_planned": len(p.plan or []),
                "prolific_pid": p.prolific_pid,
                "headphone_check": p.screening,
                "level": p.level,
                "questionnaire": p.questionnaire,
                "flagged_trials": quality["flagged_trials"],
                "flags": quality["counts"],
                "flags_text": ", ".join(f"{FLAG_LABELS.get(k, k)} ×{n}" for k, n in quality["counts"].items()),
                "excluded": p.excluded_at is not None,
                "excluded_at": p.excluded_at,
                "exclusion_reason": p.exclusion_reason,
            }
        )
    return out


def post_screening(experiment: Experiment) -> dict | None:
    """BS.1534-3 §4.1.2 post-screening of the ratings so far (participants excluded by hand left
    out, as in the analysis); None when there are no ratings."""
    rows = analysis_rows(experiment)
    if not rows:
        return None
    import pandas as pd

    from evaluation.descriptives import describe_overall
    from evaluation.screening import post_screen
    from evaluation.settings import Settings

    analysis = experiment.config.get("analysis") or {}
    settings = Settings.from_dict(analysis) if analysis else Settings()
    frame = pd.DataFrame(rows)
    result = post_screen(frame, settings)
    table = result.table.astype(object).where(result.table.notna(), None)
    # Per-condition means with their t intervals, from the participants the report would keep
    # (the listener is the unit: per-participant means across items, as evaluation.analysis does).
    used = frame[~frame["participant"].isin(result.excluded)]
    means = (
        describe_overall(used, settings)[["condition", "kind", "n", "mean", "ci_low", "ci_high"]] if len(used) else None
    )
    return {
        "excluded": list(result.excluded),
        "rows": table.to_dict("records"),
        "rules": {k: v for k, v in result.rules.items()},
        "means": [] if means is None else means.astype(object).where(means.notna(), None).to_dict("records"),
    }


def block_group(experiment: Experiment) -> list[Experiment]:
    """The experiments of a blocked design, in block order (just this one when not blocked)."""
    root_id = experiment.config.get("block_of") or experiment.pk
    members = list(Experiment.objects.filter(Q(pk=root_id) | Q(config__block_of=root_id)))
    return sorted(members, key=lambda e: (e.config.get("block", 1), e.pk))


def builder_facts(experiment: Experiment) -> dict[str, Any]:
    """What the experiment page's builder shows besides its forms."""
    conditions = list(experiment.conditions.select_related("checkpoint"))
    names = training_names(conditions)
    for c in conditions:
        c.training_name = names[c.pk]  # type: ignore[attr-defined]
    signals = len(conditions)
    return {
        "conditions": conditions,
        "training_warning": training_warning(experiment),
        "trial_full": signals >= MAX_SIGNALS_PER_TRIAL,
        "max_signals": MAX_SIGNALS_PER_TRIAL,
        "blocks": block_group(experiment),
        "editable": experiment.is_editable,
        "weak_anchors": weak_anchors(experiment),
    }


def weak_anchors(experiment: Experiment, *, test_only: bool = False) -> list[dict[str, Any]]:
    """Rendered anchors that barely differ from their reference (``modelrunner.anchors.anchor_difference``).

    One row per (excerpt, anchor) whose difference the item job found below the cutoff, with the
    warning in words (``evaluation.warnings.weak_anchor``); ``test_only`` leaves training excerpts out.
    """
    from evaluation.warnings import weak_anchor

    stimuli = Stimulus.objects.filter(experiment=experiment, condition__kind__in=ANCHOR_KINDS).select_related(
        "condition", "excerpt"
    )
    if test_only:
        stimuli = stimuli.filter(excerpt__is_training=False)
    rows = []
    for s in stimuli.order_by("excerpt_id", "condition__position", "condition_id"):
        found = (s.render_info or {}).get("anchor_difference")
        if not found or not found.get("weak"):
            continue
        rows.append(
            {
                "item": s.excerpt.name,
                "anchor": s.condition.label,
                "difference_db": found.get("difference_db"),
                "difference_lufs": found.get("difference_lufs"),
                "threshold_db": found.get("threshold_db"),
                "warning": weak_anchor(
                    s.excerpt.name, s.condition.label, found.get("difference_db"), found["threshold_db"]
                ),
            }
        )
    return rows


def training_warning(experiment: Experiment) -> str:
    """Why training will not run as the researcher may expect (empty: nothing to say)."""
    marked = experiment.excerpts.filter(is_training=True).count()
    total = experiment.excerpts.count()
    if flow(experiment, "training") and total and not marked:
        return (
            "Training is on, but no excerpt is marked “training only”, so participants get no training trial. "
            "Upload an excerpt for training and mark it (it is then left out of the test), or turn training off "
            "in the settings."
        )
    if marked and not flow(experiment, "training"):
        return f"{marked} excerpt(s) are marked “training only” but training is off: they are heard by nobody."
    if total and marked == total:
        return "Every excerpt is marked “training only”: the test needs at least one test excerpt."
    return ""


def count_flags(flag_lists: Iterable[list[dict[str, Any]]]) -> dict[str, int]:
    """Trials per flag code (``rules.FLAGS`` order; codes without a trial left out)."""
    counts = {code: 0 for code in FLAGS}
    for flags in flag_lists:
        for code in {f.get("code") for f in flags or []}:
            if code in counts:
                counts[code] += 1
    return {k: v for k, v in counts.items() if v}


def flag_codes(flags: list[dict[str, Any]] | None) -> str:
    """The codes of a trial's flags as one export cell (``too_fast;straight_lining``)."""
    return ";".join(f.get("code", "") for f in flags or [])


def participant_flags(experiment: Experiment) -> dict[int, dict[str, Any]]:
    """Per participant (pk) with saved test trials: trials, flagged trials, trials per flag."""
    out: dict[int, dict[str, Any]] = {}
    rows = TrialResponse.objects.filter(
        participant__experiment=experiment, participant__is_pilot=False, trial__is_training=False
    ).values_list("participant_id", "flags")
    lists: dict[int, list[list[dict[str, Any]]]] = {}
    for pk, flags in rows:
        lists.setdefault(pk, []).append(flags or [])
    for pk, flag_lists in lists.items():
        out[pk] = {
            "trials": len(flag_lists),
            "flagged_trials": sum(1 for f in flag_lists if f),
            "counts": count_flags(flag_lists),
        }
    return out
