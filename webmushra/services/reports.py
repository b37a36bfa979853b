"""Report bundles: queued as a row, built by a worker, progress and errors on the row."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .. import messaging
from ..errors import ServiceError
from ..models import (
    Experiment,
    Rating,
    Report,
)
from ..selectors import analysis_rows, metrics_rows, weak_anchors
from . import quality, report_facts
from .files import tmp_dir

log = logging.getLogger(__name__)


def request_report(*, experiment: Experiment, user=None) -> Report:
    """Queue a report bundle build; a build already waiting or running is returned instead."""
    with transaction.atomic():
        Experiment.objects.select_for_update().get(pk=experiment.pk)
        busy = experiment.reports.filter(status__in=[Report.Status.QUEUED, Report.Status.RUNNING]).first()
        if busy is not None:
            return busy
        if not Rating.objects.filter(participant__experiment=experiment).exists():
            raise ServiceError("no ratings yet: a report needs at least one completed trial")
        if not Rating.objects.filter(
            participant__experiment=experiment, participant__excluded_at__isnull=True
        ).exists():
            raise ServiceError("nothing to analyse: every participant with ratings is excluded")
        report = Report.objects.create(experiment=experiment, requested_by=user)

        messaging.send_on_commit(messaging.BUILD_REPORT, [report.pk])
    return report


def build_report(*, report_id: int) -> str:
    """Build a report bundle (zip) for a queued Report row; the row records progress and errors."""
    import pandas as pd

    now = timezone.now()
    if (
        Report.objects.filter(pk=report_id, status=Report.Status.QUEUED).update(
            status=Report.Status.RUNNING, started_at=now, progress=0.0, error=""
        )
        != 1
    ):
        return "skipped"
    report = Report.objects.select_related("experiment").get(pk=report_id)
    experiment = report.experiment
    out_root = Path(settings.MEDIA_ROOT) / "reports"
    out_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"report-{report_id}-", dir=tmp_dir()))
    last = [0.0]

    def progress(*args: Any) -> None:
        # Called as progress(message, fraction); the fraction is the number among the arguments.
        numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
        if not numbers:
            return
        fraction = max(0.0, min(1.0, float(numbers[-1])))
        if fraction - last[0] >= 0.02 or fraction >= 1.0:
            last[0] = fraction
            Report.objects.filter(pk=report_id).update(progress=round(0.9 * fraction, 4))

    try:
        from evaluation.report import build_report as build

        # Participants the researcher excluded stay in the exports, not in the analysis; the
        # report says how many trials were flagged and who was excluded, and why.
        ratings = pd.DataFrame(analysis_rows(experiment))
        metrics = pd.DataFrame(metrics_rows(experiment)) if metrics_rows(experiment) else None
        settings_ = experiment.config.get("analysis") or None
        bundle = work / "bundle"
        bundle.mkdir()
        design_warnings = [row["warning"] for row in weak_anchors(experiment, test_only=True)]
        summary = build(
            ratings,
            metrics,
            settings_,
            bundle,
            progress=progress,
            design_warnings=design_warnings,
            quality=quality.quality_summary(experiment),
            facts=report_facts.report_facts(experiment),
        )
        stem = f"experiment-{experiment.pk}-report-{report_id}"
        archive = shutil.make_archive(str(work / stem), "zip", root_dir=bundle)
        final = out_root / f"{stem}.zip"
        os.replace(archive, final)
        Report.objects.filter(pk=report_id).update(
            status=Report.Status.DONE,
            progress=1.0,
            finished_at=timezone.now(),
            file=str(final.relative_to(settings.MEDIA_ROOT)),
            summary=_json_safe(
                {
                    "files": sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()),
                    "result": summary.get("stats", {}) if isinstance(summary, dict) else {},
                }
            ),
        )
        return "done"
    except Exception as exc:  # the row shows the researcher what went wrong
        log.exception("report %s failed", report_id)
        Report.objects.filter(pk=report_id).update(
            status=Report.Status.FAILED, finished_at=timezone.now(), error=f"{type(exc).__name__}: {exc}"[:4000]
        )
        return "failed"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _json_safe(value: Any) -> Any:
    """Keep only what JSON can hold (summaries may carry numpy numbers or paths)."""
    import json

    return json.loads(json.dumps(value if isinstance(value, dict) else {"result": value}, default=str))
