"""A participant's stimulus tokens: the private URL of each signal, the server's record of
each delivery, and what that record says about a trial (``delivery``, which the rules check
the page's log against)."""

from __future__ import annotations

from datetime import datetime

from django.db.models import F, Max, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .. import paradigms
from ..models import Participant, Stimulus, StimulusToken, Trial, TrialResponse
from ..rules import Delivery
from . import trapping


def create_paradigm_tokens(participant: Participant) -> None:
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
                # A trapping question's signal plays its own audio (the stimulus, then the message).
                file=trapping.clip_name_of(participant.experiment_id, e["trial"]) if e.get("trap") else "",
            )
            for e in entries
            for key, cid in paradigms.signal_keys(e).items()
        ]
    )


def record_stimulus_fetch(*, token_id: int) -> None:
    """Record one delivery of a stimulus token's audio: the first time, and the count (one UPDATE).

    Only the token's own URL counts; the open reference's URL is another thing and is not recorded
    on the hidden reference's token.
    """
    StimulusToken.objects.filter(pk=token_id).update(
        fetches=F("fetches") + 1, first_fetched_at=Coalesce(F("first_fetched_at"), Value(timezone.now()))
    )


def delivery(participant: Participant, entry: dict, keys: dict[str, int]) -> Delivery:
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
