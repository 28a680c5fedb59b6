"""`humanlm serve` runs a production server (gunicorn, gthread) that serves pages, long-polling
and WebSocket Socket.IO, without the development server's warning or a version banner."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

from support import MODEL_SPEC


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_runs_gunicorn_with_websockets(scored_template, tmp_path):
    import shutil

    import socketio

    db_file = tmp_path / "serve.db"
    shutil.copy(scored_template, db_file)
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db_file}", "HUMANLM_PORT": str(port),
           "HUMANLM_SECRET_KEY": "serve-test", "HUMANLM_MODEL": MODEL_SPEC}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", "from webapp.cli import main; main()", "serve"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                page = urllib.request.urlopen(url + "/", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError(log.read_text())
        assert page.status == 200
        assert page.headers.get("Server", "") in ("", "gunicorn"), page.headers.get("Server")
        for transports in (["websocket"], ["polling"]):
            client = socketio.Client(reconnection=False)
            client.connect(url, transports=transports, wait_timeout=10)
            ack = client.call("join", {"code": "ZZZZZ", "nickname": "Ada"}, timeout=10)
            assert ack["ok"] is False and "there is no room" in ack["error"]
            assert client.transport() == transports[0]
            client.disconnect()
        # The background jobs run in a process of their own, never in the web worker.
        import psutil

        children = psutil.Process(proc.pid).children(recursive=True)
        job_processes = [c for c in children if "worker" in c.cmdline()]
        assert len(job_processes) == 1, [c.cmdline() for c in children]
    finally:
        proc.kill()  # even kill -9 of the server takes its job process down with it
        proc.wait(timeout=30)
    psutil.wait_procs(job_processes, timeout=20)
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in job_processes)
    for child in children:  # the gunicorn worker notices its master is gone within a second
        if child.is_running():
            child.kill()
    output = log.read_text()
    assert "development server" not in output.lower(), output
    assert "Traceback" not in output, output
