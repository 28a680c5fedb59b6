"""A teacher's own prompts: parsing, the token to guess, and scoring by the real model."""

from __future__ import annotations

import math
import time

import pytest
from sqlalchemy import func, select

from webapp.extensions import db, socketio
from webapp.models import Corpus, Prediction, Room
from webapp.rooms import commands
from webapp.rooms import prompts as prompts_module
from webapp.rooms.prompts import MAX_PROMPTS, parse_prompts, store_prompts
from webapp.rooms.state import RoomRuleError


def test_parse_prompts_marks_the_token_to_guess():
    parsed = parse_prompts("The capital of France is | Paris\n\n  Once upon a time  \nunbeliev|able\n")
    assert [(p.line_number, p.text, p.target_char) for p in parsed] == [
        (1, "The capital of France is Paris", len("The capital of France is")),
        (3, "Once upon a time", -1),
        (4, "unbelievable", len("unbeliev")),
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "at least one prompt"),
        ("a | b | c", "line 1 has more than one |"),
        ("ok\n| right only", "line 2: put text on both sides"),
        ("left only |", "line 1: put text on both sides"),
        ("x" * 401, "longer than 400"),
        ("one\ntwo\none", "line 3 repeats line 1"),
        ("\n".join(f"prompt {i}" for i in range(MAX_PROMPTS + 1)), f"at most {MAX_PROMPTS} prompts"),
    ],
)
def test_parse_prompts_rejects_bad_lines_with_line_numbers(text, message):
    with pytest.raises(RoomRuleError, match=message):
        parse_prompts(text)


def test_store_prompts_picks_the_token_after_the_bar_or_the_last_token(app, tokenizer):
    with app.app_context():
        items = store_prompts(
            db.session, parse_prompts("The capital of France is | Paris\nOnce upon a time"), tokenizer
        )
        paris = tokenizer.tokenize(" Paris")[0]
        time_id = tokenizer.tokenize("Once upon a time")[-1]
        assert (items[0].token_id, items[0].token_text) == (paris, " Paris")
        assert items[1].token_id == time_id and items[1].position == len(tokenizer.tokenize("Once upon a time")) - 1
        corpus = db.session.scalar(select(Corpus).where(Corpus.name == "room-prompts"))
        assert corpus.purpose == "room_prompts"
        # The same prompt again reuses its document.
        again = store_prompts(db.session, parse_prompts("Once upon a time"), tokenizer)
        assert again[0].id == items[1].id


def test_store_prompts_refuses_a_prompt_with_nothing_before_the_guess(app, tokenizer):
    with app.app_context(), pytest.raises(RoomRuleError, match="line 1: there must be text before"):
        store_prompts(db.session, parse_prompts("Hello"), tokenizer)


def _wait_for_status(host, wanted: set[str], seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for message in host.get_received():
            if message["name"] == "host_state" and message["args"][0]["status"] in wanted:
                return message["args"][0]
        time.sleep(0.1)
    pytest.fail(f"room never reached {wanted}")


@pytest.mark.model
def test_prompt_room_is_scored_in_the_background_with_the_real_model(scored_app, client, tokenizer):
    res = client.post(
        "/api/rooms",
        json={"source": "prompts", "prompts": "The capital of France is | Paris\nOne, two, three, four"},
    )
    assert res.status_code == 201
    room = res.get_json()
    assert room["status"] == "preparing"
    host = socketio.test_client(scored_app, flask_test_client=scored_app.test_client())
    ack = host.emit("host_join", {"code": room["code"], "host_token": room["host_token"]}, callback=True)
    state = ack["state"] if ack["state"]["status"] == "ready" else _wait_for_status(host, {"ready", "failed"})
    assert state["status"] == "ready", state["error"]
    assert host.emit("host_action", {"code": room["code"], "action": "start"}, callback=True)["ok"]
    with scored_app.app_context():
        stored = db.session.scalar(select(Room).where(Room.code == room["code"]))
        first = stored.rounds[0]
        prediction = db.session.scalar(
            select(Prediction).where(
                Prediction.item_id == first.item_id, Prediction.model_id == stored.model_id
            )
        )
        assert first.item.token_text == " Paris"
        # The base model knows this one: " Paris" is among its first few choices.
        paris = tokenizer.tokenize(" Paris")[0]
        assert prediction.target_rank <= 5
        assert any(entry[0] == paris for entry in prediction.top_k[:5])
        assert math.exp(prediction.target_logprob) > 0.01
        assert stored.rounds[1].item.token_text == " four"
    round_view = [m for m in host.get_received() if m["name"] == "host_state"][-1]["args"][0]["round"]
    assert "".join(round_view["context"]) == "The capital of France is"


def test_prompt_scoring_failure_is_shown_to_the_host(scored_app, client, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("model file missing")

    monkeypatch.setattr(prompts_module, "prompt_model", broken)
    monkeypatch.setattr("webapp.rooms.routes.prompt_model", broken)
    res = client.post("/api/rooms", json={"source": "prompts", "prompts": "Twinkle twinkle little star"})
    room = res.get_json()
    host = socketio.test_client(scored_app, flask_test_client=scored_app.test_client())
    ack = host.emit("host_join", {"code": room["code"], "host_token": room["host_token"]}, callback=True)
    state = ack["state"] if ack["state"]["status"] == "failed" else _wait_for_status(host, {"failed"}, 10)
    assert "model file missing" in state["error"]
    refused = host.emit("host_action", {"code": room["code"], "action": "start"}, callback=True)
    assert not refused["ok"] and "could not be prepared" in refused["error"]


def test_room_prompts_never_show_up_in_the_solo_game(scored_app, client, tokenizer):
    with scored_app.app_context():
        store_prompts(db.session, parse_prompts("Twinkle twinkle little star"), tokenizer)
        db.session.commit()
        assert db.session.scalar(select(func.count(Corpus.id)).where(Corpus.purpose == "room_prompts")) == 1
    assert b"room-prompts" not in client.get("/").data
    res = client.post("/api/play/next", json={"corpus": "room-prompts"})
    assert res.status_code == 404
    assert client.post("/api/rooms", json={"source": "corpus", "corpus": "room-prompts"}).status_code == 400


def test_pick_corpus_items_spreads_rounds_over_passages(scored_app):
    import random

    from webapp import game

    with scored_app.app_context():
        model = game.active_model(db.session, scored_app.config["MODEL"])
        items = commands.pick_corpus_items(db.session, model, "tests", 4, random.Random(1))
        assert len({it.id for it in items}) == 4
        docs = [it.document_id for it in items]
        assert docs[0] != docs[1] and docs[2] != docs[3]  # alternating between the two passages
        assert all(it.playable for it in items)
        with pytest.raises(RoomRuleError, match="only"):
            commands.pick_corpus_items(db.session, model, "tests", 500, random.Random(1))
