"""Classroom rooms over Socket.IO test clients, on the real scored corpus and the real tokenizer."""

from __future__ import annotations

import math
import time

import pytest
from room_helpers import act, connect, create_room, events, guess, host_of, student
from sqlalchemy import func, select

from webapp.extensions import db
from webapp.models import Guess, Item, Prediction, Room
from webapp.rooms import commands, points

# ------------------------------------------------------------------------------------ helpers


def n_guesses(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(Guess.id)))


def current_item(app, code: str) -> tuple[Item, Prediction]:
    with app.app_context():
        room = db.session.scalar(select(Room).where(Room.code == code))
        rnd = commands.current_round(room)
        prediction = db.session.scalar(
            select(Prediction).where(Prediction.item_id == rnd.item_id, Prediction.model_id == room.model_id)
        )
        return rnd.item, prediction


# ------------------------------------------------------------------------------ creating rooms


def test_create_room_from_corpus_gives_code_urls_and_lobby(scored_app, client):
    room = create_room(client)
    assert len(room["code"]) == 5 and not set(room["code"]) & set("0O1IL")
    assert room["status"] == "ready"
    assert room["join_url"].endswith(f"/join/{room['code']}")
    assert room["host_url"] == f"/rooms/{room['code']}/host"
    info = client.get(f"/api/rooms/{room['code'].lower()}").get_json()
    assert info == {"code": room["code"], "phase": "lobby", "status": "ready", "n_players": 0}
    with scored_app.app_context():
        stored = db.session.scalar(select(Room).where(Room.code == room["code"]))
        assert len(stored.rounds) == 2
        assert len({r.item_id for r in stored.rounds}) == 2  # two different positions


@pytest.mark.parametrize(
    "body, message",
    [
        ({"source": "corpus", "corpus": "nope"}, "unknown corpus"),
        ({"source": "corpus", "corpus": "tests", "rounds": 0}, "rounds must be between"),
        ({"source": "corpus", "corpus": "tests", "rounds": 31}, "rounds must be between"),
        ({"source": "corpus", "corpus": "tests", "rounds": 500}, "rounds must be between"),
        ({"source": "corpus", "corpus": "tests", "timer_seconds": 2}, "timer must be between"),
        ({"source": "corpus", "corpus": "tests", "timer_seconds": "10"}, "whole number"),
        ({"source": "movies"}, "source must be"),
        ({"corpus": "tests"}, "missing field 'source'"),
        ({"source": "prompts"}, "missing field 'prompts'"),
        ({"source": "prompts", "prompts": "\n \n"}, "at least one prompt"),
        ({"source": "prompts", "prompts": "a | b | c"}, "more than one |"),
        ({"source": "prompts", "prompts": "Hello\nHello"}, "line 2 repeats line 1"),
        ({"source": "corpus", "corpus": "tests", "show_histogram": "yes"}, "wrong type"),
    ],
)
def test_create_room_refuses_bad_input_and_stores_nothing(scored_app, client, body, message):
    res = client.post("/api/rooms", json=body)
    assert res.status_code == 400
    assert message in res.get_json()["error"]
    with scored_app.app_context():
        assert db.session.scalar(select(func.count(Room.id))) == 0


def test_create_room_needs_json(client):
    res = client.post("/api/rooms", data="source=corpus")
    assert res.status_code == 400 and "JSON" in res.get_json()["error"]


def test_unknown_room_pages_are_404(client):
    assert client.get("/rooms/ZZZZZ/host").status_code == 404
    assert client.get("/api/rooms/ZZZZZ").get_json()["error"].startswith("there is no room")
    assert client.get("/rooms/ZZZZZ/qr.svg").status_code == 404


def test_qr_code_is_an_svg_of_the_join_url(client):
    room = create_room(client)
    res = client.get(f"/rooms/{room['code']}/qr.svg")
    assert res.status_code == 200 and res.mimetype == "image/svg+xml"
    assert res.data.startswith(b"<?xml") and b"<svg" in res.data and b"<path" in res.data


# ------------------------------------------------------------------------------- a whole room


def test_full_room_lifecycle(scored_app, client, tokenizer):
    room = create_room(client)
    code = room["code"]
    host, state = host_of(scored_app, room)
    assert state["phase"] == "lobby" and state["players"] == [] and state["rounds_total"] == 2

    ada, ada_ack = student(scored_app, code, "Ada")
    bob, _ = student(scored_app, code, "Bob")
    cyd, _ = student(scored_app, code, "Cyd")
    assert ada_ack["state"]["phase"] == "lobby" and ada_ack["state"]["nickname"] == "Ada"
    lobby = events(host, "host_state")[-1]
    assert [p["nickname"] for p in lobby["players"]] == ["Ada", "Bob", "Cyd"]

    act(host, code, "start")
    started = events(ada, "room_state")[-1]
    assert started["phase"] == "answering" and started["round"]["number"] == 1
    item, prediction = current_item(scored_app, code)
    with scored_app.app_context():
        expected_context = [
            it.token_text for it in db.session.get(Item, item.id).document.items
            if it.position < item.position
        ]
    assert started["round"]["context"] == expected_context  # the prefix, never the target
    assert item.token_text not in started["round"]["context"][-1:] or item.position == 0

    events(host, "answers")
    target_text = item.token_text
    assert guess(ada, code, target_text, "ada-round-0")["ok"]
    counts = events(host, "answers")
    assert counts[-1]["answered"] == 1 and counts[-1]["total"] == 3
    assert guess(bob, code, " banana", "bob-round-0")["ok"]
    assert cyd.emit("guess", {"code": code, "round": 0, "skipped": True, "client_key": "cyd-round-0"},
                    callback=True)["ok"]
    last = events(host, "answers")[-1]
    assert last["answered"] == 3
    assert sum(row["count"] for row in last["histogram"]) == 2  # the skip is not a token
    assert set(last["answered_player_ids"]) == {p["id"] for p in lobby["players"]}

    act(host, code, "lock")
    assert events(ada, "room_state")[-1]["phase"] == "locked"
    act(host, code, "reveal")
    revealed = events(host, "host_state")[-1]
    reveal = revealed["reveal"]
    assert reveal["target"] == {"id": item.token_id, "text": item.token_text}
    assert reveal["answered"] == 3 and reveal["correct"] == 1 and reveal["skips"] == 1
    target_row = next(r for r in reveal["chart"] if r["is_target"])
    assert target_row["class_count"] == 1 and target_row["class_share"] == pytest.approx(0.5)
    assert target_row["model_prob"] == pytest.approx(math.exp(prediction.target_logprob), rel=1e-4)
    assert reveal["model_correct"] == (prediction.top1_id == item.token_id)

    ada_fb = events(ada, "feedback")[-1]
    bob_fb = events(bob, "feedback")[-1]
    cyd_fb = events(cyd, "feedback")[-1]
    assert ada_fb["correct"] is True and ada_fb["your_text"] == target_text
    assert bob_fb["correct"] is False and bob_fb["your_text"] == " banana"
    assert cyd_fb["skipped"] is True and cyd_fb["points"] == 0
    assert ada_fb["target"]["text"] == target_text
    floor = prediction.top_k[-1][1]
    assert ada_fb["points"] == points.points(prediction.target_logprob, floor, True)
    assert ada_fb["rank"] == 1 and ada_fb["n_players"] == 3

    board = revealed["leaderboard"]
    assert board[0]["nickname"] == "Ada"
    assert board[0]["points"] == ada_fb["points"] and board[0]["correct"] == 1

    act(host, code, "next")
    assert events(bob, "room_state")[-1]["round"]["number"] == 2
    assert guess(bob, code, " zqxj", "bob-round-1", round_index=1)["ok"]
    act(host, code, "lock")
    act(host, code, "reveal")
    ack = host.emit("host_action", {"code": code, "action": "next"}, callback=True)
    assert not ack["ok"] and "last round" in ack["error"]
    act(host, code, "finish")
    final = events(host, "host_state")[-1]
    summary = final["summary"]
    assert final["phase"] == "finished" and len(summary["rounds"]) == 2
    assert summary["n_answers"] == 4 and summary["class_accuracy"] == pytest.approx(1 / 4)
    assert summary["rounds"][0]["class_accuracy"] == pytest.approx(1 / 3)
    assert events(cyd, "room_state")[-1]["summary"] == summary

    with scored_app.app_context():
        room_id = db.session.scalar(select(Room.id).where(Room.code == code))
        stored = db.session.scalars(select(Guess).where(Guess.room_id == room_id)).all()
        assert len(stored) == 4 and all(g.model_id is not None for g in stored)


def test_histogram_counts_first_tokens_and_can_be_hidden(scored_app, client, tokenizer):
    room = create_room(client)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    socks = [student(scored_app, code, name)[0] for name in ("A1", "A2", "A3", "A4")]
    act(host, code, "start")
    for sock, (text, key) in zip(socks, [(" cat", "key-cat-1"), (" cat", "key-cat-2"), (" cats", "key-cats-1"), (" dog", "key-dog-1")]):
        assert guess(sock, code, text, key)["ok"]
    hist = events(host, "answers")[-1]["histogram"]
    cat = tokenizer.tokenize(" cat")[0]
    assert hist[0] == {"id": cat, "text": " cat", "count": 2}  # most frequent first
    assert sum(r["count"] for r in hist) == 4
    assert {r["id"] for r in hist} == {tokenizer.tokenize(t)[0] for t in (" cat", " cats", " dog")}

    ack = host.emit("host_settings", {"code": code, "show_histogram": False}, callback=True)
    assert ack["ok"]
    assert events(host, "host_state")[-1]["answers"]["histogram"] is None


def test_leaderboard_can_be_hidden_by_the_host(scored_app, client):
    room = create_room(client)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    sock, _ = student(scored_app, code, "Ann")
    act(host, code, "start")
    guess(sock, code, " x", "ann-key-1")
    act(host, code, "lock")
    act(host, code, "reveal")
    assert events(host, "host_state")[-1]["leaderboard"][0]["nickname"] == "Ann"
    host.emit("host_settings", {"code": code, "show_leaderboard": False}, callback=True)
    assert events(host, "host_state")[-1]["leaderboard"] is None
    assert events(sock, "room_state")[-1]["leaderboard"] is None


# ------------------------------------------------------------------------------- reconnection


def test_student_rejoins_same_seat_with_answer_restored(scored_app, client):
    room = create_room(client)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    sock, ack = student(scored_app, code, "Zoe")
    token, seat_id = ack["player_token"], ack["player_id"]
    act(host, code, "start")
    assert guess(sock, code, " tree", "zoe-key-0001")["ok"]
    sock.disconnect()
    assert events(host, "host_state")[-1]["players"][0]["connected"] is False

    # Someone else may not take the name while Zoe's seat is held.
    other = connect(scored_app)
    taken = other.emit("join", {"code": code, "nickname": "zoe"}, callback=True)
    assert not taken["ok"] and "already called" in taken["error"]

    again = connect(scored_app)
    back = again.emit("rejoin", {"code": code, "player_token": token}, callback=True)
    assert back["ok"] and back["player_id"] == seat_id
    assert back["state"]["answered"] is True
    assert back["state"]["my_answer"] == {"text": " tree", "skipped": False}
    assert back["state"]["round"]["index"] == 0 and back["state"]["nickname"] == "Zoe"
    assert events(host, "host_state")[-1]["players"][0]["connected"] is True

    # The resent answer is stored once.
    dup = guess(again, code, " tree", "zoe-key-0001")
    assert dup["ok"] and dup["duplicate"] is True
    assert n_guesses(scored_app) == 1
    # Feedback still reaches the rejoined connection.
    act(host, code, "lock")
    act(host, code, "reveal")
    assert events(again, "feedback")[-1]["your_text"] == " tree"


def test_rejoin_refused_after_grace_period_frees_the_name(scored_app, client):
    scored_app.config["ROOM_GRACE_SECONDS"] = 0
    room = create_room(client)
    code = room["code"]
    sock, ack = student(scored_app, code, "Max")
    sock.disconnect()
    time.sleep(0.01)
    back = connect(scored_app).emit("rejoin", {"code": code, "player_token": ack["player_token"]}, callback=True)
    assert not back["ok"] and "expired" in back["error"]
    student(scored_app, code, "Max")  # the name is free again


def test_host_reload_restores_the_host_view(scored_app, client):
    room = create_room(client)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    sock, _ = student(scored_app, code, "Lea")
    act(host, code, "start")
    guess(sock, code, " sun", "lea-key-0001")
    host.disconnect()
    _, state = host_of(scored_app, room)
    assert state["phase"] == "answering" and state["answers"]["answered"] == 1
    assert state["players"][0]["answered"] is True


def test_guess_sent_twice_is_stored_once_and_second_key_is_refused(scored_app, client):
    room = create_room(client)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    sock, _ = student(scored_app, code, "Kim")
    act(host, code, "start")
    first = guess(sock, code, " one", "kim-key-0001")
    second = guess(sock, code, " one", "kim-key-0001")
    assert first["ok"] and first["duplicate"] is False
    assert second["ok"] and second["duplicate"] is True and second["answer"] == first["answer"]
    third = guess(sock, code, " two", "kim-key-0002")
    assert not third["ok"] and "already answered" in third["error"]
    assert n_guesses(scored_app) == 1
    assert len(events(host, "answers")) == 1  # the duplicate did not re-broadcast


# ---------------------------------------------------------------------------- who may do what


def test_only_the_host_can_drive_the_room(scored_app, client):
    room = create_room(client)
    code = room["code"]
    sock, _ = student(scored_app, code, "Eve")
    for event, payload in [
        ("host_action", {"code": code, "action": "start"}),
        ("host_settings", {"code": code, "show_histogram": False}),
        ("host_remove", {"code": code, "player_id": 1}),
    ]:
        ack = sock.emit(event, payload, callback=True)
        assert not ack["ok"] and ack["error"] == "only the host of this room can do that"
    errors = events(sock, "room_error")
    assert [e["event"] for e in errors] == ["host_action", "host_settings", "host_remove"]
    impostor = connect(scored_app)
    ack = impostor.emit("host_join", {"code": code, "host_token": "guessed"}, callback=True)
    assert not ack["ok"]
    with scored_app.app_context():
        assert db.session.scalar(select(Room.phase).where(Room.code == code)) == "lobby"


def test_host_can_remove_a_player(scored_app, client):
    room = create_room(client)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    sock, ack = student(scored_app, code, "Troll")
    act(host, code, "start")
    assert host.emit("host_remove", {"code": code, "player_id": ack["player_id"]}, callback=True)["ok"]
    assert events(sock, "removed")[-1]["message"].startswith("The host removed you")
    assert events(host, "host_state")[-1]["players"] == []
    refused = guess(sock, code, " x", "troll-key-01")
    assert not refused["ok"] and "removed" in refused["error"]
    back = connect(scored_app).emit("rejoin", {"code": code, "player_token": ack["player_token"]}, callback=True)
    assert not back["ok"] and "removed" in back["error"]
    assert n_guesses(scored_app) == 0


# ------------------------------------------------------------------------------- bad payloads


def test_bad_payloads_get_an_error_store_nothing_and_keep_the_connection(scored_app, client):
    room = create_room(client)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    sock, _ = student(scored_app, code, "Pat")
    bad = [
        ("guess", "not an object", "one JSON object"),
        ("guess", {"round": 0, "text": "x", "client_key": "pat-key-001"}, "missing field 'code'"),
        ("guess", {"code": "ZZZZZ", "round": 0, "text": "x", "client_key": "pat-key-001"}, "there is no room"),
        ("guess", {"code": code, "round": 0, "text": "x", "client_key": "pat-key-001"}, "answers are closed"),
        ("join", {"code": code}, "missing field 'nickname'"),
        ("join", {"code": code, "nickname": "x" * 30}, "at most 20"),
        ("join", {"code": code, "nickname": "pat"}, "already called"),
        ("join", {"code": code, "nickname": "fuckface"}, "not allow"),
        ("join", {"code": "O0O0O", "nickname": "Q"}, "never contain"),
        ("rejoin", {"code": code, "player_token": "forged"}, "no seat"),
        ("host_action", {"code": code, "action": "start", "pad": "x" * 5000}, "too large"),
    ]
    for event, payload, message in bad:
        ack = sock.emit(event, payload, callback=True)
        assert not ack["ok"] and message in ack["error"], (event, ack)
    act(host, code, "start")
    for payload, message in [
        ({"code": code, "round": 1, "text": "x", "client_key": "pat-key-001"}, "that round is over"),
        ({"code": code, "round": "0", "text": "x", "client_key": "pat-key-001"}, "missing field 'round'"),
        ({"code": code, "round": 0, "text": "  ", "client_key": "pat-key-001"}, "type an answer"),
        ({"code": code, "round": 0, "text": "x" * 201, "client_key": "pat-key-001"}, "longer than 200"),
        ({"code": code, "round": 0, "text": "x", "client_key": "short"}, "client_key"),
        ({"code": code, "round": 0, "text": "x", "client_key": "pat-key-001", "skipped": "no"}, "skipped"),
        ({"code": code, "round": 0, "text": "x", "client_key": "pat-key-001", "reaction_ms": -5}, "reaction_ms"),
    ]:
        ack = sock.emit("guess", payload, callback=True)
        assert not ack["ok"] and message in ack["error"], (payload, ack)
    for payload, message in [
        ({"code": code, "action": "fly"}, "unknown action"),
        ({"code": code, "action": "reveal"}, "cannot reveal while answering"),
        ({"code": code}, "missing field 'action'"),
    ]:
        ack = host.emit("host_action", payload, callback=True)
        assert not ack["ok"] and message in ack["error"]
    assert n_guesses(scored_app) == 0
    assert len(events(sock, "room_error")) == len(bad) + 7
    assert guess(sock, code, " fine", "pat-key-001")["ok"]  # the connection still works
    assert n_guesses(scored_app) == 1


def test_a_guess_before_joining_is_refused(scored_app, client):
    room = create_room(client)
    host, _ = host_of(scored_app, room)
    act(host, room["code"], "start")
    ack = guess(connect(scored_app), room["code"], " x", "nobody-key-1")
    assert not ack["ok"] and "join the room" in ack["error"]


# ------------------------------------------------------------------------------------ timer


def test_timer_locks_the_round_and_late_answers_are_refused(scored_app, client, monkeypatch):
    monkeypatch.setattr(commands, "TIMER_RANGE", (1, 600))
    room = create_room(client, timer_seconds=1)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    sock, _ = student(scored_app, code, "Tim")
    act(host, code, "start")
    assert events(sock, "room_state")[-1]["round"]["deadline"] is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        states = events(host, "host_state")
        if states and states[-1]["phase"] == "locked":
            break
        time.sleep(0.1)
    else:
        pytest.fail("the timer did not lock the round")
    ack = guess(sock, code, " late", "tim-key-0001")
    assert not ack["ok"] and "closed" in ack["error"]


def test_answers_arriving_together_reach_the_host_batched_and_none_is_left_out(scored_app, client):
    scored_app.config["ROOM_ANSWER_BATCH_MS"] = 200
    room = create_room(client)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    socks = [student(scored_app, code, f"B{i}")[0] for i in range(6)]
    act(host, code, "start")
    for i, sock in enumerate(socks):
        assert guess(sock, code, " tea", f"batch-key-{i:03d}")["ok"]
    received: list[dict] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (received and received[-1]["answered"] == 6):
        received += events(host, "answers")
        time.sleep(0.05)
    assert received and received[-1]["answered"] == 6
    assert len(received) < 6  # batched: fewer updates than answers
    assert received[-1]["histogram"][0]["count"] == 6
