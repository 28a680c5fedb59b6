"""Rooms under abuse (issue 12): each test plays one attack through the Socket.IO test client or
the HTTP API and checks that the room refuses it with a clear message, while a real class (200
phones behind one school address) still gets in."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from room_helpers import act, connect, create_room, events, guess, host_of, student
from sqlalchemy import func, select, update
from support import wait_for_prompt_rooms

from webapp.extensions import db
from webapp.models import Room, RoomPlayer
from webapp.rooms import guards
from webapp.rooms import routes as rooms_routes
from webapp.rooms.state import RoomRuleError, validate_nickname

# ------------------------------------------------------------------------------------ helpers


def seats(app, code: str) -> list[RoomPlayer]:
    with app.app_context():
        room = db.session.scalar(select(Room).where(Room.code == code))
        return list(db.session.scalars(
            select(RoomPlayer).where(RoomPlayer.room_id == room.id).order_by(RoomPlayer.id)
        ))


def join(sock, code: str, nickname: str) -> dict:
    return sock.emit("join", {"code": code, "nickname": nickname}, callback=True)


def rejoin(sock, code: str, token: str) -> dict:
    return sock.emit("rejoin", {"code": code, "player_token": token}, callback=True)


def players_listed(host) -> list[dict]:
    return events(host, "host_state")[-1]["players"]


# ------------------------------------------------------------------- one connection, one seat


def test_one_connection_holds_at_most_one_seat(scored_app, client):
    room = create_room(client)
    code = room["code"]
    sock, first = student(scored_app, code, "Ann")
    for name in ("Bob", "Cy", "Dee"):
        again = join(sock, code, name)
        assert not again["ok"] and "already" in again["error"] and "Ann" in again["error"], again
    assert [s.nickname for s in seats(scored_app, code)] == ["Ann"]

    # The same seat may be taken again on the same connection (a client that rejoins on connect),
    # another seat's token may not.
    assert rejoin(sock, code, first["player_token"])["ok"]
    _, other = student(scored_app, code, "Eve")
    taken = rejoin(sock, code, other["player_token"])
    assert not taken["ok"] and "Ann" in taken["error"]

    # A connection whose seat the host removed may join again (the phone's "Join again" button).
    host, _ = host_of(scored_app, room)
    assert host.emit("host_remove", {"code": code, "player_id": first["player_id"]}, callback=True)["ok"]
    assert join(sock, code, "Ann B")["ok"]


# ---------------------------------------------------------------------------- rate limits


def test_joins_from_one_connection_are_rate_limited(scored_app, client):
    room = create_room(client)
    code = room["code"]
    student(scored_app, code, "Taken")
    sock = connect(scored_app)
    replies = [join(sock, code, "Taken") for _ in range(8)]  # a script hammering one socket
    refused = [r for r in replies if "too many" in r.get("error", "")]
    assert refused, replies
    assert refused[0]["retry_after"] >= 1
    assert "join" in refused[0]["error"]
    assert any(m["name"] == "room_error" and "too many" in m["args"][0]["message"]
               for m in sock.get_received())


def test_joins_from_one_address_are_rate_limited(scored_app, client):
    scored_app.config["ROOM_JOIN_LIMITS_PER_ADDRESS"] = "5 per minute"
    room = create_room(client)
    code = room["code"]
    replies = [join(connect(scored_app), code, f"bot{i}") for i in range(7)]
    assert [r["ok"] for r in replies] == [True] * 5 + [False] * 2
    assert "from your network" in replies[-1]["error"] and replies[-1]["retry_after"] >= 1
    assert len(seats(scored_app, code)) == 5


def test_a_class_of_200_behind_one_address_joins_and_answers(scored_app, client):
    """The default limits let a whole class behind one school NAT in, and let it answer."""
    room = create_room(client)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    socks = []
    for i in range(200):
        sock = connect(scored_app)
        assert join(sock, code, f"pupil {i}")["ok"]
        socks.append(sock)
    act(host, code, "start")
    replies = [guess(sock, code, " the", f"pupil-key-{i:04d}") for i, sock in enumerate(socks)]
    assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:3]


def test_answers_from_one_connection_are_rate_limited(scored_app, client):
    room = create_room(client)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    sock, _ = student(scored_app, code, "Spam")
    act(host, code, "start")
    replies = [guess(sock, code, f" w{i}", f"spam-key-{i:04d}") for i in range(10)]
    assert replies[0]["ok"]
    refused = [r for r in replies if "too many" in r.get("error", "")]
    assert refused and refused[0]["retry_after"] >= 1 and "answer" in refused[0]["error"]


def test_answers_from_one_address_are_rate_limited(scored_app, client):
    scored_app.config["ROOM_ANSWER_LIMITS_PER_ADDRESS"] = "3 per minute"
    room = create_room(client)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    socks = [student(scored_app, code, f"S{i}")[0] for i in range(4)]
    act(host, code, "start")
    replies = [guess(s, code, " a", f"addr-key-{i:04d}") for i, s in enumerate(socks)]
    assert [r["ok"] for r in replies] == [True, True, True, False]
    assert "from your network" in replies[-1]["error"]


# ------------------------------------------------------------------------------ locked rooms


def test_host_locks_the_room_against_new_joins_but_seats_come_back(scored_app, client):
    room = create_room(client)
    code = room["code"]
    host, state = host_of(scored_app, room)
    assert state["settings"]["joins_locked"] is False
    sock, ack = student(scored_app, code, "Inside")

    locked = host.emit("host_settings", {"code": code, "joins_locked": True}, callback=True)
    assert locked["ok"], locked
    assert events(host, "host_state")[-1]["settings"]["joins_locked"] is True
    with scored_app.app_context():  # kept in the database: a restart does not unlock it
        assert db.session.scalar(select(Room.joins_locked).where(Room.code == code)) is True
    outsider = join(connect(scored_app), code, "Outsider")
    assert not outsider["ok"] and "locked" in outsider["error"]

    sock.disconnect()
    back = rejoin(connect(scored_app), code, ack["player_token"])
    assert back["ok"] and back["player_id"] == ack["player_id"]

    # A student cannot unlock it; the host can.
    refused = connect(scored_app).emit("host_settings", {"code": code, "joins_locked": False}, callback=True)
    assert not refused["ok"]
    assert host.emit("host_settings", {"code": code, "joins_locked": False}, callback=True)["ok"]
    assert join(connect(scored_app), code, "Outsider")["ok"]


# ------------------------------------------------------------------------- look-alike names


LOOK_ALIKES = [
    "alice", "ALICE", "\u0410lice",  # Cyrillic capital A
    "\uff21lice",  # fullwidth A
    "Al\u200bice",  # zero-width space (refused as invisible)
    "Al\u034fice",  # combining grapheme joiner: printable, invisible
    "Alice\u3164",  # Hangul filler: printable, looks blank
    "\u0391lice",  # Greek capital alpha
    "Al\u0456ce",  # Cyrillic small i (Ukrainian)
    "A\u217cice",  # small roman numeral fifty (looks like l)
    "AIice",  # capital I for l
    " Alice ",
]


@pytest.mark.parametrize("name", LOOK_ALIKES)
def test_look_alike_nicknames_count_as_the_same_name(name):
    with pytest.raises(RoomRuleError, match="already called|invisible"):
        validate_nickname(name, {"Alice"})


@pytest.mark.parametrize("name", ["Alicia", "Al ice", "Ali", "Bob", "Ana", "Alice2"])
def test_names_that_only_share_letters_are_different(name):
    assert validate_nickname(name, {"Alice"}) == name


def test_a_name_made_only_of_invisible_characters_is_refused():
    with pytest.raises(RoomRuleError, match="visible"):
        validate_nickname("\u3164\u3164", set())


# Armenian seh for u, Cyrillic i, Cyrillic e
@pytest.mark.parametrize("name", ["f\u057dck", "b\u0456tch", "wank\u0435r"])
def test_blocked_words_written_with_look_alike_letters(name):
    with pytest.raises(RoomRuleError, match="choose another nickname"):
        validate_nickname(name, set())


def test_look_alike_names_are_refused_in_a_room(scored_app, client):
    room = create_room(client)
    code = room["code"]
    student(scored_app, code, "Alice")
    for name in ("\u0410lice", "\uff21lice", "ALICE", "Al\u034fice"):
        reply = join(connect(scored_app), code, name)
        assert not reply["ok"] and "already called" in reply["error"], (name, reply)
    assert [s.nickname for s in seats(scored_app, code)] == ["Alice"]


# ------------------------------------------------------------------ names of seats that expire


def test_a_phone_that_moved_to_a_new_connection_keeps_its_name(scored_app, client):
    """The old connection of a phone that changed network closes late (ping timeout). That must
    not mark the seat away, or its name would be free while its owner is still playing."""
    scored_app.config["ROOM_GRACE_SECONDS"] = 1
    room = create_room(client)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    old, ack = student(scored_app, code, "Alice")
    new = connect(scored_app)
    assert rejoin(new, code, ack["player_token"])["ok"]
    old.disconnect()  # the stale connection's disconnect arrives after the rejoin
    assert players_listed(host)[0]["connected"] is True
    time.sleep(1.2)  # longer than the grace period
    mallory = join(connect(scored_app), code, "Alice")
    assert not mallory["ok"] and "already called" in mallory["error"]


def test_an_expired_seat_gives_its_name_away_and_its_owner_hears_why(scored_app, client):
    scored_app.config["ROOM_GRACE_SECONDS"] = 0
    room = create_room(client)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    sock, ack = student(scored_app, code, "Alice")
    sock.disconnect()
    time.sleep(0.01)
    assert join(connect(scored_app), code, "alice")["ok"]  # the seat expired: the name is free
    names = [p["nickname"] for p in players_listed(host)]
    assert names == ["alice"], names  # never two seats with one name
    back = rejoin(connect(scored_app), code, ack["player_token"])
    assert not back["ok"]
    assert "expired" in back["error"] and "join again" in back["error"]


def test_a_seat_within_its_grace_period_keeps_its_name_and_comes_back(scored_app, client):
    room = create_room(client)
    code = room["code"]
    sock, ack = student(scored_app, code, "Alice")
    sock.disconnect()
    taken = join(connect(scored_app), code, "\u0410LICE")
    assert not taken["ok"] and "already called" in taken["error"]
    assert rejoin(connect(scored_app), code, ack["player_token"])["ok"]


# ------------------------------------------------------------------------------ prompt rooms


@pytest.fixture
def parked_scoring(monkeypatch):
    """Prompt scoring that waits until the test lets it go (no model is loaded)."""
    gate = threading.Event()

    def score(session, model, top_k, document_ids):
        gate.wait(30)
        raise RuntimeError("parked")

    monkeypatch.setattr(rooms_routes, "prompt_model", lambda spec, n: None)
    monkeypatch.setattr(rooms_routes, "score_prompt_documents", score)
    yield gate
    gate.set()


def _prompt_room(client, text: str):
    return client.post("/api/rooms", json={"source": "prompts", "prompts": text})


def test_prompt_rooms_are_rate_limited_per_address(scored_app, client, parked_scoring):
    gate = parked_scoring
    codes = []
    for i in range(12):
        res = _prompt_room(client, f"Prompt number {i} is here")
        if res.status_code != 201:
            break
        codes.append(res.get_json()["code"])
    assert res.status_code == 429, res.get_json()
    assert "prompts" in res.get_json()["error"] and "minute" in res.get_json()["error"]
    assert len(codes) == 10
    # Corpus rooms do not count against it.
    assert create_room(client)["status"] == "ready"
    gate.set()
    wait_for_prompt_rooms(20)


def test_prompt_scoring_waiting_in_the_background_is_bounded(scored_app, client, parked_scoring):
    gate = parked_scoring
    scored_app.config["ROOM_PROMPT_QUEUE"] = 4
    first = _prompt_room(client, "One | two\nThree | four")
    second = _prompt_room(client, "Five | six\nSeven | eight")
    assert first.status_code == 201 and second.status_code == 201
    full = _prompt_room(client, "Nine | ten")
    assert full.status_code == 429, full.get_json()
    assert "busy" in full.get_json()["error"] and "try again" in full.get_json()["error"]
    assert full.headers.get("Retry-After")
    with scored_app.app_context():
        assert db.session.scalar(select(func.count(Room.id))) == 2  # nothing half-made
    gate.set()
    wait_for_prompt_rooms(20)
    assert _prompt_room(client, "Nine | ten").status_code == 201


# -------------------------------------------------------------------------- seats and crashes


def test_a_seat_shown_disconnected_after_a_restart_keeps_its_grace_from_the_restart(scored_app, client):
    """After a crash the database still says "connected"; recovery marks the seats away from the
    restart on, so a seat that joined long ago is not expired at once."""
    from webapp.rooms import recovery

    room = create_room(client)
    code = room["code"]
    _, ack = student(scored_app, code, "Old")
    with scored_app.app_context():
        long_ago = datetime.now(UTC) - timedelta(hours=2)
        db.session.execute(update(RoomPlayer).values(joined_at=long_ago, last_seen_at=long_ago))
        db.session.commit()
    recovery.recover(scored_app)
    assert all(not s.connected for s in seats(scored_app, code))
    assert rejoin(connect(scored_app), code, ack["player_token"])["ok"]


def test_local_moving_window_forgets_hits_older_than_its_window(monkeypatch):
    """The in-process limiter (memory://) lets events through again once old hits leave the
    window, and says when that will be."""
    from limits import parse

    now = [1000.0]
    monkeypatch.setattr(guards.time, "time", lambda: now[0])
    windows = guards.LocalMovingWindows()
    item = parse("3 per second")
    assert all(windows.hit(item, "conn", "a") for _ in range(3))
    assert not windows.test(item, "conn", "a") and not windows.hit(item, "conn", "a")
    assert windows.test(item, "conn", "b")  # another key has its own window
    assert windows.get_window_stats(item, "conn", "a").reset_time == 1001.0
    now[0] = 1001.01
    assert windows.test(item, "conn", "a") and windows.hit(item, "conn", "a")


# ------------------------------------------------------------------------ behind a reverse proxy


def scored_app_config(path) -> dict:
    """The settings of conftest's scored_app on another copy of its database (that fixture's
    app is already created; ProxyFix is applied when an app is created)."""
    from support import MODEL_SPEC, TEST_MAX_TOKENS

    return {"DATABASE_URL": f"sqlite:///{path}", "TESTING": True, "SECRET_KEY": "test",
            "MODEL": MODEL_SPEC, "MAX_DOCUMENT_TOKENS": TEST_MAX_TOKENS, "TOP_K": 64,
            "ROOM_ANSWER_BATCH_MS": 0}


@pytest.mark.parametrize("trusted_proxies", [1, 0])
def test_per_address_limits_count_forwarded_clients_only_behind_a_trusted_proxy(
    tmp_path, scored_template, trusted_proxies
):
    """Behind nginx (HUMANLM_TRUSTED_PROXIES=1) each forwarded client has its own join limit, so
    one school's proxy is not one client; without it a forged X-Forwarded-For changes nothing."""
    import shutil

    import socketio as sio_client
    from support import LiveServer

    from webapp.app import create_app

    shutil.copy(scored_template, tmp_path / "proxy.db")
    app = create_app({**scored_app_config(tmp_path / "proxy.db"), "TRUSTED_PROXIES": trusted_proxies,
                      "ROOM_JOIN_LIMITS_PER_ADDRESS": "2 per minute"})
    server = LiveServer(app).start()
    clients = []
    try:
        code = app.test_client().post(
            "/api/rooms", json={"source": "corpus", "corpus": "tests", "rounds": 1}
        ).get_json()["code"]

        def join_from(address: str, nickname: str) -> dict:
            client = sio_client.Client(reconnection=False)
            client.connect(server.url, transports=["polling"], wait_timeout=10,
                           headers={"X-Forwarded-For": address})
            clients.append(client)
            return client.call("join", {"code": code, "nickname": nickname}, timeout=10)

        first = [join_from("10.0.0.1", f"a{i}")["ok"] for i in range(3)]
        other = join_from("10.0.0.2", "b0")
        if trusted_proxies:
            assert first == [True, True, False]
            assert other["ok"], other  # another client behind the same proxy
        else:
            assert first == [True, True, False]
            assert not other["ok"] and "from your network" in other["error"]  # forged header
    finally:
        for client in clients:
            client.disconnect()
        server.stop()
