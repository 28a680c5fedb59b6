"""Streaming export of everything humanlm recorded, in the format analysis/schema.py defines.

Why streaming, and why columns: a study or a season of classroom games can hold millions of
answers, and a researcher should get them at about the speed the disk and the database allow.
The joins are done in the database; rows arrive as Arrow record batches (ADBC drivers on SQLite
and PostgreSQL, else the session's cursor) and are written batch by batch by pyarrow's CSV and
Parquet writers, so memory depends on the batch size and the number of participants and items,
not on the number of answers. Parquet gets one row group per batch.

Output: a folder (or a zip of it, which can also be streamed to a browser as it is made) with
one file per table (guesses, items, participants, studies, models, and every model's numbers
on the same answers and items: answer_models, item_models) in one format (csv, jsonl,
parquet), plus manifest.json (versions, filters, row counts, model settings), codebook.csv and
README.md generated from the same schema.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import queue
import shutil
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

# pyarrow's default allocator in the wheels (mimalloc) kept the memory of batches made on the
# read-ahead thread and freed on this one: in the benchmark a million answers to Parquet took
# 20 s and 300 MB with it, 13 s and 277 MB with malloc. The choice is read at the first
# allocation, so it holds when this module is imported first (the app and the CLI do); an
# explicit ARROW_DEFAULT_MEMORY_POOL wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from sqlalchemy import (
    Text,
    aggregate_order_by,
    case,
    cast,
    func,
    literal,
    literal_column,
    null,
    select,
    union_all,
)
from sqlalchemy.orm import Session, aliased
from tqdm import tqdm

from analysis.schema import (
    EXPORT_TABLES,
    FORMATS,
    MODEL_TABLES,
    SCHEMA_VERSION,
    TABLES,
    Table,
    codebook_rows,
)

from .config import DEFAULT_MODEL
from .models import (
    AnswerModelScore,
    Corpus,
    Document,
    Guess,
    Item,
    ItemModelScore,
    LanguageModel,
    Participant,
    Prediction,
    Room,
    Study,
    WordScore,
)
from .version import __version__
from .words import target_word

log = logging.getLogger(__name__)

BATCH_ROWS = 16_384  # answers per Arrow batch: speed is flat from here up, memory is not
ITEM_BATCH_ROWS = 2_048  # items carry the whole top-k as text (a few kB each)


class ExportError(ValueError):
    """Bad export options; the message says which and why."""


@dataclass(frozen=True)
class ExportFilters:
    """Which answers to export. Pilot answers are left out unless asked for; excluded
    participants are kept (flagged) unless asked otherwise: exclusion is the analyst's call."""

    study_id: int | None = None
    room_id: int | None = None
    since: datetime | None = None  # server_received_at >= since (UTC)
    until: datetime | None = None  # server_received_at < until (UTC)
    include_pilot: bool = False
    include_excluded: bool = True
    include_external: bool = True

    def as_dict(self) -> dict:
        out = asdict(self)
        for key in ("since", "until"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


@dataclass
class ExportSummary:
    path: Path
    format: str
    rows: dict[str, int] = field(default_factory=dict)


def parse_datetime(text: str, name: str) -> datetime:
    """A date (2026-11-01) or date-time (2026-11-01T12:00, UTC unless an offset is given)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ExportError(f"{name} must be a date like 2026-11-01 or 2026-11-01T12:00") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def check_filters(session: Session, filters: ExportFilters) -> None:
    if filters.study_id is not None and session.get(Study, filters.study_id) is None:
        raise ExportError(f"there is no study {filters.study_id}")
    if filters.room_id is not None and session.get(Room, filters.room_id) is None:
        raise ExportError(f"there is no room {filters.room_id}")
    if filters.since and filters.until and filters.since >= filters.until:
        raise ExportError("--since must be before --until")


# ------------------------------------------------------------------------------ answers


def _guess_query(filters: ExportFilters, times_as_text: bool = False):
    """Answers with their participant flags, as plain columns (no ORM objects: speed)."""
    pilot = func.coalesce(Participant.pilot, False)
    excluded = func.coalesce(Participant.excluded, False)
    received, stored = Guess.server_received_at, Guess.stored_at
    if times_as_text:
        received, stored = cast(received, Text), cast(stored, Text)
    query = (
        select(
            Guess.id, Guess.player_id, Guess.source, Guess.study_id, Guess.room_id, Guess.item_id,
            Guess.mode, Guess.raw_text, cast(Guess.token_ids, Text), Guess.first_token_id,
            Guess.skipped,
            Guess.is_correct, Guess.match_rule, Guess.client_reaction_ms,
            received, stored, Guess.reported_probability,
            Guess.model_id, Guess.model_logprob, Guess.model_rank, Guess.word_logprob,
            pilot, excluded,
        )
        .select_from(Guess)
        .outerjoin(Participant, Participant.player_id == Guess.player_id)
        .order_by(Guess.id)
    )
    if filters.study_id is not None:
        query = query.where(Guess.study_id == filters.study_id)
    if filters.room_id is not None:
        query = query.where(Guess.room_id == filters.room_id)
    if filters.since is not None:
        query = query.where(Guess.server_received_at >= filters.since)
    if filters.until is not None:
        query = query.where(Guess.server_received_at < filters.until)
    if not filters.include_pilot:
        query = query.where(pilot.is_(False))
    if not filters.include_excluded:
        query = query.where(excluded.is_(False))
    if not filters.include_external:
        query = query.where(Guess.source != "external")
    return query


# ------------------------------------------------------------------- the database as Arrow batches
#
# The two big tables (guesses: one row per answer; items: one per answered item) are joined in
# the database and read as Arrow record batches, columns not Python tuples: through an ADBC
# driver where one fits (SQLite file, PostgreSQL: the driver fills Arrow buffers in C; on
# PostgreSQL through COPY ... BINARY), else through the session's own DB-API cursor, a batch of
# rows at a time. Everything after that (token texts, answer numbers, booleans, times, CSV
# escaping) is a handful of vectorised Arrow/NumPy operations per batch.


def _adbc_connect(connection):
    """An ADBC DB-API connection to the same database, or None (no driver, in-memory SQLite,
    another database): then the session's own cursor is used. Only committed data is exported."""
    url = connection.engine.url
    try:
        if url.get_backend_name() == "sqlite":
            path = url.database
            if not path or path == ":memory:" or path.startswith("file:") or url.query:
                return None
            from flask import has_request_context

            if has_request_context():
                # Not in a web worker: closing the driver's own copy of SQLite drops every POSIX
                # lock this process holds on the file, including those of a write transaction
                # another thread is in the middle of, while the job process may write too.
                # `humanlm export` (a process that only reads) keeps the fast path.
                return None
            from urllib.parse import quote

            import adbc_driver_sqlite.dbapi

            # Read-only: ADBC's driver carries its own copy of SQLite, which cannot see this
            # process's other connections; opened read-write, closing it checkpointed the WAL
            # and deleted the -wal and -shm files under them ("disk I/O error" next, in a web
            # worker whose dashboard had just exported). Read-only, it leaves them alone.
            return adbc_driver_sqlite.dbapi.connect(f"file:{quote(os.path.abspath(path))}?mode=ro")
        if url.get_backend_name() == "postgresql":
            import adbc_driver_postgresql.dbapi

            uri = url.set(drivername="postgresql").render_as_string(hide_password=False)
            try:
                return adbc_driver_postgresql.dbapi.connect(uri)
            except Exception as exc:  # noqa: BLE001 (e.g. a login libpq cannot do: the slower path)
                log.warning("export: no ADBC connection to PostgreSQL (%s); using the cursor", exc)
                return None
    except ImportError:
        return None
    return None


_RAW_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_(),
              "json": pa.string()}
_SENTINELS = {"int": "-1", "float": "0.0", "str": "''", "bool": "0", "json": "''", "datetime": "''"}


def _sql_batches(session: Session, stmt, kinds: list[str],
                 batch_rows: int = BATCH_ROWS, order: int = 1) -> Iterator[list[pa.Array]]:
    """Run a SELECT (ordered by its first `order` columns, ids) and yield its rows as lists of Arrow
    columns of the schema's types; datetime columns come as the database gives them (text on
    SQLite, timestamps on PostgreSQL) and are formatted by the writers (_iso_text).

    Literal binds: the filters are ints, fixed strings and datetimes only, rendered by the
    dialect itself, so one SQL text serves both drivers."""
    connection = session.connection()
    adbc = _adbc_connect(connection)
    sentinel = adbc is not None and connection.dialect.name == "sqlite"
    if sentinel:
        # ADBC's SQLite driver infers each column's type from the first batch, and refuses a
        # float after a batch of NULLs; a first row of typed constants (sorted first, dropped
        # below) fixes every column's type.
        first = select(*[literal_column(_SENTINELS[k]) for k in kinds])
        stmt = union_all(first, stmt)
    sql = str(stmt.order_by(*[literal_column(str(i)) for i in range(1, order + 1)]).compile(
        dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    if adbc is None:
        result = connection.exec_driver_sql(sql, execution_options={"stream_results": True})
        for rows in result.partitions(batch_rows):
            yield [_normalise(pa.array(values, from_pandas=False), kind)
                   for values, kind in zip(zip(*rows), kinds)]
        return
    with adbc, adbc.cursor() as cursor:
        if sentinel:
            cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch_rows)})
        cursor.execute(sql)
        skip = 1 if sentinel else 0
        for batch in _read_ahead(cursor.fetch_record_batch()):
            if skip:
                batch, skip = batch.slice(1), 0
            if batch.num_rows:
                yield [_normalise(column, kind) for column, kind in zip(batch.columns, kinds)]


_DONE = object()


def _read_ahead(reader: pa.RecordBatchReader, depth: int = 1) -> Iterator[pa.RecordBatch]:
    """The reader's batches, pulled from the database on a second thread (the driver works
    without the GIL) while this thread converts and writes the previous ones: the query and the
    writing overlap instead of taking turns. At most `depth` batches wait in between."""
    waiting: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(item) -> bool:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pull() -> None:
        try:
            for batch in reader:
                if not hand_over(batch):
                    return
            hand_over(_DONE)
        except BaseException as exc:  # noqa: BLE001 (re-raised on the consuming thread)
            hand_over(exc)

    thread = threading.Thread(target=pull, name="export-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := waiting.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _normalise(column: pa.Array, kind: str) -> pa.Array:
    if kind == "datetime":
        if pa.types.is_timestamp(column.type):
            return column.cast(pa.timestamp("us", tz="UTC"))
        return column.cast(pa.string())  # SQLite's text, or all NULL
    return column.cast(_RAW_TYPES[kind])


def _token_texts(ids: pa.Array, token_text) -> pa.Array:
    """Token id -> display text, computed once per distinct id in the batch."""
    distinct = pc.unique(ids).drop_null()
    texts = pa.array([token_text(i) for i in distinct.to_pylist()], pa.string())
    return texts.take(pc.index_in(ids, value_set=distinct))


class AnswerNumbers:
    """answer_index: the 1-based number of each answer among its participant's exported
    answers, in guess id order, across batches (one counter per participant)."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def __call__(self, participants: pa.Array) -> pa.Array:
        encoded = pc.dictionary_encode(participants)
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        names = encoded.dictionary.to_pylist()
        order = np.argsort(codes, kind="stable")
        ordered = codes[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        within = np.empty(len(codes), np.int64)
        within[order] = np.arange(len(codes)) - np.repeat(starts, np.diff(np.r_[starts, len(codes)]))
        before = np.array([self.seen.get(name, 0) for name in names], np.int64)
        for name, total in zip(names, (before + np.bincount(codes, minlength=len(names))).tolist()):
            self.seen[name] = total
        return pa.array(before[codes] + within + 1, pa.int64())


GUESS_COLUMNS = TABLES["guesses"].column_names
_GUESS_KINDS = {c.name: c.type for c in TABLES["guesses"].columns}
_COMPUTED = ("answer_first_token_text", "answer_index", "model_top1_text")


def _guesses_select(filters: ExportFilters):
    """Every guesses column the database can give, joined there (answers ⟕ participants ⋈ items
    ⋈ documents ⋈ corpora ⟕ the predictions' small columns), in schema order; the three
    computed columns are filled per batch."""
    word = Guess.mode == "word"
    # Materialised: SQLite then joins a small temporary table, not the predictions table whose
    # rows carry the whole top-k (a random read of a large row per answer).
    pred = select(Prediction.item_id, Prediction.model_id, Prediction.target_logprob,
                  Prediction.target_rank, Prediction.top1_id, Prediction.entropy
                  ).cte("pred").prefix_with("MATERIALIZED")
    columns = {
        "guess_id": Guess.id, "participant_id": Guess.player_id, "source": Guess.source,
        "study_id": Guess.study_id, "room_id": Guess.room_id, "item_id": Guess.item_id,
        "document_id": Item.document_id, "corpus": Corpus.name, "position": Item.position,
        "mode": Guess.mode, "prefix_text": func.substr(Document.text, 1, Item.char_start),
        "target_text": Item.token_text, "target_token_id": Item.token_id,
        "answer_text": Guess.raw_text, "answer_token_ids": cast(Guess.token_ids, Text),
        "answer_first_token_id": Guess.first_token_id,
        "skipped": func.coalesce(Guess.skipped, False),
        # A stem's answers are neither correct nor wrong: NULL, never a made-up False.
        "is_correct": case((Item.token_id.is_(None), null()),
                           (Guess.mode.in_(("pairwise", "distribution")), null()),
                           else_=func.coalesce(Guess.is_correct, False)),
        "match_rule": Guess.match_rule,
        "reaction_ms": Guess.client_reaction_ms, "server_received_at": Guess.server_received_at,
        "stored_at": Guess.stored_at, "judgement": cast(Guess.judgement, Text),
        "reported_probability": Guess.reported_probability,
        "model_id": Guess.model_id,
        # Word mode: the word's log-prob; no ranks; the target's (word) log-prob added per batch.
        "model_answer_logprob": case((word, Guess.word_logprob), else_=Guess.model_logprob),
        "model_answer_rank": case((word, null()), else_=Guess.model_rank),
        "model_target_logprob": case((word, null()), else_=pred.c.target_logprob),
        "model_target_rank": case((word, null()), else_=pred.c.target_rank),
        "model_top1_id": pred.c.top1_id, "model_entropy": pred.c.entropy,
        "pilot": func.coalesce(Participant.pilot, False),
        "excluded": func.coalesce(Participant.excluded, False),
        "external": Guess.source == "external",
    }
    names = [n for n in TABLES["guesses"].column_names if n not in _COMPUTED]
    return (
        _guess_query(filters).order_by(None)
        .with_only_columns(*[columns[n].label(n) for n in names])
        .join(Item, Item.id == Guess.item_id)
        .join(Document, Document.id == Item.document_id)
        .join(Corpus, Corpus.id == Document.corpus_id)
        .outerjoin(pred, (pred.c.item_id == Guess.item_id) & (pred.c.model_id == Guess.model_id))
    ), names


class WordTargets:
    """Word mode's target word and its log-prob per (item, model): Python, once per item."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.words: dict[int, str] = {}
        self.logprobs: dict[tuple[int, int | None], float | None] = {}

    def word(self, item_id: int) -> str | None:
        """The true next word; None at a stem (no true continuation)."""
        if item_id not in self.words:
            item = self.session.get(Item, item_id)
            self.words[item_id] = target_word(item.document, item)
        return self.words[item_id]

    def logprob(self, item_id: int, model_id: int | None) -> float | None:
        key = (item_id, model_id)
        if key not in self.logprobs:
            self.logprobs[key] = None if model_id is None or self.word(item_id) is None else self.session.scalar(
                select(WordScore.logprob).where(
                    WordScore.item_id == item_id, WordScore.model_id == model_id,
                    WordScore.word == self.word(item_id),
                )
            )
        return self.logprobs[key]


def guess_batches(session: Session, filters: ExportFilters, token_text) -> Iterator[pa.RecordBatch]:
    """The guesses table as Arrow record batches, columns in schema order; datetime columns as
    the database gives them (see _sql_batches)."""
    stmt, names = _guesses_select(filters)
    numbers, words = AnswerNumbers(), WordTargets(session)
    for arrays in _sql_batches(session, stmt, [_GUESS_KINDS[n] for n in names]):
        col = dict(zip(names, arrays))
        col["answer_first_token_text"] = _token_texts(col["answer_first_token_id"], token_text)
        col["model_top1_text"] = _token_texts(col["model_top1_id"], token_text)
        col["answer_index"] = numbers(col["participant_id"])
        is_word = pc.equal(col["mode"], "word")
        if pc.any(is_word).as_py():
            rows = pc.indices_nonzero(is_word)
            keys = zip(col["item_id"].take(rows).to_pylist(), col["model_id"].take(rows).to_pylist())
            keys = list(keys)
            col["target_text"] = pc.replace_with_mask(
                col["target_text"], is_word, pa.array([words.word(i) for i, _m in keys], pa.string()))
            col["model_target_logprob"] = pc.replace_with_mask(
                col["model_target_logprob"], is_word,
                pa.array([words.logprob(i, m) for i, m in keys], pa.float64()))
        yield pa.RecordBatch.from_arrays([col[n] for n in GUESS_COLUMNS], names=GUESS_COLUMNS)



def guess_rows(session: Session, filters: ExportFilters, token_text) -> Iterator[tuple]:
    """The same rows one tuple at a time (schema order), for callers that want Python values."""
    for batch in guess_batches(session, filters, token_text):
        yield from zip(*(column.to_pylist() for column in batch.columns))


# ------------------------------------------------------------------------------------ items


def _ordered_aggregates(session: Session) -> bool:
    """Whether the database that will run the items query has string_agg(... ORDER BY ...):
    PostgreSQL, and SQLite from 3.44 (ADBC's driver bundles a recent one; Python's may be older)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        return True
    if connection.dialect.name != "sqlite":
        return False
    adbc = _adbc_connect(connection)
    if adbc is None:
        version = connection.exec_driver_sql("SELECT sqlite_version()").scalar()
    else:
        with adbc, adbc.cursor() as cursor:
            cursor.execute("SELECT sqlite_version()")
            version = cursor.fetchone()[0]
    return tuple(int(part) for part in version.split(".")[:2]) >= (3, 44)


def _items_select(session: Session, filters: ExportFilters):
    """One row per answered item, joined in the database, and (when the database cannot build
    answer_counts itself) the grouped counts for _fold_item_counts."""
    answers = _guess_query(filters).with_only_columns(
        Guess.item_id, Guess.model_id, Guess.first_token_id, Guess.skipped
    ).order_by(None).subquery()
    # One pass over the answers: (item, first token, skip) groups. "+ 0": SQLite would otherwise
    # walk the item_id index and look every answer up in the table, several times slower.
    groups = select(
        (answers.c.item_id + 0).label("item_id"), answers.c.first_token_id.label("token"),
        answers.c.skipped, func.min(answers.c.model_id).label("model_id"),
        func.count().label("n"),
    ).group_by(literal_column("1"), answers.c.first_token_id, answers.c.skipped).subquery()
    counts = null()
    fold = None
    if _ordered_aggregates(session):
        # {"token": answers, ...} as compact JSON text, tokens in ascending order, skips left out.
        pair = case(
            ((groups.c.token.is_not(None)) & groups.c.skipped.is_(False),
             literal('"') + cast(groups.c.token, Text) + literal('":') + cast(groups.c.n, Text)),
            else_=null())
        joined = aggregate_order_by(func.string_agg(pair, literal(","), type_=Text),
                                    groups.c.token)
        counts = literal("{") + func.coalesce(joined, "") + literal("}")
    else:
        fold = (select(groups.c.item_id, groups.c.token, groups.c.skipped, groups.c.model_id,
                       groups.c.n).order_by(groups.c.item_id, groups.c.token))
    per_item = select(groups.c.item_id, func.min(groups.c.model_id).label("model_id"),
                      func.sum(groups.c.n).label("n"), counts.label("counts")
                      ).group_by(groups.c.item_id).subquery()
    following = aliased(Item)
    columns = {
        "item_id": per_item.c.item_id, "document_id": Item.document_id, "corpus": Corpus.name,
        "position": Item.position, "prefix_text": func.substr(Document.text, 1, Item.char_start),
        "target_token_id": Item.token_id, "target_text": Item.token_text,
        "next_token_text": following.token_text, "model_id": Prediction.model_id,
        "model_target_logprob": Prediction.target_logprob,
        "model_target_rank": Prediction.target_rank, "model_top1_id": Prediction.top1_id,
        "model_entropy": Prediction.entropy, "model_top_k": cast(Prediction.top_k, Text),
        "model_logz": cast(Prediction.logz, Text),
        "model_alternatives": cast(Prediction.alternatives, Text), "n_answers": per_item.c.n,
        "answer_counts": per_item.c.counts,
    }
    stmt = (
        select(*[columns[n].label(n) for n in TABLES["items"].column_names])
        .select_from(per_item)
        .join(Item, Item.id == per_item.c.item_id)
        .join(Document, Document.id == Item.document_id)
        .join(Corpus, Corpus.id == Document.corpus_id)
        .outerjoin(following, (following.document_id == Item.document_id)
                   & (following.position == Item.position + 1))
        .outerjoin(Prediction, (Prediction.item_id == per_item.c.item_id)
                   & (Prediction.model_id == per_item.c.model_id))
    )
    return stmt, fold


def item_batches(session: Session, filters: ExportFilters) -> Iterator[pa.RecordBatch]:
    """The items table as Arrow record batches (one row per item with an exported answer)."""
    stmt, fold = _items_select(session, filters)
    names = TABLES["items"].column_names
    kinds = [c.type for c in TABLES["items"].columns]
    folded = None
    if fold is not None:  # an older SQLite without ordered aggregates: counts folded in Python
        folded = _fold_item_counts(session.execute(fold.execution_options(yield_per=BATCH_ROWS)))
    for arrays in _sql_batches(session, stmt, kinds, ITEM_BATCH_ROWS):
        if folded is not None:
            counts = [next(folded) for _ in range(len(arrays[0]))]
            assert [c[0] for c in counts] == arrays[0].to_pylist(), "items out of step"
            arrays[-1] = pa.array([_json_cell(c[3]) for c in counts], pa.string())
        yield pa.RecordBatch.from_arrays(arrays, names=names)


def item_rows(session: Session, filters: ExportFilters, token_text=None) -> Iterator[tuple]:
    """The items table one tuple at a time (schema order)."""
    for batch in item_batches(session, filters):
        yield from zip(*(column.to_pylist() for column in batch.columns))


def _fold_item_counts(groups) -> Iterator[tuple[int, int | None, int, dict[str, int]]]:
    """(item, first token, skipped, min model, n) groups in item order -> per item
    (item id, model id, answers including skips, {first token id: answers without skips}).
    The portable answer counts, for databases _answer_counts has no SQL for."""
    current = None
    for item_id, token, skipped, model_id, n in groups:
        if current is None or current[0] != item_id:
            if current is not None:
                yield tuple(current)
            current = [item_id, model_id, 0, {}]
        if model_id is not None and (current[1] is None or model_id < current[1]):
            current[1] = model_id
        current[2] += n
        if token is not None and not skipped:
            current[3][str(token)] = current[3].get(str(token), 0) + n
    if current is not None:
        yield tuple(current)


def _chunks_of(rows: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --------------------------------------------------------------- every model on the same answers


def _model_table_select(name: str, filters: ExportFilters):
    """answer_models or item_models: the rows of the exported answers and their items, every
    model that has them, in (id, model) order.

    Why EXISTS and not IN (exported ids): the cost follows the score rows, so an export whose
    answers have no per-model scores (most) does not materialise a million answer ids twice."""
    exported = _guess_query(filters).order_by(None)
    if name == "answer_models":
        s = AnswerModelScore
        columns = {
            "guess_id": s.guess_id, "model_id": s.model_id, "answer_logprob": s.logprob,
            "answer_n_tokens": s.n_tokens, "end_logprob": s.end_logprob,
            "first_token_logprob": s.first_token_logprob, "first_token_rank": s.first_token_rank,
            "same_tokenizer": s.same_tokenizer,
        }
        where = exported.with_only_columns(Guess.id).where(Guess.id == s.guess_id).exists()
    else:
        s = ItemModelScore
        columns = {
            "item_id": s.item_id, "model_id": s.model_id, "target_logprob": s.target_logprob,
            "target_word_logprob": s.target_word_logprob, "entropy": s.entropy,
            "top1_text": s.top1_text, "top1_starts_word": s.top1_starts_word,
            "same_tokenizer": s.same_tokenizer,
            # The model's own log Z(T) grid at the item, from its Prediction (the full
            # vocabulary), only where its token positions are the game's; joined here, never
            # stored twice and never computed from a top-k. ('null': a JSON null stored as text.)
            "logz": case((s.same_tokenizer, func.nullif(cast(Prediction.logz, Text), "null")),
                         else_=null()),
        }
        where = exported.with_only_columns(Guess.id).where(Guess.item_id == s.item_id).exists()
        return (select(*[columns[n].label(n) for n in MODEL_TABLES[name].column_names])
                .select_from(s)
                .outerjoin(Prediction, (Prediction.item_id == s.item_id)
                           & (Prediction.model_id == s.model_id))
                .where(where))
    return select(*[columns[n].label(n) for n in MODEL_TABLES[name].column_names]).where(where)


def model_table_batches(session: Session, filters: ExportFilters,
                        name: str) -> Iterator[pa.RecordBatch]:
    """answer_models or item_models as Arrow record batches, columns in schema order."""
    table = MODEL_TABLES[name]
    kinds = [c.type for c in table.columns]
    for arrays in _sql_batches(session, _model_table_select(name, filters), kinds, order=2):
        yield pa.RecordBatch.from_arrays(arrays, names=table.column_names)


def model_table_rows(session: Session, filters: ExportFilters, name: str) -> Iterator[tuple]:
    """The same rows one tuple at a time (schema order)."""
    for batch in model_table_batches(session, filters, name):
        yield from zip(*(column.to_pylist() for column in batch.columns))


def _compared_model_ids(session: Session, filters: ExportFilters) -> set[int]:
    """Models with rows in answer_models or item_models (the models table lists them too)."""
    ids: set[int] = set()
    for name in MODEL_TABLES:
        query = _model_table_select(name, filters).subquery()
        ids |= set(session.scalars(select(query.c.model_id).distinct()))
    return ids


# ------------------------------------------------------------------------- other tables' rows


def participant_rows(session: Session, filters: ExportFilters) -> Iterator[dict[str, Any]]:
    answers = _guess_query(filters).with_only_columns(
        Guess.player_id, Guess.source, Guess.study_id, Guess.room_id, Guess.server_received_at
    ).order_by(None).subquery()
    rows = session.execute(
        select(
            answers.c.player_id, func.min(answers.c.source), func.min(answers.c.study_id),
            func.min(answers.c.room_id), func.min(answers.c.server_received_at), func.count(),
        ).group_by(answers.c.player_id).order_by(answers.c.player_id)
    ).all()
    for chunk in _chunks_of(rows, 2000):
        known = {
            p.player_id: p
            for p in session.scalars(
                select(Participant).where(Participant.player_id.in_([r[0] for r in chunk]))
            )
        }
        # duplicate_of names the first run by its exported id (the pseudonymous participant_id)
        firsts = {p.duplicate_of for p in known.values() if p.duplicate_of is not None}
        first_ids = dict(session.execute(
            select(Participant.id, Participant.player_id).where(Participant.id.in_(firsts))
        ).all()) if firsts else {}
        for player_id, source, study_id, room_id, first_at, n in chunk:
            p = known.get(player_id)
            params = (p.url_params or {}) if p else {}
            yield {
                "participant_id": player_id, "source": source, "study_id": study_id,
                "room_id": room_id, "external_id": p.external_id if p else None,
                "started_at": p.started_at if p else first_at,
                "finished_at": p.finished_at if p else None, "n_answers": n,
                "pilot": bool(p and p.pilot), "excluded": bool(p and p.excluded),
                "exclusion_reason": p.exclusion_reason if p else None,
                **{column: params.get(param) for param, column in URL_PARAM_COLUMNS.items()},
                "duplicate_of": first_ids.get(p.duplicate_of) if p and p.duplicate_of else None,
            }


# Every URL parameter a study keeps (webapp.research.participants.URL_PARAMS) has its column.
URL_PARAM_COLUMNS = {"PROLIFIC_PID": "url_prolific_pid", "STUDY_ID": "url_study_id",
                     "SESSION_ID": "url_session_id", "participant": "url_participant"}


def study_rows(session: Session, filters: ExportFilters) -> Iterator[dict[str, Any]]:
    ids = select(Guess.study_id).where(Guess.study_id.is_not(None)).distinct()
    if filters.study_id is not None:
        ids = ids.where(Guess.study_id == filters.study_id)
    for study in session.scalars(select(Study).where(Study.id.in_(ids)).order_by(Study.id)):
        settings = {
            "items_per_participant": study.items_per_participant, "order": study.order,
            "seed": study.seed, "target_responses": study.target_responses,
            "show_feedback": study.show_feedback, "ask_probability": study.ask_probability,
            "check_threshold": study.check_threshold, "corpus_id": study.corpus_id,
            "model_id": study.model_id, "consent_text": study.consent_text,
            "instructions": study.instructions, **(study.settings or {}),
        }
        yield {"study_id": study.id, "name": study.name, "mode": study.mode,
               "settings": settings, "created_at": study.created_at}


def model_rows(session: Session, model_ids: Iterable[int]) -> Iterator[dict[str, Any]]:
    for m in session.scalars(select(LanguageModel).where(LanguageModel.id.in_(list(model_ids)))):
        yield {"model_id": m.id, "key": m.key, "spec": m.spec, "name": m.name,
               "tokenizer": m.tokenizer, "n_vocab": m.n_vocab, "top_k": m.top_k,
               "temperatures": m.temperatures, "settings": m.settings}


# ------------------------------------------------------------------------------- writers
#
# Every table reaches the writers as Arrow record batches in schema order. CSV and Parquet are
# written by pyarrow (C++), JSONL by Python (native JSON values need a parse of the JSON text).


def _json_cell(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_(),
                "json": pa.string(), "datetime": pa.timestamp("us", tz="UTC")}


def _rows_batch(table: Table, rows: list[dict]) -> pa.RecordBatch:
    """A list of row dicts (the small tables) as one record batch of the schema's types."""
    arrays = []
    for c in table.columns:
        values = [row[c.name] for row in rows]
        if c.type == "json":
            values = [_json_cell(v) for v in values]
        arrays.append(pa.array(values, _ARROW_TYPES[c.type]))
    return pa.RecordBatch.from_arrays(arrays, names=table.column_names)


def _iso_text(column: pa.Array) -> pa.Array:
    """Times as ISO 8601 UTC text, exactly as the row-by-row export wrote them: SQLite's stored
    'YYYY-MM-DD HH:MM:SS.ffffff' with a T and +00:00 (unless it names an offset); timestamps
    as datetime.isoformat() in UTC would (no '.000000' for a whole second)."""
    if pa.types.is_timestamp(column.type):
        text = pc.strftime(column.cast(pa.timestamp("us", tz="UTC")),
                           format="%Y-%m-%dT%H:%M:%S+00:00")
        return pc.replace_substring_regex(text, pattern=r"\.000000\+00:00$",
                                          replacement="+00:00")
    text = pc.replace_substring(column.cast(pa.string()), pattern=" ", replacement="T",
                                max_replacements=1)
    zoned = pc.match_substring_regex(text, pattern=r"([+-].{5}|Z)$")
    return pc.if_else(zoned, text, pc.binary_join_element_wise(text, "+00:00", ""))


def _timestamps(column: pa.Array) -> pa.Array:
    if pa.types.is_timestamp(column.type):
        return column.cast(pa.timestamp("us", tz="UTC"))
    return _iso_text(column).cast(pa.timestamp("us", tz="UTC"))


# CSV cells a spreadsheet would run as a formula (or that start with the escape itself).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")
CSV_TEXT_ESCAPE = "'"
_FORMULA_STARTS = pa.array(FORMULA_START, pa.string())


def neutralise_formulas(column: pa.Array) -> pa.Array:
    """CSV only: a text cell starting with = + - @ tab, carriage return or ' gets one ' in
    front, so Excel, LibreOffice and Google Sheets show it as text instead of running it. The
    exact text is recovered by dropping the first character of every text cell that starts
    with ' (analysis.load does; numbers are never touched)."""
    starts = pc.is_in(pc.utf8_slice_codeunits(column, 0, 1), value_set=_FORMULA_STARTS)
    if not pc.any(starts).as_py():
        return column
    return pc.if_else(starts, pc.binary_join_element_wise(CSV_TEXT_ESCAPE, column, ""), column)


class CsvWriter:
    """CSV through pyarrow: header, empty cell = null, true/false, JSON as compact text, times
    ISO 8601 UTC, floats in shortest round-trip form, strings quoted."""

    def __init__(self, sink, table: Table) -> None:
        self.table = table
        self.schema = pa.schema([(c.name, pa.string() if c.type == "datetime"
                                  else _ARROW_TYPES[c.type]) for c in table.columns])
        self.writer = pa_csv.CSVWriter(sink, self.schema)

    def write(self, batch: pa.RecordBatch) -> None:
        arrays = []
        for c, column in zip(self.table.columns, batch.columns):
            if c.type == "datetime":
                column = _iso_text(column)
            elif c.type == "str":
                column = neutralise_formulas(column)
            arrays.append(column)
        self.writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


class JsonlWriter:
    def __init__(self, sink, table: Table) -> None:
        self.sink = sink
        self.table = table
        self.names = table.column_names

    def write(self, batch: pa.RecordBatch) -> None:
        for start in range(0, batch.num_rows, 512):  # Python objects for few rows at a time
            self._write(batch.slice(start, 512))

    def _write(self, batch: pa.RecordBatch) -> None:
        columns = []
        for c, column in zip(self.table.columns, batch.columns):
            if c.type == "datetime":
                values = _iso_text(column).to_pylist()
            elif c.type == "json":
                values = [None if v is None else json.loads(v) for v in column.to_pylist()]
            elif c.type == "float":  # JSON has no infinities (only -inf, p = 0, can occur)
                values = [v if v is None or math.isfinite(v) else None for v in column.to_pylist()]
            else:
                values = column.to_pylist()
            columns.append(values)
        names = self.names
        lines = [json.dumps(dict(zip(names, row)), ensure_ascii=False, separators=(",", ":"))
                 for row in zip(*columns)]
        if lines:
            self.sink.write(("\n".join(lines) + "\n").encode("utf-8"))

    def close(self) -> None:
        pass


class ParquetWriter:
    """Parquet through pyarrow, zstd, one row group per batch; JSON columns as JSON text, times
    as timestamp[us, UTC]."""

    def __init__(self, sink, table: Table) -> None:
        self.table = table
        self.schema = pa.schema([pa.field(c.name, _ARROW_TYPES[c.type], c.nullable)
                                 for c in table.columns])
        self.writer = pq.ParquetWriter(sink, self.schema, compression="zstd")
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        arrays = [_timestamps(column) if c.type == "datetime" else column
                  for c, column in zip(self.table.columns, batch.columns)]
        self.writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.rows += batch.num_rows

    def close(self) -> None:
        if self.rows == 0:  # an empty table still gets its schema
            self.writer.write_table(self.schema.empty_table())
        self.writer.close()


WRITERS = {"csv": CsvWriter, "jsonl": JsonlWriter, "parquet": ParquetWriter}


def _write_table(sink, fmt: str, table: Table, batches: Iterable[pa.RecordBatch],
                 counter=None) -> Iterator[int]:
    """Write the batches to the open binary file `sink`, yielding the running row count after
    each batch (a streamed zip sends what is ready; the progress bar moves)."""
    writer = WRITERS[fmt](sink, table)
    count = 0
    try:
        for batch in batches:
            writer.write(batch)
            count += batch.num_rows
            if counter is not None:
                counter.update(batch.num_rows)
            yield count
    finally:
        writer.close()
    yield count


def _small_table(table: Table, rows: Iterable[dict]) -> Iterator[pa.RecordBatch]:
    for chunk in _chunks_of(rows, ITEM_BATCH_ROWS):
        yield _rows_batch(table, chunk)


def _codebook_text() -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["table", "column", "type", "unit", "nullable", "description"])
    writer.writeheader()
    writer.writerows(codebook_rows())
    return text.getvalue()


def awaiting_model_numbers(session: Session, filters: ExportFilters) -> int:
    """Exported answers still without their exact model numbers (webapp.jobs fills them in the
    background: a word answer's word log-prob, an answer outside the stored top-k)."""
    from .jobs import lacks_model_numbers

    return session.scalar(select(func.count()).select_from(
        _guess_query(filters).where(lacks_model_numbers()).order_by(None).subquery()))


def items_without_target(session: Session, filters: ExportFilters) -> int:
    """Exported items that are stems: no true continuation (empty target_token_id)."""
    return session.scalar(
        _guess_query(filters).with_only_columns(func.count(func.distinct(Guess.item_id)))
        .order_by(None).join(Item, Item.id == Guess.item_id).where(Item.token_id.is_(None)))


def readme_text(manifest: dict) -> str:
    """The export's README: what is in it, how it was made, and the methods behind the numbers."""
    from .words import __doc__ as word_method

    lines = [
        "# humanlm export",
        "",
        f"Exported {manifest['exported_at']} by humanlm {__version__} (schema {SCHEMA_VERSION}),",
        f"format {manifest['format']}. Filters: {json.dumps(manifest['filters'])}.",
        "",
    ]
    awaiting = manifest.get("answers_awaiting_model_numbers") or 0
    if awaiting:
        lines += [
            (f"**{awaiting} answer{'s' if awaiting != 1 else ''} still "
             f"await{'' if awaiting != 1 else 's'} the model's exact numbers**: their"),
            "model_answer_logprob (and, for an answer",
            "outside the stored top-k, model_answer_rank) is empty. The background jobs",
            "(`humanlm serve` or `humanlm worker`; by hand `humanlm score --fill-guesses`) compute",
            "them within minutes of the answer; export again later for complete numbers",
            "(manifest.json: answers_awaiting_model_numbers).",
            "",
        ]
    stems = manifest.get("items_without_target") or 0
    if stems:
        lines += [
            (f"**{stems} item{'s' if stems != 1 else ''} ha{'ve' if stems != 1 else 's'} no true "
             "continuation** (sentence stems imported without a target): their target_token_id,"),
            "target_text, model_target_logprob and model_target_rank are empty, and so is",
            "is_correct of their answers (match_rule no_target): accuracy and the",
            "target log-prob measures do not apply to them. Everything about the answers and the",
            "model's distribution is there (model_answer_logprob, model_entropy, model_top_k,",
            "model_logz), so log-likelihood, simulator fit, KL/JS to the crowd, entropy and the",
            "best temperature work on them (manifest.json: items_without_target).",
            "",
        ]
    lines += [
        "Tables (every column is defined in codebook.csv):",
        "",
    ]
    for name, table in EXPORT_TABLES.items():
        rows = manifest["tables"][name]["rows"]
        lines.append(f"- `{manifest['tables'][name]['file']}` ({rows} rows): {table.description}")
    lines += [
        "",
        "## Conventions",
        "",
        "- Log-probabilities are natural logs (nats) over the model's FULL vocabulary at",
        "  temperature 1, never renormalised over the stored top-k.",
        "- Token mode: an answer is compared with the model by its FIRST token, tokenized on its",
        "  own exactly as typed (a leading space is part of the token).",
        "- p_T(token) = exp(logprob / T - model_logz[i]) for T = models.temperatures[i], exactly.",
        "- CSV: empty cell = null, booleans true/false, JSON columns as compact JSON text,",
        "  times ISO 8601 UTC. JSONL: native JSON values. Parquet: JSON columns as JSON text.",
        "- CSV only: a text cell that began with = + - @, a tab, a carriage return or ' has one",
        "  ' put in front, so a spreadsheet shows it instead of running it as a formula. For the",
        "  exact text, drop the first character of every text cell that starts with ' (in",
        "  pandas: df[col].str.removeprefix(\"'\"); manifest.json says csv_text_escape;",
        "  analysis.load does it). Numbers are never changed; JSONL and Parquet hold the raw text.",
        "- Pilot answers are excluded unless the filters say include_pilot; excluded",
        "  participants are kept and flagged unless include_excluded is false.",
        "- Comprehension checks are rows of guesses too: an answered check has match_rule",
        "  `check` (is_correct = passed); a skipped check is a `skip` whose item_id is listed in",
        "  studies.settings.checks. They are not test items: leave them out of accuracy.",
        "- answer_models and item_models hold every model's numbers on the same answers and",
        "  items, each under the model's OWN tokens (chain rule), so models with different",
        "  tokenizers compare: one row per (answer, model) and (item, model); pivot on",
        "  model_id to put models side by side. The guesses and items columns model_* are the",
        "  numbers of one model (model_id), per position of the corpus's own tokens.",
        "  item_models.logz is each same-tokenizer model's own log Z(T) grid (empty for other",
        "  models): p_T(answer) = exp(answer_models.first_token_logprob / T - logz[i]).",
        "- participants keeps every URL parameter of the study link (url_prolific_pid,",
        "  url_study_id, url_session_id, url_participant); duplicate_of names the first run",
        "  started with the same platform id that a later run could not resume.",
        "",
        "## Word mode: method and limits",
        "",
        (word_method or "").strip(),
        "",
        "## Models",
        "",
    ]
    for m in manifest["models"]:
        lines.append(f"- model {m['model_id']}: {m['key']} ({m['name']}, tokenizer {m['tokenizer']})")
    return "\n".join(lines) + "\n"


def _check_options(session: Session, fmt: str, filters: ExportFilters) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}")
    try:
        import pyarrow  # noqa: F401  (a dependency; the check names the fix if it went missing)
    except ImportError:
        raise ExportError(
            "the export needs pyarrow, a dependency of humanlm: reinstall humanlm or "
            "pip install 'humanlm[parquet]'"
        ) from None
    check_filters(session, filters)


def _export_members(session: Session, fmt: str, filters: ExportFilters, token_text,
                    open_member, progress: bool, rows: dict[str, int]) -> Iterator[None]:
    """Write every file of the export through `open_member(name)` (a new binary file), yielding
    after each batch: the tables first, then manifest.json (which counts their rows), the
    codebook and README.md. `rows` receives the row count of each table."""
    shown = filters.as_dict()
    filters = replace(filters, since=_utc(filters.since), until=_utc(filters.until))
    total = None
    if progress:
        total = session.scalar(select(func.count()).select_from(
            _guess_query(filters).order_by(None).subquery()))
    model_ids = set(session.scalars(
        _guess_query(filters).with_only_columns(Guess.model_id).order_by(None).distinct()
    )) - {None}
    model_ids |= _compared_model_ids(session, filters)
    models = list(model_rows(session, model_ids))
    awaiting = awaiting_model_numbers(session, filters)
    stems = items_without_target(session, filters)
    tables = {
        "guesses": guess_batches(session, filters, token_text),
        "items": item_batches(session, filters),
        "participants": _small_table(TABLES["participants"], participant_rows(session, filters)),
        "studies": _small_table(TABLES["studies"], study_rows(session, filters)),
        "models": _small_table(TABLES["models"], models),
        **{name: model_table_batches(session, filters, name) for name in MODEL_TABLES},
    }
    # The bar follows the answers (nearly all of the work); the other tables take moments.
    with tqdm(total=total, disable=not progress, unit=" answers", unit_scale=True,
              desc="guesses", file=sys.stderr, dynamic_ncols=True) as bar:
        for table, batches in tables.items():
            with open_member(f"{table}.{fmt}") as sink:
                for count in _write_table(sink, fmt, EXPORT_TABLES[table], batches,
                                          bar if table == "guesses" else None):
                    rows[table] = count
                    yield
            bar.close()
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "humanlm_version": __version__,
        "exported_at": datetime.now(UTC).isoformat(),
        "format": fmt,
        "filters": shown,
        "tables": {name: {"file": f"{name}.{fmt}", "rows": rows[name]} for name in EXPORT_TABLES},
        "models": models,
        # Answers whose exact model numbers the background jobs have not computed yet (or
        # could not): their model_answer_logprob is empty. Counted when the export started.
        "answers_awaiting_model_numbers": awaiting,
        # Exported items without a true continuation (stems): no target, no correctness.
        "items_without_target": stems,
    }
    if fmt == "csv":
        manifest["csv_text_escape"] = CSV_TEXT_ESCAPE
    files = {
        "manifest.json": json.dumps(manifest, indent=2, ensure_ascii=False),
        "codebook.csv": _codebook_text(),
        "README.md": readme_text(manifest),
    }
    for name, text in files.items():
        with open_member(name) as sink:
            sink.write(text.encode("utf-8"))
    yield


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def _zip(fileobj, fmt: str) -> zipfile.ZipFile:
    """Parquet is compressed already (zstd): stored. Text: deflate level 1, the fast end (the
    download is limited by the network or the disk, not by the last few per cent of size)."""
    if fmt == "parquet":
        return zipfile.ZipFile(fileobj, "w", zipfile.ZIP_STORED)
    return zipfile.ZipFile(fileobj, "w", zipfile.ZIP_DEFLATED, compresslevel=1)


def _zip_member(zf: zipfile.ZipFile):
    return lambda name: zf.open(name, "w", force_zip64=True)


def _progress_default() -> bool:
    """A progress bar on an interactive terminal outside web requests (`humanlm export`)."""
    from flask import has_request_context

    return sys.stderr.isatty() and not has_request_context()


def write_export(
    session: Session, out: Path, fmt: str, filters: ExportFilters, *, as_zip: bool = False,
    token_text=None, progress: bool | None = None,
) -> ExportSummary:
    """Write the export to a new folder `out` (or the zip file `out`); all or nothing.

    Everything is written to a temporary folder or file next to the destination first and moved
    into place at the end, so a failed export leaves no half-written files behind. `progress`
    shows a bar with rate and ETA on stderr (default: when stderr is a terminal).
    """
    _check_options(session, fmt, filters)
    out = Path(out)
    if out.exists():
        raise ExportError(f"{out} already exists; choose a new name")
    if not out.parent.exists():
        raise ExportError(f"the folder {out.parent} does not exist")
    token_text = token_text or tokenizer_texts()
    progress = _progress_default() if progress is None else progress
    work = Path(tempfile.mkdtemp(prefix=".humanlm-export-", dir=out.parent))
    tmp_zip = work.with_suffix(".zip")
    rows: dict[str, int] = {}
    try:
        if as_zip:
            with open(tmp_zip, "wb") as fh, _zip(fh, fmt) as zf:
                for _ in _export_members(session, fmt, filters, token_text, _zip_member(zf),
                                         progress, rows):
                    pass
            os.replace(tmp_zip, out)
            shutil.rmtree(work)
        else:
            def new_file(name: str):
                return open(work / name, "wb")  # closed by _export_members

            for _ in _export_members(session, fmt, filters, token_text, new_file, progress, rows):
                pass
            os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        tmp_zip.unlink(missing_ok=True)
        raise
    return ExportSummary(out, fmt, {name: rows[name] for name in EXPORT_TABLES})


class _Pipe(io.RawIOBase):
    """A write-only, unseekable file that keeps what is written until taken: zipfile writes a
    streamed zip into it (data descriptors after each member) and the response sends it."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        return data


def stream_zip(session: Session, fmt: str, filters: ExportFilters, *, token_text=None,
               block: int = 1 << 20) -> Iterator[bytes]:
    """The export as a zip for an HTTP download, produced while it is sent: bytes are handed
    out as soon as about `block` of them are ready, so the first arrive within a batch of
    answers and nothing is kept on disk or in memory beyond a batch. Bad options raise
    ExportError here, before the first byte."""
    _check_options(session, fmt, filters)
    token_text = token_text or tokenizer_texts()

    def blocks() -> Iterator[bytes]:
        pipe = _Pipe()
        with _zip(pipe, fmt) as zf:
            for _ in _export_members(session, fmt, filters, token_text, _zip_member(zf), False,
                                     {}):
                if pipe.size >= block:
                    yield pipe.take()
        yield pipe.take()  # the rest and the central directory

    return blocks()


def tokenizer_texts():
    """Token id -> display text, from the configured tokenizer (cached by load_tokenizer)."""
    from flask import current_app, has_app_context

    from .lm import display_text, load_tokenizer

    spec = current_app.config["MODEL"] if has_app_context() else DEFAULT_MODEL
    tokenizer = load_tokenizer(spec)
    cache: dict[int, str] = {}

    def text(token_id: int) -> str:
        if token_id not in cache:
            cache[token_id] = display_text(tokenizer.token_bytes(token_id))
        return cache[token_id]

    return text
