"""Export throughput and memory: `humanlm export` on N synthetic answers (default 1,000,000).

A SQLite database is filled with synthetic rows (documents, items, predictions with a 64-token
top-k, players, answers) through the real schema. Each export then runs in its own child process,
so its peak RSS is its own. Baseline, in the same run on the same database: reading the answers
table with sqlite3 and writing its raw columns with csv.writer, nothing else; the ratio says
what the full export (joins, per-item facts, schema formatting, codebook) costs on top.
Memory flatness: the same export on N/4 answers; peak RSS should hardly change. --download
also streams the dashboard's zip (CSV) and reports when its first byte was ready.

    .venv/bin/python benchmarks/export_throughput.py [--answers 1000000] [--items 20000]
        [--formats csv parquet jsonl] [--download] [--db-dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def build_database(path: Path, answers: int, items: int, seed: int = 1) -> None:
    from webapp.cli import upgrade_database
    from webapp.extensions import db

    upgrade_database(f"sqlite:///{path}")
    db.dispose()
    rng = random.Random(seed)
    con = sqlite3.connect(path)
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")  # as SQLAlchemy stores it
    con.execute("INSERT INTO corpora (id, name, description, min_prefix_tokens, purpose, created_at) "
                "VALUES (1, 'bench', '', 3, 'game', ?)", (now,))
    con.execute(
        "INSERT INTO language_models (id, key, spec, name, tokenizer, n_vocab, top_k, temperatures, "
        "settings, created_at) VALUES (1, 'bench-model', 'llamacpp:gemma-3-270m', 'bench', 'tok', "
        "262144, 64, ?, '{}', ?)", (json.dumps([0.25, 0.5, 1, 2, 4]), now))
    per_doc = 50
    n_docs = max(1, items // per_doc)
    words = [" the", " a", " cat", " sat", " on", " mat", " and", " dog", " ran", " home"]
    for d in range(n_docs):
        ids = [rng.randrange(100, 5000) for _ in range(per_doc)]
        text = "".join(rng.choice(words) for _ in range(per_doc)).strip()
        con.execute(
            "INSERT INTO documents (id, corpus_id, title, register, licence, source, text, "
            "content_hash, tokenizer, token_ids, n_tokens, created_at) "
            "VALUES (?, 1, ?, 'x', '', '', ?, ?, 'tok', ?, ?, ?)",
            (d + 1, f"doc {d}", text, f"h{d}", json.dumps(ids), per_doc, now))
    item_rows, pred_rows = [], []
    for i in range(n_docs * per_doc):
        doc, pos = i // per_doc + 1, i % per_doc
        token = rng.randrange(100, 5000)
        item_rows.append((i + 1, doc, pos, token, rng.choice(words), pos * 4, 1, None))
        top = sorted(((rng.randrange(100, 5000), -rng.random() * 10) for _ in range(64)),
                     key=lambda e: -e[1])
        top_k = json.dumps([[t, round(lp, 6), " w", False] for t, lp in top])
        pred_rows.append((i + 1, 1, -2.5, 3, top[0][0], 3.1, top_k, json.dumps([1.0] * 5)))
    con.executemany("INSERT INTO items (id, document_id, position, token_id, token_text, char_start, "
                    "playable, skip_reason) VALUES (?,?,?,?,?,?,?,?)", item_rows)
    con.executemany("INSERT INTO predictions (item_id, model_id, target_logprob, target_rank, top1_id, "
                    "entropy, top_k, logz) VALUES (?,?,?,?,?,?,?,?)", pred_rows)
    n_players = max(1, answers // 100, -(-answers // (n_docs * per_doc)))
    con.executemany("INSERT INTO players (id, created_at) VALUES (?, ?)",
                    [(f"p{p:07d}", now) for p in range(n_players)])
    n_items = len(item_rows)
    # One answer per player and item (a unique index since migration 0004): player p's k-th
    # answer is to item (offset_p + k) mod n_items.
    offsets = [rng.randrange(n_items) for _ in range(n_players)]
    batch = []
    for g in range(answers):
        first = rng.randrange(100, 5000)
        player, k = g % n_players, g // n_players
        batch.append((f"k{g:09d}", f"p{player:07d}", (offsets[player] + k) % n_items + 1, 1,
                      rng.choice(words), json.dumps([first]), first, 0, 0, rng.random() < 0.3,
                      "none", rng.uniform(500, 9000), now, now, -rng.random() * 8, rng.randrange(1, 64)))
        if len(batch) == 100_000:
            _insert_guesses(con, batch)
            batch = []
    if batch:
        _insert_guesses(con, batch)
    con.commit()
    con.close()


def _insert_guesses(con, batch) -> None:
    con.executemany(
        "INSERT INTO guesses (client_key, player_id, item_id, model_id, raw_text, token_ids, "
        "first_token_id, multi_token, skipped, is_correct, match_rule, client_reaction_ms, "
        "server_received_at, stored_at, model_logprob, model_rank, source, mode) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,'game','token')", batch)


def peak_rss_mb() -> float:
    """This process's own peak RSS. /proc's VmHWM, not getrusage: Linux carries ru_maxrss over
    exec from the forked parent, so a child started by a large parent would report the
    parent's size (the database builder's lists) instead of its own."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_export(db_path: str, out: str, fmt: str) -> None:
    """Run in a child process: the export alone, then print JSON with seconds and peak RSS."""
    from webapp.app import create_app
    from webapp.export import ExportFilters, write_export
    from webapp.extensions import db

    app = create_app({"DATABASE_URL": f"sqlite:///{db_path}", "SECRET_KEY": "bench"})
    with app.app_context():
        names = {t: f" t{t}" for t in range(5000)}
        started = time.perf_counter()
        summary = write_export(db.session, Path(out), fmt, ExportFilters(),
                               token_text=lambda t: names.get(t, ""))
        seconds = time.perf_counter() - started
    print(json.dumps({"rows": summary.rows["guesses"], "seconds": seconds,
                      "peak_rss_mb": peak_rss_mb()}))


def child_download(db_path: str, fmt: str) -> None:
    """The dashboard's download: the zip stream consumed as a web server would send it; the
    time to its first byte is what a researcher waits before the browser shows progress."""
    from webapp.app import create_app
    from webapp.export import ExportFilters, stream_zip
    from webapp.extensions import db

    app = create_app({"DATABASE_URL": f"sqlite:///{db_path}", "SECRET_KEY": "bench"})
    with app.app_context():
        names = {t: f" t{t}" for t in range(5000)}
        started = time.perf_counter()
        chunks = stream_zip(db.session, fmt, ExportFilters(), token_text=lambda t: names.get(t, ""))
        size = len(next(chunks))
        first = time.perf_counter() - started
        for chunk in chunks:
            size += len(chunk)
        seconds = time.perf_counter() - started
    rows = sqlite3.connect(db_path).execute("SELECT count(*) FROM guesses").fetchone()[0]
    print(json.dumps({"rows": rows, "seconds": seconds, "first_byte": first, "mb": size / 2**20,
                      "peak_rss_mb": peak_rss_mb()}))


def child_baseline(db_path: str, out: str) -> None:
    con = sqlite3.connect(db_path)
    started = time.perf_counter()
    with open(out, "w", newline="") as fh:
        writer = csv.writer(fh)
        cursor = con.execute("SELECT * FROM guesses ORDER BY id")
        writer.writerow([d[0] for d in cursor.description])
        n = 0
        while rows := cursor.fetchmany(20_000):
            writer.writerows(rows)
            n += len(rows)
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": n, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def run_child(*args: str) -> dict:
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-export":
        child_export(*sys.argv[2:5])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--child-download":
        child_download(*sys.argv[2:4])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--child-baseline":
        child_baseline(*sys.argv[2:4])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--formats", nargs="+", default=["csv", "parquet"])
    parser.add_argument("--download", action="store_true",
                        help="also time the dashboard's streamed zip (CSV): first byte and total")
    parser.add_argument("--db-dir", type=Path, default=None,
                        help="keep the synthetic databases here and reuse them on the next run")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="humanlm-export-bench-"))
    sizes = [args.answers // 4, args.answers]
    print(f"{'answers':>9} {'what':>9} {'seconds':>8} {'rows/s':>9} {'peak RSS MB':>12} {'vs base':>8}")
    try:
        for n in sizes:
            db_path = (args.db_dir or tmp) / f"bench-{n}-{args.items}.db"
            if not db_path.exists():
                t0 = time.perf_counter()
                build_database(db_path, n, args.items)
                print(f"(built {n:,} answers over {args.items:,} items in "
                      f"{time.perf_counter() - t0:.0f} s)")
            base = run_child("--child-baseline", str(db_path), str(tmp / f"base-{n}.csv"))
            base_rate = base["rows"] / base["seconds"]
            print(f"{n:>9,} {'baseline':>9} {base['seconds']:>8.1f} {base_rate:>9,.0f} "
                  f"{base['peak_rss_mb']:>12.0f} {1.0:>8.2f}")
            for fmt in args.formats:
                out = tmp / f"out-{n}-{fmt}"
                r = run_child("--child-export", str(db_path), str(out), fmt)
                rate = r["rows"] / r["seconds"]
                print(f"{n:>9,} {fmt:>9} {r['seconds']:>8.1f} {rate:>9,.0f} "
                      f"{r['peak_rss_mb']:>12.0f} {rate / base_rate:>8.2f}", flush=True)
                shutil.rmtree(out, ignore_errors=True)
            if args.download:
                r = run_child("--child-download", str(db_path), "csv")
                rate = r["rows"] / r["seconds"]
                print(f"{n:>9,} {'zip csv':>9} {r['seconds']:>8.1f} {rate:>9,.0f} "
                      f"{r['peak_rss_mb']:>12.0f} {rate / base_rate:>8.2f}  "
                      f"(first byte after {r['first_byte']:.2f} s, {r['mb']:.0f} MB)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
