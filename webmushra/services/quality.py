"""Quality control: flags on every saved test trial, their summaries, and exclusion by hand.

A flag marks a trial for the researcher and rejects nothing (the rules in ``rules.py`` do
that on save). The flags and their thresholds are defined in ``rules.FLAGS`` and
``rules.QUALITY_DEFAULTS``; the researcher sees them on the monitor and in the exports and
may exclude a participant with a reason: an excluded participant stays in the exports and
is left out of the analysis, and the report lists who and why.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from django.db import transaction
from django.utils import timezone

from ..errors import ServiceError
from ..inputs import text_problem
from ..models import Condition, ConditionKind, Experiment, Participant, TrialResponse
from ..paradigms import MUSHRA, blocks
from ..rules import FLAGS, Delivery, catch_trial_count, listen_seconds, page_seconds, player_rules, quality_settings
from ..selectors import check_responses, participant_flags

#: The longest exclusion reason kept.
REASON_MAX = 1000


def trial_flags(
    *,
    ratings: Mapping[str, int],
    reference_keys: Collection[str],
    heard: Mapping[str, bool],
    seconds_on_page: float | None,
    settings: Mapping[str, float],
) -> list[dict[str, Any]]:
    """The quality-control flags of one test trial, in ``rules.FLAGS`` order.

    ``ratings``: signal key -> 0..100; ``reference_keys``: the hidden reference's key(s);
    ``heard``: whether each signal was heard (fetched by the page and played); the
    thresholds come from ``settings`` (``rules.quality_settings``). Each flag is
    ``{code, value, threshold, message}``. Reference not found follows BS.1534-3 §4.1.2
    (post-screening: the hidden reference rated below 90); straight-lining and
    too-fast responding are the careless-responding indices of Meade & Craig (2012).
    """
    flags: list[dict[str, Any]] = []
    fast = float(settings["too_fast_seconds"])
    if seconds_on_page is not None and seconds_on_page < fast:
        flags.append(
            _flag(
                "too_fast", round(seconds_on_page, 1), fast, f"{seconds_on_page:.1f} s on the page (below {fast:g} s)"
            )
        )
    unheard = [k for k in ratings if not heard.get(k, False)]
    if unheard:
        flags.append(
            _flag(
                "no_playback", len(unheard), None, f"{len(unheard)} of {len(ratings)} signal(s) rated without playback"
            )
        )
    values = set(ratings.values())
    if len(ratings) >= 2 and len(values) == 1:
        (value,) = values
        flags.append(_flag("straight_lining", value, None, f"every signal rated {value}"))
    least = float(settings["reference_min"])
    for key in reference_keys:
        if key in ratings and ratings[key] < least:
            flags.append(
                _flag(
                    "reference_not_found",
                    ratings[key],
                    least,
                    f"hidden reference rated {ratings[key]} (below {least:g})",
                )
            )
            break
    order = list(FLAGS)
    return sorted(flags, key=lambda f: order.index(f["code"]))


def _flag(code: str, value: Any, threshold: float | None, message: str) -> dict[str, Any]:
    return {"code": code, "value": value, "threshold": threshold, "message": message}


def flags_for_save(
    *,
    experiment: Experiment,
    keys: Mapping[str, int],
    ratings: Mapping[str, int],
    telemetry: dict,
    delivery: Delivery,
) -> list[dict[str, Any]]:
    """The flags of a test trial being saved: the page's telemetry and the server's record
    (``Delivery``) read into ``trial_flags``. ``keys``: signal key -> condition id."""
    kinds = dict(Condition.objects.filter(pk__in=keys.values()).values_list("pk", "kind"))
    order = list(keys)
    listened = listen_seconds(telemetry, order)
    heard = {k: delivery.fetches.get(k, 0) > 0 and listened[k] > 0 for k in order}
    seconds = [s for s in (page_seconds(telemetry), delivery.since_previous_step_s) if s is not None]
    return trial_flags(
        ratings=ratings,
        reference_keys=[k for k, cid in keys.items() if kinds.get(cid) == ConditionKind.HIDDEN_REFERENCE],
        heard=heard,
        seconds_on_page=min(seconds) if seconds else None,
        settings=quality_settings(experiment),
    )


def quality_summary(experiment: Experiment) -> dict[str, Any]:
    """What the report states about quality control: the rules the server enforced, the
    flags (trials and participants flagged, per flag), what was done with them, and who
    the researcher excluded and why."""
    per_participant = participant_flags(experiment)
    excluded = list(
        experiment.participants.filter(excluded_at__isnull=False)
        .order_by("pk")
        .values_list("pk", "exclusion_reason", "excluded_at")
    )
    excluded_pks = {pk for pk, _, _ in excluded}
    flagged = {pk for pk, row in per_participant.items() if row["flagged_trials"]}
    by_flag: dict[str, int] = {}
    for row in per_participant.values():
        for code, n in row["counts"].items():
            by_flag[code] = by_flag.get(code, 0) + n
    return {
        "rules": player_rules(experiment),
        "thresholds": quality_settings(experiment),
        "flag_meanings": dict(FLAGS),
        "trials": sum(r["trials"] for r in per_participant.values()),
        "flagged_trials": sum(r["flagged_trials"] for r in per_participant.values()),
        "trials_by_flag": {code: by_flag[code] for code in FLAGS if code in by_flag},
        "participants": len(per_participant),
        "flagged_participants": len(flagged),
        "flagged_participants_excluded": len(flagged & excluded_pks),
        "excluded": [
            {
                "participant": f"P{pk}",
                "reason": reason,
                "excluded_at": at.isoformat() if at else None,
                "flags": per_participant.get(pk, {}).get("counts", {}),
            }
            for pk, reason, at in excluded
        ],
        "catch_trials": _catch_summary(experiment),
        "gold_questions": _check_summary(experiment, "gold"),
        "trapping_questions": _check_summary(experiment, "trapping"),
        "action": (
            "Trials breaking an enabled rule were refused on submission and are not in the data. Flags are "
            "shown to the researcher and kept in the exports; flagged participants stay in the analysis unless "
            "the researcher excluded them by hand (listed with the reason)."
        ),
    }


def _catch_summary(experiment: Experiment) -> dict[str, Any]:
    """Catch trials per participant, answered, failed, and by how many participants."""
    outcomes = list(
        TrialResponse.objects.filter(
            trial__experiment=experiment, trial__is_catch=True, trial__paradigm=MUSHRA, participant__is_pilot=False
        ).values_list("participant_id", "catch")
    )
    failed = [pk for pk, c in outcomes if (c or {}).get("passed") is False]
    return {
        "per_participant": catch_trial_count(experiment.config),
        "threshold": quality_settings(experiment)["catch_min"],
        "answered": len(outcomes),
        "failed": len(failed),
        "failed_participants": len(set(failed)),
    }


def _check_summary(experiment: Experiment, kind: str) -> dict[str, Any]:
    """Gold or trapping questions (``kind``) of the ACR / DCR blocks (ITU-T P.808): per
    participant, answered, failed, and by how many participants (their votes are left out of
    the block's analysis)."""
    outcomes = [
        (pk, c)
        for pk, c in check_responses(experiment).values_list("participant_id", "catch")
        if (c or {}).get("check") == kind
    ]
    failed = [pk for pk, c in outcomes if c.get("passed") is False]
    return {
        # ``kind`` is also the block setting that lists the questions.
        "per_participant": sum(len(b[kind]) for b in blocks(experiment.config)),
        "answered": len(outcomes),
        "failed": len(failed),
        "failed_participants": len(set(failed)),
    }


@transaction.atomic
def exclude_participant(*, participant: Participant, reason: str) -> Participant:
    """Exclude a participant by hand: kept in the data and the exports, left out of the analysis."""
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("reason: say why this participant is excluded (it goes into the report)")
    if len(reason) > REASON_MAX:
        raise ServiceError(f"reason: at most {REASON_MAX} characters")
    if text_problem(reason):
        raise ServiceError(f"reason: {text_problem(reason)}")
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    participant.excluded_at = participant.excluded_at or timezone.now()
    participant.exclusion_reason = reason
    participant.save(update_fields=["excluded_at", "exclusion_reason"])
    return participant


@transaction.atomic
def include_participant(*, participant: Participant) -> Participant:
    """Undo an exclusion: the participant is analysed again."""
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    participant.excluded_at = None
    participant.exclusion_reason = ""
    participant.save(update_fields=["excluded_at", "exclusion_reason"])
    return participant
