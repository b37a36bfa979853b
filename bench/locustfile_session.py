"""Locust participants going through whole sessions, one step at a time.

Run by ``python -m bench.bench_load`` (which prepares an experiment, PostgreSQL and
gunicorn), or by hand against an open experiment without a headphone check or training::

    BENCH_PUBLIC_TOKEN=<experiment public token> locust -f bench/locustfile_session.py \\
        --headless -u 200 -r 20 -t 120s --stop-timeout 30 --host http://127.0.0.1:8000

A session: ``GET`` the landing page, ``POST`` it (a new participant), ``GET``/``POST`` consent,
``GET``/``POST`` the level page, then for each trial ``GET`` its page and fetch the open
reference and every signal with ``Range: bytes=0-1023`` (the first kilobyte: every stimulus
URL is hit as a player would, without the load generator spending the machine's two cores
moving whole WAV files), then, after the think time, ``POST`` the ratings of every signal;
finally ``GET``/``POST`` the questionnaire and ``GET`` the completion page. Then the user
starts another session. Redirects are followed by hand so that every request is timed on
its own.

One task is one step (the start, or one trial: save the previous one, load the next), and
the wait between steps is the participant's listening and rating time, drawn from
``BENCH_THINK_MIN``..``BENCH_THINK_MAX`` seconds (default 3 to 8: real participants take
30 s or more a trial; the load per participant is compressed about tenfold). ``GET
/healthz`` is made at every step: the baseline under the same load. ``--stop-timeout``
lets a step in flight finish, so every save the server acknowledged is known.

A save counts as a failure unless the answer is 200 with ``saved: true, replayed: false``.
When locust quits, ``BENCH_STATS_OUT`` (a path) receives the statistics of every request
name and, per participant token, the saves acknowledged and whether the session finished.
"""

from __future__ import annotations

import json
import os
import random
import re
from typing import Any
from urllib.parse import urlencode, urlsplit

from locust import FastHttpUser, between, events, task

PUBLIC_TOKEN = os.environ.get("BENCH_PUBLIC_TOKEN", "")
RANGE = {"Range": "bytes=0-1023"}
TRIAL_DATA = re.compile(r'<script id="trial-data" type="application/json">(.*?)</script>', re.S)
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
#: Per participant token: saves acknowledged, and whether the completion page was reached.
SESSIONS: dict[str, dict[str, Any]] = {}


@events.quitting.add_listener
def _write_stats(environment, **_: Any) -> None:
    out = os.environ.get("BENCH_STATS_OUT")
    if not out:
        return
    entries = list(environment.stats.entries.values()) + [environment.stats.total]
    stats = {
        f"{e.method} {e.name}" if e.method else e.name: {
            "count": e.num_requests,
            "failures": e.num_failures,
            "rps": e.total_rps,
            "p50_ms": e.get_response_time_percentile(0.5),
            "p95_ms": e.get_response_time_percentile(0.95),
            "p99_ms": e.get_response_time_percentile(0.99),
            "max_ms": e.max_response_time,
        }
        for e in entries
    }
    errors = {f"{e.method} {e.name}: {e.error}"[:300]: e.occurrences for e in environment.stats.errors.values()}
    with open(out, "w") as fh:
        json.dump({"stats": stats, "errors": errors, "sessions": SESSIONS}, fh)


class Participant(FastHttpUser):
    wait_time = between(float(os.environ.get("BENCH_THINK_MIN", "3")), float(os.environ.get("BENCH_THINK_MAX", "8")))

    def on_start(self) -> None:
        if not PUBLIC_TOKEN:
            raise RuntimeError("set BENCH_PUBLIC_TOKEN to the public token of an open experiment")
        self.trial: dict[str, Any] | None = None
        self.token = ""

    def _expect(self, response, status: int, what: str) -> bool:
        if response.status_code != status:
            response.failure(f"{what}: HTTP {response.status_code} (expected {status})")
            return False
        response.success()
        return True

    def _get(self, url: str, name: str, status: int = 200) -> tuple[bool, Any]:
        with self.client.get(url, name=name, allow_redirects=False, catch_response=True) as r:
            return self._expect(r, status, name), r

    def _post_form(self, url: str, data: dict[str, str], name: str, page_text: str) -> str | None:
        """POST a form with the CSRF token its page gave; the redirect target, or None."""
        token = CSRF_INPUT.search(page_text)
        body = {"csrfmiddlewaretoken": token.group(1) if token else "", **data}
        with self.client.post(
            url,
            data=urlencode(body),
            name=name,
            allow_redirects=False,
            catch_response=True,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ) as r:
            if not self._expect(r, 302, name):
                return None
            return r.headers["Location"]

    @task
    def step(self) -> None:
        self.client.get("/healthz", name="healthz")
        if self.trial is None:
            self.start_session()
        else:
            self.save_and_continue()

    def start_session(self) -> None:
        self.client.cookiejar.clear()
        landing = f"/t/{PUBLIC_TOKEN}/"
        ok, page = self._get(landing, "landing")
        if not ok:
            return
        where = self._post_form(landing, {}, "start", page.text)
        if where is None or not where.endswith("/consent/"):
            return
        self.token = urlsplit(where).path.split("/")[2]
        SESSIONS[self.token] = {"saved": 0, "finished": False}
        ok, page = self._get(where, "consent page")
        where = self._post_form(where, {"agree": "yes"}, "consent", page.text) if ok else None
        if where is None or not where.endswith("/level/"):
            return
        ok, page = self._get(where, "level page")
        where = self._post_form(where, {"gain_db": "0"}, "level", page.text) if ok else None
        if where is not None:
            self.open_trial(where)

    def open_trial(self, url: str) -> None:
        """Load a trial page and the first kilobyte of each of its stimuli."""
        ok, page = self._get(url, "trial page")
        match = TRIAL_DATA.search(page.text) if ok else None
        if match is None:
            return
        data = json.loads(match.group(1))
        for stimulus in [data["reference"], *data["signals"]]:
            with self.client.get(
                stimulus["url"], name="stimulus (first 1 kB)", headers=RANGE, catch_response=True
            ) as r:
                if self._expect(r, 206, "stimulus") and len(r.content) != 1024:
                    r.failure(f"stimulus: {len(r.content)} bytes, expected 1024")
        self.trial = data

    def save_and_continue(self) -> None:
        data, self.trial = self.trial, None
        keys = [s["key"] for s in data["signals"]]
        scores = {k: random.randint(0, 100) for k in keys}
        scores[random.choice(keys)] = 100  # the page asks for one signal at 100
        body = {"idempotency_key": data["idempotency_key"], "ratings": scores, "telemetry": {"time_on_page_ms": 5000}}
        with self.client.post(
            data["save_url"],
            data=json.dumps(body),
            name="save",
            catch_response=True,
            headers={"Content-Type": "application/json", "X-CSRFToken": data["csrf_token"]},
        ) as r:
            answer = r.json() if r.status_code == 200 else {}
            if answer.get("saved") is not True or answer.get("replayed") is not False:
                r.failure(f"save: HTTP {r.status_code}: {r.text[:200]}")
                return
        SESSIONS[self.token]["saved"] += 1
        where = answer["next_url"]
        if "/trial/" in where:
            self.open_trial(where)
            return
        ok, page = self._get(where, "questionnaire page")
        where = self._post_form(where, {"comment": "bench"}, "questionnaire", page.text) if ok else None
        if where is not None and self._get(where, "done page")[0]:
            SESSIONS[self.token]["finished"] = True
