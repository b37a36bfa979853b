"""Celery tasks: the bridge from the broker to the services. All of the project's tasks are here.

Tasks receive row ids, never objects; the database row is the truth. The registered names
(``webmushra.messaging``) are kept from earlier releases, so messages already queued still
run. JSON serialisation, late acknowledgement and the time limits are set in
``config/settings.py``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import shared_task
from celery.signals import worker_process_init

from . import messaging


@worker_process_init.connect
def _one_torch_thread_per_process(**_kwargs: Any) -> None:
    """Renders use ``RENDER_THREADS`` torch threads per worker process (default 1): scale with
    ``--concurrency`` instead, as oversubscribed threads slow small kernels a hundredfold."""
    import torch

    torch.set_num_threads(int(os.environ.get("RENDER_THREADS", "1")))


@shared_task(name=messaging.RENDER_JOB, acks_late=True, reject_on_worker_lost=True)
def render_job(job_id: int) -> str:
    """Render one (model condition, excerpt) cell."""
    from . import jobs

    return jobs.run_job(int(job_id))


@shared_task(name=messaging.PREPARE_ITEM, acks_late=True, reject_on_worker_lost=True)
def prepare_item(job_id: int) -> str:
    """Make an item's anchors, align its loudness and write its stimuli."""
    from . import jobs

    return jobs.run_job(int(job_id))


@shared_task(name=messaging.REAP_STALE_JOBS)
def reap_stale_jobs() -> dict[str, int]:
    """Requeue jobs whose worker died (run by beat every minute)."""
    from .services import rendering

    return rendering.reap_stale_jobs()


@shared_task(name=messaging.BUILD_REPORT, acks_late=True, reject_on_worker_lost=True)
def build_report(report_id: int) -> str:
    """Build one report bundle; the Report row holds status, progress, error and file."""
    from .services import reports

    return reports.build_report(report_id=int(report_id))
