"""`humanlm export`: every answer and column written, read back, and accounted for."""

from __future__ import annotations

import csv
import json
import sys
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from analysis.schema import EXPORT_TABLES, TABLES, codebook_rows
from webapp import export
from webapp.export import ExportFilters, write_export
from webapp.extensions import db, socketio
from webapp.models import Guess, Participant, Player, Study


def play_solo(client, answers: list[str]) -> None:
    for i, text in enumerate(answers):
        question = client.post("/api/play/next", json={}).get_json()["question"]
        res = client.post("/api/play/guesses", json={
            "item_id": question["item_id"], "text": text, "client_key": f"solo-key-{i:04d}",
            "reaction_ms": 1000 + i,
        })
        assert res.status_code == 200, res.get_json()


def play_room(app, client, answers: list[str]) -> str:
    room = client.post("/api/rooms", json={"source": "corpus", "corpus": "tests", "rounds": 1}).get_json()
    host = socketio.test_client(app, flask_test_client=app.test_client())
    assert host.emit("host_join", {"code": room["code"], "host_token": room["host_token"]}, callback=True)["ok"]
    for i, text in enumerate(answers):
        s = socketio.test_client(app, flask_test_client=app.test_client())
        assert s.emit("join", {"code": room["code"], "nickname": f"kid{i}"}, callback=True)["ok"]
        if i == 0:
            host.emit("host_action", {"code": room["code"], "action": "start"}, callback=True)
        assert s.emit("guess", {"code": room["code"], "round": 0, "text": text, "skipped": False,
                                "client_key": f"room-key-{i:04d}"}, callback=True)["ok"]
    return room["code"]


def add_study_participant(app, pilot: bool, excluded: bool = False) -> str:
    """A study participant with one answer, written directly (the study flow has its own tests)."""
    with app.app_context():
        study = db.session.scalar(select(Study)) or Study(name="S", slug="s1", settings={"note": "x"})
        db.session.add(study)
        db.session.flush()
        player = Player(id=f"study-{'pilot' if pilot else 'real'}-{int(excluded)}")
        db.session.add(player)
        db.session.flush()
        db.session.add(Participant(study_id=study.id, player_id=player.id, pilot=pilot,
                                   excluded=excluded, external_id=f"PID-{player.id}",
                                   exclusion_reason="failed checks" if excluded else None))
        template = db.session.scalar(select(Guess).order_by(Guess.id))
        db.session.add(Guess(
            client_key=f"study-{player.id}", player_id=player.id, item_id=template.item_id,
            model_id=template.model_id, raw_text=" x", token_ids=[1], first_token_id=1,
            match_rule="none", server_received_at=datetime.now(UTC), source="study",
            study_id=study.id,
        ))
        db.session.commit()
        return player.id


@pytest.fixture
def data_app(scored_app, client):
    play_solo(client, [" the", " dog", " over"])
    play_room(scored_app, client, [" sun", " sun", " rain"])
    add_study_participant(scored_app, pilot=False)
    add_study_participant(scored_app, pilot=True)
    add_study_participant(scored_app, pilot=False, excluded=True)
    return scored_app


def read_table(folder, name, fmt):
    path = folder / f"{name}.{fmt}"
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            return reader.fieldnames, list(reader)
    if fmt == "jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        return (list(rows[0]) if rows else None), rows
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return table.column_names, table.to_pylist()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_export_round_trip_accounts_for_every_row_and_column(data_app, tmp_path, fmt):
    out = tmp_path / "export"
    with data_app.app_context():
        summary = write_export(db.session, out, fmt, ExportFilters())
        stored = db.session.scalars(select(Guess).order_by(Guess.id)).all()
        pilot_ids = set(db.session.scalars(select(Participant.player_id).where(Participant.pilot)))
    expected = [g for g in stored if g.player_id not in pilot_ids]
    names, rows = read_table(out, "guesses", fmt)
    assert names == TABLES["guesses"].column_names
    assert [int(r["guess_id"]) for r in rows] == [g.id for g in expected]
    assert summary.rows["guesses"] == len(expected) == 3 + 3 + 2
    by_id = {int(r["guess_id"]): r for r in rows}
    for g in expected:
        row = by_id[g.id]
        assert row["answer_text"] == g.raw_text and int(row["item_id"]) == g.item_id
        assert row["participant_id"] == g.player_id
        if g.model_logprob is not None:
            assert float(row["model_answer_logprob"]) == pytest.approx(g.model_logprob)
    sources = sorted({r["source"] for r in rows})
    assert sources == ["game", "room", "study"]
    excluded = [r for r in rows if r["excluded"] in (True, "true")]
    assert len(excluded) == 1  # kept and flagged by default
    # answer_index counts each participant's answers in order
    solo = [r for r in rows if r["source"] == "game"]
    assert [int(r["answer_index"]) for r in solo] == [1, 2, 3]
    for name in ("items", "participants", "studies", "models"):
        names, table_rows = read_table(out, name, fmt)
        assert names == TABLES[name].column_names, name
        assert len(table_rows) == summary.rows[name], name
    _, items = read_table(out, "items", fmt)
    assert sum(int(i["n_answers"]) for i in items) == len(expected)
    with data_app.app_context():
        from webapp.models import Item

        for row in items:
            item = db.session.get(Item, int(row["item_id"]))
            following = [it.token_text for it in item.document.items if it.position == item.position + 1]
            assert (row["next_token_text"] or None) == (following[0] if following else None)
    counts = items[0]["answer_counts"]
    counts = json.loads(counts) if isinstance(counts, str) else counts
    assert all(int(k) >= 0 and v >= 1 for k, v in counts.items())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema_version"] == "1" and manifest["format"] == fmt
    assert manifest["tables"]["guesses"]["rows"] == len(expected)
    assert manifest["models"][0]["spec"] == "llamacpp:gemma-3-270m"
    assert manifest["filters"]["include_pilot"] is False


def test_every_written_column_is_in_the_codebook(data_app, tmp_path):
    out = tmp_path / "export"
    with data_app.app_context():
        write_export(db.session, out, "csv", ExportFilters(include_pilot=True))
        # The row builders produce exactly the documented columns, no more, no fewer.
        token_text = export.tokenizer_texts()
        producers = {
            "guesses": export.guess_rows(db.session, ExportFilters(), token_text),
            "items": export.item_rows(db.session, ExportFilters(), token_text),
            "participants": export.participant_rows(db.session, ExportFilters()),
            "studies": export.study_rows(db.session, ExportFilters()),
            "models": export.model_rows(db.session, [1]),
        }
        for name, rows in producers.items():
            first = next(iter(rows))
            if isinstance(first, tuple):
                assert len(first) == len(TABLES[name].column_names), name
            else:
                assert set(first) == set(TABLES[name].column_names), name
    with open(out / "codebook.csv", newline="", encoding="utf-8") as fh:
        documented = {(r["table"], r["column"]) for r in csv.DictReader(fh)}
    written = set()
    for name in EXPORT_TABLES:
        with open(out / f"{name}.csv", newline="", encoding="utf-8") as fh:
            written |= {(name, col) for col in next(csv.reader(fh))}
    assert written == documented
    assert all(r["description"] for r in codebook_rows())
    readme = (out / "README.md").read_text()
    assert "Word mode: method and limits" in readme and "chain rule" in readme


def test_filters_select_rooms_dates_pilots_and_exclusions(data_app, tmp_path):
    with data_app.app_context():
        room_id = db.session.scalar(select(Guess.room_id).where(Guess.room_id.is_not(None)))
        summary = write_export(db.session, tmp_path / "room", "csv", ExportFilters(room_id=room_id))
        assert summary.rows["guesses"] == 3
        summary = write_export(db.session, tmp_path / "all", "csv", ExportFilters(include_pilot=True))
        assert summary.rows["guesses"] == 9
        summary = write_export(db.session, tmp_path / "clean", "csv", ExportFilters(include_excluded=False))
        assert summary.rows["guesses"] == 7
        future = datetime.now(UTC) + timedelta(days=1)
        summary = write_export(db.session, tmp_path / "none", "csv", ExportFilters(since=future))
        assert summary.rows["guesses"] == 0 and summary.rows["items"] == 0
        _, rows = read_table(tmp_path / "none", "guesses", "csv")
        assert rows == []
        study_id = db.session.scalar(select(Study.id))
        summary = write_export(db.session, tmp_path / "study", "jsonl", ExportFilters(study_id=study_id))
        assert summary.rows["guesses"] == 2 and summary.rows["studies"] == 1


def test_cli_export_zip_and_bad_options(data_app, tmp_path):
    runner = data_app.test_cli_runner()
    out = tmp_path / "data.zip"
    result = runner.invoke(args=["export", str(out), "--zip", "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == sorted(
            [f"{n}.jsonl" for n in EXPORT_TABLES] + ["manifest.json", "codebook.csv", "README.md"]
        )
    code = None
    with data_app.app_context():
        from webapp.models import Room

        code = db.session.scalar(select(Room.code))
    result = runner.invoke(args=["export", str(tmp_path / "byroom"), "--room", code.lower()])
    assert result.exit_code == 0 and "Exported 3 guesses" in result.output
    for args, needle in [
        (["export", str(out)], "already exists"),
        (["export", str(tmp_path / "x"), "--study", "999"], "no study 999"),
        (["export", str(tmp_path / "x"), "--room", "ZZZZZ"], "no room"),
        (["export", str(tmp_path / "x"), "--since", "yesterday"], "--since must be a date"),
        (["export", str(tmp_path / "x"), "--since", "2026-02-01", "--until", "2026-01-01"], "before --until"),
        (["export", str(tmp_path / "x"), "--format", "xlsx"], "Invalid value"),
        (["export", str(tmp_path / "missing" / "x")], "does not exist"),
    ]:
        result = runner.invoke(args=args)
        assert result.exit_code != 0 and needle in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_failed_export_leaves_nothing_behind(data_app, tmp_path, monkeypatch):
    def broken(*_args, **_kwargs):
        yield from ()
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "participant_rows", broken)
    dest = tmp_path / "exports"
    dest.mkdir()
    with data_app.app_context(), pytest.raises(RuntimeError):
        write_export(db.session, dest / "out", "parquet", ExportFilters())
    assert list(dest.iterdir()) == []


def test_parquet_without_pyarrow_is_a_clear_error(data_app, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    dest = tmp_path / "exports"
    dest.mkdir()
    with data_app.app_context(), pytest.raises(export.ExportError, match="pip install 'humanlm\\[parquet\\]'"):
        write_export(db.session, dest / "out", "parquet", ExportFilters())
    assert list(dest.iterdir()) == []


def test_item_counts_fold_skips_and_models_by_hand():
    groups = [
        (1, 10, False, 2, 3), (1, 11, False, 1, 1), (1, None, True, 2, 2),  # item 1: 6 answers
        (2, 10, False, None, 1), (2, 10, True, 3, 1),  # a skipped row that kept its token
    ]
    assert list(export._fold_item_counts(groups)) == [
        (1, 1, 6, {"10": 3, "11": 1}),
        (2, 3, 2, {"10": 1}),
    ]
    assert list(export._chunks_of(range(5), 2)) == [[0, 1], [2, 3], [4]]


def test_export_keeps_every_url_parameter_duplicates_and_awaited_model_numbers(scored_app, tmp_path):
    """Study runs over HTTP: the participants table has a column per URL parameter the study
    kept and duplicate_of (the first run with the same platform id, by its participant_id); the
    manifest and README say how many answers still await the model's numbers, and say nothing
    once the background job has filled them."""
    from research_helpers import answer, consent, current, make_study, study_row

    from webapp import jobs

    study_id = make_study(scored_app, mode="word", items_per_participant=2, pilot=False)
    slug = study_row(scored_app, study_id).slug
    first, second = scored_app.test_client(), scored_app.test_client()
    token = consent(first, slug, PROLIFIC_PID="pp-1", STUDY_ID="st-7", SESSION_ID="se-a")
    for text in ("dog", "tea"):
        q = current(first, slug)["question"]
        assert answer(first, slug, token, q["study_item_id"], text).status_code == 200
    token = consent(second, slug, PROLIFIC_PID="pp-1", STUDY_ID="st-7", SESSION_ID="se-b")
    q = current(second, slug)["question"]
    assert answer(second, slug, token, q["study_item_id"], skipped=True, text="").status_code == 200
    with scored_app.app_context():
        runs = db.session.scalars(select(Participant).where(Participant.study_id == study_id)
                                  .order_by(Participant.id)).all()
        assert runs[1].duplicate_of == runs[0].id
        ids = [r.player_id for r in runs]

    for fmt in ("csv", "jsonl", "parquet"):
        out = tmp_path / f"before-{fmt}"
        with scored_app.app_context():
            write_export(db.session, out, fmt, ExportFilters(study_id=study_id))
        names, rows = read_table(out, "participants", fmt)
        assert names == TABLES["participants"].column_names
        by_id = {r["participant_id"]: r for r in rows}
        one, two = by_id[ids[0]], by_id[ids[1]]
        assert (one["url_prolific_pid"], one["url_study_id"], one["url_session_id"]) == ("pp-1", "st-7", "se-a")
        assert two["url_session_id"] == "se-b" and one["url_participant"] in (None, "")
        assert two["duplicate_of"] == ids[0] and one["duplicate_of"] in (None, "")
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["answers_awaiting_model_numbers"] == 2  # two words; the skip needs nothing
        readme = (out / "README.md").read_text()
        assert "2 answers still await the model's exact numbers" in readme
        assert "match_rule\n  `check`" in readme or "`check` (is_correct = passed)" in readme

    from analysis.report import write_report

    report = write_report(tmp_path / "before-csv", tmp_path / "report.html", "html", n_boot=20)
    text = report.read_text()
    assert "2 exported answers still await the model&#x27;s exact numbers" in text or \
        "2 exported answers still await the model's exact numbers" in text
    assert "Answers awaiting model numbers" in text

    with scored_app.app_context():
        assert jobs.jobs_for(scored_app).fill_now() == 2  # the background job, run here
        write_export(db.session, tmp_path / "after", "csv", ExportFilters(study_id=study_id))
    manifest = json.loads((tmp_path / "after" / "manifest.json").read_text())
    assert manifest["answers_awaiting_model_numbers"] == 0
    assert "await the model's exact numbers" not in (tmp_path / "after" / "README.md").read_text()
    _, rows = read_table(tmp_path / "after", "guesses", "csv")
    filled = [(r["answer_text"], r["model_answer_logprob"]) for r in rows if r["skipped"] == "false"]
    assert len(filled) == 2 and all(lp not in ("", None) for _text, lp in filled), filled


def test_an_export_leaves_the_apps_sqlite_connections_working(data_app, tmp_path):
    """ADBC's SQLite driver is a second copy of SQLite in the process: opened read-write, its
    close checkpointed and deleted the WAL under the app's own connections (the next write in
    that web worker failed with "disk I/O error"). Read-only, it leaves them alone."""
    from pathlib import Path

    path = Path(data_app.config["DATABASE_URL"].removeprefix("sqlite:///"))
    with data_app.app_context():
        before = db.session.scalar(select(Guess.id).order_by(Guess.id.desc()).limit(1))
        for fmt in ("csv", "parquet"):
            write_export(db.session, tmp_path / fmt, fmt, ExportFilters())
        assert Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()
        db.session.add(Player(id="after-export"))
        db.session.commit()
        assert db.session.get(Player, "after-export") is not None and before is not None
