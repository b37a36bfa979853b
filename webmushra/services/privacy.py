"""Participants' rights over their data: withdrawal (every record of one participant deleted)
and purging an experiment's personal data once it is closed (ratings kept, who gave them not).

Each is recorded as a ``DataDeletion`` with counts only: when, by whom, how much, never whose.
Reports already built are files of their own and stay as they are; build a new one to leave a
withdrawn participant out of it.
"""

from __future__ import annotations

import logging

from django.db import transaction

from ..errors import ConflictError
from ..models import DataDeletion, Experiment, Participant, Rating, TrialResponse

log = logging.getLogger(__name__)

#: Telemetry keys that describe the participant's device rather than the trial.
DEVICE_KEYS = ("user_agent", "screen", "viewport")


@transaction.atomic
def withdraw_participant(*, participant: Participant, by=None) -> DataDeletion:
    """Delete every record of one participant (session, answers, ratings, telemetry, tokens)."""
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    counts = {
        "sessions": 1,
        "trials": TrialResponse.objects.filter(participant=participant).count(),
        "ratings": Rating.objects.filter(participant=participant).count(),
    }
    experiment_id = participant.experiment_id
    participant.delete()
    record = DataDeletion.objects.create(
        experiment_id=experiment_id, kind=DataDeletion.Kind.WITHDRAWAL, by=by, counts=counts
    )
    log.info("participant withdrawn from experiment %s: %s", experiment_id, counts)
    return record


@transaction.atomic
def purge_personal_data(*, experiment: Experiment, by=None) -> DataDeletion:
    """Remove what identifies or describes the people of a closed experiment: Prolific ids, user
    agents, questionnaire answers, trial comments, exit links and the device part of every trial's telemetry.
    Ratings, timings and quality flags stay, so the analysis and its report can be built again."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if experiment.status != Experiment.Status.CLOSED:
        raise ConflictError("close the experiment first: personal data is purged only when nobody can take part")
    participants = experiment.participants.all()
    sessions = participants.count()
    participants.update(
        prolific_pid="", prolific_study_id="", prolific_session_id="", user_agent="", questionnaire={}, exit_url=""
    )
    responses = 0
    for response in TrialResponse.objects.filter(participant__experiment=experiment).only("pk", "telemetry"):
        telemetry = response.telemetry or {}
        if any(k in telemetry for k in DEVICE_KEYS):
            response.telemetry = {k: v for k, v in telemetry.items() if k not in DEVICE_KEYS}
            response.save(update_fields=["telemetry"])
            responses += 1
    # Free text a participant wrote on a trial may say who they are, as a questionnaire answer may.
    comments = TrialResponse.objects.filter(participant__experiment=experiment).exclude(comment="").update(comment="")
    counts = {"sessions": sessions, "trials_with_device_data": responses, "trial_comments": comments}
    record = DataDeletion.objects.create(experiment=experiment, kind=DataDeletion.Kind.PURGE, by=by, counts=counts)
    log.info("personal data of experiment %s purged: %s", experiment.pk, counts)
    return record
