"""After a crash: what the dead process can no longer do is done by the new one.

A server process that dies (kill -9, a power cut, an out-of-memory kill) leaves behind a database
that says its seats are connected, and rounds open with a deadline whose timer died with it; a
room whose prompts were being scored stays "preparing". The first request or Socket.IO
connection a process handles runs `recover` once, before anything else is answered:

- every round still answering with a deadline is locked: at once (stamped at its deadline) when
  the deadline passed while the server was down, else by a new timer at the deadline, so no host
  has to press anything and no screen ever shows an open round past its time;
- with one server process (no SOCKETIO_MESSAGE_QUEUE), every seat reads away until its phone
  comes back, and its grace period counts from the restart; rooms whose prompts were being
  scored are scored again. With several processes neither is done: the other processes still
  hold their connections and their scoring.

Why on first contact rather than at process start: `humanlm serve` creates the app in gunicorn's
master and serves it from a forked worker, so no start-up hook runs in the serving process. The
phones and the projector reconnect within seconds of a restart (their Socket.IO clients retry),
and whoever comes first never sees the state before recovery.
"""

from __future__ import annotations

import os
import threading

from flask import current_app
from sqlalchemy import select

from ..extensions import db
from ..models import Item, Room, RoomRound, RoomStatus, utcnow
from . import bp, commands
from .state import Phase, RoomRuleError

_KEY = "humanlm_rooms_recovered"
_lock = threading.Lock()


def ensure(app) -> None:
    """Run `recover` once per app and process (the pid: a forked worker recovers for itself)."""
    if app.extensions.get(_KEY) == os.getpid():
        return
    with _lock:
        if app.extensions.get(_KEY) == os.getpid():
            return
        try:
            recover(app)
        except Exception:  # never refuse a connection over it; say so in the log
            app.logger.exception("recovering rooms after a restart failed")
        app.extensions[_KEY] = os.getpid()


@bp.before_app_request
def _recover_on_first_request() -> None:
    ensure(current_app._get_current_object())


def recover(app) -> dict:
    """Lock overdue rounds, time the others, mark seats away; returns what it did (for logs)."""
    from .events import broadcast_state, schedule_lock
    from .routes import start_preparing

    done = {"seats_away": 0, "locked": [], "timed": [], "preparing": []}
    with app.app_context():
        session = db.session
        try:
            single = not app.config.get("SOCKETIO_MESSAGE_QUEUE")
            if single:
                done["seats_away"] = commands.mark_all_away(session)
            now = utcnow()
            open_rounds = session.scalars(
                select(Room).where(Room.phase == Phase.ANSWERING.value, Room.deadline.is_not(None))
            ).all()
            for room in open_rounds:
                if room.deadline <= now:
                    try:
                        commands.apply_action(session, room, "lock", now=room.deadline)
                    except RoomRuleError:
                        session.rollback()  # another process locked it first
                        continue
                    broadcast_state(room)
                    done["locked"].append(room.code)
                else:
                    schedule_lock(app, room)
                    done["timed"].append(room.code)
            if single:
                for room in session.scalars(select(Room).where(Room.status == RoomStatus.PREPARING)):
                    documents = sorted(set(session.scalars(
                        select(Item.document_id).join(RoomRound, RoomRound.item_id == Item.id)
                        .where(RoomRound.room_id == room.id)
                    )))
                    start_preparing(app, room.id, documents, reserved=0)
                    done["preparing"].append(room.code)
        finally:
            session.remove()
    if done["seats_away"] or done["locked"] or done["timed"] or done["preparing"]:
        app.logger.warning("rooms recovered after a restart: %s", done)
    return done
