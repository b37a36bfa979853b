"""Report bundles: queued as a row, built by a worker, progress and errors on the row."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from .. import messaging, paradigm_data, results_csv
from ..errors import ServiceError
from ..models import (
    Experiment,
    Rating,
    Report,
)
from ..selectors import (
    SESSION_DEVICE_COLUMNS,
    SLIDER_TRACE_COLUMNS,
    analysis_rows,
    comments_csv,
    metrics_rows,
    session_device_rows,
    slider_trace_rows,
    table_csv,
    weak_anchors,
)
from . import quality, report_facts
from .files import store, tmp_dir

log = logging.getLogger(__name__)


def request_report(*, experiment: Experiment, user=None) -> Report:
    """Queue a report bundle build; a build already waiting or running is returned instead."""
    with transaction.atomic():
        Experiment.objects.select_for_update().get(pk=experiment.pk)
        busy = experiment.reports.filter(status__in=[Report.Status.QUEUED, Report.Status.RUNNING]).first()
        if busy is not None:
            return busy
        # MUSHRA ratings or the answers of other paradigms' blocks (webmushra.paradigm_data).
        answers = paradigm_data.answered(experiment, drop_excluded=False)
        if not Rating.objects.filter(participant__experiment=experiment).exists() and not answers.exists():
            raise ServiceError("no ratings yet: a report needs at least one completed trial")
        kept = Rating.objects.filter(participant__experiment=experiment, participant__excluded_at__isnull=True)
        if not kept.exists() and not paradigm_data.answered(experiment).exists():
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
        # Repeated trials' scores come along with repeat = 1: the analysis uses the first
        # presentations and keeps the repeats for test-retest (evaluation.reliability).
        ratings = pd.DataFrame(analysis_rows(experiment, repeats=True))
        metrics = pd.DataFrame(metrics_rows(experiment)) if metrics_rows(experiment) else None
        settings_ = experiment.config.get("analysis") or None
        bundle = work / "bundle"
        bundle.mkdir()
        design_warnings = [row["warning"] for row in weak_anchors(experiment, test_only=True)]
        # Each paradigm block's analysis beside MUSHRA's (alone when there are no ratings).
        paradigm_results, refused = paradigm_data.paradigm_results(experiment, settings_)
        design_warnings += refused
        if ratings.empty and not paradigm_results:
            raise ServiceError(" ".join(w["message"] for w in refused) or "nothing to analyse")
        summary = build(
            ratings,
            metrics,
            settings_,
            bundle,
            progress=progress,
            design_warnings=design_warnings,
            quality=quality.quality_summary(experiment),
            paradigms=paradigm_results,
            facts=report_facts.report_facts(experiment),
        )
        # What the trial pages recorded beyond the ratings, as tidy tables (docs/statistics.md).
        for name, text in (
            ("slider_traces.csv", table_csv(slider_trace_rows(experiment), SLIDER_TRACE_COLUMNS)),
            ("sessions.csv", table_csv(session_device_rows(experiment), SESSION_DEVICE_COLUMNS)),
            ("comments.csv", comments_csv(experiment)),
        ):
            (bundle / name).write_text(text, encoding="utf-8")
        # The results in webMUSHRA's own files (service/write.php), one per page type answered.
        exports = results_csv.webmushra_csvs(experiment)
        if exports:
            (bundle / "webmushra").mkdir()
            for name, text in exports.items():
                (bundle / "webmushra" / name).write_text(text, encoding="utf-8")
        stem = f"experiment-{experiment.pk}-report-{report_id}"
        archive = shutil.make_archive(str(work / stem), "zip", root_dir=bundle)
        # Stored whole under its final name (services.files.store) before the row names it.
        final = f"reports/{stem}.zip"
        store(final, archive)
        Report.objects.filter(pk=report_id).update(
            status=Report.Status.DONE,
            progress=1.0,
            finished_at=timezone.now(),
            file=final,
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
