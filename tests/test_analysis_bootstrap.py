"""The two-way cluster bootstrap: intervals cover the truth at the stated rate."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.bootstrap import Design, ratio_stat, twoway_bootstrap

MEAN = ratio_stat([(0, 1)])


def crossed(rng, sd_participant, sd_item, P=30, I=40, per=20):
    """y = 1 + a_p + b_i + e: random participants and items, each participant 20 of 40 items."""
    a, b = rng.normal(0, sd_participant, P), rng.normal(0, sd_item, I)
    p = np.repeat(np.arange(P), per)
    i = np.concatenate([rng.permutation(I)[:per] for _ in range(P)])
    y = 1.0 + a[p] + b[i] + rng.normal(0, 1.0, len(p))
    return np.column_stack([y, np.ones(len(y))]), p, i


@pytest.mark.parametrize("effects", [(0.5, 0.5), (0.0, 0.0), (0.0, 0.8)])
def test_90_percent_intervals_cover_90_percent_of_the_time(effects):
    """200 simulated studies with crossed participant and item effects (and one with none, where
    resampling both factors at once would give ~99% coverage): the 90% interval contains the
    true mean in 85-95% of them."""
    rng = np.random.default_rng(sum(int(10 * e) for e in effects))
    hits = 0
    for r in range(200):
        Z, p, i = crossed(rng, *effects)
        res = twoway_bootstrap(Z, Design(p, i, n_boot=200, seed=r), MEAN, level=0.90)
        hits += res.ci_low[0] <= 1.0 <= res.ci_high[0]
    assert 0.85 <= hits / 200 <= 0.95


def test_answer_level_variance_is_the_textbook_one():
    rng = np.random.default_rng(0)
    Z, p, i = crossed(rng, 0.3, 0.3)
    res = twoway_bootstrap(Z, Design(p, i, n_boot=200), MEAN)
    y = Z[:, 0]
    assert res.var_answers[0] == pytest.approx(y.var(ddof=1) / len(y), rel=1e-6)
    v = res.var_participants + res.var_items - res.var_answers
    assert res.se[0] ** 2 == pytest.approx(max(v[0], res.var_participants[0], res.var_items[0]))
    assert res.estimate[0] == pytest.approx(y.mean())


def test_item_bootstrap_matches_the_analytic_variance():
    rng = np.random.default_rng(1)
    x = rng.exponential(1.0, 400)
    res = twoway_bootstrap(np.column_stack([x, np.ones(400)]), Design(None, np.arange(400), n_boot=3000),
                           MEAN, level=0.9)
    assert res.se[0] ** 2 == pytest.approx(x.var(ddof=1) / 400, rel=0.1)
    assert res.ci_high[0] - res.ci_low[0] == pytest.approx(2 * 1.6449 * res.se[0], rel=1e-3)


def test_participant_effects_widen_the_interval():
    rng = np.random.default_rng(2)
    Z0, p, i = crossed(rng, 0.0, 0.0)
    Z1 = Z0.copy()
    Z1[:, 0] += np.repeat(rng.normal(0, 1.0, 30), 20)   # strong participant effects
    se0 = twoway_bootstrap(Z0, Design(p, i, n_boot=300), MEAN).se[0]
    se1 = twoway_bootstrap(Z1, Design(p, i, n_boot=300), MEAN).se[0]
    assert se1 > 2 * se0


def test_bounds_and_degenerate_input():
    p = np.array([0, 0, 1, 1])
    i = np.array([0, 1, 0, 1])
    Z = np.column_stack([np.array([1.0, 1.0, 1.0, 0.0]), np.ones(4)])
    res = twoway_bootstrap(Z, Design(p, i, n_boot=100), MEAN, bounds=(0, 1))
    assert 0 <= res.ci_low[0] <= res.estimate[0] <= res.ci_high[0] <= 1
    one = twoway_bootstrap(Z[:1], Design(p[:1], i[:1], n_boot=100), MEAN)
    assert one.estimate[0] == 1.0 and np.isnan(one.se[0])


def test_wilson_intervals_for_rare_successes_cover_and_stay_within_0_and_1():
    """Accuracy near 0 with crossed participant and item effects (logit scale): the normal
    interval p +/- z se crosses 0 in some studies; the Wilson interval with the design's
    effective sample size (analysis.metrics.proportion_interval) never leaves [0, 1] and its
    90% interval contains the population accuracy in 85-95% of 200 studies."""
    from analysis.metrics import proportion_interval

    rng = np.random.default_rng(1)
    mu, sd_p, sd_i, P, I, per = -3.5, 0.3, 0.5, 20, 30, 10

    def sigmoid(x):
        return 1 / (1 + np.exp(-x))

    truth = sigmoid(mu + rng.normal(0, sd_p, 2_000_000) + rng.normal(0, sd_i, 2_000_000)).mean()
    hits = crossed_zero = 0
    for r in range(200):
        a, b = rng.normal(0, sd_p, P), rng.normal(0, sd_i, I)
        p = np.repeat(np.arange(P), per)
        i = np.concatenate([rng.permutation(I)[:per] for _ in range(P)])
        y = (rng.random(len(p)) < sigmoid(mu + a[p] + b[i])).astype(float)
        res = twoway_bootstrap(np.column_stack([y, np.ones(len(y))]), Design(p, i, n_boot=200, seed=r),
                               MEAN, level=0.90)
        crossed_zero += res.ci_low[0] < 0
        row = proportion_interval({"estimate": res.estimate[0], "se": res.se[0], "level": 0.90,
                                   "ci_low": res.ci_low[0], "ci_high": res.ci_high[0],
                                   "n_answers": len(y), "n_items": len(np.unique(i)),
                                   "n_participants": P})
        assert 0.0 <= row["ci_low"] <= row["estimate"] <= row["ci_high"] <= 1.0
        hits += row["ci_low"] <= truth <= row["ci_high"]
    assert crossed_zero > 0
    assert 0.85 <= hits / 200 <= 0.95
