"""The sample-size page: SDs from the pilot sessions only, the power table, 400 naming the
field on bad input, and nobody else's experiment."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from django.test import Client
from django.urls import reverse

from evaluation.power import (
    COMPONENTS,
    DEFAULT_COMPONENTS,
    VarianceComponents,
    components_from_pilot,
    plan_sample_size,
)
from webmushra.models import (
    Condition,
    ConditionKind,
    Excerpt,
    Experiment,
    Participant,
    Rating,
    Trial,
    TrialResponse,
)
from webmushra.services import experiments
from webmushra.views.planning import WEB_REPLICATES, WEB_SEED

pytestmark = pytest.mark.django_db

MODELS = ("Model A", "Model B", "Model C")


def _experiment_with_sessions(
    owner: Any, pilots: int = 5, items: int = 4, seed: int = 0
) -> tuple[Experiment, pd.DataFrame]:
    """Three pre-rendered models and a hidden reference; ``pilots`` pilot sessions and one real
    session whose ratings are wild (they must not reach the estimate)."""
    exp = experiments.create_experiment(owner=owner, title="Planned", anchors=False)
    for k, label in enumerate(MODELS):
        Condition.objects.create(experiment=exp, kind=ConditionKind.PRERENDERED, label=label, position=k + 1)
    conditions = list(exp.conditions.order_by("position"))
    trials = []
    for i in range(items):
        excerpt = Excerpt.objects.create(
            experiment=exp,
            name=f"Excerpt {i + 1}",
            dry_file="d.wav",
            reference_file="r.wav",
            sample_rate=48000,
            frames=48000,
            position=i,
        )
        trials.append(Trial.objects.create(experiment=exp, excerpt=excerpt, position=i))
    rng = np.random.default_rng(seed)
    pilot_rows = []
    for p in range(pilots + 1):
        pilot = p < pilots
        participant = Participant.objects.create(experiment=exp, is_pilot=pilot, stage=Participant.Stage.COMPLETED)
        offset = rng.normal(0, 8)
        for trial in trials:
            response = TrialResponse.objects.create(participant=participant, trial=trial, idempotency_key=f"k{p}")
            for c, condition in enumerate(conditions):
                mean = 98 if condition.kind == ConditionKind.HIDDEN_REFERENCE else 70 - 8 * c
                score = int(np.clip(round(mean + offset + rng.normal(0, 10)), 0, 100)) if pilot else 100 * (c % 2)
                Rating.objects.create(
                    participant=participant, trial=trial, condition=condition, score=score, response=response
                )
                if pilot:
                    pilot_rows.append(
                        {
                            "participant": f"s{p}",
                            "item": trial.excerpt.name,
                            "condition": condition.label,
                            "kind": "hidden_reference" if c == 0 else "model",
                            "rating": score,
                        }
                    )
    return exp, pd.DataFrame(pilot_rows)


def _value(page: str, name: str) -> str:
    found = re.search(rf'name="{name}"[^>]*value="([^"]*)"', page)
    assert found is not None, name
    return found.group(1)


GOOD = {
    "difference": "8",
    "power": "0.8",
    "alpha": "0.05",
    "comparisons": "3",
    "listener_sd": "8",
    "item_sd": "5",
    "listener_condition_sd": "6",
    "item_condition_sd": "4",
    "residual_sd": "12",
    "listeners": "8, 16, 24, 32",
    "excerpts": "4, 8",
}


def test_the_form_is_prefilled_from_the_pilot_sessions_only(client: Client, researcher: Any) -> None:
    exp, pilot = _experiment_with_sessions(researcher)
    client.force_login(researcher)
    page = client.get(reverse("researcher:plan", args=[exp.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Prefilled from 5 pilot sessions" in html and 'id="pilot-sds"' in html
    expected = components_from_pilot(pilot).components.as_dict()
    assert expected["residual"] > 5
    for name, sd in expected.items():
        assert float(_value(html, f"{name}_sd")) == pytest.approx(sd, abs=0.006), name
    assert _value(html, "comparisons") == "3"  # three models: three pairs for Holm
    assert "4" in _value(html, "excerpts").split(", ")
    assert (
        reverse("researcher:plan", args=[exp.pk])
        in client.get(reverse("researcher:experiment", args=[exp.pk])).content.decode()
    )


def test_without_pilot_sessions_the_stated_defaults_are_said(client: Client, researcher: Any) -> None:
    exp = experiments.create_experiment(owner=researcher, title="No pilot")
    client.force_login(researcher)
    html = client.get(reverse("researcher:plan", args=[exp.pk])).content.decode()
    assert 'id="sd-stated"' in html and "stated defaults" in html
    assert float(_value(html, "residual_sd")) == DEFAULT_COMPONENTS["residual"]
    assert _value(html, "comparisons") == "1"


def test_the_page_shows_the_simulated_power_and_the_recommendation(client: Client, researcher: Any) -> None:
    exp, _ = _experiment_with_sessions(researcher, pilots=2)
    client.force_login(researcher)
    page = client.get(reverse("researcher:plan", args=[exp.pk]), GOOD)
    assert page.status_code == 200
    html = page.content.decode()
    plan = plan_sample_size(
        8.0,
        components_from_sds(GOOD),
        comparisons=3,
        listeners=(8, 16, 24, 32),
        excerpts=(4, 8),
        replicates=WEB_REPLICATES,
        seed=WEB_SEED,
    )
    table = html[html.index('id="plan-table"') :]
    cells = re.findall(r"<td[^>]*>(?:<strong>)?([0-9.]+) \(([0-9.]+)\)", table)
    assert len(cells) == 8
    power, se = plan.table["power"].to_numpy().tolist(), plan.table["mc_se"].to_numpy().tolist()
    expected = [(f"{p:.2f}", f"{s:.3f}") for p, s in zip(power, se)]
    assert cells == expected
    rec = plan.recommendation
    assert rec is not None
    assert f"{rec['listeners']} listeners × {rec['excerpts']} excerpts" in html
    assert "Holm over 3 comparisons" in html and f"{WEB_REPLICATES} simulated tests" in html


def components_from_sds(values: dict[str, str]) -> VarianceComponents:
    return VarianceComponents(**{name: float(values[f"{name}_sd"]) for name in COMPONENTS})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("power", "1.5", "power: Power must lie strictly between 0 and 1."),
        ("alpha", "0", "alpha: Alpha must lie strictly between 0 and 1."),
        ("residual_sd", "-1", "residual_sd:"),
        ("difference", "abc", "difference:"),
        ("comparisons", "0", "comparisons:"),
        ("listeners", "8, x", "listeners: Give whole numbers"),
        ("excerpts", "0, 4", "excerpts: Each value must lie between 1 and"),
        ("listeners", ",".join(str(n) for n in range(2, 30)), "listeners: At most"),
    ],
)
def test_bad_input_answers_400_naming_the_field(
    client: Client, researcher: Any, field: str, value: str, message: str
) -> None:
    exp = experiments.create_experiment(owner=researcher, title="Bad input")
    client.force_login(researcher)
    page = client.get(reverse("researcher:plan", args=[exp.pk]), {**GOOD, field: value})
    assert page.status_code == 400
    html = page.content.decode()
    assert 'id="plan-errors"' in html and message in html
    assert 'id="plan-table"' not in html


def test_only_those_who_may_see_the_experiment_get_the_page(
    client: Client, researcher: Any, django_user_model: Any
) -> None:
    exp = experiments.create_experiment(owner=researcher, title="Private")
    url = reverse("researcher:plan", args=[exp.pk])
    anonymous = client.get(url, GOOD)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("login"))
    other = django_user_model.objects.create_user("other", password="another-password-2")
    client.force_login(other)
    assert client.get(url).status_code == 404
    assert client.get(url, GOOD).status_code == 404
    exp.shared_with.add(other)
    assert client.get(url).status_code == 200
