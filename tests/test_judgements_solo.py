"""Pairwise judgements and stated distributions in the solo game (issue 14), through the one
answer path: the question, the stored judgement, the reveal, and the refusals."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import select

from webapp.extensions import db
from webapp.game import prediction_for
from webapp.judgements import choose_pair, stated_cells_view, usable_alternatives
from webapp.models import Guess, Item


def _key(n: int) -> str:
    return f"judgement-key-{n:04d}"


def _stored(app, key: str) -> Guess:
    with app.app_context():
        guess = db.session.scalar(select(Guess).where(Guess.client_key == key))
        db.session.expunge(guess)
        return guess


def test_pairwise_question_shows_the_truth_and_one_drawn_alternative_then_scores_the_judgement(scored_app):
    client = scored_app.test_client()
    question = client.post("/api/play/next", json={"mode": "pairwise"}).get_json()["question"]
    assert question["mode"] == "pairwise"
    pair = question["pair"]
    assert pair["scale"] == [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99]
    assert set(pair) == {"left", "right", "scale"}  # nothing says which side is the original

    reply = client.post("/api/play/guesses", json={
        "client_key": _key(1), "item_id": question["item_id"], "mode": "pairwise",
        "left_probability": 70, "reaction_ms": 1234.0,
    })
    assert reply.status_code == 200, reply.get_json()
    body = reply.get_json()
    guess = _stored(scored_app, _key(1))
    with scored_app.app_context():
        item = db.session.get(Item, question["item_id"])
        prediction = prediction_for(db.session, item.id, guess.model_id)
        drawn = [tok[0] for tok in prediction.alternatives["tokens"]]
        truth_text = body["pairwise"]["true"]["text"]
        j = guess.judgement
        assert guess.mode == "pairwise" and guess.match_rule == "pairwise" and guess.is_correct is None
        assert j["alternative"]["id"] in drawn and j["alternative"]["id"] != item.token_id
        assert j["alternative"]["logprob"] == prediction.alternatives["tokens"][j["alternative"]["index"]][1]
        assert j["true_logprob"] == prediction.target_logprob
    # the side shown as left is the side the stored judgement says
    shown_left, shown_right = pair["left"]["text"], pair["right"]["text"]
    assert (shown_left == truth_text) == j["true_on_left"]
    other = shown_right if j["true_on_left"] else shown_left
    assert other == body["pairwise"]["alternative"]["text"]  # the pair judged is the pair shown
    assert j["left_probability"] == 0.7
    assert j["true_probability"] == pytest.approx(0.7 if j["true_on_left"] else 0.3)
    reveal = body["pairwise"]
    assert reveal["true_side"] == ("left" if j["true_on_left"] else "right")
    model_r = 1 / (1 + math.exp(j["alternative"]["logprob"] - j["true_logprob"]))
    assert reveal["model_true_probability"] == pytest.approx(model_r)
    assert reveal["log_score"]["person"] == pytest.approx(math.log(j["true_probability"]))
    assert body["mode"] == "pairwise" and guess.client_reaction_ms == 1234.0
    assert body["stats"]["answered"] == 0  # token scores are not diluted by judgements

    # the next question is another position, in order
    nxt = client.post("/api/play/next", json={"mode": "pairwise"}).get_json()["question"]
    assert nxt["item_id"] != question["item_id"] and nxt["document"] == question["document"]
    assert client.post("/api/play/next", json={"mode": "pairwise"}).get_json()["question"] == nxt


def test_the_pair_cannot_be_told_from_the_scheme_without_the_server_secret():
    alternatives = {"tokens": [[5, -1.0, "a"], [6, -2.0, "b"], [7, -3.0, "c"], [9, -0.1, "t"]]}
    pairs = {choose_pair(alternatives, 9, f"solo:p:{i}", b"secret one") for i in range(40)}
    assert {p.alternative_id for p in pairs} == {5, 6, 7}  # never the truth (9)
    assert {p.true_on_left for p in pairs} == {True, False}
    same_keys_other_secret = [choose_pair(alternatives, 9, f"solo:p:{i}", b"secret two") for i in range(40)]
    mine = [choose_pair(alternatives, 9, f"solo:p:{i}", b"secret one") for i in range(40)]
    assert [p.true_on_left for p in mine] != [p.true_on_left for p in same_keys_other_secret]
    assert choose_pair({"tokens": [[9, -0.01, "t"]] * 4}, 9, "k", b"s") is None  # every draw is the truth
    assert usable_alternatives(None, 9) == [] and usable_alternatives(alternatives, None) == []


def test_a_pairwise_skip_keeps_the_pair_shown_and_other_kinds_are_refused(scored_app):
    client = scored_app.test_client()
    question = client.post("/api/play/next", json={"mode": "pairwise"}).get_json()["question"]
    base = {"item_id": question["item_id"], "mode": "pairwise"}
    wrong = client.post("/api/play/guesses", json={**base, "client_key": _key(2), "text": " the"})
    assert wrong.status_code == 400 and "pairwise mode" in wrong.get_json()["error"]
    off_scale = client.post("/api/play/guesses", json={**base, "client_key": _key(3), "left_probability": 100})
    assert off_scale.status_code == 400 and "between 1 and 99" in off_scale.get_json()["error"]
    token_mode = client.post("/api/play/guesses", json={
        "client_key": _key(4), "item_id": question["item_id"], "left_probability": 40})
    assert token_mode.status_code == 400 and "token mode" in token_mode.get_json()["error"]
    skipped = client.post("/api/play/guesses", json={**base, "client_key": _key(5), "skipped": True})
    assert skipped.status_code == 200
    guess = _stored(scored_app, _key(5))
    assert guess.skipped and guess.match_rule == "skip" and guess.mode == "pairwise"
    assert guess.judgement["left_probability"] is None and guess.judgement["alternative"]["id"] > 0
    with scored_app.app_context():
        assert db.session.scalar(select(Guess).where(Guess.client_key.in_([_key(2), _key(3), _key(4)]))) is None
    rounds = client.post("/api/play/next", json={"mode": "pairwise", "round": True})
    assert rounds.status_code == 400 and "token mode" in rounds.get_json()["error"]


def test_a_stated_distribution_is_stored_with_its_cells_and_revealed_beside_the_model(scored_app):
    client = scored_app.test_client()
    question = client.post("/api/play/next", json={"mode": "distribution"}).get_json()["question"]
    with scored_app.app_context():
        item = db.session.get(Item, question["item_id"])
        truth = item.token_text
    reply = client.post("/api/play/guesses", json={
        "client_key": _key(6), "item_id": question["item_id"], "mode": "distribution",
        "bets": [{"text": truth, "points": 60}, {"text": " zebra", "points": 10}], "else_points": 30,
    })
    assert reply.status_code == 200, reply.get_json()
    guess = _stored(scored_app, _key(6))
    j = guess.judgement
    assert guess.mode == "distribution" and guess.is_correct is None
    assert [b["points"] for b in j["bets"]] == [60, 10] and j["else_points"] == 30
    assert j["true_cell"] == 0 and j["bets"][0]["first_token_id"] == item.token_id
    with scored_app.app_context():
        prediction = prediction_for(db.session, item.id, guess.model_id)
        assert j["bets"][0]["model_logprob"] == pytest.approx(prediction.target_logprob)
    reveal = reply.get_json()["distribution"]
    assert reveal["person_true"] == 0.6
    assert reveal["model_true"] == pytest.approx(math.exp(prediction.target_logprob))
    assert reveal["cells"][-1]["else"] and reveal["cells"][-1]["person"] == 0.3


@pytest.mark.parametrize("bets, else_points, message", [
    ([{"text": " a", "points": 50}], 40, "add up to 100 (they add up to 90)"),
    ([{"text": f" w{i}", "points": 10} for i in range(6)], 40, "at most 5"),
    ([{"text": "   ", "points": 50}], 50, "every candidate needs some text"),
    ([{"text": " a", "points": 101}], 0, "bets.0.points must be between 0 and 100"),
    ([{"text": " a", "points": 100}], None, "needs both bets and else_points"),
])
def test_a_distribution_that_is_not_one_is_refused_and_nothing_is_stored(scored_app, bets, else_points, message):
    client = scored_app.test_client()
    question = client.post("/api/play/next", json={"mode": "distribution"}).get_json()["question"]
    payload = {"client_key": _key(7), "item_id": question["item_id"], "mode": "distribution", "bets": bets}
    if else_points is not None:
        payload["else_points"] = else_points
    reply = client.post("/api/play/guesses", json=payload)
    assert reply.status_code == 400 and message in reply.get_json()["error"], reply.get_json()
    with scored_app.app_context():
        assert db.session.scalar(select(Guess).where(Guess.client_key == _key(7))) is None


def test_cells_sharing_a_first_token_merge_and_the_models_rest_is_exact_only_when_known():
    judgement = {"bets": [
        {"text": " cat", "first_token_id": 5, "points": 30, "model_logprob": math.log(0.2)},
        {"text": " cat!", "first_token_id": 5, "points": 20, "model_logprob": math.log(0.2)},
        {"text": " dog", "first_token_id": 6, "points": 10, "model_logprob": math.log(0.1)},
    ], "else_points": 40, "true_cell": 2}
    cells = stated_cells_view(judgement)
    assert [c["person"] for c in cells] == [0.5, 0.1, 0.4]
    assert [c["is_true"] for c in cells] == [False, True, False]
    assert cells[-1]["model"] == pytest.approx(0.7)
    judgement["bets"][2]["model_logprob"] = None
    assert stated_cells_view(judgement)[-1]["model"] is None


def test_candidates_outside_the_top_k_are_filled_by_the_model_and_the_cells_scored(scored_app, gemma):
    """A bet on a token outside the stored top-k leaves the model's log score on the cells empty
    (never estimated); the fill pass computes the candidate's exact log-prob with the real model
    and then the log score of the cell holding the truth ("something else" here)."""
    client = scored_app.test_client()
    question = client.post("/api/play/next", json={"mode": "distribution"}).get_json()["question"]
    reply = client.post("/api/play/guesses", json={
        "client_key": _key(8), "item_id": question["item_id"], "mode": "distribution",
        "bets": [{"text": " zygote", "points": 5}, {"text": "\u00e9t\u00e9", "points": 5}], "else_points": 90,
    })
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json()["distribution"]["cells"][-1]["model"] is None  # not known yet
    guess = _stored(scored_app, _key(8))
    assert guess.model_logprob is None and guess.judgement["true_cell"] == 2
    assert all(b["model_logprob"] is None for b in guess.judgement["bets"])
    done = scored_app.test_cli_runner().invoke(args=["score", "--fill-guesses"])
    assert done.exit_code == 0, done.output
    filled = _stored(scored_app, _key(8))
    with scored_app.app_context():
        item = db.session.get(Item, question["item_id"])
        ids = item.document.token_ids[: item.position + 1]
    firsts = [b["first_token_id"] for b in filled.judgement["bets"]]
    exact = [lp for lp, _rank in gemma.logprobs_at(ids, [(item.position, t) for t in firsts])]
    got = [b["model_logprob"] for b in filled.judgement["bets"]]
    assert got == pytest.approx(exact, abs=2e-3)
    rest = 1 - sum(math.exp(lp) for lp in dict(zip(firsts, got, strict=True)).values())
    assert filled.model_logprob == pytest.approx(math.log(rest))
    assert [b["points"] for b in filled.judgement["bets"]] == [5, 5]  # the person's side untouched


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_judgements_round_trip_through_the_export_and_the_analysis_reader(scored_app, tmp_path, fmt):
    import pandas as pd

    from analysis.reader import load
    from webapp.export import ExportFilters, write_export

    client = scored_app.test_client()
    q = client.post("/api/play/next", json={"mode": "pairwise"}).get_json()["question"]
    assert client.post("/api/play/guesses", json={
        "client_key": _key(20), "item_id": q["item_id"], "mode": "pairwise", "left_probability": 30,
    }).status_code == 200
    other = scored_app.test_client()  # another player: a distribution with a formula-like text
    q2 = other.post("/api/play/next", json={"mode": "distribution"}).get_json()["question"]
    assert other.post("/api/play/guesses", json={
        "client_key": _key(21), "item_id": q2["item_id"], "mode": "distribution",
        "bets": [{"text": "=1+1", "points": 40}, {"text": " the", "points": 35}], "else_points": 25,
    }).status_code == 200
    with scored_app.app_context():
        write_export(db.session, tmp_path / "out", fmt, ExportFilters())
        stored = {g.client_key: g.judgement for g in db.session.scalars(select(Guess))}
    data = load(tmp_path / "out")
    rows = data.guesses.set_index("mode")
    pairwise, distribution = rows.loc["pairwise"], rows.loc["distribution"]
    assert pairwise["judgement"] == stored[_key(20)]
    assert distribution["judgement"] == stored[_key(21)]  # "=1+1" back exactly, also from CSV
    assert distribution["judgement"]["bets"][0]["text"] == "=1+1"
    assert pd.isna(pairwise["is_correct"]) and pd.isna(distribution["is_correct"])  # empty, not False
