"""Celery tasks: the bridge from the broker to the services. All of the project's tasks are here.

Tasks receive row ids, never objects; the database row is the truth. The registered names
(``webmushra.messaging``) are kept from earlier releases, so messages already queued still
run. JSON serialisation, late acknowledgement and the time limits are set in
``config/settings.py``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery import shared_task
from celery.signals import celeryd_after_setup, worker_process_init

from . import messaging

log = logging.getLogger(__name__)


@celeryd_after_setup.connect
def _render_workers_import_torch_before_forking(sender: Any = None, instance: Any = None, **_kwargs: Any) -> None:
    """A worker that consumes the render queue imports torch and the model runner once, in its
    main process, before it forks its pool: every pool child (the first, and each one recycled
    by ``--max-tasks-per-child`` or after a crash) starts with them loaded instead of spending
    seconds importing them, well inside ``CELERY_WORKER_PROC_ALIVE_TIMEOUT``. Nothing runs on
    torch here, so no thread pool exists to be forked.

    It also checks ``RENDER_DEVICE`` here: a worker told to render on a GPU this machine lacks
    stops at start (exit status 2, one line naming the setting) instead of failing every job.
    The check asks NVML and never initialises CUDA, which a forked pool child could not use."""
    from django.conf import settings

    render_queue = settings.CELERY_TASK_ROUTES[messaging.RENDER_JOB]["queue"]
    if instance is not None and render_queue in instance.app.amqp.queues.consume_from:
        import torch  # noqa: F401

        import modelrunner.formats  # noqa: F401
        import modelrunner.policy  # noqa: F401
        from modelrunner.device import DeviceError, resolve

        try:
            where = resolve(settings.RENDER_DEVICE)
        except DeviceError as exc:
            sys.stderr.write(f"configuration error: {exc}\n")
            raise SystemExit(2) from None
        log.info("render worker: models render on %s (RENDER_DEVICE=%s)", where, settings.RENDER_DEVICE)


@worker_process_init.connect
def _render_workers_yield_the_cpu(**_kwargs: Any) -> None:
    """The pool children of a worker that consumes the render queue run at ``RENDER_WORKER_NICE``
    (default 10): a render takes every core it can get, and the web processes on the same
    machine answer participants first. Connected first, so that importing torch runs niced too;
    threads started later (torch's, the heartbeat) inherit it."""
    from celery import current_app
    from django.conf import settings

    render_queue = settings.CELERY_TASK_ROUTES[messaging.RENDER_JOB]["queue"]
    if render_queue in current_app.amqp.queues.consume_from:
        lower_priority(int(settings.RENDER_WORKER_NICE))


def lower_priority(niceness: int) -> int:
    """Raise this process's niceness to ``niceness`` (never lower it: only root may); return it."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    return os.nice(niceness - current) if niceness > current else current


@worker_process_init.connect
def _one_torch_thread_per_process(**_kwargs: Any) -> None:
    """Renders use ``RENDER_THREADS`` torch threads per worker process (default 1): scale with
    ``--concurrency`` instead, as oversubscribed threads slow small kernels a hundredfold."""
    import torch

    torch.set_num_threads(int(os.environ.get("RENDER_THREADS", "1")))


_capped_pid: int | None = None


def cap_memory() -> None:
    """Once per process that renders: ``RENDER_MEMORY_MB`` of address space beyond what it
    holds at its first render job (``RLIMIT_AS``; 0 leaves it uncapped). The cap stays for the
    process's life, whatever it runs next. A worker rendering on a GPU is never capped (CUDA
    reserves far more address space than it uses, so any cap would fail its first job): the
    cap is skipped with a note in the log, and such a worker relies on its container's memory
    limit (docs/deployment.md)."""
    global _capped_pid
    if _capped_pid == os.getpid():
        return
    from django.conf import settings

    from modelrunner.device import resolve
    from modelrunner.limits import cap_address_space

    _capped_pid = os.getpid()
    megabytes = int(settings.RENDER_MEMORY_MB)
    where = resolve(settings.RENDER_DEVICE)
    if megabytes > 0 and where.type != "cpu":
        log.warning(
            "RENDER_MEMORY_MB=%d is not applied: this worker renders on %s, and an address-space cap "
            "(RLIMIT_AS) does not work with CUDA; give the worker's container a memory limit instead",
            megabytes,
            where,
        )
        return
    cap_address_space(megabytes * 1024 * 1024)


@shared_task(name=messaging.RENDER_JOB, acks_late=True, reject_on_worker_lost=True)
def render_job(job_id: int) -> str:
    """Render one (model condition, excerpt) cell."""
    cap_memory()
    from . import jobs

    return jobs.run_job(int(job_id))


@shared_task(name=messaging.PREPARE_ITEM, acks_late=True, reject_on_worker_lost=True)
def prepare_item(job_id: int) -> str:
    """Make an item's anchors, align its loudness and write its stimuli."""
    cap_memory()
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
