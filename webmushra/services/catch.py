"""Catch trials: a test excerpt's trial again, with one model's signal replaced by the reference.

A participant who listens rates the duplicate like the hidden reference (near 100); one who
rates it low was not listening, or cannot hear the difference the test asks about. The catch
trial looks like every other test trial: the same number of signals, audio of the same
length and format, and tokens of its own (``StimulusToken.trial``/``slot``), so neither its
URLs nor its sizes tie it to the excerpt's test trial or show which signal is the duplicate.
Its scores are kept with its response (``TrialResponse.catch``), never as ratings, so it is
not in the analysis; a low duplicate gets the ``catch_failed`` flag (``rules.FLAGS``).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Mapping
from typing import Any

from ..models import ConditionKind, Experiment, Participant, Stimulus, StimulusToken, Trial
from ..paradigms import MUSHRA
from ..rules import FLAGS, catch_trial_count, quality_settings


def ensure_catch_trials(experiment: Experiment) -> None:
    """One catch trial per test excerpt of the MUSHRA block, made when the experiment opens with
    catch trials on (the other paradigms' trials have none; ACR / DCR ask gold questions)."""
    if not catch_trial_count(experiment.config):
        return
    for trial in experiment.trials.filter(paradigm=MUSHRA, is_training=False, is_catch=False, repeat_of__isnull=True):
        Trial.objects.get_or_create(
            experiment=experiment,
            excerpt_id=trial.excerpt_id,
            paradigm=MUSHRA,
            design_key="",
            is_training=False,
            is_catch=True,
            repeat_of=None,
            defaults={"position": trial.position, "block": trial.block},
        )


def add_to_plan(experiment: Experiment, tests: list[dict], conditions: list[int], rng: random.Random) -> list[dict]:
    """The participant's test entries with their catch trials placed at random among them (never
    first): each repeats one of the participant's own test excerpts, in a new signal order, with
    a randomly chosen model's signal replaced by the reference."""
    n = min(catch_trial_count(experiment.config), len(tests))
    if not n:
        return tests
    kinds = dict(experiment.conditions.values_list("pk", "kind"))
    replaceable = [c for c in conditions if kinds[c] == ConditionKind.MODEL] or [
        c for c in conditions if kinds[c] != ConditionKind.HIDDEN_REFERENCE
    ]
    if not replaceable:
        return tests
    excerpt_of = dict(Trial.objects.filter(pk__in=[e["trial"] for e in tests]).values_list("pk", "excerpt_id"))
    catch_of = dict(
        experiment.trials.filter(paradigm=MUSHRA, is_catch=True, excerpt_id__in=excerpt_of.values()).values_list(
            "excerpt_id", "pk"
        )
    )
    out = list(tests)
    for entry in rng.sample(tests, n):
        catch = catch_of.get(excerpt_of[entry["trial"]])
        if catch is None:
            continue
        order = conditions[:]
        rng.shuffle(order)
        new = {
            "trial": catch,
            "training": False,
            "catch": True,
            "conditions": order,
            "replaced": rng.choice(replaceable),
            "key": secrets.token_hex(8),
        }
        out.insert(rng.randint(1, len(out)), new)
    return out


def create_tokens(participant: Participant) -> None:
    """The catch trials' own tokens: every signal of a catch trial under a new token, the
    replaced model's slot pointing at the reference's audio."""
    entries = [e for e in participant.plan if e.get("catch")]
    if not entries:
        return
    excerpt_of = dict(Trial.objects.filter(pk__in=[e["trial"] for e in entries]).values_list("pk", "excerpt_id"))
    stimuli = {
        (excerpt, condition): (pk, kind)
        for pk, excerpt, condition, kind in Stimulus.objects.filter(
            experiment_id=participant.experiment_id, excerpt_id__in=excerpt_of.values()
        ).values_list("pk", "excerpt_id", "condition_id", "condition__kind")
    }
    tokens = []
    for entry in entries:
        excerpt = excerpt_of[entry["trial"]]
        reference = next(pk for (x, _), (pk, kind) in stimuli.items() if x == excerpt and kind == "hidden_reference")
        for cid in entry["conditions"]:
            stimulus = reference if cid == entry["replaced"] else stimuli[(excerpt, cid)][0]
            tokens.append(
                StimulusToken(participant=participant, stimulus_id=stimulus, trial_id=entry["trial"], slot_id=cid)
            )
    StimulusToken.objects.bulk_create(tokens)


def outcome(experiment: Experiment, entry: dict, scores: Mapping[int, int], flags: list[dict]) -> dict[str, Any]:
    """What a catch trial's response keeps: the replaced condition, the duplicate's score, the
    hidden reference's score and every signal's score by condition id. A duplicate rated below
    ``quality.catch_min`` adds the ``catch_failed`` flag to ``flags`` (kept in ``rules.FLAGS`` order)."""
    hidden = experiment.conditions.filter(kind=ConditionKind.HIDDEN_REFERENCE).values_list("pk", flat=True).first()
    result = {
        "replaced": entry["replaced"],
        "duplicate": scores[entry["replaced"]],
        "hidden_reference": scores.get(hidden) if hidden is not None else None,
        "scores": {str(cid): score for cid, score in scores.items()},
    }
    threshold = float(quality_settings(experiment)["catch_min"])
    result["passed"] = result["duplicate"] >= threshold
    if not result["passed"]:
        flags.append(
            {
                "code": "catch_failed",
                "value": result["duplicate"],
                "threshold": threshold,
                "message": f"catch trial: the duplicate of the reference rated {result['duplicate']} "
                f"(below {threshold:g})",
            }
        )
        order = list(FLAGS)
        flags.sort(key=lambda f: order.index(f["code"]))
    return result


def check_flag(outcome: dict) -> dict:
    """The flag (``rules.FLAGS``) of a gold question answered outside its tolerance
    (``gold_failed``) or a trapping question not answered as its message asked (``trap_failed``)."""
    if outcome["check"] == "trapping":
        code, words = "trap_failed", f"trapping question: answered {outcome['score']} where the message asked for "
        words += f"{outcome['expected']}"
    else:
        code, words = "gold_failed", f"gold question: answered {outcome['score']} where {outcome['expected']} is "
        words += f"known (more than {outcome['tolerance']} away)"
    return {
        "code": code,
        "value": outcome["score"],
        "expected": outcome["expected"],
        "tolerance": outcome["tolerance"],
        "message": words,
    }
