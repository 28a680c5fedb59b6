"""Confidence intervals that respect who answered what: a two-way cluster bootstrap.

Why two-way: answers are not independent. The same participant answers many items (some people
are better than others) and the same item is answered by many participants (some positions are
easier). Resampling single answers would make intervals far too narrow. Resampling participants
only ignores the items, and the other way round.

Method (every interval in humanlm's analysis):
  1. Every statistic is a smooth function f(S) of sums S = sum over answers of a feature vector
     z_a (e.g. z_a = (correct_a, 1) gives accuracy = S_1 / S_2).
  2. B bootstrap samples resample PARTICIPANTS with replacement (each keeps all of its answers);
     V_P = variance of f over them x P/(P-1). Separately, B samples resample ITEMS: V_I.
  3. V_A = the variance from resampling single answers, in closed form (delta method,
     sum_a (grad f . (z_a - mean z))^2 x N/(N-1)); its bootstrap would cost B passes over all
     answers for the same number.
  4. V = V_P + V_I - V_A (Cameron, Gelbach & Miller 2011, "Robust inference with multiway
     clustering"): the answer-level noise is in both V_P and V_I and is counted once. If that
     comes out below max(V_P, V_I), which only happens by chance when one factor hardly
     matters, V = max(V_P, V_I).
  5. The interval is f(S) +/- z_(1+level)/2 x sqrt(V) (normal), cut to the statistic's range.
Resampling participants and items at once in one sample (the "pigeonhole" bootstrap) would count
the answer-level noise up to three times and give intervals that are too wide; the coverage
test in tests/test_analysis_bootstrap.py checks the rule above on simulated crossed data.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

DEFAULT_BOOT = 1000
DEFAULT_LEVEL = 0.95
_CHUNK = 128


def _counts(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """B x n multinomial(n, 1/n) resampling counts, as float32 (exact for counts; float32 keeps
    the matrix products fast and the cache small)."""
    out = np.empty((n_boot, n), dtype=np.float32)
    for start in range(0, n_boot, _CHUNK):
        rows = min(_CHUNK, n_boot - start)
        idx = rng.integers(0, n, size=(rows, n))
        flat = (idx + (np.arange(rows) * n)[:, None]).ravel()
        out[start:start + rows] = np.bincount(flat, minlength=rows * n).reshape(rows, n)
    return out


class Design:
    """Which participant and which item each row belongs to, and the bootstrap draws.

    One Design is shared by all statistics over the same rows, so they use the same resamples
    (differences between statistics are then resampled consistently). `p_idx=None` means rows
    are items (e.g. one row per item): only items are resampled.
    """

    def __init__(self, p_idx: np.ndarray | None, i_idx: np.ndarray, *, n_boot: int = DEFAULT_BOOT,
                 seed: int = 0) -> None:
        self.i_idx = np.asarray(i_idx, dtype=np.int64)
        self.p_idx = None if p_idx is None else np.asarray(p_idx, dtype=np.int64)
        self.n = len(self.i_idx)
        self.n_items = int(self.i_idx.max()) + 1 if self.n else 0
        self.n_participants = int(self.p_idx.max()) + 1 if (self.n and self.p_idx is not None) else 0
        self.n_boot = int(n_boot)
        self.seed = seed
        self._w: dict[str, np.ndarray] = {}

    def weights(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """(B x clusters resampling counts, their row sums) for "p" or "i"; drawn once."""
        if which not in self._w:
            n = self.n_participants if which == "p" else self.n_items
            rng = np.random.default_rng([self.seed, 1 if which == "p" else 2])
            W = _counts(rng, self.n_boot, n)
            self._w[which] = (W, W.sum(axis=1, dtype=np.float64))
        return self._w[which]

    def subset(self, rows: np.ndarray) -> Design:
        """The same clusters restricted to some rows (indices keep their meaning)."""
        d = Design(None if self.p_idx is None else self.p_idx[rows], self.i_idx[rows],
                   n_boot=self.n_boot, seed=self.seed)
        d.n_items, d.n_participants, d._w = self.n_items, self.n_participants, self._w
        return d


@dataclass
class BootstrapResult:
    estimate: np.ndarray
    se: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    var_participants: np.ndarray
    var_items: np.ndarray
    var_answers: np.ndarray
    level: float


def _cluster_sums(Z: np.ndarray, idx: np.ndarray, n: int) -> np.ndarray:
    return np.stack([np.bincount(idx, weights=Z[:, k], minlength=n) for k in range(Z.shape[1])],
                    axis=1)


def _replicate_var(weights: tuple[np.ndarray, np.ndarray], Zc: np.ndarray, stat,
                   n_clusters: int) -> np.ndarray:
    W, wsum = weights
    # Sums in float32 (relative error ~1e-7, far below the spread between resamples), centred
    # first so the statistic's differences do not cancel digits.
    centre = Zc.mean(axis=0)
    sums = W @ (Zc - centre).astype(np.float32)
    reps = stat(sums.astype(np.float64) + wsum[:, None] * centre)
    finite = np.isfinite(reps)
    # a statistic undefined in every resample is NaN (said below), without a RuntimeWarning
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        var = np.nanvar(np.where(finite, reps, np.nan), axis=0, ddof=1)
    var[finite.mean(axis=0) < 0.5] = np.nan  # the statistic is undefined in most resamples
    return var * n_clusters / max(n_clusters - 1, 1)


def _gradient(stat, S: np.ndarray) -> np.ndarray:
    """Central differences of stat at S: (M, K)."""
    K = len(S)
    scale = np.maximum(np.abs(S), 1e-3 * max(np.abs(S).max(), 1e-12))
    h = 1e-6 * scale
    points = np.repeat(S[None, :], 2 * K, axis=0)
    points[np.arange(K), np.arange(K)] += h
    points[K + np.arange(K), np.arange(K)] -= h
    vals = stat(points)
    return ((vals[:K] - vals[K:]) / (2 * h[:, None])).T


def twoway_bootstrap(
    Z: np.ndarray,
    design: Design,
    stat: Callable[[np.ndarray], np.ndarray],
    *,
    level: float = DEFAULT_LEVEL,
    bounds: tuple[float, float] | None = None,
) -> BootstrapResult:
    """Estimates and two-way clustered confidence intervals for stat(sum of Z's rows).

    Z: (N, K) features, one row per answer of `design`. stat: maps an (R, K) array of sums to
    an (R, M) array of statistics (vectorised over R). See the module docstring for the method:
    V = V_participants + V_items - V_answers, interval = estimate +/- z sqrt(V).
    """
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim == 1:
        Z = Z[:, None]
    S = Z.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        est = np.asarray(stat(S[None, :])[0], dtype=np.float64)
        M = len(est)
        nan = np.full(M, np.nan)
        if design.n < 2 or not np.isfinite(est).any():
            return BootstrapResult(est, nan, nan.copy(), nan.copy(), nan, nan, nan, level)
        v_items = _replicate_var(design.weights("i"), _cluster_sums(Z, design.i_idx, design.n_items),
                                 stat, int(np.count_nonzero(np.bincount(design.i_idx))))
        if design.p_idx is not None:
            v_part = _replicate_var(design.weights("p"),
                                    _cluster_sums(Z, design.p_idx, design.n_participants),
                                    stat, int(np.count_nonzero(np.bincount(design.p_idx))))
            grad = _gradient(stat, S)
            grad = np.where(np.isfinite(grad), grad, 0.0)
            v_ans = np.zeros(M)
            mean = S / len(Z)
            for start in range(0, len(Z), 200_000):
                infl = (Z[start:start + 200_000] - mean) @ grad.T
                v_ans += (infl ** 2).sum(axis=0)
            v_ans *= len(Z) / (len(Z) - 1)
            var = np.fmax(v_part + v_items - v_ans, np.fmax(v_part, v_items))
        else:
            v_part = np.full(M, np.nan)
            v_ans = np.full(M, np.nan)
            var = v_items
        se = np.sqrt(var)
        z = NormalDist().inv_cdf(0.5 + level / 2)
        lo, hi = est - z * se, est + z * se
        if bounds is not None:
            lo, hi = np.clip(lo, *bounds), np.clip(hi, *bounds)
    return BootstrapResult(est, se, lo, hi, v_part, v_items, v_ans, level)


def ratio_stat(pairs: list[tuple[int, int]]):
    """A vectorised stat: for each (numerator column, denominator column), S_num / S_den."""
    num = np.array([p[0] for p in pairs])
    den = np.array([p[1] for p in pairs])

    def stat(S: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return S[:, num] / S[:, den]

    return stat
