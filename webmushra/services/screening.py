"""The headphone check (Woods et al. 2017; Milne et al. 2021): the participant's trials, their
audio made on request and served through opaque keys, and the scoring against the server's own
record of targets and of what it delivered. The answer key never leaves the server.
"""

from __future__ import annotations

import random
import secrets

from django.db import transaction
from django.utils import timezone

from .. import headphone
from ..errors import ServiceError
from ..models import Participant
from ..rules import headphone_settings
from .sessions import set_exit, trial_stage


def headphone_trials(*, participant: Participant) -> list[dict]:
    """The participant's screening trials, made once and kept on the server only.

    Each trial holds its secret (test, target, antiphase interval, noise seed; see
    ``webmushra.headphone``), one opaque random key per interval for its audio URL, and the
    server's record of delivery: ``fetched_at`` (first fetch of each interval) and ``fetches``.
    """
    with transaction.atomic():
        participant = Participant.objects.select_for_update().select_related("experiment").get(pk=participant.pk)
        trials = participant.screening.get("trials")
        # Trials of the older format (targets given to the page, no audio keys) are made anew.
        if not trials or any("audio" not in t for t in trials):
            cfg = headphone_settings(participant.experiment)
            rng = random.Random(secrets.randbits(64))
            trials = [
                {
                    **headphone.new_trial(test, rng),
                    "audio": [secrets.token_urlsafe(16) for _ in range(headphone.INTERVALS)],
                    "fetched_at": [None] * headphone.INTERVALS,
                    "fetches": 0,
                }
                for test in cfg["tests"]
                for _ in range(int(cfg["trials_per_test"]))
            ]
            participant.screening = {**participant.screening, "trials": trials}
            participant.save(update_fields=["screening"])
    return trials


def headphone_audio(*, token: str, key: str) -> bytes | None:
    """The WAV of the screening interval behind ``key`` (None when the participant has no such
    key), made from the trial's stored secret; the fetch is recorded first."""
    with transaction.atomic():
        participant = Participant.objects.select_for_update().filter(token=token).first()
        if participant is None:
            return None
        trials = participant.screening.get("trials") or []
        found = [(t, t["audio"].index(key)) for t in trials if key in (t.get("audio") or [])]
        if not found:
            return None
        trial, position = found[0]
        if trial["fetched_at"][position] is None:
            trial["fetched_at"][position] = timezone.now().isoformat()
        trial["fetches"] = int(trial.get("fetches", 0)) + 1
        participant.save(update_fields=["screening"])
    return headphone.interval_wav(trial, position + 1)


def _delivered(trial: dict) -> bool:
    """Whether the server sent every interval of a screening trial."""
    fetched = trial.get("fetched_at") or []
    return len(fetched) == headphone.INTERVALS and all(fetched)


@transaction.atomic
def score_headphone_check(*, participant: Participant, answers: object) -> Participant:
    """Score the screening against the server's own record of the targets; a fail ends politely."""
    participant = Participant.objects.select_for_update().select_related("experiment").get(pk=participant.pk)
    if participant.stage != Participant.Stage.SCREENING:
        return participant
    trials = participant.screening.get("trials") or []
    if not isinstance(answers, list) or len(answers) != len(trials):
        raise ServiceError(
            f"answers: expected {len(trials)} answers, got {len(answers) if isinstance(answers, list) else 'none'}"
        )
    cfg = headphone_settings(participant.experiment)
    per_test: dict[str, list[bool]] = {}
    stored: list[dict] = []
    for i, (trial, answer) in enumerate(zip(trials, answers)):
        chosen = answer.get("chosen") if isinstance(answer, dict) else None
        if isinstance(chosen, bool) or chosen not in range(1, headphone.INTERVALS + 1):
            raise ServiceError(f"answers: answer {i + 1} must choose 1, 2 or 3")
        # An answer to sounds the server never sent is no answer: it counts as wrong.
        delivered = _delivered(trial)
        correct = delivered and chosen == trial["target"]
        per_test.setdefault(trial["test"], []).append(correct)
        telemetry = {k: answer[k] for k in ("plays", "rt_ms") if isinstance(answer.get(k), int)}
        stored.append(
            {"test": trial["test"], "trial": i + 1, "chosen": chosen, "delivered": delivered, "correct": correct}
            | telemetry
        )
    scores = {test: sum(ok) / len(ok) for test, ok in per_test.items()}
    passed_tests = {test: score >= cfg["pass_threshold"] - 1e-9 for test, score in scores.items()}
    passed = all(passed_tests.values()) if cfg["require"] == "all" else any(passed_tests.values())
    participant.screening = {
        **participant.screening,
        "answers": stored,
        "not_delivered": [a["trial"] for a in stored if not a["delivered"]],
        "scores": scores,
        "passed_tests": passed_tests,
        "passed": passed,
        "threshold": cfg["pass_threshold"],
        "scored_at": timezone.now().isoformat(),
    }
    if passed:
        participant.stage = trial_stage(participant)
    else:
        participant.stage = Participant.Stage.SCREENED_OUT
        set_exit(participant)
    participant.save(update_fields=["screening", "stage", "exit_code", "exit_url"])
    return participant
