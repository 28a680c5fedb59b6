"""Stated distributions (analysis.stated): the partition, proper scores for people and the model
on the same cells, their comparison with intervals, and calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import stated


def test_the_partition_merges_candidates_with_one_first_token_and_scores_the_model_on_it():
    # " cat" and " cats" start with the same token 5: one cell of 30 + 20 points
    c = stated.cells([30, 20, 40], 10, [5, 5, 9], true_token=9,
                     model_logprobs=[math.log(0.2), math.log(0.2), math.log(0.5)])
    assert c.first_tokens == (5, 9)
    assert c.stated.tolist() == pytest.approx([0.5, 0.4, 0.1])
    assert c.model.tolist() == pytest.approx([0.2, 0.5, 0.3])  # the rest is "something else"
    assert c.outcome == 1
    s = stated.scores(c)
    assert s["person_log_score"] == pytest.approx(math.log(0.4))
    assert s["model_log_score"] == pytest.approx(math.log(0.5))
    assert s["person_brier"] == pytest.approx(0.5 ** 2 + 0.6 ** 2 + 0.1 ** 2)
    assert s["model_brier"] == pytest.approx(0.2 ** 2 + 0.5 ** 2 + 0.3 ** 2)


def test_a_true_token_outside_the_candidates_is_something_else_and_zero_points_use_the_floor():
    c = stated.cells([100], 0, [3], true_token=8, model_logprobs=[math.log(0.9)])
    assert c.outcome == 1
    s = stated.scores(c)
    assert s["floored"] and s["person_log_score"] == pytest.approx(math.log(stated.FLOOR))
    assert s["model_log_score"] == pytest.approx(math.log(0.1))


@pytest.mark.parametrize("args, message", [
    (([60], 30, [1], 1, [-1.0]), "add up to 100"),
    (([-10], 110, [1], 1, [-1.0]), "at least 0"),
    (([10] * 6, 40, list(range(6)), 1, [-3.0] * 6), "between 1 and 5"),
    (([50, 50], 0, [1, 2], 1, [math.log(0.7), math.log(0.6)]), "more than 1"),
    (([50], 50, [1, 2], 1, [-1.0]), "every candidate"),
])
def test_what_is_not_a_distribution_is_refused_with_a_message(args, message):
    with pytest.raises(stated.StatedError, match=message):
        stated.cells(*args)


def test_the_log_score_is_proper_on_the_partition():
    """Reporting the distribution the outcomes come from scores best in expectation: checked
    against many other reports, by exact expectation, not by sampling."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        truth = rng.dirichlet(np.ones(4))
        honest = sum(truth[k] * stated.log_score(truth, k)[0] for k in range(4))
        for _ in range(20):
            other = rng.dirichlet(np.ones(4))
            assert honest >= sum(truth[k] * stated.log_score(other, k)[0] for k in range(4)) - 1e-12


def _simulated(rng, n_answers, person_sharpness):
    """Answers over 4-cell partitions whose outcomes come from `truth`; the model states a
    flattened truth, the person the truth raised to `person_sharpness` (1 = exactly it)."""
    answers, participant, item = [], [], []
    for a in range(n_answers):
        truth = rng.dirichlet(np.ones(4) * 0.7)
        person = truth ** person_sharpness / (truth ** person_sharpness).sum()
        model = truth ** 0.3 / (truth ** 0.3).sum()
        points = person * 100
        points[-1] = max(0.0, 100 - points[:-1].sum())
        outcome = int(rng.choice(4, p=truth))
        answers.append(stated.cells(points[:-1].tolist(), float(points[-1]), [10, 11, 12],
                                    true_token=[10, 11, 12, 99][outcome],
                                    model_logprobs=np.log(model[:-1]).tolist()))
        participant.append(a % 25)
        item.append(a % 60)
    return answers, participant, item


def test_people_who_state_the_truth_beat_a_flattened_model_with_an_interval_above_zero():
    answers, participant, item = _simulated(np.random.default_rng(1), 1200, 1.0)
    out = stated.compare(answers, participant, item, n_boot=300)
    diff = out["log_score_difference"]
    assert diff["ci_low"] > 0, diff
    assert out["brier_difference"]["ci_high"] < 0  # lower Brier is better
    assert out["n_answers"] == 1200 and out["n_participants"] == 25 and out["n_items"] == 60
    expected = np.mean([stated.scores(c)["person_log_score"] for c in answers])
    assert out["person_log_score"]["estimate"] == pytest.approx(expected)


def test_a_person_stating_the_models_cells_ties_with_it():
    rng = np.random.default_rng(2)
    answers = []
    for _ in range(200):
        model = rng.dirichlet(np.ones(3))
        points = np.round(model * 100, 9)
        points[-1] = 100 - points[:-1].sum()
        answers.append(stated.cells(points[:-1].tolist(), float(points[-1]), [1, 2], true_token=1,
                                    model_logprobs=np.log(model[:-1]).tolist()))
    out = stated.compare(answers, list(range(200)), [0] * 100 + [1] * 100, n_boot=200)
    assert abs(out["log_score_difference"]["estimate"]) < 1e-6


def test_calibration_of_honest_reports_follows_the_diagonal():
    answers, participant, item = _simulated(np.random.default_rng(3), 1500, 1.0)
    bins = stated.calibration(answers, participant, item, n_bins=5)
    assert len(bins) == 5
    inside = sum(b["ci_low"] <= b["mean_stated"] <= b["ci_high"] for b in bins)
    assert inside >= 4, bins
    assert all(0 <= b["ci_low"] <= b["estimate"] <= b["ci_high"] <= 1 for b in bins)
    over = stated.calibration(*_simulated(np.random.default_rng(3), 1500, 3.0), n_bins=5)
    # sharpened reports are overconfident: their top bin happens less often than stated
    assert over[-1]["ci_high"] < over[-1]["mean_stated"]
