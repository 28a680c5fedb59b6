"""Pairwise judgements and stated distributions in an export: the reader, the selection of
token answers beside them, the truth-draw term of the pairwise estimator, and the report's two
sections, on synthetic exports whose truth is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import pairwise as pw
from analysis import synthetic as syn
from analysis.answers import prepare
from analysis.metrics import accuracy
from analysis.reader import AnalysisError, load


def _token_tables(n_items=12, players=6, seed=1):
    world = syn.make_world(n_items=n_items, vocab_size=40, top_k=5, seed=seed)
    answers = syn.simulate(world, [("sample", 1.0)] * players, items_per_player=8, seed=seed + 1,
                           skip_rate=0.1)
    return world, answers, syn.export_tables(world, answers)


def test_an_older_export_without_the_judgement_column_still_loads(tmp_path):
    _, _, tables = _token_tables()
    for fmt in ("csv", "jsonl", "parquet"):
        folder = syn.write_export(tables, tmp_path / fmt, fmt)
        new = load(folder)
        # the same export as written before the column existed
        if fmt == "csv":
            df = pd.read_csv(folder / "guesses.csv", dtype=str, keep_default_na=False)
            df.drop(columns="judgement").to_csv(folder / "guesses.csv", index=False)
            items = pd.read_csv(folder / "items.csv", dtype=str, keep_default_na=False)
            items.drop(columns="model_alternatives").to_csv(folder / "items.csv", index=False)
        elif fmt == "jsonl":
            for name, column in (("guesses", "judgement"), ("items", "model_alternatives")):
                rows = [json.dumps({k: v for k, v in json.loads(r).items() if k != column})
                        for r in (folder / f"{name}.jsonl").read_text().splitlines()]
                (folder / f"{name}.jsonl").write_text("\n".join(rows) + "\n")
        else:
            import pyarrow.parquet as pq
            for name, column in (("guesses", "judgement"), ("items", "model_alternatives")):
                t = pq.read_table(folder / f"{name}.parquet")
                pq.write_table(t.drop_columns([column]), folder / f"{name}.parquet")
        for lean in (False, True):
            old = load(folder, lean=lean)
            assert old.warnings == [], fmt
            assert "judgement" in old.guesses.columns
            assert old.guesses["judgement"].map(lambda v: v is None).all(), fmt
            assert old.items["model_alternatives"].map(lambda v: v is None).all(), fmt
            pd.testing.assert_frame_equal(old.guesses, new.guesses[old.guesses.columns], obj=fmt)


def _beliefs(world, noise, seed=0):
    """A player's beliefs: the model's log-probs with independent noise on every token."""
    rng = np.random.default_rng(seed)
    h = world.logprobs + rng.normal(0, noise, world.logprobs.shape)
    return h - np.log(np.exp(h).sum(axis=1, keepdims=True))


def test_token_accuracy_is_the_same_with_pairwise_and_distribution_rows_beside_it(tmp_path):
    """More judgements than token answers: the default analysis still takes the token answers,
    and gives exactly the numbers of the token rows alone; the judgements are named in notes."""
    world, answers, tables = _token_tables(n_items=30)
    rng = np.random.default_rng(0)
    alternatives = syn.draw_alternatives(world, 8, rng)
    h = _beliefs(world, 1.0)
    pw = syn.pairwise_judgements(world, h, alternatives, per_item=4, n_participants=10,
                                 answers="rounded", skip_rate=0.1, first_participant=2)
    di = syn.distribution_answers(world, h, per_item=2, n_participants=10, first_participant=2)
    assert len(pw) > len(tables["guesses"]) and len(di)
    mixed = syn.export_tables(world, answers, judgements=[pw, di], alternatives=alternatives)
    alone = load(syn.write_export(tables, tmp_path / "alone", "csv"))
    both = load(syn.write_export(mixed, tmp_path / "mixed", "csv"), lean=True)
    assert set(both.guesses["mode"]) == {"token", "pairwise", "distribution"}
    assert both.guesses.loc[both.guesses["mode"] != "token", "is_correct"].isna().all()
    a, b = accuracy(alone, n_boot=200), accuracy(both, n_boot=200)
    pd.testing.assert_frame_equal(a, b)
    prep = prepare(both, n_boot=200)
    assert prep.mode == "token" and len(prep.answers) == len(tables["guesses"])
    assert any(f"{len(pw):,} pairwise answers not in these measures" in n for n in prep.notes)
    assert any(f"{len(di):,} distribution answers" in n for n in prep.notes)
    with pytest.raises(AnalysisError, match="Human loss and perplexity"):
        prepare(both, mode="pairwise")
    only = syn.export_tables(world, None, judgements=[pw], alternatives=alternatives)
    with pytest.raises(AnalysisError, match="no token- or word-mode answers"):
        prepare(load(syn.write_export(only, tmp_path / "only", "csv")))


def test_the_truth_draw_term_makes_the_mean_weight_unbiased_with_model_players():
    """Draws from G (with replacement, some equal to the truth), people judging only the draws
    that differ from it with a second model H's exact probabilities: f + (1 - f) x mean(w)
    averages to G(t*)/H(t*); the judged pairs alone average to E[w | t != t*], which differs."""
    rng = np.random.default_rng(5)
    g = np.log(np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04]))
    h = np.log(np.array([0.2, 0.1, 0.3, 0.2, 0.15, 0.05]))
    t, n_draws, n_judged, R = 0, 4, 2, 60_000
    draws = rng.choice(6, size=(R, n_draws), p=np.exp(g))
    f = (draws == t).mean(axis=1)
    usable = draws != t
    # each judgement: a uniform pick among the draws that differ from the truth
    picks = rng.random((R, n_judged))
    order = np.argsort(~usable, axis=1, kind="stable")  # usable draws first
    n_usable = usable.sum(axis=1)
    chosen = order[np.arange(R)[:, None], np.floor(picks * np.maximum(n_usable, 1)[:, None]).astype(int)]
    alt = draws[np.arange(R)[:, None], chosen]
    r = 1 / (1 + np.exp(h[alt] - h[t]))
    w = pw.judgement_weights(np.full(alt.shape, g[t]), g[alt], r)
    judged = np.where(n_usable > 0, w.mean(axis=1), 0.0)  # all draws equal t*: nothing judged
    est = pw.expected_weight(f, judged)
    target = np.exp(g[t] - h[t])  # = 2
    se = est.std(ddof=1) / np.sqrt(R)
    assert abs(est.mean() - target) < 4 * se, (est.mean(), target, se)
    naive = w[n_usable > 0].mean()
    conditional = (target - np.exp(g[t])) / (1 - np.exp(g[t]))  # E[w | t != t*] = 2.67
    assert abs(naive - conditional) < 0.05 and abs(naive - target) > 20 * se
    assert pw.truth_share([3, 0, 0, 5], 0) == 0.5
