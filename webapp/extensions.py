"""Shared extension objects: the database (SQLAlchemy 2 engine + scoped session), Socket.IO and
the rate limiter.

The database object is configured by create_app() or by the CLI, so plain functions (corpus
import, scoring) can use a session without a Flask app.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import simple_websocket
from engineio.async_drivers._websocket_wsgi import SimpleWebSocketWSGI
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_socketio import SocketIO
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, scoped_session, sessionmaker
from wsproto.utilities import LocalProtocolError


class Database:
    """One engine and one thread-local session factory per configured URL."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.url: str | None = None
        self._factory = sessionmaker(expire_on_commit=False)
        self.session = scoped_session(self._factory)
        self._sqlite_write_lock = threading.Lock()

    def configure(self, url: str, echo: bool = False) -> Engine:
        if self.engine is not None and self.url == url:
            return self.engine
        self.dispose()
        kwargs: dict = {"echo": echo}
        if url.startswith("sqlite"):
            path = url.split("sqlite:///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(engine, "connect", _sqlite_pragmas)
        self.engine, self.url = engine, url
        self._factory.configure(bind=engine)
        return engine

    def dispose(self) -> None:
        self.session.remove()
        if self.engine is not None:
            self.engine.dispose()
        self.engine, self.url = None, None

    def write_lock(self) -> contextlib.AbstractContextManager:
        """Serialise this process's short write transactions on SQLite; a no-op elsewhere.

        Why: SQLite allows one writer at a time and makes the others sleep-and-retry with growing
        back-off, so a burst of concurrent writes (a class answering at once) spends most of its
        time asleep. Queuing on a Python lock instead hands the database over immediately.
        """
        if self.url is not None and self.url.startswith("sqlite"):
            return self._sqlite_write_lock
        return contextlib.nullcontext()

    def new_session(self) -> Session:
        """A session not tied to the current thread (background jobs, CLI loops)."""
        return self._factory()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


db = Database()
# Threading mode always: under `humanlm serve`'s gevent worker the patched threads are greenlets
# (webapp/launch.py); auto-detection would pick gevent's mode in unpatched processes too.
socketio = SocketIO(async_mode="threading")


class PeerSafeWebSocket(SimpleWebSocketWSGI):
    """Engine.IO's WebSocket for its threading mode, whose close() accepts that the phone has
    already hung up.

    Why: when a phone leaves, Engine.IO's writer closes the WebSocket after its last packet while
    simple-websocket's reader closes the same socket because the phone went away. The writer
    checks that the connection is open, then sends its goodbye; when the reader closes the socket
    in between, the send raised EBADF in a thread of its own, a traceback in the server's log for
    an ordinary goodbye (seen under gunicorn's gthread worker). Nobody is left to tell; the
    connection counts as closed from then on.
    """

    def close(self) -> None:
        try:
            super().close()
        except (OSError, simple_websocket.ConnectionClosed, LocalProtocolError):
            self.ws.connected = False


def use_peer_safe_websockets(server) -> None:
    """Serve this Socket.IO server's WebSockets with PeerSafeWebSocket (its own copy of the
    driver table: the table Engine.IO imports is shared by every server in the process)."""
    server.eio._async = {**server.eio._async, "websocket": PeerSafeWebSocket}


# Rate limits are declared on the routes that need them (no default limit on every request).
limiter = Limiter(key_func=get_remote_address, default_limits=[], headers_enabled=True)


def rate_limit_storage(config) -> str:
    """The counters' store: the explicit setting, else the Socket.IO queue's Redis, else memory."""
    if config.get("RATE_LIMIT_STORAGE"):
        return config["RATE_LIMIT_STORAGE"]
    queue = config.get("SOCKETIO_MESSAGE_QUEUE") or ""
    return queue if queue.startswith(("redis://", "rediss://")) else "memory://"
