"""What one participant can observe: every response of a whole session, as received.

A session is walked with Django's test client exactly as the pages direct (landing, consent,
level, every trial, questionnaire, finish). Everything the participant receives is kept:
status, headers, cookies, body, and the time each response took. Training trials are walked
but kept apart, because they name the conditions by design (ITU-R BS.1534-3 §5.2 allows a
training phase with the conditions known).
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.test import Client
from django.urls import reverse

from tests.trials import save_body
from webmushra.models import Participant

#: The Range requests a player (or a participant's tool) may send for a stimulus.
RANGES = ("bytes=0-1023", "bytes=1000-", "bytes=-512")
_JSON_SCRIPT = re.compile(r'<script id="([\w-]+)" type="application/json">(.*?)</script>', re.S)
_ATTR_URL = re.compile(r'\b(?:href|src|action)="([^"]*)"')


@dataclass
class Seen:
    """One response as the participant receives it."""

    method: str
    url: str
    status: int
    headers: dict[str, str]
    cookies: str
    body: bytes
    seconds: float

    def __repr__(self) -> str:
        return f"<{self.method} {self.url} {self.status}, {len(self.body)} bytes>"

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def everything(self) -> str:
        """The URL, status line, headers, cookies and (textual) body in one string."""
        body = self.text if not self.headers.get("Content-Type", "").startswith("audio/") else ""
        return "\n".join([f"{self.method} {self.url} {self.status}", json.dumps(self.headers), self.cookies, body])


@dataclass
class TrialSeen:
    """A test trial: its page, the JSON the player reads, and every stimulus response."""

    index: int
    page: Seen
    data: dict[str, Any]
    #: signal key -> full GET of its URL ("ref" is the open reference).
    full: dict[str, Seen] = field(default_factory=dict)
    #: (signal key, Range header) -> the 206 response.
    ranged: dict[tuple[str, str], Seen] = field(default_factory=dict)

    @property
    def signal_urls(self) -> dict[str, str]:
        return {s["key"]: s["url"] for s in self.data["signals"]}


@dataclass
class SessionSeen:
    """Everything one participant observed (training trials excluded from ``responses``)."""

    token: str
    responses: list[Seen] = field(default_factory=list)
    trials: list[TrialSeen] = field(default_factory=list)
    #: Training trials (page, JSON and full GETs of their stimuli), kept apart from ``responses``.
    training: list[TrialSeen] = field(default_factory=list)
    level_audio_url: str | None = None

    def urls(self) -> set[str]:
        """Every URL requested or referenced by a page, a JSON document or a redirect."""
        found = {r.url for r in self.responses}
        for r in self.responses:
            if "Location" in r.headers:
                found.add(r.headers["Location"])
            if r.headers.get("Content-Type", "").startswith("text/html"):
                found.update(_ATTR_URL.findall(r.text))
        if self.level_audio_url:
            found.add(self.level_audio_url)
        for t in self.trials:
            found.add(t.data["reference"]["url"])
            found.update(t.signal_urls.values())
            found.add(t.data["save_url"])
        return found


def fetch(client: Client, method: str, url: str, **kw: Any) -> Seen:
    t0 = time.perf_counter()
    response = getattr(client, method.lower())(url, **kw)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    seconds = time.perf_counter() - t0
    return Seen(
        method=method,
        url=url,
        status=response.status_code,
        headers=dict(response.headers),
        cookies=response.cookies.output(),
        body=body,
        seconds=seconds,
    )


def json_scripts(html: str) -> dict[str, Any]:
    return {name: json.loads(raw) for name, raw in _JSON_SCRIPT.findall(html)}


def ratings_for(data: dict[str, Any], rng: random.Random) -> dict[str, int]:
    """Scores for every signal, one of them at 100 as the page asks."""
    keys = [s["key"] for s in data["signals"]]
    scores = {k: rng.randint(0, 100) for k in keys}
    scores[rng.choice(keys)] = 100
    return scores


def walk(client: Client, public_token: str, *, fetch_stimuli: bool = True, seed: int = 0) -> SessionSeen:
    """Take one participant through a whole session, recording what they receive."""
    rng = random.Random(seed)
    landing = reverse("participant:landing", args=[public_token])
    seen = SessionSeen(token="")
    record = seen.responses.append

    record(fetch(client, "GET", landing))
    start = fetch(client, "POST", landing)
    record(start)
    where = start.headers["Location"]
    seen.token = urlsplit(where).path.split("/")[2]
    for _ in range(100):
        path = urlsplit(where).path
        page = fetch(client, "GET", where)
        if page.status == 302:
            record(page)
            where = page.headers["Location"]
            continue
        assert page.status == 200, f"GET {where}: {page.status}"
        if path.endswith("/consent/"):
            record(page)
            answer = fetch(client, "POST", where, data={"agree": "yes"})
        elif path.endswith("/level/"):
            record(page)
            seen.level_audio_url = json_scripts(page.text).get("level-data", {}).get("url")
            answer = fetch(client, "POST", where, data={"gain_db": "0"})
        elif "/trial/" in path:
            data = json_scripts(page.text)["trial-data"]
            trial = TrialSeen(index=int(path.rstrip("/").split("/")[-1]) - 1, page=page, data=data)
            urls = {"ref": data["reference"]["url"], **trial.signal_urls}
            if not data["trial"]["training"]:
                record(page)
                if fetch_stimuli:
                    for key, url in urls.items():
                        trial.full[key] = fetch(client, "GET", url)
                        record(trial.full[key])
                        for spec in RANGES:
                            trial.ranged[(key, spec)] = fetch(client, "GET", url, HTTP_RANGE=spec)
                            record(trial.ranged[(key, spec)])
                seen.trials.append(trial)
            else:
                if fetch_stimuli:
                    trial.full = {key: fetch(client, "GET", url) for key, url in urls.items()}
                seen.training.append(trial)
            # What the player sends after playing every signal, with the server's record behind
            # it (the fetches recorded, the time gone by): the server's rules pass (tests/trials.py).
            number = int(path.rstrip("/").split("/")[-1])
            body = save_body(Participant.objects.get(token=seen.token), number - 1, ratings_for(data, rng))
            assert body["idempotency_key"] == data["idempotency_key"]
            saved = fetch(client, "POST", data["save_url"], data=json.dumps(body), content_type="application/json")
            assert saved.status == 200, f"save {where}: {saved.status} {saved.text}"
            record(saved)
            where = json.loads(saved.body)["next_url"]
            continue
        elif path.endswith("/questionnaire/"):
            record(page)
            answer = fetch(client, "POST", where, data={"comment": ""})
        elif path.endswith("/done/"):
            record(page)
            return seen
        else:
            raise AssertionError(f"unexpected page {where}")
        record(answer)
        assert answer.status == 302, f"POST {where}: {answer.status}"
        where = answer.headers["Location"]
    raise AssertionError("the session did not finish within 100 pages")
