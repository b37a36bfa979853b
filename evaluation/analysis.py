"""The whole analysis of one experiment: screening, descriptives, tests, models, correlations.

``analyse`` returns an ``Analysis`` holding every table; ``Analysis.stats()`` is the
JSON-ready summary written to ``stats.json`` (every key is documented in
docs/statistics.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import warnings as words
from .bounded import ceiling_equivalence
from .checks import Checks, run_checks
from .correlation import correlate
from .descriptives import describe_by_condition_item, describe_overall, participant_means, tukey_hinges
from .equivalence import tost_paired
from .errors import EvaluationError
from .intervals import interval_records, method_words, pairwise_intervals
from .io import condition_kinds, validate_metrics, validate_ratings
from .items import ItemAnalysis, analyse_items, item_warnings
from .kinds import HIDDEN_REFERENCE, MODEL, order_conditions
from .mixed import fit_mixed_model, rm_anova
from .nonparametric import all_pairs, friedman, pairwise_wilcoxon
from .reliability import split_repeats
from .screening import ScreeningResult, post_screen
from .settings import Settings

Progress = Callable[[str, float], None]
SCHEMA_VERSION = 1


@dataclass
class Analysis:
    """Every result of one analysis, as tables and plain values."""

    settings: Settings
    ratings: pd.DataFrame
    used: pd.DataFrame
    kinds: dict[str, str]
    conditions: list[str]
    models: list[str]
    screening: ScreeningResult
    descriptives_item: pd.DataFrame
    descriptives_overall: pd.DataFrame
    wide: pd.DataFrame
    friedman: dict[str, Any]
    pairwise: pd.DataFrame
    mixed: dict[str, Any] | None
    rm_anova: dict[str, Any] | None
    equivalence: pd.DataFrame
    correlations: pd.DataFrame
    correlation_points: pd.DataFrame
    warnings: list[dict[str, str]] = field(default_factory=list)
    # Every tested difference with its intervals (evaluation.intervals); excerpts as a sample (evaluation.items).
    pairwise_intervals: pd.DataFrame = field(default_factory=pd.DataFrame)
    excerpts: ItemAnalysis | None = None
    # Bounded-scale intervals, the Gaussian model's assumptions, listener reliability (evaluation.checks).
    checks: Checks | None = None

    def stats(self) -> dict[str, Any]:
        """The JSON-ready summary written to stats.json (see docs/statistics.md)."""
        s = self.settings
        overall = {str(r["condition"]): r for r in self.descriptives_overall.to_dict("records")}
        conditions = {}
        for c in self.conditions:
            row = overall[c]
            conditions[c] = {
                "kind": self.kinds[c],
                "n": int(row["n"]),
                "mean": row["mean"],
                "sd": row["sd"],
                "ci95": [row["ci_low"], row["ci_high"]],
                "bca95": [row["bca_low"], row["bca_high"]],
                "logit95": self.checks.logit95(c) if self.checks is not None else None,
                "median": row["median"],
                "iqr": [row["q1"], row["q3"]],
                "hinges": list(tukey_hinges(self.wide[c].dropna().to_numpy())),
                "min": row["min"],
                "max": row["max"],
            }
        by_item = [
            {
                "condition": r["condition"],
                "item": r["item"],
                "n": int(r["n"]),
                "mean": r["mean"],
                "sd": r["sd"],
                "ci95": [r["ci_low"], r["ci_high"]],
                "bca95": [r["bca_low"], r["bca_high"]],
                "median": r["median"],
                "iqr": [r["q1"], r["q3"]],
            }
            for r in self.descriptives_item.to_dict("records")
        ]
        screening = self.screening
        mixed = None
        if self.mixed is not None:
            mixed = {k: v for k, v in self.mixed.items() if k not in ("emms", "contrasts")}
            mixed["emms"] = _records(self.mixed["emms"])
            mixed["contrasts"] = _records(self.mixed["contrasts"])
            for entry in mixed["emms"] + mixed["contrasts"]:
                entry["ci95"] = [entry.pop("ci_low"), entry.pop("ci_high")]
        pairwise = _records(self.pairwise)
        correlations = _records(self.correlations)
        for entry in correlations:
            entry["ci95"] = [entry.pop("ci_low"), entry.pop("ci_high")]
        equivalence = _records(self.equivalence)
        for entry in equivalence:
            entry["ci90"] = [entry.pop("ci_low"), entry.pop("ci_high")]
        out = {
            "schema_version": SCHEMA_VERSION,
            "participants": {
                "total": int(self.ratings["participant"].nunique()),
                "retained": int(self.used["participant"].nunique()),
                "excluded": len(screening.excluded),
            },
            "items": sorted(self.ratings["item"].unique().tolist()),
            "n_ratings": {
                "total": int(len(self.ratings)),
                "used": int(len(self.used)),
                "dropped_empty": int(self.ratings.attrs.get("dropped_empty", 0)),
                "repeats": int(self.ratings.attrs.get("repeats", 0)),
            },
            "screening": {
                "excluded": list(screening.excluded),
                "reasons": {r.participant: r.reason for r in screening.table.itertuples() if r.excluded},
                "anchor_exempt_items": list(screening.anchor_exempt_items),
                "outliers_flagged": int(len(screening.outliers)),
                "rules": screening.rules,
            },
            "conditions": conditions,
            "by_item": by_item,
            "friedman": {**self.friedman, "conditions": list(self.models)},
            "pairwise": pairwise,
            "pairwise_method": {
                "test": "Wilcoxon signed-rank, zero_method='pratt', two-sided",
                "correction": "Holm (1979)",
                "effect_size": "matched-pairs rank-biserial r (Kerby 2014), positive when a > b",
                "shift": "Hodges-Lehmann median of Walsh averages of a - b",
                "permutation": f"paired sign-flip permutation of the mean difference, "
                f"{s.permutation_resamples} resamples, seed {s.seed} (after BS.1534-3 Attachment 3)",
                "scope": s.pairwise_scope,
                "unit": "per-participant means across items",
            },
            "pairwise_intervals": interval_records(self.pairwise_intervals),
            "intervals_method": method_words(s.confidence_level, "the pairs of `pairwise`"),
            "excerpts": self.excerpts.stats() if self.excerpts is not None else None,
            "mixed_model": mixed,
            "rm_anova": self.rm_anova,
            "equivalence": equivalence,
            "correlations": correlations,
            **(self.checks.stats() if self.checks is not None else {}),
            "warnings": self.warnings,
            "seed": s.seed,
        }
        cleaned: dict[str, Any] = _clean(out)
        return cleaned


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    if frame is None or frame.empty:
        return []
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _clean(value: Any) -> Any:
    # JSON has no NaN: undefined statistics become null.
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value


def _choose_baseline(settings: Settings, kinds: dict[str, str], models: list[str], conditions: list[str]) -> str:
    if settings.baseline is not None:
        if settings.baseline not in kinds:
            raise EvaluationError(
                f"baseline {settings.baseline!r} is not a condition; conditions are {', '.join(conditions)}"
            )
        return settings.baseline
    references = [c for c in conditions if kinds[c] == HIDDEN_REFERENCE]
    return references[0] if references else (models[0] if models else conditions[0])


def analyse(
    ratings: pd.DataFrame,
    metrics: pd.DataFrame | None = None,
    settings: Settings | dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> Analysis:
    """Run every step of the analysis on a ratings table (and optionally a metrics table)."""
    settings = Settings.from_dict(settings) if not isinstance(settings, Settings) else settings
    report = progress or (lambda message, fraction: None)
    # Validation is cheap and idempotent; rows already dropped by an earlier pass still count.
    dropped_before = int(ratings.attrs.get("dropped_empty", 0))
    ratings = validate_ratings(ratings, kinds=settings.kinds)
    ratings.attrs["dropped_empty"] = dropped_before + int(ratings.attrs.get("dropped_empty", 0))
    # Later presentations of a repeated trial only feed test-retest (evaluation.reliability).
    ratings, repeats = split_repeats(ratings)
    ratings.attrs["repeats"] = len(repeats)
    if metrics is not None:
        metrics = validate_metrics(metrics)
    kinds = condition_kinds(ratings)
    conditions = order_conditions(kinds)
    models = [c for c in conditions if kinds[c] == MODEL]

    report("post-screening", 0.05)
    screening = post_screen(ratings, settings)
    used = ratings[~ratings["participant"].isin(screening.excluded)].copy()
    if used.empty:
        raise EvaluationError(
            f"post-screening excluded all {ratings['participant'].nunique()} participants; "
            "check the thresholds or the condition kinds"
        )
    used_kinds = used.drop_duplicates("condition").set_index("condition")["kind"].to_dict()
    conditions = [c for c in conditions if c in used_kinds]
    models = [c for c in models if c in used_kinds]

    report("descriptives", 0.15)
    by_item = describe_by_condition_item(used, settings)
    overall = describe_overall(used, settings)
    wide = participant_means(used)[conditions]

    report("Friedman test", 0.3)
    fried = friedman(wide[models]) if models else friedman(wide.iloc[:, :0])

    report("pairwise tests", 0.35)
    scope = models if settings.pairwise_scope == "models" else conditions
    pairs = all_pairs(scope)
    pairwise = pairwise_wilcoxon(wide, pairs, settings.permutation_resamples, settings.seed)
    intervals = pairwise_intervals(wide, pairs, settings.confidence_level)

    report("condition x item analysis", 0.45)
    excerpts = analyse_items(
        used,
        models,
        _choose_baseline(settings, kinds, models, conditions),
        pairs,
        pairwise,
        alpha=settings.alpha,
        confidence_level=settings.confidence_level,
        n_resamples=settings.permutation_resamples,
        seed=settings.seed,
    )

    report("mixed model", 0.5)
    baseline = _choose_baseline(settings, kinds, models, conditions)
    mixed: dict[str, Any] | None = None
    mixed_problem = ""
    if len(conditions) >= 2 and used["participant"].nunique() >= 2:
        try:
            mixed = fit_mixed_model(
                used,
                conditions,
                baseline,
                settings.item_effect,
                settings.confidence_level,
                settings.interaction_prune_alpha,
            )
        except EvaluationError as exc:
            # Ratings the model cannot describe (no residual variance, ...) leave the rest standing.
            mixed_problem = str(exc)
    anova = rm_anova(wide[models]) if settings.rm_anova and len(models) >= 2 else None

    report("equivalence tests", 0.7)
    eq_rows = []
    if settings.equivalence_margin is not None:
        eq_pairs = list(settings.equivalence_pairs) or all_pairs(models)
        for a, b in eq_pairs:
            for c in (a, b):
                if c not in wide.columns:
                    raise EvaluationError(f"equivalence pair names unknown condition {c!r}")
            both = wide[[a, b]].dropna()
            eq_rows.append(
                {
                    "a": a,
                    "b": b,
                    **tost_paired(both[a].to_numpy(), both[b].to_numpy(), settings.equivalence_margin, settings.alpha),
                }
            )
    equivalence, ceiling_words = ceiling_equivalence(pd.DataFrame(eq_rows), wide, settings.equivalence_margin)

    report("correlations", 0.8)
    correlations = pd.DataFrame()
    points = pd.DataFrame()
    if metrics is not None and len(metrics) and models:
        correlations, points = correlate(used[used["kind"] == MODEL], metrics, settings)

    found: list[dict[str, str]] = []
    if ratings.attrs.get("dropped_empty"):
        found.append(
            {
                "code": "empty_ratings",
                "message": f"{ratings.attrs['dropped_empty']} rows had no rating and were left out.",
            }
        )
    if HIDDEN_REFERENCE not in kinds.values():
        found.append(
            {
                "code": "no_hidden_reference",
                "message": "No hidden reference condition: the BS.1534-3 §4.1.2 reference rule could not be applied.",
            }
        )
    if settings.anchor_kind not in kinds.values():
        found.append(
            {
                "code": "no_anchor",
                "message": f"No {settings.anchor_kind} condition: "
                "the BS.1534-3 §4.1.2 anchor rule could not be applied.",
            }
        )
    if screening.excluded:
        found.append(
            {
                "code": "excluded",
                "message": f"{len(screening.excluded)} of {ratings['participant'].nunique()} listeners were "
                "excluded by post-screening (see screening.csv for each reason).",
            }
        )
    if len(screening.outliers):
        found.append(
            {
                "code": "outliers",
                "message": f"{len(screening.outliers)} ratings lie beyond {settings.outlier_iqr_factor:g} x IQR "
                "of their (condition, item) cell; they are flagged and kept.",
            }
        )
    for warning in (
        words.too_few_listeners(
            int(pairwise["n"].min()) if len(pairwise) else wide.shape[0], len(pairs), settings.alpha
        ),
        words.missing_cells(used),
    ):
        if warning:
            found.append(warning)
    found += words.ceiling_effects(used, settings.ceiling_threshold, settings.ceiling_fraction)
    if 0 < len(models) < 3:
        found.append(
            {
                "code": "few_conditions",
                "message": f"Only {len(models)} model condition(s): the Friedman test needs at least 3.",
            }
        )
    if len(correlations):
        warning = words.few_models(len(models), settings.min_models_for_correlation)
        if warning:
            found.append(warning)
    if mixed is not None and not mixed["converged"]:
        found.append(
            {
                "code": "mixed_model_convergence",
                "message": "The mixed model did not converge cleanly: " + "; ".join(mixed["notes"] or ["no detail"]),
            }
        )
    if mixed_problem:
        found.append({"code": "mixed_model_not_fitted", "message": f"The mixed model was not fitted: {mixed_problem}."})
    found += item_warnings(excerpts)
    report("assumptions and reliability", 0.82)
    checks = run_checks(used, repeats, wide, conditions, models, mixed, settings, baseline)
    found += ceiling_words + checks.warnings
    report("statistics done", 0.85)
    return Analysis(
        settings=settings,
        ratings=ratings,
        used=used,
        kinds=kinds,
        conditions=conditions,
        models=models,
        screening=screening,
        descriptives_item=by_item,
        descriptives_overall=overall,
        wide=wide,
        friedman=fried,
        pairwise=pairwise,
        mixed=mixed,
        rm_anova=anova,
        equivalence=equivalence,
        correlations=correlations,
        correlation_points=points,
        warnings=found,
        pairwise_intervals=intervals,
        excerpts=excerpts,
        checks=checks,
    )
