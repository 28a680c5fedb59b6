"""Passages uploaded from the dashboard: the same import as `humanlm corpus import` (no Flask).

A researcher uploads one .txt, .jsonl or .csv file into a corpus (a new one, or more passages
for an existing one). The file is read with webapp.corpus exactly as the command line reads it
(the same formats, limits and checks), all or nothing; errors name the uploaded file and the
line. A JSON Lines file is checked to its end, so every bad line is listed at once (up to
MAX_ERRORS), not one per upload. Scoring the new passages is model work: the caller queues it
(webapp.jobs) and the dashboard shows its progress.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.utils import secure_filename

from ..corpus import (
    SUPPORTED_SUFFIXES,
    CorpusImportError,
    ImportReport,
    Tokenizer,
    get_or_create_corpus,
    import_documents,
    read_path,
)
from ..models import Corpus, CorpusPurpose

FORM_OVERHEAD = 64 * 1024  # the form's other fields and the multipart framing
MAX_ERRORS = 20
SPLITS = ("file", "blank-line")


@dataclass
class UploadRefused(Exception):
    """Nothing was imported; `errors` say why, each naming the file (and line) when it can."""

    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(self.errors)


@dataclass
class Uploaded:
    corpus: Corpus
    report: ImportReport
    new_corpus: bool


def check_corpus_name(session: Session, name: str) -> str | None:
    """Why passages cannot go into a corpus of this name, or None."""
    name = name.strip()
    if not name:
        return "give the corpus a name (a new one, or an existing corpus to add passages to)"
    if len(name) > 100:
        return "the corpus name is longer than 100 characters"
    existing = session.scalar(select(Corpus).where(Corpus.name == name))
    if existing is not None and existing.purpose != CorpusPurpose.GAME:
        return f"'{name}' is a hidden corpus of humanlm; choose another name"
    return None


def _save(stream: BinaryIO, folder: Path, filename: str, max_bytes: int) -> Path:
    suffix = Path(filename).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UploadRefused([(f"{filename}: unsupported file type {suffix or '(none)'!r}; "
                              "upload a .txt, .jsonl or .csv file")])
    safe = secure_filename(filename) or f"upload{suffix}"
    if not safe.lower().endswith(suffix):
        safe += suffix
    path = folder / safe
    size = 0
    with open(path, "wb") as out:
        while chunk := stream.read(1 << 20):
            size += len(chunk)
            if size > max_bytes:
                raise UploadRefused([(f"{filename}: the file is over the limit of {max_bytes:,} "
                                      "bytes (HUMANLM_MAX_IMPORT_BYTES); split it into parts")])
            out.write(chunk)
    return path


def _shown(message: str, folder: Path, saved: Path, filename: str) -> str:
    """An importer's message as the page says it: the name the researcher chose instead of the
    temporary path, and the form's "Text field" instead of the command line's option."""
    message = message.replace(str(saved), filename).replace(saved.name, filename).replace(
        f"{folder}/", "")
    return message.replace("use --text-field", "set the form's Text field")


def _line_of(message: str, saved: Path) -> int | None:
    """The line number an importer's message names for the saved file ("PATH:LINE: ...")."""
    for prefix in (f"{saved}:", f"{saved.name}:"):
        if message.startswith(prefix):
            number = message[len(prefix):].split(":", 1)[0]
            return int(number) if number.isdigit() else None
    return None


def _all_jsonl_errors(saved: Path, first: CorpusImportError, text_field: str, max_bytes: int,
                      shown) -> list[str]:
    """Every bad line of a JSON Lines file (up to MAX_ERRORS): after each error the lines up to
    it are blanked (blank lines are skipped, so the numbering stays) and the rest is read again."""
    errors, raw = [shown(str(first))], str(first)
    lines = saved.read_text(encoding="utf-8-sig").split("\n")
    while len(errors) < MAX_ERRORS:
        bad = _line_of(raw, saved)
        if bad is None or bad >= len(lines):
            break
        lines = [""] * bad + lines[bad:]
        if not any(line.strip() for line in lines):
            break
        saved.write_text("\n".join(lines), encoding="utf-8")
        try:
            read_path(saved, text_field=text_field, max_bytes=max_bytes)
        except CorpusImportError as exc:
            raw = str(exc)
            if _line_of(raw, saved) is None:  # "no text found": nothing after the bad lines
                break
            errors.append(shown(raw))
        else:
            break
    return errors


def import_and_commit(new_session: Callable[[], Session], **upload: Any) -> Uploaded:
    """import_upload in a session of its own, committed there: all or nothing (UploadRefused
    or any error rolls back). The dashboard runs it whole on a native thread under the gevent
    server (webapp/green.py): seconds of tokenizing and ORM work for a large file, which would
    otherwise stop the rooms on the same server. Sessions keep their objects readable after
    commit, so the corpus's id and name can be read once the session is closed."""
    session = new_session()
    try:
        done = import_upload(session, **upload)
        session.commit()
        return done
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def import_upload(
    session: Session, *, stream: BinaryIO, filename: str, corpus_name: str, text_field: str,
    split: str, tokenizer: Tokenizer, max_bytes: int, max_tokens: int, min_prefix_tokens: int,
) -> Uploaded:
    """Read the uploaded file and add its passages to the corpus (flushed, not committed).

    Raises UploadRefused (nothing added) with every error found; the caller rolls back."""
    filename = (filename or "").strip() or "upload"
    problems = []
    name_problem = check_corpus_name(session, corpus_name)
    if name_problem:
        problems.append(name_problem)
    text_field = text_field.strip() or "text"
    if split not in SPLITS:
        problems.append(f"split must be one of {', '.join(SPLITS)}")
    if problems:
        raise UploadRefused(problems)
    folder = Path(tempfile.mkdtemp(prefix="humanlm-upload-"))
    try:
        saved = _save(stream, folder, filename, max_bytes)

        def shown(message: str) -> str:
            return _shown(message, folder, saved, filename)

        try:
            raw_docs = read_path(saved, text_field=text_field, split=split, max_bytes=max_bytes)
        except CorpusImportError as exc:
            if saved.suffix.lower() == ".jsonl" and _line_of(str(exc), saved) is not None:
                raise UploadRefused(_all_jsonl_errors(
                    saved, exc, text_field, max_bytes, shown)) from None
            raise UploadRefused([shown(str(exc))]) from None
        existing = session.scalar(select(Corpus).where(Corpus.name == corpus_name.strip()))
        try:
            corpus = get_or_create_corpus(session, corpus_name, min_prefix_tokens=min_prefix_tokens)
            report = import_documents(session, corpus, raw_docs, tokenizer, max_tokens=max_tokens)
        except CorpusImportError as exc:
            raise UploadRefused([shown(str(exc))]) from None
        report.files = [filename]
        return Uploaded(corpus, report, existing is None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
