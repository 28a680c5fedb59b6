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
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from analysis.schema import FORMATS, SCHEMA_VERSION, TABLES, Table, codebook_rows

from .models import (
    Guess,
    Item,
    LanguageModel,
    Participant,
    Prediction,
    Room,
    Study,
    WordScore,
)
from .words import target_word

CHUNK_ROWS = 20_000


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
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def check_filters(session: Session, filters: ExportFilters) -> None:
    if filters.study_id is not None and session.get(Study, filters.study_id) is None:
        raise ExportError(f"there is no study {filters.study_id}")
    if filters.room_id is not None and session.get(Room, filters.room_id) is None:
        raise ExportError(f"there is no room {filters.room_id}")
    if filters.since and filters.until and filters.since >= filters.until:
        raise ExportError("--since must be before --until")


# ------------------------------------------------------------------------------ guesses rows


def _guess_query(filters: ExportFilters):
    """Answers with their participant flags, as plain columns (no ORM objects: speed)."""
    pilot = func.coalesce(Participant.pilot, False)
    excluded = func.coalesce(Participant.excluded, False)
    query = (
        select(
            Guess.id, Guess.player_id, Guess.source, Guess.study_id, Guess.room_id, Guess.item_id,
            Guess.mode, Guess.raw_text, Guess.token_ids, Guess.first_token_id, Guess.skipped,
            Guess.is_correct, Guess.match_rule, Guess.client_reaction_ms,
            Guess.server_received_at, Guess.stored_at, Guess.reported_probability,
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


class ItemFacts:
    """What every answer row repeats about its item, loaded once per (item, model)."""

    def __init__(self, session: Session, tokenizer_text) -> None:
        self.session = session
        self.token_text = tokenizer_text
        self._items: dict[int, dict] = {}
        self._predictions: dict[tuple[int, int | None], dict] = {}
        self._words: dict[tuple[int, int | None], float | None] = {}

    def item(self, item_id: int) -> dict:
        facts = self._items.get(item_id)
        if facts is None:
            item = self.session.get(Item, item_id)
            document = item.document
            facts = {
                "document_id": document.id, "corpus": document.corpus.name,
                "position": item.position, "prefix_text": document.text[: item.char_start],
                "target_token_id": item.token_id, "target_text": item.token_text,
                "target_word": target_word(document, item),
            }
            if len(self._items) > 100_000:
                self._items.clear()
            self._items[item_id] = facts
            self.session.expunge_all()  # keep the identity map from growing with the export
        return facts

    def prediction(self, item_id: int, model_id: int | None) -> dict:
        key = (item_id, model_id)
        facts = self._predictions.get(key)
        if facts is None:
            row = None
            if model_id is not None:
                row = self.session.execute(
                    select(Prediction.target_logprob, Prediction.target_rank, Prediction.top1_id,
                           Prediction.entropy, Prediction.top_k)
                    .where(Prediction.item_id == item_id, Prediction.model_id == model_id)
                ).first()
            if row is None:
                facts = {"target_logprob": None, "target_rank": None, "top1_id": None,
                         "top1_text": None, "entropy": None}
            else:
                top1_text = next((e[2] for e in row.top_k if e[0] == row.top1_id), None)
                facts = {"target_logprob": row.target_logprob, "target_rank": row.target_rank,
                         "top1_id": row.top1_id, "top1_text": top1_text, "entropy": row.entropy}
            if len(self._predictions) > 100_000:
                self._predictions.clear()
            self._predictions[key] = facts
        return facts

    def target_word_logprob(self, item_id: int, model_id: int | None) -> float | None:
        key = (item_id, model_id)
        if key not in self._words:
            word = self.item(item_id)["target_word"]
            self._words[key] = None if model_id is None else self.session.scalar(
                select(WordScore.logprob).where(
                    WordScore.item_id == item_id, WordScore.model_id == model_id,
                    WordScore.word == word,
                )
            )
        return self._words[key]


def guess_rows(session: Session, filters: ExportFilters, token_text) -> Iterator[dict[str, Any]]:
    """One dict per exported answer, with exactly the schema's guesses columns."""
    facts = ItemFacts(session, token_text)
    answer_index: dict[str, int] = {}
    result = session.execute(
        _guess_query(filters).execution_options(yield_per=CHUNK_ROWS, stream_results=True)
    )
    for r in result:
        (gid, player, source, study_id, room_id, item_id, mode, raw_text, token_ids, first_id,
         skipped, correct, rule, reaction, received, stored, reported, model_id, model_lp,
         model_rank, word_lp, pilot, excluded) = r
        item = facts.item(item_id)
        pred = facts.prediction(item_id, model_id)
        word_mode = mode == "word"
        answer_index[player] = answer_index.get(player, 0) + 1
        yield {
            "guess_id": gid, "participant_id": player, "source": source, "study_id": study_id,
            "room_id": room_id, "item_id": item_id, "document_id": item["document_id"],
            "corpus": item["corpus"], "position": item["position"], "mode": mode,
            "prefix_text": item["prefix_text"],
            "target_text": item["target_word"] if word_mode else item["target_text"],
            "target_token_id": item["target_token_id"], "answer_text": raw_text,
            "answer_token_ids": token_ids, "answer_first_token_id": first_id,
            "answer_first_token_text": token_text(first_id) if first_id is not None else None,
            "skipped": bool(skipped), "is_correct": bool(correct), "match_rule": rule,
            "answer_index": answer_index[player], "reaction_ms": reaction,
            "server_received_at": _utc(received), "stored_at": _utc(stored),
            "reported_probability": reported, "model_id": model_id,
            "model_answer_logprob": word_lp if word_mode else model_lp,
            "model_answer_rank": None if word_mode else model_rank,
            "model_target_logprob": facts.target_word_logprob(item_id, model_id)
            if word_mode else pred["target_logprob"],
            "model_target_rank": None if word_mode else pred["target_rank"],
            "model_top1_id": pred["top1_id"], "model_top1_text": pred["top1_text"],
            "model_entropy": pred["entropy"], "pilot": bool(pilot), "excluded": bool(excluded),
            "external": source == "external",
        }


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


# ------------------------------------------------------------------------- other tables' rows


def item_rows(session: Session, filters: ExportFilters) -> Iterator[dict[str, Any]]:
    """One row per item with an exported answer; answer counts aggregated in SQL per item."""
    answers = _guess_query(filters).with_only_columns(
        Guess.item_id, Guess.model_id, Guess.first_token_id, Guess.skipped
    ).order_by(None).subquery()
    per_item = session.execute(
        select(answers.c.item_id, func.min(answers.c.model_id), func.count())
        .group_by(answers.c.item_id)
        .order_by(answers.c.item_id)
    ).all()
    for item_id, model_id, n_answers in per_item:
        counts = dict(
            session.execute(
                select(answers.c.first_token_id, func.count())
                .where(answers.c.item_id == item_id, answers.c.first_token_id.is_not(None),
                       answers.c.skipped.is_(False))
                .group_by(answers.c.first_token_id)
            ).all()
        )
        item = session.get(Item, item_id)
        document = item.document
        pred = None
        if model_id is not None:
            pred = session.scalar(
                select(Prediction).where(Prediction.item_id == item_id, Prediction.model_id == model_id)
            )
        yield {
            "item_id": item_id, "document_id": document.id, "corpus": document.corpus.name,
            "position": item.position, "prefix_text": document.text[: item.char_start],
            "target_token_id": item.token_id, "target_text": item.token_text,
            "model_id": model_id if pred else None,
            "model_target_logprob": pred.target_logprob if pred else None,
            "model_target_rank": pred.target_rank if pred else None,
            "model_top1_id": pred.top1_id if pred else None,
            "model_entropy": pred.entropy if pred else None,
            "model_top_k": pred.top_k if pred else None,
            "model_logz": pred.logz if pred else None,
            "n_answers": n_answers,
            "answer_counts": {str(k): v for k, v in sorted(counts.items())},
        }
        session.expunge_all()


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
    for player_id, source, study_id, room_id, first_at, n in rows:
        p = session.scalar(select(Participant).where(Participant.player_id == player_id))
        yield {
            "participant_id": player_id, "source": source, "study_id": study_id,
            "room_id": room_id, "external_id": p.external_id if p else None,
            "started_at": _utc(p.started_at if p else first_at),
            "finished_at": _utc(p.finished_at) if p else None, "n_answers": n,
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
               "settings": settings, "created_at": _utc(study.created_at)}


def model_rows(session: Session, model_ids: Iterable[int]) -> Iterator[dict[str, Any]]:
    for m in session.scalars(select(LanguageModel).where(LanguageModel.id.in_(list(model_ids)))):
        yield {"model_id": m.id, "key": m.key, "spec": m.spec, "name": m.name,
               "tokenizer": m.tokenizer, "n_vocab": m.n_vocab, "top_k": m.top_k,
               "temperatures": m.temperatures, "settings": m.settings}


# ------------------------------------------------------------------------------- writers


def _cell(value: Any, kind: str) -> Any:
    """A value as CSV text: empty for null, true/false, compact JSON, ISO datetimes."""
    if value is None:
        return ""
    if kind == "bool":
        return "true" if value else "false"
    if kind == "json":
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if kind == "datetime":
        return value.isoformat()
    if kind == "float" and isinstance(value, float) and not math.isfinite(value):
        return "-inf" if value < 0 else ("inf" if value > 0 else "nan")
    return value


class CsvWriter:
    def __init__(self, path: Path, table: Table) -> None:
        self.fh = open(path, "w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.fh)
        self.kinds = [(c.name, c.type) for c in table.columns]
        self.writer.writerow([name for name, _ in self.kinds])

    def write(self, rows: list[dict]) -> None:
        kinds = self.kinds
        self.writer.writerows([[_cell(r[name], kind) for name, kind in kinds] for r in rows])

    def close(self) -> None:
        self.fh.close()


class JsonlWriter:
    def __init__(self, path: Path, table: Table) -> None:
        self.fh = open(path, "w", encoding="utf-8")
        self.kinds = [(c.name, c.type) for c in table.columns]

    def write(self, rows: list[dict]) -> None:
        lines = []
        for r in rows:
            obj = {}
            for name, kind in self.kinds:
                value = r[name]
                if kind == "datetime" and value is not None:
                    value = value.isoformat()
                elif kind == "float" and isinstance(value, float) and not math.isfinite(value):
                    value = None  # JSON has no infinities; documented: only -inf occurs (p = 0)
                obj[name] = value
            lines.append(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))
        self.fh.write("\n".join(lines) + "\n" if lines else "")

    def close(self) -> None:
        self.fh.close()


class ParquetWriter:
    """Parquet through pyarrow (the optional `parquet` extra), one row group per chunk."""

    def __init__(self, path: Path, table: Table) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ExportError(
                "Parquet needs pyarrow: pip install 'humanlm[parquet]' (or use --format csv)"
            ) from None
        types = {
            "int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_(),
            "json": pa.string(), "datetime": pa.timestamp("us", tz="UTC"),
        }
        self.pa = pa
        self.kinds = [(c.name, c.type) for c in table.columns]
        self.schema = pa.schema([(c.name, types[c.type], c.nullable) for c in table.columns])
        self.writer = pq.ParquetWriter(str(path), self.schema, compression="zstd")
        self.rows = 0

    def write(self, rows: list[dict]) -> None:
        columns = {}
        for name, kind in self.kinds:
            values = [r[name] for r in rows]
            if kind == "json":
                values = [None if v is None else json.dumps(v, ensure_ascii=False, separators=(",", ":"))
                          for v in values]
            columns[name] = values
        self.writer.write_table(self.pa.Table.from_pydict(columns, schema=self.schema))
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
    from . import __version__
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
    from . import __version__

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
    token_text = token_text or _token_text_from_predictions(session)
    work = Path(tempfile.mkdtemp(prefix=".humanlm-export-", dir=out.parent))
    try:
        rows = {}
        rows["guesses"] = _write_table(work, fmt, TABLES["guesses"], guess_rows(session, filters, token_text))
        rows["items"] = _write_table(work, fmt, TABLES["items"], item_rows(session, filters))
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
            "exported_at": datetime.now(timezone.utc).isoformat(),
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


def _token_text_from_predictions(session: Session):
    """Token id -> display text, from the configured tokenizer (cached by load_tokenizer)."""
    from flask import current_app, has_app_context

    from .lm import display_text, load_tokenizer

    spec = current_app.config["MODEL"] if has_app_context() else "llamacpp:gemma-3-270m"
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
