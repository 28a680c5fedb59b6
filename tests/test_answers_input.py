"""Bad input at every door of the answer path gets a clear 4xx (or a refused acknowledgement),
never a 500, and stores nothing, on SQLite and on PostgreSQL.

The list is the attacker's: NUL bytes and lone surrogates in any text field (PostgreSQL refuses
NUL), JSON nested a thousand levels deep, integers beyond 64 bits in URLs and payloads, fields of
the wrong type, extra and missing fields, strings over the limit.
"""

from __future__ import annotations

import uuid

from research_helpers import consent, current, make_study, study_row
from sqlalchemy import func, select

from webapp.extensions import db, socketio
from webapp.models import Guess, Room

DEEP = "[" * 1000 + "]" * 1000
DEEP_OBJECT = '{"a":' * 1000 + "1" + "}" * 1000


def _count(app, model=Guess) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(model.id)))


def _refused(response, status=400) -> str:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert set(body) == {"error"} and body["error"], body
    return body["error"]


def _bad_answers(ids: dict) -> list[tuple[dict, str]]:
    """(answer body, a word the message must contain) for one answer route."""
    return [
        ({**ids, "text": "a\x00b"}, "NUL"),
        ({**ids, "text": " x\ud800"}, "surrogate"),
        ({**ids, "text": "\udfff"}, "surrogate"),
        ({**ids, "text": "x" * 201}, "longer than 200"),
        ({**ids, "text": " x", "reaction_ms": 10**30}, "reaction_ms"),
        ({**ids, "text": " x", "reaction_ms": "fast"}, "reaction_ms"),
        ({**ids, "text": 5}, "text"),
        ({**ids, "text": " x", "skipped": "no"}, "skipped"),
        ({**ids, "text": " x", "colour": "red"}, "unknown field 'colour'"),
        ({**ids, "text": " x", "client_key": "a\x00bcdefghij"}, "client_key"),
        ({k: v for k, v in ids.items() if k != "client_key"} | {"text": " x"}, "missing field 'client_key'"),
    ]


def test_solo_answers_refuse_bad_input(any_db_app):
    client = any_db_app.test_client()
    item_id = client.post("/api/play/next", json={}).get_json()["question"]["item_id"]
    ids = {"item_id": item_id, "client_key": uuid.uuid4().hex}
    cases = _bad_answers(ids) + [
        ({**ids, "item_id": 2**64, "text": " x"}, "item_id"),
        ({**ids, "item_id": 2**31, "text": " x"}, "item_id"),  # beyond PostgreSQL's INTEGER
        ({**ids, "item_id": -(2**70), "text": " x"}, "item_id"),
        ({**ids, "item_id": "1", "text": " x"}, "item_id"),
        ({"client_key": ids["client_key"], "text": " x"}, "missing field 'item_id'"),
    ]
    for body, needle in cases:
        assert needle in _refused(client.post("/api/play/guesses", json=body)), body
    for raw in (DEEP, DEEP_OBJECT, '{"item_id": 1' + "0" * 5000 + "}"):
        _refused(client.post("/api/play/guesses", data=raw, content_type="application/json"))
    assert "nested too deeply" in _refused(client.post(
        "/api/play/next", data='{"corpus": ' + "[" * 40 + "]" * 40 + "}", content_type="application/json"))
    assert "NUL" in _refused(client.post("/api/play/next", json={"corpus": "a\x00"}))
    assert "NUL" in _refused(client.get("/api/tokenize?text=a%00b"))
    assert client.get("/api/tokenize?text=a%ED%A0%80b").status_code == 200  # decoded as U+FFFD
    assert _count(any_db_app) == 0
    good = client.post("/api/play/guesses", json={**ids, "text": " the"})  # and the door still works
    assert good.status_code == 200 and _count(any_db_app) == 1


def test_study_answers_and_urls_refuse_bad_input(any_db_app):
    study_id = make_study(any_db_app)
    slug = study_row(any_db_app, study_id).slug
    client = any_db_app.test_client()
    token = consent(client, slug, PROLIFIC_PID="attacker")
    question = current(client, slug)["question"]
    ids = {"study_item_id": question["study_item_id"], "client_key": uuid.uuid4().hex}
    headers = {"X-CSRFToken": token}
    cases = _bad_answers(ids) + [
        ({**ids, "study_item_id": 2**64, "text": " x"}, "study_item_id"),
        ({**ids, "text": " x", "reported_probability": 1.5}, "reported_probability"),
        ({**ids, "text": " x", "reported_probability": True}, "reported_probability"),
    ]
    for body, needle in cases:
        reply = client.post(f"/api/s/{slug}/answers", json=body, headers=headers)
        assert needle in _refused(reply), body
    reply = client.post(f"/api/s/{slug}/answers", data=DEEP, content_type="application/json",
                        headers=headers)
    _refused(reply)
    for url in (f"/api/research/studies/{2**64}/summary", f"/api/research/studies/{2**31}/summary", f"/research/studies/{10**30}",
                f"/api/s/{slug}%00/current", "/api/s/a%ED%A0%80b/current"):
        response = client.get(url)
        assert 400 <= response.status_code < 500, (url, response.status_code)
    assert _count(any_db_app) == 0


def test_room_events_refuse_bad_input(any_db_app):
    client = any_db_app.test_client()
    room = client.post("/api/rooms", json={"source": "corpus", "corpus": "tests", "rounds": 1}).get_json()
    code = room["code"]
    host = socketio.test_client(any_db_app, flask_test_client=any_db_app.test_client())
    assert host.emit("host_join", {"code": code, "host_token": room["host_token"]}, callback=True)["ok"]
    phone = socketio.test_client(any_db_app, flask_test_client=any_db_app.test_client())
    for payload, needle in [
        ({"code": code, "nickname": "Al\x00ice"}, "NUL"),
        ({"code": code, "nickname": "Al\ud800"}, "surrogate"),
        ({"code": "AB\x00CD", "nickname": "Bob"}, "NUL"),
        ({"code": code, "nickname": 12}, "nickname"),
    ]:
        ack = phone.emit("join", payload, callback=True)
        assert not ack["ok"] and needle in ack["error"], (payload, ack)
    assert phone.emit("join", {"code": code, "nickname": "Bob"}, callback=True)["ok"]
    assert host.emit("host_action", {"code": code, "action": "start"}, callback=True)["ok"]
    base = {"code": code, "round": 0, "client_key": "bob-key-0001"}
    for payload, needle in [
        ({**base, "text": "a\x00b"}, "NUL"),
        ({**base, "text": "\ud800"}, "surrogate"),
        ({**base, "round": 2**64, "text": " x"}, "round"),
        ({**base, "text": " x", "deep": [[[[[[]]]]]]}, "unknown field 'deep'"),
    ]:
        ack = phone.emit("guess", payload, callback=True)
        assert not ack["ok"] and needle in ack["error"], (payload, ack)
    nested: list = []
    for _ in range(200):  # deeper than this, the test client itself cannot encode it
        nested = [nested]
    ack = phone.emit("guess", {**base, "text": " x", "extra": nested}, callback=True)
    assert not ack["ok"] and "nested too deeply" in ack["error"], ack
    ack = host.emit("host_remove", {"code": code, "player_id": 2**70}, callback=True)
    assert not ack["ok"] and "player_id" in ack["error"]
    assert _count(any_db_app) == 0
    assert phone.emit("guess", {**base, "text": " tea"}, callback=True)["ok"]
    assert _count(any_db_app) == 1 and _count(any_db_app, Room) == 1


def test_room_creation_refuses_bad_input(any_db_app):
    client = any_db_app.test_client()
    for body, needle in [
        ({"source": "prompts", "prompts": "The capital of France is | Par\x00is"}, "NUL"),
        ({"source": "prompts", "prompts": "The capital \ud800 is | Paris"}, "surrogate"),
        ({"source": "corpus", "corpus": "tests", "timer_seconds": 2**70}, "timer_seconds"),
        ({"source": "corpus", "corpus": "tests", "rounds": 2**70}, "rounds"),
        ({"source": "corpus", "corpus": "tests", "x": 1}, "unknown field 'x'"),
    ]:
        assert needle in _refused(client.post("/api/rooms", json=body)), body
    _refused(client.post("/api/rooms", data=DEEP_OBJECT, content_type="application/json"))
    assert client.get(f"/api/rooms/{'A' * 5000}").status_code == 404
    assert _count(any_db_app, Room) == 0
