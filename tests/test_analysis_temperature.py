"""Temperature fit: exact on the stored grid, accurate between grid points, and it recovers the
temperature of players who sample from the model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import synthetic as syn
from analysis.metrics import simulator_fit
from analysis.reader import AnalysisError, load
from analysis.temperature import SplineBasis, fit_temperature, interpolate_logz, temperature_curve


def test_interpolated_log_z_is_exact_on_the_grid_and_close_between():
    world = syn.make_world(n_items=100, vocab_size=120, seed=0)
    grid = world.logz()
    np.testing.assert_allclose(interpolate_logz(grid, syn.GRID, list(syn.GRID)), grid, atol=1e-12)
    Ts = np.exp(np.linspace(np.log(0.25), np.log(4), 150))
    err = np.abs(interpolate_logz(grid, syn.GRID, Ts) - world.logz(Ts))
    assert err.max() < 0.01          # nats, worst case near T = 0.25 where the grid is sparse
    assert err.mean() < 5e-4
    # The spline's derivative is the mean log-prob under p_T (d log Z / d beta = E_beta[l]).
    basis = SplineBasis(syn.GRID)
    beta = 1.0 / 1.15
    p = world.probs(1.15)
    mean_l = (p * world.logprobs).sum(axis=1)
    np.testing.assert_allclose(grid @ basis.rows(beta, 1)[0], mean_l, atol=0.02)


def test_two_token_closed_form(tmp_path):
    """Two tokens with model probabilities (0.8, 0.2) and people answering 60/40: the tempered
    distribution matches the answers exactly when logit(0.8)/T = logit(0.6), T = ln 4 / ln 1.5."""
    world = syn.World(np.log([[0.8, 0.2]]), [" yes", " no"], np.zeros(2, dtype=bool),
                      np.array([0]), 2, syn.GRID, np.array([1]), np.array([3]), ["Once upon a"])
    tokens = np.array([0] * 6 + [1] * 4)
    answers = syn.Answers(np.arange(10), np.zeros(10, dtype=int), tokens, np.ones(10, dtype=int))
    data = load(syn.write_export(syn.export_tables(world, answers), tmp_path / "e", "csv"))
    fit = fit_temperature(data, n_boot=200).iloc[0]
    assert fit["estimate"] == pytest.approx(math.log(4) / math.log(1.5), abs=0.01)
    assert fit["n_answers"] == 10 and fit["n_participants"] == 10 and fit["n_items"] == 1
    # At T*, the mean log-likelihood is the empirical entropy's negative.
    assert fit["loglik_at_T*"] == pytest.approx(0.6 * math.log(0.6) + 0.4 * math.log(0.4), abs=1e-4)
    assert fit["loglik_at_1"] == pytest.approx(0.6 * math.log(0.8) + 0.4 * math.log(0.2))


@pytest.mark.parametrize(("T", "seed"), [(0.5, 1), (1.0, 2), (2.0, 3)])
def test_players_sampling_at_a_known_temperature(tmp_path, T, seed):
    world = syn.make_world(n_items=80, vocab_size=120, top_k=16, seed=seed)
    answers = syn.simulate(world, [("sample", T)] * 40, items_per_player=60, seed=seed + 10)
    data = load(syn.write_export(syn.export_tables(world, answers), tmp_path / "e", "parquet"))
    fit = fit_temperature(data, n_boot=300).iloc[0]
    assert abs(fit["estimate"] - T) <= 0.1
    assert fit["ci_low"] <= T <= fit["ci_high"]
    assert fit["ci_high"] - fit["ci_low"] < 0.3 * T
    assert not fit["at_edge"]
    test = simulator_fit(data, n_boot=300).set_index("metric").loc["model_sample_test"]
    if T == 1.0:
        assert test["verdict"] == "indistinguishable from samples of the model (T = 1)"
    else:
        assert test["verdict"] != "indistinguishable from samples of the model (T = 1)"
        assert (test["estimate"] > 0) == (T < 1)   # sharper than the model: more likely answers
    curve = temperature_curve(data)
    best = curve.loc[curve["mean_loglik"].idxmax(), "temperature"]
    assert best == pytest.approx(fit["estimate"], rel=0.05)
    assert curve.loc[curve["temperature"] == 1.0, "mean_loglik"].iloc[0] == pytest.approx(fit["loglik_at_1"])


def test_best_temperature_beyond_the_grid_is_flagged(tmp_path):
    world = syn.make_world(n_items=40, vocab_size=60, top_k=8, seed=5)
    answers = syn.simulate(world, [("uniform",)] * 20, seed=6)
    data = load(syn.write_export(syn.export_tables(world, answers), tmp_path / "e", "csv"))
    fit = fit_temperature(data, n_boot=100).iloc[0]
    assert fit["estimate"] == pytest.approx(4.0) and fit["at_edge"]


def test_temperature_needs_token_mode_and_a_grid(tmp_path):
    world = syn.make_world(n_items=5, vocab_size=20, top_k=4, seed=1)
    tables = syn.export_tables(world, syn.simulate(world, [("top1",)] * 3, seed=0))
    tables["guesses"]["mode"] = "word"
    data = load(syn.write_export(tables, tmp_path / "w", "csv"))
    with pytest.raises(AnalysisError, match="token-mode"):
        fit_temperature(data)
    with pytest.raises(AnalysisError, match="at least 4"):
        SplineBasis([0.5, 1, 2])
