"""The per-participant plan: which trials a participant gets, in which order, and the order of
the signals within each (training first, then the tests with catch and repeated trials placed among them).
"""

from __future__ import annotations

import random
import secrets

from ..models import Experiment, Participant
from . import catch, repeats


def make_plan(experiment: Experiment, rng: random.Random) -> list[dict]:
    """Per-participant order of trials and of the conditions within each (BS.1534-3 §3: random order)."""
    conditions = list(experiment.conditions.values_list("pk", flat=True))
    trials = list(
        experiment.trials.filter(is_training=False, is_catch=False, repeat_of__isnull=True).values_list("pk", flat=True)
    )
    training = list(experiment.trials.filter(is_training=True).values_list("pk", flat=True))
    subset = int(experiment.config.get("trial_subset_size") or 0)
    if 0 < subset < len(trials):
        # Balanced subset: the items least used so far first, ties broken at random.
        counts = {t: 0 for t in trials}
        for earlier in (
            experiment.participants.exclude(stage=Participant.Stage.SCREENED_OUT)
            .exclude(is_pilot=True)
            .values_list("plan", flat=True)
        ):
            for entry in earlier:
                if entry.get("trial") in counts and not entry.get("training"):
                    counts[entry["trial"]] += 1
        ranked = sorted(trials, key=lambda t: (counts[t], rng.random()))
        trials = ranked[:subset]
    rng.shuffle(trials)
    plan: list[dict] = []
    tests: list[dict] = []
    for t in training:
        order = conditions[:]
        rng.shuffle(order)
        plan.append({"trial": t, "training": True, "conditions": order, "key": secrets.token_hex(8)})
    for t in trials:
        order = conditions[:]
        rng.shuffle(order)
        tests.append({"trial": t, "training": False, "conditions": order, "key": secrets.token_hex(8)})
    tests = catch.add_to_plan(experiment, tests, conditions, rng)
    return plan + repeats.add_to_plan(experiment, tests, conditions, rng)
