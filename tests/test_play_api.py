"""The solo game's HTTP API on a database scored by the real model (fixture `client`)."""

from __future__ import annotations

import uuid

import pytest
from flask import Flask
from sqlalchemy import func, inspect, select

from webapp.corpus import RawDocument, get_or_create_corpus, import_documents
from webapp.extensions import db
from webapp.models import Document, Guess, Item, Player, Prediction
from webapp.predictions import score_corpus

pytestmark = pytest.mark.model

QUESTION_KEYS = {
    "item_id", "position", "document", "context", "prefix_ends_with_space",
    "answered_in_document", "playable_in_document", "mode",
}
DOCUMENT_KEYS = {"id", "title", "register", "corpus"}
STATS_KEYS = {"answered", "correct", "skipped", "model_correct"}


# ------------------------------------------------------------------------------------ helpers


def key() -> str:
    return uuid.uuid4().hex


def next_question(client, **body) -> dict:
    response = client.post("/api/play/next", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def submit(client, item_id, text=None, *, skipped=False, client_key=None, **extra):
    body = {"item_id": item_id, "client_key": client_key or key(), **extra}
    if text is not None:
        body["text"] = text
    if skipped:
        body["skipped"] = True
    return client.post("/api/play/guesses", json=body)


def assert_error(response, status: int):
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.is_json
    body = response.get_json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    return body["error"]


@pytest.fixture
def dbs(scored_app):
    """A session on the test's database (separate from the app's request sessions)."""
    with scored_app.app_context():
        session = db.new_session()
        yield session
        session.close()


def item(dbs, item_id) -> Item:
    dbs.expire_all()
    return dbs.get(Item, item_id)


def all_ints(value):
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from all_ints(v)
    elif isinstance(value, list):
        for v in value:
            yield from all_ints(v)


def count_guesses(dbs) -> int:
    dbs.expire_all()
    return dbs.scalar(select(func.count(Guess.id)))


def player_id_of(client, app) -> str:
    cookie = client.get_cookie(app.config.get("SESSION_COOKIE_NAME", "session"))
    assert cookie is not None
    data = app.session_interface.get_signing_serializer(app).loads(cookie.value)
    assert set(data) <= {"player_id", "_permanent"}  # nothing about the person
    return data["player_id"]


# ------------------------------------------------------------------- questions never leak the answer


def test_questions_never_reveal_the_target(client, dbs):
    """Play every playable position of every passage; check each question before answering it."""
    seen_items = []
    for _ in range(100):
        body = next_question(client, corpus="tests")
        if body["question"] is None:
            assert body["done"] is True
            break
        assert set(body) == {"question", "stats"}
        q = body["question"]
        assert set(q) == QUESTION_KEYS and set(q["document"]) == DOCUMENT_KEYS
        target = item(dbs, q["item_id"])
        doc = dbs.get(Document, target.document_id)
        assert target.playable and q["position"] == target.position
        assert q["document"]["id"] == doc.id and q["document"]["corpus"] == "tests"
        # the context is exactly the tokens before the item: never the target, nothing after it
        assert len(q["context"]) == target.position
        assert q["context"] == [it.token_text for it in doc.items[: target.position]]
        assert "".join(q["context"]) == doc.text[: target.char_start]
        assert q["prefix_ends_with_space"] == q["context"][-1][-1:].isspace()
        # no field carries the target's id or text
        assert target.token_id > 400  # (so an unrelated small number cannot collide with it)
        assert target.token_id not in set(all_ints(body))
        assert target.token_text not in {q["document"]["title"], q["document"]["register"]}
        seen_items.append(target.id)
        reveal = submit(client, target.id, skipped=True)
        assert reveal.status_code == 200
        assert reveal.get_json()["target"] == {"id": target.token_id, "text": target.token_text}
    else:
        pytest.fail("the game never finished")
    playable = dbs.scalars(select(Item.id).where(Item.playable)).all()
    assert sorted(seen_items) == sorted(playable)  # every playable item asked exactly once
    assert count_guesses(dbs) == len(playable)


def test_passage_is_played_in_order(client, dbs):
    first = next_question(client)["question"]
    doc = dbs.get(Document, item(dbs, first["item_id"]).document_id)
    playable = [it for it in doc.items if it.playable]
    assert first["item_id"] == playable[0].id and first["answered_in_document"] == 0
    assert first["playable_in_document"] == len(playable)
    assert submit(client, first["item_id"], skipped=True).status_code == 200
    second = next_question(client)["question"]
    assert second["item_id"] == playable[1].id and second["answered_in_document"] == 1
    assert second["context"][: len(first["context"])] == first["context"]


# ------------------------------------------------------------------------------------- guesses


def test_correct_guess(client, dbs):
    q = next_question(client)["question"]
    target = item(dbs, q["item_id"])
    response = submit(client, target.id, target.token_text, reaction_ms=1234.5)
    assert response.status_code == 200
    body = response.get_json()
    assert body["replayed"] is False
    assert body["guess"]["correct"] is True and body["guess"]["match_rule"] == "first_token"
    assert body["guess"]["first_token"] == {"id": target.token_id, "text": target.token_text}
    assert body["target"] == {"id": target.token_id, "text": target.token_text}
    prediction = dbs.scalar(select(Prediction).where(Prediction.item_id == target.id))
    assert body["model"]["target_rank"] == prediction.target_rank
    assert body["model"]["top1_correct"] == (prediction.top1_id == target.token_id)
    assert body["model"]["top_k"] == 64
    top = body["model"]["top"]
    assert 1 <= len(top) <= 10
    assert [t["prob"] for t in top] == sorted((t["prob"] for t in top), reverse=True)
    assert sum(t["is_target"] for t in top) == (1 if target.token_id in [t["id"] for t in top] else 0)
    assert body["stats"] == {"answered": 1, "correct": 1, "skipped": 0,
                             "model_correct": int(prediction.top1_id == target.token_id)}
    guess = dbs.scalar(select(Guess))
    assert guess.is_correct and guess.raw_text == target.token_text and not guess.skipped
    assert guess.first_token_id == target.token_id and guess.token_ids == [target.token_id]
    assert guess.client_reaction_ms == 1234.5 and guess.server_received_at is not None
    assert guess.model_id == prediction.model_id
    if target.token_id in [e[0] for e in prediction.top_k]:  # logprob filled from the top-k at once
        assert guess.model_logprob == pytest.approx(prediction.target_logprob, abs=1e-5)
        assert guess.model_rank == prediction.target_rank


def test_incorrect_guess(client, dbs):
    q = next_question(client)["question"]
    body = submit(client, q["item_id"], " zzzqxj").get_json()
    assert body["guess"]["correct"] is False and body["guess"]["match_rule"] == "none"
    assert body["guess"]["multi_token"] is True and len(body["guess"]["tokens"]) > 1
    assert body["stats"]["answered"] == 1 and body["stats"]["correct"] == 0
    guess = dbs.scalar(select(Guess))
    assert not guess.is_correct and guess.match_rule == "none" and guess.multi_token


def test_skip(client, dbs):
    q = next_question(client)["question"]
    body = submit(client, q["item_id"], skipped=True).get_json()
    assert body["guess"]["skipped"] is True and body["guess"]["correct"] is False
    assert body["guess"]["match_rule"] == "skip" and body["guess"]["first_token"] is None
    assert body["stats"]["skipped"] == 1 and body["stats"]["answered"] == 1
    guess = dbs.scalar(select(Guess))
    assert guess.skipped and guess.raw_text == "" and guess.first_token_id is None
    assert guess.token_ids == [] and guess.model_logprob is None


def test_skip_ignores_text(client, dbs):
    q = next_question(client)["question"]
    body = submit(client, q["item_id"], "anything", skipped=True).get_json()
    assert body["guess"]["skipped"] is True and body["guess"]["text"] == ""


def test_space_toggled_near_miss(client, dbs, tokenizer):
    """Typing the target without its leading space (or with an extra one) is a near miss."""
    q = next_question(client, corpus="tests")["question"]
    target = item(dbs, q["item_id"])
    assert target.token_text.startswith(" ")
    bare = target.token_text[1:]
    assert tokenizer.tokenize(bare)[0] != target.token_id  # precondition
    body = submit(client, target.id, bare).get_json()
    assert body["guess"]["match_rule"] == "first_token_if_space_toggled"
    assert body["guess"]["correct"] is False and body["stats"]["correct"] == 0

    # skip on to a target without a leading space ("." or ","), then type it WITH a space
    for _ in range(40):
        q = next_question(client)["question"]
        target = item(dbs, q["item_id"])
        if target.token_text in {".", ","}:
            break
        submit(client, target.id, skipped=True)
    else:
        pytest.fail("no punctuation target found")
    spaced = " " + target.token_text
    assert tokenizer.tokenize(spaced)[0] != target.token_id  # precondition
    body = submit(client, target.id, spaced).get_json()
    assert body["guess"]["match_rule"] == "first_token_if_space_toggled"
    assert body["guess"]["correct"] is False
    stored = dbs.scalars(select(Guess.match_rule).where(Guess.item_id == target.id)).all()
    assert stored == ["first_token_if_space_toggled"]


# --------------------------------------------------------------------------- retries and conflicts


def test_retry_with_same_client_key_is_idempotent(client, dbs):
    q = next_question(client)["question"]
    k = key()
    first = submit(client, q["item_id"], " the", client_key=k)
    again = submit(client, q["item_id"], " the", client_key=k)
    assert first.status_code == again.status_code == 200
    a, b = first.get_json(), again.get_json()
    assert a["replayed"] is False and b["replayed"] is True
    assert {**a, "replayed": None} == {**b, "replayed": None}
    assert b["stats"]["answered"] == 1
    assert count_guesses(dbs) == 1
    # a retry carrying different text still replays the stored answer
    third = submit(client, q["item_id"], " changed", client_key=k).get_json()
    assert third["replayed"] is True and third["guess"]["text"] == " the"
    assert count_guesses(dbs) == 1


def test_same_client_key_for_another_item_conflicts(client, dbs):
    q = next_question(client)["question"]
    k = key()
    assert submit(client, q["item_id"], skipped=True, client_key=k).status_code == 200
    q2 = next_question(client)["question"]
    assert q2["item_id"] != q["item_id"]
    error = assert_error(submit(client, q2["item_id"], skipped=True, client_key=k), 409)
    assert "client_key" in error
    assert count_guesses(dbs) == 1


def test_same_client_key_from_another_player_conflicts(client, scored_app, dbs):
    q = next_question(client)["question"]
    k = key()
    assert submit(client, q["item_id"], skipped=True, client_key=k).status_code == 200
    other = scored_app.test_client()
    assert_error(submit(other, q["item_id"], skipped=True, client_key=k), 409)
    assert count_guesses(dbs) == 1


def test_answering_out_of_order_conflicts(client, dbs):
    q = next_question(client)["question"]
    doc = dbs.get(Document, item(dbs, q["item_id"]).document_id)
    later = [it for it in doc.items if it.playable][3]
    error = assert_error(submit(client, later.id, skipped=True), 409)
    assert "order" in error
    unplayable = next(it for it in doc.items if not it.playable)
    assert "not playable" in assert_error(submit(client, unplayable.id, skipped=True), 409)
    assert count_guesses(dbs) == 0


def test_answering_twice_conflicts(client, dbs):
    q = next_question(client)["question"]
    assert submit(client, q["item_id"], skipped=True).status_code == 200
    error = assert_error(submit(client, q["item_id"], " again"), 409)
    assert "already answered" in error
    assert count_guesses(dbs) == 1


# ---------------------------------------------------------------------------------- bad input


@pytest.fixture
def open_item(client):
    return next_question(client)["question"]["item_id"]


def test_unknown_item(client, dbs):
    assert_error(submit(client, 999_999, "x"), 404)
    assert_error(submit(client, -1, "x"), 404)
    assert count_guesses(dbs) == 0


@pytest.mark.parametrize("item_id", [2**63, 10**30])
def test_item_id_beyond_64_bits_is_a_client_error(client, dbs, item_id):
    """An id beyond 64 bits must not reach the database (SQLite would raise OverflowError)."""
    response = submit(client, item_id, "x")
    assert response.status_code in (400, 404), response.get_data(as_text=True)
    assert_error(response, response.status_code)
    assert count_guesses(dbs) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"text": "x" * 201},
        {"text": ""},
        {"text": "   "},
        {},  # no text and not skipped
        {"item_id": "ITEM", "text": "x"},
        {"item_id": 1.0, "text": "x"},
        {"item_id": True, "text": "x"},
        {"text": "x", "skipped": "true"},
        {"text": "x", "skipped": 1},
        {"text": "x", "reaction_ms": True},
        {"text": "x", "reaction_ms": "12"},
        {"text": "x", "reaction_ms": -1},
        {"text": 5},
        {"client_key": None, "text": "x"},
        {"client_key": "short", "text": "x"},
        {"client_key": "k" * 65, "text": "x"},
        {"client_key": 12345678, "text": "x"},
    ],
)
def test_bad_guess_bodies(client, dbs, open_item, body):
    full = {"item_id": open_item, "client_key": key(), **body}
    full = {k: v for k, v in full.items() if not (k == "client_key" and v is None)}
    assert_error(client.post("/api/play/guesses", json=full), 400)
    assert count_guesses(dbs) == 0


def test_text_at_the_limit_is_accepted(client, open_item):
    response = submit(client, open_item, "y" * 200)
    assert response.status_code == 200 and response.get_json()["guess"]["text"] == "y" * 200


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("{not json", "application/json"),
        ("[1, 2, 3]", "application/json"),
        ('"a string"', "application/json"),
        ("null", "application/json"),
        ("item_id=1", "application/x-www-form-urlencoded"),
        ("", "application/json"),
    ],
)
@pytest.mark.parametrize("url", ["/api/play/guesses", "/api/play/next"])
def test_malformed_and_non_object_json(client, dbs, url, data, content_type):
    assert_error(client.post(url, data=data, content_type=content_type), 400)
    assert count_guesses(dbs) == 0


def test_next_question_bad_fields(client):
    assert_error(client.post("/api/play/next", json={"corpus": 5}), 400)
    assert_error(client.post("/api/play/next", json={"new_passage": "yes"}), 400)
    assert_error(client.post("/api/play/next", json={"corpus": "no-such-corpus"}), 404)


def test_api_errors_are_json(client):
    assert_error(client.get("/api/no-such-endpoint"), 404)
    assert_error(client.get("/api/play/next"), 405)
    assert_error(client.post("/api/play/guesses", data="x" * 70_000, content_type="application/json"), 413)


# ---------------------------------------------------------------------------------------- stats


def test_stats_agree_with_database(client, dbs):
    empty = client.get("/api/play/stats")
    assert empty.status_code == 200
    assert empty.get_json() == {"stats": {"answered": 0, "correct": 0, "skipped": 0, "model_correct": 0}}
    q = next_question(client)["question"]
    submit(client, q["item_id"], item(dbs, q["item_id"]).token_text)  # correct
    q = next_question(client)["question"]
    submit(client, q["item_id"], " zzzqxj")  # wrong
    q = next_question(client)["question"]
    submit(client, q["item_id"], skipped=True)
    q = next_question(client)["question"]
    last = submit(client, q["item_id"], item(dbs, q["item_id"]).token_text).get_json()

    stats = client.get("/api/play/stats").get_json()["stats"]
    assert set(stats) == STATS_KEYS and last["stats"] == stats
    dbs.expire_all()
    player = player_id_of(client, client.application)
    guesses = dbs.scalars(select(Guess).where(Guess.player_id == player)).all()
    model_correct = 0
    for g in guesses:
        p = dbs.scalar(select(Prediction).where(Prediction.item_id == g.item_id))
        model_correct += int(p.top1_id == g.item.token_id)
    assert len(guesses) == 4
    assert stats == {
        "answered": len(guesses),
        "correct": sum(g.is_correct for g in guesses),
        "skipped": sum(g.skipped for g in guesses),
        "model_correct": model_correct,
    }
    assert stats["correct"] == 2 and stats["skipped"] == 1
    assert next_question(client)["stats"] == stats


def test_player_cookie_is_pseudonymous(client, scored_app, dbs):
    columns = {c["name"] for c in inspect(dbs.get_bind()).get_columns("players")}
    assert columns == {"id", "created_at"}
    client.get("/")
    client.get("/api/play/stats")
    assert dbs.scalar(select(func.count(Player.id))) == 0  # reading creates no player
    q = next_question(client)["question"]
    submit(client, q["item_id"], skipped=True)
    next_question(client)
    player = player_id_of(client, scored_app)
    assert dbs.scalars(select(Player.id)).all() == [player]
    assert dbs.scalar(select(Guess.player_id)) == player
    other = scored_app.test_client()
    next_question(other)
    assert player_id_of(other, scored_app) != player
    assert dbs.scalar(select(func.count(Player.id))) == 2
    assert other.get("/api/play/stats").get_json()["stats"]["answered"] == 0


def test_cookie_signed_with_another_key_is_rejected(client, scored_app):
    q = next_question(client)["question"]
    submit(client, q["item_id"], skipped=True)
    player = player_id_of(client, scored_app)
    assert client.get("/api/play/stats").get_json()["stats"]["answered"] == 1
    impostor = Flask("impostor")
    impostor.secret_key = "not-the-server-key"
    forged = impostor.session_interface.get_signing_serializer(impostor).dumps({"player_id": player})
    thief = scored_app.test_client()
    thief.set_cookie(scored_app.config.get("SESSION_COOKIE_NAME", "session"), forged)
    assert thief.get("/api/play/stats").get_json()["stats"]["answered"] == 0


# ------------------------------------------------------------------------------ tokenize, pages


def test_tokenize_endpoint(client, tokenizer):
    body = client.get("/api/tokenize", query_string={"text": " over the"}).get_json()
    ids = tokenizer.tokenize(" over the")
    assert body["text"] == " over the" and body["n_tokens"] == len(ids) == 2
    assert body["tokens"] == [{"id": i, "text": tokenizer.token_bytes(i).decode()} for i in ids]
    assert body["starts_with_space"] is True
    bare = client.get("/api/tokenize", query_string={"text": "over"}).get_json()
    assert bare["starts_with_space"] is False and bare["tokens"][0]["id"] != ids[0]
    empty = client.get("/api/tokenize").get_json()
    assert empty["tokens"] == [] and empty["n_tokens"] == 0
    assert_error(client.get("/api/tokenize", query_string={"text": "x" * 201}), 400)


def test_pages(client):
    for url in ("/", "/play", "/play?corpus=tests"):
        response = client.get(url)
        assert response.status_code == 200
        assert response.mimetype == "text/html"
        assert "<html" in response.get_data(as_text=True).lower()


def test_nothing_scored_gives_503(app):
    client = app.test_client()
    assert_error(client.post("/api/play/next", json={}), 503)
    assert_error(client.post("/api/play/guesses", json={"item_id": 1, "client_key": key(), "text": "x"}), 503)
    assert client.get("/api/play/stats").get_json()["stats"]["answered"] == 0
    home = client.get("/")
    assert home.status_code == 200 and home.mimetype == "text/html"
    with app.app_context():
        assert db.session.scalar(select(func.count(Player.id))) == 0


def test_passage_without_playable_positions_is_never_served(client, dbs, gemma, tokenizer):
    """A scored passage whose positions are all unplayable (here: shorter than the prefix rule)
    must be passed over; the game still ends with done=true.

    Regression: choose_document offers it as a fresh passage, next_open_item
    returns None and question_payload(None) raises -> HTTP 500.
    """
    corpus = get_or_create_corpus(dbs, "tests")
    report = import_documents(dbs, corpus, [RawDocument(text="Hi.", title="Tiny")], tokenizer, max_tokens=64)
    dbs.commit()
    assert report.added == 1 and report.playable == 0
    score_corpus(dbs, gemma, top_k=64, corpus="tests")
    playable = dbs.scalars(select(Item.id).where(Item.playable)).all()
    for _ in range(len(playable) + 1):
        response = client.post("/api/play/next", json={})
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        if body["question"] is None:
            break
        assert item(dbs, body["question"]["item_id"]).playable
        assert submit(client, body["question"]["item_id"], skipped=True).status_code == 200
    assert body["done"] is True and body["question"] is None
    assert count_guesses(dbs) == len(playable)
