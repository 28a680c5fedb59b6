"""Streaming export of everything humanlm recorded, in the format analysis/schema.py defines.

Why streaming: a study or a season of classroom games can hold millions of answers. Rows are
read from the database in chunks (server-side cursors where the driver has them) and written as
they come, so memory depends on the chunk size and the number of distinct items, not on the
number of answers. Parquet is written one row group per chunk.

Output: a folder (or a zip of it) with one file per table (guesses, items, participants,
studies, models) in one format (csv, jsonl, parquet), plus manifest.json (versions, filters,
row counts, model settings), codebook.csv and README.md generated from the same schema.
"""

from __future__ import annotations

import csv
import json
import math
import operator
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Text, cast, func, select, tuple_
from sqlalchemy.orm import Session

from analysis.schema import FORMATS, SCHEMA_VERSION, TABLES, Table, codebook_rows

from .config import DEFAULT_MODEL
from .models import (
    Corpus,
    Document,
    Guess,
    Item,
    LanguageModel,
    Participant,
    Prediction,
    Room,
    Study,
    WordScore,
)
from .version import __version__
from .words import target_word

CHUNK_ROWS = 5_000


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


# ------------------------------------------------------------------------------ guesses rows


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


class JsonText(str):
    """JSON already serialised by the database: CSV and Parquet write it as it is."""


class ItemFacts:
    """What answer rows repeat about their items, bulk-loaded once per chunk of answers.

    Bounded: at most MAX_CACHED items are kept; beyond that the cache starts over, so memory
    does not grow with the number of answers.
    """

    MAX_CACHED = 50_000

    def __init__(self, session: Session, token_text) -> None:
        self.session = session
        self.token_text = token_text
        self.items: dict[int, dict] = {}
        self.predictions: dict[tuple[int, int], dict] = {}
        self.words: dict[tuple[int, int], float | None] = {}

    def load(self, pairs: set[tuple[int, int | None]]) -> None:
        """Make sure facts for these (item, model) pairs are cached, in two queries."""
        if len(self.items) > self.MAX_CACHED:
            self.items.clear()
            self.predictions.clear()
            self.words.clear()
        new_items = {i for i, _m in pairs if i not in self.items}
        if new_items:
            rows = self.session.connection().execute(
                select(Item.id, Item.document_id, Item.position, Item.token_id, Item.token_text,
                       Item.char_start, Document.text, Corpus.name)
                .join(Document, Item.document_id == Document.id)
                .join(Corpus, Document.corpus_id == Corpus.id)
                .where(Item.id.in_(new_items))
            ).all()
            for item_id, doc_id, position, token_id, token_text, char_start, text, corpus in rows:
                self.items[item_id] = {
                    "document_id": doc_id, "corpus": corpus, "position": position,
                    "prefix_text": text[:char_start], "target_token_id": token_id,
                    "target_text": token_text,
                }
        wanted = {(i, m) for i, m in pairs if m is not None and (i, m) not in self.predictions}
        if wanted:
            rows = self.session.connection().execute(
                select(Prediction.item_id, Prediction.model_id, Prediction.target_logprob,
                       Prediction.target_rank, Prediction.top1_id, Prediction.entropy)
                .where(Prediction.item_id.in_({i for i, _ in wanted}),
                       Prediction.model_id.in_({m for _, m in wanted}))
            ).all()
            for item_id, model_id, lp, rank, top1, entropy in rows:
                self.predictions[(item_id, model_id)] = {
                    "target_logprob": lp, "target_rank": rank, "top1_id": top1,
                    "top1_text": self.token_text(top1), "entropy": entropy,
                }

    def prediction(self, item_id: int, model_id: int | None) -> dict:
        return self.predictions.get((item_id, model_id), _NO_PREDICTION)

    def target_word(self, item_id: int) -> str:
        facts = self.items[item_id]
        if "target_word" not in facts:
            item = self.session.get(Item, item_id)
            facts["target_word"] = target_word(item.document, item)
        return facts["target_word"]

    def target_word_logprob(self, item_id: int, model_id: int | None) -> float | None:
        key = (item_id, model_id)
        if key not in self.words:
            word = self.target_word(item_id)
            self.words[key] = None if model_id is None else self.session.scalar(
                select(WordScore.logprob).where(
                    WordScore.item_id == item_id, WordScore.model_id == model_id,
                    WordScore.word == word,
                )
            )
        return self.words[key]


_NO_PREDICTION = {"target_logprob": None, "target_rank": None, "top1_id": None,
                  "top1_text": None, "entropy": None}


GUESS_COLUMNS = (
    "guess_id", "participant_id", "source", "study_id", "room_id", "item_id", "document_id",
    "corpus", "position", "mode", "prefix_text", "target_text", "target_token_id", "answer_text",
    "answer_token_ids", "answer_first_token_id", "answer_first_token_text", "skipped",
    "is_correct", "match_rule", "answer_index", "reaction_ms", "server_received_at", "stored_at",
    "reported_probability", "model_id", "model_answer_logprob", "model_answer_rank",
    "model_target_logprob", "model_target_rank", "model_top1_id", "model_top1_text",
    "model_entropy", "pilot", "excluded", "external",
)
assert list(GUESS_COLUMNS) == TABLES["guesses"].column_names, "guess_rows must follow the schema"


def guess_rows(session: Session, filters: ExportFilters, token_text) -> Iterator[tuple]:
    """One tuple per exported answer, in the order of GUESS_COLUMNS (= the schema's).

    Tuples, not dicts, and the Core result, not ORM rows: this loop runs once per answer, and a
    million answers should export in seconds.
    """
    facts = ItemFacts(session, token_text)
    answer_index: dict[str, int] = {}
    connection = session.connection()
    time_text = _time_text_reader(connection.dialect.name)
    result = connection.execute(
        _guess_query(filters, times_as_text=time_text is not None),
        execution_options={"yield_per": CHUNK_ROWS, "stream_results": True},
    )
    to_time = time_text or (lambda value: value)
    for chunk in result.partitions():
        facts.load({(r[5], r[17]) for r in chunk})
        items, prediction = facts.items, facts.prediction
        for (gid, player, source, study_id, room_id, item_id, mode, raw_text, token_ids,
             first_id, skipped, correct, rule, reaction, received, stored, reported, model_id,
             model_lp, model_rank, word_lp, pilot, excluded) in chunk:
            item = items[item_id]
            pred = prediction(item_id, model_id)
            index = answer_index[player] = answer_index.get(player, 0) + 1
            if mode == "word":
                target, answer_lp, answer_rank = facts.target_word(item_id), word_lp, None
                target_lp, target_rank = facts.target_word_logprob(item_id, model_id), None
            else:
                target, answer_lp, answer_rank = item["target_text"], model_lp, model_rank
                target_lp, target_rank = pred["target_logprob"], pred["target_rank"]
            yield (
                gid, player, source, study_id, room_id, item_id, item["document_id"],
                item["corpus"], item["position"], mode, item["prefix_text"], target,
                item["target_token_id"], raw_text, JsonText(token_ids), first_id,
                token_text(first_id) if first_id is not None else None, bool(skipped),
                bool(correct), rule, index, reaction, to_time(received), to_time(stored),
                reported, model_id, answer_lp, answer_rank, target_lp, target_rank,
                pred["top1_id"], pred["top1_text"], pred["entropy"], bool(pilot),
                bool(excluded), source == "external",
            )


def _time_text_reader(dialect: str):
    """SQLite keeps UTC times as text 'YYYY-MM-DD HH:MM:SS.ffffff': turn that into ISO 8601
    directly instead of parsing a datetime per value (other databases return datetimes)."""
    if dialect != "sqlite":
        return None

    def iso(text: str | None) -> str | None:
        if text is None:
            return None
        text = text.replace(" ", "T", 1)
        return text if text[-6] in "+-" or text[-1] == "Z" else text + "+00:00"

    return iso


# ------------------------------------------------------------------------- other tables' rows


def item_rows(session: Session, filters: ExportFilters, token_text) -> Iterator[dict[str, Any]]:
    """One row per item with an exported answer. The answers are counted in ONE grouped query
    (item, first token, skip), streamed in item order and folded into per-item counts."""
    answers = _guess_query(filters).with_only_columns(
        Guess.item_id, Guess.model_id, Guess.first_token_id, Guess.skipped
    ).order_by(None).subquery()
    groups = session.execute(
        select(answers.c.item_id, answers.c.first_token_id, answers.c.skipped,
               func.min(answers.c.model_id), func.count())
        .group_by(answers.c.item_id, answers.c.first_token_id, answers.c.skipped)
        .order_by(answers.c.item_id)
        .execution_options(yield_per=CHUNK_ROWS)
    )
    facts = ItemFacts(session, token_text)
    for chunk in _chunks_of(_fold_item_counts(groups), 2000):
        facts.load({(item_id, model_id) for item_id, model_id, _n, _c in chunk})
        following = _next_token_texts(session, [facts.items[i] for i, _m, _n, _c in chunk])
        predictions = {
            (row[0], row[1]): row
            for row in session.execute(
                select(Prediction.item_id, Prediction.model_id, cast(Prediction.top_k, Text),
                       cast(Prediction.logz, Text))
                .where(Prediction.item_id.in_({i for i, _m, _n, _c in chunk}),
                       Prediction.model_id.in_({m for _i, m, _n, _c in chunk if m is not None}))
            )
        }
        for item_id, model_id, n_answers, answer_counts in chunk:
            item = facts.items[item_id]
            pred = facts.prediction(item_id, model_id)
            raw = predictions.get((item_id, model_id))
            yield {
                "item_id": item_id, "document_id": item["document_id"], "corpus": item["corpus"],
                "position": item["position"], "prefix_text": item["prefix_text"],
                "target_token_id": item["target_token_id"], "target_text": item["target_text"],
                "next_token_text": following.get((item["document_id"], item["position"] + 1)),
                "model_id": model_id if raw else None,
                "model_target_logprob": pred["target_logprob"],
                "model_target_rank": pred["target_rank"], "model_top1_id": pred["top1_id"],
                "model_entropy": pred["entropy"],
                "model_top_k": JsonText(raw[2]) if raw else None,
                "model_logz": JsonText(raw[3]) if raw else None,
                "n_answers": n_answers, "answer_counts": answer_counts,
            }


def _fold_item_counts(groups) -> Iterator[tuple[int, int | None, int, dict[str, int]]]:
    """(item, first token, skipped, min model, n) groups in item order -> per item
    (item id, model id, answers including skips, {first token id: answers without skips})."""
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


def _next_token_texts(session: Session, items: list[dict]) -> dict[tuple[int, int], str]:
    """Text of the token after each item, in one query: (document id, position) -> text."""
    wanted = {(it["document_id"], it["position"] + 1) for it in items}
    if not wanted:
        return {}
    rows = session.connection().execute(
        select(Item.document_id, Item.position, Item.token_text)
        .where(tuple_(Item.document_id, Item.position).in_(sorted(wanted)))
    )
    return {(doc, pos): text for doc, pos, text in rows}


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
        for player_id, source, study_id, room_id, first_at, n in chunk:
            p = known.get(player_id)
            yield {
                "participant_id": player_id, "source": source, "study_id": study_id,
                "room_id": room_id, "external_id": p.external_id if p else None,
                "started_at": p.started_at if p else first_at,
                "finished_at": p.finished_at if p else None, "n_answers": n,
                "pilot": bool(p and p.pilot), "excluded": bool(p and p.excluded),
                "exclusion_reason": p.exclusion_reason if p else None,
            }


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


def _json_cell(value: Any) -> Any:
    if value is None or value.__class__ is JsonText:
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _datetime_cell(value: Any) -> Any:
    """ISO 8601 text (values read as text from SQLite already are)."""
    return value if value is None or value.__class__ is str else value.isoformat()


_BOOL_TEXT = {True: "true", False: "false", None: None}


def _csv_column(kind: str, values: tuple) -> list:
    """Convert one column of a chunk (column-wise: far fewer Python calls than cell by cell).
    csv.writer already writes None as an empty cell and floats as repr ("-inf" stays "-inf")."""
    if kind == "bool":
        return [_BOOL_TEXT[v] for v in values]
    if kind == "json":
        return [_json_cell(v) for v in values]
    return [_datetime_cell(v) for v in values]


class CsvWriter:
    def __init__(self, path: Path, table: Table) -> None:
        self.fh = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self.writer = csv.writer(self.fh)
        self.names = table.column_names
        self.get = operator.itemgetter(*self.names)
        self.converted = [
            (i, c.type) for i, c in enumerate(table.columns) if c.type in ("bool", "json", "datetime")
        ]
        self.writer.writerow(self.names)

    def write(self, rows: list) -> None:
        columns = list(zip(*(r if isinstance(r, tuple) else self.get(r) for r in rows)))
        for i, kind in self.converted:
            columns[i] = _csv_column(kind, columns[i])
        self.writer.writerows(zip(*columns))

    def close(self) -> None:
        self.fh.close()


class JsonlWriter:
    def __init__(self, path: Path, table: Table) -> None:
        self.fh = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self.names = table.column_names
        self.get = operator.itemgetter(*self.names)
        self.kinds = [c.type for c in table.columns]

    def write(self, rows: list) -> None:
        lines = []
        for r in rows:
            values = r if isinstance(r, tuple) else self.get(r)
            obj = {}
            for name, kind, value in zip(self.names, self.kinds, values):
                if value is None:
                    pass
                elif kind == "datetime":
                    value = _datetime_cell(value)
                elif isinstance(value, JsonText):
                    value = json.loads(value)
                elif kind == "float" and not math.isfinite(value):
                    value = None  # JSON has no infinities (only -inf, p = 0, can occur)
                obj[name] = value
            lines.append(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))
        self.fh.write("\n".join(lines) + "\n" if lines else "")

    def close(self) -> None:
        self.fh.close()


class ParquetWriter:
    """Parquet through pyarrow (the optional `parquet` extra), one row group per chunk."""

    def __init__(self, path: Path, table: Table) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.types = {
            "int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_(),
            "json": pa.string(), "datetime": pa.timestamp("us", tz="UTC"),
        }
        self.pa = pa
        self.get = operator.itemgetter(*table.column_names)
        self.kinds = [c.type for c in table.columns]
        self.schema = pa.schema([(c.name, self.types[c.type], c.nullable) for c in table.columns])
        self.writer = pq.ParquetWriter(str(path), self.schema, compression="zstd")
        self.rows = 0

    def write(self, rows: list) -> None:
        pa = self.pa
        tuples = [r if isinstance(r, tuple) else self.get(r) for r in rows]
        arrays = []
        for kind, values in zip(self.kinds, zip(*tuples)):
            if kind == "json":
                arrays.append(pa.array([_json_cell(v) for v in values], pa.string()))
            elif kind == "datetime" and any(isinstance(v, str) for v in values):
                arrays.append(pa.array(values, pa.string()).cast(self.types["datetime"]))
            else:
                arrays.append(pa.array(values, self.types[kind]))
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.rows += len(rows)

    def close(self) -> None:
        if self.rows == 0:  # an empty table still gets its schema
            self.writer.write_table(self.schema.empty_table())
        self.writer.close()


WRITERS = {"csv": CsvWriter, "jsonl": JsonlWriter, "parquet": ParquetWriter}


def _write_table(folder: Path, fmt: str, table: Table, rows: Iterable[dict]) -> int:
    writer = WRITERS[fmt](folder / f"{table.name}.{fmt}", table)
    count, chunk = 0, []
    try:
        for row in rows:
            chunk.append(row)
            if len(chunk) >= CHUNK_ROWS:
                writer.write(chunk)
                count += len(chunk)
                chunk = []
        if chunk:
            writer.write(chunk)
            count += len(chunk)
    finally:
        writer.close()
    return count


def _codebook(folder: Path) -> None:
    with open(folder / "codebook.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["table", "column", "type", "unit", "nullable", "description"])
        writer.writeheader()
        writer.writerows(codebook_rows())


def readme_text(manifest: dict) -> str:
    """The export's README: what is in it, how it was made, and the methods behind the numbers."""
    from .words import __doc__ as word_method

    lines = [
        "# humanlm export",
        "",
        f"Exported {manifest['exported_at']} by humanlm {__version__} (schema {SCHEMA_VERSION}),",
        f"format {manifest['format']}. Filters: {json.dumps(manifest['filters'])}.",
        "",
        "Tables (every column is defined in codebook.csv):",
        "",
    ]
    for name, table in TABLES.items():
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
        "- Pilot answers are excluded unless the filters say include_pilot; excluded",
        "  participants are kept and flagged unless include_excluded is false.",
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


def write_export(
    session: Session, out: Path, fmt: str, filters: ExportFilters, *, as_zip: bool = False,
    token_text=None,
) -> ExportSummary:
    """Write the export to a new folder `out` (or the zip file `out`); all or nothing.

    Everything is written to a temporary folder next to the destination first and moved into
    place at the end, so a failed export leaves no half-written files behind.
    """

    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ExportError(
                "Parquet needs pyarrow: pip install 'humanlm[parquet]' (or use --format csv)"
            ) from None
    out = Path(out)
    if out.exists():
        raise ExportError(f"{out} already exists; choose a new name")
    if not out.parent.exists():
        raise ExportError(f"the folder {out.parent} does not exist")
    check_filters(session, filters)
    token_text = token_text or tokenizer_texts()
    work = Path(tempfile.mkdtemp(prefix=".humanlm-export-", dir=out.parent))
    try:
        rows = {}
        rows["guesses"] = _write_table(work, fmt, TABLES["guesses"], guess_rows(session, filters, token_text))
        rows["items"] = _write_table(
            work, fmt, TABLES["items"], item_rows(session, filters, token_text)
        )
        rows["participants"] = _write_table(
            work, fmt, TABLES["participants"], participant_rows(session, filters)
        )
        rows["studies"] = _write_table(work, fmt, TABLES["studies"], study_rows(session, filters))
        model_ids = set(session.scalars(
            _guess_query(filters).with_only_columns(Guess.model_id).order_by(None).distinct()
        )) - {None}
        models = list(model_rows(session, model_ids))
        rows["models"] = _write_table(work, fmt, TABLES["models"], models)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "humanlm_version": __version__,
            "exported_at": datetime.now(UTC).isoformat(),
            "format": fmt,
            "filters": filters.as_dict(),
            "tables": {name: {"file": f"{name}.{fmt}", "rows": rows[name]} for name in TABLES},
            "models": models,
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        _codebook(work)
        (work / "README.md").write_text(readme_text(manifest), encoding="utf-8")
        if as_zip:
            tmp_zip = work.with_suffix(".zip")
            with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as zf:
                for path in sorted(work.iterdir()):
                    zf.write(path, arcname=path.name)
            os.replace(tmp_zip, out)
            shutil.rmtree(work)
        else:
            os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        work.with_suffix(".zip").unlink(missing_ok=True)
        raise
    return ExportSummary(out, fmt, rows)


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


def stream_zip(session: Session, fmt: str, filters: ExportFilters) -> Iterator[bytes]:
    """The export as a zip, for an HTTP download: written to a temporary file, then streamed
    in 1 MB blocks and deleted (so the web worker's memory stays flat too)."""
    folder = Path(tempfile.mkdtemp(prefix="humanlm-download-"))
    target = folder / "export.zip"
    write_export(session, target, fmt, filters, as_zip=True)

    def blocks() -> Iterator[bytes]:
        try:
            with open(target, "rb") as fh:
                while block := fh.read(1 << 20):
                    yield block
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    return blocks()
