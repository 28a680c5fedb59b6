"""The export's fast paths: ADBC and plain-cursor reads agree byte for byte (SQLite and
PostgreSQL), the download zip streams while it is made, the progress bar, and CSV formula cells
neutralised (and undone by analysis.load) while JSONL and Parquet keep the raw text."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import UTC

import pyarrow.parquet as pq
import pytest
from research_helpers import login, make_researcher
from sqlalchemy import select
from test_export import add_study_participant, play_room, play_solo

import analysis
from analysis.schema import EXPORT_TABLES
from webapp import export
from webapp.app import create_app
from webapp.export import ExportFilters, stream_zip, write_export
from webapp.extensions import db
from webapp.models import Guess, Participant, Study

FORMULAS = ['=HYPERLINK("http://x","y")', "+1+1", "@SUM(A1)", "-2", "'quoted", "\tTab"]
TABLE_FILES = [f"{name}.{{fmt}}" for name in EXPORT_TABLES] + ["codebook.csv"]


def fill(app, client, solo=(" the", " dog", " over")) -> None:
    play_solo(client, list(solo))
    play_room(app, client, [" sun", " sun", " rain"])
    add_study_participant(app, pilot=False)
    add_study_participant(app, pilot=True)
    add_study_participant(app, pilot=False, excluded=True)


def export_both_ways(app, tmp_path, fmt, monkeypatch, filters=None):
    """The same export through ADBC and through the session's own cursor."""
    filters = filters or ExportFilters()
    tmp_path.mkdir(exist_ok=True)
    with app.app_context():
        write_export(db.session, tmp_path / "adbc", fmt, filters)
    with monkeypatch.context() as patch:
        patch.setattr(export, "_adbc_connect", lambda connection: None)
        with app.app_context():
            write_export(db.session, tmp_path / "cursor", fmt, filters)
    return tmp_path / "adbc", tmp_path / "cursor"


def assert_same_tables(a, b, fmt) -> None:
    for pattern in TABLE_FILES:
        name = pattern.format(fmt=fmt)
        if fmt == "parquet" and name.endswith(".parquet"):
            assert pq.read_table(a / name).equals(pq.read_table(b / name)), name
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_adbc_and_cursor_paths_write_the_same_files_on_sqlite(scored_app, client, tmp_path,
                                                              monkeypatch, fmt):
    fill(scored_app, client)
    adbc, cursor = export_both_ways(scored_app, tmp_path, fmt, monkeypatch,
                                    ExportFilters(include_pilot=True))
    assert_same_tables(adbc, cursor, fmt)


def test_postgresql_round_trip_matches_the_database(pg_url, tmp_path, monkeypatch):
    """Every answer on PostgreSQL comes back with its exact times (ISO 8601 UTC), booleans,
    NULLs and JSON token ids, and the ADBC (COPY BINARY) and cursor paths agree."""
    app = create_app({"DATABASE_URL": pg_url, "TESTING": True, "SECRET_KEY": "test",
                      "MODEL": "llamacpp:gemma-3-270m", "TOP_K": 64, "ROOM_ANSWER_BATCH_MS": 0})
    try:
        fill(app, app.test_client())
        for fmt in ("csv", "jsonl", "parquet"):
            adbc, cursor = export_both_ways(app, tmp_path / fmt, fmt, monkeypatch)
            assert_same_tables(adbc, cursor, fmt)
        with app.app_context():
            pilots = set(db.session.scalars(select(Participant.player_id).where(Participant.pilot)))
            stored = [g for g in db.session.scalars(select(Guess).order_by(Guess.id))
                      if g.player_id not in pilots]
        with open(tmp_path / "csv" / "adbc" / "guesses.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        jsonl = [json.loads(line) for line in
                 (tmp_path / "jsonl" / "adbc" / "guesses.jsonl").read_text().splitlines()]
        parquet = pq.read_table(tmp_path / "parquet" / "adbc" / "guesses.parquet").to_pylist()
        assert [int(r["guess_id"]) for r in rows] == [g.id for g in stored] == [
            r["guess_id"] for r in jsonl] == [r["guess_id"] for r in parquet]
        for g, row, line, pa_row in zip(stored, rows, jsonl, parquet):
            received = g.server_received_at.astimezone(UTC)
            assert row["server_received_at"] == line["server_received_at"] == received.isoformat()
            assert pa_row["server_received_at"] == received
            assert row["skipped"] == ("true" if g.skipped else "false")
            assert line["is_correct"] is pa_row["is_correct"] is g.is_correct
            assert json.loads(row["answer_token_ids"]) == line["answer_token_ids"] == g.token_ids
            assert row["room_id"] == ("" if g.room_id is None else str(g.room_id))
            assert line["room_id"] == pa_row["room_id"] == g.room_id
            assert line["reported_probability"] is None and row["reported_probability"] == ""
        data = analysis.load(tmp_path / "csv" / "adbc")
        assert len(data.guesses) == len(stored) and data.items["n_answers"].sum() == len(stored)
    finally:
        db.dispose()


def test_formula_cells_are_neutralised_in_csv_only_and_analysis_undoes_it(scored_app, client,
                                                                          tmp_path):
    fill(scored_app, client, solo=FORMULAS)
    paths = {}
    with scored_app.app_context():
        for fmt in ("csv", "jsonl", "parquet"):
            paths[fmt] = tmp_path / fmt
            write_export(db.session, paths[fmt], fmt, ExportFilters())
    with open(paths["csv"] / "guesses.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    solo = [r for r in rows if r["source"] == "game"]
    assert [r["answer_text"] for r in solo] == ["'" + text for text in FORMULAS]
    # numbers stay numbers: negative log-probs are written as they are
    assert all(r["model_answer_logprob"].startswith("-") for r in solo if r["model_answer_logprob"])
    assert json.loads((paths["csv"] / "manifest.json").read_text())["csv_text_escape"] == "'"
    assert "removeprefix" in (paths["csv"] / "README.md").read_text()  # how to undo it
    lines = [json.loads(line) for line in (paths["jsonl"] / "guesses.jsonl").read_text().splitlines()]
    assert [r["answer_text"] for r in lines if r["source"] == "game"] == FORMULAS
    table = pq.read_table(paths["parquet"] / "guesses.parquet").to_pylist()
    assert [r["answer_text"] for r in table if r["source"] == "game"] == FORMULAS
    for fmt in ("csv", "jsonl", "parquet"):
        data = analysis.load(paths[fmt])
        game = data.guesses[data.guesses["source"] == "game"]
        assert game["answer_text"].tolist() == FORMULAS, fmt


def test_download_zip_streams_while_it_is_written(scored_app, client, monkeypatch):
    """The first bytes leave before the items table is even read; the whole stream is a
    complete export that analysis.load reads."""
    fill(scored_app, client)
    calls = []
    real_items = export.item_batches

    def items_later(*args, **kwargs):
        calls.append("items")
        yield from real_items(*args, **kwargs)

    monkeypatch.setattr(export, "item_batches", items_later)
    with scored_app.app_context():
        chunks = stream_zip(db.session, "csv", ExportFilters(), block=1)
        first = next(chunks)
        assert first.startswith(b"PK\x03\x04") and calls == []
        body = first + b"".join(chunks)
    assert calls == ["items"]
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        assert sorted(zf.namelist()) == sorted(
            [f"{n}.csv" for n in EXPORT_TABLES] + ["manifest.json", "codebook.csv", "README.md"])


def test_study_download_is_a_streamed_response(scored_app, client, tmp_path):
    fill(scored_app, client)
    make_researcher(scored_app)
    with scored_app.app_context():
        study_id = db.session.scalar(select(Study.id))  # no owner: every researcher sees it
    assert login(client).status_code == 302
    res = client.get(f"/research/studies/{study_id}/export?format=parquet&include_pilot=1")
    assert res.status_code == 200 and res.is_streamed
    path = tmp_path / "study.zip"
    path.write_bytes(res.get_data())
    data = analysis.load(path)
    assert len(data.guesses) == 3 and set(data.guesses["source"]) == {"study"}


def test_progress_bar_on_stderr(scored_app, client, tmp_path, capsys):
    fill(scored_app, client)
    with scored_app.app_context():
        write_export(db.session, tmp_path / "out", "csv", ExportFilters(), progress=True)
    err = capsys.readouterr().err
    assert "guesses" in err and "100%" in err and "answers/s" in err


def test_a_web_request_never_opens_adbc_on_sqlite(scored_app):
    """A web worker exports SQLite through its own cursor: closing ADBC's copy of SQLite would
    drop the POSIX locks of every connection of the process (another thread may be writing)."""
    from webapp import export as export_module

    with scored_app.app_context():
        connection = db.session.connection()
        outside = export_module._adbc_connect(connection)
        assert outside is not None
        outside.close()
        with scored_app.test_request_context("/research/studies/1/export"):
            assert export_module._adbc_connect(connection) is None
