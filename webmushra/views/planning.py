"""Researcher page: plan the sample size before publishing (``evaluation.power``).

The SDs are prefilled from the pilot sessions' ratings when there are any, else from the
planner's stated defaults; the simulation runs with a modest replicate count so the page
answers in about a second, and shows its Monte Carlo error.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from evaluation.errors import EvaluationError
from evaluation.nonparametric import n_pairs
from evaluation.power import (
    COMPONENT_LABELS,
    COMPONENTS,
    DEFAULT_COMPONENTS,
    DEFAULT_EXCERPTS,
    DEFAULT_LISTENERS,
    VarianceComponents,
    components_from_pilot,
    describe,
    plan_sample_size,
)

from .. import selectors
from ..access import experiment_for
from ..models import ConditionKind, Experiment

#: Simulated tests per design on this page: Monte Carlo SE at most 0.5 / sqrt(400) = 0.025.
WEB_REPLICATES = 400
WEB_SEED = 1534
MAX_GRID_VALUES = 10
MAX_WEB_LISTENERS = 200
MAX_WEB_EXCERPTS = 40


def _open_unit(name: str):
    def check(value: float) -> None:
        if not 0 < value < 1:
            raise forms.ValidationError(f"{name} must lie strictly between 0 and 1.")

    return check


class CountsField(forms.CharField):
    """Whole numbers separated by commas, each within [smallest, largest]."""

    def __init__(self, *args: Any, smallest: int, largest: int, **kwargs: Any) -> None:
        self.smallest, self.largest = smallest, largest
        super().__init__(*args, max_length=200, **kwargs)

    def clean(self, value: Any) -> list[int]:
        text = super().clean(value)
        try:
            counts = sorted({int(v) for v in text.replace(" ", "").split(",") if v})
        except ValueError:
            raise forms.ValidationError("Give whole numbers separated by commas, e.g. 8, 12, 16.") from None
        if not counts:
            raise forms.ValidationError("Give at least one number.")
        if len(counts) > MAX_GRID_VALUES:
            raise forms.ValidationError(f"At most {MAX_GRID_VALUES} values.")
        if counts[0] < self.smallest or counts[-1] > self.largest:
            raise forms.ValidationError(f"Each value must lie between {self.smallest} and {self.largest}.")
        return counts


class SampleSizeForm(forms.Form):
    difference = forms.FloatField(
        min_value=0.5, max_value=100, help_text="The smallest difference between two conditions worth detecting."
    )
    power = forms.FloatField(validators=[_open_unit("Power")], help_text="Target power, e.g. 0.8.")
    alpha = forms.FloatField(validators=[_open_unit("Alpha")], help_text="Significance level, e.g. 0.05.")
    comparisons = forms.IntegerField(
        min_value=1, max_value=1000, help_text="Comparisons Holm corrects over (the report compares every model pair)."
    )
    listener_sd = forms.FloatField(min_value=0, max_value=100, label="Listener SD")
    item_sd = forms.FloatField(min_value=0, max_value=100, label="Excerpt SD")
    listener_condition_sd = forms.FloatField(min_value=0, max_value=100, label="Listener × condition SD")
    item_condition_sd = forms.FloatField(min_value=0, max_value=100, label="Excerpt × condition SD")
    residual_sd = forms.FloatField(min_value=0, max_value=100, label="Residual SD")
    listeners = CountsField(smallest=2, largest=MAX_WEB_LISTENERS, help_text="Listener counts to try.")
    excerpts = CountsField(smallest=1, largest=MAX_WEB_EXCERPTS, help_text="Excerpt counts to try.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            if isinstance(field, forms.FloatField):
                field.widget.attrs["step"] = "any"

    def components(self) -> VarianceComponents:
        return VarianceComponents(**{name: self.cleaned_data[f"{name}_sd"] for name in COMPONENTS})


def _pilot(experiment: Experiment) -> dict[str, Any]:
    rows = selectors.pilot_rating_rows(experiment)
    if not rows:
        return {"estimate": None, "error": "", "sessions": 0}
    sessions = len({r["participant"] for r in rows})
    try:
        estimate = components_from_pilot(pd.DataFrame(rows))
    except EvaluationError as exc:
        return {"estimate": None, "error": str(exc), "sessions": sessions}
    sds = estimate.components.as_dict()
    table = [
        {
            "label": COMPONENT_LABELS[name],
            "sd": sds[name],
            "low": estimate.intervals[name][0],
            "high": estimate.intervals[name][1] if math.isfinite(estimate.intervals[name][1]) else None,
            "df": estimate.df[name],
        }
        for name in COMPONENTS
    ]
    return {"estimate": estimate, "error": "", "sessions": sessions, "table": table}


def _initial(experiment: Experiment, pilot: dict[str, Any]) -> dict[str, Any]:
    models = experiment.conditions.filter(kind__in=[ConditionKind.MODEL, ConditionKind.PRERENDERED]).count()
    test_excerpts = experiment.excerpts.filter(is_training=False).count()
    excerpts = sorted(set(DEFAULT_EXCERPTS) | ({test_excerpts} if 0 < test_excerpts <= MAX_WEB_EXCERPTS else set()))
    sds = pilot["estimate"].components.as_dict() if pilot["estimate"] else DEFAULT_COMPONENTS
    return {
        "difference": 10,
        "power": 0.8,
        "alpha": 0.05,
        "comparisons": max(1, n_pairs(models)),
        **{f"{name}_sd": round(sds[name], 2) for name in COMPONENTS},
        "listeners": ", ".join(map(str, DEFAULT_LISTENERS)),
        "excerpts": ", ".join(map(str, excerpts)),
    }


def _table(plan: Any) -> dict[str, Any]:
    listeners, excerpts, cells = plan.grid()
    rec = plan.recommendation or {}
    rows = [
        {
            "listeners": n,
            "cells": [
                {
                    "power": p,
                    "se": s,
                    "reached": p >= plan.target,
                    "chosen": rec.get("listeners") == n and rec.get("excerpts") == i,
                }
                for (p, s), i in zip(row, excerpts)
            ],
        }
        for n, row in zip(listeners, cells)
    ]
    return {"excerpts": excerpts, "rows": rows}


@login_required
def plan(request: HttpRequest, pk: int) -> HttpResponse:
    """The planner: a GET form (nothing is stored), answered with the power table."""
    experiment = experiment_for(request.user, pk)
    pilot = _pilot(experiment)
    context: dict[str, Any] = {
        "experiment": experiment,
        "pilot": pilot,
        "labels": COMPONENT_LABELS,
        "replicates": WEB_REPLICATES,
        "max_se": 0.5 / math.sqrt(WEB_REPLICATES),
        "plan": None,
        "errors": [],
    }
    if "difference" not in request.GET:
        context["form"] = SampleSizeForm(initial=_initial(experiment, pilot))
        return render(request, "webmushra/researcher/plan.html", context)
    form = SampleSizeForm(request.GET)
    context["form"] = form
    if not form.is_valid():
        context["errors"] = [f"{name}: {' '.join(str(m) for m in messages)}" for name, messages in form.errors.items()]
        return render(request, "webmushra/researcher/plan.html", context, status=400)
    data = form.cleaned_data
    try:
        result = plan_sample_size(
            data["difference"],
            form.components(),
            alpha=data["alpha"],
            power=data["power"],
            comparisons=data["comparisons"],
            listeners=data["listeners"],
            excerpts=data["excerpts"],
            replicates=WEB_REPLICATES,
            seed=WEB_SEED,
        )
    except EvaluationError as exc:
        context["errors"] = [str(exc)]
        return render(request, "webmushra/researcher/plan.html", context, status=400)
    context.update(plan=result, summary=describe(result), table=_table(result))
    return render(request, "webmushra/researcher/plan.html", context)
