"""Every metric on small examples whose answers were computed by hand (or from the synthetic
world's known distributions with the textbook formula written out in the test)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import analysis.metrics as M
from analysis import synthetic as syn
from analysis.answers import prepare
from analysis.reader import AnalysisError, load
from analysis.tokens import token_class

LN = math.log


def hand_world(probs, targets, vocab=None, top_k=None, prefix=None) -> syn.World:
    probs = np.asarray(probs, dtype=float)
    n_items, V = probs.shape
    vocab = vocab or [f" t{v}" for v in range(V)]
    return syn.World(
        logprobs=np.log(probs), vocab=vocab, control=np.zeros(V, dtype=bool),
        targets=np.asarray(targets), top_k=top_k or V, temperatures=syn.GRID,
        document=np.arange(n_items) + 1, position=np.full(n_items, 3),
        prefix=prefix or ["Once upon a"] * n_items,
    )


def export(tmp_path, world, rows, name="exp", **kwargs):
    """rows: (participant, item, token or -1, answer_index[, reported probability])."""
    rows = np.array(rows, dtype=float)
    answers = syn.Answers(rows[:, 0].astype(int), rows[:, 1].astype(int), rows[:, 2].astype(int),
                          rows[:, 3].astype(int),
                          rows[:, 4] if rows.shape[1] > 4 else None)
    return load(syn.write_export(syn.export_tables(world, answers, **kwargs), tmp_path / name, "csv"))


def pick(df, **where):
    for k, v in where.items():
        df = df[df[k] == v]
    assert len(df) == 1, where
    return df.iloc[0]


# ------------------------------------------------------------------------------ token classes

@pytest.mark.parametrize(("text", "prefix", "cls"), [
    (" cat", "The", "word_start"),
    ("cat", "The ", "word_start"),
    ("Paris", "(", "word_start"),
    ("ing", "The walk", "word_continuation"),
    ("'s", "John", "word_continuation"),
    (",", "Yes", "punctuation"),
    (" —", "Yes", "punctuation"),
    ("...", "Wait", "punctuation"),
    (" 1,000", "about", "number"),
    ("42", "Page ", "number"),
    (" -3.5", "is", "number"),
    ("3rd", "the ", "word_start"),
    ("\n", "end", "other"),
    ("", "x", "other"),
    ("▁cat", "The", "word_start"),
])
def test_token_class(text, prefix, cls):
    assert token_class(text, prefix) == cls


# ----------------------------------------------------------------------------------- accuracy

def test_accuracy_humans_crowd_model_by_hand(tmp_path):
    # Item 0: target t1, model top-1 t1 (right). Item 1: target t2, model top-1 t3 (wrong).
    world = hand_world([[0.1, 0.6, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]], targets=[1, 2])
    rows = [(0, 0, 1, 1), (0, 1, 2, 2),      # participant 0: right, right
            (1, 0, 2, 1), (1, 1, -1, 2),     # participant 1: wrong, skip
            (2, 0, 1, 1), (2, 1, 3, 2)]      # participant 2: right, wrong
    data = export(tmp_path, world, rows)
    acc = M.accuracy(data, min_crowd=2, n_boot=200)
    a = acc[acc["group"] == "all"]
    assert pick(a, who="humans")["estimate"] == pytest.approx(3 / 6)   # the skip counts as wrong
    assert pick(a, who="humans")["n_skipped"] == 1
    assert pick(a, who="model")["estimate"] == pytest.approx(3 / 6)    # right on 3 of 6 answers
    # Crowd: item 0 plurality t1 (right); item 1 tie t2/t3 -> 1/2. Weighted by 3 answers each.
    assert pick(a, who="crowd")["estimate"] == pytest.approx((3 * 1 + 3 * 0.5) / 6)
    assert pick(a, who="crowd − model")["estimate"] == pytest.approx(0.75 - 0.5)
    h = pick(a, who="humans")
    assert (h["n_answers"], h["n_items"], h["n_participants"]) == (6, 2, 3)
    assert h["ci_low"] <= h["estimate"] <= h["ci_high"]
    # min_crowd=3: item 1 has only 2 non-skip answers, so the crowd is item 0 alone.
    c = pick(M.accuracy(data, min_crowd=3, n_boot=200).query("group == 'all'"), who="crowd")
    assert (c["estimate"], c["n_items"], c["n_answers"]) == (1.0, 1, 3)


def test_accuracy_item_weighting_and_classes(tmp_path):
    world = hand_world([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1]], targets=[0, 1],
                       vocab=[" cat", "ing", ","], prefix=["The ", "The walk"])
    # Item 0 (" cat", word start): 3 answers, 1 right. Item 1 ("ing", continuation): 1 answer, right.
    rows = [(0, 0, 0, 1), (1, 0, 1, 1), (2, 0, 2, 1), (0, 1, 1, 2)]
    data = export(tmp_path, world, rows)
    by_answer = pick(M.accuracy(data, n_boot=200).query("group == 'all'"), who="humans")
    by_item = pick(M.accuracy(data, weighting="items", n_boot=200).query("group == 'all'"), who="humans")
    assert by_answer["estimate"] == pytest.approx(2 / 4)
    assert by_item["estimate"] == pytest.approx((1 / 3 + 1) / 2)
    acc = M.accuracy(data, n_boot=200)
    assert pick(acc, group="word_start", who="humans")["estimate"] == pytest.approx(1 / 3)
    assert pick(acc, group="word_continuation", who="humans")["estimate"] == pytest.approx(1.0)
    assert pick(acc, group="words", who="humans")["n_items"] == 1


def test_pilot_and_excluded_answers_are_left_out_and_counted(tmp_path):
    world = hand_world([[0.5, 0.5]], targets=[0])
    rows = [(0, 0, 0, 1), (1, 0, 1, 1), (2, 0, 1, 1)]
    data = export(tmp_path, world, rows, excluded={1}, pilot={2})
    prep = prepare(data)
    assert prep.n_answers == 1
    assert any("pilot" in n for n in prep.notes) and any("exclusion" in n for n in prep.notes)
    assert prepare(data, include_pilot=True, include_excluded=True).n_answers == 3


# ------------------------------------------------------------------------------ simulator fit

def test_simulator_fit_by_hand(tmp_path):
    # One item, vocabulary of 6 tokens; three people answer t1, t1, t2.
    p = [0.4, 0.3, 0.1, 0.1, 0.05, 0.05]
    world = hand_world([p], targets=[0])
    data = export(tmp_path, world, [(0, 0, 1, 1), (1, 0, 1, 1), (2, 0, 2, 1)])
    fit = M.simulator_fit(data, smoothing=1.0, n_boot=200).set_index("metric")
    # Leave-one-out with beta = 1, u(a) = g(a) / (G - 1 + V) with G = 3, V = 6:
    # t1: (1 + 1 * 2/8) / (2 + 1); t2: (0 + 1 * 1/8) / (2 + 1)
    crowd = (2 * LN(1.25 / 3) + LN(0.125 / 3)) / 3
    model = (2 * LN(0.3) + LN(0.1)) / 3
    assert fit.loc["crowd_loglik", "estimate"] == pytest.approx(crowd)
    assert fit.loc["model_loglik", "estimate"] == pytest.approx(model)
    assert fit.loc["simulator_fit", "estimate"] == pytest.approx(model - crowd)
    assert fit.loc["perplexity_ratio", "estimate"] == pytest.approx(math.exp(crowd - model))
    entropy = -sum(q * LN(q) for q in p)
    assert fit.loc["model_sample_test", "estimate"] == pytest.approx(model + entropy)
    assert fit.loc["simulator_fit", "n_answers"] == 3


def test_fitted_smoothing_maximises_the_leave_one_out_likelihood(tmp_path):
    world = syn.make_world(n_items=30, vocab_size=50, top_k=8, seed=4)
    answers = syn.simulate(world, [("sample", 1.0)] * 12, seed=5)
    data = load(syn.write_export(syn.export_tables(world, answers), tmp_path / "e", "csv"))
    best = M.simulator_fit(data, n_boot=100)
    beta = best["smoothing_beta"].iloc[0]
    ll = best.set_index("metric").loc["crowd_loglik", "estimate"]
    for other in (beta / 3, beta * 3):
        worse = M.simulator_fit(data, smoothing=other, n_boot=100).set_index("metric")
        assert worse.loc["crowd_loglik", "estimate"] < ll


def test_unknown_logprobs_are_bounded_or_excluded(tmp_path):
    # top_k = 2: token 3 is outside the stored top-k and its log-prob is left empty.
    world = hand_world([[0.5, 0.3, 0.15, 0.05]], targets=[0], top_k=2)
    rows = [(0, 0, 0, 1), (1, 0, 3, 1), (2, 0, 1, 1)]
    data = export(tmp_path, world, rows, unfilled=1.0)
    bound = M.simulator_fit(data, n_boot=100).set_index("metric").loc["model_loglik_all"]
    assert bound["estimate"] == pytest.approx((LN(0.5) + LN(0.3) + LN(0.3)) / 3)  # 3rd at k-th
    assert bound["n_bounded"] == 1
    excl = M.simulator_fit(data, missing="exclude", n_boot=100).set_index("metric").loc["model_loglik_all"]
    assert excl["estimate"] == pytest.approx((LN(0.5) + LN(0.3)) / 2)
    assert excl["n_answers"] == 2
    assert any("no exact model log-prob" in n for n in prepare(data).notes)


# -------------------------------------------------------------------------------- distances

def test_item_distances_by_hand(tmp_path):
    m = [0.5, 0.25, 0.125, 0.125]
    world = hand_world([m], targets=[0], top_k=2)  # t2, t3 are the model's tail
    rows = [(0, 0, 0, 1), (1, 0, 0, 1), (2, 0, 0, 1), (3, 0, 1, 1)]   # h = (3/4, 1/4, 0, 0)
    data = export(tmp_path, world, rows)
    d = M.item_distances(data, min_answers=4).iloc[0]
    kl = 0.75 * LN(0.75 / 0.5) + 0.25 * LN(0.25 / 0.25)
    assert d["kl_plugin"] == pytest.approx(kl)
    assert d["kl"] == pytest.approx(kl - (2 - 1) / (2 * 4))          # Miller-Madow, s = 2, N = 4
    assert d["tv"] == pytest.approx(0.5 * (0.25 + 0 + 0.125 + 0.125))
    js = (0.5 * (0.75 * LN(0.75 / 0.625) + 0.25 * LN(0.25 / 0.25))
          + 0.5 * (0.5 * LN(0.5 / 0.625) + 0.25 * LN(1) + 0.25 * LN(0.25 / 0.125)))
    assert d["js"] == pytest.approx(js)
    assert d["spearman"] == pytest.approx(1.0)                       # over {t0, t1}: same order
    assert d["h_human"] == pytest.approx(-(0.75 * LN(0.75) + 0.25 * LN(0.25)))
    assert d["h_model"] == pytest.approx(-sum(q * LN(q) for q in m))
    assert d["model_mass_human_top1"] == pytest.approx(0.5)
    assert d["model_mass_human_top3"] == pytest.approx(0.75)
    assert d["human_share_model_top"] == pytest.approx(0.75)
    assert M.item_distances(data, min_answers=5).empty


def test_unknown_answers_merge_with_the_model_tail(tmp_path):
    m = [0.5, 0.25, 0.125, 0.125]
    world = hand_world([m], targets=[0], top_k=2)
    rows = [(0, 0, 0, 1), (1, 0, 0, 1), (2, 0, 3, 1), (3, 0, 1, 1)]   # t3: outside top-k, unknown
    data = export(tmp_path, world, rows, unfilled=1.0)
    d = M.item_distances(data, min_answers=4).iloc[0]
    # categories t0, t1, other (model 0.25, humans 0.25)
    kl = 0.5 * LN(0.5 / 0.5) + 0.25 * LN(0.25 / 0.25) + 0.25 * LN(0.25 / 0.25)
    assert d["kl_plugin"] == pytest.approx(kl)
    assert d["tv"] == pytest.approx(0.0)
    assert d["n_unknown"] == 1
    # Filled in, the same answers give the exact value over all four tokens.
    exact = M.item_distances(export(tmp_path, world, rows, name="filled"), min_answers=4).iloc[0]
    assert exact["kl_plugin"] == pytest.approx(0.5 * LN(1) + 0.25 * LN(1) + 0.25 * LN(0.25 / 0.125))


def test_distance_summary_means_over_items(tmp_path):
    world = hand_world([[0.5, 0.5], [0.9, 0.1]], targets=[0, 0])
    rows = [(p, i, 0, i + 1) for p in range(4) for i in range(2)]   # everyone answers t0
    data = export(tmp_path, world, rows)
    s = M.distance_summary(data, min_answers=4, n_boot=200).set_index("metric")
    assert s.loc["kl", "estimate"] == pytest.approx((LN(1 / 0.5) + LN(1 / 0.9)) / 2)
    assert s.loc["tv", "estimate"] == pytest.approx((0.5 + 0.1) / 2)
    assert s.loc["kl", "n_items"] == 2


# ------------------------------------------------------- always-top-1 and uniform players

def test_always_top1_players(tmp_path):
    world = syn.make_world(n_items=40, vocab_size=30, top_k=6, seed=11)
    data = load(syn.write_export(syn.export_tables(world, syn.simulate(world, [("top1",)] * 5, seed=1)),
                                 tmp_path / "e", "csv"))
    top1 = np.argmax(world.logprobs, axis=1)
    model_acc = np.mean(top1 == world.targets)
    acc = M.accuracy(data, n_boot=200).query("group == 'all'")
    for who in ("humans", "crowd", "model"):
        assert pick(acc, who=who)["estimate"] == pytest.approx(model_acc)
    l_top = world.logprobs[np.arange(40), top1]
    fit = M.simulator_fit(data, n_boot=200).set_index("metric")
    assert fit.loc["model_loglik_all", "estimate"] == pytest.approx(l_top.mean())
    assert fit.loc["model_sample_test", "estimate"] == pytest.approx(np.mean(l_top + world.entropy()))
    assert fit.loc["model_sample_test", "verdict"].startswith("people choose the model's likely")
    d = M.item_distances(data, min_answers=5)
    np.testing.assert_allclose(d["kl"], -l_top)          # point mass: KL = -ln p(top1); s = 1
    np.testing.assert_allclose(d["tv"], 1 - np.exp(l_top))
    np.testing.assert_allclose(d["human_share_model_top"], 1.0)


def test_uniform_players(tmp_path):
    """Every token given exactly once per item: the human distribution is exactly uniform."""
    V, n_items = 12, 10
    world = syn.make_world(n_items=n_items, vocab_size=V, top_k=V, seed=3)
    world.control[:] = False
    rows = [(p, i, (p + i) % V, i + 1) for p in range(V) for i in range(n_items)]
    data = export(tmp_path, world, rows)
    acc = M.accuracy(data, n_boot=200).query("group == 'all'")
    assert pick(acc, who="humans")["estimate"] == pytest.approx(1 / V)
    lp = world.logprobs
    d = M.item_distances(data, min_answers=V)
    np.testing.assert_allclose(d["kl_plugin"], (1 / V) * (np.log(1 / V) - lp).sum(axis=1))
    np.testing.assert_allclose(d["kl"], d["kl_plugin"] - (V - 1) / (2 * V))
    np.testing.assert_allclose(d["tv"], 0.5 * np.abs(1 / V - np.exp(lp)).sum(axis=1))
    np.testing.assert_allclose(d["h_human"], np.log(V))
    fit = M.simulator_fit(data, smoothing=1.0, n_boot=200).set_index("metric")
    assert fit.loc["model_loglik", "estimate"] == pytest.approx(lp.mean())
    # Leave-one-out: nobody else gave the same answer to the item; every token was given once
    # on each of the 10 items: u = 10 / (V*10 - 1 + V), p = u / (V - 1 + 1).
    u = n_items / (V * n_items - 1 + V)
    assert fit.loc["crowd_loglik", "estimate"] == pytest.approx(LN(u / V))


# --------------------------------------------------------------------- learning and calibration

def test_learning_curve_and_trend_by_hand(tmp_path):
    world = hand_world([[0.6, 0.4]] * 8, targets=[0] * 8)
    # Two people; answers 1-2 wrong, 3-4 half right, 5-8 right.
    rows = []
    for p in range(2):
        for k in range(8):
            right = k >= 4 or (k in (2, 3) and p == 0)
            rows.append((p, k, 0 if right else 1, k + 1))
    data = export(tmp_path, world, rows)
    lc = M.learning_curve(data, n_boot=200)
    h = lc[lc["who"] == "humans"].set_index("bin")
    assert h.loc["1", "estimate"] == 0 and h.loc["2", "estimate"] == 0
    assert h.loc["3–4", "estimate"] == pytest.approx(0.5)
    assert h.loc["5–8", "estimate"] == 1.0 and h.loc["5–8", "n_answers"] == 8
    assert (lc[lc["who"] == "model"]["estimate"] == 1.0).all()
    x = np.log2(np.tile(np.arange(1, 9), 2))
    y = np.array([r[2] == 0 for r in rows], dtype=float)
    slope = np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2)
    t = M.learning_trend(data, n_boot=200).set_index("metric")
    assert t.loc["slope_humans", "estimate"] == pytest.approx(slope)
    assert t.loc["slope_humans_minus_model", "estimate"] == pytest.approx(slope)


def test_calibration_by_hand(tmp_path):
    world = hand_world([[0.6, 0.4]] * 4, targets=[0] * 4)
    rows = [(0, 0, 0, 1, 0.9), (0, 1, 1, 2, 0.9), (1, 2, 1, 1, 0.2), (1, 3, 1, 2, 0.2)]
    data = export(tmp_path, world, rows)
    s = M.calibration_summary(data, n_boot=200)
    h = s[s["who"] == "humans"].set_index("metric")["estimate"]
    assert h["confidence"] == pytest.approx(0.55)
    assert h["accuracy"] == pytest.approx(0.25)
    assert h["overconfidence"] == pytest.approx(0.30)
    assert h["brier"] == pytest.approx((0.1 ** 2 + 0.9 ** 2 + 0.2 ** 2 + 0.2 ** 2) / 4)
    assert h["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.2)
    m = s[s["who"] == "model (top-1)"].set_index("metric")["estimate"]
    assert m["confidence"] == pytest.approx(0.6) and m["accuracy"] == 1.0
    cal = M.calibration(data, n_boot=200)
    hb = cal[cal["who"] == "humans"].sort_values("bin_low")
    assert hb["estimate"].tolist() == [0.0, 0.5] and hb["confidence"].tolist() == pytest.approx([0.2, 0.9])


def test_word_mode_has_no_distributions(tmp_path):
    world = hand_world([[0.6, 0.4]] * 3, targets=[0] * 3)
    tables = syn.export_tables(world, syn.simulate(world, [("top1",)] * 3, seed=0))
    tables["guesses"]["mode"] = "word"
    data = load(syn.write_export(tables, tmp_path / "w", "csv"))
    assert pick(M.accuracy(data, n_boot=100).query("group == 'all'"), who="humans")["estimate"] == 1.0
    with pytest.raises(AnalysisError, match="token-mode"):
        M.item_distances(data)
    with pytest.raises(AnalysisError, match="no token-mode answers"):
        prepare(data, mode="token")


def test_rank_correlation_is_positive_for_people_sampling_from_the_model(tmp_path):
    """Few answers over many plausible tokens: a candidate set that includes whatever people
    happened to answer would make the correlation negative (selection); ours stays positive."""
    world = syn.make_world(n_items=40, vocab_size=1000, top_k=64, seed=1)
    answers = syn.simulate(world, [("sample", 1.0)] * 30, seed=2)
    data = load(syn.write_export(syn.export_tables(world, answers), tmp_path / "e", "parquet"))
    s = M.distance_summary(data, n_boot=200).set_index("metric").loc["spearman"]
    assert s["ci_low"] > 0.1


def wilson(p, n, z=1.959963984540054):
    """The textbook Wilson score interval, written out independently of analysis.metrics."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_all_wrong_gets_a_wilson_interval_with_a_conservative_n(tmp_path):
    world = hand_world([[0.6, 0.4]] * 5, targets=[0] * 5)
    rows = [(p, i, 1, i + 1) for p in range(4) for i in range(5)]   # 4 people, all wrong
    h = pick(M.accuracy(export(tmp_path, world, rows), n_boot=100, level=0.95)
             .query("group == 'all'"), who="humans")
    assert h["estimate"] == 0 and h["ci_low"] == 0
    assert h["ci_high"] == pytest.approx(wilson(0.0, 4)[1])      # n = min(20, 5, 4) = 4
    assert h["ci_high"] == pytest.approx(1.959963984540054 ** 2 / (4 + 1.959963984540054 ** 2))


def test_learning_curve_intervals_stay_within_0_and_100_percent(tmp_path):
    """A rare success (1 right in a bin of 30 answers) and a near-certain one: the normal
    interval p +/- z se crosses 0% and 100%; the Wilson interval with the design's effective
    sample size p (1 - p) / se^2 stays inside and contains the estimate."""
    n_people, n_items = 30, 8
    world = hand_world([[0.6, 0.4]] * n_items, targets=[0] * n_items)
    rows = []
    for p in range(n_people):
        for k in range(n_items):
            if k == 0:
                right = p == 0                    # answer 1: one person of 30 right
            elif k == 1:
                right = p != 0                    # answer 2: all but one right
            else:
                right = (p + k) % 2 == 0
            rows.append((p, k, 0 if right else 1, k + 1))
    data = export(tmp_path, world, rows)
    lc = M.learning_curve(data, n_boot=300)
    for _, r in lc[lc["who"] != "humans − model"].iterrows():
        assert 0.0 <= r["ci_low"] <= r["estimate"] <= r["ci_high"] <= 1.0, r.to_dict()
    h = lc[lc["who"] == "humans"].set_index("bin")
    first = h.loc["1"]
    assert first["estimate"] == pytest.approx(1 / 30)
    assert first["estimate"] - 1.96 * first["se"] < 0          # where a normal interval fails
    assert first["ci_low"] > 0                                   # Wilson: asymmetric, inside
    n_eff = min(first["estimate"] * (1 - first["estimate"]) / first["se"] ** 2, first["n_answers"])
    assert first["n_effective"] == pytest.approx(n_eff)
    assert (first["ci_low"], first["ci_high"]) == pytest.approx(wilson(1 / 30, n_eff))
    second = h.loc["2"]
    assert second["estimate"] + 1.96 * second["se"] > 1 and second["ci_high"] < 1
    # Every proportion interval of the report is of this kind.
    acc = M.accuracy(data, n_boot=300)
    for _, r in acc[~acc["who"].str.contains("−")].iterrows():
        assert 0.0 <= r["ci_low"] <= r["ci_high"] <= 1.0
        assert np.isfinite(r["n_effective"]) and r["n_effective"] <= r["n_answers"]
