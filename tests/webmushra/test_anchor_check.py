"""The researcher is told when an anchor is not an anchor (ITU-R BS.1534-3 §5.1, §4.1.2).

Two excerpts rendered in this process: white noise (the anchors remove much of it) and a 200 Hz
tone with noise low-passed at 2 kHz (nothing above 7 kHz: both anchors sound like the reference).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf
from django.urls import reverse
from scipy import signal

from modelrunner.anchors import WEAK_ANCHOR_DB
from tests.paths import fixture_path
from tests.webmushra.conftest import render_inline
from webmushra.models import Stimulus
from webmushra.selectors import weak_anchors
from webmushra.services import experiments, uploads

pytestmark = pytest.mark.django_db
SR = 44_100


def write_pair(folder, name: str, audio: np.ndarray) -> tuple:
    dry, ref = folder / f"{name}_dry.wav", folder / f"{name}_ref.wav"
    sf.write(dry, audio, SR, subtype="FLOAT")
    sf.write(ref, audio, SR, subtype="FLOAT")
    return dry, ref


@pytest.fixture
def two_excerpts(researcher, tmp_path):
    rng = np.random.default_rng(7)
    n = int(1.0 * SR)
    noise = (0.1 * rng.standard_normal(n)).astype(np.float32)
    t = np.arange(n) / SR
    low = 0.3 * np.sin(2 * np.pi * 200.0 * t) + 0.1 * signal.sosfiltfilt(
        signal.butter(8, 2000, fs=SR, output="sos"), rng.standard_normal(n)
    )
    exp = experiments.create_experiment(
        owner=researcher, title="Anchors", sample_rate=48000, anchors=True, config={"training": False}
    )
    for name, audio in (("Noise", noise), ("Low tone", low.astype(np.float32))):
        dry, ref = write_pair(tmp_path, name.replace(" ", "_"), audio)
        uploads.add_excerpt(experiment=exp, name=name, dry=dry, reference=ref)
    ckpt = uploads.add_checkpoint(
        experiment=exp, name="m.json", file=fixture_path("models", "coreaudioml", "ht1_lstm32.json")
    )
    experiments.add_model_condition(experiment=exp, checkpoint=ckpt, label="Model", knobs={})
    render_inline(exp)
    return exp


def test_the_item_job_stores_what_each_anchor_removes(two_excerpts):
    found = {
        (s.excerpt.name, s.condition.kind): s.render_info["anchor_difference"]
        for s in Stimulus.objects.filter(experiment=two_excerpts, condition__kind__in=["anchor35", "anchor70"])
    }
    assert set(found) == {(x, k) for x in ("Noise", "Low tone") for k in ("anchor35", "anchor70")}
    for kind, cutoff in (("anchor35", 3500.0), ("anchor70", 7000.0)):
        noise, low = found[("Noise", kind)], found[("Low tone", kind)]
        assert noise["cutoff_hz"] == low["cutoff_hz"] == cutoff
        assert noise["difference_db"] > -3.0 and noise["weak"] is False and noise["difference_lufs"] > -40
        assert low["difference_db"] < WEAK_ANCHOR_DB - 5 and low["weak"] is True
    # Other conditions carry no anchor check.
    assert not Stimulus.objects.filter(
        experiment=two_excerpts,
        condition__kind__in=["model", "hidden_reference"],
        render_info__has_key="anchor_difference",
    ).exists()


def test_the_experiment_page_flags_the_weak_anchors_only(client, researcher, two_excerpts):
    client.force_login(researcher)
    page = client.get(reverse("researcher:experiment", args=[two_excerpts.pk])).content.decode()
    flags = re.findall(r'<p class="warn weak-anchor">(.*?)</p>', page)
    assert len(flags) == 2, flags
    assert all("Low tone" in f and "Noise" not in f for f in flags)
    assert any("“Anchor 3.5 kHz”" in f for f in flags) and any("“Anchor 7 kHz”" in f for f in flags)
    assert all("Choose other excerpts" in f and "or a different anchor" in f for f in flags)
    assert [row["item"] for row in weak_anchors(two_excerpts, test_only=True)] == ["Low tone", "Low tone"]
