"""GET /api/play/guesses/<client_key>: the reveal of one's own stored solo answer again, with the
model numbers that the fill job (`humanlm score --fill-guesses`) computed after the answer."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import select

from webapp.extensions import db
from webapp.game import prediction_for
from webapp.lm import load_tokenizer
from webapp.models import Guess, Item

pytestmark = pytest.mark.model

CANDIDATES = (" zygote", " Qzxv", "\u00e9t\u00e9", " xylophone", " Kazakhstan")


def _outside_top_k(app, item_id: int) -> tuple[str, int]:
    """A guess whose first token is outside the stored top-k at this position (and not the truth)."""
    with app.app_context():
        item = db.session.get(Item, item_id)
        prediction = prediction_for(db.session, item.id, _guess_model(app))
        in_k = {entry[0] for entry in prediction.top_k} | {item.token_id}
        tokenizer = load_tokenizer(app.config["MODEL"])
        for text in CANDIDATES:
            first = tokenizer.tokenize(text)[0]
            if first not in in_k:
                return text, first
    pytest.fail("every candidate guess is in the top-k here")


def _guess_model(app) -> int:
    from webapp import game

    return game.active_model(db.session, app.config["MODEL"]).id


def test_the_reveal_again_has_the_number_the_fill_computed_and_only_for_its_player(scored_app, gemma):
    client = scored_app.test_client()
    question = client.post("/api/play/next", json={}).get_json()["question"]
    text, first = _outside_top_k(scored_app, question["item_id"])
    key = "refresh-key-0001"
    posted = client.post("/api/play/guesses", json={
        "client_key": key, "item_id": question["item_id"], "text": text})
    assert posted.status_code == 200, posted.get_json()
    reply = posted.get_json()
    assert reply["model"]["guess_prob"] is None and reply["model"]["guess_in_top_k"] is False

    again = client.get(f"/api/play/guesses/{key}")
    assert again.status_code == 200, again.get_json()
    before = again.get_json()
    assert before["model"]["guess_prob"] is None
    assert before["replayed"] is True
    # the same reveal as the POST's reply, built the same way
    assert {k: v for k, v in before.items() if k != "replayed"} == {
        k: v for k, v in reply.items() if k != "replayed"}

    done = scored_app.test_cli_runner().invoke(args=["score", "--fill-guesses"])
    assert done.exit_code == 0, done.output

    with scored_app.app_context():
        item = db.session.get(Item, question["item_id"])
        ids = item.document.token_ids[: item.position + 1]
        stored = db.session.scalar(select(Guess).where(Guess.client_key == key))
        stored_lp, stored_rank = stored.model_logprob, stored.model_rank
    [(exact_lp, exact_rank)] = gemma.logprobs_at(ids, [(item.position, first)])
    assert stored_lp == pytest.approx(exact_lp, abs=2e-3)

    after = client.get(f"/api/play/guesses/{key}")
    assert after.status_code == 200
    model = after.get_json()["model"]
    assert model["guess_prob"] == math.exp(stored_lp)  # the stored number exactly
    assert model["guess_prob"] == pytest.approx(math.exp(exact_lp), rel=5e-3)
    assert model["guess_rank"] == stored_rank and stored_rank > 64
    assert abs(stored_rank - exact_rank) <= 2
    assert model["guess_prob"] < model["min_top_k_prob"]
    unchanged = {k: v for k, v in after.get_json()["model"].items() if k not in ("guess_prob", "guess_rank", "guess_in_top_k")}
    assert unchanged == {k: v for k, v in reply["model"].items() if k not in ("guess_prob", "guess_rank", "guess_in_top_k")}
    assert after.get_json()["guess"] == reply["guess"] and after.get_json()["target"] == reply["target"]

    # another player (their own cookie) and a visitor without one: a 404, nothing revealed
    other = scored_app.test_client()
    other.post("/api/play/next", json={})
    for stranger in (other, scored_app.test_client()):
        refused = stranger.get(f"/api/play/guesses/{key}")
        assert refused.status_code == 404
        assert set(refused.get_json()) == {"error"}
    unknown = client.get("/api/play/guesses/no-such-key-at-all")
    assert unknown.status_code == 404 and set(unknown.get_json()) == {"error"}
    for odd in ("k" * 65, "%25%27%22%20x", "%E2%9C%93", "'; DROP TABLE guesses; --"):
        refused = client.get("/api/play/guesses/" + odd)
        assert refused.status_code == 404 and set(refused.get_json()) == {"error"}, odd


def test_the_route_is_in_the_openapi_document(scored_app):
    document = scored_app.test_client().get("/api/openapi.json").get_json()
    operation = document["paths"]["/api/play/guesses/{client_key}"]["get"]
    assert [p["name"] for p in operation["parameters"]] == ["client_key"]
    assert "requestBody" not in operation
