"""Participant sessions: the per-participant plan, consent, headphone screening, level, trials
and the questionnaire. Every save is one transaction; a replay of the same key is a no-op.
"""

from __future__ import annotations

import logging
import random
import secrets
from dataclasses import dataclass

import numpy as np
from django.db import transaction
from django.utils import timezone

from ..errors import ConflictError, ServiceError, TrialNotFound
from ..models import (
    Experiment,
    Participant,
    Rating,
    Stimulus,
    StimulusToken,
    TrialResponse,
)
from ..rules import flow, headphone_settings, questionnaire_fields

log = logging.getLogger(__name__)


def _make_plan(experiment: Experiment, rng: random.Random) -> list[dict]:
    """Per-participant order of trials and of the conditions within each (BS.1534-3 §5.2)."""
    conditions = list(experiment.conditions.values_list("pk", flat=True))
    trials = list(experiment.trials.filter(is_training=False).values_list("pk", flat=True))
    training = list(experiment.trials.filter(is_training=True).values_list("pk", flat=True))
    subset = int(experiment.config.get("trial_subset_size") or 0)
    if 0 < subset < len(trials):
        # Balanced subset: the items least used so far first, ties broken at random.
        counts = {t: 0 for t in trials}
        for earlier in experiment.participants.exclude(stage=Participant.Stage.SCREENED_OUT).values_list(
            "plan", flat=True
        ):
            for entry in earlier:
                if entry.get("trial") in counts and not entry.get("training"):
                    counts[entry["trial"]] += 1
        ranked = sorted(trials, key=lambda t: (counts[t], rng.random()))
        trials = ranked[:subset]
    rng.shuffle(trials)
    plan: list[dict] = []
    for t in training:
        order = conditions[:]
        rng.shuffle(order)
        plan.append({"trial": t, "training": True, "conditions": order, "key": secrets.token_hex(8)})
    for t in trials:
        order = conditions[:]
        rng.shuffle(order)
        plan.append({"trial": t, "training": False, "conditions": order, "key": secrets.token_hex(8)})
    return plan


@transaction.atomic
def start_participant(
    *, experiment: Experiment, prolific_pid: str = "", study_id: str = "", session_id: str = "", user_agent: str = ""
) -> Participant:
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if experiment.status != Experiment.Status.OPEN:
        raise ConflictError("this listening test is not open")
    if prolific_pid:
        existing = experiment.participants.filter(prolific_pid=prolific_pid).first()
        if existing is not None:
            return existing
    rng = random.Random(secrets.randbits(64))
    participant = Participant.objects.create(
        experiment=experiment,
        prolific_pid=prolific_pid[:64],
        prolific_study_id=study_id[:64],
        prolific_session_id=session_id[:64],
        user_agent=user_agent[:400],
        plan=_make_plan(experiment, rng),
    )
    stimuli = Stimulus.objects.filter(experiment=experiment)
    StimulusToken.objects.bulk_create([StimulusToken(participant=participant, stimulus=s) for s in stimuli])
    return participant


def _first_stage_after_consent(participant: Participant) -> str:
    if participant.experiment.config.get("headphone_check", {}).get("enabled", False):
        return Participant.Stage.SCREENING
    return _stage_after_screening(participant)


@transaction.atomic
def give_consent(*, participant: Participant, agreed: bool) -> Participant:
    participant = Participant.objects.select_for_update().select_related("experiment").get(pk=participant.pk)
    if participant.stage != Participant.Stage.CONSENT:
        return participant
    if not agreed:
        participant.stage = Participant.Stage.DECLINED
    else:
        participant.consented_at = timezone.now()
        participant.stage = _first_stage_after_consent(participant)
    participant.save(update_fields=["stage", "consented_at"])
    return participant


def headphone_trials(*, participant: Participant) -> list[dict]:
    """The participant's screening trials (odd-one-out positions), made once and kept."""
    with transaction.atomic():
        participant = Participant.objects.select_for_update().select_related("experiment").get(pk=participant.pk)
        trials = participant.screening.get("trials")
        if not trials:
            cfg = headphone_settings(participant.experiment)
            rng = random.Random(secrets.randbits(64))
            trials = [
                {"test": test, "target": rng.randint(1, 3), "seed": rng.randrange(2**31)}
                for test in cfg["tests"]
                for _ in range(int(cfg["trials_per_test"]))
            ]
            participant.screening = {**participant.screening, "trials": trials}
            participant.save(update_fields=["screening"])
    return trials


def _stage_after_screening(participant: Participant) -> str:
    if flow(participant.experiment, "level_setting"):
        return Participant.Stage.LEVEL
    return _trial_stage(participant)


def _trial_stage(participant: Participant) -> str:
    nxt = next_plan_index(participant)
    if nxt is None:
        return Participant.Stage.QUESTIONNAIRE
    return Participant.Stage.TRAINING if participant.plan[nxt].get("training") else Participant.Stage.TRIALS


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
    for i, (trial, answer) in enumerate(zip(trials, answers)):
        chosen = answer.get("chosen") if isinstance(answer, dict) else None
        if chosen not in (1, 2, 3):
            raise ServiceError(f"answers: answer {i + 1} must choose 1, 2 or 3")
        per_test.setdefault(trial["test"], []).append(chosen == trial["target"])
    scores = {test: sum(ok) / len(ok) for test, ok in per_test.items()}
    passed_tests = {test: score >= cfg["pass_threshold"] - 1e-9 for test, score in scores.items()}
    passed = all(passed_tests.values()) if cfg["require"] == "all" else any(passed_tests.values())
    participant.screening = {
        **participant.screening,
        "answers": answers,
        "scores": scores,
        "passed_tests": passed_tests,
        "passed": passed,
        "threshold": cfg["pass_threshold"],
        "scored_at": timezone.now().isoformat(),
    }
    participant.stage = _stage_after_screening(participant) if passed else Participant.Stage.SCREENED_OUT
    participant.save(update_fields=["screening", "stage"])
    return participant


@transaction.atomic
def set_level(*, participant: Participant, gain_db: float) -> Participant:
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    if participant.stage != Participant.Stage.LEVEL:
        return participant
    if not (-40.0 <= float(gain_db) <= 12.0):
        raise ServiceError("gain_db must be between -40 and +12 dB")
    participant.level = {"gain_db": float(gain_db), "set_at": timezone.now().isoformat()}
    participant.stage = _trial_stage(participant)
    participant.save(update_fields=["level", "stage"])
    return participant


def next_plan_index(participant: Participant) -> int | None:
    """The first trial of the plan without a saved response (reload resumes here)."""
    return _first_unsaved(participant, set(participant.responses.values_list("trial_id", flat=True)))


def _first_unsaved(participant: Participant, saved_trials) -> int | None:
    for i, entry in enumerate(participant.plan):
        if entry["trial"] not in saved_trials:
            return i
    return None


@dataclass
class SaveResult:
    created: bool
    next_index: int | None
    #: The participant as stored after the save (stage, completion code).
    participant: Participant


def submit_trial(
    *,
    participant: Participant | None = None,
    token: str | None = None,
    index: int,
    idempotency_key: object,
    ratings: object,
    telemetry: dict | None = None,
) -> SaveResult:
    """Store one trial's ratings in one transaction; a replay of the same key is a no-op.

    The participant is given as an instance or by ``token`` (``Participant.DoesNotExist``
    when there is none). ``ratings`` maps the opaque per-trial signal keys the page was
    given to 0..100 scores.
    """
    lookup = {"pk": participant.pk} if participant is not None else {"token": token}
    with transaction.atomic():
        participant = Participant.objects.select_for_update().select_related("experiment").get(**lookup)
        if not isinstance(idempotency_key, str) or not (8 <= len(idempotency_key) <= 64):
            raise ServiceError("idempotency_key: missing or malformed")
        if not (0 <= index < len(participant.plan)):
            raise TrialNotFound(f"there is no trial {index + 1} in this session")
        entry = participant.plan[index]
        # trial id -> idempotency key of every trial this participant has saved (one query)
        saved = dict(TrialResponse.objects.filter(participant=participant).values_list("trial_id", "idempotency_key"))
        if entry["trial"] in saved:
            if saved[entry["trial"]] == idempotency_key:
                return SaveResult(created=False, next_index=_first_unsaved(participant, saved), participant=participant)
            raise ConflictError("this trial was already submitted")
        if participant.experiment.status != Experiment.Status.OPEN:
            raise ConflictError("this listening test is closed; no more ratings are accepted")
        if participant.stage not in (Participant.Stage.TRAINING, Participant.Stage.TRIALS):
            raise ConflictError(f"ratings are not accepted at this stage ({participant.get_stage_display().lower()})")
        keys = signal_keys(entry)
        if not isinstance(ratings, dict):
            raise ServiceError("ratings: expected an object of signal -> score")
        unknown = sorted(set(ratings) - set(keys))
        if unknown:
            raise ServiceError(f"ratings: {', '.join(map(str, unknown))} not a signal of this trial")
        missing = sorted(set(keys) - set(ratings))
        if missing:
            raise ServiceError(f"ratings: {len(missing)} signal(s) not rated")
        scores: dict[int, int] = {}
        for key, value in ratings.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ServiceError(f"ratings: the score of {key} is not a number")
            if not (0 <= value <= 100):
                raise ServiceError(f"ratings: the score of {key} ({value}) is outside 0..100")
            scores[keys[key]] = int(round(value))
        response = TrialResponse.objects.create(
            participant=participant, trial_id=entry["trial"], idempotency_key=idempotency_key, telemetry=telemetry or {}
        )
        if not entry.get("training"):
            Rating.objects.bulk_create(
                [
                    Rating(
                        participant=participant,
                        trial_id=entry["trial"],
                        condition_id=cid,
                        score=score,
                        response=response,
                    )
                    for cid, score in scores.items()
                ]
            )
        nxt = _first_unsaved(participant, {**saved, entry["trial"]: idempotency_key})
        if nxt is None:
            participant.stage = (
                Participant.Stage.QUESTIONNAIRE
                if questionnaire_fields(participant.experiment)
                else Participant.Stage.COMPLETED
            )
        else:
            participant.stage = (
                Participant.Stage.TRAINING if participant.plan[nxt].get("training") else Participant.Stage.TRIALS
            )
        if participant.stage == Participant.Stage.COMPLETED:
            _complete(participant)
        participant.save(update_fields=["stage", "completed_at", "completion_code"])
    return SaveResult(created=True, next_index=nxt, participant=participant)


def signal_keys(entry: dict) -> dict[str, int]:
    """Opaque per-trial signal keys (a, b, c, ...) in the participant's shuffled order."""
    return {chr(ord("a") + i): cid for i, cid in enumerate(entry["conditions"])}


def _complete(participant: Participant) -> None:
    participant.completed_at = timezone.now()
    participant.completion_code = participant.experiment.config.get("completion_code") or secrets.token_hex(4).upper()


@transaction.atomic
def submit_questionnaire(*, participant: Participant, answers: dict[str, str]) -> Participant:
    participant = Participant.objects.select_for_update().select_related("experiment").get(pk=participant.pk)
    if participant.stage != Participant.Stage.QUESTIONNAIRE:
        return participant
    participant.questionnaire = {k: str(v)[:2000] for k, v in answers.items()}
    participant.stage = Participant.Stage.COMPLETED
    _complete(participant)
    participant.save(update_fields=["questionnaire", "stage", "completed_at", "completion_code"])
    return participant
