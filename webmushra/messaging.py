"""Task messages, sent by their registered names once the transaction that made the rows commits.

The services never import the task modules: they name the task. The names are those the
workers register (``webmushra/tasks.py``), kept from earlier releases so that messages
already queued still run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction

log = logging.getLogger(__name__)

#: Render one (model condition, excerpt) cell.
RENDER_JOB = "modelrunner.tasks.render_job"
#: Make an item's anchors, align its loudness and write its stimuli.
PREPARE_ITEM = "modelrunner.tasks.prepare_item"
#: Requeue jobs whose worker died (beat, every minute).
REAP_STALE_JOBS = "modelrunner.tasks.reap_stale_jobs"
#: Build one report bundle.
BUILD_REPORT = "webmushra.tasks.build_report"

TASK_NAMES = (RENDER_JOB, PREPARE_ITEM, REAP_STALE_JOBS, BUILD_REPORT)


def send_on_commit(task_name: str, ids: Iterable[int]) -> None:
    """Send task messages carrying row ids once the transaction that made the rows commits.

    If the broker is unreachable the rows stay queued and nothing fails: the reaper
    re-sends queued work (``RENDER_RESEND_SECONDS``), and a duplicate is harmless because
    every claim is a conditional UPDATE.
    """
    if task_name not in TASK_NAMES:
        raise ValueError(f"{task_name!r} is not a task of this project")
    ids = list(ids)

    def send() -> None:
        from kombu.exceptions import OperationalError

        for row_id in ids:
            try:
                publish(task_name, row_id)
            except (OperationalError, OSError) as exc:
                log.warning("broker unreachable (%s); %s row(s) stay queued for the reaper to re-send", exc, len(ids))
                return

    transaction.on_commit(send)


def publish(task_name: str, row_id: int) -> None:
    """Send one message now, to the queue the routes give that name (``CELERY_TASK_ROUTES``)."""
    from celery import current_app

    current_app.send_task(task_name, args=[row_id])
