"""Analysis settings: screening thresholds, resample counts, the seed, margins.

Defaults follow ITU-R BS.1534-3 §4.1.2 (post-screening) and the permutation test of
its Attachment 3. Settings are loaded from a JSON object whose keys are the field
names below; an unknown key or a value out of range is an ``EvaluationError`` so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EvaluationError
from .kinds import ANCHOR35, ANCHOR70, KINDS


@dataclass(frozen=True)
class Settings:
    """Every knob of the analysis, with the defaults a BS.1534-3 test uses."""

    seed: int = 1534
    alpha: float = 0.05
    confidence_level: float = 0.95
    # Post-screening, BS.1534-3 §4.1.2. A ``*_max_fraction`` rule excludes an assessor
    # whose share of offending items is strictly greater than it; a ``*_max_items``
    # rule (count based, as in Bourdin et al.) excludes one with strictly more
    # offending items than it. Set a rule to null to switch it off.
    apply_screening: bool = True
    reference_threshold: float = 90.0
    reference_max_fraction: float | None = 0.15
    reference_max_items: int | None = None
    anchor_kind: str = ANCHOR70
    anchor_threshold: float = 90.0
    anchor_max_fraction: float | None = 0.15
    anchor_max_items: int | None = None
    anchor_item_exception_fraction: float | None = 0.25
    outlier_iqr_factor: float = 1.5
    # Resampling.
    bootstrap_resamples: int = 2000
    permutation_resamples: int = 10000
    correlation_resamples: int = 2000
    # Tests.
    pairwise_scope: str = "models"
    baseline: str | None = None
    item_effect: str = "random"
    rm_anova: bool = False
    # Backward removal of the mixed model's listener x condition and item x condition terms
    # by REML likelihood ratio at this level (Matuschek et al. 2017); null keeps the maximal model.
    interaction_prune_alpha: float | None = 0.2
    equivalence_margin: float | None = 5.0
    equivalence_pairs: tuple[tuple[str, str], ...] = ()
    # Beta regression of per-listener means beside the Gaussian estimates (evaluation.bounded).
    beta_model: bool = True
    # Proportional-odds model of the ratings binned to the five scale intervals (evaluation.ordinal).
    ordinal_model: bool = True
    # Warnings.
    ceiling_threshold: float = 95.0
    ceiling_fraction: float = 0.25
    min_models_for_correlation: int = 5
    # Objective metrics whose Pearson correlation is taken on log10 values.
    log_metrics: tuple[str, ...] = ("esr",)
    # Explicit condition -> kind mapping; names not listed are inferred.
    kinds: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def fraction(name: str, value: float | None, allow_none: bool = True) -> None:
            if value is None and allow_none:
                return
            if value is None or not 0.0 <= float(value) <= 1.0:
                raise EvaluationError(f"setting {name} must be a fraction in [0, 1], got {value!r}")

        fraction("reference_max_fraction", self.reference_max_fraction)
        fraction("anchor_max_fraction", self.anchor_max_fraction)
        fraction("anchor_item_exception_fraction", self.anchor_item_exception_fraction)
        fraction("ceiling_fraction", self.ceiling_fraction, allow_none=False)
        if not 0.0 < self.alpha < 1.0:
            raise EvaluationError(f"setting alpha must be in (0, 1), got {self.alpha!r}")
        if not 0.5 <= self.confidence_level < 1.0:
            raise EvaluationError(f"setting confidence_level must be in [0.5, 1), got {self.confidence_level!r}")
        for name in ("reference_threshold", "anchor_threshold", "ceiling_threshold"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 100.0:
                raise EvaluationError(f"setting {name} must be on the 0..100 scale, got {value!r}")
        for name in ("reference_max_items", "anchor_max_items"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise EvaluationError(f"setting {name} must be a non-negative integer or null, got {value!r}")
        for name, low in (("bootstrap_resamples", 100), ("permutation_resamples", 100), ("correlation_resamples", 100)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise EvaluationError(f"setting {name} must be an integer >= {low}, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise EvaluationError(f"setting seed must be a non-negative integer, got {self.seed!r}")
        if self.outlier_iqr_factor <= 0:
            raise EvaluationError(f"setting outlier_iqr_factor must be positive, got {self.outlier_iqr_factor!r}")
        if self.anchor_kind not in (ANCHOR35, ANCHOR70):
            raise EvaluationError(f"setting anchor_kind must be {ANCHOR70!r} or {ANCHOR35!r}, got {self.anchor_kind!r}")
        if self.pairwise_scope not in ("models", "all"):
            raise EvaluationError(f"setting pairwise_scope must be 'models' or 'all', got {self.pairwise_scope!r}")
        if self.item_effect not in ("fixed", "random"):
            raise EvaluationError(f"setting item_effect must be 'fixed' or 'random', got {self.item_effect!r}")
        if self.equivalence_margin is not None and self.equivalence_margin <= 0:
            raise EvaluationError(
                f"setting equivalence_margin must be positive or null, got {self.equivalence_margin!r}"
            )
        if self.interaction_prune_alpha is not None and not 0.0 < float(self.interaction_prune_alpha) < 1.0:
            raise EvaluationError(
                f"setting interaction_prune_alpha must be in (0, 1) or null, got {self.interaction_prune_alpha!r}"
            )
        if not isinstance(self.beta_model, bool):
            raise EvaluationError(f"setting beta_model must be true or false, got {self.beta_model!r}")
        if not isinstance(self.ordinal_model, bool):
            raise EvaluationError(f"setting ordinal_model must be true or false, got {self.ordinal_model!r}")
        if self.min_models_for_correlation < 3:
            raise EvaluationError("setting min_models_for_correlation must be at least 3")
        for condition, kind in self.kinds.items():
            if kind not in KINDS:
                raise EvaluationError(
                    f"setting kinds maps {condition!r} to unknown kind {kind!r}; expected one of {', '.join(KINDS)}"
                )

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Settings:
        """Settings from a plain mapping; unknown keys are refused by name."""
        if data is None:
            return cls()
        if isinstance(data, Settings):
            return data
        if not isinstance(data, dict):
            raise EvaluationError(f"settings must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise EvaluationError(
                f"unknown setting(s): {', '.join(unknown)}; known settings are {', '.join(sorted(known))}"
            )
        values = dict(data)
        if "equivalence_pairs" in values:
            pairs = values["equivalence_pairs"] or ()
            try:
                values["equivalence_pairs"] = tuple((str(a), str(b)) for a, b in pairs)
            except (TypeError, ValueError):
                raise EvaluationError("setting equivalence_pairs must be a list of [a, b] pairs") from None
        if "log_metrics" in values:
            values["log_metrics"] = tuple(str(m) for m in (values["log_metrics"] or ()))
        if "kinds" in values:
            if not isinstance(values["kinds"], dict):
                raise EvaluationError("setting kinds must be an object mapping condition names to kinds")
            values["kinds"] = {str(k): str(v) for k, v in values["kinds"].items()}
        for name in (
            "seed",
            "reference_max_items",
            "anchor_max_items",
            "bootstrap_resamples",
            "permutation_resamples",
            "correlation_resamples",
            "min_models_for_correlation",
        ):
            value = values.get(name)
            if isinstance(value, float) and value.is_integer():
                values[name] = int(value)
        try:
            return cls(**values)
        except TypeError as exc:
            raise EvaluationError(f"invalid settings: {exc}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> Settings:
        """Settings from a JSON file holding one object."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EvaluationError(f"settings file {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise EvaluationError(f"settings file {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy of every setting."""
        data = dataclasses.asdict(self)
        data["equivalence_pairs"] = [list(p) for p in self.equivalence_pairs]
        data["log_metrics"] = list(self.log_metrics)
        return data
