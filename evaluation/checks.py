"""Checks beside the main analysis: the bounded scale, the Gaussian model's assumptions, reliability.

``run_checks`` gathers ``evaluation.bounded`` (logit-scale intervals, the beta model),
``evaluation.ordinal`` (the proportional-odds model of the binned ratings),
``evaluation.assumptions`` (residual shape per condition, equal variances) and
``evaluation.reliability`` (ICC of the panel, test-retest on repeated trials) into one
``Checks`` whose ``stats()`` are the ``bounded``, ``ordinal``, ``assumptions`` and
``reliability`` blocks of stats.json (docs/statistics.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .assumptions import check_assumptions, qq_points
from .bounded import beta_by_condition, bounded_stats, logit_intervals
from .errors import EvaluationError
from .ordinal import OrdinalResult, ordinal_by_condition
from .reliability import panel_icc, reliability_stats, retest_agreement
from .settings import Settings


@dataclass
class Checks:
    """Results of the checks, as tables and the plain blocks of stats.json."""

    logit: pd.DataFrame
    beta: pd.DataFrame | None
    assumptions: dict[str, Any]
    residuals: pd.DataFrame
    qq: pd.DataFrame
    icc: pd.DataFrame
    retest: pd.DataFrame
    retest_pooled: dict[str, float] | None
    warnings: list[dict[str, str]] = field(default_factory=list)
    ordinal: OrdinalResult | None = None
    ordinal_problem: str = ""

    def stats(self) -> dict[str, Any]:
        """The ``bounded``, ``ordinal``, ``assumptions`` and ``reliability`` blocks of stats.json."""
        return {
            "bounded": bounded_stats(self.beta),
            "ordinal": self.ordinal.stats if self.ordinal is not None else None,
            "assumptions": self.assumptions,
            "reliability": reliability_stats(self.icc, self.retest, self.retest_pooled),
        }

    def logit95(self, condition: str) -> list[float]:
        """The logit-scale interval of one condition, ``[low, high]``."""
        row = self.logit[self.logit["condition"] == condition]
        return [float(row["logit_low"].iloc[0]), float(row["logit_high"].iloc[0])] if len(row) else [np.nan, np.nan]


def run_checks(
    used: pd.DataFrame,
    repeats: pd.DataFrame,
    wide: pd.DataFrame,
    conditions: list[str],
    models: list[str],
    mixed: dict[str, Any] | None,
    settings: Settings,
    baseline: str | None = None,
) -> Checks:
    """Every check on the retained ratings ``used`` (first presentations) and their ``repeats``."""
    logit = logit_intervals(wide, conditions, settings.confidence_level)
    beta = beta_by_condition(wide, conditions, settings.confidence_level) if settings.beta_model else None
    ordinal, ordinal_problem = None, ""
    if settings.ordinal_model and len(conditions) >= 2:
        try:
            ordinal = ordinal_by_condition(used, conditions, baseline, settings.confidence_level)
        except EvaluationError as exc:
            ordinal_problem = str(exc)
    residual_variance = (mixed or {}).get("variance_components", {}).get("residual")
    block, residuals, found = check_assumptions(used, conditions, settings.alpha, residual_variance)
    qq = qq_points(residuals, pd.DataFrame(block["per_condition"], columns=["condition", "residual_sd"]))
    scopes = {"all conditions": conditions}
    if len(models) >= 2:
        scopes["models"] = models
    icc = panel_icc(used, scopes, settings.confidence_level)
    retained = repeats[repeats["participant"].isin(used["participant"].unique())] if len(repeats) else repeats
    retest, pooled = retest_agreement(used, retained)
    return Checks(
        logit=logit,
        beta=beta,
        assumptions=block,
        residuals=residuals,
        qq=qq,
        icc=icc,
        retest=retest,
        retest_pooled=pooled,
        warnings=found,
        ordinal=ordinal,
        ordinal_problem=ordinal_problem,
    )
