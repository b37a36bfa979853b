"""The trials an experiment's blocks make when it opens (``experiments.open_experiment``): each
block's pages (``paradigms.designs`` per excerpt and repetition), its gold and trapping questions
(ITU-T P.808), then the MUSHRA block's catch and repeated trials."""

from __future__ import annotations

from .. import paradigms
from ..errors import ConflictError, ServiceError
from ..models import Excerpt, Experiment, Trial
from ..rules import flow
from . import catch, repeats, trapping


def make_trials(
    experiment: Experiment,
    excerpts: list[Excerpt],
    tests: list[Excerpt],
    kinds: list[tuple[int, str]],
    written: list[str],
) -> None:
    """Every block's trials (``paradigms.designs``), its gold and trapping questions' trials
    (trapping audio names appended to ``written``), then the MUSHRA block's catch and repeat trials."""
    for number, block in enumerate(paradigms.blocks(experiment.config)):
        try:
            designs = paradigms.designs(block, kinds)
        except ServiceError as exc:
            raise ConflictError(f"cannot open: block {number + 1}: {exc}") from None
        for i, excerpt in enumerate(excerpts):
            if excerpt.is_training and not (flow(experiment, "training") and block["training"]):
                continue
            for design in designs:
                for repetition in range(1 if excerpt.is_training else block["repetitions"]):
                    Trial.objects.get_or_create(
                        experiment=experiment,
                        excerpt=excerpt,
                        is_training=excerpt.is_training,
                        is_catch=False,
                        repeat_of=None,
                        block=number,
                        design_key=paradigms.design_key(block["paradigm"], design, repetition),
                        defaults={"position": i, "paradigm": block["paradigm"], "design": design},
                    )
        ensure_gold_trials(experiment, number, block, kinds, tests)
        trapping.ensure_trapping_trials(experiment, number, block, kinds, tests, written)
    catch.ensure_catch_trials(experiment)
    repeats.ensure_repeat_trials(experiment)


def ensure_gold_trials(
    experiment: Experiment, number: int, block: dict, kinds: list[tuple[int, str]], tests: list[Excerpt]
) -> None:
    """A block's gold questions (ITU-T P.808, ``paradigms.gold_design``): one trial per
    question and test excerpt, each participant given one of them at random (``plans``). They are
    kept out of the analysis as catch trials are (``is_catch``)."""
    if not block.get("gold"):
        return
    labels = dict(experiment.conditions.values_list("label", "pk"))
    try:
        ids = paradigms.gold_conditions(block, labels)
        reference = next((pk for pk, kind in kinds if kind == "hidden_reference"), None)
        designs = [paradigms.gold_design(block["paradigm"], cid, reference) for cid in ids]
    except ServiceError as exc:
        raise ConflictError(f"cannot open: block {number + 1}: {exc}") from None
    for cid, design in zip(ids, designs, strict=True):
        for excerpt in tests:
            trapping.question_trial(experiment, excerpt, number, block, paradigms.gold_key(cid), design)
