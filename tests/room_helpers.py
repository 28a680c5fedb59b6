"""Helpers shared by the room tests: create a room over HTTP and drive it with Socket.IO test
clients (a host and students) on the real app and the database scored by the real model."""

from __future__ import annotations

from webapp.extensions import socketio


def create_room(client, **body) -> dict:
    """POST /api/rooms from the test corpus (2 rounds unless `rounds` says otherwise)."""
    payload = {"source": "corpus", "corpus": "tests", "rounds": 2, **body}
    res = client.post("/api/rooms", json=payload)
    assert res.status_code == 201, res.get_json()
    return res.get_json()


def connect(app):
    return socketio.test_client(app, flask_test_client=app.test_client())


def events(sock, name: str) -> list:
    return [m["args"][0] for m in sock.get_received() if m["name"] == name]


def host_of(app, room: dict):
    host = connect(app)
    ack = host.emit("host_join", {"code": room["code"], "host_token": room["host_token"]}, callback=True)
    assert ack["ok"], ack
    return host, ack["state"]


def student(app, code: str, nickname: str):
    sock = connect(app)
    ack = sock.emit("join", {"code": code, "nickname": nickname}, callback=True)
    assert ack["ok"], ack
    return sock, ack


def act(host, code: str, action: str) -> dict:
    ack = host.emit("host_action", {"code": code, "action": action}, callback=True)
    assert ack["ok"], ack
    return ack


def guess(sock, code: str, text: str, key: str, round_index: int = 0, **extra) -> dict:
    return sock.emit(
        "guess",
        {"code": code, "round": round_index, "text": text, "skipped": False, "client_key": key, **extra},
        callback=True,
    )
