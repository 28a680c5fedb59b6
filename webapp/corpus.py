"""Importing text: read files, cut documents to the model context, make one Item per token.

Plain functions with no Flask: the CLI and the tests call them with a SQLAlchemy session and a
tokenizer (anything with tokenize / token_bytes / is_control / tokenizer_id). An import is all or
nothing: the caller commits only when every file was read and cut without error.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import re
import secrets
import stat
import threading
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Corpus, Document, Item
from .textcheck import storable_text_problem

SUPPORTED_SUFFIXES = (".txt", ".jsonl", ".csv")
_FLUSH_ITEMS = 20_000  # import_documents writes its items in batches of about this many
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|\n\s*\n|\n")


class Tokenizer(Protocol):
    tokenizer_id: str

    def tokenize(self, text: str) -> list[int]: ...

    def token_bytes(self, token_id: int) -> bytes: ...

    def is_control(self, token_id: int) -> bool: ...


class CorpusImportError(ValueError):
    """Bad input: the message says which file (and line) and what is wrong."""


@dataclass
class RawDocument:
    text: str
    title: str = ""
    register: str = ""
    licence: str = ""
    source: str = ""


@dataclass
class ImportReport:
    corpus: str
    added: int = 0
    duplicates: int = 0
    cut: int = 0  # source texts that were longer than the model context and were cut into parts
    items: int = 0
    playable: int = 0
    files: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------- reading files


def read_path(
    path: Path, *, text_field: str = "text", split: str = "file", max_bytes: int = 20_000_000,
    on_skip: Callable[[str], None] | None = None,
) -> list[RawDocument]:
    """Read one file or every supported file in a folder; raise CorpusImportError on bad input.

    A folder is read without leaving it (see folder_files); `on_skip` gets a line for each file
    or link passed over. A path given by name is read even when it is a symbolic link.
    """
    path = Path(path)
    if not path.exists():
        raise CorpusImportError(f"{path}: no such file or folder")
    if path.is_dir():
        files = folder_files(path, on_skip)
        if not files:
            raise CorpusImportError(f"{path}: no .txt, .jsonl or .csv files in this folder")
    else:
        files = [path]
    docs: list[RawDocument] = []
    for file in files:
        docs.extend(read_file(file, text_field=text_field, split=split, max_bytes=max_bytes))
    return docs


def folder_files(folder: Path, on_skip: Callable[[str], None] | None = None) -> list[Path]:
    """The .txt, .jsonl and .csv files in a folder and its subfolders, in path order.

    Symbolic links are not followed out of the folder: a link to a file elsewhere (/etc/passwd,
    a home directory) is skipped, and so is a link to a folder (its files inside the folder are
    found where they are), so a linked loop cannot make the walk go round forever. A link to a
    file inside the folder is read, under the link's name, unless the file is listed itself or
    an earlier link led to it: each file is read once. Only regular files are read (a named
    pipe would block the import). Each skip is reported to `on_skip` as a line
    "Skipped <path>: <why>".
    """
    skip = on_skip or (lambda message: None)
    root = folder.resolve()
    listed: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_walk_error):  # links not followed
        here = Path(dirpath)
        for name in dirnames:
            if (here / name).is_symlink():
                skip(f"Skipped {here / name}: a symbolic link to a folder, not followed")
        listed.extend(
            here / name for name in filenames if Path(name).suffix.lower() in SUPPORTED_SUFFIXES
        )
    listed.sort()
    regular = {p.resolve() for p in listed if stat.S_ISREG(p.lstat().st_mode)}  # not links
    files: list[Path] = []
    read_links: set[Path] = set()
    for p in listed:
        if not p.is_symlink():
            if p.resolve() in regular:
                files.append(p)
            else:
                skip(f"Skipped {p}: not a regular file")
            continue
        try:
            target = p.resolve(strict=True)
        except (OSError, RuntimeError):  # dangling, or a loop of links
            skip(f"Skipped {p}: a symbolic link that leads to no file")
            continue
        if not target.is_relative_to(root):
            skip(f"Skipped {p}: a symbolic link to {target}, outside {folder}")
        elif not target.is_file():
            skip(f"Skipped {p}: a symbolic link to {target}, not a regular file")
        elif target in regular or target in read_links:
            skip(f"Skipped {p}: a symbolic link to {target}, which is read once")
        else:
            read_links.add(target)
            files.append(p)  # named as the link: its target may have another suffix
    return files


def _walk_error(error: OSError) -> None:
    raise CorpusImportError(f"{error.filename}: cannot read this folder ({error.strerror})")


def read_file(
    path: Path, *, text_field: str = "text", split: str = "file", max_bytes: int = 20_000_000
) -> list[RawDocument]:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise CorpusImportError(f"{path}: unsupported file type {suffix!r} (use .txt, .jsonl, .csv)")
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise CorpusImportError(f"{path}: not a regular file")
    size = info.st_size
    if size > max_bytes:
        raise CorpusImportError(
            f"{path}: file is {size:,} bytes, over the limit of {max_bytes:,} "
            "(HUMANLM_MAX_IMPORT_BYTES)"
        )
    data = path.read_bytes()
    if not data.strip():
        raise CorpusImportError(f"{path}: file is empty")
    if b"\x00" in data:
        at = data.index(b"\x00")
        line = data[:at].count(b"\n") + 1
        raise CorpusImportError(
            f"{path}: looks like a binary file (a NUL byte on line {line}, byte {at}); "
            "NUL cannot be stored"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CorpusImportError(f"{path}: not valid UTF-8 (line {line}, byte {exc.start})") from None
    if suffix == ".txt":
        docs = _read_txt(text, path, split)
    elif suffix == ".jsonl":
        docs = _read_jsonl(text, path, text_field)
    else:
        docs = _read_csv(text, path, text_field)
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise CorpusImportError(f"{path}: no text found")
    return docs


def _read_txt(text: str, path: Path, split: str) -> list[RawDocument]:
    if split == "file":
        return [RawDocument(text=text, title=path.stem, source=path.name)]
    if split == "blank-line":
        blocks = [b for b in re.split(r"\n\s*\n", text) if b.strip()]
        return [
            RawDocument(text=b, title=f"{path.stem} #{i}", source=f"{path.name}#{i}")
            for i, b in enumerate(blocks, 1)
        ]
    raise CorpusImportError(f"unknown --split {split!r} (use 'file' or 'blank-line')")


def _record(row: dict, text_field: str, where: str) -> RawDocument:
    if text_field not in row:
        raise CorpusImportError(f"{where}: no field {text_field!r} (use --text-field)")
    value = row[text_field]
    if not isinstance(value, str):
        raise CorpusImportError(f"{where}: field {text_field!r} is not text")
    if not value.strip():
        raise CorpusImportError(f"{where}: field {text_field!r} is empty")
    meta = {}
    for name, meta_value in (("title", row.get("title")), ("register", row.get("register")),
                             ("licence", row.get("licence") or row.get("license"))):
        if isinstance(meta_value, (list, dict)):  # a JSON array or object: no text to store
            raise CorpusImportError(f"{where}: field {name!r} is not text")
        meta[name] = str(meta_value or "")
    for name, text in ((text_field, value), *meta.items()):
        problem = storable_text_problem(text)
        if problem:
            raise CorpusImportError(f"{where}: field {name!r} {problem}")
    return RawDocument(text=value, source=where, **meta)


def _read_jsonl(text: str, path: Path, text_field: str) -> list[RawDocument]:
    docs = []
    # split on \n only: str.splitlines() would also split on U+2028, which JSON allows in strings
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusImportError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
        except RecursionError:
            raise CorpusImportError(
                f"{path}:{number}: JSON nested too deeply to read (arrays or objects inside "
                "each other hundreds of levels deep)"
            ) from None
        except ValueError:  # valid JSON, but int() refuses more than 4,300 digits by default
            raise CorpusImportError(
                f"{path}:{number}: JSON with a number too long to read (thousands of digits)"
            ) from None
        if not isinstance(row, dict):
            raise CorpusImportError(f"{path}:{number}: expected a JSON object per line")
        docs.append(_record(row, text_field, f"{path.name}:{number}"))
    return docs


_csv_limit_lock = threading.Lock()


@contextmanager
def csv_fields_up_to(n_chars: int) -> Iterator[None]:
    """Let csv readers read fields of up to `n_chars` characters while the block runs.

    The csv module refuses a field longer than csv.field_size_limit() (131,072 characters by
    default) with "field larger than field limit". Importers read a whole file that is already
    held in memory and capped by HUMANLM_MAX_IMPORT_BYTES, so a field as long as the file costs
    nothing more: they pass len(text), and a long text in a CSV cell is imported (and cut to
    HUMANLM_MAX_DOCUMENT_TOKENS) like the same text in a .txt file. The limit is process-wide,
    so it is raised under a lock and put back afterwards; consume the reader inside the block.
    """
    with _csv_limit_lock:
        old = csv.field_size_limit()
        csv.field_size_limit(max(old, n_chars))
        try:
            yield
        finally:
            csv.field_size_limit(old)


def _read_csv(text: str, path: Path, text_field: str) -> list[RawDocument]:
    reader = csv.DictReader(io.StringIO(text))
    docs = []
    with csv_fields_up_to(len(text)):
        try:
            fieldnames = reader.fieldnames
            if not fieldnames or text_field not in fieldnames:
                raise CorpusImportError(
                    f"{path}: no column {text_field!r} (columns: {', '.join(fieldnames or [])}); "
                    "use --text-field"
                )
            start = reader.line_num + 1  # file line where the next record starts
            for row in reader:
                docs.append(_record(row, text_field, f"{path.name}:{start}"))
                start = reader.line_num + 1
        except csv.Error as exc:
            raise CorpusImportError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
    return docs


def demo_documents() -> list[RawDocument]:
    """The built-in demo corpus shipped with the package (written for humanlm, CC0)."""
    lines = resources.files("webapp").joinpath("data/demo_corpus.jsonl").read_text("utf-8")
    docs = []
    for line in lines.splitlines():
        if line.strip():
            row = json.loads(line)
            docs.append(
                RawDocument(
                    text=row["text"], title=row["title"], register=row["register"],
                    licence=row["licence"], source=f"demo:{row['slug']}",
                )
            )
    return docs


# ------------------------------------------------------------------------------- cutting and items


def normalize_text(text: str) -> str:
    """NFC, Unix newlines, no trailing whitespace: the form that is hashed, stored and tokenized."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return text.strip()


def content_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


def sentences(text: str) -> list[str]:
    """Split into sentences, keeping each separator with the sentence before it."""
    parts, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        parts.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        parts.append(text[start:])
    return [p for p in parts if p]


def cut_to_fit(text: str, tokenizer: Tokenizer, max_tokens: int) -> list[str]:
    """Cut text into consecutive parts of at most max_tokens tokens, at sentence boundaries.

    A sentence longer than the limit is cut at word boundaries (and, failing that, between
    tokens). Nothing is lost or reordered: only whitespace at the cuts is dropped.
    """
    return [part for part, _ in cut_with_tokens(text, tokenizer, max_tokens)]


def cut_with_tokens(
    text: str, tokenizer: Tokenizer, max_tokens: int
) -> list[tuple[str, list[int]]]:
    """cut_to_fit, each part with its token ids; linear in the length of the text.

    The text is tokenized once. Each token's character offset comes from its bytes, so a part
    is chosen by token counts with no re-tokenizing of growing prefixes: from where the last
    part ended, it runs to the last sentence end at most max_tokens tokens on, else to the last
    word boundary, else to the last token boundary that is not inside a character. Each part is
    then tokenized once on its own (its token ids are returned) and, should that give more than
    max_tokens tokens (tokenizers may merge differently at the edges), chosen again shorter.
    So the tokenizer reads about twice the text in all. A tokenizer whose tokens' bytes do not
    spell the text (one that normalises it) gets estimated offsets, evenly spread; the check on
    each part still holds. A SentencePiece space prefix on the first token is allowed for.
    """
    if max_tokens < 1:
        raise CorpusImportError("HUMANLM_MAX_DOCUMENT_TOKENS must be at least 1")
    ids = tokenizer.tokenize(text)
    if len(ids) <= max_tokens:
        return [(text, ids)]
    starts, valid = _token_offsets(text, ids, tokenizer)
    n_bounds = len(starts)  # boundaries 0..len(ids): before each token, and the end
    sentence_cut = bytearray(len(text) + 1)  # 1 where a cut drops only sentence-end whitespace
    for match in _SENTENCE_END.finditer(text):
        separator = match.group()
        space_from = match.start() + len(separator.rstrip())  # after closing quotes, if any
        sentence_cut[space_from : match.end() + 1] = b"\x01" * (match.end() + 1 - space_from)
    sentence_cut[len(text)] = 1
    # last_*[b]: the last boundary <= b of that kind (sentence end, word boundary, any); -1: none
    last_sentence, last_word, last_any = [-1] * n_bounds, [-1] * n_bounds, [-1] * n_bounds
    ls = lw = la = -1
    for b in range(n_bounds):
        if valid[b]:
            c = starts[b]
            la = b
            if sentence_cut[c]:
                ls = lw = b
            elif c == len(text) or text[c].isspace() or (c > 0 and text[c - 1].isspace()):
                lw = b
        last_sentence[b], last_word[b], last_any[b] = ls, lw, la
    parts: list[tuple[str, list[int]]] = []
    begin = 0  # boundary where the next part starts
    last = n_bounds - 1
    while begin < last:
        budget, tried = max_tokens, last + 1
        while True:
            limit = min(begin + budget, last)
            end = next(
                (b for b in (last_sentence[limit], last_word[limit], last_any[limit]) if b > begin),
                None,
            )
            if end is None:  # no boundary within reach (one character of many tokens): the next
                end = next(b for b in range(limit + 1, n_bounds) if valid[b])
            if end >= tried:  # the part cannot get shorter
                raise CorpusImportError(
                    f"cannot cut the text into parts of at most {max_tokens} tokens "
                    "(HUMANLM_MAX_DOCUMENT_TOKENS is too small)"
                )
            part = text[starts[begin] : starts[end]].strip()
            part_ids = tokenizer.tokenize(part) if part else []
            if len(part_ids) <= max_tokens:
                break
            # tokenized on its own the part is longer than its tokens in the whole text: shorter
            tried = end
            budget = max(1, min(end - begin - 1, (end - begin) * max_tokens // len(part_ids)))
        if part:
            parts.append((part, part_ids))
        begin = end
    return parts


def _token_offsets(text: str, ids: list[int], tokenizer: Tokenizer) -> tuple[list[int], list[bool]]:
    """Character offset of each token boundary (before each token, then the end of the text),
    and whether a cut may fall there (not inside a character's bytes)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    starts, valid = [0], [True]
    chars = 0
    pieces = []
    for token_id in ids:
        piece = tokenizer.token_bytes(token_id)
        pieces.append(piece)
        try:
            chars += len(decoder.decode(piece))
        except UnicodeDecodeError:
            break
        starts.append(chars)
        valid.append(not decoder.getstate()[0])
    if len(starts) == len(ids) + 1:
        spelled, encoded = b"".join(pieces), text.encode("utf-8")
        if spelled == encoded:
            return starts, valid
        if spelled == b" " + encoded:  # a space prefix ("▁") before the text
            return [0] + [c - 1 for c in starts[1:]], valid
    n = len(ids)
    return [len(text) * b // n for b in range(n + 1)], [True] * (n + 1)


def classify_position(
    position: int, token_id: int, piece: bytes, tokenizer: Tokenizer, min_prefix_tokens: int
) -> str | None:
    """Why a position is not playable, or None if it is. The rule is per corpus (min prefix)."""
    if tokenizer.is_control(token_id):
        return "control"
    if position < min_prefix_tokens:
        return "short_prefix"
    try:
        text = piece.decode("utf-8")
    except UnicodeDecodeError:
        return "byte_fragment"
    if "\n" in text and not text.strip():
        return "newline"
    if not text.strip():
        return "whitespace"
    return None


def build_items(
    token_ids: list[int], tokenizer: Tokenizer, min_prefix_tokens: int
) -> Iterator[Item]:
    """One Item per token position, with its char offset in the decoded text and playability."""
    decoded = b""
    for position, token_id in enumerate(token_ids):
        piece = tokenizer.token_bytes(token_id)
        char_start = len(decoded.decode("utf-8", "ignore"))
        reason = classify_position(position, token_id, piece, tokenizer, min_prefix_tokens)
        yield Item(
            position=position,
            token_id=token_id,
            token_text=piece.decode("utf-8", "replace")[:200],
            char_start=char_start,
            playable=reason is None,
            skip_reason=reason,
        )
        decoded += piece


MAX_PAIRWISE_ALTERNATIVES = 16


def get_or_create_corpus(
    session: Session, name: str, *, min_prefix_tokens: int = 3, description: str = "",
    pairwise_alternatives: int | None = None,
) -> Corpus:
    """The corpus `name`, created if new. `pairwise_alternatives` (a new corpus only): tokens
    to draw per position from the scoring model's distribution, with a seed chosen now."""
    name = name.strip()
    if not name or len(name) > 100:
        raise CorpusImportError("corpus name must be 1-100 characters")
    if pairwise_alternatives is not None and not 0 <= pairwise_alternatives <= MAX_PAIRWISE_ALTERNATIVES:
        raise CorpusImportError(
            f"pairwise alternatives must be between 0 and {MAX_PAIRWISE_ALTERNATIVES} per position"
        )
    corpus = session.scalar(select(Corpus).where(Corpus.name == name))
    if corpus is None:
        corpus = Corpus(name=name, description=description, min_prefix_tokens=min_prefix_tokens,
                        pairwise_alternatives=pairwise_alternatives or 0,
                        alternatives_seed=secrets.randbelow(2**31) if pairwise_alternatives else None)
        session.add(corpus)
        session.flush()
    elif pairwise_alternatives is not None and pairwise_alternatives != corpus.pairwise_alternatives:
        raise CorpusImportError(
            f"corpus {name!r} draws {corpus.pairwise_alternatives} pairwise alternatives per "
            f"position; its documents were scored that way. Import into a new corpus to ask for "
            f"{pairwise_alternatives}."
        )
    return corpus


def import_documents(
    session: Session,
    corpus: Corpus,
    raw_docs: Iterable[RawDocument],
    tokenizer: Tokenizer,
    *,
    max_tokens: int,
) -> ImportReport:
    """Add documents (cut to fit) with their items; duplicates by content hash are skipped.

    Flushes (every _FLUSH_ITEMS items, so a long text does not hold all its items in memory) but
    does not commit: the caller commits once everything succeeded.
    """
    report = ImportReport(corpus=corpus.name)
    pending = 0  # items added since the last flush
    known = set(session.scalars(select(Document.content_hash).where(Document.corpus_id == corpus.id)))
    for raw in raw_docs:
        text = normalize_text(raw.text)
        if not text:
            continue
        parts = cut_with_tokens(text, tokenizer, max_tokens)
        if len(parts) > 1:
            report.cut += 1
        for number, (part, token_ids) in enumerate(parts, 1):
            digest = content_hash(part)
            if digest in known:
                report.duplicates += 1
                continue
            known.add(digest)
            title = raw.title or part[:60]
            if len(parts) > 1:
                title = f"{title} (part {number} of {len(parts)})"
            doc = Document(
                corpus_id=corpus.id, title=title[:300], register=raw.register[:50],
                licence=raw.licence[:100], source=raw.source[:500], text=part,
                content_hash=digest, tokenizer=tokenizer.tokenizer_id,
                token_ids=token_ids, n_tokens=len(token_ids),
            )
            doc.items = list(build_items(token_ids, tokenizer, corpus.min_prefix_tokens))
            session.add(doc)
            report.added += 1
            report.items += len(doc.items)
            report.playable += sum(item.playable for item in doc.items)
            pending += len(doc.items)
            if pending >= _FLUSH_ITEMS:  # flushed objects are let go: memory stays bounded
                session.flush()
                pending = 0
    session.flush()
    return report


# ---------------------------------------------------------------------------- hidden-corpus items


class HiddenItemError(ValueError):
    """A text gives no item to ask for. Callers turn `reason` into their own message.

    reason: "too_long" (the text is `n_tokens` tokens, over max_tokens), "nothing_before" (no
    token starts at or after the target, or it is the text's first token, so there is no prefix),
    "not_visible" (the token to ask for is a control token or only whitespace; `item` is it).
    """

    def __init__(self, reason: str, *, n_tokens: int = 0, item: Item | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.n_tokens = n_tokens
        self.item = item


def hidden_item(
    session: Session,
    corpus: Corpus,
    text: str,
    target_char: int,
    tokenizer: Tokenizer,
    *,
    title: str,
    register: str,
    source: str,
    max_tokens: int | None = None,
    require_visible: bool = True,
) -> Item:
    """The item to ask for in a short text stored as a document of a hidden corpus.

    Room prompts, study checks and imported cloze responses are asked once, not played through:
    `text` (already normalised) becomes one document of `corpus`, reused when a document with the
    same content hash is stored there, and the item asked is the first token that starts at or
    after character `target_char` (`target_char` < 0: the last token). Every position is stored
    (playable from the second token on), so scoring the document once scores the asked item too.
    Flushes, never commits. Raises HiddenItemError when the text gives no item to ask for.

    require_visible=False accepts a whitespace or control token as the item: imported cloze data
    is matched by whole word, and a tokenizer may split " 1990" into " " and digits.
    """
    token_ids = tokenizer.tokenize(text)
    if max_tokens is not None and len(token_ids) > max_tokens:
        raise HiddenItemError("too_long", n_tokens=len(token_ids))
    digest = content_hash(text)
    doc = session.scalar(
        select(Document).where(Document.corpus_id == corpus.id, Document.content_hash == digest)
    )
    if doc is None:
        doc = Document(
            corpus_id=corpus.id, title=title[:300], register=register[:50], source=source[:500],
            text=text, content_hash=digest, tokenizer=tokenizer.tokenizer_id,
            token_ids=token_ids, n_tokens=len(token_ids),
        )
        doc.items = list(build_items(token_ids, tokenizer, min_prefix_tokens=1))
        session.add(doc)
        session.flush()
    if target_char < 0:
        item = doc.items[-1] if doc.items else None
    else:
        item = next((it for it in doc.items if it.char_start >= target_char), None)
    if item is None or item.position < 1:
        raise HiddenItemError("nothing_before")
    if require_visible and (tokenizer.is_control(item.token_id) or not item.token_text.strip()):
        raise HiddenItemError("not_visible", item=item)
    return item
