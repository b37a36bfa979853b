"""Celery tasks of the web app (the render tasks live in ``modelrunner/tasks.py``)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="webmushra.tasks.build_report", acks_late=True, reject_on_worker_lost=True)
def build_report(report_id: int) -> str:
    """Build one report bundle; the Report row holds status, progress, error and file."""
    from . import services

    return services.build_report(report_id=int(report_id))
