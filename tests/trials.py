"""Plausible trial saves for tests: what the real player sends (trial.js ``telemetry``) and the
server's own record behind it (the audio fetched, time gone by), so tests that save trials
pass the server's rules (webmushra/rules.py ``check_trial``) honestly, or break exactly one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.db.models import F
from django.urls import reverse

from webmushra import rules
from webmushra.models import Condition, Participant, StimulusToken, TrialResponse
from webmushra.services import sessions


def scores_for(participant: Participant, index: int, score_of: Callable[[str], int] | None = None) -> dict[str, int]:
    """Signal key -> score by condition kind (default: the hidden reference 100, the rest 50)."""
    score_of = score_of or (lambda kind: 100 if kind == "hidden_reference" else 50)
    keys = sessions.signal_keys(participant.plan[index])
    kinds = dict(Condition.objects.filter(pk__in=keys.values()).values_list("pk", "kind"))
    return {k: score_of(kinds[cid]) for k, cid in keys.items()}


def timings(experiment_rules: Mapping[str, Any], n_signals: int, too_fast_s: float = 0.0) -> tuple[float, float]:
    """(seconds each signal is heard, seconds on the page) that meet the rules with a margin and
    stay clear of the too-fast flag below ``too_fast_s``."""
    listen = float(experiment_rules.get("min_play_seconds") or 0) + 0.25
    least = float(experiment_rules.get("min_trial_seconds") or 0)
    page = max(least, n_signals * (listen + 0.1), too_fast_s) + 1.5
    return listen, page


def telemetry(
    keys: list[str], scores: Mapping[str, int], *, listen_s: float = 1.25, page_s: float = 8.0
) -> dict[str, Any]:
    """The log the player sends after playing each signal in turn for ``listen_s`` and setting its
    slider while it plays: one play, one move, then a stop at the end; ``page_s`` on the page."""
    events: list[dict[str, Any]] = [{"t_ms": 300, "type": "play", "key": "ref"}]
    t = 800.0
    for key in keys:
        events.append({"t_ms": round(t), "type": "play", "key": key})
        t += 1000 * listen_s
        events.append({"t_ms": round(t), "type": "move", "key": key, "value": scores[key]})
        t += 100
    events.append({"t_ms": round(t), "type": "stop", "key": keys[-1]})
    return {
        "signals": {k: {"plays": 1, "listen_ms": round(1000 * listen_s)} for k in keys},
        "reference": {"plays": 1, "listen_ms": 500},
        "events": events,
        "slider_moves": [{"key": k, "value": scores[k]} for k in keys],
        "time_on_page_ms": round(1000 * page_s),
    }


def elapse(participant: Participant, seconds: float) -> None:
    """Move the server's record of this participant ``seconds`` into the past (consent, level,
    screening, saved trials, first fetches), as if that much more time had gone by."""
    delta = timedelta(seconds=seconds)
    p = Participant.objects.get(pk=participant.pk)
    p.consented_at = p.consented_at - delta if p.consented_at else None
    for record, field in ((p.level, "set_at"), (p.screening, "scored_at")):
        if isinstance((record or {}).get(field), str):
            record[field] = (datetime.fromisoformat(record[field]) - delta).isoformat()
    p.save(update_fields=["consented_at", "level", "screening"])
    TrialResponse.objects.filter(participant=p).update(submitted_at=F("submitted_at") - delta)
    StimulusToken.objects.filter(participant=p, first_fetched_at__isnull=False).update(
        first_fetched_at=F("first_fetched_at") - delta
    )


def fetch_audio(participant: Participant, index: int, client: Any = None, only: set[str] | None = None) -> None:
    """Fetch the trial's signals' audio as the page does (through ``client``: the stimulus view
    records each fetch), or, without a client, record the fetches directly. ``only``: these keys."""
    entry = participant.plan[index]
    keys = sessions.signal_keys(entry)
    tokens = [
        (pk, tok)
        for k, (pk, tok) in sessions.key_tokens(participant, entry, "pk", "token").items()
        if k in keys and (only is None or k in only)
    ]
    if client is None:
        for pk, _ in tokens:
            sessions.record_stimulus_fetch(token_id=pk)
        return
    for _, tok in tokens:
        r = client.get(reverse("participant:stimulus", args=[tok]))
        assert r.status_code == 200, r
        b"".join(r.streaming_content) if r.streaming else r.content


def answer_body(participant: Participant, index: int, answer: dict[str, Any], *, client: Any = None) -> dict[str, Any]:
    """A save of trial ``index`` of another paradigm (``webmushra.paradigms``) with ``answer``
    that meets every listening rule: each signal fetched and played, the time gone by."""
    participant = Participant.objects.select_related("experiment").get(pk=participant.pk)
    entry = participant.plan[index]
    keys = list(sessions.signal_keys(entry))
    listen, page = timings(rules.player_rules(participant.experiment), len(keys))
    fetch_audio(participant, index, client)
    elapse(participant, page + 0.5)
    log = telemetry(keys, dict.fromkeys(keys, 0), listen_s=listen, page_s=page)
    log["events"] = [e for e in log["events"] if e["type"] != "move"]
    log["slider_moves"] = []
    return {"idempotency_key": entry["key"], "answer": answer, "telemetry": log}


def save_body(
    participant: Participant,
    index: int,
    scores: Mapping[str, int] | None = None,
    *,
    client: Any = None,
    score_of: Callable[[str], int] | None = None,
) -> dict[str, Any]:
    """A save of trial ``index`` that meets every rule of the experiment: the audio fetched
    (through ``client`` when given), the time gone by, and the player's telemetry."""
    participant = Participant.objects.select_related("experiment").get(pk=participant.pk)
    entry = participant.plan[index]
    keys = list(sessions.signal_keys(entry))
    scores = dict(scores) if scores is not None else scores_for(participant, index, score_of)
    listen, page = timings(
        rules.player_rules(participant.experiment),
        len(keys),
        rules.quality_settings(participant.experiment)["too_fast_seconds"],
    )
    fetch_audio(participant, index, client)
    elapse(participant, page + 0.5)
    return {
        "idempotency_key": entry["key"],
        "ratings": scores,
        "telemetry": telemetry(keys, scores, listen_s=listen, page_s=page),
    }
