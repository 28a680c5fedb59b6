"""The fault run: `kill -9` a real `humanlm serve` in the middle of timed rounds, start it again on
the same SQLite file, and check that every round deadline is still honoured and that the seats
read away until their phones come back (issue 12, the crash part)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from support import MODEL_SPEC, SERVE_COMMAND, free_port
from test_rooms_multiprocess import Listener, _post


class Server:
    """`humanlm serve` (gunicorn master + worker) in its own process group, so `kill -9` of the
    group is a crash of the whole server: no handler, no clean-up, no goodbye to the phones."""

    def __init__(self, db_file: Path, port: int, log: Path) -> None:
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{db_file}", "HUMANLM_PORT": str(port),
               "HUMANLM_SECRET_KEY": "crash-test", "HUMANLM_MODEL": MODEL_SPEC}
        env.pop("SOCKETIO_MESSAGE_QUEUE", None)
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("a") as out:
            self.proc = subprocess.Popen(
                SERVE_COMMAND, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def wait_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                urllib.request.urlopen(f"{self.url}/", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("server did not start: " + self.log.read_text()[-3000:])

    def kill_9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def _rows(db_file: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(db_file) as conn:
        return conn.execute(sql, args).fetchall()


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _deadline(host: Listener) -> datetime:
    state = host.wait_for("host_state", lambda s: s["phase"] == "answering" and s["round"])
    return datetime.fromisoformat(state["round"]["deadline"])


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as res:
        return json.loads(res.read())


def test_round_deadlines_and_seats_survive_kill_9(scored_template, tmp_path):
    db_file = tmp_path / "crash.db"
    shutil.copy(scored_template, db_file)
    port = free_port()
    log = tmp_path / "server.log"
    server = Server(db_file, port, log)
    listeners: list[Listener] = []
    try:
        server.wait_ready()
        body = {"source": "corpus", "corpus": "tests", "rounds": 2}
        # Room A's deadline passes while the server is down; room B's comes after the restart.
        room_a = _post(f"{server.url}/api/rooms", {**body, "timer_seconds": 5})
        room_b = _post(f"{server.url}/api/rooms", {**body, "timer_seconds": 30})
        hosts = {}
        for name, room in (("a", room_a), ("b", room_b)):
            host = Listener(server.url)
            listeners.append(host)
            assert host.call("host_join", {"code": room["code"], "host_token": room["host_token"]})["ok"]
            hosts[name] = host
        tokens = {}
        for room, nickname in ((room_a, "Ann"), (room_a, "Ben"), (room_b, "Cal")):
            phone = Listener(server.url)
            listeners.append(phone)
            ack = phone.call("join", {"code": room["code"], "nickname": nickname})
            assert ack["ok"], ack
            tokens[nickname] = (phone, ack["player_token"])
        for name, room in (("a", room_a), ("b", room_b)):
            assert hosts[name].call("host_action", {"code": room["code"], "action": "start"})["ok"]
        deadline_a, deadline_b = _deadline(hosts["a"]), _deadline(hosts["b"])
        cal, cal_token = tokens["Cal"]
        guess = {"code": room_b["code"], "round": 0, "text": " the", "client_key": "cal-key-0001"}
        assert cal.call("guess", guess)["ok"]

        server.kill_9()
        for listener in listeners:
            listener.sio.disconnect()
        listeners.clear()
        # What the crash left behind: open rounds and seats that still read connected.
        assert {r[0] for r in _rows(db_file, "SELECT phase FROM rooms")} == {"answering"}
        assert {r[0] for r in _rows(db_file, "SELECT connected FROM room_players")} == {1}

        time.sleep(max(0.0, (deadline_a - datetime.now(UTC)).total_seconds()) + 0.5)
        assert datetime.now(UTC) < deadline_b
        server = Server(db_file, port, log)
        server.wait_ready()

        # Room A: its deadline passed while the server was down, so it is locked, at its deadline.
        assert _get(f"{server.url}/api/rooms/{room_a['code']}")["phase"] == "locked"
        (locked_a,), = _rows(
            db_file, "SELECT rr.locked_at FROM room_rounds rr JOIN rooms r ON r.id = rr.room_id "
            "WHERE r.code = ? AND rr.\"index\" = 0", room_a["code"])
        assert _when(locked_a) == deadline_a

        # The projectors come back by themselves (host_join) and see every seat away.
        host_a, host_b = Listener(server.url), Listener(server.url)
        listeners += [host_a, host_b]
        state_a = host_a.call("host_join", {"code": room_a["code"], "host_token": room_a["host_token"]})
        state_b = host_b.call("host_join", {"code": room_b["code"], "host_token": room_b["host_token"]})
        assert state_a["state"]["phase"] == "locked"
        assert [p["connected"] for p in state_a["state"]["players"]] == [False, False]
        assert state_b["state"]["phase"] == "answering"
        assert state_b["state"]["round"]["deadline"] == deadline_b.isoformat()
        assert [p["connected"] for p in state_b["state"]["players"]] == [False]
        assert state_b["state"]["answers"]["answered"] == 1  # the answer stored before the crash

        # A phone that returns gets its seat back and reads connected again.
        phone = Listener(server.url)
        listeners.append(phone)
        back = phone.call("rejoin", {"code": room_b["code"], "player_token": cal_token})
        assert back["ok"] and back["state"]["answered"] is True
        host_b.wait_for("host_state", lambda s: s["players"][0]["connected"] is True)

        # Room B locks at its deadline with nobody pressing anything.
        locked = host_b.wait_for("host_state", lambda s: s["phase"] == "locked", seconds=40)
        assert datetime.now(UTC) >= deadline_b
        assert locked["round"]["index"] == 0
        phone.wait_for("room_state", lambda s: s["phase"] == "locked")
        (locked_b,), = _rows(
            db_file, "SELECT rr.locked_at FROM room_rounds rr JOIN rooms r ON r.id = rr.room_id "
            "WHERE r.code = ? AND rr.\"index\" = 0", room_b["code"])
        assert 0 <= (_when(locked_b) - deadline_b).total_seconds() < 2
    finally:
        for listener in listeners:
            listener.sio.disconnect()  # a no-op once the server is gone
        server.stop()
    output = log.read_text()
    assert "Traceback" not in output, output[-3000:]
