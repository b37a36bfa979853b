"""The crossed mixed model against a dense REML written here, statsmodels and the balanced ANOVA."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats
from statsmodels.regression.mixed_linear_model import MixedLM, VCSpec
from statsmodels.stats.anova import AnovaRM

from evaluation.errors import EvaluationError
from evaluation.lmm import TERMS, CrossedREML, LMMResult, fit_lmm
from evaluation.mixed import fit_mixed_model

CONDITIONS = ["c0", "c1", "c2"]


def crossed(
    n_participants: int,
    n_items: int,
    sds: tuple[float, float, float, float],
    seed: int,
    keep: float = 1.0,
    n_conditions: int = 3,
    noise: float = 2.0,
) -> pd.DataFrame:
    """Ratings from the crossed model with SDs (participant, item, participant:condition, item:condition)."""
    rng = np.random.default_rng(seed)
    p, i, c = (a.ravel() for a in np.indices((n_participants, n_items, n_conditions)))
    rating = (
        50.0
        + 2.0 * c
        + sds[0] * rng.normal(size=n_participants)[p]
        + sds[1] * rng.normal(size=n_items)[i]
        + sds[2] * rng.normal(size=(n_participants, n_conditions))[p, c]
        + sds[3] * rng.normal(size=(n_items, n_conditions))[i, c]
        + noise * rng.normal(size=p.size)
    )
    frame = pd.DataFrame({"participant": p, "item": i, "condition": c, "rating": rating})
    frame = frame[rng.random(len(frame)) < keep] if keep < 1 else frame
    frame["participant"] = [f"p{k:02d}" for k in frame["participant"]]
    frame["item"] = [f"i{k:02d}" for k in frame["item"]]
    frame["condition"] = [f"c{k}" for k in frame["condition"]]
    return frame.reset_index(drop=True)


# -- an independent dense REML ---------------------------------------------------------------


def dense_reml(frame: pd.DataFrame, terms: list[str], X: np.ndarray) -> dict[str, Any]:
    """Dense REML with V = sum phi_k Z_k Z_k' + sigma^2 I (Harville 1977; Searle, Casella & McCulloch 1992 ch. 6).

    Optimised over the variances with bounds at zero, then Newton steps with the exact
    observed Hessian -tr(P V_i P V_j) + 2 y'P V_i P V_j P y; Satterthwaite df from
    dVar(beta)/dphi_k = Var(beta) X'V^-1 V_k V^-1 X Var(beta) and 2 H^-1 (Giesbrecht & Burns 1985).
    """
    y = frame["rating"].to_numpy(float)
    n, p = X.shape
    keys = {
        "participant": frame["participant"],
        "item": frame["item"],
        "participant:condition": frame["participant"] + "/" + frame["condition"],
        "item:condition": frame["item"] + "/" + frame["condition"],
    }
    mats = []
    for term in terms:
        z = pd.get_dummies(keys[term]).to_numpy(float)
        mats.append(z @ z.T)
    mats.append(np.eye(n))

    def parts(phi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        V = sum(f * m for f, m in zip(phi, mats))
        Vi = np.linalg.inv(V)
        M = X.T @ Vi @ X
        Mi = np.linalg.inv(M)
        P = Vi - Vi @ X @ Mi @ X.T @ Vi
        return V, Vi, M, Mi, P

    def deviance(phi: np.ndarray) -> float:
        V, _, M, _, P = parts(phi)
        return float(np.linalg.slogdet(V)[1] + np.linalg.slogdet(M)[1] + y @ P @ y + (n - p) * np.log(2 * np.pi))

    def gradient(phi: np.ndarray) -> np.ndarray:
        *_, P = parts(phi)
        Py = P @ y
        return np.array([np.trace(P @ m) - Py @ m @ Py for m in mats])

    def hessian(phi: np.ndarray) -> np.ndarray:
        *_, P = parts(phi)
        Py = P @ y
        PM = [P @ m for m in mats]
        return np.array(
            [
                [-np.trace(a @ b) + 2 * Py @ mats[i] @ P @ mats[j] @ Py for j, b in enumerate(PM)]
                for i, a in enumerate(PM)
            ]
        )

    def both(phi: np.ndarray) -> tuple[float, np.ndarray]:
        return deviance(phi), gradient(phi)

    k = len(mats)
    res = optimize.minimize(
        both,
        np.full(k, np.var(y) / k),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, None)] * (k - 1) + [(1e-8, None)],
        options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 5000},
    )
    phi = res.x.copy()
    for _ in range(30):
        free = np.flatnonzero(phi > 1e-9)
        step = np.linalg.solve(hessian(phi)[np.ix_(free, free)], -gradient(phi)[free])
        new = phi.copy()
        new[free] = np.maximum(phi[free] + step, 0.0)
        if deviance(new) > deviance(phi) + 1e-12:
            break
        phi = new
        if np.abs(step).max() < 1e-13 * phi.max():
            break
    phi[phi < 1e-9] = 0.0
    V, Vi, M, Mi, P = parts(phi)
    free = np.flatnonzero(phi > 0)
    cov = 2 * np.linalg.inv(hessian(phi)[np.ix_(free, free)])
    dvcov = [Mi @ X.T @ Vi @ mats[j] @ Vi @ X @ Mi for j in free]

    def satterthwaite(row: np.ndarray) -> tuple[float, float]:
        var = row @ Mi @ row
        g = np.array([row @ d @ row for d in dvcov])
        return float(np.sqrt(var)), float(2 * var**2 / (g @ cov @ g))

    return {
        "phi": dict(zip(terms + ["residual"], phi)),
        "beta": Mi @ X.T @ Vi @ y,
        "deviance": deviance(phi),
        "satterthwaite": satterthwaite,
    }


def condition_matrix(frame: pd.DataFrame) -> np.ndarray:
    return pd.get_dummies(pd.Categorical(frame["condition"], categories=CONDITIONS)).to_numpy(float)


def assert_agrees(fit: LMMResult, reference: dict[str, Any]) -> None:
    scale = max(reference["phi"].values())
    assert set(fit.variances) == set(reference["phi"])
    for term, value in reference["phi"].items():
        assert fit.variances[term] == pytest.approx(value, abs=1e-6 * scale), term
    assert fit.boundary == [t for t in TERMS if reference["phi"].get(t) == 0.0]
    assert fit.deviance == pytest.approx(reference["deviance"], abs=1e-7)
    assert fit.beta == pytest.approx(reference["beta"], abs=1e-6)
    rows = np.vstack([fit.emm_rows, fit.emm_rows[1:] - fit.emm_rows[0], [1.0, -2.0, 1.0] @ fit.emm_rows])
    estimate, se, df = fit.contrast(rows)
    for r, row in enumerate(rows):
        ref_se, ref_df = reference["satterthwaite"](row)
        assert estimate[r] == pytest.approx(row @ reference["beta"], abs=1e-6)
        assert se[r] == pytest.approx(ref_se, rel=1e-6)
        assert df[r] == pytest.approx(ref_df, rel=1e-5)


@pytest.mark.parametrize(
    ("n_participants", "n_items", "keep", "seed"),
    [(8, 4, 1.0, 3), (8, 4, 0.7, 4), (4, 9, 1.0, 3), (6, 5, 0.6, 4)],
    ids=["balanced", "unbalanced", "more-items-than-listeners", "unbalanced-sparse"],
)
def test_crossed_fit_matches_dense_reml(n_participants: int, n_items: int, keep: float, seed: int) -> None:
    """Variances, fixed effects, SEs and Satterthwaite df against the dense REML in this file."""
    frame = crossed(n_participants, n_items, (3.0, 3.0, 2.0, 2.0), seed, keep=keep)
    fit = fit_lmm(frame, CONDITIONS)
    assert fit.terms == list(TERMS) and fit.converged
    reference = dense_reml(frame, list(TERMS), condition_matrix(frame))
    assert min(reference["phi"].values()) > 0.05  # an interior optimum
    assert_agrees(fit, reference)


def test_listeners_rating_a_subset_of_items_match_dense_reml() -> None:
    """Each listener rates every condition of 3 of the 6 items (a connected incomplete block design)."""
    frame = crossed(10, 6, (3.0, 2.0, 2.0, 2.0), 5)
    rated = {f"p{p:02d}": {f"i{(p + k) % 6:02d}" for k in range(3)} for p in range(10)}
    frame = frame[[item in rated[p] for p, item in zip(frame["participant"], frame["item"])]]
    fit = fit_lmm(frame, CONDITIONS)
    assert_agrees(fit, dense_reml(frame, list(TERMS), condition_matrix(frame)))


def test_a_component_at_zero_is_held_there_as_in_dense_reml() -> None:
    """No listener x condition variance in the data: REML puts it on the boundary; df leave it out."""
    frame = crossed(8, 5, (3.0, 2.0, 0.0, 2.0), 11, keep=0.85)
    fit = fit_lmm(frame, CONDITIONS)
    reference = dense_reml(frame, list(TERMS), condition_matrix(frame))
    assert reference["phi"]["participant:condition"] == 0.0
    assert fit.boundary == ["participant:condition"] and fit.variances["participant:condition"] == 0.0
    assert_agrees(fit, reference)


def test_a_component_left_just_above_zero_is_set_to_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """An optimiser stopping at theta = 5e-5, not 0: zero snapping (or the Newton steps) land on the dense boundary."""
    frame = crossed(8, 5, (3.0, 2.0, 0.0, 2.0), 11, keep=0.85)
    reference = dense_reml(frame, list(TERMS), condition_matrix(frame))
    real = optimize.minimize

    def stops_short(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        result.x = np.where(result.x == 0.0, 5e-5, result.x)
        return result

    monkeypatch.setattr(optimize, "minimize", stops_short)
    fit = fit_lmm(frame, CONDITIONS)
    monkeypatch.undo()
    assert fit.boundary == ["participant:condition"] and fit.variances["participant:condition"] == 0.0
    assert_agrees(fit, reference)


def test_fixed_items_match_dense_reml() -> None:
    """item_effect='fixed': condition * item cell means, listener intercept and listener x condition."""
    frame = crossed(7, 3, (3.0, 2.0, 2.0, 2.0), 6, keep=0.8)
    fit = fit_lmm(frame, CONDITIONS, item_effect="fixed")
    assert fit.terms == ["participant", "participant:condition"] and fit.fixed_formula == "rating ~ condition * item"
    cells = pd.get_dummies(frame["item"] + "/" + frame["condition"])
    assert list(cells.columns) == [f"i{i:02d}/{c}" for i in range(3) for c in CONDITIONS]
    assert_agrees(fit, dense_reml(frame, ["participant", "participant:condition"], cells.to_numpy(float)))


def test_variance_components_match_statsmodels_crossed_fit() -> None:
    """statsmodels MixedLM with the four terms as crossed variance components of one group."""
    frame = crossed(8, 5, (3.0, 2.0, 2.0, 2.0), 7)
    fit = fit_lmm(frame, CONDITIONS)
    keys = {
        "participant": frame["participant"],
        "item": frame["item"],
        "participant:condition": frame["participant"] + "/" + frame["condition"],
        "item:condition": frame["item"] + "/" + frame["condition"],
    }
    names = list(TERMS)
    mats = [pd.get_dummies(keys[t]).to_numpy(float) for t in names]
    spec = VCSpec(names, [[[f"{t}{j}" for j in range(m.shape[1])]] for t, m in zip(names, mats)], [[m] for m in mats])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MixedLM(
            frame["rating"].to_numpy(float), condition_matrix(frame), groups=np.ones(len(frame)), exog_vc=spec
        )
        reference = model.fit(reml=True, method="lbfgs")
    for name, value in zip(model.exog_vc.names, reference.vcomp):
        assert fit.variances[name] == pytest.approx(value, rel=2e-3), name
    assert fit.variances["residual"] == pytest.approx(reference.scale, rel=1e-3)
    assert fit.beta == pytest.approx(reference.fe_params, abs=1e-3)


# -- the balanced design in closed form ----------------------------------------------------------


def mean_squares(frame: pd.DataFrame) -> dict[str, tuple[float, int]]:
    """Three-way ANOVA of a balanced participant x item x condition table, one rating per cell."""
    cube = frame.pivot_table(index=["participant", "item"], columns="condition", values="rating")
    n_p, n_i, n_c = frame["participant"].nunique(), frame["item"].nunique(), frame["condition"].nunique()
    y = cube.to_numpy().reshape(n_p, n_i, n_c)
    m = y.mean()
    mp, mi, mc = y.mean((1, 2)), y.mean((0, 2)), y.mean((0, 1))
    mpc, mic, mpi = y.mean(1), y.mean(0), y.mean(2)
    ss = {
        "P": n_i * n_c * np.sum((mp - m) ** 2),
        "I": n_p * n_c * np.sum((mi - m) ** 2),
        "C": n_p * n_i * np.sum((mc - m) ** 2),
        "PC": n_i * np.sum((mpc - mp[:, None] - mc[None, :] + m) ** 2),
        "IC": n_p * np.sum((mic - mi[:, None] - mc[None, :] + m) ** 2),
    }
    # The model has no participant x item term: its sum of squares pools with the residual.
    fitted = mpc[:, None, :] + mic[None, :, :] + mpi[:, :, None] - mp[:, None, None] - mi[None, :, None]
    ss["E"] = np.sum((y - fitted + mc[None, None, :] - m) ** 2) + n_c * np.sum(
        (mpi - mp[:, None] - mi[None, :] + m) ** 2
    )
    df = {
        "P": n_p - 1,
        "I": n_i - 1,
        "C": n_c - 1,
        "PC": (n_p - 1) * (n_c - 1),
        "IC": (n_i - 1) * (n_c - 1),
        "E": (n_p - 1) * (n_i - 1) * n_c,
    }
    return {k: (ss[k] / df[k], df[k]) for k in ss}


def test_balanced_design_equals_anova_expected_mean_squares() -> None:
    """REML = ANOVA estimators in a balanced design (Searle, Casella & McCulloch 1992 §6.6); t and df classical."""
    n_p, n_i = 9, 6
    frame = crossed(n_p, n_i, (3.0, 3.0, 2.0, 2.0), 2)
    ms = mean_squares(frame)
    fit = fit_lmm(frame, CONDITIONS)
    (ms_c, df_c), (ms_pc, df_pc), (ms_ic, df_ic), (ms_e, df_e) = ms["C"], ms["PC"], ms["IC"], ms["E"]
    assert fit.variances["residual"] == pytest.approx(ms_e, rel=1e-7)
    assert fit.variances["participant:condition"] == pytest.approx((ms_pc - ms_e) / n_i, rel=1e-6)
    assert fit.variances["item:condition"] == pytest.approx((ms_ic - ms_e) / n_p, rel=1e-6)
    assert fit.variances["participant"] == pytest.approx((ms["P"][0] - ms_pc) / (n_i * 3), rel=1e-6)
    assert fit.variances["item"] == pytest.approx((ms["I"][0] - ms_ic) / (n_p * 3), rel=1e-6)
    # A difference of two condition means: Var = 2 (MS_PC + MS_IC - MS_E) / (P I), with
    # Satterthwaite's (1946) df for that linear combination of mean squares.
    combo = ms_pc + ms_ic - ms_e
    means = frame.groupby("condition")["rating"].mean()
    estimate, se, df = fit.contrast(fit.emm_rows[2] - fit.emm_rows[0])
    assert estimate[0] == pytest.approx(means["c2"] - means["c0"], abs=1e-9)
    assert se[0] == pytest.approx(np.sqrt(2 * combo / (n_p * n_i)), rel=1e-7)
    assert df[0] == pytest.approx(combo**2 / (ms_pc**2 / df_pc + ms_ic**2 / df_ic + ms_e**2 / df_e), rel=1e-5)
    # The omnibus test is the quasi-F MS_C / (MS_PC + MS_IC - MS_E) with the same df.
    omnibus = fit.ftest(fit.emm_rows[1:] - fit.emm_rows[0])
    assert omnibus["F"] == pytest.approx(ms_c / combo, rel=1e-7)
    assert omnibus["df1"] == df_c and omnibus["df2"] == pytest.approx(df[0], rel=1e-6)


def test_one_item_gives_the_exact_repeated_measures_t_and_f() -> None:
    """One excerpt: the model is the random-intercept RM-ANOVA; exact F and t on (P-1)(C-1) df (statsmodels AnovaRM)."""
    frame = crossed(12, 1, (3.0, 0.0, 0.0, 0.0), 9, n_conditions=3)
    result = fit_mixed_model(frame, CONDITIONS, "c0")
    assert result["random_effects"] == ["participant"] and result["item_effect"] == "none"
    assert any("participant:condition left out" in note for note in result["design_notes"])
    table = AnovaRM(frame, "rating", "participant", within=["condition"]).fit().anova_table
    assert result["omnibus"]["F"] == pytest.approx(table["F Value"].iloc[0], rel=1e-7)
    assert result["omnibus"]["df2"] == pytest.approx(table["Den DF"].iloc[0], rel=1e-6)
    assert result["omnibus"]["pvalue"] == pytest.approx(table["Pr > F"].iloc[0], rel=1e-5)
    # t of c2 - c0 with the pooled error of the RM-ANOVA: sqrt(2 MS_E / P) on (P-1)(C-1) df.
    wide = frame.pivot(index="participant", columns="condition", values="rating")
    resid = (
        wide - wide.mean(axis=1).to_numpy()[:, None] - wide.mean(axis=0).to_numpy()[None, :] + wide.to_numpy().mean()
    )
    ms_e = float((resid**2).to_numpy().sum()) / (11 * 2)
    diff = wide["c2"].mean() - wide["c0"].mean()
    row = result["contrasts"].set_index("condition").loc["c2"]
    assert row["t"] == pytest.approx(diff / np.sqrt(2 * ms_e / 12), rel=1e-7)
    assert row["df"] == pytest.approx(22, rel=1e-6)
    assert row["pvalue"] == pytest.approx(2 * stats.t.sf(abs(row["t"]), 22), rel=1e-5)


# -- the parts --------------------------------------------------------------------------------


def test_analytic_gradient_matches_finite_differences() -> None:
    """d REML / d theta from the block traces of A^-1 against central differences of the criterion."""
    frame = crossed(7, 4, (3.0, 2.0, 2.0, 2.0), 12, keep=0.8)
    part, item, cond = (pd.Categorical(frame[c]).codes.astype(np.int64) for c in ("participant", "item", "condition"))
    model = CrossedREML(frame["rating"].to_numpy(float), condition_matrix(frame), part, item, cond, (True,) * 4)
    theta = np.array([0.9, 0.4, 0.7, 0.3])
    grad = model.evaluate(theta, level=1).grad
    h = 1e-6
    for k in range(4):
        up, down = theta.copy(), theta.copy()
        up[k] += h
        down[k] -= h
        numeric = (model.evaluate(up).deviance - model.evaluate(down).deviance) / (2 * h)
        assert grad is not None and grad[k] == pytest.approx(numeric, rel=1e-6, abs=1e-6)


def test_unidentifiable_terms_are_dropped_and_named() -> None:
    frame = crossed(6, 1, (3.0, 0.0, 0.0, 0.0), 13)
    fit = fit_lmm(frame, CONDITIONS)
    assert fit.terms == ["participant"]
    assert set(fit.dropped) == {"item", "participant:condition", "item:condition"}


def test_bad_input_gives_a_specific_error() -> None:
    frame = crossed(6, 3, (3.0, 2.0, 2.0, 2.0), 14)
    with pytest.raises(EvaluationError, match="no ratings of condition"):
        fit_lmm(frame, CONDITIONS + ["c9"])
    with pytest.raises(EvaluationError, match="item_effect"):
        fit_lmm(frame, CONDITIONS, item_effect="nested")


@pytest.mark.parametrize("seed", [0, 3, 19])
def test_components_the_first_steps_push_to_zero_are_recovered(seed: int) -> None:
    """Null interactions: L-BFGS-B from theta = 1 overshoots onto zero, where the gradient in theta vanishes.

    The fit must still reach the dense REML optimum (listener and item variances well above zero).
    """
    frame = crossed(12, 6, (5.0, 5.0, 0.0, 0.0), seed, noise=10.0)
    part, item, cond = (pd.factorize(frame[c], sort=True)[0] for c in ("participant", "item", "condition"))
    model = CrossedREML(frame["rating"].to_numpy(float), condition_matrix(frame), part, item, cond, (True,) * 4)

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        ev = model.evaluate(x, 1)
        assert ev.grad is not None
        return ev.deviance, ev.grad

    stalled = optimize.minimize(
        objective,
        np.ones(4),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, None)] * 4,
    )
    assert (stalled.x[:2] == 0).any()
    reference = dense_reml(frame, list(TERMS), condition_matrix(frame))
    assert min(reference["phi"]["participant"], reference["phi"]["item"]) > 1.0
    assert_agrees(fit_lmm(frame, CONDITIONS), reference)


def test_pruning_removes_an_unsupported_interaction_by_the_reml_likelihood_ratio() -> None:
    """Backward removal at p > 0.2 (Matuschek et al. 2017): the LRT and the reduced fit from the dense REML here."""
    frame = crossed(12, 6, (5.0, 5.0, 0.0, 6.0), 8, noise=10.0)
    X = condition_matrix(frame)
    full = dense_reml(frame, list(TERMS), X)
    reduced_terms = ["participant", "item", "item:condition"]
    reduced = dense_reml(frame, reduced_terms, X)
    no_items = dense_reml(frame, ["participant", "item", "participant:condition"], X)
    p_pc = stats.chi2.sf(reduced["deviance"] - full["deviance"], 1)
    p_ic = stats.chi2.sf(no_items["deviance"] - full["deviance"], 1)
    assert p_pc > 0.2 and p_ic < 0.01  # the design of the check: one term goes, the other stays
    fit = fit_lmm(frame, CONDITIONS, prune_alpha=0.2)
    assert fit.terms == reduced_terms
    assert f"p = {p_pc:.3f} > 0.2" in fit.dropped["participant:condition"]
    assert_agrees(fit, reduced)
    # Without pruning the maximal model stays.
    assert fit_lmm(frame, CONDITIONS).terms == list(TERMS)
    mixed = fit_mixed_model(frame, CONDITIONS, "c0")
    assert "participant:condition" not in mixed["random_effects"]
    assert any(n.startswith("participant:condition left out: not supported") for n in mixed["design_notes"])
