"""Classroom fan-out: N students answer one round; how fast does the host's count update?

A real `humanlm serve` process (embedded defaults: SQLite file, in-process Socket.IO; or
--database-url/--queue for PostgreSQL + Redis) serves one room on loopback. This process runs one
host and N students as python-socketio asyncio clients (one event loop, bounded by --timeout).
Each student sends its answer at a random moment within --spread seconds (0 = all at once);
the latency of an answer is the time from its send to the first `answers` event at the host
that lists that student. Lost = answers the host never saw plus answers not stored. This
process's garbage collector is off during the timed part: its pauses would be the clients'.

Baseline, measured in the same run on the same server and connections: the acknowledgement
round trip of an event the server refuses after one database lookup (a student asking to lock
the room). The ratio p99 / baseline p50 says how much the fan-out adds to a bare round trip.

    .venv/bin/python benchmarks/room_fanout.py [--students 50 200] [--spread 5 0] [--rounds 1]
    .venv/bin/python benchmarks/room_fanout.py --workers 2 --queue redis://127.0.0.1:6379/0 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/humanlm_bench
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from webapp.cli import upgrade_database
from webapp.config import DEFAULT_MODEL
from webapp.corpus import RawDocument, get_or_create_corpus, import_documents
from webapp.extensions import db
from webapp.launch import humanlm_command
from webapp.lm import load_model
from webapp.predictions import score_corpus

SPEC = DEFAULT_MODEL
TEXT = (
    "Every morning the baker opened the shop before sunrise. The smell of warm bread filled the "
    "street, and the first customers were always the same two old friends."
)


def prepare_database(url: str) -> None:
    upgrade_database(url)
    db.configure(url)
    session = db.new_session()
    model = load_model(SPEC, max_tokens=128)
    corpus = get_or_create_corpus(session, "bench", min_prefix_tokens=3)
    import_documents(session, corpus, [RawDocument(text=TEXT, title="Baker")], model, max_tokens=128)
    session.commit()
    score_corpus(session, model, top_k=64)
    session.close()
    db.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(database_url: str, queue: str | None, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "HUMANLM_PORT": str(port),
           "HUMANLM_SECRET_KEY": "bench", "HUMANLM_MODEL": SPEC,
           # every student connects from 127.0.0.1: lift the per-address join limit (a school NAT
           # of 200 phones is within the default; several rounds of 200 in a minute are not)
           "HUMANLM_ROOM_JOIN_LIMITS_PER_ADDRESS": "100000 per minute"}
    env.pop("SOCKETIO_MESSAGE_QUEUE", None)
    if queue:
        env["SOCKETIO_MESSAGE_QUEUE"] = queue
    proc = subprocess.Popen(
        humanlm_command("serve"),
        env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115 (the server process writes to it)
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/rooms/ZZZZZ", timeout=1)
        except urllib.error.HTTPError:
            return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not start; see {log}")


def create_room(url: str) -> dict:
    body = json.dumps({"source": "corpus", "corpus": "bench", "rounds": 1,
                       "show_histogram": True}).encode()
    req = urllib.request.Request(f"{url}/api/rooms", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def run_round(urls: list[str], n: int, spread: float, timeout: float, rng: random.Random,
                    server_pids: list[int]) -> dict:
    import psutil
    import socketio

    url = urls[0]  # the host's server; students are spread over all of them
    # gunicorn serves from a worker process forked by its master: count both
    servers = [q for pid in server_pids for q in (psutil.Process(pid), *psutil.Process(pid).children(recursive=True))]

    room = create_room(url)
    code = room["code"]
    host = socketio.AsyncClient(reconnection=False)
    seen_at: dict[int, float] = {}
    all_seen = asyncio.Event()

    @host.on("answers")
    async def on_answers(data):
        now = time.perf_counter()
        for pid in data["answered_player_ids"]:
            seen_at.setdefault(pid, now)
        if len(seen_at) >= n:
            all_seen.set()

    await host.connect(url, transports=["websocket"])
    ack = await host.call("host_join", {"code": code, "host_token": room["host_token"]}, timeout=10)
    assert ack["ok"], ack

    students = []
    for start in range(0, n, 25):  # connect in batches: a class arrives over a minute, not at once
        batch = []
        for i in range(start, min(n, start + 25)):
            sio = socketio.AsyncClient(reconnection=False)
            batch.append(sio)
        await asyncio.gather(*(
            s.connect(urls[(start + j) % len(urls)], transports=["websocket"])
            for j, s in enumerate(batch)
        ))
        acks = await asyncio.gather(*(
            s.call("join", {"code": code, "nickname": f"s{start + j}"}, timeout=30)
            for j, s in enumerate(batch)
        ))
        for s, a in zip(batch, acks):
            assert a["ok"], a
            students.append((s, a["player_id"]))

    # Baseline: a refused event's acknowledgement round trip, on the same connections.
    baseline = []
    for s, _pid in students[: min(50, n)]:
        t0 = time.perf_counter()
        await s.call("host_action", {"code": code, "action": "lock"}, timeout=10)
        baseline.append(time.perf_counter() - t0)

    ack = await host.call("host_action", {"code": code, "action": "start"}, timeout=10)
    assert ack["ok"], ack
    sent_at: dict[int, float] = {}
    ack_ok = 0

    async def answer(s, pid: int, index: int) -> None:
        nonlocal ack_ok
        await asyncio.sleep(rng.uniform(0, spread))
        sent_at[pid] = time.perf_counter()
        reply = await s.call("guess", {"code": code, "round": 0, "text": rng.choice([" bread", " cake", " milk"]),
                                       "skipped": False, "client_key": f"bench-{code}-{index:05d}"}, timeout=timeout)
        ack_ok += bool(reply.get("ok"))

    # The 201 clients share this one process (in a class, 201 devices): its garbage collector
    # must not pause them all mid-burst (seen: 95-122 ms full passes) and count as latency.
    gc.collect()
    gc.disable()
    started = time.perf_counter()
    cpu_before = sum(sum(p.cpu_times()[:2]) for p in servers)
    await asyncio.wait_for(asyncio.gather(*(answer(s, pid, i) for i, (s, pid) in enumerate(students))), timeout)
    try:
        await asyncio.wait_for(all_seen.wait(), timeout)
    except TimeoutError:
        pass
    wall = time.perf_counter() - started
    gc.enable()
    server_cpu = sum(sum(p.cpu_times()[:2]) for p in servers) - cpu_before
    latencies = [seen_at[pid] - sent_at[pid] for pid in sent_at if pid in seen_at]
    for s, _ in students:
        await s.disconnect()
    await host.disconnect()
    return {
        "code": code,
        "n": n,
        "spread_s": spread,
        "acks_ok": ack_ok,
        "seen_by_host": len(latencies),
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * percentile(latencies, 99) if latencies else float("nan"),
        "max_ms": 1000 * max(latencies) if latencies else float("nan"),
        "baseline_p50_ms": 1000 * statistics.median(baseline),
        "wall_s": wall,
        "server_cpu_s": server_cpu,
    }


def stored_answers(database_url: str, code: str) -> int:
    if database_url.startswith("sqlite:///"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        try:
            return conn.execute(
                "SELECT count(*) FROM guesses g JOIN rooms r ON r.id = g.room_id WHERE r.code = ?", (code,)
            ).fetchone()[0]
        finally:
            conn.close()
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as conn:
        count = conn.execute(
            text("SELECT count(*) FROM guesses g JOIN rooms r ON r.id = g.room_id WHERE r.code = :c"),
            {"c": code},
        ).scalar_one()
    engine.dispose()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--spread", type=float, nargs="+", default=[5.0, 0.0],
                        help="seconds over which the answers arrive (0 = all at once)")
    parser.add_argument("--rounds", type=int, default=1, help="repeats of each configuration")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--queue", default=None, help="e.g. redis://127.0.0.1:6379/0")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes (>1 needs --database-url postgresql... and --queue)")
    args = parser.parse_args()
    if args.workers > 1 and not (args.queue and args.database_url and "postgresql" in args.database_url):
        parser.error("--workers > 1 needs --database-url postgresql+psycopg://... and --queue redis://...")

    tmp = Path(tempfile.mkdtemp(prefix="humanlm-fanout-"))
    database_url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
    print(f"preparing {database_url} (one passage scored by the real model)...", flush=True)
    prepare_database(database_url)
    servers = [start_server(database_url, args.queue, tmp / f"server-{i}.log") for i in range(args.workers)]
    urls = [url for _proc, url in servers]
    print(f"{args.workers} server process(es) {', '.join(urls)}; {os.cpu_count()} cores; logs in {tmp}")
    rng = random.Random(7)
    header = (f"{'N':>4} {'spread':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
              f"{'base p50':>9} {'p99/base':>9} {'lost':>5} {'wall s':>7} {'srv cpu s':>9}")
    print(header)
    try:
        for n in args.students:
            for spread in args.spread:
                for _ in range(args.rounds):
                    r = asyncio.run(run_round(urls, n, spread, args.timeout, rng, [p.pid for p, _ in servers]))
                    stored = stored_answers(database_url, r["code"])
                    lost = (n - min(r["seen_by_host"], stored))
                    print(f"{n:>4} {spread:>6.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
                          f"{r['max_ms']:>8.1f} {r['baseline_p50_ms']:>9.1f} "
                          f"{r['p99_ms'] / r['baseline_p50_ms']:>9.1f} {lost:>5} {r['wall_s']:>7.2f} "
                          f"{r['server_cpu_s']:>9.2f}",
                          flush=True)
    finally:
        for proc, _url in servers:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
