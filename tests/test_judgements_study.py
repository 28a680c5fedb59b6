"""Pairwise and distribution studies (issue 14): set-up rules, the participant API from consent
to completion, comprehension checks as typed words, and feedback — through the one answer path."""

from __future__ import annotations

import uuid

import pytest
from research_helpers import BASE_SPEC, consent, current, make_study, study_row
from sqlalchemy import select
from support import MODEL_SPEC

from webapp.extensions import db
from webapp.game import active_model, prediction_for
from webapp.models import Guess, StudyItem
from webapp.research.setup import StudyError, validate_study


def _send(client, slug: str, token: str, study_item_id: int, **body):
    payload = {"study_item_id": study_item_id, "client_key": uuid.uuid4().hex, "reaction_ms": 900.0, **body}
    return client.post(f"/api/s/{slug}/answers", json=payload, headers={"X-CSRFToken": token})


def _guesses(app, study_id: int) -> list[Guess]:
    with app.app_context():
        rows = list(db.session.scalars(select(Guess).where(Guess.study_id == study_id).order_by(Guess.id)))
        for row in rows:
            db.session.expunge(row)
        return rows


def test_a_pairwise_study_runs_from_consent_to_completion_code(scored_app):
    study_id = make_study(scored_app, name="Pairs", slug="pairs-study", mode="pairwise",
                          show_feedback=True, completion_code="PAIRS-OK",
                          checks=["Type the word blue here: | blue"])
    client = scored_app.test_client()
    token = consent(client, "pairs-study", PROLIFIC_PID="p-one")
    seen, checks = [], 0
    while True:
        state = current(client, "pairs-study")
        if state.get("finished") or state["_status"] == 409:
            break
        q = state["question"]
        if q["mode"] == "word":  # the comprehension check: one typed word
            checks += 1
            wrong_kind = _send(client, "pairs-study", token, q["study_item_id"], left_probability=50)
            assert wrong_kind.status_code == 400 and "word mode" in wrong_kind.get_json()["error"]
            reply = _send(client, "pairs-study", token, q["study_item_id"], text="blue")
        else:
            assert q["mode"] == "pairwise" and set(q["pair"]) == {"left", "right", "scale"}
            typed = _send(client, "pairs-study", token, q["study_item_id"], text=" the")
            assert typed.status_code == 400 and "pairwise mode" in typed.get_json()["error"]
            again = current(client, "pairs-study")["question"]
            assert again["pair"] == q["pair"]  # the same pair each time it is asked for
            reply = _send(client, "pairs-study", token, q["study_item_id"], left_probability=80)
            seen.append(q["pair"])
        assert reply.status_code == 200, reply.get_json()
        body = reply.get_json()
        if q["mode"] == "pairwise":
            feedback = body["feedback"]["pairwise"]
            shown = q["pair"]["left"] if feedback["true_side"] == "left" else q["pair"]["right"]
            assert shown["text"] == feedback["true"]["text"]
        if body["finished"]:
            break
    assert checks == 1 and len(seen) == 3
    assert client.get("/s/pairs-study/done").get_data(as_text=True).count("PAIRS-OK") >= 1
    rows = _guesses(scored_app, study_id)
    judged = [g for g in rows if g.mode == "pairwise"]
    assert len(judged) == 3 and all(g.match_rule == "pairwise" and g.is_correct is None for g in judged)
    for g, pair in zip(judged, seen, strict=True):
        assert g.judgement["left_probability"] == 0.8
        left_is_true = g.judgement["true_on_left"]
        assert g.judgement["true_probability"] == pytest.approx(0.8 if left_is_true else 0.2)
        assert pair["right" if left_is_true else "left"]["text"] == g.judgement["alternative"]["text"]
    check = [g for g in rows if g.match_rule == "check"]
    assert len(check) == 1 and check[0].is_correct is True and check[0].mode == "word"
    assert study_row(scored_app, study_id).mode == "pairwise"


def test_a_distribution_study_stores_bets_and_gives_feedback_on_the_same_cells(scored_app):
    study_id = make_study(scored_app, name="Bets", slug="bets-study", mode="distribution",
                          show_feedback=True)
    client = scored_app.test_client()
    token = consent(client, "bets-study")
    q = current(client, "bets-study")["question"]
    assert q["mode"] == "distribution" and "pair" not in q
    with scored_app.app_context():
        truth = db.session.get(StudyItem, q["study_item_id"]).item.token_text
    reply = _send(client, "bets-study", token, q["study_item_id"],
                  bets=[{"text": " nothing-like-it", "points": 30}, {"text": truth, "points": 50}],
                  else_points=20)
    assert reply.status_code == 200, reply.get_json()
    feedback = reply.get_json()["feedback"]["distribution"]
    assert feedback["person_true"] == 0.5
    g = _guesses(scored_app, study_id)[0]
    assert g.mode == "distribution" and g.judgement["true_cell"] == 1
    with scored_app.app_context():
        prediction = prediction_for(db.session, g.item_id, g.model_id)
        assert g.judgement["bets"][1]["model_logprob"] == pytest.approx(prediction.target_logprob)
    over = _send(client, "bets-study", token, current(client, "bets-study")["question"]["study_item_id"],
                 bets=[{"text": " a", "points": 70}], else_points=40)
    assert over.status_code == 400 and "add up to 100" in over.get_json()["error"]
    assert len(_guesses(scored_app, study_id)) == 1


def test_study_set_up_refuses_what_a_judgement_mode_cannot_do(scored_app, tmp_path):
    runner = scored_app.test_cli_runner()
    text = tmp_path / "plain.txt"
    text.write_text("A short passage without drawn alternatives. It is only for this test.")
    assert runner.invoke(args=["corpus", "import", str(text), "--corpus", "plain"]).exit_code == 0
    assert runner.invoke(args=["score", "--corpus", "plain"]).exit_code == 0
    with scored_app.app_context():
        model = active_model(db.session, MODEL_SPEC)
        with pytest.raises(StudyError) as refused:
            validate_study(db.session, {**BASE_SPEC, "corpus": "plain", "mode": "pairwise"}, model)
        assert "pairwise-ready" in str(refused.value) and "--pairwise-alternatives" in str(refused.value)
        with pytest.raises(StudyError) as refused:
            validate_study(db.session, {**BASE_SPEC, "mode": "distribution", "ask_probability": True}, model)
        assert "already a probability" in str(refused.value)
        ok = validate_study(db.session, {**BASE_SPEC, "mode": "distribution", "corpus": "plain"}, model)
        assert ok["mode"] == "distribution"
