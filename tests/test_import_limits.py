"""Limits of the importers that a laptop survives (issue 12, "Data out", import side).

`humanlm corpus import FOLDER` stays inside FOLDER: symbolic links to files elsewhere are skipped
with a line saying so, links to folders are not followed (a linked loop cannot hang the walk),
and a link to a file inside the folder is read once. A long text with no sentence end is cut in
linear time: the tokenizer reads it about twice (once whole, once part by part), counted here by
a proxy rather than timed. `humanlm import-responses` stores at most MAX_ANSWERS answers (the
counts added up) and MAX_ITEMS distinct contexts per import, and refuses a larger file before
storing anything.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from webapp import corpus as corpus_module
from webapp import responses
from webapp.corpus import (
    CorpusImportError,
    RawDocument,
    cut_to_fit,
    cut_with_tokens,
    folder_files,
    get_or_create_corpus,
    import_documents,
    read_path,
)
from webapp.extensions import db
from webapp.models import Corpus, Document, Guess, Item

OUTSIDE = "Secret text that lives outside the corpus folder."


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def stored_texts(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(Document.text).order_by(Document.id)))


def counts(app) -> dict:
    with app.app_context():
        return {table.__tablename__: db.session.scalar(select(func.count(table.id)))
                for table in (Corpus, Document, Item, Guess)}


# ------------------------------------------------------------------------------ symbolic links


def test_links_out_of_the_folder_are_skipped(app, runner, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.txt").write_text(OUTSIDE)
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("The first story is here.")
    (folder / "sub" / "notes.md").write_text("Notes read through a link.")  # not listed itself
    (folder / "secret.txt").symlink_to(outside / "secret.txt")
    (folder / "sub" / "relative.txt").symlink_to(Path("..") / ".." / "elsewhere" / "secret.txt")
    (folder / "outfolder").symlink_to(outside, target_is_directory=True)
    (folder / "z.txt").symlink_to(folder / "a.txt")  # inside, and listed itself: read once
    (folder / "n1.txt").symlink_to(folder / "sub" / "notes.md")  # inside: read once
    (folder / "n2.txt").symlink_to(Path("sub") / "notes.md")
    if Path("/etc/passwd").is_file():
        (folder / "passwd.txt").symlink_to("/etc/passwd")

    result = runner.invoke(args=["corpus", "import", str(folder), "--corpus", "links"])

    assert result.exit_code == 0, result.output
    texts = stored_texts(app)
    assert sorted(texts) == ["Notes read through a link.", "The first story is here."]
    secret = (outside / "secret.txt").resolve()
    for name in ("secret.txt", "sub/relative.txt"):
        assert f"Skipped {folder / name}: a symbolic link to {secret}, outside {folder}" \
            in result.output
    assert f"Skipped {folder / 'outfolder'}: a symbolic link to a folder, not followed" \
        in result.output
    assert (f"Skipped {folder / 'z.txt'}: a symbolic link to {(folder / 'a.txt').resolve()}, "
            "which is read once") in result.output
    assert f"Skipped {folder / 'n2.txt'}: a symbolic link to" in result.output
    if Path("/etc/passwd").is_file():
        assert f"Skipped {folder / 'passwd.txt'}: a symbolic link to /etc/passwd" in result.output
        assert not any("root:" in text for text in texts)
    assert "added 2 documents" in result.output


def test_a_file_named_on_the_command_line_may_be_a_link(tmp_path):
    """The user chose that path: only links found while walking a folder are checked."""
    (tmp_path / "real.txt").write_text(OUTSIDE)
    (tmp_path / "chosen.txt").symlink_to(tmp_path / "real.txt")
    assert [d.text for d in read_path(tmp_path / "chosen.txt")] == [OUTSIDE]


def test_linked_loops_and_dangling_links_do_not_hang(app, runner, tmp_path):
    folder = tmp_path / "corpus"
    (folder / "a" / "b").mkdir(parents=True)
    (folder / "a" / "b" / "text.txt").write_text("Only this text is read.")
    (folder / "a" / "b" / "up").symlink_to(folder / "a", target_is_directory=True)
    (folder / "a" / "self").symlink_to(".", target_is_directory=True)
    (folder / "loop1.txt").symlink_to("loop2.txt")
    (folder / "loop2.txt").symlink_to("loop1.txt")
    (folder / "gone.txt").symlink_to("nowhere.txt")

    done: list = []
    walker = threading.Thread(target=lambda: done.append(folder_files(folder)), daemon=True)
    walker.start()
    walker.join(120)  # a guard against hanging, not a measurement: the walk takes milliseconds
    assert done == [[folder / "a" / "b" / "text.txt"]]

    result = runner.invoke(args=["corpus", "import", str(folder), "--corpus", "loops"])
    assert result.exit_code == 0, result.output
    assert stored_texts(app) == ["Only this text is read."]
    for name in ("loop1.txt", "loop2.txt", "gone.txt"):
        assert f"Skipped {folder / name}: a symbolic link that leads to no file" in result.output
    assert f"Skipped {folder / 'a' / 'self'}: a symbolic link to a folder" in result.output


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_is_not_read(tmp_path):
    """Reading a pipe blocks until someone writes to it: it is skipped, not opened."""
    (tmp_path / "a.txt").write_text("Regular text.")
    os.mkfifo(tmp_path / "pipe.txt")
    lines: list[str] = []
    assert [d.text for d in read_path(tmp_path, on_skip=lines.append)] == ["Regular text."]
    assert lines == [f"Skipped {tmp_path / 'pipe.txt'}: not a regular file"]
    with pytest.raises(CorpusImportError, match="not a regular file"):
        read_path(tmp_path / "pipe.txt")


# ------------------------------------------------------------------------------ linear cutting


class CountingTokenizer:
    """Wraps a tokenizer and counts the calls to tokenize and the characters they read."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.tokenizer_id = inner.tokenizer_id
        self.calls = 0
        self.chars = 0

    def tokenize(self, text: str) -> list[int]:
        self.calls += 1
        self.chars += len(text)
        return self.inner.tokenize(text)

    def token_bytes(self, token_id: int) -> bytes:
        return self.inner.token_bytes(token_id)

    def is_control(self, token_id: int) -> bool:
        return self.inner.is_control(token_id)


def assert_covers(text: str, parts: list[str]) -> None:
    """The parts are the text, in order, each once: only whitespace between them is dropped."""
    at = 0
    for part in parts:
        assert part and part == part.strip()
        found = text.find(part, at)
        assert found >= 0 and not text[at:found].strip(), (at, part[:40])
        at = found + len(part)
    assert not text[at:].strip()


@pytest.mark.parametrize(
    "text",
    [
        "word " * 200_000,  # 1 MB, no sentence end
        "".join(f"river{i % 97} stone " for i in range(20_000)),  # one line of varied words
        "x" * 300_000,  # one enormous "word": cut between tokens
    ],
    ids=["1MB-words", "long-line", "one-word"],
)
def test_text_without_sentence_ends_is_cut_in_linear_time(tokenizer, text):
    text = text.strip()
    counting = CountingTokenizer(tokenizer)
    parts = cut_with_tokens(text, counting, 512)
    # once whole, once part by part: before, growing prefixes were re-tokenized (over 100x)
    assert counting.chars < 3 * len(text)
    assert counting.calls < 2 * len(parts) + 2
    assert len(parts) > 1
    assert_covers(text, [part for part, _ in parts])
    assert all(0 < len(ids) <= 512 for _, ids in parts)
    for part, ids in parts[:3] + parts[-3:]:
        assert tokenizer.tokenize(part) == ids


def test_cut_prefers_sentence_ends_then_words(tokenizer):
    sentence = "The river ran past the old stone house. "
    long_sentence = " ".join(["stone"] * 300) + ". "
    text = (sentence * 20 + long_sentence + sentence * 5).strip()
    parts = cut_to_fit(text, tokenizer, 64)
    assert_covers(text, parts)
    assert all(len(tokenizer.tokenize(p)) <= 64 for p in parts)
    # sentences that fit are never split; the long one is cut between words
    assert " ".join(parts).split() == text.split()
    for part in parts:
        assert part.count("The river") == part.count(sentence.strip())
    assert any(part.startswith("stone stone") for part in parts)


class WordTokenizer:
    """One token per word, written with a leading space (like SentencePiece's "▁"), so the
    pieces spell the text with a space before it; lower=True also lowercases the pieces, so
    they do not spell the text at all and the cut estimates where the tokens are."""

    tokenizer_id = "test:words"

    def __init__(self, lower: bool) -> None:
        self.lower = lower
        self.vocab: dict[str, int] = {}
        self.pieces: list[bytes] = []

    def tokenize(self, text: str) -> list[int]:
        ids = []
        for word in text.split():
            word = word.lower() if self.lower else word
            if word not in self.vocab:
                self.vocab[word] = len(self.pieces)
                self.pieces.append(b" " + word.encode())
            ids.append(self.vocab[word])
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        return self.pieces[token_id]

    def is_control(self, token_id: int) -> bool:
        return False


@pytest.mark.parametrize("lower", [False, True], ids=["space-prefix", "normalising"])
def test_cut_when_token_bytes_do_not_spell_the_text(lower):
    text = " ".join(f"W{i % 50}" + ("." if i % 7 == 0 else "") for i in range(20_000))
    counting = CountingTokenizer(WordTokenizer(lower))
    parts = [part for part, ids in cut_with_tokens(text, counting, 100) if len(ids) <= 100]
    assert_covers(text, parts)
    assert counting.chars < 4 * len(text)
    if not lower:  # offsets known exactly: cut between sentences, never inside a word
        assert " ".join(parts).split() == text.split()
        assert all(part.endswith(".") for part in parts[:-1])


def test_import_tokenizes_each_part_once(app, tokenizer, monkeypatch):
    """...and writes the items in batches, so a long text's items are not all held in memory
    (a 1 MB text: 950 MB of process before, 290 MB after)."""
    monkeypatch.setattr(corpus_module, "_FLUSH_ITEMS", 500)
    text = " ".join(f"word{i}" for i in range(2_000))  # no two parts alike (those are skipped)
    counting = CountingTokenizer(tokenizer)
    flushes: list[int] = []
    with app.app_context():
        corpus = get_or_create_corpus(db.session, "long")
        event.listen(db.session(), "after_flush", lambda session, context: flushes.append(1))
        report = import_documents(
            db.session, corpus, [RawDocument(text=text, title="long")], counting, max_tokens=128,
        )
        assert len(flushes) >= report.items // 500
        db.session.commit()
        parts = list(db.session.scalars(select(Document.text).order_by(Document.id)))
        n_tokens = db.session.scalars(select(Document.n_tokens)).all()
    assert report.cut == 1 and report.added == len(parts) > 1
    assert_covers(text, parts)
    assert max(n_tokens) <= 128
    assert counting.chars < 3 * len(text)


# ---------------------------------------------------------------------- import-responses limits


def write_csv(path: Path, rows: list[str], header: str = "context,response,target,count") -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_total_answers_over_the_limit_is_refused_and_nothing_stored(app, runner, tmp_path):
    per_row = responses.MAX_COUNT
    n_rows = responses.MAX_ANSWERS // per_row + 1  # 201 rows of 10,000: 2,010,000 answers
    rows = [f"Item {i % 7} of the norms is,blue,green,{per_row}" for i in range(n_rows)]
    path = write_csv(tmp_path / "big.csv", rows)
    before = counts(app)
    result = runner.invoke(args=["import-responses", str(path), "--no-score"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert f"line {n_rows + 1}: more than 2,000,000 answers (the counts added up)" in result.output
    assert "nothing imported" in result.output and "split it into smaller files" in result.output
    assert "--name" in result.output
    assert counts(app) == before


def test_answers_up_to_the_limit_are_read(tmp_path, monkeypatch):
    monkeypatch.setattr(responses, "MAX_ANSWERS", 5)
    ok = write_csv(tmp_path / "ok.csv", ["The sky is,blue,blue,2", "The sky is,grey,blue,3"])
    assert sum(row.count for row in responses.read_rows(ok, 10_000)) == 5
    over = write_csv(tmp_path / "over.csv", ["The sky is,blue,blue,2", "The sky is,grey,blue,4"])
    with pytest.raises(responses.ResponsesImportError, match="line 3: more than 5 answers"):
        responses.read_rows(over, 10_000)


def test_distinct_contexts_over_the_limit_are_refused(app, runner, tmp_path, monkeypatch):
    monkeypatch.setattr(responses, "MAX_ITEMS", 3)
    same = [f"The sky is,word{i},blue,1" for i in range(10)]  # one context: fine
    assert len(responses.read_rows(write_csv(tmp_path / "one.csv", same), 10_000)) == 10
    rows = [f"Context number {i} is,blue,blue,1" for i in range(4)]
    path = write_csv(tmp_path / "many.csv", rows)
    before = counts(app)
    result = runner.invoke(args=["import-responses", str(path), "--no-score"])
    assert result.exit_code == 1, result.output
    assert "line 5: more than 3 distinct contexts (context and target pairs)" in result.output
    assert "split it into smaller files" in result.output
    assert counts(app) == before
