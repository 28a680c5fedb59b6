"""Two real server processes serve one room through PostgreSQL and a Redis message queue.

The host's projector is connected to process A, the students' phones to process B: every
broadcast must cross processes through Redis, and every answer must land in PostgreSQL.
Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (`.ci/run` makes sure they are up;
in CI a skip counts as a failure, see conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from support import MODEL_SPEC, SERVE_COMMAND, free_port

REDIS_URL = "redis://127.0.0.1:6379/0"


class ServerProcess:
    """`humanlm serve` in its own process, on a free port, sharing the database and the queue."""

    def __init__(self, database_url: str, tmp: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SOCKETIO_MESSAGE_QUEUE": REDIS_URL,
            "HUMANLM_SECRET_KEY": "multiprocess-test",
            "HUMANLM_MODEL": MODEL_SPEC,
            "HUMANLM_PORT": str(self.port),
        }
        self.log = open(tmp / f"server-{name}.log", "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            SERVE_COMMAND, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/api/rooms/ZZZZZ", timeout=1)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Listener:
    """A python-socketio client that records every event it receives."""

    def __init__(self, url: str) -> None:
        import socketio

        self.received: list[tuple[str, dict]] = []
        self.cond = threading.Condition()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("*", self._record)
        self.sio.connect(url, transports=["websocket"], wait_timeout=10)

    def _record(self, event: str, data=None) -> None:
        with self.cond:
            self.received.append((event, data))
            self.cond.notify_all()

    def call(self, event: str, data: dict) -> dict:
        return self.sio.call(event, data, timeout=15)

    def wait_for(self, event: str, check, seconds: float = 15) -> dict:
        deadline = time.monotonic() + seconds
        with self.cond:
            while True:
                for name, data in self.received:
                    if name == event and check(data):
                        return data
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {event} matching the check; got {[n for n, _ in self.received]}")
                self.cond.wait(left)


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as res:
        return json.loads(res.read())


def test_two_processes_serve_one_room_through_redis_and_postgres(pg_url, tmp_path):
    a = ServerProcess(pg_url, tmp_path, "a")
    b = ServerProcess(pg_url, tmp_path, "b")
    clients: list[Listener] = []
    try:
        a.wait_ready()
        b.wait_ready()
        room = _post(f"{a.url}/api/rooms", {"source": "corpus", "corpus": "tests", "rounds": 1})
        code = room["code"]

        host = Listener(a.url)
        clients.append(host)
        assert host.call("host_join", {"code": code, "host_token": room["host_token"]})["ok"]

        students = []
        for name in ("Ana", "Ben", "Cleo"):
            s = Listener(b.url)
            clients.append(s)
            ack = s.call("join", {"code": code, "nickname": name})
            assert ack["ok"], ack
            students.append(s)
        # The host on A hears the joins made on B.
        host.wait_for("host_state", lambda st: len(st["players"]) == 3)

        assert host.call("host_action", {"code": code, "action": "start"})["ok"]
        for s in students:  # the start made on A reaches the phones on B
            s.wait_for("room_state", lambda st: st["phase"] == "answering")

        for i, (s, text) in enumerate(zip(students, [" sun", " sun", " moon"])):
            ack = s.call("guess", {"code": code, "round": 0, "text": text, "skipped": False,
                                   "client_key": f"mp-key-{i:04d}"})
            assert ack["ok"], ack
            host.wait_for("answers", lambda ans, n=i + 1: ans["answered"] == n)
        counts = host.wait_for("answers", lambda ans: ans["answered"] == 3)
        assert sorted(r["count"] for r in counts["histogram"]) == [1, 2]

        assert host.call("host_action", {"code": code, "action": "lock"})["ok"]
        assert host.call("host_action", {"code": code, "action": "reveal"})["ok"]
        for s, text in zip(students, [" sun", " sun", " moon"]):
            fb = s.wait_for("feedback", lambda f: True)
            assert fb["your_text"] == text
        reveal = host.wait_for("host_state", lambda st: st["phase"] == "reveal")["reveal"]
        assert reveal["answered"] == 3

        # Every answer is in PostgreSQL, with the room id.
        from sqlalchemy import create_engine, text

        engine = create_engine(pg_url)
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT g.raw_text FROM guesses g JOIN rooms r ON r.id = g.room_id WHERE r.code = :c"),
                {"c": code},
            ).scalars().all()
        engine.dispose()
        assert sorted(rows) == [" moon", " sun", " sun"]
    finally:
        for c in clients:
            c.sio.disconnect()
        a.stop()
        b.stop()
