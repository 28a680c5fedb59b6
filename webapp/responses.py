"""Import human responses collected elsewhere (e.g. cloze norms) as external guesses.

CSV columns: `context` (the text before the blank) and `response` (what a person answered) are
required; `target` (the word that actually followed), `count` (how many people gave that
response, default 1), `participant` and `item_id` (your own item label) are optional.

Each distinct (context, target) becomes a document "context target" of the corpus
"external:<name>" (purpose "external") whose item is the target's first token. A row without a
target (no `target` column, or an empty cell) is a stem: a sentence people completed with no
true next word. Each distinct stem becomes a document holding the context alone whose item sits
one past its last token (position == n_tokens) with no true token (token_id NULL, never
playable): its Prediction is the model's distribution after the whole context, without target
log-prob or rank, and its answers have no correctness (is_correct NULL, match_rule no_target)
but every model log-prob of an answer. Stems and targets may be mixed in one file. Every response
is stored `count` times as a Guess with source "external" (one pseudonymous player per
`participant`, or one per import when the column is absent), matched in word or token mode.
The data import is all or nothing: every row is checked first and errors are reported with
their line numbers; nothing is stored unless all rows are good. Scoring by the model follows
(resumable with `humanlm score` and `humanlm score --fill-guesses`).

Limits: the file is at most HUMANLM_MAX_IMPORT_BYTES, and a cell may be as long as the file
(csv's own 131,072-character cap is lifted); "context target" (a stem: its context) must fit in
HUMANLM_MAX_DOCUMENT_TOKENS tokens and a response in MAX_RESPONSE_CHARS characters (what a
guess stores); a cell must not hold NUL or lone surrogates (webapp/textcheck.py).
One import reads at most MAX_ROWS (200,000) rows with a count of at most MAX_COUNT (10,000)
each, stores at most MAX_ANSWERS (2,000,000) answers (the counts added up; each answer is one
stored guess of a few hundred bytes) and makes at most MAX_ITEMS (10,000) distinct contexts
(context and target pairs; a stem is a context without target) into items (each is a document the model scores, storing its top-k
for every position: about 4 KB per context token). They are checked while the file is read,
before anything is stored. A larger data set is split into smaller files (by item, say) that
are imported one after another with the same --name, so they make one data set.
"""

from __future__ import annotations

import csv
import hashlib
import io
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from .answers import AnswerIn, build_row, match_token, match_without_target, match_word, parse
from .corpus import (
    HiddenItemError,
    build_items,
    content_hash,
    csv_fields_up_to,
    get_or_create_corpus,
    hidden_item,
    normalize_text,
)
from .lm import Tokenizer
from .models import AnswerSource, CorpusPurpose, Document, Item, Player
from .textcheck import storable_text_problem

REQUIRED = ("context", "response")
OPTIONAL = ("target", "count", "participant", "item_id")
NO_TARGET = "no_target"  # Item.skip_reason of a stem's item
MAX_COUNT = 10_000  # answers one row stands for
MAX_ROWS = 200_000  # rows one import reads
MAX_ANSWERS = 2_000_000  # answers one import stores: the counts added up
MAX_ITEMS = 10_000  # distinct (context, target) pairs one import makes into items
_SPLIT = (
    "split it into smaller files (by item, say) and import them one by one with the same --name"
)
MAX_RESPONSE_CHARS = 400  # Guess.raw_text: a longer answer would be stored cut


class ResponsesImportError(ValueError):
    """The file cannot be imported; the message lists the bad rows with line numbers."""


@dataclass
class ResponseRow:
    line: int
    context: str
    response: str
    target: str  # "": a stem, no true continuation
    count: int
    participant: str
    item_label: str
    file: str = ""  # for messages: "<file>: line <line>: ..."

    @property
    def where(self) -> str:
        return f"{self.file}: line {self.line}" if self.file else f"line {self.line}"


@dataclass
class ImportSummary:
    corpus: str
    rows: int = 0
    responses: int = 0
    items: int = 0
    stems: int = 0  # items without a true continuation


def read_rows(path: Path, max_bytes: int) -> list[ResponseRow]:
    """Parse and check every row; raise ResponsesImportError listing all problems found."""
    if not path.is_file():
        raise ResponsesImportError(f"{path}: no such file")
    if path.stat().st_size > max_bytes:
        raise ResponsesImportError(
            f"{path}: larger than {max_bytes:,} bytes (HUMANLM_MAX_IMPORT_BYTES), the most one "
            f"import reads; nothing imported; {_SPLIT}"
        )
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ResponsesImportError(f"{path}: not UTF-8 text (line {line}, byte {exc.start})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    with csv_fields_up_to(len(text)):
        try:
            rows, errors = _parse_rows(reader, path)
        except csv.Error as exc:
            raise ResponsesImportError(
                f"{path}: line {reader.line_num}: malformed CSV ({exc})"
            ) from None
    labels: dict[str, tuple[str, str, int]] = {}
    for row in rows:
        if row.item_label:
            first = labels.setdefault(row.item_label, (row.context, row.target, row.line))
            if first[:2] != (row.context, row.target):
                errors.append(
                    f"line {row.line}: item_id {row.item_label!r} has another context or target "
                    f"than on line {first[2]}"
                )
    if errors:
        shown = errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])
        raise ResponsesImportError(f"{path}: {len(errors)} bad row(s), nothing imported:\n  " + "\n  ".join(shown))
    if not rows:
        raise ResponsesImportError(f"{path}: no rows to import")
    return rows


def _parse_rows(reader: csv.DictReader, path: Path) -> tuple[list[ResponseRow], list[str]]:
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise ResponsesImportError(
            f"{path}: empty file (expected a header: context,response[,target,...])"
        )
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ResponsesImportError(f"{path}: missing column(s) {', '.join(missing)}")
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise ResponsesImportError(
            f"{path}: unknown column(s) {', '.join(unknown)}; "
            f"use {', '.join(REQUIRED + OPTIONAL)}"
        )
    reader.fieldnames = header
    rows, errors = [], []
    answers = 0
    items: set[tuple[str, str]] = set()
    start = reader.line_num + 1  # the file line where the next record starts
    for raw in reader:
        line, start = start, reader.line_num + 1
        if None in raw:
            errors.append(f"line {line}: more cells than columns")
            continue
        cells = {k: (v or "") for k, v in raw.items()}
        problems = [
            f"{column} {problem}" for column, value in cells.items()
            if (problem := storable_text_problem(value))
        ]
        context = normalize_text(cells["context"])
        response = cells["response"].strip()
        target = cells.get("target", "").strip()  # empty: a stem
        if not context:
            problems.append("context is empty")
        if not response:
            problems.append("response is empty")
        elif len(response) > MAX_RESPONSE_CHARS:
            problems.append(f"response is longer than {MAX_RESPONSE_CHARS} characters")
        if any(c.isspace() for c in target):
            problems.append("target must be one word (no spaces)")
        count = 1
        if cells.get("count", "").strip():
            try:
                count = int(cells["count"])
            except ValueError:
                problems.append(f"count {cells['count']!r} is not a whole number")
            else:
                if not 1 <= count <= MAX_COUNT:
                    problems.append(f"count must be between 1 and {MAX_COUNT}")
        if problems:
            errors.append(f"line {line}: " + "; ".join(problems))
        else:
            rows.append(ResponseRow(line, context, response, target, count,
                                    cells.get("participant", "").strip(),
                                    cells.get("item_id", "").strip(), file=str(path)))
            answers += count
            items.add((context, target))
            if len(rows) > MAX_ROWS:
                raise ResponsesImportError(
                    f"{path}: line {line}: more than {MAX_ROWS:,} rows, the most one import "
                    f"reads; nothing imported; {_SPLIT}"
                )
            if answers > MAX_ANSWERS:
                raise ResponsesImportError(
                    f"{path}: line {line}: more than {MAX_ANSWERS:,} answers (the counts added "
                    f"up), the most one import stores; nothing imported; {_SPLIT}"
                )
            if len(items) > MAX_ITEMS:
                raise ResponsesImportError(
                    f"{path}: line {line}: more than {MAX_ITEMS:,} distinct contexts (context and "
                    f"target pairs), the most one import makes into items; nothing imported; "
                    f"{_SPLIT}"
                )
    return rows, errors


def _document_text(context: str, target: str) -> tuple[str, int]:
    """The passage "context target" and the character offset where the target begins."""
    sep = "" if context[-1:].isspace() else " "
    return context + sep + target, len(context)


def import_responses(
    session: Session, rows: list[ResponseRow], tokenizer: Tokenizer, *, name: str, mode: str,
    max_tokens: int, model_id: int | None = None,
) -> ImportSummary:
    """Store the rows (flush only: the caller commits once, so the import is all or nothing)."""
    if mode not in ("word", "token"):
        raise ResponsesImportError("mode must be word or token")
    corpus = get_or_create_corpus(
        session, f"external:{name}", min_prefix_tokens=1,
        description="Human responses imported with `humanlm import-responses`.",
    )
    corpus.purpose = CorpusPurpose.EXTERNAL
    summary = ImportSummary(corpus=corpus.name, rows=len(rows))
    items: dict[tuple[str, str], Item] = {}
    default_player = f"ext-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    players = {
        label: f"ext-{hashlib.sha256(f'{name}/{label}'.encode()).hexdigest()[:12]}"
        if label else default_player
        for label in dict.fromkeys(row.participant or "" for row in rows)
    }
    _add_players(session, list(dict.fromkeys(players.values())))
    # Norms repeat the same response to the same context many times: validate, tokenize and
    # match each distinct (item, response) once.
    matched: dict[tuple[int, str], tuple[AnswerIn, object]] = {}
    received = datetime.now(UTC)
    pending = 0
    for row in rows:
        key = (row.context, row.target)
        item = items.get(key)
        if item is None:
            if row.target:
                item = _item_for(session, corpus, row, tokenizer, max_tokens)
            else:
                item = _stem_item_for(session, corpus, row, tokenizer, max_tokens)
                summary.stems += 1
            items[key] = item
        player_id = players[row.participant or ""]
        answer, match = matched.get((item.id, row.response)) or (None, None)
        if answer is None:
            answer = parse(AnswerIn, {"client_key": "ext-0000", "text": row.response},
                           max_chars=MAX_RESPONSE_CHARS)
            typed = _as_typed(row.response, row.context)
            if item.token_id is None:  # a stem: nothing to be correct about
                match = match_without_target(
                    tokenizer.tokenize(typed), row.response if mode == "word" else None
                )
            else:
                match = match_token(typed, item.token_id, tokenizer, False)
                if mode == "word":
                    match = match_word(row.response, row.target, match.token_ids)
            matched[(item.id, row.response)] = (answer, match)
        for _ in range(row.count):
            answer.client_key = f"ext-{secrets.token_hex(12)}"
            session.add(build_row(
                answer, match, None, player_id=player_id, item_id=item.id, model_id=model_id,
                server_received_at=received, source=AnswerSource.EXTERNAL, mode=mode,
            ))
            summary.responses += 1
            pending += 1
        if pending >= 5_000:  # flushed rows leave the session's memory
            session.flush()
            pending = 0
    summary.items = len(items)
    session.flush()
    return summary


def _add_players(session: Session, player_ids: list[str]) -> None:
    """The players not stored yet, added before their guesses (no ORM relationship orders
    them); looked up in chunks, as a file may name 200,000 participants."""
    for start in range(0, len(player_ids), 500):
        chunk = player_ids[start : start + 500]
        known = set(session.scalars(select(Player.id).where(Player.id.in_(chunk))))
        session.add_all(Player(id=pid) for pid in chunk if pid not in known)
    session.flush()


def _as_typed(response: str, context: str) -> str:
    """Responses are words; as a next token they carry the leading space the text would have."""
    return response if context[-1:].isspace() else " " + response


def _item_for(session: Session, corpus, row: ResponseRow, tokenizer: Tokenizer, max_tokens: int) -> Item:
    text, target_char = _document_text(row.context, row.target)
    try:
        return hidden_item(
            session, corpus, text, target_char, tokenizer,
            title=row.item_label or row.context[:60], register="cloze", source="import-responses",
            max_tokens=max_tokens, require_visible=False,
        )
    except HiddenItemError as exc:
        message = (
            f"context and target are {exc.n_tokens} tokens; "
            f"the limit is {max_tokens} (HUMANLM_MAX_DOCUMENT_TOKENS)"
            if exc.reason == "too_long" else "the target has no text before it"
        )
        raise ResponsesImportError(f"{row.where}: {message}") from None


def _stem_item_for(
    session: Session, corpus, row: ResponseRow, tokenizer: Tokenizer, max_tokens: int
) -> Item:
    """The item of a stem: one past the last token of a document holding the context alone.

    The document stores every position of the context too (as hidden_item does, so
    `document.items[p]` is position p everywhere), and the stem's item after them, with no
    true token. Its content hash is taken over "stem:" + the text, so a stem is never merged
    with a "context target" document of the same text (whose last item has a target)."""
    token_ids = tokenizer.tokenize(row.context)
    if len(token_ids) > max_tokens:
        raise ResponsesImportError(
            f"{row.where}: the context is {len(token_ids)} tokens; the limit is {max_tokens} "
            "(HUMANLM_MAX_DOCUMENT_TOKENS)"
        )
    digest = content_hash("stem:" + row.context)
    doc = session.scalar(
        select(Document).where(Document.corpus_id == corpus.id, Document.content_hash == digest)
    )
    if doc is None:
        doc = Document(
            corpus_id=corpus.id, title=(row.item_label or row.context[:60])[:300],
            register="cloze", source="import-responses", text=row.context, content_hash=digest,
            tokenizer=tokenizer.tokenizer_id, token_ids=token_ids, n_tokens=len(token_ids),
        )
        doc.items = [
            *build_items(token_ids, tokenizer, min_prefix_tokens=1),
            Item(position=len(token_ids), token_id=None, token_text=None,
                 char_start=len(row.context), playable=False, skip_reason=NO_TARGET),
        ]
        session.add(doc)
        session.flush()
    return doc.items[-1]
