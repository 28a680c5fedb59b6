"""Corpus import: reading files, errors, normalising, cutting to fit, items and playability."""

from __future__ import annotations

import json
import re
import unicodedata

import pytest
from sqlalchemy import func, select

from webapp.corpus import (
    CorpusImportError,
    RawDocument,
    build_items,
    classify_position,
    content_hash,
    cut_to_fit,
    demo_documents,
    get_or_create_corpus,
    import_documents,
    normalize_text,
    read_file,
    read_path,
    sentences,
)
from webapp.extensions import db
from webapp.models import Corpus, Document, Item


class FakeTokenizer:
    """Whitespace-and-punctuation tokenizer with an explicit vocabulary of byte pieces."""

    tokenizer_id = "fake:words"

    def __init__(self, control=(b"<eos>",)) -> None:
        self.pieces: list[bytes] = []
        self.ids: dict[bytes, int] = {}
        self.control = {self._id(c) for c in control}

    def _id(self, piece: bytes) -> int:
        if piece not in self.ids:
            self.ids[piece] = len(self.pieces)
            self.pieces.append(piece)
        return self.ids[piece]

    def tokenize(self, text: str) -> list[int]:
        return [self._id(p.encode()) for p in re.findall(r"\s*\S+|\s+", text)]

    def token_bytes(self, token_id: int) -> bytes:
        return self.pieces[token_id]

    def is_control(self, token_id: int) -> bool:
        return token_id in self.control


# -------------------------------------------------------------------------------- reading files


def test_read_txt_whole_file(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text("First paragraph.\n\nSecond paragraph.\n", encoding="utf-8")
    docs = read_path(path)
    assert len(docs) == 1
    assert docs[0].text == "First paragraph.\n\nSecond paragraph.\n"
    assert docs[0].title == "story" and docs[0].source == "story.txt"


def test_read_txt_blank_line_split(tmp_path):
    path = tmp_path / "poems.txt"
    path.write_text("One line.\nStill one.\n\n\n  \nTwo.\n\nThree.", encoding="utf-8")
    docs = read_path(path, split="blank-line")
    assert [d.text.strip() for d in docs] == ["One line.\nStill one.", "Two.", "Three."]
    assert [d.title for d in docs] == ["poems #1", "poems #2", "poems #3"]
    assert docs[2].source == "poems.txt#3"


def test_read_txt_unknown_split(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("text")
    with pytest.raises(CorpusImportError, match="split"):
        read_path(path, split="sentence")


def test_read_txt_strips_utf8_bom(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffHello there.".encode("utf-8"))
    assert read_path(path)[0].text == "Hello there."


def test_read_jsonl(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [
        {"text": "Alpha text.", "title": "A", "register": "news", "licence": "CC0-1.0"},
        {"text": "Beta text.", "license": "MIT"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    docs = read_path(path)
    assert [d.text for d in docs] == ["Alpha text.", "Beta text."]
    assert (docs[0].title, docs[0].register, docs[0].licence) == ("A", "news", "CC0-1.0")
    assert docs[1].licence == "MIT"  # American spelling accepted
    assert docs[0].source == "docs.jsonl:1" and docs[1].source == "docs.jsonl:2"


def test_read_jsonl_text_field(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"body": "Body text.", "text": "not this"}) + "\n")
    assert read_path(path, text_field="body")[0].text == "Body text."


def test_read_csv_text_field(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text('id,content,title\n1,"Hello, world.",Greeting\n2,"Line one\nline two",Two\n')
    docs = read_path(path, text_field="content")
    assert [d.text for d in docs] == ["Hello, world.", "Line one\nline two"]
    assert docs[0].title == "Greeting"


def test_read_folder_reads_every_supported_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("From a.")
    (tmp_path / "sub" / "b.jsonl").write_text(json.dumps({"text": "From b."}))
    (tmp_path / "notes.md").write_text("ignored")
    docs = read_path(tmp_path)
    assert sorted(d.text for d in docs) == ["From a.", "From b."]


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("empty.txt", b"", r"empty\.txt: file is empty"),
        ("blank.txt", b"  \n\n\t ", r"blank\.txt: file is empty"),
        ("binary.txt", b"abc\x00\x01def", r"binary\.txt: .*binary.*NUL"),
        ("latin1.txt", b"line one\nline two caf\xe9\n", r"latin1\.txt: not valid UTF-8 \(line 2"),
        ("bad.jsonl", b'{"text": "ok"}\n{"text": oops}\n', r"bad\.jsonl:2: invalid JSON"),
        ("list.jsonl", b'{"text": "ok"}\n[1, 2]\n', r"list\.jsonl:2: expected a JSON object"),
        ("nofield.jsonl", b'{"text": "ok"}\n{"body": "x"}\n', r"nofield\.jsonl:2: no field 'text'"),
        ("notstr.jsonl", b'{"text": 42}\n', r"notstr\.jsonl:1: field 'text' is not text"),
        ("emptyfield.jsonl", b'{"text": "  "}\n', r"emptyfield\.jsonl:1: field 'text' is empty"),
        ("nocol.csv", b"id,body\n1,hello\n", r"nocol\.csv: no column 'text'"),
        ("emptycell.csv", b"id,text\n1,hello\n2,\n", r"emptycell\.csv:3: field 'text' is empty"),
        ("doc.pdf", b"%PDF-1.4", r"doc\.pdf: unsupported file type '\.pdf'"),
    ],
)
def test_bad_files_raise_with_file_and_line(tmp_path, name, content, pattern):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CorpusImportError, match=pattern):
        read_path(path)


def test_oversized_file(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("x" * 101)
    with pytest.raises(CorpusImportError, match=r"big\.txt: file is 101 bytes, over the limit of 100"):
        read_file(path, max_bytes=100)
    assert read_file(path, max_bytes=101)[0].text == "x" * 101


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(CorpusImportError, match=r"nope\.txt: no such file or folder"):
        read_path(tmp_path / "nope.txt")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("not a corpus file")
    with pytest.raises(CorpusImportError, match="no .txt, .jsonl or .csv files"):
        read_path(tmp_path / "empty")


def test_folder_with_one_bad_file_fails_whole_read(tmp_path):
    (tmp_path / "good.txt").write_text("Good text.")
    (tmp_path / "zbad.jsonl").write_text("{not json}\n")
    with pytest.raises(CorpusImportError, match=r"zbad\.jsonl:1"):
        read_path(tmp_path)


def test_demo_documents():
    docs = demo_documents()
    assert len(docs) >= 40
    for d in docs:
        assert d.title.strip() and d.register.strip() and d.licence.strip(), d
        assert d.source.startswith("demo:")
    assert len({d.register for d in docs}) >= 9
    assert len({content_hash(d.text) for d in docs}) == len(docs)  # no duplicate passages


def test_demo_documents_fit_the_real_tokenizer(tokenizer):
    for d in demo_documents():
        n = len(tokenizer.tokenize(normalize_text(d.text)))
        assert 80 <= n <= 250, (d.title, n)


# ------------------------------------------------------------------------------ text utilities


def test_normalize_text():
    assert normalize_text("  cafe\u0301\r\nnext\rline \n\n") == "caf\u00e9\nnext\nline"
    assert unicodedata.is_normalized("NFC", normalize_text("e\u0301"))
    assert normalize_text("inner  spaces\tkept") == "inner  spaces\tkept"


def test_content_hash():
    assert content_hash("a\r\nb  ") == content_hash("a\nb")
    assert content_hash("cafe\u0301") == content_hash("caf\u00e9")
    assert content_hash("a b") != content_hash("a  b")
    assert re.fullmatch(r"[0-9a-f]{64}", content_hash("x"))


def test_sentences():
    text = 'Hello world. How are you? Fine! He said "Stop." Then left.\nNew line\n\nLast one'
    parts = sentences(text)
    assert "".join(parts) == text  # separators stay with the sentence before them
    assert parts == [
        "Hello world. ", "How are you? ", "Fine! ", 'He said "Stop." ', "Then left.\n",
        "New line\n\n", "Last one",
    ]
    assert sentences("") == []
    assert sentences("No end") == ["No end"]


LONG_TEXT = (
    " ".join(f"Sentence number {i} talks about apples, pears and the weather in town." for i in range(12))
    + "\n\nA new paragraph starts here! Does it work? "
    + " ".join(["word"] * 60) + " end."
)


@pytest.mark.parametrize("max_tokens", [20, 37, 64])
def test_cut_to_fit_real_tokenizer(tokenizer, max_tokens):
    assert len(tokenizer.tokenize(LONG_TEXT)) > max_tokens
    parts = cut_to_fit(LONG_TEXT, tokenizer, max_tokens)
    assert len(parts) > 1
    for part in parts:
        assert part == part.strip() and part
        assert len(tokenizer.tokenize(part)) <= max_tokens, part
    assert " ".join(parts).split() == LONG_TEXT.split()  # nothing lost, nothing reordered


def test_cut_to_fit_short_text_is_unchanged(tokenizer):
    assert cut_to_fit("A short text.", tokenizer, 64) == ["A short text."]


def test_cut_to_fit_enormous_word(tokenizer):
    text = "x" * 300 + " tail"
    parts = cut_to_fit(text, tokenizer, 16)
    assert all(len(tokenizer.tokenize(p)) <= 16 for p in parts)
    assert "".join(parts).replace(" ", "") == text.replace(" ", "")


# ------------------------------------------------------------------------------- playability


@pytest.mark.parametrize(
    ("position", "piece", "expected"),
    [
        (5, b" over", None),
        (5, b"over", None),
        (5, b"a\n", None),  # newline plus text is a real token
        (1, b" over", "short_prefix"),
        (2, b" over", None),  # min_prefix_tokens=2: positions 0 and 1 are not played
        (5, b"\xf0", "byte_fragment"),
        (5, b"\xc3", "byte_fragment"),
        (5, b"\n", "newline"),
        (5, b"\n\n", "newline"),
        (5, b" \n ", "newline"),
        (5, b" ", "whitespace"),
        (5, b"\t\t", "whitespace"),
        (0, b"\xf0", "short_prefix"),  # prefix rule comes before byte fragments
    ],
)
def test_classify_position(position, piece, expected):
    tok = FakeTokenizer()
    token_id = tok._id(piece)
    assert classify_position(position, token_id, piece, tok, 2) == expected


def test_classify_position_control_wins():
    tok = FakeTokenizer(control=(b"<eos>", b"<start_of_image>"))
    for piece in (b"<eos>", b"<start_of_image>"):
        assert classify_position(0, tok.ids[piece], piece, tok, 3) == "control"
        assert classify_position(9, tok.ids[piece], piece, tok, 3) == "control"


def test_build_items_fake_tokenizer():
    tok = FakeTokenizer()
    ids = tok.tokenize("One two\n\nthree   four")
    items = list(build_items(ids, tok, 1))
    assert [i.token_text for i in items] == ["One", " two", "\n\nthree", "   four"]
    assert [i.position for i in items] == [0, 1, 2, 3]
    assert [i.char_start for i in items] == [0, 3, 7, 14]
    assert [i.skip_reason for i in items] == ["short_prefix", None, None, None]
    assert [i.playable for i in items] == [False, True, True, True]


def test_build_items_real_tokenizer(tokenizer):
    text = "The fox ran.\n\nIt saw 𝔘 and naïve words."
    ids = tokenizer.tokenize(text)
    items = list(build_items(ids, tokenizer, 3))
    reasons = [i.skip_reason for i in items]
    assert reasons[:3] == ["short_prefix"] * 3
    assert "newline" in reasons  # "\n\n" is its own token
    assert "byte_fragment" in reasons  # 𝔘 is spelled with byte tokens
    for item in items:
        assert item.playable == (item.skip_reason is None)
        piece = tokenizer.token_bytes(item.token_id)
        if item.skip_reason is None:
            assert text[item.char_start :].startswith(item.token_text)
            assert piece.decode() == item.token_text


# ---------------------------------------------------------------------------------- importing


@pytest.fixture
def session(app):
    s = db.new_session()
    yield s
    s.close()


def test_import_documents_items_match_tokens(session, tokenizer):
    corpus = get_or_create_corpus(session, "unit", min_prefix_tokens=2)
    raw = [
        RawDocument(text="  The cat sat on the mat.\r\n", title="Cat", register="story", licence="CC0"),
        RawDocument(text="Water boils at one hundred degrees."),
    ]
    report = import_documents(session, corpus, raw, tokenizer, max_tokens=64)
    session.commit()
    assert (report.added, report.duplicates, report.cut) == (2, 0, 0)
    docs = session.scalars(select(Document).order_by(Document.id)).all()
    assert [d.text for d in docs] == ["The cat sat on the mat.", "Water boils at one hundred degrees."]
    assert docs[0].title == "Cat" and docs[0].register == "story" and docs[0].licence == "CC0"
    assert docs[1].title == "Water boils at one hundred degrees."  # untitled: start of text
    total_items = total_playable = 0
    for doc in docs:
        assert doc.tokenizer == tokenizer.tokenizer_id
        assert doc.token_ids == tokenizer.tokenize(doc.text)
        assert doc.n_tokens == len(doc.token_ids)
        assert doc.content_hash == content_hash(doc.text)
        assert [i.position for i in doc.items] == list(range(doc.n_tokens))
        assert [i.token_id for i in doc.items] == doc.token_ids
        assert b"".join(tokenizer.token_bytes(i.token_id) for i in doc.items) == doc.text.encode()
        assert [i.playable for i in doc.items[:2]] == [False, False]
        assert all(i.playable for i in doc.items[2:])
        total_items += len(doc.items)
        total_playable += sum(i.playable for i in doc.items)
    assert report.items == total_items and report.playable == total_playable


def test_import_skips_duplicates_on_reimport(session, tokenizer):
    corpus = get_or_create_corpus(session, "dups")
    raw = [RawDocument(text="Same text here."), RawDocument(text="Other text here.")]
    import_documents(session, corpus, raw, tokenizer, max_tokens=64)
    session.commit()
    again = [RawDocument(text="Same text here.\r\n"), RawDocument(text="Brand new text.")]
    report = import_documents(session, corpus, again, tokenizer, max_tokens=64)
    session.commit()
    assert (report.added, report.duplicates) == (1, 1)
    assert session.scalar(select(func.count(Document.id))) == 3
    # the same text in another corpus is not a duplicate
    other = get_or_create_corpus(session, "other")
    assert import_documents(session, other, raw, tokenizer, max_tokens=64).added == 2


def test_import_cuts_long_documents(session, tokenizer):
    corpus = get_or_create_corpus(session, "long")
    report = import_documents(
        session, corpus, [RawDocument(text=LONG_TEXT, title="Long")], tokenizer, max_tokens=40
    )
    session.commit()
    docs = session.scalars(select(Document).order_by(Document.id)).all()
    assert report.cut == 1 and report.added == len(docs) > 1
    assert [d.title for d in docs] == [f"Long (part {i} of {len(docs)})" for i in range(1, len(docs) + 1)]
    assert all(d.n_tokens <= 40 for d in docs)
    assert " ".join(d.text for d in docs).split() == LONG_TEXT.split()


def test_get_or_create_corpus(session):
    a = get_or_create_corpus(session, " named ", min_prefix_tokens=5)
    b = get_or_create_corpus(session, "named", min_prefix_tokens=1)
    assert a.id == b.id and b.min_prefix_tokens == 5  # the rule is fixed at creation
    assert session.scalar(select(func.count(Corpus.id))) == 1
    for bad in ("", "   ", "x" * 101):
        with pytest.raises(CorpusImportError):
            get_or_create_corpus(session, bad)


def test_items_table_rows(session, tokenizer):
    corpus = get_or_create_corpus(session, "rows", min_prefix_tokens=0)
    import_documents(session, corpus, [RawDocument(text="Rows are stored.")], tokenizer, max_tokens=64)
    session.commit()
    n = len(tokenizer.tokenize("Rows are stored."))
    assert session.scalar(select(func.count(Item.id))) == n


def test_jsonl_line_with_unicode_line_separator_is_one_record(tmp_path):
    """JSON allows a raw U+2028/U+2029 inside strings (json.dumps(ensure_ascii=False) writes them).

    Regression: str.splitlines() also splits on U+2028, so a valid line fails.
    """
    path = tmp_path / "u.jsonl"
    text = "para one\u2028para two\u2029end"
    path.write_text(json.dumps({"text": text}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert [d.text for d in read_path(path)] == [text]


def test_csv_error_line_number_counts_file_lines(tmp_path):
    """A quoted field may span lines; the error must name the file line of the bad record.

    Regression: records are counted instead of lines (reader.line_num).
    """
    path = tmp_path / "multi.csv"
    path.write_text('id,text\n1,"first\nsecond"\n2,\n')  # the empty field is on line 4
    with pytest.raises(CorpusImportError, match=r"multi\.csv:4: field 'text' is empty"):
        read_path(path)
