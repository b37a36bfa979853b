"""An experiment's blocks (``config["blocks"]``, :mod:`webmushra.paradigms`): changing them, and
what each block gives every participant, worked out before the experiment opens.

:func:`block_plan` counts the trials exactly as ``experiments.open_experiment`` creates them
(``paradigms.designs`` per block x test excerpt x repetition; training trials from the training
excerpts, one per design) and estimates the minutes they take; an ABX block is compared with
the trials the exact binomial test needs for a chosen power (``evaluation.paradigms.abx``, the
function behind ``python -m evaluation.paradigms abx --plan P --power``). A block that cannot
open (``paradigms.designs`` raises) is reported with its fix instead of counts.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from django.db import transaction

from evaluation.errors import EvaluationError
from evaluation.paradigms.abx import exact_power, trials_needed
from modelrunner.audio import encode_wav

from .. import paradigms
from ..errors import ConflictError, FieldError, ServiceError
from ..models import ConditionKind, Experiment
from ..rules import catch_trial_count, flow, player_rules, repeat_trial_count
from . import trapping
from .experiments import update_experiment_settings
from .files import delete_stored, store

#: The ABX plan the settings page shows unless asked for another: a listener right 75 % of the
#: time, power 0.8, one-sided alpha 0.05 (the CLI's ``--plan 0.75 --power 0.8``).
ABX_PROPORTION = 0.75
ABX_POWER = 0.8
ABX_ALPHA = 0.05

#: The minutes estimate: each signal of a trial heard this many times in full ...
PLAYS_PER_SIGNAL = 2
#: ... plus this long to answer (seconds); at least the page's minimum time per trial.
ANSWER_SECONDS = {
    paradigms.MUSHRA: 20,
    "ranking": 20,
    "bs1116": 10,
    "abx": 5,
    "ab": 5,
    "abn": 5,
    "acr": 5,
    "dcr": 5,
}
MODEL_KINDS = (ConditionKind.MODEL, ConditionKind.PRERENDERED)


def locked_message(experiment: Experiment) -> str:
    """Why the blocks of an experiment that is no longer editable cannot change."""
    return (
        f"blocks: the experiment is {experiment.get_status_display().lower()}; blocks can only change "
        "before it opens (while it is a draft or rendered)"
    )


def precheck_blocks(value: object) -> None:
    """What ``paradigms.clean_blocks`` does not yet check before using it: a paradigm that is
    not text (a list or an object cannot be looked up among the paradigms)."""
    if not isinstance(value, list):
        return
    for n, block in enumerate(value, start=1):
        if isinstance(block, dict) and "paradigm" in block and not isinstance(block["paradigm"], str):
            raise FieldError(f"blocks[{n}].paradigm", f"expected one of {', '.join(paradigms.PARADIGMS)}")


def check_blocks_change(experiment: Experiment, config: object) -> None:
    """Refuse (ConflictError) a change of ``config["blocks"]`` unless the experiment is editable
    (a draft or rendered): its trials are made from the blocks when it opens. Sending the blocks
    it already has is not a change. Bad blocks raise FieldError first."""
    if not isinstance(config, dict) or "blocks" not in config:
        return
    precheck_blocks(config["blocks"])
    if experiment.is_editable:
        return
    if paradigms.clean_blocks(config["blocks"]) != paradigms.blocks(experiment.config):
        raise ConflictError(locked_message(experiment))


@transaction.atomic
def set_blocks(*, experiment: Experiment, blocks: object) -> Experiment:
    """Replace the experiment's blocks: checked by ``rules.validate_config`` (FieldError naming
    the block and setting, nothing stored), refused unless the experiment is editable."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if not experiment.is_editable:
        raise ConflictError(locked_message(experiment))
    precheck_blocks(blocks)
    return update_experiment_settings(experiment=experiment, config={"blocks": blocks})


@transaction.atomic
def add_trapping(*, experiment: Experiment, block: int, upload: Any, answer: object) -> Experiment:
    """Add a trapping question to block ``block`` (1 = first): the message stored, the question
    appended to the block's ``trapping``. Refused unless the experiment is editable and the block
    is an ACR / DCR block; nothing is stored when refused."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if not experiment.is_editable:
        raise ConflictError(locked_message(experiment))
    blocks = paradigms.blocks(experiment.config)
    if isinstance(block, bool) or not isinstance(block, int) or not (1 <= block <= len(blocks)):
        raise FieldError("block", f"expected a block number from 1 to {len(blocks)}")
    if blocks[block - 1]["paradigm"] not in paradigms.WITH_GOLD:
        raise FieldError("block", f"block {block} is not an ACR or DCR block; only those ask trapping questions")
    if isinstance(answer, str) and answer.strip().isdecimal() and answer.strip().isascii():
        answer = int(answer)
    audio, rate = trapping.read_message(upload)
    name = trapping.message_name(experiment)
    changed = [dict(b) for b in (experiment.config.get("blocks") or [{}])]
    changed[block - 1]["trapping"] = [*blocks[block - 1]["trapping"], {"message": name, "answer": answer}]
    paradigms.clean_blocks(changed)  # the answer checked before anything is stored
    store(name, encode_wav(audio, rate))
    try:
        return update_experiment_settings(experiment=experiment, config={"blocks": changed})
    except BaseException:
        delete_stored(name)
        raise


@transaction.atomic
def remove_trapping(*, experiment: Experiment, block: int, number: int) -> Experiment:
    """Remove block ``block``'s ``number``-th trapping question (both from 1) and its message."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if not experiment.is_editable:
        raise ConflictError(locked_message(experiment))
    blocks = paradigms.blocks(experiment.config)
    if not (1 <= block <= len(blocks)) or not (1 <= number <= len(blocks[block - 1]["trapping"])):
        raise FieldError("number", f"block {block} has no trapping question {number}")
    changed = [dict(b) for b in (experiment.config.get("blocks") or [{}])]
    questions = list(blocks[block - 1]["trapping"])
    questions.pop(number - 1)
    changed[block - 1]["trapping"] = questions
    # Its message is deleted once the change is committed (update_experiment_settings).
    return update_experiment_settings(experiment=experiment, config={"blocks": changed})


def signals_per_trial(paradigm: str, conditions: int) -> int:
    """Signals one trial plays (``paradigms.signal_keys``, plus the open reference where shown)."""
    if paradigm == paradigms.MUSHRA:
        return conditions + 1
    if paradigm == "ranking":
        return conditions
    return {"bs1116": 3, "abx": 3, "ab": 2, "abn": 2, "acr": 1, "dcr": 2}[paradigm]


def _fix(block: dict[str, Any], conditions: list[tuple[int, str]]) -> str:
    """What to do about a block ``paradigms.designs`` refuses."""
    paradigm = block["paradigm"]
    models = sum(kind in MODEL_KINDS for _, kind in conditions)
    has_reference = any(kind == ConditionKind.HIDDEN_REFERENCE for _, kind in conditions)
    if paradigm in paradigms.AGAINST_REFERENCE and not has_reference:
        return "Compare with the device's recording needs the hidden reference: choose ACR, AB or ranking instead."
    if paradigm in paradigms.AGAINST_REFERENCE:
        return "Add a model condition on the Build & render page, or choose ACR, MUSHRA or ranking."
    if paradigm in ("ab", "abn"):
        if models == 1 and not block.get("with_reference"):
            return (
                "Add a second model condition on the Build & render page, or tick “Compare the reference too” "
                "to compare the model with the device's recording."
            )
        return "Add model conditions on the Build & render page (two, or one with “Compare the reference too”)."
    return "Choose another paradigm."


def _mean_seconds(durations: list[float]) -> float:
    return sum(durations) / len(durations) if durations else 0.0


@functools.lru_cache(maxsize=64)
def _trials_needed(proportion: float, power: float, alpha: float) -> dict[str, Any]:
    """``trials_needed`` (exact power over 10000 counts), worked out once per plan asked for."""
    return trials_needed(proportion, power, alpha)


def abx_figures(
    per_pair: int, *, proportion: float = ABX_PROPORTION, power: float = ABX_POWER, alpha: float = ABX_ALPHA
) -> dict[str, Any]:
    """An ABX block's trials per pair and participant against the trials the exact one-sided
    binomial test needs (``evaluation.paradigms.abx.trials_needed``)."""
    need = _trials_needed(proportion, power, alpha)
    needed = need["trials"]
    return {
        "true_proportion": proportion,
        "power_target": power,
        "alpha": alpha,
        "trials_needed": needed,
        "trials_stable": need["trials_stable"],
        "per_pair_per_participant": per_pair,
        # The power one participant's own test of a pair has with the trials the block gives.
        "power_per_participant": float(exact_power(per_pair, proportion, alpha)[0]) if per_pair else 0.0,
        "one_participant_enough": bool(needed is not None and per_pair >= needed),
        # Answers of a pair pooled over participants: how many participants give the trials needed.
        "participants_pooled": math.ceil(needed / per_pair) if needed is not None and per_pair else None,
    }


def block_plan(
    experiment: Experiment,
    blocks: list[dict[str, Any]] | None = None,
    *,
    abx_proportion: float = ABX_PROPORTION,
    abx_power: float = ABX_POWER,
    abx_alpha: float = ABX_ALPHA,
) -> dict[str, Any]:
    """Per block (the experiment's, or ``blocks`` as given): the trials each participant gets and
    an estimate of their minutes; ``problem`` and ``fix`` for a block that cannot open.

    ``{"blocks": [row], "test_trials", "training_trials", "minutes", "problems", "notes": [text]}``
    (sums over the blocks; ``problems``: blocks that cannot open); each row: ``number`` (1 =
    first), ``paradigm``, ``title``, the block's settings, ``designs`` (trials per excerpt and
    repetition), ``test_trials``, ``training_trials``, ``catch_trials`` and ``repeat_trials``
    (MUSHRA block, at most), ``gold_trials`` and ``trapping_trials`` (ACR / DCR), ``seconds_per_trial``, ``minutes``,
    ``problem``, ``fix``, ``abx`` (:func:`abx_figures`).
    Raises EvaluationError for an ABX proportion or power out of range.
    """
    config = experiment.config or {}
    rows_in = paradigms.blocks({"blocks": blocks} if blocks is not None else config)
    conditions = [(pk, str(kind)) for pk, kind in experiment.conditions.values_list("pk", "kind")]
    excerpts = list(experiment.excerpts.all())
    tests = [e for e in excerpts if not e.is_training]
    practice = [e for e in excerpts if e.is_training]
    test_seconds = _mean_seconds([e.duration_s for e in tests])
    practice_seconds = _mean_seconds([e.duration_s for e in practice])
    training_on = flow(experiment, "training")
    minimum = float(player_rules(experiment).get("min_trial_seconds") or 0.0)
    subset = int(config.get("trial_subset_size") or 0)
    out_rows = []
    for number, block in enumerate(rows_in, start=1):
        paradigm = block["paradigm"]
        row: dict[str, Any] = {
            "number": number,
            **block,
            "title": paradigms.PARADIGMS.get(paradigm, paradigm),
            "designs": 0,
            "test_trials": 0,
            "training_trials": 0,
            "catch_trials": 0,
            "repeat_trials": 0,
            "gold_trials": 0,
            "trapping_trials": 0,
            "seconds_per_trial": 0.0,
            "minutes": 0.0,
            "problem": "",
            "fix": "",
            "abx": None,
        }
        out_rows.append(row)
        try:
            designs = paradigms.designs(block, conditions)
        except ServiceError as exc:
            row.update(problem=f"block {number}: {exc}", fix=_fix(block, conditions))
            continue
        if block["gold"]:
            labels = {str(label): pk for pk, label in experiment.conditions.values_list("pk", "label")}
            try:
                paradigms.gold_conditions(block, labels)
            except ServiceError as exc:
                row.update(problem=f"block {number}: {exc}", fix="Correct the gold question's condition label.")
                continue
        try:
            trapping.check_messages(experiment, [block])
        except FieldError:
            row.update(
                problem=f"block {number}: a trapping question's message is missing",
                fix="Remove the trapping question and upload its message again.",
            )
            continue
        reps = block["repetitions"]
        test_trials = len(tests) * len(designs) * reps
        if paradigm == paradigms.MUSHRA and 0 < subset < test_trials:
            test_trials = subset
        training_trials = len(practice) * len(designs) if training_on and block["training"] else 0
        if paradigm == paradigms.MUSHRA:
            row["catch_trials"] = min(catch_trial_count(config), test_trials)
            row["repeat_trials"] = min(repeat_trial_count(config), test_trials)
        row["gold_trials"] = len(block["gold"]) if test_trials else 0
        row["trapping_trials"] = len(block["trapping"]) if test_trials else 0
        signals = signals_per_trial(paradigm, len(conditions))
        answer = ANSWER_SECONDS[paradigm]
        per_test = max(minimum, PLAYS_PER_SIGNAL * signals * test_seconds + answer)
        per_practice = max(minimum, PLAYS_PER_SIGNAL * signals * practice_seconds + answer)
        checks = row["gold_trials"] + row["trapping_trials"]
        seconds = (test_trials + row["catch_trials"] + row["repeat_trials"] + checks) * per_test
        row.update(
            designs=len(designs),
            test_trials=test_trials,
            training_trials=training_trials,
            seconds_per_trial=per_test,
            minutes=(seconds + training_trials * per_practice) / 60,
        )
        if paradigm == "abx":
            figures = abx_figures(len(tests) * reps, proportion=abx_proportion, power=abx_power, alpha=abx_alpha)
            row["abx"] = figures | {"pairs": len(designs), "per_participant": test_trials}
    notes = []
    if not tests:
        notes.append("No test excerpts yet: every block has 0 test trials until excerpts are uploaded.")
    return {
        "blocks": out_rows,
        "test_trials": sum(r["test_trials"] for r in out_rows),
        "training_trials": sum(r["training_trials"] for r in out_rows),
        "minutes": sum(r["minutes"] for r in out_rows),
        "problems": sum(bool(r["problem"]) for r in out_rows),
        # Whether a block can ask gold / trapping questions (ACR / DCR): the page offers them.
        "with_checks": any(r["paradigm"] in paradigms.WITH_GOLD for r in out_rows),
        "notes": notes,
    }


def parse_abx_inputs(proportion: object, power: object) -> tuple[float, float]:
    """The ABX plan's true proportion correct and power from text (empty: the defaults);
    EvaluationError naming the one out of range."""
    values = []
    for name, raw, default in (("abx_proportion", proportion, ABX_PROPORTION), ("abx_power", power, ABX_POWER)):
        if raw in (None, ""):
            values.append(default)
            continue
        try:
            value = float(str(raw))
        except ValueError:
            raise EvaluationError(f"{name}: expected a number") from None
        if not math.isfinite(value):
            raise EvaluationError(f"{name}: expected a number")
        values.append(value)
    p, pw = values
    if not 0.5 < p < 1:
        raise EvaluationError(f"abx_proportion: the true proportion correct must lie between 0.5 and 1, got {p:g}")
    if not 0 < pw < 1:
        raise EvaluationError(f"abx_power: must lie strictly between 0 and 1, got {pw:g}")
    return p, pw
