"""Participant sessions: the per-participant plan, consent, level, trials and the questionnaire
(the headphone check is in ``screening``). Every save is one transaction; a replay of the same key is a no-op.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
from dataclasses import dataclass

import numpy as np
from django.core import signing
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from .. import paradigms
from ..errors import ConflictError, FieldError, ServiceError, TrialNotFound
from ..models import Experiment, Participant, Rating, Stimulus, StimulusToken, TrialResponse
from ..rules import (
    LEVEL_GAIN_DB,
    check_trial,
    clean_comment,
    exit_link,
    flow,
    headphone_settings,
    player_rules,
    questionnaire_fields,
    trial_comments,
)
from . import catch, plans, quality, repeats, tokens
from .tokens import key_tokens, record_stimulus_fetch, signal_keys, trial_tokens

__all__ = ["key_tokens", "record_stimulus_fetch", "signal_keys", "trial_tokens"]

log = logging.getLogger(__name__)


@transaction.atomic
def start_participant(
    *,
    experiment: Experiment,
    prolific_pid: str = "",
    study_id: str = "",
    session_id: str = "",
    user_agent: str = "",
    pilot: bool = False,
) -> Participant:
    """A new participant (or, with Prolific's ids, the one that submission started).
    ``pilot``: a session through the researcher's pilot link, kept out of the data."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if experiment.status != Experiment.Status.OPEN:
        raise ConflictError("this listening test is not open")
    if prolific_pid and not pilot:
        existing = experiment.participants.filter(prolific_pid=prolific_pid).first()
        if existing is not None:
            # A Prolific ID alone is no proof (anyone can type one): it resumes with the session ID
            # Prolific gave that submission (the same browser resumes through its cookie instead).
            if session_id and session_id[:64] == existing.prolific_session_id:
                return existing
            raise ConflictError(
                "this Prolific ID has already started this study. Continue in the browser where you "
                "started, or open the study again from your Prolific submission"
            )
    rng = random.Random(secrets.randbits(64))
    participant = Participant.objects.create(
        experiment=experiment,
        prolific_pid=prolific_pid[:64],
        prolific_study_id=study_id[:64],
        prolific_session_id=session_id[:64],
        user_agent=user_agent[:400],
        plan=plans.make_plan(experiment, rng),
        is_pilot=bool(pilot),
    )
    stimuli = Stimulus.objects.filter(experiment=experiment)
    StimulusToken.objects.bulk_create([StimulusToken(participant=participant, stimulus=s) for s in stimuli])
    catch.create_tokens(participant)
    repeats.create_tokens(participant)
    tokens.create_paradigm_tokens(participant)
    return participant


def pilot_link_code(experiment: Experiment) -> str:
    """The signed code of an experiment's pilot link (``?pilot=``); only its researchers see it."""
    return signing.Signer(salt=f"webmushra.pilot.{experiment.public_token}").sign("pilot").split(":", 1)[1]


def pilot_link_valid(experiment: Experiment, code: str) -> bool:
    """Whether ``code`` is this experiment's pilot code (compared in constant time)."""
    # Compared as bytes: compare_digest refuses str with non-ASCII characters (a TypeError).
    return secrets.compare_digest(str(code).encode("utf-8", "replace"), pilot_link_code(experiment).encode())


def _first_stage_after_consent(participant: Participant) -> str:
    """consent -> level (if on) -> headphone check (if on) -> trials: the check is heard at the
    level the participant set, and the level page comes first so that it can be."""
    if flow(participant.experiment, "level_setting"):
        return Participant.Stage.LEVEL
    return _stage_after_level(participant)


def _stage_after_level(participant: Participant) -> str:
    if headphone_settings(participant.experiment)["enabled"]:
        return Participant.Stage.SCREENING
    return trial_stage(participant)


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


def trial_stage(participant: Participant) -> str:
    nxt = next_plan_index(participant)
    if nxt is None:
        return Participant.Stage.QUESTIONNAIRE
    return Participant.Stage.TRAINING if participant.plan[nxt].get("training") else Participant.Stage.TRIALS


@transaction.atomic
def set_level(*, participant: Participant, gain_db: float) -> Participant:
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    if participant.stage != Participant.Stage.LEVEL:
        return participant
    low, high = LEVEL_GAIN_DB
    if not (np.isfinite(gain_db) and low <= float(gain_db) <= high):
        raise ServiceError(f"gain_db must be between {low:g} and +{high:g} dB")
    participant.level = {"gain_db": float(gain_db), "set_at": timezone.now().isoformat()}
    participant.stage = _stage_after_level(participant)
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
    ratings: object = None,
    telemetry: dict | None = None,
    comment: object = None,
    answer: object = None,
) -> SaveResult:
    """Store one trial's ratings (MUSHRA) or answer (other paradigms, ``paradigms.clean_answer``)
    in one transaction; a replay of the same key is a no-op.

    The participant is given as an instance or by ``token`` (``Participant.DoesNotExist``
    when there is none). ``ratings`` maps the opaque per-trial signal keys the page was
    given to 0..100 scores; ``comment`` is the trial's comment (``rules.clean_comment``
    against ``config["trial_comments"]``; training trials take none).
    """
    lookup = {"pk": participant.pk} if participant is not None else {"token": token}
    with transaction.atomic():
        participant = Participant.objects.select_for_update().select_related("experiment").get(**lookup)
        if not isinstance(idempotency_key, str) or not (8 <= len(idempotency_key) <= 64):
            raise ServiceError("idempotency_key: " + gettext("missing or malformed"))
        if not (0 <= index < len(participant.plan)):
            raise TrialNotFound(f"there is no trial {index + 1} in this session")
        entry = participant.plan[index]
        # trial id -> idempotency key of every trial this participant has saved (one query)
        saved = dict(TrialResponse.objects.filter(participant=participant).values_list("trial_id", "idempotency_key"))
        if entry["trial"] in saved:
            if saved[entry["trial"]] == idempotency_key:
                return SaveResult(created=False, next_index=_first_unsaved(participant, saved), participant=participant)
            raise ConflictError(gettext("this trial was already submitted"))
        if participant.experiment.status != Experiment.Status.OPEN:
            raise ConflictError(gettext("this listening test is closed; no more ratings are accepted"))
        if participant.stage not in (Participant.Stage.TRAINING, Participant.Stage.TRIALS):
            raise ConflictError(
                gettext("ratings are not accepted at this stage (%(stage)s)")
                % {"stage": str(participant.get_stage_display()).lower()}
            )
        # Only the key the server issued for this trial, and only for the next unsaved trial.
        if idempotency_key != entry["key"]:
            raise ServiceError("idempotency_key: " + gettext("not the key this trial was given; reload the page"))
        expected = _first_unsaved(participant, saved)
        if expected != index:
            raise ConflictError(
                gettext("trial %(number)s comes first: trials are saved in their order")
                % {"number": (expected or 0) + 1}
            )
        keys = signal_keys(entry)
        paradigm = paradigms.paradigm_of(entry)
        if paradigm != paradigms.MUSHRA:
            if ratings is not None:
                raise FieldError(
                    "ratings",
                    gettext("a %(paradigm)s trial is saved with an answer")
                    % {"paradigm": paradigms.PARADIGMS[paradigm]},
                )
            return _submit_answer(participant, entry, idempotency_key, saved, answer, telemetry, comment)
        if not isinstance(ratings, dict):
            raise ServiceError("ratings: " + gettext("expected an object of signal -> score"))
        unknown = sorted(set(ratings) - set(keys))
        if unknown:
            raise ServiceError(
                "ratings: "
                + gettext("%(signals)s not a signal of this trial") % {"signals": ", ".join(map(str, unknown))}
            )
        missing = sorted(set(keys) - set(ratings))
        if missing:
            raise ServiceError("ratings: " + gettext("%(count)s signal(s) not rated") % {"count": len(missing)})
        scores: dict[int, int] = {}
        by_key: dict[str, int] = {}
        for key, value in ratings.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (isinstance(value, float) and not math.isfinite(value))
            ):
                raise ServiceError("ratings: " + gettext("the score of %(signal)s is not a number") % {"signal": key})
            if not (0 <= value <= 100):
                shown = f"{value:g}" if isinstance(value, float) or abs(value) < 10**9 else gettext("a huge number")
                raise ServiceError(
                    "ratings: "
                    + gettext("the score of %(signal)s (%(score)s) is outside 0..100") % {"signal": key, "score": shown}
                )
            scores[keys[key]] = by_key[key] = int(round(value))
        mode = "off" if entry.get("training") else trial_comments(participant.experiment.config)
        comment_text = clean_comment(mode, comment)
        # The server referees: every enabled rule, against the page's log and its own record.
        telemetry = telemetry if isinstance(telemetry, dict) else {}
        delivery = tokens.delivery(participant, entry, keys)
        check_trial(player_rules(participant.experiment), list(keys), by_key, telemetry, delivery)
        flags = (
            []
            if entry.get("training")
            else quality.flags_for_save(
                experiment=participant.experiment, keys=keys, ratings=by_key, telemetry=telemetry, delivery=delivery
            )
        )
        caught = catch.outcome(participant.experiment, entry, scores, flags) if entry.get("catch") else {}
        response = TrialResponse.objects.create(
            participant=participant,
            trial_id=entry["trial"],
            idempotency_key=idempotency_key,
            telemetry=telemetry,
            flags=flags,
            catch=caught,
            repeat=repeats.outcome(entry, scores) if entry.get("repeat") else {},
            comment=comment_text,
        )
        # Catch and repeated trials keep their scores on the response: ratings are first presentations.
        if not entry.get("training") and not entry.get("catch") and not entry.get("repeat"):
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
        return _advance(participant, entry, idempotency_key, saved)


def _submit_answer(
    participant: Participant,
    entry: dict,
    idempotency_key: str,
    saved: dict,
    answer: object,
    telemetry: dict | None,
    comment: object,
) -> SaveResult:
    """The save of a trial of another paradigm (inside ``submit_trial``'s transaction): the
    answer checked and stored by condition id, the listening rules refereed as for MUSHRA."""
    paradigm = paradigms.paradigm_of(entry)
    if answer is None:
        raise FieldError(
            "answer",
            gettext("a %(paradigm)s trial is saved with an answer") % {"paradigm": paradigms.PARADIGMS[paradigm]},
        )
    block = paradigms.block_of(participant.experiment.config, entry)
    stored = paradigms.clean_answer(entry, answer, paradigms.points(block))
    keys = signal_keys(entry)
    mode = "off" if entry.get("training") else trial_comments(participant.experiment.config)
    comment_text = clean_comment(mode, comment)
    telemetry = telemetry if isinstance(telemetry, dict) else {}
    delivery = tokens.delivery(participant, entry, keys)
    rules = paradigms.rules_for(paradigm, player_rules(participant.experiment))
    check_trial(rules, list(keys), {}, telemetry, delivery)
    # A gold or trapping question (ITU-T P.808) keeps its outcome as a catch trial does, never as
    # an answer of the analysis; a failed one flags the response.
    kind = "gold" if entry.get("gold") else "trapping" if entry.get("trap") else ""
    gold = paradigms.check_outcome(kind, entry.get("gold") or entry["trap"], int(stored["score"])) if kind else {}
    flags = [] if not gold or gold["passed"] else [catch.check_flag(gold)]
    TrialResponse.objects.create(
        participant=participant,
        trial_id=entry["trial"],
        idempotency_key=idempotency_key,
        telemetry=telemetry,
        answer={"paradigm": paradigm, **stored},
        catch=gold,
        flags=flags,
        comment=comment_text,
    )
    return _advance(participant, entry, idempotency_key, saved)


def _advance(participant: Participant, entry: dict, idempotency_key: str, saved: dict) -> SaveResult:
    """After a save: the participant's next stage (and completion at the end)."""
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
    participant.save(update_fields=["stage", "completed_at", "completion_code", "exit_code", "exit_url"])
    return SaveResult(created=True, next_index=nxt, participant=participant)


def _complete(participant: Participant) -> None:
    participant.completed_at = timezone.now()
    participant.completion_code = participant.experiment.config.get("completion_code") or secrets.token_hex(4).upper()
    set_exit(participant)


def set_exit(participant: Participant) -> None:
    """Record where a participant who reached the end is sent: completers to the completion
    code or URL, the screened-out to the screen-out code or URL (``rules.exit_link``)."""
    if participant.stage == Participant.Stage.COMPLETED:
        code, url = exit_link(participant.experiment.config, "completed", participant.completion_code)
    elif participant.stage == Participant.Stage.SCREENED_OUT:
        code, url = exit_link(participant.experiment.config, "screened_out")
    else:
        return
    participant.exit_code, participant.exit_url = code, url


@transaction.atomic
def record_exit(*, participant: Participant) -> Participant:
    """Record the exit of a participant who finished before exits were recorded (idempotent)."""
    participant = Participant.objects.select_for_update().select_related("experiment").get(pk=participant.pk)
    if not (participant.exit_code or participant.exit_url):
        set_exit(participant)
        participant.save(update_fields=["exit_code", "exit_url"])
    return participant


@transaction.atomic
def submit_questionnaire(*, participant: Participant, answers: dict[str, str]) -> Participant:
    participant = Participant.objects.select_for_update().select_related("experiment").get(pk=participant.pk)
    if participant.stage != Participant.Stage.QUESTIONNAIRE:
        return participant
    participant.questionnaire = {k: str(v)[:2000] for k, v in answers.items()}
    participant.stage = Participant.Stage.COMPLETED
    _complete(participant)
    participant.save(
        update_fields=["questionnaire", "stage", "completed_at", "completion_code", "exit_code", "exit_url"]
    )
    return participant
