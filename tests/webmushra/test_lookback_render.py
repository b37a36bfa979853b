"""Models that estimate their start state from context: which way was used is recorded per stimulus."""

from __future__ import annotations

import pytest

from tests.paths import REPO
from tests.webmushra.conftest import render_inline
from webmushra import errors
from webmushra.models import ConditionKind, Stimulus
from webmushra.services import experiments, uploads

pytestmark = pytest.mark.django_db

PAPERS = REPO / "demo" / "papers" / "checkpoints"


@pytest.mark.parametrize("with_context", [True, False])
def test_sptmod_renders_with_lookback_or_zero_state_and_records_which(researcher, excerpt_files, with_context):
    exp = experiments.create_experiment(owner=researcher, title="SPTMod", sample_rate=48000)
    dry, ref = excerpt_files(seconds=1.5, offset=1.0, name="x")
    kw = {}
    if with_context:
        lb_dry, lb_ref = excerpt_files(seconds=0.6, offset=0.4, name="context")
        kw = {"lookback_dry": lb_dry, "lookback_reference": lb_ref}
    excerpt = uploads.add_excerpt(experiment=exp, name="x", dry=dry, reference=ref, **kw)
    assert bool(excerpt.lookback_dry_file) is with_context
    ckpt = uploads.add_checkpoint(
        experiment=exp, name="sptmod", file=PAPERS / "sptmod.pt", config=PAPERS / "sptmod.json"
    )
    assert ckpt.architecture.lower().startswith("sptmod")
    experiments.add_model_condition(experiment=exp, checkpoint=ckpt, label="SPTMod", knobs={"gain": 0.5})
    render_inline(exp)
    stim = Stimulus.objects.get(experiment=exp, condition__kind=ConditionKind.MODEL)
    state = stim.render_info["start_state"]
    assert state["mode"] == ("lookback" if with_context else "zero-warmup")
    assert state["latency_compensated"] > 0
    assert stim.frames == round(excerpt.frames * 48000 / excerpt.sample_rate)
    # Non-model conditions record their loudness gain only.
    ref_stim = Stimulus.objects.get(experiment=exp, condition__kind=ConditionKind.HIDDEN_REFERENCE)
    assert "start_state" not in ref_stim.render_info and "loudness_gain_db" in ref_stim.render_info


def test_lookback_needs_both_files(researcher, excerpt_files):
    exp = experiments.create_experiment(owner=researcher, title="x")
    dry, ref = excerpt_files(seconds=1.0)
    with pytest.raises(errors.ServiceError, match="give both"):
        uploads.add_excerpt(experiment=exp, name="x", dry=dry, reference=ref, lookback_dry=dry)


def test_ordinary_models_record_a_zero_start_state(rendered_experiment):
    exp = rendered_experiment(n_excerpts=1, seconds=1.0, training_excerpt=False)
    stim = Stimulus.objects.get(experiment=exp, condition__kind=ConditionKind.MODEL)
    assert stim.render_info["start_state"] == {"mode": "zero", "stateful": True, "receptive_field": 1}
    assert stim.render_info["model"]["render_kernel"] == "compiled recurrent kernel"  # which path rendered
