"""Reads: tables and summaries built from the database (no writes here)."""

from __future__ import annotations

import csv
import io
from typing import Any

from django.db.models import Count, Q, QuerySet

from .models import ConditionKind, Experiment, Participant, Rating, RenderJob, Stimulus
from .rules import MAX_SIGNALS_PER_TRIAL

RATING_COLUMNS = ["participant", "item", "condition", "kind", "rating", "trial_position", "submitted_at"]


def experiments_for(user: Any) -> QuerySet[Experiment]:
    """Experiments a researcher may see: their own and those shared with them (staff: all)."""
    qs = (
        Experiment.objects.all()
        if user.is_staff
        else Experiment.objects.filter(Q(owner=user) | Q(shared_with=user)).distinct()
    )
    return qs.select_related("owner")


def ratings_rows(experiment: Experiment) -> list[dict]:
    """The ratings long table: one row per (participant, item, condition)."""
    rows = (
        Rating.objects.filter(participant__experiment=experiment)
        .select_related("condition", "trial__excerpt", "response")
        .order_by("participant_id", "trial__position", "condition__position")
    )
    return [
        {
            "participant": f"P{r.participant_id}",
            "item": r.trial.excerpt.name,
            "condition": r.condition.label,
            "kind": ConditionKind.analysis_kind(r.condition.kind),
            "rating": r.score,
            "trial_position": r.trial.position,
            "submitted_at": r.response.submitted_at.isoformat(),
        }
        for r in rows
    ]


def ratings_csv(experiment: Experiment) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RATING_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(ratings_rows(experiment))
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
    counts = dict(experiment.participants.values_list("stage").annotate(n=Count("id")).values_list("stage", "n"))
    durations = sorted(
        (p.completed_at - p.started_at).total_seconds()
        for p in experiment.participants.filter(stage=Participant.Stage.COMPLETED)
        if p.completed_at
    )
    median = durations[len(durations) // 2] if durations else None
    return {
        "started": sum(counts.values()),
        "completed": counts.get(Participant.Stage.COMPLETED, 0),
        "screened_out": counts.get(Participant.Stage.SCREENED_OUT, 0),
        "median_duration_s": median,
        "by_stage": counts,
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
    """One row per participant: stage, times, trials answered, screening and level results."""
    answered = dict(experiment.participants.annotate(n=Count("responses")).values_list("pk", "n"))
    out = []
    for p in experiment.participants.all():
        duration = (p.completed_at - p.started_at).total_seconds() if p.completed_at else None
        out.append(
            {
                "id": f"P{p.pk}",
                "pk": p.pk,
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
            }
        )
    return out


def post_screening(experiment: Experiment) -> dict | None:
    """BS.1534-3 §4.1.2 post-screening of the ratings so far; None when there are no ratings."""
    rows = ratings_rows(experiment)
    if not rows:
        return None
    import pandas as pd

    from evaluation.screening import post_screen
    from evaluation.settings import Settings

    analysis = experiment.config.get("analysis") or {}
    result = post_screen(pd.DataFrame(rows), Settings.from_dict(analysis) if analysis else None)
    table = result.table.astype(object).where(result.table.notna(), None)
    return {
        "excluded": list(result.excluded),
        "rows": table.to_dict("records"),
        "rules": {k: v for k, v in result.rules.items()},
    }


def block_group(experiment: Experiment) -> list[Experiment]:
    """The experiments of a blocked design, in block order (just this one when not blocked)."""
    root_id = experiment.config.get("block_of") or experiment.pk
    members = list(Experiment.objects.filter(Q(pk=root_id) | Q(config__block_of=root_id)))
    return sorted(members, key=lambda e: (e.config.get("block", 1), e.pk))


def builder_facts(experiment: Experiment) -> dict[str, Any]:
    """What the experiment page's builder shows besides its forms."""
    signals = experiment.conditions.count()
    return {
        "trial_full": signals >= MAX_SIGNALS_PER_TRIAL,
        "max_signals": MAX_SIGNALS_PER_TRIAL,
        "blocks": block_group(experiment),
        "editable": experiment.is_editable,
    }
