"""Celery tasks: the bridge from the broker to the Django services.

Tasks receive row ids, never objects; the database row is the truth. JSON
serialisation, late acknowledgement and the time limits are set in
``config/settings.py``.
"""

from __future__ import annotations

import os

from celery import shared_task
from celery.signals import worker_process_init


@worker_process_init.connect
def _one_torch_thread_per_process(**_kwargs) -> None:
    """Renders use ``RENDER_THREADS`` torch threads per worker process (default 1): scale with
    ``--concurrency`` instead, as oversubscribed threads slow small kernels a hundredfold."""
    import torch

    torch.set_num_threads(int(os.environ.get("RENDER_THREADS", "1")))


@shared_task(name="modelrunner.tasks.render_job", acks_late=True, reject_on_worker_lost=True)
def render_job(job_id: int) -> str:
    """Render one (model condition, excerpt) cell."""
    from webmushra import jobs

    return jobs.run_job(int(job_id))


@shared_task(name="modelrunner.tasks.prepare_item", acks_late=True, reject_on_worker_lost=True)
def prepare_item(job_id: int) -> str:
    """Make an item's anchors, align its loudness and write its stimuli."""
    from webmushra import jobs

    return jobs.run_job(int(job_id))


@shared_task(name="modelrunner.tasks.reap_stale_jobs")
def reap_stale_jobs() -> dict:
    """Requeue jobs whose worker died (run by beat every minute)."""
    from webmushra import services

    return services.reap_stale_jobs()
