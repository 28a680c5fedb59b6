"""Pairwise judgements and stated distributions in an export: the reader, the selection of
token answers beside them, the truth-draw term of the pairwise estimator, and the report's two
sections, on synthetic exports whose truth is known."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pandas as pd
import pytest

from analysis import pairwise as pw
from analysis import synthetic as syn
from analysis.answers import prepare
from analysis.judgements import BIAS_TOLERANCE, pairwise_verdict
from analysis.metrics import accuracy
from analysis.reader import AnalysisError, load
from analysis.report import render_html, run_analysis, to_json


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


# ------------------------------------------------------------------------- the report


def _report(data, tmp_path, name, **options):
    """(JSON document, HTML page) of the report on `data`, as write_report writes them."""
    res = run_analysis(data, n_boot=200, **options)
    doc = json.loads(json.dumps(to_json(res), allow_nan=False))
    return doc, render_html(res)


@pytest.fixture(scope="module")
def pairwise_world():
    """120 contexts, 32 stored draws each, and players whose beliefs are the model plus noise
    (their loss on the true tokens is known exactly)."""
    world = syn.make_world(n_items=120, vocab_size=60, top_k=8, seed=3)
    rng = np.random.default_rng(0)
    alternatives = syn.draw_alternatives(world, 32, rng)
    h = _beliefs(world, 0.7)
    return world, alternatives, h


def _pairwise_export(tmp_path, pairwise_world, name, answers, per_item, **kwargs):
    world, alternatives, h = pairwise_world
    j = syn.pairwise_judgements(world, h, alternatives, per_item=per_item, n_participants=40,
                                answers=answers, skip_rate=0.05, seed=1, **kwargs)
    tables = syn.export_tables(world, None, judgements=[j], alternatives=alternatives)
    return load(syn.write_export(tables, tmp_path / name, "csv")), j


def test_the_report_recovers_model_players_known_loss_from_their_judgements(tmp_path, pairwise_world):
    world, alternatives, h = pairwise_world
    data, j = _pairwise_export(tmp_path, pairwise_world, "exact", "exact", 16)
    doc, page = _report(data, tmp_path, "exact")
    (e,) = doc["pairwise"]
    used = ~j.skipped
    ctx = np.unique(j.item[used])
    t = world.targets[ctx]
    true_h, true_g = -h[ctx, t].mean(), -world.logprobs[ctx, t].mean()
    assert e["model_loss"] == pytest.approx(true_g, rel=1e-9)
    assert e["loss_low"] <= true_h <= e["loss_high"], (e["human_loss"], true_h)
    assert e["delta_low"] <= true_h - true_g <= e["delta_high"]
    assert abs(e["human_loss"] - true_h) < 0.05  # 2.620 against 2.620 when written
    assert e["human_perplexity"] == pytest.approx(np.exp(e["human_loss"]))
    assert (e["n_judgements"], e["n_contexts"], e["n_skipped"]) == (int(used.sum()), len(ctx), int(j.skipped.sum()))
    assert e["n_participants"] == len(np.unique(j.participant[used]))
    # Delta by hand: per context ln(f + (1 - f) mean w), f from the stored draws
    f = (alternatives == world.targets[:, None]).mean(axis=1)
    r = np.array([x["true_probability"] for x, u in zip(j.judgement, used) if u])
    alt = np.array([x["alternative"]["id"] for x, u in zip(j.judgement, used) if u])
    items = j.item[used]
    w = np.exp(world.logprobs[items, world.targets[items]] - world.logprobs[items, alt]) * (1 / r - 1)
    by_hand = np.mean([np.log(f[c] + (1 - f[c]) * w[items == c].mean()) for c in ctx])
    assert e["delta"] == pytest.approx(by_hand, rel=1e-9)
    assert e["answers"] == "exact" and e["verdict"].startswith("people's loss is higher")
    # the sections, the summary line, the methods
    assert "<section id=pairwise" in page and "<section id=stated" not in page
    assert "<section id=headline" not in page  # no token answers: no accuracy sections
    line = next(s for s in doc["summary"] if s.startswith("Pairwise judgements:"))
    assert f"{e['n_judgements']:,} judgements" in line and e["verdict"] in line
    assert "Pairwise: draws equal to the true token" in doc["methods"]
    assert "f = the share of the context's stored draws" in html.unescape(page)
    assert [b["judgements_per_context"] for b in e["bias"]] == [1, 2, 4, 8, 16]


def test_rounded_answers_are_off_by_about_the_simulated_bias(tmp_path, pairwise_world):
    """People answer on the 1%..99% scale: the estimate is then off, and the report's own
    simulation on this export's contexts says by about how much."""
    world, _, h = pairwise_world
    data, j = _pairwise_export(tmp_path, pairwise_world, "rounded", "rounded", 16)
    (e,) = _report(data, tmp_path, "rounded")[0]["pairwise"]
    ctx = np.unique(j.item[~j.skipped])
    error = e["human_loss"] + h[ctx, world.targets[ctx]].mean()
    at = e["bias_at_median"]
    assert e["answers"] == "rounded" and at["bias_rounded"] > 0.05 and error > 0.05
    assert abs(error - at["bias_rounded"]) < 3 * at["sd_rounded"], (error, at)


def test_few_judgements_per_context_bring_a_caveat_and_the_bias_shrinks_with_more(tmp_path, pairwise_world):
    data, _ = _pairwise_export(tmp_path, pairwise_world, "one", "exact", 1)
    doc, page = _report(data, tmp_path, "one")
    (e,) = doc["pairwise"]
    assert e["median_judgements_per_context"] == 1 and e["in_biased_range"]
    assert e["caveat"].startswith("Few judgements per context") and "too low" in e["caveat"]
    assert html.escape(e["caveat"], quote=False) in page
    bias = [b["bias_exact"] for b in e["bias"]]
    assert bias[0] < -BIAS_TOLERANCE and abs(bias[-1]) < abs(bias[0]) / 2
    many = _report(_pairwise_export(tmp_path, pairwise_world, "many", "exact", 16)[0], tmp_path,
                   "many")[0]["pairwise"][0]
    assert many["caveat"] is None and not many["in_biased_range"]


@pytest.mark.parametrize(("low", "high", "bias", "verdict"), [
    (-0.1, 0.2, 0.0, "no verdict: the interval of the difference spans 0"),
    (0.1, 0.3, 0.15, "no verdict: the interval excludes 0, but not once"),
    (0.1, 0.3, -0.2, "people's loss is higher"),
    (-0.3, -0.1, 0.05, "people's loss is lower"),
    (-0.3, -0.1, -0.12, "no verdict: the interval excludes 0, but not once"),
])
def test_a_pairwise_verdict_needs_the_interval_clear_of_zero_and_of_the_bias(low, high, bias, verdict):
    text, basis = pairwise_verdict(low, high, (bias,))
    assert text.startswith(verdict)
    assert basis == ("withheld" if verdict.startswith("no verdict") else "interval")


def _bet(text, token, points, logprob):
    return {"text": text, "token_ids": [token], "first_token_id": token, "points": points,
            "model_logprob": None if logprob is None else float(np.log(logprob))}


def test_stated_scores_of_people_and_model_on_a_hand_computed_case(tmp_path):
    """Two answers scored by hand; a third awaits the model's numbers (left out and named, no
    verdict yet); a skip is counted."""
    world = syn.make_world(n_items=4, vocab_size=40, top_k=5, seed=2)
    t0, t1 = (int(x) for x in world.targets[:2])
    a, b = [x for x in range(1, 40) if x not in (t0, t1)][:2]
    answers = [
        # truth in the first cell: person ln 0.6, model ln 0.5
        {"kind": "distribution", "bets": [_bet("x", t0, 60, 0.5), _bet("y", a, 30, 0.2)],
         "else_points": 10, "true_cell": 0},
        # truth in "something else": person ln 0.5, model ln (1 - 0.3)
        {"kind": "distribution", "bets": [_bet("z", b, 50, 0.3)], "else_points": 50, "true_cell": 1},
        {"kind": "distribution", "bets": [_bet("z", b, 50, None)], "else_points": 50, "true_cell": 1},
        None,
    ]
    j = syn.Judgements("distribution", participant=np.array([0, 1, 2, 3]), item=np.array([0, 1, 1, 0]),
                       judgement=answers, skipped=np.array([False, False, False, True]))
    data = load(syn.write_export(syn.export_tables(world, None, judgements=[j]), tmp_path / "s", "csv"))
    doc, page = _report(data, tmp_path, "s")
    (e,) = doc["stated_distributions"]
    c = e["compare"]
    assert c["person_log_score"]["estimate"] == pytest.approx((np.log(0.6) + np.log(0.5)) / 2)
    assert c["model_log_score"]["estimate"] == pytest.approx((np.log(0.5) + np.log(0.7)) / 2)
    assert c["log_score_difference"]["estimate"] == pytest.approx(
        (np.log(0.6) + np.log(0.5) - np.log(0.5) - np.log(0.7)) / 2)
    assert c["person_brier"]["estimate"] == pytest.approx((0.26 + 0.5) / 2)
    assert c["model_brier"]["estimate"] == pytest.approx((0.38 + 0.18) / 2)
    assert (c["n_answers"], e["n_missing_model"], e["n_skipped"]) == (2, 1, 1)
    assert e["verdict"].startswith("no verdict yet: 1 answer await")
    text = html.unescape(page)
    assert "1 answer whose model numbers are still missing" in text
    assert "<section id=stated" in page and "fig-stated-calibration-1" in page
    assert any(s.startswith("Stated distributions: people's log score −0.602") for s in doc["summary"])


def test_the_sections_appear_only_with_such_answers_and_a_judgements_only_export_has_a_report(tmp_path):
    world, answers, _ = _token_tables(n_items=30)
    rng = np.random.default_rng(4)
    alternatives = syn.draw_alternatives(world, 8, rng)
    h = _beliefs(world, 1.0)
    pw_ = syn.pairwise_judgements(world, h, alternatives, per_item=4, n_participants=10,
                                  answers="rounded", first_participant=6)
    di = syn.distribution_answers(world, h, per_item=3, n_participants=10, first_participant=6)
    exports = {
        "token": syn.export_tables(world, answers),
        "mixed": syn.export_tables(world, answers, judgements=[pw_, di], alternatives=alternatives),
        "judgements": syn.export_tables(world, None, judgements=[pw_, di], alternatives=alternatives),
    }
    pages = {}
    for name, tables in exports.items():
        doc, page = _report(load(syn.write_export(tables, tmp_path / name, "csv"), lean=True),
                            tmp_path, name)
        pages[name] = (doc, page)
        has = name != "token"
        for sid in ("pairwise", "stated"):
            assert (f"<section id={sid} " in page) == has, (name, sid)
            assert (f"<li><a href='#{sid}'>" in page) == has, (name, sid)
        assert ("<section id=headline " in page) == (name != "judgements")
        lines = [s.split(":")[0] for s in doc["summary"]]
        assert ("Pairwise judgements" in lines and "Stated distributions" in lines) == has
        assert bool(doc["pairwise"]) == bool(doc["stated_distributions"]) == has
        assert ("Human loss from pairwise judgements" in doc["methods"]) == has
        assert ("Accuracy: humans, crowd, model" in doc["methods"]) == (name != "judgements")
        # every table labelled, every section link leads somewhere
        assert page.count("<table") == page.count("<caption>")
        ids = set(re.findall(r" id=['\"]?([\w-]+)", page))
        assert set(re.findall(r"<a href='#([\w-]+)'>", page)) <= ids
    token, mixed = pages["token"][0], pages["mixed"][0]
    assert token["accuracy"] == mixed["accuracy"] and token["summary"][0] == mixed["summary"][0]
    assert mixed["pairwise"] == pages["judgements"][0]["pairwise"]
    assert "no token- or word-mode answers" in pages["judgements"][1]


# ------------------------------------------------- through the real game and exporter


@pytest.mark.model
def test_judgements_played_in_the_game_and_exported_are_read_and_scored(scored_app, tmp_path):
    """The contract end to end: pairwise and distribution answers posted to the solo game,
    exported by webapp.export, loaded and analysed; the numbers agree with the stored rows and
    with the game's own model log score of each stated distribution."""
    from sqlalchemy import select

    from webapp.export import ExportFilters, write_export
    from webapp.extensions import db
    from webapp.models import Guess, Item

    rng = np.random.default_rng(0)
    scale = [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99]
    key = 0
    for player in range(6):
        client = scored_app.test_client()
        for n in range(7):
            q = client.post("/api/play/next", json={"mode": "pairwise"}).get_json()["question"]
            key += 1
            answer = {"skipped": True} if n == 6 else {"left_probability": int(rng.choice(scale))}
            reply = client.post("/api/play/guesses", json={
                "client_key": f"e2e-{key:04d}", "item_id": q["item_id"], "mode": "pairwise", **answer})
            assert reply.status_code == 200, reply.get_json()
        for n in range(3):
            q = client.post("/api/play/next", json={"mode": "distribution"}).get_json()["question"]
            with scored_app.app_context():
                truth = db.session.get(Item, q["item_id"]).token_text
            bets = [{"text": truth if n else " the", "points": 50}, {"text": " zebra" if n == 2 else ",",
                                                                     "points": 30}]
            key += 1
            reply = client.post("/api/play/guesses", json={
                "client_key": f"e2e-{key:04d}", "item_id": q["item_id"], "mode": "distribution",
                "bets": bets, "else_points": 20})
            assert reply.status_code == 200, reply.get_json()
    out = tmp_path / "export"
    with scored_app.app_context():
        write_export(db.session, out, "csv", ExportFilters())
        stored = db.session.scalars(select(Guess).where(Guess.client_key.like("e2e-%"))).all()
        pairs = [g for g in stored if g.mode == "pairwise"]
        stated_rows = [g for g in stored if g.mode == "distribution"]
    data = load(out, lean=True)
    assert isinstance(data.guesses.loc[data.guesses["mode"] == "pairwise", "judgement"].iloc[0], dict)
    res = run_analysis(data, n_boot=200)
    assert res["prep"] is None and "no token- or word-mode answers" in res["errors"]["predictions"]
    (e,) = res["pairwise"]
    answered = [g for g in pairs if not g.skipped]
    assert (e["n_judgements"], e["n_skipped"], e["n_participants"]) == (len(answered), 6, 6)
    items = data.items.set_index("item_id")
    ctx = sorted({g.item_id for g in answered})
    assert e["model_loss"] == pytest.approx(-np.mean([items.loc[i, "model_target_logprob"] for i in ctx]))
    deltas = []
    for i in ctx:
        mine = [g.judgement for g in answered if g.item_id == i]
        draws = [t[0] for t in items.loc[i, "model_alternatives"]["tokens"]]
        f = np.mean(np.array(draws) == items.loc[i, "target_token_id"])
        w = [np.exp(j["true_logprob"] - j["alternative"]["logprob"]) * (1 / j["true_probability"] - 1)
             for j in mine]
        deltas.append(np.log(f + (1 - f) * np.mean(w)))
    assert e["delta"] == pytest.approx(np.mean(deltas), rel=1e-9)
    (s,) = res["stated"]
    assert s["n_answers"] + s["n_missing_model"] == len(stated_rows) == 18
    game = [g.model_logprob for g in stated_rows if g.model_logprob is not None]
    assert s["n_answers"] == len(game) > 0 and s["n_missing_model"] > 0  # " zebra": not in the top-k
    assert s["compare"]["model_log_score"]["estimate"] == pytest.approx(np.mean(game), rel=1e-9)
    page = render_html(res)
    assert "<section id=pairwise" in page and "<section id=stated" in page
