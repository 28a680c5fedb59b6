"""Temperature: at which temperature does the model's distribution best predict human answers?

The export stores, per item, log Z(T) = logsumexp(logprob / T) over the FULL vocabulary on a
fixed grid of temperatures, so p_T(token) = exp(logprob / T - log Z(T)) is exact on the grid
for every answer whose log-prob is known. Between grid points log Z is interpolated (below).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .answers import Prepared, get_prepared
from .bootstrap import DEFAULT_LEVEL, twoway_bootstrap
from .reader import AnalysisError


class SplineBasis:
    """Not-a-knot cubic spline in beta = 1/T through the grid, as a linear map of the grid values.

    Why beta: log Z is a smooth convex function of beta (its derivatives are the mean and the
    variance of the log-probs under p_T), so a cubic spline in beta follows it closely and the
    log-likelihood, beta * logprob - log Z(beta), stays smooth and concave between grid points.
    Linear interpolation would put every maximum exactly on a grid point.
    Because a spline is linear in the data, logZ(beta) = b(beta) . logZ_grid for a fixed row
    vector b(beta): sums over answers can be interpolated once instead of per answer.
    """

    def __init__(self, temperatures) -> None:
        temps = np.asarray(temperatures, dtype=np.float64)
        if len(temps) < 4 or np.any(temps <= 0) or len(np.unique(temps)) != len(temps):
            raise AnalysisError(
                "the temperature fit needs at least 4 distinct positive grid temperatures "
                f"(models.temperatures = {list(temperatures)})"
            )
        self.order = np.argsort(1.0 / temps)  # grid columns sorted by beta ascending
        x = 1.0 / temps[self.order]
        n = len(x)
        h = np.diff(x)
        A = np.zeros((n, n))
        R = np.zeros((n, n))
        A[0, :3] = [h[1], -(h[0] + h[1]), h[0]]
        A[-1, -3:] = [h[-1], -(h[-2] + h[-1]), h[-2]]
        for j in range(1, n - 1):
            A[j, j - 1:j + 2] = [h[j - 1], 2 * (h[j - 1] + h[j]), h[j]]
            R[j, j - 1:j + 2] = [6 / h[j - 1], -6 / h[j - 1] - 6 / h[j], 6 / h[j]]
        self.Q = np.linalg.solve(A, R)  # second derivatives M = Q y
        self.x, self.h, self.n = x, h, n
        self.temperatures = temps
        self.beta_min, self.beta_max = x[0], x[-1]

    def rows(self, beta, derivative: int = 0) -> np.ndarray:
        """(len(beta), G) matrix: row r gives d^k/dbeta^k log Z(beta_r) = row . logZ_grid, with
        the grid in the ORIGINAL column order of models.temperatures. beta is clipped to the grid."""
        beta = np.clip(np.atleast_1d(np.asarray(beta, dtype=np.float64)), self.beta_min, self.beta_max)
        j = np.clip(np.searchsorted(self.x, beta, side="right") - 1, 0, self.n - 2)
        h = self.h[j]
        t = beta - self.x[j]
        u = self.x[j + 1] - beta
        out = np.zeros((len(beta), self.n))
        rows = np.arange(len(beta))
        Qj, Qj1 = self.Q[j], self.Q[j + 1]
        if derivative == 0:
            out[rows, j] += u / h
            out[rows, j + 1] += t / h
            out += Qj * ((u ** 3) / (6 * h) - h * u / 6)[:, None]
            out += Qj1 * ((t ** 3) / (6 * h) - h * t / 6)[:, None]
        elif derivative == 1:
            out[rows, j] -= 1 / h
            out[rows, j + 1] += 1 / h
            out += Qj * (-(u ** 2) / (2 * h) + h / 6)[:, None]
            out += Qj1 * ((t ** 2) / (2 * h) - h / 6)[:, None]
        elif derivative == 2:
            out += Qj * (u / h)[:, None] + Qj1 * (t / h)[:, None]
        else:
            raise ValueError("derivative must be 0, 1 or 2")
        back = np.empty_like(out)
        back[:, self.order] = out
        return back


def interpolate_logz(logz_grid: np.ndarray, temperatures, T) -> np.ndarray:
    """log Z at temperature(s) T from the grid values (items x G) -> (items x len(T)).

    Exact at grid points; between them a not-a-knot cubic spline in beta = 1/T (SplineBasis).
    """
    basis = SplineBasis(temperatures)
    return np.asarray(logz_grid, dtype=np.float64) @ basis.rows(1.0 / np.atleast_1d(T)).T


def _argmax_beta(basis: SplineBasis, S_l: np.ndarray, S_Z: np.ndarray) -> np.ndarray:
    """beta maximising F(beta) = beta S_l - b(beta).S_Z, vectorised over rows (grid + Newton)."""
    grid = np.exp(np.linspace(np.log(basis.beta_min), np.log(basis.beta_max), 241))
    B0 = basis.rows(grid)
    F = grid[None, :] * S_l[:, None] - S_Z @ B0.T
    j = np.nanargmax(np.where(np.isfinite(F), F, -np.inf), axis=1)
    beta = grid[j]
    lo = grid[np.maximum(j - 1, 0)]
    hi = grid[np.minimum(j + 1, len(grid) - 1)]
    for _ in range(30):
        d1 = S_l - np.einsum("rg,rg->r", S_Z, basis.rows(beta, 1))
        d2 = -np.einsum("rg,rg->r", S_Z, basis.rows(beta, 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(d2 < 0, -d1 / d2, 0.0)
        new = np.clip(beta + step, lo, hi)
        if np.all(np.abs(new - beta) <= 1e-13 * beta):
            beta = new
            break
        beta = new
    return beta


def _loglik_features(prep: Prepared) -> tuple[np.ndarray, np.ndarray]:
    if prep.mode != "token":
        raise AnalysisError("the temperature fit needs token-mode answers (word log-probs have "
                            "no stored log Z grid)")
    a = prep.answers
    use = ~np.isnan(a["lp"].to_numpy())
    if not use.any():
        raise AnalysisError("no answers with a model log-prob to fit a temperature")
    lz = prep.logz[a["i_idx"].to_numpy()[use]]
    ok = np.isfinite(lz).all(axis=1)
    rows = np.flatnonzero(use)[ok]
    return rows, prep.logz[a["i_idx"].to_numpy()[rows]]


def fit_temperature(
    data, *, level: float = DEFAULT_LEVEL, **selection
) -> pd.DataFrame:
    """Maximum-likelihood temperature T*: the T at which the model best predicts human answers.

    For each non-skip answer a (first token, log-prob l_a at T = 1) on item i:
        ln p_T(a) = l_a / T - log Z_i(T)
    T* maximises the total log-likelihood sum_a ln p_T(a) over T in the stored grid's range
    (0.25 to 4). log Z_i(T) is exact at the 13 grid temperatures and interpolated between them
    by a not-a-knot cubic spline in beta = 1/T (log Z is smooth and convex in beta; linear
    interpolation would put the maximum on a grid point). The maximum is found on a fine grid
    and refined by Newton's method. Answers outside the stored top-k without an exact log-prob
    use the k-th stored log-prob (an upper bound, counted in n_bounded) unless missing="exclude".
    Interval: two-way cluster bootstrap (participants, items) on ln T*, transformed back.
    Also reported: mean log-likelihood per answer at T* and at T = 1 (nats), and their
    difference. T* at an end of the range means the best temperature is outside the grid.
    """
    prep = get_prepared(data, **selection)
    rows, lz = _loglik_features(prep)
    basis = SplineBasis(prep.temperatures)
    a = prep.answers
    l = a["lp"].to_numpy()[rows]
    Z = np.column_stack([l, lz, np.ones(len(rows))])
    G = lz.shape[1]
    b1 = basis.rows(1.0)[0]

    def stat(S: np.ndarray) -> np.ndarray:
        S_l, S_Z, n = S[:, 0], S[:, 1:1 + G], S[:, -1]
        beta = _argmax_beta(basis, S_l, S_Z)
        ll_star = (beta * S_l - np.einsum("rg,rg->r", S_Z, basis.rows(beta))) / n
        ll_one = (S_l - S_Z @ b1) / n
        return np.column_stack([-np.log(beta), ll_star, ll_one, ll_star - ll_one])

    design = prep.design.subset(rows)
    res = twoway_bootstrap(Z, design, stat, level=level)
    t_lo, t_hi = float(prep.temperatures.min()), float(prep.temperatures.max())
    T = float(np.exp(res.estimate[0]))
    status = a["lp_status"].to_numpy()[rows]
    out = pd.DataFrame([{
        "metric": "T*",
        "estimate": T,
        "ci_low": float(np.exp(max(res.ci_low[0], np.log(t_lo)))),
        "ci_high": float(np.exp(min(res.ci_high[0], np.log(t_hi)))),
        "se_log": float(res.se[0]),
        "loglik_at_T*": float(res.estimate[1]),
        "loglik_at_1": float(res.estimate[2]),
        "gain_vs_T1": float(res.estimate[3]),
        "gain_ci_low": float(res.ci_low[3]),
        "gain_ci_high": float(res.ci_high[3]),
        "at_edge": bool(np.isclose(T, t_lo, rtol=1e-6) or np.isclose(T, t_hi, rtol=1e-6)),
        "level": level,
        "n_answers": len(rows),
        "n_bounded": int((status == "bound").sum()),
        "n_items": int(np.count_nonzero(np.bincount(a["i_idx"].to_numpy()[rows]))),
        "n_participants": int(a.iloc[rows].loc[~a["pooled"].to_numpy(dtype=bool)[rows], "p_idx"].nunique()),
        **({"n_unattributed": int(a["pooled"].to_numpy(dtype=bool)[rows].sum())}
           if a["pooled"].any() else {}),
    }])
    out.attrs["notes"] = list(prep.notes)
    return out


def temperature_curve(data, temperatures=None, **selection) -> pd.DataFrame:
    """Mean log-likelihood per answer, (1/n) sum_a [l_a / T - log Z_i(T)] in nats, against T.

    Same answers and interpolation as fit_temperature; `on_grid` marks the stored grid
    temperatures, where the value is exact (no interpolation).
    """
    prep = get_prepared(data, **selection)
    rows, lz = _loglik_features(prep)
    l = prep.answers["lp"].to_numpy()[rows]
    basis = SplineBasis(prep.temperatures)
    if temperatures is None:
        temperatures = np.exp(np.linspace(np.log(prep.temperatures.min()),
                                          np.log(prep.temperatures.max()), 121))
    temperatures = np.union1d(np.asarray(temperatures, dtype=float), prep.temperatures)
    S_Z = lz.sum(axis=0)
    logz_sum = basis.rows(1.0 / temperatures) @ S_Z
    ll = (l.sum() / temperatures - logz_sum) / len(rows)
    return pd.DataFrame({
        "temperature": temperatures,
        "mean_loglik": ll,
        "on_grid": np.isin(temperatures, prep.temperatures),
    })
