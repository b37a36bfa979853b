"""Reads: tables and summaries built from the database (no writes here)."""
from __future__ import annotations

import csv
import io
from typing import Iterable

from django.db.models import Count, Q

from .models import ConditionKind, Experiment, Participant, Rating, RenderJob, Stimulus

RATING_COLUMNS = ["participant", "item", "condition", "kind", "rating", "trial_position", "submitted_at"]


def experiments_for(user) -> Iterable[Experiment]:
    """Experiments a researcher may see: their own and those shared with them (staff: all)."""
    qs = Experiment.objects.all() if user.is_staff else Experiment.objects.filter(
        Q(owner=user) | Q(shared_with=user)
    ).distinct()
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
            "kind": r.condition.kind,
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
                "id": j.pk, "kind": j.kind, "status": j.status, "progress": round(j.progress, 4),
                "condition": j.condition.label if j.condition else None, "excerpt": j.excerpt.name,
                "attempts": j.attempts, "error": j.error if j.status == RenderJob.Status.FAILED else "",
            }
            for j in jobs
        ],
    }


def participant_summary(experiment: Experiment) -> dict:
    counts = dict(
        experiment.participants.values_list("stage").annotate(n=Count("id")).values_list("stage", "n")
    )
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
