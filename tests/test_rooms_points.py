"""webapp.rooms.points: hand-computed examples for every rule, including the empty and all-skip cases."""

from __future__ import annotations

import math

import pytest

from webapp.rooms.points import (
    accuracy,
    aggregate_first_tokens,
    count_skips,
    empirical_distribution,
    log_score,
    model_log_score,
    points,
)

FLOOR = math.log(0.001)  # -6.9078


def test_aggregate_counts_first_tokens_and_leaves_out_skips():
    guesses = [7, 3, None, 7, 7, None, 3, 12]
    assert aggregate_first_tokens(guesses) == {3: 2, 7: 3, 12: 1}
    assert count_skips(guesses) == 2


def test_aggregate_empty_and_all_skips():
    assert aggregate_first_tokens([]) == {}
    assert count_skips([]) == 0
    assert aggregate_first_tokens([None, None]) == {}
    assert count_skips([None, None]) == 2


def test_aggregate_accepts_a_generator():
    assert aggregate_first_tokens(t for t in (5, 5, None)) == {5: 2}


def test_empirical_distribution_without_smoothing():
    assert empirical_distribution({3: 1, 7: 3}) == {3: 0.25, 7: 0.75}


def test_unseen_tokens_get_zero_without_smoothing_but_are_listed():
    dist = empirical_distribution({3: 1, 7: 3}, support=[3, 7, 9])
    assert dist == {3: 0.25, 7: 0.75, 9: 0.0}


def test_laplace_smoothing_with_unseen_tokens_sums_to_one():
    # N = 4, alpha = 1, |S| = 4: denominators 4 + 4 = 8.
    dist = empirical_distribution({3: 1, 7: 3}, smoothing=1.0, support=[3, 7, 9, 11])
    assert dist == {3: 2 / 8, 7: 4 / 8, 9: 1 / 8, 11: 1 / 8}
    assert math.fsum(dist.values()) == pytest.approx(1.0)


def test_lidstone_smoothing_fraction():
    # N = 2, alpha = 0.5, |S| = 3: denominator 3.5.
    dist = empirical_distribution({1: 2}, smoothing=0.5, support=[1, 2, 3])
    assert dist == pytest.approx({1: 2.5 / 3.5, 2: 0.5 / 3.5, 3: 0.5 / 3.5})


def test_empirical_distribution_empty_cases():
    assert empirical_distribution({}) == {}
    assert empirical_distribution({}, smoothing=1.0) == {}  # empty support
    # all skips but smoothing over a support: uniform
    assert empirical_distribution({}, smoothing=1.0, support=[4, 5]) == {4: 0.5, 5: 0.5}
    assert empirical_distribution({4: 0}, support=[4, 5]) == {}


def test_empirical_distribution_rejects_bad_input():
    with pytest.raises(ValueError, match="support"):
        empirical_distribution({3: 1, 7: 1}, support=[3])
    with pytest.raises(ValueError, match="smoothing"):
        empirical_distribution({3: 1}, smoothing=-0.1)
    with pytest.raises(ValueError, match="smoothing"):
        empirical_distribution({3: 1}, smoothing=math.inf)
    with pytest.raises(ValueError, match="counts"):
        empirical_distribution({3: -1})


def test_log_score_of_a_distribution():
    assert log_score({3: 0.25, 7: 0.75}, 3) == pytest.approx(math.log(0.25))
    assert log_score({3: 0.25, 7: 0.75}, 9) == -math.inf
    assert log_score({3: 0.0, 7: 1.0}, 3) == -math.inf


def test_model_log_score_known_unknown_and_skip():
    assert model_log_score(math.log(0.25), FLOOR) == pytest.approx(-1.3863, abs=1e-4)
    assert model_log_score(None, FLOOR) == FLOOR  # outside top-k or skip: the upper bound
    # an exact value below the floor (filled later) is used as it is
    assert model_log_score(-12.0, FLOOR) == -12.0
    assert model_log_score(0.0, FLOOR) == 0.0


def test_model_log_score_rejects_non_logprobs():
    with pytest.raises(ValueError):
        model_log_score(0.5, FLOOR)
    with pytest.raises(ValueError):
        model_log_score(math.nan, FLOOR)
    with pytest.raises(ValueError):
        model_log_score(None, 0.1)


def test_points_worked_examples_from_the_docstring():
    assert points(math.log(0.1), FLOOR, correct=True) == 133
    assert points(math.log(0.5), FLOOR, correct=False) == 45
    assert points(None, FLOOR, correct=True) == 100
    assert points(None, FLOOR, correct=False) == 0  # skip
    assert points(0.0, FLOOR, correct=True) == 150  # model was certain: full bonus
    assert points(FLOOR, FLOOR, correct=False) == 0  # the k-th token itself
    assert points(-20.0, FLOOR, correct=False) == 0  # below the floor: clipped


def test_points_degenerate_floor_zero():
    assert points(0.0, 0.0, correct=True) == 100
    assert points(None, 0.0, correct=False) == 0


def test_points_are_monotone_and_bounded():
    probs = [0.001, 0.002, 0.01, 0.05, 0.1, 0.3, 0.5, 0.9, 1.0]
    for correct in (False, True):
        values = [points(math.log(p), FLOOR, correct) for p in probs]
        assert values == sorted(values)
        assert all((100 if correct else 0) <= v <= (150 if correct else 50) for v in values)


def test_accuracy():
    assert accuracy([]) == 0.0
    assert accuracy([True, False, False, True]) == 0.5
    assert accuracy([False, False]) == 0.0
    assert accuracy([True]) == 1.0
