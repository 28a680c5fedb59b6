"""`humanlm serve` runs a production server (gunicorn, one gevent worker by default, gthread on
request) that serves pages, long-polling and WebSocket Socket.IO, without the development
server's warning or a version banner. (tests/test_green.py: long C work on native threads.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

import psutil
import pytest
from support import MODEL_SPEC, SERVE_COMMAND, free_port

from webapp.launch import serves_green


def _env(db_file, port: int, **extra: str) -> dict:
    return {**os.environ, "DATABASE_URL": f"sqlite:///{db_file}", "HUMANLM_PORT": str(port),
            "HUMANLM_SECRET_KEY": "serve-test", "HUMANLM_MODEL": MODEL_SPEC, **extra}


@contextmanager
def served(scored_template, tmp_path, **extra: str):
    """A real `humanlm serve` on a copy of the scored database: yields (url, process, log)."""
    db_file = tmp_path / "serve.db"
    shutil.copy(scored_template, db_file)
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(SERVE_COMMAND,
                                env=_env(db_file, port, **extra), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    children: list[psutil.Process] = []
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(url + "/", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError(log.read_text())
        children = psutil.Process(proc.pid).children(recursive=True)
        yield url, proc, log
    finally:
        proc.kill()  # even kill -9 of the server takes its job process down with it
        proc.wait(timeout=30)
        for child in children:  # the gunicorn worker notices its master is gone within a second
            if child.is_running():
                child.kill()


def _web_worker(proc: subprocess.Popen) -> psutil.Process:
    children = psutil.Process(proc.pid).children(recursive=True)
    workers = [c for c in children if "worker" not in c.cmdline()]
    assert len(workers) == 1, [c.cmdline() for c in children]
    return workers[0]


@pytest.mark.parametrize("worker", ["gevent", "gthread"])
def test_serve_runs_gunicorn_with_websockets(scored_template, tmp_path, worker):
    import socketio

    with served(scored_template, tmp_path, HUMANLM_SERVER_WORKER=worker) as (url, proc, log):
        page = urllib.request.urlopen(url + "/", timeout=5)
        assert page.status == 200
        assert page.headers.get("Server", "") in ("", "gunicorn"), page.headers.get("Server")
        for transports in (["websocket"], ["polling"]):
            client = socketio.Client(reconnection=False)
            client.connect(url, transports=transports, wait_timeout=10)
            ack = client.call("join", {"code": "ZZZZZ", "nickname": "Ada"}, timeout=10)
            assert ack["ok"] is False and "there is no room" in ack["error"]
            assert client.transport() == transports[0]
            client.disconnect()
        # 20 phones hold 20 WebSockets: OS threads under gthread (each holds a few), greenlets
        # of one thread (plus gevent's small pool) under gevent.
        phones = [socketio.Client(reconnection=False) for _ in range(20)]
        for phone in phones:
            phone.connect(url, transports=["websocket"], wait_timeout=10)
        threads = _web_worker(proc).num_threads()
        for phone in phones:
            phone.disconnect()
        if worker == "gevent":
            assert threads < 10, threads
        else:
            assert threads >= 20, threads
        # The background jobs run in a process of their own, never in the web worker.
        children = psutil.Process(proc.pid).children(recursive=True)
        job_processes = [c for c in children if "worker" in c.cmdline()]
        assert len(job_processes) == 1, [c.cmdline() for c in children]
    psutil.wait_procs(job_processes, timeout=20)
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in job_processes)
    output = log.read_text()
    assert "development server" not in output.lower(), output
    assert "Traceback" not in output, output
    assert "[WARNING]" not in output, output  # e.g. gthread with no room for keep-alive
    assert "MonkeyPatchWarning" not in output, output  # patched before anything imported ssl


def test_gevent_server_scores_a_teachers_prompts(scored_template, tmp_path):
    """Prompt rooms are scored by llama.cpp inside the web worker: under gevent on a native
    thread (webapp/green.py). The room becomes ready with the model's numbers."""
    with served(scored_template, tmp_path) as (url, _proc, log):
        body = json.dumps({"source": "prompts", "prompts": "The capital of France is | Paris"}).encode()
        req = urllib.request.Request(f"{url}/api/rooms", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as res:
            room = json.loads(res.read())
        assert room["status"] == "preparing"
        for _ in range(300):
            with urllib.request.urlopen(f"{url}/api/rooms/{room['code']}", timeout=5) as res:
                status = json.loads(res.read())["status"]
            if status != "preparing":
                break
            time.sleep(0.1)
        assert status == "ready", log.read_text()
    assert "Traceback" not in log.read_text()


def test_serve_refuses_an_unknown_worker_class(scored_template, tmp_path):
    db_file = tmp_path / "serve.db"
    shutil.copy(scored_template, db_file)
    done = subprocess.run(SERVE_COMMAND, check=False, capture_output=True,
                          text=True, env=_env(db_file, free_port(), HUMANLM_SERVER_WORKER="tornado"), timeout=60)
    assert done.returncode == 1
    assert "HUMANLM_SERVER_WORKER must be one of gevent, gthread (got 'tornado')" in done.stderr
    assert "Traceback" not in done.stderr


def test_gevent_serve_needs_the_launcher_that_patches_first(scored_template, tmp_path):
    """Started through webapp.cli (nothing patched), the gevent server would block on every
    lock made before patching: it refuses with the fix instead."""
    db_file = tmp_path / "serve.db"
    shutil.copy(scored_template, db_file)
    done = subprocess.run([sys.executable, "-c", "from webapp.cli import main; main()", "serve"],
                          check=False, capture_output=True, text=True, env=_env(db_file, free_port()),
                          timeout=60)
    assert done.returncode == 1
    assert "started by the `humanlm` command" in done.stderr
    assert "HUMANLM_SERVER_WORKER=gthread" in done.stderr


@pytest.mark.parametrize(
    ("argv", "environ", "green"),
    [
        (["serve"], {}, True),
        (["--verbose", "serve", "--host", "0.0.0.0"], {}, True),
        (["--env-file", "serve", "worker"], {}, False),  # a group option's value is not the command
        (["serve"], {"HUMANLM_SERVER_WORKER": "gthread"}, False),
        (["serve", "--debug"], {}, False),  # the development server runs threads, unpatched
        (["serve", "--help"], {}, False),
        (["worker"], {}, False),  # the job process runs llama.cpp: never patched
        (["setup"], {}, False),
        ([], {}, False),
    ],
)
def test_only_the_gevent_server_is_patched(argv, environ, green):
    assert serves_green(argv, environ) is green


def test_gevent_server_imports_a_researchers_upload(scored_template, tmp_path):
    """A dashboard upload is imported on a native thread with a session of its own under gevent
    (webapp/research/routes.py): the passages are stored, all of them, and the page says so."""
    import httpx
    from research_helpers import PASSWORD, csrf_token, make_researcher

    from webapp.app import create_app

    with served(scored_template, tmp_path) as (url, _proc, log):
        db_url = f"sqlite:///{tmp_path / 'serve.db'}"
        make_researcher(create_app({"DATABASE_URL": db_url, "SECRET_KEY": "serve-test"}))
        with httpx.Client(base_url=url, timeout=60, follow_redirects=False) as web:
            token = csrf_token(web.get("/research/login").text)
            assert web.post("/research/login", data={"email": "ada@example.org", "password": PASSWORD,
                                                     "csrf_token": token}).status_code == 302
            token = csrf_token(web.get("/research/corpora").text)
            text = "The river was wide and slow.\n\nIn the morning the baker opened his shop.\n"
            reply = web.post("/research/corpora", data={
                "csrf_token": token, "corpus": "uploaded", "text_field": "text", "split": "blank-line",
            }, files={"file": ("river.txt", text.encode(), "text/plain")})
            assert reply.status_code == 302, reply.text
            page = web.get(reply.headers["location"]).text
        assert "2 passages added to the new corpus “uploaded”" in page
    assert "Traceback" not in log.read_text()


def test_gevent_worker_forked_at_once_starts_without_a_traceback(scored_template, tmp_path):
    """Without the job process the master forks its worker within milliseconds of creating the
    app, while the rate limiter's 10 ms timer is still pending: the timer used to reach the
    worker mid-flight and end there with a KeyError traceback."""
    import socketio

    with served(scored_template, tmp_path, HUMANLM_SERVE_JOBS="false") as (url, _proc, log):
        phone = socketio.Client(reconnection=False)
        phone.connect(url, transports=["websocket"], wait_timeout=10)
        ack = phone.call("join", {"code": "ZZZZZ", "nickname": "Ada"}, timeout=10)
        phone.disconnect()
        assert "there is no room" in ack["error"]
        with urllib.request.urlopen(url + "/play", timeout=5) as page:
            assert page.status == 200
        time.sleep(0.5)
    output = log.read_text()
    assert "Traceback" not in output, output
    assert "KeyError" not in output, output


def _websocket_the_phone_closed(driver_class):
    """A WebSocket driver at the losing moment of the race between Engine.IO's writer and
    simple-websocket's reader: the writer saw the connection open, then the reader closed the
    socket because the phone went away."""
    import socket as socketlib

    import simple_websocket

    server_end, phone_end = socketlib.socketpair()
    handshake = {"HTTP_HOST": "localhost", "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade",
                 "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==", "HTTP_SEC_WEBSOCKET_VERSION": "13",
                 "werkzeug.socket": server_end}
    driver = driver_class(handler=None, server=None)
    driver.ws = simple_websocket.Server(handshake)
    assert b"101 Switching Protocols" in phone_end.recv(4096)
    phone_end.close()
    driver.ws.thread.join(timeout=10)  # the reader saw the phone go and closed the socket
    assert not driver.ws.thread.is_alive() and server_end.fileno() == -1
    driver.ws.connected = True  # ...after the writer had seen the connection open
    return driver


def test_a_websocket_the_phone_already_closed_closes_quietly():
    """The writer's goodbye raises nothing (it raised EBADF in the writer's thread, a traceback
    in the server's log, with Engine.IO's own driver), and the socket counts as closed."""
    from engineio.async_drivers._websocket_wsgi import SimpleWebSocketWSGI

    from webapp.extensions import PeerSafeWebSocket

    with pytest.raises(OSError):
        _websocket_the_phone_closed(SimpleWebSocketWSGI).close()
    driver = _websocket_the_phone_closed(PeerSafeWebSocket)
    driver.close()
    assert driver.ws.connected is False
    driver.close()  # a second goodbye is quiet too


def test_the_app_serves_websockets_with_the_peer_safe_driver(app):
    from webapp.extensions import PeerSafeWebSocket, socketio

    assert socketio.server.eio._async["websocket"] is PeerSafeWebSocket
