from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management.color import no_style
from django.db import connection

from tests.webmushra.conftest import render_inline
from webmushra.models import (
    Checkpoint,
    Condition,
    ConditionKind,
    Excerpt,
    Experiment,
    Stimulus,
    Trial,
)
from webmushra.services import experiments

#: Rows are numbered from here on, so an id that reaches a participant is unmistakable
#: (a stray "3" could be a trial number; "41003" can only be a condition's id).
FIRST_IDS = {Experiment: 46000, Excerpt: 44000, Checkpoint: 43000, Condition: 41000, Stimulus: 42000, Trial: 45000}
N_EXCERPTS = 3
SECONDS = 1.5
CHECKPOINTS = ("ht1_lstm32.json", "ts9_lstm20_gain.json")


def _distinctive_ids(owner) -> None:
    """Insert one placeholder row per table with a high id and move the id sequences past it."""
    exp = Experiment.objects.create(pk=FIRST_IDS[Experiment], owner=owner, title="placeholder")
    excerpt = Excerpt.objects.create(
        pk=FIRST_IDS[Excerpt],
        experiment=exp,
        name="placeholder",
        dry_file="-",
        reference_file="-",
        sample_rate=48000,
        frames=1,
    )
    ckpt = Checkpoint.objects.create(
        pk=FIRST_IDS[Checkpoint],
        experiment=exp,
        name="placeholder",
        file="-",
        format="-",
        architecture="-",
        sample_rate=48000,
        sha256="0" * 64,
        size=1,
    )
    cond = Condition.objects.create(
        pk=FIRST_IDS[Condition], experiment=exp, kind=ConditionKind.MODEL, checkpoint=ckpt, label="placeholder"
    )
    Stimulus.objects.create(
        pk=FIRST_IDS[Stimulus],
        experiment=exp,
        excerpt=excerpt,
        condition=cond,
        file="-",
        sample_rate=48000,
        frames=1,
        channels=1,
        size=1,
    )
    Trial.objects.create(pk=FIRST_IDS[Trial], experiment=exp, excerpt=excerpt)
    # SQLite's AUTOINCREMENT follows the highest id by itself; PostgreSQL's sequences do not.
    with connection.cursor() as cursor:
        for sql in connection.ops.sequence_reset_sql(no_style(), list(FIRST_IDS)):
            cursor.execute(sql)


@pytest.fixture(autouse=True)
def _no_rate_limits(settings) -> None:
    # Every simulated participant comes from 127.0.0.1; the limits are per address, alike for
    # every condition, and are tested on their own.
    settings.RATELIMIT_ENABLED = False


@pytest.fixture
def blind_experiment(db, researcher, build_experiment):
    """An open experiment rendered for real: 3 excerpts, hidden reference, two anchors, two models."""
    _distinctive_ids(researcher)
    exp = build_experiment(n_excerpts=N_EXCERPTS, seconds=SECONDS, checkpoints=CHECKPOINTS)
    render_inline(exp)
    exp = experiments.open_experiment(experiment=exp)
    assert min(exp.conditions.values_list("pk", flat=True)) > FIRST_IDS[Condition]
    return exp


def forbidden_names(exp: Experiment) -> list[str]:
    """Every string that would tell a participant which condition a signal is."""
    names: set[str] = set()
    for kind in ConditionKind:
        names.update({kind.value, kind.label})
    for c in exp.conditions.select_related("checkpoint"):
        names.update({c.label, str(c.pk)})
        if c.checkpoint is not None:
            names.update(
                {
                    c.checkpoint.name,
                    Path(c.checkpoint.name).stem,
                    Path(c.checkpoint.file.name).name,
                    c.checkpoint.sha256,
                    c.checkpoint.sha256[:12],
                    str(c.checkpoint.pk),
                }
            )
    for s in Stimulus.objects.filter(experiment=exp):
        names.update({s.file, Path(s.file).name, Path(s.file).stem, str(s.pk)})
    names.discard("")
    return sorted(names)
