"""Socket.IO events of classroom rooms. Thin: check the payload, call commands.py, broadcast
what views.py builds.

Socket.IO rooms used for broadcasts: `host:<CODE>` (the projector), `room:<CODE>` (every
student) and `player:<seat id>` (one student). With SOCKETIO_MESSAGE_QUEUE set, emits travel
through the queue, so a host connected to one server process hears students on another.

Every event answers with an acknowledgement {"ok": true, ...} or {"ok": false, "error": ...};
a refused event also emits `room_error` to the sender, stores nothing (the session is rolled
back) and leaves the connection usable. The protocol is documented in docs/rooms-protocol.md.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import current_app, request
from flask_socketio import emit, join_room
from pydantic import Field

from .. import answers, game, jobs
from ..answers import AnswerRefused, DbInt, Payload, RoomAnswerIn, SafeStr
from ..api import MAX_JSON_DEPTH, json_depth
from ..extensions import db, socketio
from ..lm import load_tokenizer
from ..models import Room, RoomPlayer
from . import commands, recovery, views
from .guards import RateLimited, guards_of
from .state import Phase, RoomRuleError

MAX_PAYLOAD_BYTES = 4096


@dataclass
class Connection:
    """Who is on the other end of one Socket.IO connection (kept in this process's memory: a
    connection always stays on the process it was opened on)."""

    room_id: int
    code: str
    role: str  # host | student
    seat_id: int | None = None
    nickname: str = ""
    since: datetime | None = None  # when this connection took the seat (its last_seen_at then)


_connections: dict[str, Connection] = {}
_connections_lock = threading.Lock()


def _tokenizer():
    return load_tokenizer(current_app.config["MODEL"])


def pair_secret() -> bytes:
    """The server's secret, which keys the pair a pairwise room's class judges (as in the solo
    game: nobody can tell the original's side from the scheme without it)."""
    return str(current_app.config["SECRET_KEY"]).encode()


def grace_seconds() -> int:
    return current_app.config["ROOM_GRACE_SECONDS"]


def _guards():
    return guards_of(current_app)


def _limit(event: str) -> None:
    """Count one `event` from this connection and its client address (RateLimited if over)."""
    _guards().check(event, request.sid, request.remote_addr)


def host_view(room: Room, scored=None) -> dict:
    """The projector's HostState."""
    return views.host_state(db.session, room, _tokenizer(), room.join_url, scored, secret=pair_secret())


# ------------------------------------------------------------------------------ broadcasting


def broadcast_state(room: Room, *, students: bool = True, with_feedback: bool = False) -> None:
    """Send the host its full state and (optionally) every student the public state."""
    session, tokenizer, secret = db.session, _tokenizer(), pair_secret()
    scored = views.shown_answers(session, room)  # once for all three views
    socketio.emit("host_state", host_view(room, scored), to=f"host:{room.code}")
    if students:
        socketio.emit(
            "room_state", views.public_state(session, room, tokenizer, scored, secret=secret),
            to=f"room:{room.code}",
        )
    if with_feedback:
        for seat_id, payload in views.feedback(session, room, tokenizer, scored, secret=secret).items():
            socketio.emit("feedback", payload, to=f"player:{seat_id}")


def broadcast_answers(room: Room) -> None:
    socketio.emit(
        "answers", views.answers_view(db.session, room, _tokenizer()), to=f"host:{room.code}"
    )


_answers_pending: set[str] = set()
_answers_lock = threading.Lock()


def schedule_answers(code: str) -> None:
    """Tell the host about new answers, batching those that arrive together.

    Why: when a whole class answers within a second, recounting and re-sending the host's view
    once per answer makes the last answers wait behind hundreds of recounts. Instead one update
    per room is pending at a time; it clears its flag *before* counting, so an answer committed
    before the count is in it, and an answer committed after the flag was cleared schedules the
    next update: none is ever left out. ROOM_ANSWER_BATCH_MS = 0 sends at once, inline.
    """
    batch_ms = current_app.config["ROOM_ANSWER_BATCH_MS"]
    if batch_ms <= 0:
        broadcast_answers(commands.get_room(db.session, code))
        return
    with _answers_lock:
        if code in _answers_pending:
            return
        _answers_pending.add(code)
    socketio.start_background_task(
        _send_batched_answers, current_app._get_current_object(), code, batch_ms / 1000
    )


def _send_batched_answers(app, code: str, delay: float) -> None:
    socketio.sleep(delay)
    with _answers_lock:
        _answers_pending.discard(code)
    with app.app_context():
        try:
            broadcast_answers(commands.get_room(db.session, code))
        except Exception:
            app.logger.exception("sending the answer count of room %s failed", code)
        finally:
            db.session.remove()


# ------------------------------------------------------------------------------ event plumbing


def _payload(raw: Any) -> dict:
    if not isinstance(raw, dict):
        raise RoomRuleError("send one JSON object with the event")
    try:
        size = len(json.dumps(raw))
    except (TypeError, ValueError, RecursionError):
        raise RoomRuleError("the payload is not plain JSON (or it is nested too deeply)") from None
    if size > MAX_PAYLOAD_BYTES:
        raise RoomRuleError(f"the payload is too large ({size} bytes; at most {MAX_PAYLOAD_BYTES})")
    if json_depth(raw, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise RoomRuleError(f"the payload is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
    return raw


class RoomEvent(Payload):
    """Every room event names its room by join code."""

    code: SafeStr = Field(max_length=40)


class HostJoinIn(RoomEvent):
    host_token: SafeStr = Field(max_length=100)


class HostActionIn(RoomEvent):
    action: SafeStr = Field(max_length=20, description="start | lock | reveal | next | finish")


class HostSettingsIn(RoomEvent):
    show_histogram: bool | None = None
    show_leaderboard: bool | None = None
    joins_locked: bool | None = Field(
        default=None, description="true: nobody new may join (seats still come back)"
    )
    timer_seconds: DbInt | None = Field(default=None, description="seconds per round; 0 or null: off")


class HostRemoveIn(RoomEvent):
    player_id: DbInt = Field(description="the seat to remove (the id in the host's player list)")


class JoinIn(RoomEvent):
    nickname: SafeStr = Field(max_length=200)


class RejoinIn(RoomEvent):
    player_token: SafeStr = Field(max_length=100)


EVENT_PAYLOADS: dict[str, type[Payload]] = {
    "host_join": HostJoinIn, "host_action": HostActionIn, "host_settings": HostSettingsIn,
    "host_remove": HostRemoveIn, "join": JoinIn, "rejoin": RejoinIn, "guess": RoomAnswerIn,
}


def room_event(name: str) -> Callable:
    """Register a handler for an event whose payload EVENT_PAYLOADS declares; the handler gets
    the validated payload. Rule violations and crashes become an error reply, never a 500."""
    model = EVENT_PAYLOADS[name]

    def decorate(fn: Callable[[Any], dict | None]) -> Callable:
        def handler(raw: Any = None, *_extra: Any) -> dict:
            try:
                data = answers.parse(
                    model, _payload(raw), max_chars=current_app.config["MAX_GUESS_CHARS"]
                )
                return {"ok": True, **(fn(data) or {})}
            except (RoomRuleError, AnswerRefused) as exc:
                db.session.rollback()
                message = exc.message
                # A refusal for going too fast says when to try again.
                extra = {"retry_after": exc.retry_after} if isinstance(exc, RateLimited) else {}
            except Exception:  # a bug: log it, tell the user nothing was stored
                current_app.logger.exception("room event %s failed", name)
                db.session.rollback()
                message = "something went wrong on the server; nothing was stored"
                extra = {}
            finally:
                db.session.remove()
            emit("room_error", {"event": name, "message": message, **extra})
            return {"ok": False, "error": message, **extra}

        socketio.on_event(name, handler)
        return fn

    return decorate


def _room_of(data: RoomEvent) -> Room:
    return commands.get_room(db.session, data.code)


def _hosted_room(data: RoomEvent) -> Room:
    room = _room_of(data)
    conn = _connections.get(request.sid)
    if conn is None or conn.role != "host" or conn.room_id != room.id:
        raise RoomRuleError("only the host of this room can do that")
    return room


def _remember(conn: Connection) -> None:
    with _connections_lock:
        _connections[request.sid] = conn


# ------------------------------------------------------------------------------ host events


@room_event("host_join")
def host_join(data: HostJoinIn) -> dict:
    room = _room_of(data)
    commands.check_host(room, data.host_token)
    conn = _connections.get(request.sid)
    if conn is not None and conn.role == "student":
        raise RoomRuleError("this connection is a player's; open the host page in its own tab")
    join_room(f"host:{room.code}")
    _remember(Connection(room.id, room.code, "host"))
    return {"state": host_view(room)}


@room_event("host_action")
def host_action(data: HostActionIn) -> dict:
    room = _hosted_room(data)
    phase = commands.apply_action(db.session, room, data.action)
    broadcast_state(room, with_feedback=phase == Phase.REVEAL)
    if phase == Phase.ANSWERING and room.deadline is not None:
        schedule_lock(current_app._get_current_object(), room)
    return {"phase": phase.value}


@room_event("host_settings")
def host_settings(data: HostSettingsIn) -> dict:
    room = _hosted_room(data)
    change = data.model_dump(exclude_unset=True)
    commands.update_settings(db.session, room, change)
    broadcast_state(room, students="show_leaderboard" in change)
    return {}


@room_event("host_remove")
def host_remove(data: HostRemoveIn) -> dict:
    room = _hosted_room(data)
    seat = commands.remove_player(db.session, room, data.player_id)
    socketio.emit(
        "removed", {"message": "The host removed you from this room."}, to=f"player:{seat.id}"
    )
    broadcast_state(room)
    return {}


def schedule_lock(app, room: Room) -> None:
    """Start the timer of the room's open round (a background task of this process)."""
    socketio.start_background_task(
        _lock_when_due, app, room.code, room.round_index, room.deadline
    )


def _lock_when_due(app, code: str, round_index: int, deadline: datetime) -> None:
    """The round timer: lock the round at its deadline unless the host already moved on."""
    socketio.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.05)
    with app.app_context():
        try:
            room = commands.get_room(db.session, code)
            if room.phase == Phase.ANSWERING.value and room.round_index == round_index:
                commands.apply_action(db.session, room, "lock")
                broadcast_state(room)
        except RoomRuleError:
            db.session.rollback()  # the host (or another worker) locked first
        finally:
            db.session.remove()


# ---------------------------------------------------------------------------- student events


def _seat_joined(room: Room, seat: RoomPlayer) -> dict:
    join_room(f"room:{room.code}")
    join_room(f"player:{seat.id}")
    _remember(Connection(room.id, room.code, "student", seat.id, seat.nickname, seat.last_seen_at))
    broadcast_state(room, students=False)  # the host's player list
    return views.student_state(db.session, room, seat, _tokenizer(), secret=pair_secret())


def _held_here() -> Connection | None:
    """The seat (or projector) this connection already holds; a seat the host removed is
    released, so its phone may join again."""
    conn = _connections.get(request.sid)
    if conn is None or conn.role != "student":
        return conn
    seat = db.session.get(RoomPlayer, conn.seat_id)
    return None if seat is None or seat.removed else conn


def _one_seat(conn: Connection) -> RoomRuleError:
    if conn.role == "host":
        return RoomRuleError("this connection is the room's projector; join from a phone or another tab")
    return RoomRuleError(
        f"this connection already has a seat, as {conn.nickname!r} in room {conn.code}: "
        "one connection, one player (reload the page to start over)"
    )


@room_event("join")
def join(data: JoinIn) -> dict:
    _limit("join")
    room = _room_of(data)
    held = _held_here()
    seat, token = commands.join(
        db.session, room, data.nickname, grace_seconds(), joins_locked=room.joins_locked,
        one_seat=None if held is None else _one_seat(held),
    )
    state = _seat_joined(room, seat)
    return {"player_token": token, "player_id": seat.id, "state": state}


@room_event("rejoin")
def rejoin(data: RejoinIn) -> dict:
    room = _room_of(data)
    held = _held_here()
    seat = commands.rejoin(
        db.session, room, data.player_token, grace_seconds(),
        one_seat=None if held is None else _one_seat(held),
        own_seat=held.seat_id if held is not None else None,
    )
    return {"player_id": seat.id, "state": _seat_joined(room, seat)}


@room_event("guess")
def guess(data: RoomAnswerIn) -> dict:
    received_at = datetime.now(UTC)
    _limit("guess")
    conn = _connections.get(request.sid)
    if conn is None or conn.role != "student":
        commands.get_room(db.session, data.code)  # an unknown room is named as such
        raise RoomRuleError("join the room before answering")
    seat = commands.answering_seat(db.session, data.code, conn.seat_id)
    tokenizer = _tokenizer()
    result = answers.submit(
        db.session, commands.RoomPolicy(seat, received_at, pair_secret()), data,
        player_id=seat.player_id, tokenizer=tokenizer, received_at=received_at,
        write_lock=db.write_lock,
    )
    if not result.replayed:
        schedule_answers(seat.code)
        jobs.ask_for_model_numbers(current_app._get_current_object(), result.guess)
    stored = result.guess
    return {
        "duplicate": result.replayed,
        "answer": {
            **views.my_answer_view(stored),
            "tokens": [game.token_view(t, tokenizer) for t in stored.token_ids],
        },
    }


@socketio.on("connect")
def connect(*_args: Any) -> None:
    """The first connection after a (re)start runs the recovery (recovery.py) before any event."""
    recovery.ensure(current_app._get_current_object())


@socketio.on("disconnect")
def disconnect(*_args: Any) -> None:
    with _connections_lock:
        conn = _connections.pop(request.sid, None)
    if conn is None or conn.role != "student":
        return
    try:
        # Only if no newer connection (a phone on a new network) took the seat meanwhile.
        if commands.set_disconnected(db.session, conn.seat_id, conn.since):
            room = db.session.get(Room, conn.room_id)
            if room is not None:
                broadcast_state(room, students=False)
    finally:
        db.session.remove()
