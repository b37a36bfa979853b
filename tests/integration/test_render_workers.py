"""Render workers as deployed: real ``celery worker`` processes.

* A worker consuming the render queue runs its pool children at ``RENDER_WORKER_NICE``; one
  consuming only the default queue does not (``webmushra.tasks._render_workers_yield_the_cpu``).
* A render worker imports torch in its main process before forking, so each pool child starts
  with it loaded (``webmushra.tasks._render_workers_import_torch_before_forking``).
* Pool children recycled after every task (``--max-tasks-per-child 1``) over a queue of small
  render jobs on a real Redis broker: every job completes exactly once, and the queue never
  stalls while a fresh child starts (each one imports torch): the longest gap between two
  consecutive completions stays under 30 s.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import psutil
import pytest
import redis

from tests.conftest import Worker, require, wait_for
from tests.stack import RedisServer
from webmushra import messaging
from webmushra.models import Experiment, RenderJob, Stimulus
from webmushra.services import rendering

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

#: The longest a queue may wait between two completions while pool children are replaced.
MAX_STALL_S = 30.0


def niceness(pid: int) -> int:
    """The nice value of a process (field 19 of /proc/<pid>/stat, as ``ps -o ni`` reads it)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


def pool_child(worker: Worker) -> psutil.Process:
    assert worker.proc is not None
    return wait_for(lambda: next(iter(psutil.Process(worker.proc.pid).children()), None), 60, what="a pool child")


def torch_loaded(pid: int) -> bool:
    """Whether the process has run its start-up hooks (the last one imports torch)."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_render_worker_pool_children_run_at_the_configured_niceness(worker_env):
    render = Worker({**worker_env, "RENDER_WORKER_NICE": "7"}, queues="render,default")
    default = Worker({**worker_env, "RENDER_WORKER_NICE": "7"}, queues="default")
    try:
        render.start()
        default.start()
        # A render worker imports torch once, before forking its pool; a default worker does not.
        assert torch_loaded(render.proc.pid) and not torch_loaded(default.proc.pid)
        child = pool_child(render)
        wait_for(lambda: niceness(child.pid) == 7, 60, what="the render worker's pool child at niceness 7")
        # Only the pool children render: the worker's own process (the broker, the pool) is not niced.
        assert render.proc is not None and niceness(render.proc.pid) == 0
        other = pool_child(default)
        wait_for(lambda: torch_loaded(other.pid), 90, what="the default worker's pool child to finish starting")
        assert niceness(other.pid) == 0
        assert all(niceness(t.id) == 7 for t in psutil.Process(child.pid).threads()), "a thread escaped the niceness"
    finally:
        render.stop()
        default.stop()


@pytest.fixture
def redis_broker():
    require(shutil.which("redis-server") is not None, "redis-server is not installed (apt-get install redis-server)")
    server = RedisServer().start()
    yield server
    server.close()


@pytest.mark.slow
def test_recycled_pool_children_never_stall_the_queue(build_experiment, worker_env, redis_broker, monkeypatch):
    from celery import Celery
    from django.conf import settings

    # This process sends to the throwaway Redis too (the worker sends the item jobs itself),
    # through an app of its own (not the current app: later tests must keep sending through
    # the project's) and a connection opened on that URL. Not ``Celery(broker=...)``: Celery
    # reads CELERY_BROKER_URL from the environment before an app's own broker setting, and the
    # first stage of `make test` exports it (tests.stack --redis), so the jobs went to that
    # stage's Redis, which no worker here consumes, and the queue stalled.
    sender = Celery("sender", set_as_current=False)
    routes = settings.CELERY_TASK_ROUTES

    def send(name: str, row_id: int) -> None:
        with sender.connection_for_write(redis_broker.url) as conn:
            sender.send_task(name, args=[row_id], queue=routes[name]["queue"], connection=conn)

    monkeypatch.setattr(messaging, "publish", send)
    exp = build_experiment(n_excerpts=4, seconds=0.5, training_excerpt=False)
    rendering.start_render(experiment=exp)
    jobs = RenderJob.objects.filter(experiment=exp)
    assert jobs.count() == 8  # 4 model cells, then 4 items
    # The 4 model jobs wait on the broker the worker will consume, whatever the environment says.
    assert redis.Redis.from_url(redis_broker.url).llen(routes[messaging.RENDER_JOB]["queue"]) == 4
    worker = Worker(
        {**worker_env, "CELERY_BROKER_URL": redis_broker.url},
        queues="render",
        args=["--max-tasks-per-child", "1"],
    ).start()
    try:

        def done() -> bool:
            failed = jobs.filter(status=RenderJob.Status.FAILED).first()
            assert failed is None, f"job {failed.pk} failed: {failed.error}\n{worker.log[-3000:]}"
            return not jobs.exclude(status=RenderJob.Status.DONE).exists()

        wait_for(done, timeout=600, interval=0.5, what="every render job, one pool child each")
    finally:
        worker.stop()
    exp.refresh_from_db()
    assert exp.status == Experiment.Status.READY
    # Exactly once: each job claimed once, one stimulus per (condition, excerpt), one success each.
    assert sorted(jobs.values_list("attempts", flat=True)) == [1] * 8
    assert Stimulus.objects.filter(experiment=exp).count() == exp.conditions.count() * 4
    assert worker.log.count("succeeded in") == 8, worker.log[-3000:]
    finished = sorted(jobs.values_list("finished_at", flat=True))
    gaps = [(b - a).total_seconds() for a, b in zip(finished, finished[1:])]
    print(f"completions {len(finished)}, gaps between them (s): {', '.join(f'{g:.1f}' for g in gaps)}")
    assert max(gaps) < MAX_STALL_S, gaps
