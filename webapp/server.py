"""The production server `humanlm serve` runs: gunicorn with one worker process, gevent by default.

Why this shape: Flask-SocketIO keeps its connections in the memory of one process, so one
gunicorn worker serves everything (more processes need a message queue and sticky sessions; see
README "Many workers"). Flask-SocketIO runs in its threading mode and WebSockets go through
simple-websocket in both worker classes:

- `gevent` (default): `humanlm serve` patches the standard library before anything is imported
  (webapp/launch.py), so each connection's threads are greenlets. A class answering at once
  costs about half the CPU of OS threads (benchmarks/room_fanout.py), which is what keeps the
  host's count quick on two cores. psycopg 3 and redis-py cooperate with the patched sockets;
  llama.cpp's forward passes in this process (room prompts) run in gevent's pool of native
  threads (webapp/green.py), as do a study report's analysis and a dashboard upload's import,
  so they do not stop the other connections.
- `gthread`: OS threads and no monkey patching, should an extension not cooperate with gevent.

Each open connection holds one greenlet or thread, so HUMANLM_SERVER_THREADS bounds the number
of phones one process serves.
"""

from __future__ import annotations

import gc
import os
import subprocess
import threading
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from .extensions import db
from .launch import humanlm_command


class GunicornServer(BaseApplication):
    """gunicorn configured from humanlm's settings, serving an already created app."""

    def __init__(self, app: Flask, host: str, port: int, connections: int, worker: str) -> None:
        self.app = app
        self.options: dict[str, Any] = {
            "bind": f"{host}:{port}",
            "workers": 1,
            "worker_class": worker,
            "threads": connections,  # gthread
            # gevent: at most this many connections. gthread: threads serve the requests and
            # the rest of worker_connections park idle keep-alive connections (none if equal).
            "worker_connections": connections if worker == "gevent" else 2 * connections,
            # Long-polling requests last up to 25 s; the worker's heartbeat is separate.
            "timeout": 60,
            "graceful_timeout": 5,
            "keepalive": 5,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
            "pre_fork": _finish_timers_before_fork,
            "post_fork": _fresh_connections_after_fork,
            "when_ready": _start_job_process,
            "on_exit": _stop_job_process,
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.app


def _finish_timers_before_fork(_server, _worker) -> None:
    """Timers the master started end before it forks the worker: the rate limiter's memory
    store starts one (10 ms) when the app is created. Under gevent a timer is a greenlet, and
    one copied into the worker mid-flight ended there with a KeyError traceback, because the
    fork had taken it off threading's list. The worker's store starts its own on first use."""
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()
            thread.join(timeout=1)


def _fresh_connections_after_fork(_server, worker) -> None:
    """Database connections opened by the master process must not be shared with the worker;
    then the worker recovers rooms a crash left mid-round (locks overdue rounds, times the
    others, marks seats away) at once, not on the first request, and opens its job queue now:
    the first answer of a class's burst would otherwise pay for it (about 0.5 s of imports)."""
    db.dispose()
    from .jobs import jobs_for
    from .lm import load_tokenizer
    from .rooms import recovery

    app = worker.app.app
    # The tokenizer every answer is matched with (0.5 s to open, 0.07 s for its table of
    # control tokens): opened now, or the first answer of a class waits for it, and under
    # gevent everyone else with it.
    try:
        load_tokenizer(app.config["MODEL"]).is_control(0)
    except Exception:  # a model that cannot open is reported where it is used
        app.logger.warning("the tokenizer could not be opened yet", exc_info=True)
    recovery.ensure(app)
    try:
        jobs_for(app)
    except Exception:  # a queue that is down loses nothing: answers ask again later
        app.logger.warning("the job queue could not be opened yet", exc_info=True)
    # Everything loaded so far (modules, the app, the tokenizer) lives as long as the process:
    # leave it out of the collector's full passes, each of which would otherwise scan it all
    # and pause the first rounds of a class for about 0.1 s.
    gc.freeze()


def _start_job_process(server) -> None:
    """The background jobs (webapp/jobs.py) run in a process of their own, `humanlm worker`,
    started and stopped with the server unless HUMANLM_SERVE_JOBS is false. Why not a thread
    of the web worker: the jobs load the model (hundreds of MB, seconds of CPU, then the
    forward passes), which would share one interpreter lock with a class answering."""
    app = server.app.app
    if not app.config.get("SERVE_JOBS"):
        return
    try:
        server.humanlm_jobs = subprocess.Popen(
            humanlm_command("worker"),
            env=os.environ.copy(),
            preexec_fn=_stop_with_parent,  # noqa: PLW1509 (one prctl call; the master runs no threads)
        )
    except OSError:  # the game still serves; the dashboard shows the backlog
        app.logger.exception("background jobs did not start (run `humanlm worker`)")


def _stop_with_parent() -> None:
    """In the job process, before it runs: on Linux, get SIGTERM when the server dies, even by
    kill -9, so no orphaned worker keeps the model loaded."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop_job_process(server) -> None:
    """On the way out: let a running job finish (at most 10 s), then stop the job process."""
    proc = getattr(server, "humanlm_jobs", None)
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=12)
    except subprocess.TimeoutExpired:
        proc.kill()


def classroom_line(app: Flask, host: str, port: int) -> str:
    """One line for the terminal: where phones join, or why they cannot and the fix."""
    from .rooms.network import FIX_COMMAND, FIX_COMMAND_CLI, join_base

    local = f"http://{'127.0.0.1' if host in ('', '0.0.0.0', '::') else host}:{port}/"
    join = join_base(app.config.get("PUBLIC_URL"), host, local)
    if join.reachable:
        return f"Classroom rooms: phones join at {join.url}/join"
    if join.fix:
        return (f"Classroom rooms: phones cannot open {host} (this computer only); for a class, "
                f"serve with `{FIX_COMMAND}` (or `{FIX_COMMAND_CLI}`)")
    return ("Classroom rooms: this computer has no network address yet; phones can join once it "
            "is on the classroom's Wi-Fi or network")


def serve(app: Flask, host: str, port: int, connections: int, worker: str) -> None:
    # The room pages read the address the server really listens on (--host or HUMANLM_HOST) to
    # tell whether phones can reach it (webapp/rooms/network.py).
    app.config["HOST"] = host
    print(classroom_line(app, host, port), flush=True)
    GunicornServer(app, host, port, connections, worker).run()
