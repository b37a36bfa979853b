"""Linear mixed model with crossed random effects for listening tests: REML and Satterthwaite.

The model, in lme4 notation (Bates, Mächler, Bolker & Walker 2015)::

    rating ~ 0 + condition + (1 | participant) + (1 | item)
             + (1 | participant:condition) + (1 | item:condition)

Listeners and excerpts are crossed random factors (Baayen, Davidson & Bates 2008); the two
interaction terms let a listener, or an excerpt, move the conditions apart by its own
amount, which is what a contrast between conditions has to be tested against (Judd,
Westfall & Kenny 2012; Barr, Levy, Scheepers & Tily 2013). Leaving them out makes the
contrast's standard error that of the residual alone and its test anti-conservative.

Estimation is restricted maximum likelihood (Patterson & Thompson 1971) profiled over the
relative standard deviations theta >= 0 as in lme4: with Lambda the diagonal relative
factor and ``A = Lambda' Z'Z Lambda + I``, the criterion is
``log|A| + log|X' V~^-1 X| + (n - p) (1 + log(2 pi r^2 / (n - p)))`` where ``V~ = I + Z Lambda
Lambda' Z'`` and ``r^2`` is the penalised residual sum of squares. ``A`` is never formed: the
random effects of the larger factor (listener intercepts and listener x condition cells)
form one arrow-shaped block per listener, eliminated exactly in closed form, and only the
Schur complement on the smaller factor's effects is dense, so the cost per evaluation is
linear in the number of listeners and every quantity is a sufficient statistic of size
q = number of random effects (never n). The gradient in theta is analytic (from the
diagonal of A^-1), the optimiser L-BFGS-B with theta >= 0, then a few Newton steps; a
relative SD below 1e-4 (lme4's singular tolerance) is set to exactly zero when that does
not worsen the criterion. The criterion depends on theta only through theta^2, so its
gradient in theta is zero at theta_k = 0 whatever the slope in the variance: each component
left at zero is probed just inside the bound and, where the criterion still falls there,
the optimiser restarts from it (without that check the first L-BFGS-B step from theta = 1
often parked every component, listener and item intercepts included, at zero).

``fit_lmm(..., prune_alpha=0.2)``, as the analysis calls it, then removes interaction terms
the data do not support by backward REML likelihood ratio tests (Matuschek, Kliegl,
Vasishth, Baayen & Bates 2017): with a true interaction variance of zero the maximal model's
contrasts are conservative (3.3 % at nominal 5 % in ``bench/bench_mixed_type1.py``), because
the truncated variance estimate is biased upwards and, when positive, inflates the standard
error and cuts the Satterthwaite df.

Degrees of freedom for a contrast ``l' beta`` follow Satterthwaite (1946) as in lmerTest
(Kuznetsova, Brockhoff & Christensen 2017; Fai & Cornelius 1996 for several rows): the
variance ``v(phi) = l' Var(beta) l`` as a function of the variance components ``phi``, its
analytic gradient, and the asymptotic covariance of ``phi`` as twice the inverse Hessian
of -2 log REML (central differences of the analytic gradient); ``df = 2 v^2 / (g' C g)``.
Components estimated at zero are held fixed there (left out of ``phi``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import linalg, optimize, sparse, stats

from .errors import EvaluationError

#: Random-effect terms in the order of the parameter vector theta.
TERMS = ("participant", "item", "participant:condition", "item:condition")
#: Relative SD below which a component is tried at exactly zero (lme4's isSingular tolerance).
SINGULAR_TOL = 1e-4
#: Largest gradient component (deviance per unit theta) left to L-BFGS-B; beyond it Newton steps follow.
NEWTON_TOL = 1e-6
#: Relative SD at which a component held at zero is probed for a downhill slope.
BOUNDARY_PROBE = 1e-3
#: Largest dense block (entries) the elimination may build; beyond it both factors are large.
MAX_DENSE = 60_000_000


@dataclass
class _Factor:
    """A at one theta: the per-listener arrow blocks, G0 and the Schur complement's Cholesky."""

    theta: np.ndarray
    lam: np.ndarray
    arrow: tuple[np.ndarray, np.ndarray, np.ndarray]
    g0: np.ndarray
    chol: np.ndarray
    logdet: float


@dataclass
class _Eval:
    """Everything one evaluation of the criterion at theta yields."""

    theta: np.ndarray
    deviance: float
    beta: np.ndarray
    r2: float
    rchol: np.ndarray
    # Filled only when derivatives are asked for.
    grad: np.ndarray | None = None
    trace_p: np.ndarray | None = None  # tr(Z_k' P~ Z_k) per term
    ze2: np.ndarray | None = None  # ||Z_k' e~||^2 per term
    trace_p0: float = math.nan  # tr(P~)
    e2: float = math.nan  # ||e~||^2
    dvcov: list[np.ndarray] = field(default_factory=list)  # d(R^-1)-type pieces per term, then residual


class CrossedREML:
    """Profiled REML criterion of the crossed model, its analytic gradient and the fit.

    ``y`` (n,), ``X`` (n, p) full column rank, ``participant``/``item``/``condition``
    integer codes (n,), ``active`` one flag per entry of :data:`TERMS`. The factor with more
    random effects is eliminated block by block (listener by listener), the other one
    densely. Inactive terms keep their columns with theta fixed at zero, which leaves A
    equal to the identity there.
    """

    def __init__(
        self,
        y: np.ndarray,
        X: np.ndarray,
        participant: np.ndarray,
        item: np.ndarray,
        condition: np.ndarray,
        active: tuple[bool, bool, bool, bool],
    ) -> None:
        y = np.asarray(y, dtype=float)
        X = np.asarray(X, dtype=float)
        n, p = X.shape
        if n <= p:
            raise EvaluationError(f"the mixed model needs more ratings ({n}) than fixed effects ({p})")
        self.n, self.p = n, p
        self.active = np.array(active, dtype=bool)
        # Centre y on a vector in the column space of X (an intercept): the sums of squares
        # below then do not cancel digits at scale. The shift comes back through beta.
        self.shift = float(y.mean())
        ones_coef, *_ = np.linalg.lstsq(X, np.ones(n), rcond=None)
        if not np.allclose(X @ ones_coef, 1.0):
            raise EvaluationError("the fixed effects must contain an intercept (condition columns summing to one)")
        self.ones_coef = ones_coef
        self.y = y
        yc = y - self.shift
        n_cond = int(condition.max()) + 1 if n else 0
        factors = []
        for level_term, cell_term, codes in ((0, 2, participant), (1, 3, item)):
            if not (self.active[level_term] or self.active[cell_term]):
                continue
            codes = np.asarray(codes, dtype=np.int64)
            n_levels = int(codes.max()) + 1
            cells, cell_codes = np.unique(codes * n_cond + condition, return_inverse=True)
            factors.append((level_term, cell_term, codes, n_levels, cell_codes.ravel(), cells // n_cond))
        # The factor with more effects is eliminated in closed form; the other stays dense.
        factors.sort(key=lambda f: f[3] + len(f[5]), reverse=True)
        self.blocks: list[tuple[int, int, int]] = []  # (term, start, stop) in the q effects
        z_parts = []
        start = 0
        for level_term, cell_term, codes, n_levels, cell_codes, _ in factors:
            for term, col, width in ((level_term, codes, n_levels), (cell_term, cell_codes, int(cell_codes.max()) + 1)):
                z_parts.append(sparse.csr_matrix((np.ones(n), (np.arange(n), col)), shape=(n, width)))
                self.blocks.append((term, start, start + width))
                start += width
        self.q = start
        if factors:
            _, _, codes, n_levels, cell_codes, owner = factors[0]
            self.na, self.ma = n_levels, len(owner)
            self.owner = owner.astype(np.int64)
            self.cnt_level = np.bincount(codes, minlength=n_levels).astype(float)
            self.cnt_cell = np.bincount(cell_codes, minlength=self.ma).astype(float)
            self.aggregate = sparse.csr_matrix(
                (np.ones(self.ma), (self.owner, np.arange(self.ma))), shape=(self.na, self.ma)
            )
            self.s_terms = (factors[0][0], factors[0][1])
        else:
            self.na = self.ma = 0
            self.owner = np.zeros(0, dtype=np.int64)
            self.cnt_level = self.cnt_cell = np.zeros(0)
            self.aggregate = sparse.csr_matrix((0, 0))
            self.s_terms = (0, 2)
        self.t_terms = (factors[1][0], factors[1][1]) if len(factors) > 1 else None
        self.ns = self.na + self.ma
        self.nt = self.q - self.ns
        self.nt_level = factors[1][3] if len(factors) > 1 else 0
        if self.na * self.nt > MAX_DENSE or self.nt * self.nt > MAX_DENSE:
            raise EvaluationError(
                f"the crossed model would need a dense {self.na} x {self.nt} block: both factors have "
                "very many levels; use item_effect 'fixed'"
            )
        Z = sparse.hstack(z_parts, format="csr") if z_parts else sparse.csr_matrix((n, 0))
        self.ztz = (Z.T @ Z).tocsr()
        zt = Z[:, self.ns :]
        # Coupling of the eliminated factor's levels (dense, na x nt) and cells (sparse) with
        # the dense factor's effects, and the dense factor's own cross-products.
        self.rp0 = (Z[:, : self.na].T @ zt).toarray()
        self.rc0 = (Z[:, self.na : self.ns].T @ zt).tocsr()
        self.rc0t = self.rc0.T.tocsr()
        self.ztz_tt = (zt.T @ zt).toarray()
        # R_c0' diag(w) R_c0 for weights that depend on a cell's count only, precomputed per
        # distinct count when that is small (it is: a count is the items rated in a cell).
        self.count_values, self.count_index = np.unique(self.cnt_cell, return_inverse=True)
        self.cell_grams = None
        if self.nt and len(self.count_values) * self.nt**2 <= MAX_DENSE // 4:
            self.cell_grams = np.stack(
                [
                    (self.rc0t[:, self.count_index == k] @ self.rc0[self.count_index == k]).toarray()
                    for k in range(len(self.count_values))
                ]
            )
        self.ztx = np.asarray(Z.T @ X)
        self.zty = np.asarray(Z.T @ yc).ravel()
        self.ztxy = np.column_stack([self.ztx, self.zty])
        self.xtx = X.T @ X
        self.xty = X.T @ yc
        self.yty = float(yc @ yc)
        self.term_of_effect = np.empty(self.q, dtype=np.int64)
        for term, lo, hi in self.blocks:
            self.term_of_effect[lo:hi] = term

    # -- linear algebra of A = Lambda' Z'Z Lambda + I ---------------------------------------

    def _arrow(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Per listener: [[a, b'], [b, diag(d)]] on (intercept, its condition cells).
        tl, tc = theta[self.s_terms[0]], theta[self.s_terms[1]]
        b = tl * tc * self.cnt_cell
        d = 1.0 + tc * tc * self.cnt_cell
        s = 1.0 + tl * tl * self.cnt_level - np.bincount(self.owner, b * b / d, minlength=self.na)
        return s, b, d

    def _arrow_solve(self, arrow: tuple[np.ndarray, np.ndarray, np.ndarray], V: np.ndarray) -> np.ndarray:
        s, b, d = arrow
        vp, vc = V[: self.na], V[self.na :]
        xp = (vp - self.aggregate @ ((b / d)[:, None] * vc)) / s[:, None]
        xc = (vc - b[:, None] * xp[self.owner]) / d[:, None]
        return np.vstack([xp, xc])

    def _cell_gram(self, weights: np.ndarray) -> np.ndarray:
        # R_c0' diag(weights) R_c0 with weights a function of the cell count.
        if self.cell_grams is not None:
            per_count = np.zeros(len(self.count_values))
            per_count[self.count_index] = weights
            return np.tensordot(per_count, self.cell_grams, axes=1)
        gram: np.ndarray = (self.rc0t @ self.rc0.multiply(weights[:, None]).tocsr()).toarray()
        return gram

    def _factor(self, theta: np.ndarray) -> _Factor:
        lam = theta[self.term_of_effect]
        arrow = self._arrow(theta)
        s, b, d = arrow
        tl, tc = theta[self.s_terms[0]], theta[self.s_terms[1]]
        lt = lam[self.ns :]
        logdet = float(np.log(s).sum() + np.log(d).sum())
        g0 = np.zeros((self.na, self.nt))
        chol = np.zeros((0, 0))
        if self.nt:
            weighted = sparse.csr_matrix((b / d, (self.owner, np.arange(self.ma))), shape=(self.na, self.ma))
            g0 = tl * self.rp0 - tc * (weighted @ self.rc0).toarray()
            core = self.ztz_tt - tc * tc * self._cell_gram(1.0 / d) - g0.T @ (g0 / s[:, None])
            chol = np.linalg.cholesky(np.eye(self.nt) + lt[:, None] * core * lt[None, :])
            logdet += 2.0 * float(np.log(np.diag(chol)).sum())
        return _Factor(theta, lam, arrow, g0, chol, logdet)

    def _solve(self, fac: _Factor, V: np.ndarray) -> np.ndarray:
        ws = self._arrow_solve(fac.arrow, V[: self.ns])
        if not self.nt:
            return ws
        tl, tc = fac.theta[self.s_terms[0]], fac.theta[self.s_terms[1]]
        lt = fac.lam[self.ns :, None]
        coupled = lt * (tl * (self.rp0.T @ ws[: self.na]) + tc * (self.rc0t @ ws[self.na :]))
        xt = linalg.cho_solve((fac.chol, True), V[self.ns :] - coupled, check_finite=False)
        back = np.vstack([tl * (self.rp0 @ (lt * xt)), tc * (self.rc0 @ (lt * xt))])
        return np.vstack([self._arrow_solve(fac.arrow, V[: self.ns] - back), xt])

    def _block_traces(self, fac: _Factor) -> np.ndarray:
        """Sum of the diagonal of A^-1 over each term's effects (zero for absent terms)."""
        s, b, d = fac.arrow
        out = np.zeros(len(TERMS))
        inv_s = 1.0 / s
        level, cell = self.s_terms
        out[level] = inv_s.sum()
        out[cell] = float(np.sum(1.0 / d + (b / d) ** 2 * inv_s[self.owner]))
        if self.nt:
            tc = fac.theta[cell]
            lt = fac.lam[self.ns :]
            k = linalg.cho_solve((fac.chol, True), np.eye(self.nt), check_finite=False)
            kl = lt[:, None] * k * lt[None, :]
            g0 = fac.g0
            # Diagonal of W S^-1 W' summed per block, W = A_SS^-1 A_ST, without forming W.
            out[level] += float(np.sum(kl * (g0.T @ (g0 * (inv_s**2)[:, None]))))
            u = (g0 * inv_s[:, None])[self.owner]
            y = self.rc0t @ ((b / d**2)[:, None] * u)
            beta = np.bincount(self.owner, (b / d) ** 2, minlength=self.na)
            wc = tc * tc * self._cell_gram(1.0 / d**2) - tc * (y + y.T) + g0.T @ (g0 * (beta * inv_s**2)[:, None])
            out[cell] += float(np.sum(kl * wc))
            diag_k = np.diag(k)
            t_level, t_cell = self.t_terms or (0, 0)
            out[t_level] += diag_k[: self.nt_level].sum()
            out[t_cell] += diag_k[self.nt_level :].sum()
        return out

    # -- the criterion ---------------------------------------------------------------------

    def evaluate(self, theta: np.ndarray, level: int = 0) -> _Eval:
        """REML criterion (-2 log restricted likelihood, profiled over sigma^2) at theta.

        ``level`` 1 adds the gradient in theta, 2 the pieces of the gradient in the
        variances, 3 also the derivatives of Var(beta) in the variances.
        """
        theta = np.where(self.active, np.maximum(np.asarray(theta, dtype=float), 0.0), 0.0)
        n, p = self.n, self.p
        factor = self._factor(theta)
        lam, logdet_a = factor.lam, factor.logdet
        rhs = lam[:, None] * self.ztxy
        sol = self._solve(factor, rhs)
        c_x, c_y, m_x, m_y = rhs[:, :p], rhs[:, p], sol[:, :p], sol[:, p]
        r = self.xtx - c_x.T @ m_x
        try:
            rchol = np.linalg.cholesky((r + r.T) / 2.0)
        except np.linalg.LinAlgError as error:
            raise EvaluationError("the fixed effects of the mixed model are not estimable (rank deficient)") from error
        bb = self.xty - c_x.T @ m_y
        beta = linalg.cho_solve((rchol, True), bb, check_finite=False)
        r2 = float(self.yty - c_y @ m_y - beta @ bb)
        if not r2 > 0:
            raise EvaluationError("the mixed model fits the ratings exactly; there is no residual variance")
        dof = n - p
        deviance = logdet_a + 2.0 * float(np.log(np.diag(rchol)).sum()) + dof * (1.0 + math.log(2 * math.pi * r2 / dof))
        out = _Eval(theta, deviance, beta, r2, rchol)
        if level < 1:
            return out
        traces = self._block_traces(factor)
        u = m_y - m_x @ beta
        lm = lam[:, None] * m_x
        ztz_lm = self.ztz @ lm
        f = self.ztx - ztz_lm  # Z' V~^-1 X
        ze = (self.zty - self.ztx @ beta) - self.ztz @ (lam * u)  # Z' e~
        g2 = linalg.solve_triangular(rchol, f.T, lower=True, check_finite=False)
        trace_p = np.zeros(len(TERMS))
        ze2 = np.zeros(len(TERMS))
        grad = np.zeros(len(TERMS))
        rinv = linalg.cho_solve((rchol, True), np.eye(p), check_finite=False) if level >= 3 else None
        dvcov = [np.zeros((p, p)) for _ in TERMS]
        for term, lo, hi in self.blocks:
            ze2[term] = float(ze[lo:hi] @ ze[lo:hi])
            t = theta[term]
            if t > 0:
                tr_rff = float(np.einsum("ij,ij->", g2[:, lo:hi], g2[:, lo:hi]))
                # tr(Z_k' V~^-1 Z_k) = (q_k - tr(A^-1)_kk) / theta_k^2 (from H A^-1 H = H - I + A^-1).
                tr_zvz = (hi - lo - traces[term]) / (t * t)
                trace_p[term] = tr_zvz - tr_rff
                grad[term] = 2.0 * t * (trace_p[term] - dof * ze2[term] / r2)
            if rinv is not None:
                dvcov[term] = rinv @ (f[lo:hi].T @ f[lo:hi]) @ rinv
        out.grad = np.where(self.active, grad, 0.0)
        out.trace_p, out.ze2 = trace_p, ze2
        if level >= 2:
            xv2x = self.xtx - 2.0 * c_x.T @ m_x + lm.T @ ztz_lm
            out.trace_p0 = float(n - self.q + traces.sum() - np.trace(linalg.cho_solve((rchol, True), xv2x)))
            out.e2 = float(r2 - u @ u)
            if rinv is not None:
                out.dvcov = dvcov + [rinv @ xv2x @ rinv]
        return out

    def phi_gradient(self, phi: np.ndarray, free: np.ndarray, level: int = 2) -> tuple[np.ndarray, _Eval]:
        """Gradient of -2 log REML in the variances (components of ``free``, then the residual)."""
        sigma2 = phi[-1]
        theta = np.zeros(len(TERMS))
        theta[free] = np.sqrt(np.maximum(phi[:-1], 0.0) / sigma2)
        ev = self.evaluate(theta, level)
        assert ev.trace_p is not None and ev.ze2 is not None
        g = [ev.trace_p[k] / sigma2 - ev.ze2[k] / sigma2**2 for k in np.flatnonzero(free)]
        g.append(ev.trace_p0 / sigma2 - ev.e2 / sigma2**2)
        return np.array(g), ev

    # -- the fit ---------------------------------------------------------------------------

    def fit(self, start: np.ndarray | None = None) -> tuple[_Eval, list[str]]:
        """REML estimates of theta: L-BFGS-B on theta >= 0 from ``start`` (all ones), zero snapping, Newton polish."""
        notes: list[str] = []
        idx = np.flatnonzero(self.active)
        if not len(idx):
            return self.evaluate(np.zeros(len(TERMS)), level=1), notes

        def full(x: np.ndarray) -> np.ndarray:
            theta = np.zeros(len(TERMS))
            theta[idx] = x
            return theta

        def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
            ev = self.evaluate(full(x), level=1)
            assert ev.grad is not None
            return ev.deviance, ev.grad[idx]

        result = optimize.minimize(
            objective,
            np.ones(len(idx)) if start is None else np.where(start[idx] > 0, start[idx], 1.0),
            jac=True,
            method="L-BFGS-B",
            bounds=[(0.0, None)] * len(idx),
            options={"maxiter": 500, "ftol": 1e-14, "gtol": 1e-9},
        )
        x = np.maximum(result.x, 0.0)
        best = self.evaluate(full(x), level=1)
        # Components that end near zero are tried at exactly zero (the boundary is common:
        # a listener x condition SD of zero is a real possibility, not a failure).
        for k in range(len(idx)):
            if 0.0 < x[k] < SINGULAR_TOL:
                trial = x.copy()
                trial[k] = 0.0
                ev = self.evaluate(full(trial), level=1)
                if ev.deviance <= best.deviance + 1e-6:
                    x, best = trial, ev
        x, best = self._newton(x, best, full, idx)
        # The criterion depends on theta through theta^2, so its gradient in theta vanishes at
        # zero whatever the slope in the variance: a component the optimiser's first steps
        # push onto the bound stays there. Check the boundary's optimality condition (slope
        # in theta^2 >= 0) and restart from the components that would rather be positive.
        # The restart starts those components small: the first step from 1 is what overshot.
        for small in (0.1, 0.01, 0.5):
            uphill = self._boundary_slopes(x, full, idx) < -NEWTON_TOL
            if not uphill.any():
                break
            restart = optimize.minimize(
                objective,
                np.where(uphill, small, x),
                jac=True,
                method="L-BFGS-B",
                bounds=[(0.0, None)] * len(idx),
                options={"maxiter": 500, "ftol": 1e-14, "gtol": 1e-9},
            )
            trial = np.maximum(restart.x, 0.0)
            ev = self.evaluate(full(trial), level=1)
            if not ev.deviance < best.deviance:
                continue
            x, best, result = trial, ev, restart
            x, best = self._newton(x, best, full, idx)
        assert best.grad is not None
        free = x > 0
        slope = float(np.max(np.abs(best.grad[idx][free]))) if free.any() else 0.0
        if not result.success and slope > 1e-3:
            notes.append(f"REML optimiser stopped: {result.message}")
        if slope > 1e-2:
            notes.append(f"REML gradient not at zero after the fit (largest component {slope:.3g})")
        return best, notes

    def _boundary_slopes(self, x: np.ndarray, full: Callable[[np.ndarray], np.ndarray], idx: np.ndarray) -> np.ndarray:
        """Slope of the criterion in theta_k^2 just inside the bound, for each component at zero."""
        slopes = np.zeros(len(idx))
        for k in np.flatnonzero(x == 0):
            probe = x.copy()
            probe[k] = BOUNDARY_PROBE
            grad = self.evaluate(full(probe), level=1).grad
            assert grad is not None
            slopes[k] = grad[idx][k] / (2.0 * BOUNDARY_PROBE)
        return slopes

    def _newton(
        self, x: np.ndarray, best: _Eval, full: Callable[[np.ndarray], np.ndarray], idx: np.ndarray
    ) -> tuple[np.ndarray, _Eval]:
        # Newton steps on the free components with a Hessian from central differences of
        # the analytic gradient: L-BFGS-B stops a few digits short of the optimum.
        for _ in range(4):
            free = np.flatnonzero(x > 0)
            if not len(free):
                break
            assert best.grad is not None
            g = best.grad[idx][free]
            if np.max(np.abs(g)) < NEWTON_TOL:
                break
            hess = np.zeros((len(free), len(free)))
            for j, k in enumerate(free):
                h = 1e-5 * max(x[k], 1e-2)
                up, down = x.copy(), x.copy()
                up[k] += h
                down[k] -= min(h, x[k])
                gu = self.evaluate(full(up), level=1).grad
                gd = self.evaluate(full(down), level=1).grad
                assert gu is not None and gd is not None
                hess[:, j] = (gu[idx][free] - gd[idx][free]) / (up[k] - down[k])
            hess = (hess + hess.T) / 2.0
            try:
                step = -linalg.solve(hess, g, assume_a="pos")
            except (linalg.LinAlgError, ValueError):
                break
            improved = False
            for scale in (1.0, 0.5, 0.25, 0.1):
                trial = x.copy()
                trial[free] = np.maximum(x[free] + scale * step, 0.0)
                ev = self.evaluate(full(trial), level=1)
                if ev.deviance <= best.deviance + 1e-12 * max(1.0, abs(best.deviance)):
                    x, best, improved = trial, ev, True
                    break
            if not improved:
                break
        return x, best


@dataclass
class LMMResult:
    """A fitted crossed model: estimates, their covariance and what Satterthwaite needs.

    ``emm_rows`` (conditions x p) maps beta to the estimated marginal means; a contrast of
    conditions is a difference of its rows. ``notes`` are the optimiser's complaints
    (``converged`` is false when there are any); ``design_notes`` say how the data shaped
    the model.
    """

    conditions: list[str]
    item_effect: str
    fixed_formula: str
    emm_rows: np.ndarray
    coef_names: list[str]
    beta: np.ndarray
    vcov: np.ndarray
    variances: dict[str, float]
    terms: list[str]
    dropped: dict[str, str]
    boundary: list[str]
    deviance: float
    n_obs: int
    converged: bool
    notes: list[str]
    design_notes: list[str]
    # Satterthwaite: derivatives of Var(beta) per free variance parameter, and their covariance.
    dvcov: np.ndarray
    phi_cov: np.ndarray

    def contrast(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Estimates, standard errors and Satterthwaite df of the rows of ``rows`` (k x p)."""
        rows = np.atleast_2d(np.asarray(rows, dtype=float))
        estimate = rows @ self.beta
        var = np.einsum("ij,jk,ik->i", rows, self.vcov, rows)
        grad = np.einsum("ij,mjk,ik->im", rows, self.dvcov, rows)
        spread = np.einsum("im,mn,in->i", grad, self.phi_cov, grad)
        with np.errstate(divide="ignore", invalid="ignore"):
            df = np.where(spread > 0, 2.0 * var**2 / spread, np.inf)
        return estimate, np.sqrt(var), df

    def ftest(self, rows: np.ndarray) -> dict[str, float]:
        """F test of ``rows @ beta = 0`` with Satterthwaite denominator df (Fai & Cornelius 1996)."""
        rows = np.atleast_2d(np.asarray(rows, dtype=float))
        value = rows @ self.beta
        cov = rows @ self.vcov @ rows.T
        eigval, eigvec = np.linalg.eigh(cov)
        keep = eigval > 1e-10 * eigval.max()
        eigval, eigvec = eigval[keep], eigvec[:, keep]
        k = len(eigval)
        f = float(np.sum((eigvec.T @ value) ** 2 / eigval) / k)
        _, _, nu = self.contrast(eigvec.T @ rows)
        if k == 1:
            df2 = float(nu[0])
        else:
            big = nu > 2
            e = float(np.sum(nu[big] / (nu[big] - 2.0))) if big.all() else math.nan
            df2 = 2.0 * e / (e - k) if e > k else math.nan
        pvalue = float(stats.f.sf(f, k, df2)) if np.isfinite(df2) else float(stats.chi2.sf(f * k, k))
        return {"F": f, "df1": k, "df2": df2, "pvalue": pvalue}


def _active_terms(
    data: pd.DataFrame, n_participants: int, n_items: int, n_conditions: int, random_items: bool
) -> tuple[list[bool], dict[str, str]]:
    n = len(data)
    n_pc = data[["participant", "condition"]].drop_duplicates().shape[0]
    n_ic = data[["item", "condition"]].drop_duplicates().shape[0]
    dropped: dict[str, str] = {}
    fixed_items = "item is a fixed effect (item_effect 'fixed')"
    rules: dict[str, list[tuple[bool, str]]] = {
        "participant": [(n_participants >= 2, "fewer than two participants")],
        "item": [(random_items, fixed_items), (n_items >= 2, "one item")],
        "participant:condition": [
            (n_participants >= 2 and n_conditions >= 2, "fewer than two participants or conditions"),
            (n_pc < n, "one rating per participant and condition: confounded with the residual"),
        ],
        "item:condition": [
            (random_items, fixed_items),
            (n_items >= 2 and n_conditions >= 2, "one item or one condition"),
            (n_ic < n, "one rating per item and condition: confounded with the residual"),
        ],
    }
    active = []
    for term in TERMS:
        reason = next((why for ok, why in rules[term] if not ok), None)
        active.append(reason is None)
        if reason is not None:
            dropped[term] = reason
    return active, dropped


def fit_lmm(
    ratings: pd.DataFrame, conditions: list[str], item_effect: str = "random", prune_alpha: float | None = None
) -> LMMResult:
    """Fit the crossed model to a long table (participant, item, condition, rating).

    ``item_effect='random'`` is the model in the module docstring. ``'fixed'`` treats the
    excerpts as the whole population of interest: ``rating ~ condition * item`` (the
    additive ``condition + item`` when a cell is empty) with the listener's random
    intercept and listener x condition effects; its EMMs average the items with equal
    weight (Searle, Speed & Milliken 1980).

    ``prune_alpha`` (None: the maximal model) removes the listener x condition and item x
    condition terms the data do not support, backwards, by the REML likelihood ratio test of
    nested models on one df (as lmerTest's ``step`` and ``ranova``): the least supported term
    goes while its p exceeds ``prune_alpha``. Matuschek, Kliegl, Vasishth, Baayen & Bates
    (2017) recommend 0.2: a term whose variance is zero, or nearly so, otherwise inflates
    the contrasts' standard errors (a truncated variance estimate is biased upwards) and
    cuts their df, so the tests fall well below their nominal size.
    """
    if item_effect not in ("random", "fixed"):
        raise EvaluationError(f"item_effect must be 'random' or 'fixed', got {item_effect!r}")
    data = ratings[ratings["condition"].isin(conditions)][["participant", "item", "condition", "rating"]]
    data = data[np.isfinite(data["rating"].astype(float))]
    present = set(data["condition"].unique())
    missing = [c for c in conditions if c not in present]
    if missing:
        raise EvaluationError(f"the mixed model has no ratings of condition(s) {', '.join(map(str, missing))}")
    cond = pd.Categorical(data["condition"], categories=conditions).codes.astype(np.int64)
    part = pd.factorize(data["participant"], sort=True)[0].astype(np.int64)
    items = sorted(data["item"].unique())
    item = pd.Categorical(data["item"], categories=items).codes.astype(np.int64)
    n, n_c, n_i = len(data), len(conditions), len(items)
    n_p = int(part.max()) + 1 if n else 0
    random_items = item_effect == "random"
    design_notes: list[str] = []
    fixed_formula = "rating ~ condition"
    columns = [(cond == k).astype(float) for k in range(n_c)]
    names = [f"condition[{c}]" for c in conditions]
    emm_rows = np.eye(n_c)
    if not random_items and n_i > 1:
        cells = np.zeros((n_i, n_c), dtype=bool)
        cells[item, cond] = True
        if cells.all():
            columns = [((item == i) & (cond == k)).astype(float) for i in range(n_i) for k in range(n_c)]
            names = [f"condition[{c}]:item[{i}]" for i in items for c in conditions]
            emm_rows = np.tile(np.eye(n_c), (1, n_i)) / n_i
            fixed_formula = "rating ~ condition * item"
        else:
            fixed_formula = "rating ~ condition + item"
            design_notes.append(
                "some item x condition cells are empty: fixed items enter additively (condition + item)"
            )
            last = item == n_i - 1
            columns += [(item == i).astype(float) - last for i in range(n_i - 1)]
            names += [f"item[{i}]" for i in items[:-1]]
            emm_rows = np.hstack([np.eye(n_c), np.zeros((n_c, n_i - 1))])
    X = np.column_stack(columns)
    frame = pd.DataFrame({"participant": part, "item": item, "condition": cond})
    active, dropped = _active_terms(frame, n_p, n_i, n_c, random_items)
    model = CrossedREML(data["rating"].to_numpy(dtype=float), X, part, item, cond, tuple(active))  # type: ignore[arg-type]
    best, notes = model.fit()
    while prune_alpha is not None:
        tests = []
        for k in (2, 3):
            if not active[k]:
                continue
            reduced = list(active)
            reduced[k] = False
            smaller = CrossedREML(model.y, X, part, item, cond, tuple(reduced))  # type: ignore[arg-type]
            if best.theta[k] > 0:
                # Started from the larger model's estimates, a few steps from the smaller optimum.
                small_best, small_notes = smaller.fit(start=best.theta)
            else:
                # At zero the reduced model is the fitted one: same criterion, same estimates.
                small_best, small_notes = smaller.evaluate(best.theta * np.array(reduced), level=1), list(notes)
            statistic = max(small_best.deviance - best.deviance, 0.0)
            tests.append((float(stats.chi2.sf(statistic, 1)), k, statistic, smaller, small_best, small_notes))
        if not tests:
            break
        pvalue, k, statistic, smaller, small_best, small_notes = max(tests, key=lambda t: t[0])
        if pvalue <= prune_alpha:
            break
        active[k] = False
        dropped[TERMS[k]] = (
            f"not supported by the data (REML likelihood ratio {statistic:.2f} on 1 df, p = {pvalue:.3f} "
            f"> {prune_alpha:g})"
        )
        model, best, notes = smaller, small_best, small_notes
    dof = model.n - model.p
    sigma2 = best.r2 / dof
    beta = best.beta + model.shift * model.ones_coef
    vcov = sigma2 * linalg.cho_solve((best.rchol, True), np.eye(model.p))
    variances = {TERMS[k]: float(sigma2 * best.theta[k] ** 2) for k in range(len(TERMS)) if active[k]}
    variances["residual"] = float(sigma2)
    free = np.array(active) & (best.theta > 0)
    boundary = [TERMS[k] for k in range(len(TERMS)) if active[k] and not free[k]]
    dvcov, phi_cov = _satterthwaite(model, free, best, sigma2, notes)
    return LMMResult(
        conditions=list(conditions),
        item_effect=("random" if random_items else "fixed") if n_i > 1 else "none",
        fixed_formula=fixed_formula,
        emm_rows=emm_rows,
        coef_names=names,
        beta=beta,
        vcov=vcov,
        variances=variances,
        terms=[t for t, a in zip(TERMS, active) if a],
        dropped=dropped,
        boundary=boundary,
        deviance=best.deviance,
        n_obs=n,
        converged=not notes,
        notes=notes,
        design_notes=design_notes,
        dvcov=dvcov,
        phi_cov=phi_cov,
    )


def _satterthwaite(
    model: CrossedREML, free: np.ndarray, best: _Eval, sigma2: float, notes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """dVar(beta)/dphi at the estimate and 2 H^-1, H the Hessian of -2 log REML in phi."""
    phi = np.append(sigma2 * best.theta[free] ** 2, sigma2)
    _, ev = model.phi_gradient(phi, free, level=3)
    picks = list(np.flatnonzero(free)) + [len(TERMS)]
    dvcov = np.stack([ev.dvcov[k] for k in picks])
    hess = np.zeros((len(phi), len(phi)))
    for j in range(len(phi)):
        h = 1e-4 * phi[j]
        up, down = phi.copy(), phi.copy()
        up[j] += h
        down[j] -= h
        hess[:, j] = (model.phi_gradient(up, free)[0] - model.phi_gradient(down, free)[0]) / (2 * h)
    hess = (hess + hess.T) / 2.0
    phi_cov: np.ndarray
    try:
        linalg.cholesky(hess)
        phi_cov = 2.0 * linalg.inv(hess)
    except linalg.LinAlgError:
        notes.append("the REML Hessian is not positive definite; Satterthwaite df from its pseudo-inverse")
        phi_cov = 2.0 * linalg.pinv(hess)
    return dvcov, phi_cov
