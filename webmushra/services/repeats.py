"""Repeated trials: one of a participant's own test trials presented again, later in their session.

ITU-R BS.1534-3 §4.1 asks for an assessment of each listener's reliability (at least one replicated
rating per assessor); presenting a trial twice
and comparing the two sets of scores gives a listener's test-retest consistency (the Pearson r,
mean absolute and mean signed difference of ``evaluation.reliability.retest_agreement``). The
repeat looks like every other test trial: the same signals in a fresh order, counted in the same
"Trial k of n", and served through tokens of its own (``StimulusToken.trial``/``slot``), so no URL
ties it to the first presentation. It is placed at random later in the sequence, never directly
after the original. Its scores are kept with its response (``TrialResponse.repeat``), never as
ratings: the main analysis, ``mushra.csv`` and the ratings exports see the first presentation
only, and ``selectors.repeat_rows`` feeds the repeat to the analysis's test-retest as ``repeat = 1``.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Mapping
from typing import Any

from ..models import Experiment, Participant, Stimulus, StimulusToken, Trial
from ..paradigms import MUSHRA
from ..rules import repeat_trial_count


def ensure_repeat_trials(experiment: Experiment) -> None:
    """One repeat trial per test trial of the MUSHRA block, made when the experiment opens with
    repeats on."""
    if not repeat_trial_count(experiment.config):
        return
    for trial in experiment.trials.filter(paradigm=MUSHRA, is_training=False, is_catch=False, repeat_of__isnull=True):
        Trial.objects.get_or_create(
            experiment=experiment,
            excerpt_id=trial.excerpt_id,
            is_training=False,
            is_catch=False,
            repeat_of=trial,
            defaults={"position": trial.position},
        )


def add_to_plan(experiment: Experiment, tests: list[dict], conditions: list[int], rng: random.Random) -> list[dict]:
    """The participant's test entries with their repeats placed among them: each repeats one of
    the participant's own test trials (never a catch trial) in a new signal order, at a random
    place after the original with at least one other trial between them. An original can only
    be repeated when a trial follows it, so a one-trial session gets no repeat."""
    count = repeat_trial_count(experiment.config)
    if not count:
        return tests
    originals = [e for e in tests if not e.get("catch") and not e.get("repeat")]
    repeat_of = dict(
        experiment.trials.filter(repeat_of_id__in=[e["trial"] for e in originals]).values_list("repeat_of_id", "pk")
    )
    out = list(tests)
    eligible = [e for e in originals if e["trial"] in repeat_of and out.index(e) + 2 <= len(out)]
    for entry in rng.sample(eligible, min(count, len(eligible))):
        order = conditions[:]
        rng.shuffle(order)
        new = {
            "trial": repeat_of[entry["trial"]],
            "training": False,
            "repeat": True,
            "conditions": order,
            "key": secrets.token_hex(8),
        }
        # Inserted at j, the entry before it is out[j - 1]: never the original itself.
        out.insert(rng.randint(out.index(entry) + 2, len(out)), new)
    return out


def create_tokens(participant: Participant) -> None:
    """The repeats' own tokens: every signal of a repeated trial under a new token (the same
    audio as the first presentation, another URL)."""
    entries = [e for e in participant.plan if e.get("repeat")]
    if not entries:
        return
    excerpt_of = dict(Trial.objects.filter(pk__in=[e["trial"] for e in entries]).values_list("pk", "excerpt_id"))
    stimuli = {
        (excerpt, condition): pk
        for pk, excerpt, condition in Stimulus.objects.filter(
            experiment_id=participant.experiment_id, excerpt_id__in=excerpt_of.values()
        ).values_list("pk", "excerpt_id", "condition_id")
    }
    StimulusToken.objects.bulk_create(
        [
            StimulusToken(
                participant=participant,
                stimulus_id=stimuli[(excerpt_of[entry["trial"]], cid)],
                trial_id=entry["trial"],
                slot_id=cid,
            )
            for entry in entries
            for cid in entry["conditions"]
        ]
    )


def outcome(entry: dict, scores: Mapping[int, int]) -> dict[str, Any]:
    """What a repeated trial's response keeps: the trial it repeats and every signal's score by
    condition id."""
    original = Trial.objects.filter(pk=entry["trial"]).values_list("repeat_of_id", flat=True).first()
    return {"of": original, "scores": {str(cid): score for cid, score in scores.items()}}
