"""Locust participants: each starts a session, saves every trial of it, then starts another.

Run by ``python -m bench.bench_participant saves`` (which prepares an experiment and a
server), or by hand against an open experiment without a headphone check::

    BENCH_PUBLIC_TOKEN=<experiment public token> locust -f bench/locustfile_participant.py \\
        --headless -u 100 -r 50 -t 30s --stop-timeout 30 --host http://127.0.0.1:8000 --csv /tmp/saves

One task is one step of a session (start, or one trial), so ``--stop-timeout`` lets a save
in flight finish and every save the server stored is counted. Requests are named
``landing``, ``start``, ``consent page``, ``consent``, ``level page``, ``level``, ``save``, ``trial page``,
``questionnaire``
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
from urllib.parse import urlencode

from locust import FastHttpUser, between, events, task

PUBLIC_TOKEN = os.environ.get("BENCH_PUBLIC_TOKEN", "")
TRIAL_DATA = re.compile(r'<script id="trial-data" type="application/json">(.*?)</script>', re.S)


@events.quitting.add_listener
def _write_stats(environment, **_: Any) -> None:
    out = os.environ.get("BENCH_STATS_OUT")
    if not out:
        return
    entries = list(environment.stats.entries.values()) + [environment.stats.total]
    stats = {
        e.name: {
            "method": e.method,
            "count": e.num_requests,
            "failures": e.num_failures,
            "p50_ms": e.get_response_time_percentile(0.5),
            "p95_ms": e.get_response_time_percentile(0.95),
            "p99_ms": e.get_response_time_percentile(0.99),
            "rps": e.total_rps,
        }
        for e in entries
        if e.name != "questionnaire"
    }
    stats["errors"] = {
        f"{e.method} {e.name}: {e.error}"[:300]: e.occurrences for e in environment.stats.errors.values()
    }
    with open(out, "w") as fh:
        json.dump(stats, fh)


class Participant(FastHttpUser):
    wait_time = between(float(os.environ.get("BENCH_WAIT_MIN", "1")), float(os.environ.get("BENCH_WAIT_MAX", "2")))

    def on_start(self) -> None:
        if not PUBLIC_TOKEN:
            raise RuntimeError("set BENCH_PUBLIC_TOKEN to the public token of an open experiment")
        self.trial: dict[str, Any] | None = None

    def _csrf(self) -> dict[str, str]:
        token = next((c.value for c in self.client.cookiejar if c.name == "csrftoken"), "")
        return {"csrfmiddlewaretoken": token}

    def _post(self, url: str, data: dict[str, str], name: str) -> str:
        """POST a form; the URL it redirects to ("" when it does not)."""
        r = self.client.post(
            url,
            data=urlencode({**self._csrf(), **data}),
            name=name,
            allow_redirects=False,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        return r.headers.get("Location", "") if r.status_code in (302, 303) else ""

    def _at(self, response) -> None:
        """Remember the trial a page shows (None when the page is not a trial)."""
        match = TRIAL_DATA.search(response.text or "")
        self.trial = json.loads(match.group(1)) if match else None

    @task
    def step(self) -> None:
        self.client.get("/healthz", name="healthz")
        if self.trial is None:
            self.start_session()
        else:
            self.save_trial()

    def start_session(self) -> None:
        self.client.cookiejar.clear()
        pid = secrets.token_hex(12)
        ids = {"PROLIFIC_PID": pid, "STUDY_ID": "bench", "SESSION_ID": pid[:8]}
        landing = f"/t/{PUBLIC_TOKEN}/"
        self.client.get(f"{landing}?{urlencode(ids)}", name="landing")
        where = self._post(landing, ids, "start")
        if where.endswith("/consent/"):
            self.client.get(where, name="consent page")
            where = self._post(where, {"agree": "yes"}, "consent")
        if where.endswith("/level/"):
            self.client.get(where, name="level page")
            where = self._post(where, {"gain_db": "0"}, "level")
        self.trial = None
        if "/trial/" in where:
            self._at(self.client.get(where, name="trial page"))

    def save_trial(self) -> None:
        data = self.trial
        scores = [random.randint(0, 100) for _ in data["signals"]]
        scores[random.randrange(len(scores))] = 100  # one signal at 100, as the page requires
        body = {
            "idempotency_key": data["idempotency_key"],
            "ratings": {s["key"]: v for s, v in zip(data["signals"], scores)},
            "telemetry": {"time_on_page_ms": 1},
        }
        self.trial = None
        with self.client.post(
            data["save_url"],
            data=json.dumps(body),
            name="save",
            catch_response=True,
            headers={"Content-Type": "application/json", "X-CSRFToken": data["csrf_token"]},
        ) as s:
            answer = s.json() if s.status_code == 200 else {}
            if answer.get("saved") is not True or answer.get("replayed") is not False:
                s.failure(f"HTTP {s.status_code}: {s.text[:200]}")
                return
        next_url = answer["next_url"]
        if "/trial/" in next_url:
            self._at(self.client.get(next_url, name="trial page"))
        elif next_url.endswith("/questionnaire/"):
            self.client.get(next_url, name="questionnaire")
            self._post(next_url, {"comment": "bench"}, "questionnaire")
