"""Run the web server and a Celery worker (with beat) together; Ctrl-C stops both.

With ``--demo`` it also renders the demo experiment on that worker (if not rendered
yet), opens it, and prints the researcher URL and the participant link.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse

from webmushra import selectors
from webmushra.models import Experiment
from webmushra.services import experiments, rendering


class Command(BaseCommand):
    help = "Start web (gunicorn) and a worker (render + default queues, with beat) together."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default="127.0.0.1:8000")
        parser.add_argument("--demo", action="store_true", help="render and open the demo experiment")

    def handle(self, *args, bind: str, demo: bool, **options):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        procs: list[subprocess.Popen] = []

        def spawn(cmd: list[str]) -> subprocess.Popen:
            p = subprocess.Popen(cmd, env=env, start_new_session=True)
            procs.append(p)
            return p

        def stop_all(*_):
            # SIGTERM to each leader only: celery and gunicorn then stop their own children
            # (a warm shutdown); the whole group is killed only if that takes too long.
            for p in procs:
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            for p in procs:
                try:
                    p.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)

        def on_term(*_):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_term)
        try:
            spawn(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "-B",
                    "-Q",
                    "render,default",
                    "-c",
                    "1",
                    "--without-gossip",
                    "--without-mingle",
                    "-l",
                    "WARNING",
                    "-s",
                    str(settings.VAR_DIR / "celerybeat-schedule"),
                ]
            )
            spawn(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "config.wsgi:application",
                    "--bind",
                    bind,
                    "--workers",
                    "2",
                    "--threads",
                    "4",
                    "--access-logfile",
                    "-",
                    "--log-level",
                    "warning",
                ]
            )
            if demo:
                self._demo(bind)
            self.stdout.write("Web and worker are running. Press Ctrl-C to stop both.")
            while all(p.poll() is None for p in procs):
                time.sleep(0.5)
            raise CommandError("a process stopped unexpectedly; stopping the others")
        except KeyboardInterrupt:
            self.stdout.write("\nStopping web and worker...")
        finally:
            stop_all()

    def _demo(self, bind: str) -> None:
        from .load_demo import DEMO_TITLE, ensure_demo_user

        user, password = ensure_demo_user()
        exp = Experiment.objects.filter(owner=user, title=DEMO_TITLE).first()
        if exp is None:
            raise CommandError("no demo experiment: run `manage.py load_demo` first")
        if exp.status == Experiment.Status.DRAFT:
            rendering.start_render(experiment=exp)
        if exp.status in (Experiment.Status.DRAFT, Experiment.Status.RENDERING):
            self._wait_for_render(exp)
        exp.refresh_from_db()
        if exp.status in (Experiment.Status.READY, Experiment.Status.CLOSED):
            experiments.open_experiment(experiment=exp)
        base = f"http://{bind}"
        self.stdout.write("")
        self.stdout.write(f"Researcher page:  {base}{reverse('researcher:experiment', args=[exp.pk])}")
        self.stdout.write(f"  log in as '{user.username}' with password '{password}'")
        self.stdout.write(f"Participant link: {base}{reverse('participant:landing', args=[exp.public_token])}")
        self.stdout.write("")

    def _wait_for_render(self, exp: Experiment) -> None:
        from tqdm import tqdm

        bar = tqdm(total=100, desc="Rendering the demo", unit="%", file=sys.stderr)
        while True:
            exp.refresh_from_db()
            progress = selectors.render_progress(exp)
            bar.n = round(progress["overall"] * 100)
            bar.refresh()
            if progress["counts"]["failed"]:
                failed = next(j for j in progress["jobs"] if j["status"] == "failed")
                bar.close()
                raise CommandError(f"a demo render job failed: {failed['error']}")
            if exp.status != Experiment.Status.RENDERING:
                bar.n = 100
                bar.close()
                return
            time.sleep(0.5)
