"""The per-participant plan: which trials a participant gets, in which order, and the order of
the signals within each (training first, then the tests with catch and repeated trials placed among them).
"""

from __future__ import annotations

import random
import secrets

from .. import paradigms
from ..models import Experiment, Participant
from . import catch, repeats


def make_plan(experiment: Experiment, rng: random.Random) -> list[dict]:
    """Per-participant plan: the experiment's blocks in their order, each with its training
    trials first, then its test trials in random order."""
    conditions = list(experiment.conditions.values_list("pk", flat=True))
    plan: list[dict] = []
    for number, block in enumerate(paradigms.blocks(experiment.config)):
        if block["paradigm"] == paradigms.MUSHRA:
            plan += _mushra_block(experiment, number, conditions, rng)
        else:
            plan += _paradigm_block(experiment, number, block, conditions, rng)
    return plan


def _paradigm_block(
    experiment: Experiment, number: int, block: dict, conditions: list[int], rng: random.Random
) -> list[dict]:
    """A block of another paradigm: its trials, the conditions' order in each and ABX's X
    (``paradigms.arrange``)."""
    rows = experiment.trials.filter(block=number, paradigm=block["paradigm"], is_catch=False, repeat_of__isnull=True)
    design_of: dict[int, list[int]] = {}
    training: list[dict] = []
    tests: list[dict] = []
    for pk, is_training, design in rows.values_list("pk", "is_training", "design"):
        if is_training and not block["training"]:
            continue
        design_of[pk] = list(design) or conditions
        entry = {
            "trial": pk,
            "training": is_training,
            "block": number,
            "paradigm": block["paradigm"],
            "key": secrets.token_hex(8),
        }
        (training if is_training else tests).append(entry)
    rng.shuffle(training)
    rng.shuffle(tests)
    paradigms.arrange(training, design_of, rng)
    paradigms.arrange(tests, design_of, rng)
    return training + _add_gold(experiment, number, block, tests, rng)


def _add_gold(experiment: Experiment, number: int, block: dict, tests: list[dict], rng: random.Random) -> list[dict]:
    """The block's test entries with its gold and trapping questions (ITU-T P.808) placed at
    random among them, never first: each on a test excerpt drawn at random, presented like any
    trial of the block (``gold`` / ``trap``: the known category and the tolerance its answer is
    held to)."""
    if not (block.get("gold") or block.get("trapping")) or not tests:
        return tests
    labels = dict(experiment.conditions.values_list("label", "pk"))
    rows = experiment.trials.filter(block=number, is_catch=True).exclude(paradigm=paradigms.MUSHRA)
    trials: dict[str, list[tuple[int, list[int]]]] = {}
    for pk, key, design in rows.values_list("pk", "design_key", "design"):
        trials.setdefault(key, []).append((pk, list(design)))
    asked = [
        (paradigms.gold_key(labels.get(q["condition"], -1)), "gold", q["expected"], q["tolerance"])
        for q in block["gold"]
    ]
    # Trapping questions (ITU-T P.808 §6.3.8): the answer the message asks for, nothing else.
    asked += [(paradigms.trapping_key(k), "trap", q["answer"], 0) for k, q in enumerate(block["trapping"])]
    out = list(tests)
    for key, kind, expected, tolerance in asked:
        choices = trials.get(key)
        if not choices:
            continue
        pk, design = rng.choice(sorted(choices))
        entry = {
            "trial": pk,
            "training": False,
            "block": number,
            "paradigm": block["paradigm"],
            "key": secrets.token_hex(8),
            kind: {"expected": expected, "tolerance": tolerance},
        }
        paradigms.arrange([entry], {pk: design}, rng)
        out.insert(rng.randint(1, len(out)), entry)
    return out


def _mushra_block(experiment: Experiment, number: int, conditions: list[int], rng: random.Random) -> list[dict]:
    """The MUSHRA block (BS.1534-3 §3: random order of trials and of the signals within each)."""
    trials = list(
        experiment.trials.filter(
            block=number, paradigm=paradigms.MUSHRA, is_training=False, is_catch=False, repeat_of__isnull=True
        ).values_list("pk", flat=True)
    )
    training = list(
        experiment.trials.filter(block=number, paradigm=paradigms.MUSHRA, is_training=True).values_list("pk", flat=True)
    )
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
    # Every entry names its block (the page shows the block's instructions).
    return [e | {"block": number} for e in plan + repeats.add_to_plan(experiment, tests, conditions, rng)]
