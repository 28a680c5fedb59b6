"""Classroom rooms that play pairwise and distribution rounds (issue 14), over Socket.IO test
clients on the real scored corpus: the class sees one pair, the answers are stored as judgements,
the host sees them live and at the reveal beside the model, points follow a proper score, and
answers of the wrong kind are refused."""

from __future__ import annotations

import math

import pytest
from room_helpers import act, connect, create_room, events, host_of, student
from sqlalchemy import func, select

from webapp import game
from webapp.extensions import db
from webapp.judgements import PAIRWISE_SCALE, choose_pair, probability_of_truth, usable_alternatives
from webapp.models import Guess, Item, Prediction, Room
from webapp.rooms import commands, points

SECRET = b"test"  # the test apps' SECRET_KEY (tests/conftest.py)


# ------------------------------------------------------------------------------------ helpers


def answer(sock, code: str, key: str, round_index: int = 0, **fields) -> dict:
    return sock.emit("guess", {"code": code, "round": round_index, "client_key": key, **fields}, callback=True)


def round_facts(app, code: str) -> tuple[Room, Item, Prediction]:
    with app.app_context():
        room = db.session.scalar(select(Room).where(Room.code == code))
        rnd = commands.current_round(room)
        prediction = game.prediction_for(db.session, rnd.item_id, room.model_id)
        item = db.session.get(Item, rnd.item_id)
        db.session.expunge_all()
        return room, item, prediction


def stored(app, code: str) -> list[Guess]:
    with app.app_context():
        room_id = db.session.scalar(select(Room.id).where(Room.code == code))
        rows = db.session.scalars(select(Guess).where(Guess.room_id == room_id).order_by(Guess.id)).all()
        db.session.expunge_all()
        return rows


def n_guesses(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(Guess.id)))


# ------------------------------------------------------------------------------ pairwise rooms


def test_a_pairwise_room_shows_the_class_one_pair_and_reveals_it_beside_the_model(scored_app, client, tokenizer):
    room = create_room(client, answer_mode="pairwise", rounds=2)
    code = room["code"]
    host, lobby = host_of(scored_app, room)
    assert lobby["mode"] == "pairwise"
    socks = {name: student(scored_app, code, name)[0] for name in ("Ada", "Bob", "Cyd")}
    act(host, code, "start")

    # Every phone and the projector show the same pair, and nothing says which side is true.
    shown = [events(sock, "room_state")[-1]["round"] for sock in socks.values()]
    host_round = events(host, "host_state")[-1]["round"]
    assert all(r["mode"] == "pairwise" for r in [*shown, host_round])
    assert all(r["pair"] == host_round["pair"] for r in shown)
    pair = host_round["pair"]
    assert set(pair) == {"left", "right", "scale"} and set(pair["left"]) == {"text"}
    assert pair["scale"] == list(PAIRWISE_SCALE)

    db_room, item, prediction = round_facts(scored_app, code)
    expected = choose_pair(prediction.alternatives, item.token_id, f"room:{db_room.id}:{item.id}", SECRET)
    assert expected is not None and expected.alternative_id != item.token_id
    truth = game.token_view(item.token_id, tokenizer)["text"]
    other = game.token_view(expected.alternative_id, tokenizer)["text"]
    assert (pair["left"]["text"], pair["right"]["text"]) == ((truth, other) if expected.true_on_left else (other, truth))

    # Answers: left 90 and left 70 (both lean left), and one "I don't know".
    events(host, "answers")
    ack = answer(socks["Ada"], code, "ada-pair-0", left_probability=90, reaction_ms=1500.0)
    assert ack["ok"], ack
    assert ack["answer"]["left_probability"] == 0.9 and ack["answer"]["skipped"] is False
    assert answer(socks["Bob"], code, "bob-pair-0", left_probability=70)["ok"]
    assert answer(socks["Cyd"], code, "cyd-pair-0", skipped=True)["ok"]
    live = events(host, "answers")[-1]
    assert live["mode"] == "pairwise" and live["answered"] == 3 and live["histogram"] is None
    assert live["live"]["kind"] == "pairwise" and live["live"]["judged"] == 2
    counts = {s["percent"]: s["count"] for s in live["live"]["stops"]}
    assert list(counts) == list(PAIRWISE_SCALE)
    assert counts[90] == 1 and counts[70] == 1 and sum(counts.values()) == 2

    rows = stored(scored_app, code)
    assert [g.mode for g in rows] == ["pairwise"] * 3 and all(g.is_correct is None for g in rows)
    assert {g.judgement["alternative"]["id"] for g in rows} == {expected.alternative_id}  # one pair
    assert {g.judgement["true_on_left"] for g in rows} == {expected.true_on_left}
    ada = rows[0]
    assert ada.judgement["left_probability"] == 0.9 and ada.client_reaction_ms == 1500.0
    assert ada.judgement["true_logprob"] == prediction.target_logprob
    assert rows[2].skipped and rows[2].judgement["left_probability"] is None

    act(host, code, "lock")
    act(host, code, "reveal")
    state = events(host, "host_state")[-1]
    reveal = state["reveal"]
    assert reveal["mode"] == "pairwise" and reveal["answered"] == 3 and reveal["skips"] == 1
    pw = reveal["pairwise"]
    assert pw["true_side"] == ("left" if expected.true_on_left else "right")
    assert pw["true"]["text"] == truth and pw["alternative"]["text"] == other
    said = [0.9, 0.7] if expected.true_on_left else [0.1, 0.3]
    assert pw["class_true_probability"] == pytest.approx(sum(said) / 2)
    model_r = 1 / (1 + math.exp(expected.alternative_logprob - prediction.target_logprob))
    assert pw["model_true_probability"] == pytest.approx(model_r)
    assert pw["leaned_true"] == (2 if expected.true_on_left else 0)
    assert pw["leaned_alternative"] == 2 - pw["leaned_true"] and pw["judged"] == 2
    true_counts = {s["percent"]: s["count"] for s in pw["stops"]}
    assert sum(true_counts.values()) == 2 and all(true_counts[round(p * 100)] == 1 for p in said)
    assert reveal["correct"] == pw["leaned_true"]

    # Points: the bounded log score of what each gave the original; a skip earns nothing.
    fb = {name: events(sock, "feedback")[-1] for name, sock in socks.items()}
    assert fb["Ada"]["mode"] == "pairwise"
    assert fb["Ada"]["points"] == points.judgement_points(said[0])
    assert fb["Bob"]["points"] == points.judgement_points(said[1])
    assert fb["Cyd"]["points"] == 0 and fb["Cyd"]["skipped"] is True
    mine = fb["Ada"]["judgement"]
    assert mine["your_left_probability"] == 0.9 and mine["your_true_probability"] == pytest.approx(said[0])
    assert mine["model_true_probability"] == pytest.approx(model_r)
    assert mine["true_side"] == pw["true_side"] and mine["left"] == pair["left"]
    board = {row["nickname"]: row for row in state["leaderboard"]}
    assert board["Ada"]["points"] == fb["Ada"]["points"]
    assert board["Ada"]["correct"] == int(said[0] > 0.5)
    assert board["Ada"]["mean_log_score"] == pytest.approx(math.log(said[0]), abs=1e-3)
    assert board["Cyd"]["mean_log_score"] is None  # a skip has no judgement to score

    # The second round has a pair too (the room plans pairable positions only), then the end.
    act(host, code, "next")
    second = events(socks["Ada"], "room_state")[-1]["round"]
    assert second["number"] == 2 and second["pair"]["left"]["text"] != second["pair"]["right"]["text"]
    assert answer(socks["Ada"], code, "ada-pair-1", round_index=1, left_probability=50)["ok"]
    act(host, code, "lock")
    act(host, code, "reveal")
    act(host, code, "finish")
    summary = events(host, "host_state")[-1]["summary"]
    assert summary["mode"] == "pairwise" and len(summary["rounds"]) == 2 and summary["n_answers"] == 4
    assert summary["rounds"][0]["model_true_probability"] == pytest.approx(model_r)
    assert summary["class_true_probability"] == pytest.approx((sum(said) + 0.5) / 3)
    assert events(socks["Bob"], "room_state")[-1]["summary"] == summary


def test_a_pairwise_room_plans_only_positions_with_a_pair(scored_app):
    import random

    with scored_app.app_context():
        model = game.active_model(db.session, scored_app.config["MODEL"])
        items = commands.pick_corpus_items(db.session, model, "tests", 6, random.Random(3), pairwise=True)
        for it in items:
            prediction = game.prediction_for(db.session, it.id, model.id)
            assert usable_alternatives(prediction.alternatives, it.token_id)
        with pytest.raises(commands.RoomRuleError, match="positions with a pair to judge"):
            commands.pick_corpus_items(db.session, model, "tests", 500, random.Random(3), pairwise=True)


def test_a_reloaded_phone_gets_its_judgement_back_and_a_resend_is_stored_once(scored_app, client):
    room = create_room(client, answer_mode="pairwise", rounds=1)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    sock, ack = student(scored_app, code, "Zoe")
    act(host, code, "start")
    assert answer(sock, code, "zoe-pair-key", left_probability=20)["ok"]
    again = connect(scored_app)
    back = again.emit("rejoin", {"code": code, "player_token": ack["player_token"]}, callback=True)
    assert back["ok"] and back["state"]["answered"] is True
    assert back["state"]["my_answer"] == {"text": "", "skipped": False, "left_probability": 0.2}
    assert back["state"]["round"]["pair"] == events(host, "host_state")[-1]["round"]["pair"]
    dup = answer(again, code, "zoe-pair-key", left_probability=20)
    assert dup["ok"] and dup["duplicate"] is True and n_guesses(scored_app) == 1


# -------------------------------------------------------------------------- distribution rooms


def _outside_top_k(tokenizer, prediction, truth_id: int) -> str:
    """A candidate whose first token is neither the truth nor in the stored top-k."""
    top = {e[0] for e in prediction.top_k}
    for word in (" zebra", " quasar", " xylophone", " kumquat", " zqxj"):
        first = tokenizer.tokenize(word)[0]
        if first not in top and first != truth_id:
            return word
    raise AssertionError("every candidate is in the top-k")


def _typeable_in_top_k(prediction, item):
    """A top-k entry other than the truth that a person can type as a bet (a blank token such as
    "\n" cannot be one; which item a room picks is random)."""
    return next(e for e in prediction.top_k if e[0] != item.token_id and not e[3] and e[2].strip())


def test_a_distribution_room_pools_the_class_and_reveals_the_model_on_the_same_cells(scored_app, client, tokenizer):
    room = create_room(client, answer_mode="distribution", rounds=1)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    socks = {name: student(scored_app, code, name)[0] for name in ("Ada", "Bob", "Cyd")}
    act(host, code, "start")
    rnd = events(socks["Ada"], "room_state")[-1]["round"]
    assert rnd["mode"] == "distribution" and "pair" not in rnd
    assert rnd["bets"] == {"total_points": 100, "max_bets": 5}

    _room, item, prediction = round_facts(scored_app, code)
    truth = item.token_text
    known = _typeable_in_top_k(prediction, item)
    unknown = _outside_top_k(tokenizer, prediction, item.token_id)
    events(host, "answers")
    ada = answer(socks["Ada"], code, "ada-dist-0", bets=[
        {"text": truth, "points": 60}, {"text": known[2], "points": 10}], else_points=30)
    assert ada["ok"], ada
    assert ada["answer"]["bets"] == [{"text": truth, "points": 60}, {"text": known[2], "points": 10}]
    assert answer(socks["Bob"], code, "bob-dist-0", bets=[
        {"text": truth, "points": 20}, {"text": unknown, "points": 50}], else_points=30)["ok"]
    assert answer(socks["Cyd"], code, "cyd-dist-0", skipped=True)["ok"]

    live = events(host, "answers")[-1]["live"]
    assert live["kind"] == "distribution" and live["judged"] == 2
    share = {c["id"]: c["share"] for c in live["cells"]}
    unknown_id = tokenizer.tokenize(unknown)[0]
    assert share[item.token_id] == pytest.approx(0.4)  # (60 + 20) / 2 points
    assert share[known[0]] == pytest.approx(0.05) and share[unknown_id] == pytest.approx(0.25)
    assert live["else_share"] == pytest.approx(0.3) and live["others"]["count"] == 0
    assert live["cells"][0]["id"] == item.token_id  # largest first

    rows = stored(scored_app, code)
    assert [g.mode for g in rows] == ["distribution"] * 3
    assert rows[0].judgement["true_cell"] == 0 and rows[1].judgement["true_cell"] == 0

    act(host, code, "lock")
    act(host, code, "reveal")
    state = events(host, "host_state")[-1]
    reveal = state["reveal"]
    assert reveal["mode"] == "distribution" and reveal["correct"] == 2
    dist = reveal["distribution"]
    cells = {c["id"]: c for c in dist["cells"]}
    assert cells[item.token_id]["is_true"] and cells[item.token_id]["class"] == pytest.approx(0.4)
    assert cells[item.token_id]["model"] == pytest.approx(math.exp(prediction.target_logprob))
    assert cells[known[0]]["model"] == pytest.approx(math.exp(known[1]))
    assert cells[unknown_id]["model"] is None  # outside the stored top-k: not known, never guessed
    assert dist["else"] == {"class": pytest.approx(0.3), "model": None, "is_true": False}
    assert dist["class_true_probability"] == pytest.approx(0.4)  # (0.6 + 0.2) / 2
    assert dist["model_true_probability"] == pytest.approx(math.exp(prediction.target_logprob))
    assert dist["named_true"] == 2 and dist["judged"] == 2

    fb = events(socks["Ada"], "feedback")[-1]
    assert fb["points"] == points.judgement_points(0.6) and fb["correct"] is True
    mine = fb["judgement"]
    assert mine["your_true_probability"] == pytest.approx(0.6)
    assert [c["person"] for c in mine["cells"]] == [0.6, 0.1, 0.3]
    assert mine["cells"][0]["is_true"] and mine["cells"][0]["text"] == truth
    assert mine["cells"][-1]["else"] and mine["cells"][-1]["model"] is not None  # both cells known
    assert events(socks["Bob"], "feedback")[-1]["judgement"]["cells"][-1]["model"] is None
    board = {row["nickname"]: row for row in state["leaderboard"]}
    assert board["Ada"]["points"] == points.judgement_points(0.6)
    assert board["Bob"]["points"] == points.judgement_points(0.2)


def test_when_nobody_names_the_truth_something_else_is_the_true_cell(scored_app, client, tokenizer):
    room = create_room(client, answer_mode="distribution", rounds=1)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    sock, _ = student(scored_app, code, "Ann")
    act(host, code, "start")
    _room, item, prediction = round_facts(scored_app, code)
    known = _typeable_in_top_k(prediction, item)
    assert answer(sock, code, "ann-dist-0", bets=[{"text": known[2], "points": 100}], else_points=0)["ok"]
    act(host, code, "lock")
    act(host, code, "reveal")
    dist = events(host, "host_state")[-1]["reveal"]["distribution"]
    assert dist["else"]["is_true"] and not any(c["is_true"] for c in dist["cells"])
    assert dist["else"]["model"] == pytest.approx(1 - math.exp(known[1]))
    assert dist["class_true_probability"] == 0.0
    fb = events(sock, "feedback")[-1]
    assert fb["points"] == 0 and fb["correct"] is False  # nothing on the truth: the floor


# ------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("mode, fields, message", [
    ("pairwise", {"text": " the"}, "this question is in pairwise mode"),
    ("pairwise", {"bets": [{"text": " a", "points": 100}], "else_points": 0}, "pairwise mode"),
    ("distribution", {"left_probability": 40}, "this question is in distribution mode"),
    ("distribution", {"text": " the"}, "spread 100 points"),
    ("token", {"left_probability": 40}, "this question is in token mode"),
    ("token", {"bets": [{"text": " a", "points": 100}], "else_points": 0}, "type the next token"),
    ("distribution", {"bets": [{"text": " a", "points": 50}], "else_points": 40}, "add up to 100"),
    ("pairwise", {"left_probability": 100}, "between 1 and 99"),
])
def test_an_answer_of_the_wrong_kind_is_refused_and_nothing_is_stored(scored_app, client, mode, fields, message):
    room = create_room(client, answer_mode=mode, rounds=1)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    sock, _ = student(scored_app, code, "Eve")
    act(host, code, "start")
    ack = answer(sock, code, "eve-wrong-kind", **fields)
    assert ack["ok"] is False and message in ack["error"], ack
    assert events(sock, "room_error")[-1]["message"] == ack["error"]
    assert n_guesses(scored_app) == 0
    assert answer(sock, code, "eve-right-kind", skipped=True)["ok"]  # the connection stays usable


def test_a_pairwise_room_from_the_teachers_prompts_is_refused(scored_app, client):
    res = client.post("/api/rooms", json={"source": "prompts", "prompts": "Once upon a | time",
                                          "answer_mode": "pairwise"})
    assert res.status_code == 400
    error = res.get_json()["error"]
    assert "pairwise" in error and "corpus" in error
    bad = client.post("/api/rooms", json={"source": "corpus", "corpus": "tests", "answer_mode": "bets"})
    assert bad.status_code == 400 and "answer_mode must be" in bad.get_json()["error"]
    with scored_app.app_context():
        assert db.session.scalar(select(func.count(Room.id))) == 0


def test_a_token_room_says_its_mode_and_keeps_its_views(scored_app, client):
    room = create_room(client, rounds=1)
    host, state = host_of(scored_app, room)
    assert state["mode"] == "token"
    sock, _ = student(scored_app, room["code"], "Tia")
    act(host, room["code"], "start")
    rnd = events(sock, "room_state")[-1]["round"]
    assert rnd["mode"] == "token" and "pair" not in rnd and "bets" not in rnd
    assert answer(sock, room["code"], "tia-token-0", text=" the")["ok"]
    live = events(host, "answers")[-1]
    assert live["live"] is None and live["histogram"][0]["count"] == 1


# ------------------------------------------------------------------------------- points rules


def test_judgement_points_are_a_bounded_log_score():
    assert [points.judgement_points(p) for p in (1, 0.99, 0.9, 0.7, 0.5, 0.3, 0.1, 0.01, 0)] == \
        [100, 100, 98, 92, 85, 74, 50, 0, 0]
    assert points.judgement_points(None) == 0 and points.judgement_log_score(None) is None
    assert points.judgement_log_score(0) == pytest.approx(math.log(0.01))
    # proper: for a belief q, stating q earns the most points on average (among the scale's stops)
    for q in (0.1, 0.3, 0.6, 0.9):
        def expected(p, q=q):
            return q * points.judgement_log_score(p) + (1 - q) * points.judgement_log_score(1 - p)
        best = max((s / 100 for s in PAIRWISE_SCALE), key=expected)
        assert best == pytest.approx(q)
    with pytest.raises(ValueError):
        points.judgement_log_score(1.5)


def test_the_probability_of_the_truth_merges_candidates_of_one_first_token():
    judgement = {"kind": "distribution", "else_points": 40, "true_cell": 0, "bets": [
        {"text": " cat", "first_token_id": 5, "points": 30},
        {"text": " dog", "first_token_id": 6, "points": 10},
        {"text": " cats", "first_token_id": 5, "points": 20},
    ]}
    assert probability_of_truth(judgement) == pytest.approx(0.5)
    assert points.judgement_hit(judgement)
    judgement["true_cell"] = 3  # something else
    assert probability_of_truth(judgement) == pytest.approx(0.4) and not points.judgement_hit(judgement)
    assert probability_of_truth({"kind": "pairwise", "true_probability": 0.3}) == 0.3
    assert not points.judgement_hit({"kind": "pairwise", "true_probability": 0.5})
    assert probability_of_truth(None) is None


def test_pooling_averages_the_class_over_answers_and_cells():
    a = {"bets": [{"first_token_id": 5, "points": 60}, {"first_token_id": 5, "points": 10}], "else_points": 30}
    b = {"bets": [{"first_token_id": 6, "points": 100}], "else_points": 0}
    cells, rest, n = points.pool_stated([a, None, b])
    assert n == 2 and cells == {5: pytest.approx(0.35), 6: pytest.approx(0.5)}
    assert rest == pytest.approx(0.15) and sum(cells.values()) + rest == pytest.approx(1)
    stops = points.pairwise_stops([90, 90, 1, None, 52], PAIRWISE_SCALE)
    assert {s["percent"]: s["count"] for s in stops if s["count"]} == {90: 2, 1: 1, 50: 1}
