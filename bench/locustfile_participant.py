"""Locust participants: each starts a session, saves every trial of it, then starts another.

Run by ``python -m bench.bench_participant saves`` (which prepares an experiment and a
server), or by hand against an open experiment without a headphone check::

    BENCH_PUBLIC_TOKEN=<experiment public token> locust -f bench/locustfile_participant.py \\
        --headless -u 100 -r 50 -t 30s --stop-timeout 30 --host http://127.0.0.1:8000 --csv /tmp/saves

One task is one step of a session (start, or one trial), so ``--stop-timeout`` lets a save
in flight finish and every save the server stored is counted. Requests are named
``landing``, ``start``, ``consent``, ``level``, ``save``, ``trial page``, ``questionnaire``
and ``healthz`` (a trivial GET made at every step: the baseline). A save counts as a
failure unless the server answers 200 with ``saved: true, replayed: false``; every save is
sent with the idempotency key its trial page gave.

Environment: ``BENCH_PUBLIC_TOKEN`` (required), ``BENCH_WAIT_MIN`` / ``BENCH_WAIT_MAX``
(seconds between steps, a participant listening and rating; default 1 and 2),
``BENCH_STATS_OUT`` (a path: the final statistics are written there as JSON when locust
quits, after ``--stop-timeout``, so they count every request; ``--csv`` files are written
before the last users finish).
"""
from __future__ import annotations

import json
import os
import random
import re
import secrets
from typing import Any

from locust import HttpUser, between, events, task

PUBLIC_TOKEN = os.environ.get("BENCH_PUBLIC_TOKEN", "")
TRIAL_DATA = re.compile(r'<script id="trial-data" type="application/json">(.*?)</script>', re.S)


@events.quitting.add_listener
def _write_stats(environment, **_: Any) -> None:
    out = os.environ.get("BENCH_STATS_OUT")
    if not out:
        return
    entries = list(environment.stats.entries.values()) + [environment.stats.total]
    stats = {
        e.name: {"method": e.method, "count": e.num_requests, "failures": e.num_failures,
                 "p50_ms": e.get_response_time_percentile(0.5), "p95_ms": e.get_response_time_percentile(0.95),
                 "p99_ms": e.get_response_time_percentile(0.99), "rps": e.total_rps}
        for e in entries if e.name != "questionnaire"
    }
    stats["errors"] = {f"{e.method} {e.name}: {e.error}"[:300]: e.occurrences for e in environment.stats.errors.values()}
    with open(out, "w") as fh:
        json.dump(stats, fh)


class Participant(HttpUser):
    wait_time = between(float(os.environ.get("BENCH_WAIT_MIN", "1")), float(os.environ.get("BENCH_WAIT_MAX", "2")))

    def on_start(self) -> None:
        if not PUBLIC_TOKEN:
            raise RuntimeError("set BENCH_PUBLIC_TOKEN to the public token of an open experiment")
        self.trial: dict[str, Any] | None = None

    def _csrf(self) -> dict[str, str]:
        return {"csrfmiddlewaretoken": self.client.cookies.get("csrftoken", "")}

    def _at(self, response) -> None:
        """Remember the trial a page shows (None when the page is not a trial)."""
        match = TRIAL_DATA.search(response.text) if "/trial/" in response.url else None
        self.trial = json.loads(match.group(1)) if match else None

    @task
    def step(self) -> None:
        self.client.get("/healthz", name="healthz")
        if self.trial is None:
            self.start_session()
        else:
            self.save_trial()

    def start_session(self) -> None:
        self.client.cookies.clear()
        pid = secrets.token_hex(12)
        ids = {"PROLIFIC_PID": pid, "STUDY_ID": "bench", "SESSION_ID": pid[:8]}
        landing = f"/t/{PUBLIC_TOKEN}/"
        self.client.get(landing, params=ids, name="landing")
        r = self.client.post(landing, {**self._csrf(), **ids}, name="start")
        if r.url.endswith("/consent/"):
            r = self.client.post(r.url, {**self._csrf(), "agree": "yes"}, name="consent")
        if r.url.endswith("/level/"):
            r = self.client.post(r.url, {**self._csrf(), "gain_db": "0"}, name="level")
        self._at(r)

    def save_trial(self) -> None:
        data = self.trial
        scores = [random.randint(0, 100) for _ in data["signals"]]
        scores[random.randrange(len(scores))] = 100  # one signal at 100, as the page requires
        body = {"idempotency_key": data["idempotency_key"],
                "ratings": {s["key"]: v for s, v in zip(data["signals"], scores)},
                "telemetry": {"time_on_page_ms": 1}}
        self.trial = None
        with self.client.post(data["save_url"], data=json.dumps(body), name="save", catch_response=True,
                              headers={"Content-Type": "application/json", "X-CSRFToken": data["csrf_token"]}) as s:
            answer = s.json() if s.status_code == 200 else {}
            if answer.get("saved") is not True or answer.get("replayed") is not False:
                s.failure(f"HTTP {s.status_code}: {s.text[:200]}")
                return
        next_url = answer["next_url"]
        if "/trial/" in next_url:
            self._at(self.client.get(next_url, name="trial page"))
        else:
            r = self.client.get(next_url, name="questionnaire")
            if r.url.endswith("/questionnaire/"):
                self.client.post(r.url, {**self._csrf(), "comment": "bench"}, name="questionnaire")
