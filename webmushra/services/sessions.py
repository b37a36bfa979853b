"""Participant sessions: the per-participant plan, consent, level, trials and the questionnaire
(the headphone check is in ``screening``). Every save is one transaction; a replay of the same key is a no-op.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from django.core import signing
from django.db import transaction
from django.db.models import F, Max, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .. import paradigms
from ..errors import ConflictError, FieldError, ServiceError, TrialNotFound
from ..models import Experiment, Participant, Rating, Stimulus, StimulusToken, Trial, TrialResponse
from ..rules import (
    LEVEL_GAIN_DB,
    Delivery,
    check_trial,
    clean_comment,
    exit_link,
    flow,
    headphone_settings,
    player_rules,
    questionnaire_fields,
    trial_comments,
)
from . import catch, plans, quality, repeats

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
    _create_paradigm_tokens(participant)
    return participant


def _create_paradigm_tokens(participant: Participant) -> None:
    """Every signal of a trial of another paradigm gets a token of its own (trial and key): the
    same audio never has the same URL twice, so no URL tells ABX's X apart or links trials."""
    entries = [e for e in participant.plan if paradigms.paradigm_of(e) != paradigms.MUSHRA]
    if not entries:
        return
    excerpt_of = dict(Trial.objects.filter(pk__in=[e["trial"] for e in entries]).values_list("pk", "excerpt_id"))
    stimulus_of = {
        (x, c): pk
        for pk, x, c in Stimulus.objects.filter(experiment_id=participant.experiment_id).values_list(
            "pk", "excerpt_id", "condition_id"
        )
    }
    StimulusToken.objects.bulk_create(
        [
            StimulusToken(
                participant=participant,
                stimulus_id=stimulus_of[(excerpt_of[e["trial"]], cid)],
                trial_id=e["trial"],
                slot_id=cid,
                role=key,
            )
            for e in entries
            for key, cid in paradigms.signal_keys(e).items()
        ]
    )


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


def record_stimulus_fetch(*, token_id: int) -> None:
    """Record one delivery of a stimulus token's audio: the first time, and the count (one UPDATE).

    Only the token's own URL counts; the open reference's URL is another thing and is not recorded
    on the hidden reference's token.
    """
    StimulusToken.objects.filter(pk=token_id).update(
        fetches=F("fetches") + 1, first_fetched_at=Coalesce(F("first_fetched_at"), Value(timezone.now()))
    )


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
        # Only the key the server issued for this trial, and only for the next unsaved trial.
        if idempotency_key != entry["key"]:
            raise ServiceError("idempotency_key: not the key this trial was given; reload the page")
        expected = _first_unsaved(participant, saved)
        if expected != index:
            raise ConflictError(f"trial {(expected or 0) + 1} comes first: trials are saved in their order")
        keys = signal_keys(entry)
        paradigm = paradigms.paradigm_of(entry)
        if paradigm != paradigms.MUSHRA:
            if ratings is not None:
                raise FieldError("ratings", f"a {paradigms.PARADIGMS[paradigm]} trial is saved with an answer")
            return _submit_answer(participant, entry, idempotency_key, saved, answer, telemetry, comment)
        if not isinstance(ratings, dict):
            raise ServiceError("ratings: expected an object of signal -> score")
        unknown = sorted(set(ratings) - set(keys))
        if unknown:
            raise ServiceError(f"ratings: {', '.join(map(str, unknown))} not a signal of this trial")
        missing = sorted(set(keys) - set(ratings))
        if missing:
            raise ServiceError(f"ratings: {len(missing)} signal(s) not rated")
        scores: dict[int, int] = {}
        by_key: dict[str, int] = {}
        for key, value in ratings.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (isinstance(value, float) and not math.isfinite(value))
            ):
                raise ServiceError(f"ratings: the score of {key} is not a number")
            if not (0 <= value <= 100):
                shown = f"{value:g}" if isinstance(value, float) or abs(value) < 10**9 else "a huge number"
                raise ServiceError(f"ratings: the score of {key} ({shown}) is outside 0..100")
            scores[keys[key]] = by_key[key] = int(round(value))
        mode = "off" if entry.get("training") else trial_comments(participant.experiment.config)
        comment_text = clean_comment(mode, comment)
        # The server referees: every enabled rule, against the page's log and its own record.
        telemetry = telemetry if isinstance(telemetry, dict) else {}
        delivery = _delivery(participant, entry, keys)
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
        raise FieldError("answer", f"a {paradigms.PARADIGMS[paradigm]} trial is saved with an answer")
    stored = paradigms.clean_answer(entry, answer)
    keys = signal_keys(entry)
    mode = "off" if entry.get("training") else trial_comments(participant.experiment.config)
    comment_text = clean_comment(mode, comment)
    telemetry = telemetry if isinstance(telemetry, dict) else {}
    delivery = _delivery(participant, entry, keys)
    rules = paradigms.rules_for(paradigm, player_rules(participant.experiment))
    check_trial(rules, list(keys), {}, telemetry, delivery)
    TrialResponse.objects.create(
        participant=participant,
        trial_id=entry["trial"],
        idempotency_key=idempotency_key,
        telemetry=telemetry,
        answer={"paradigm": paradigm, **stored},
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


def _delivery(participant: Participant, entry: dict, keys: dict[str, int]) -> Delivery:
    """The server's own record of a trial: the fetches of its signals' audio by this
    participant, and how long ago the trial's audio was first fetched and the step before
    the trial was finished (the page cannot have been open longer than that)."""
    now = timezone.now()
    fetched = key_tokens(participant, entry, "fetches", "first_fetched_at")
    firsts = [first for n, first in fetched.values() if first is not None]
    steps = [participant.consented_at]
    steps.append(TrialResponse.objects.filter(participant=participant).aggregate(last=Max("submitted_at"))["last"])
    for record, field in ((participant.level, "set_at"), (participant.screening, "scored_at")):
        stamp = (record or {}).get(field)
        if isinstance(stamp, str):
            try:
                steps.append(datetime.fromisoformat(stamp))
            except ValueError:
                pass
    known = [s for s in steps if s is not None]
    return Delivery(
        fetches={key: fetched.get(key, (0, None))[0] for key in keys},
        since_first_fetch_s=(now - min(firsts)).total_seconds() if firsts else None,
        since_previous_step_s=(now - max(known)).total_seconds() if known else None,
    )


def trial_tokens(participant: Participant, entry: dict, *fields: str):
    """(condition id, *fields) of the participant's tokens for one trial's signals: a catch or
    repeated trial's own tokens by the slot each fills, else the tokens of the trial's excerpt."""
    if entry.get("catch") or entry.get("repeat"):
        tokens = StimulusToken.objects.filter(participant=participant, trial_id=entry["trial"])
        return tokens.values_list("slot_id", *fields)
    tokens = StimulusToken.objects.filter(
        participant=participant, trial__isnull=True, stimulus__excerpt__trials__pk=entry["trial"]
    )
    return tokens.values_list("stimulus__condition_id", *fields)


def key_tokens(participant: Participant, entry: dict, *fields: str) -> dict[str, tuple]:
    """Signal key -> (*fields) of the participant's token for each signal of one trial: a trial
    of another paradigm has a token per key, a MUSHRA page one per condition (``trial_tokens``)."""
    if paradigms.paradigm_of(entry) != paradigms.MUSHRA:
        tokens = StimulusToken.objects.filter(participant=participant, trial_id=entry["trial"])
        return {role: tuple(rest) for role, *rest in tokens.values_list("role", *fields)}
    by_condition = {cid: tuple(rest) for cid, *rest in trial_tokens(participant, entry, *fields)}
    return {key: by_condition[cid] for key, cid in signal_keys(entry).items() if cid in by_condition}


def signal_keys(entry: dict) -> dict[str, int]:
    """Opaque per-trial signal keys in page order -> condition id (``paradigms.signal_keys``:
    a, b, c, ... in the participant's shuffled order on a MUSHRA page)."""
    return paradigms.signal_keys(entry)


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
