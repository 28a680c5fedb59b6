"""Hostile input to `humanlm corpus import` and `humanlm import-responses`: every bad file gets a
message naming the file and line, exit status 1, no traceback, and nothing stored.

NUL and lone surrogates are refused everywhere (webapp/textcheck.py): PostgreSQL cannot store NUL,
SQLite would store it silently, and a lone surrogate is not a character. A CSV field may be as long
as the file (csv's own 131,072-character cap is lifted); what is too long for the model is cut
(corpus import) or refused with its line (import-responses).
"""

from __future__ import annotations

import csv
import json

import pytest
from sqlalchemy import func, select

from webapp.extensions import db
from webapp.models import Corpus, Document, Guess, Item
from webapp.textcheck import storable_text_problem

GOOD = "The quick brown fox jumps over the lazy dog."
CSV_LIMIT = 131_072  # csv.field_size_limit() by default


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def counts(app) -> dict:
    with app.app_context():
        s = db.new_session()
        try:
            return {table.__tablename__: s.scalar(select(func.count(table.id)))
                    for table in (Corpus, Document, Item, Guess)}
        finally:
            s.close()


def write(tmp_path, name: str, data: str | bytes):
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def refused(app, runner, args, *needles):
    """Run the command; it must refuse cleanly with every needle in its message, storing nothing."""
    before = counts(app)
    result = runner.invoke(args=[str(a) for a in args])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exc_info  # refused, did not crash
    assert "Error:" in result.output and "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output
    assert counts(app) == before
    return result


def test_storable_text_problem():
    assert storable_text_problem("fine text, café, 😀\u2028") is None
    assert storable_text_problem("a\x00b") == "contains a NUL character (\\u0000), which cannot be stored"
    assert "lone surrogate (\\udc80)" in storable_text_problem("a\udc80b")
    assert storable_text_problem("") is None


# ------------------------------------------------------------------------------- corpus import


def jsonl(bad_line: str) -> str:
    """Two good records, then the bad one on line 3."""
    good = [json.dumps({"text": f"{GOOD} Number {i}."}) for i in (1, 2)]
    return "\n".join([*good, bad_line]) + "\n"


def test_jsonl_lone_surrogate_is_refused(app, runner, tmp_path):
    path = write(tmp_path, "x.jsonl", jsonl(r'{"text": "abc \ud800 def"}'))
    refused(app, runner, ["corpus", "import", path],
            "x.jsonl:3: field 'text' contains a lone surrogate (\\ud800)", "cannot be stored")


def test_jsonl_nul_escape_is_refused(app, runner, tmp_path):
    path = write(tmp_path, "x.jsonl", jsonl(r'{"text": "abc \u0000 def"}'))
    refused(app, runner, ["corpus", "import", path],
            "x.jsonl:3: field 'text' contains a NUL character (\\u0000), which cannot be stored")


def test_jsonl_nul_in_title_is_refused(app, runner, tmp_path):
    path = write(tmp_path, "x.jsonl", jsonl(r'{"text": "fine", "title": "a\u0000"}'))
    refused(app, runner, ["corpus", "import", path], "x.jsonl:3: field 'title' contains a NUL")


@pytest.mark.parametrize(
    "line",
    ["[" * 1000 + "]" * 1000, '{"a":' * 1000 + "1" + "}" * 1000],
    ids=["arrays", "objects"],
)
def test_jsonl_nested_1000_levels_is_refused(app, runner, tmp_path, line):
    path = write(tmp_path, "x.jsonl", jsonl(line))
    refused(app, runner, ["corpus", "import", path], "x.jsonl:3: JSON nested too deeply")


def test_jsonl_number_python_cannot_read_is_refused(app, runner, tmp_path):
    path = write(tmp_path, "x.jsonl", jsonl('{"text": "fine", "n": ' + "1" * 5000 + "}"))
    refused(app, runner, ["corpus", "import", path], "x.jsonl:3: JSON with a number too long")


def test_jsonl_nested_metadata_is_refused(app, runner, tmp_path):
    path = write(tmp_path, "x.jsonl", jsonl('{"text": "fine", "title": ["a", ["b"]]}'))
    refused(app, runner, ["corpus", "import", path], "x.jsonl:3: field 'title' is not text")


def test_csv_nul_byte_is_refused(app, runner, tmp_path):
    path = write(tmp_path, "x.csv", f"text\n{GOOD}\nabc \x00 def\n")
    refused(app, runner, ["corpus", "import", path], "x.csv: looks like a binary file",
            "NUL byte on line 3")


@pytest.mark.parametrize(
    "data, needle",
    [
        (f"{GOOD}\ncaf\xe9\n".encode("latin-1"), "x.txt: not valid UTF-8 (line 2, byte 48)"),
        (f"{GOOD}\nabc \ud800 def\n".encode("utf-8", "surrogatepass"), "not valid UTF-8 (line 2"),
        (f"{GOOD}\nabc \x00 def\n".encode(), "x.txt: looks like a binary file (a NUL byte on line 2"),
    ],
    ids=["latin-1", "encoded-surrogate", "nul"],
)
def test_txt_invalid_utf8_and_nul_bytes_are_refused(app, runner, tmp_path, data, needle):
    path = write(tmp_path, "x.txt", data)
    refused(app, runner, ["corpus", "import", path], needle)


def test_csv_field_longer_than_csv_limit_is_imported_and_cut(app, runner, tmp_path):
    """A long text in a CSV cell is read like the same text in a .txt file: cut into documents of
    at most HUMANLM_MAX_DOCUMENT_TOKENS tokens, nothing lost; csv's process-wide limit is put back."""
    sentences = [f"Sentence {i} tells of the fox." for i in range(CSV_LIMIT // 25)]
    long_text = " ".join(sentences)
    assert len(long_text) > CSV_LIMIT
    path = write(tmp_path, "x.csv", "title,text\nshort," + GOOD + "\nlong," + long_text + "\n")
    result = runner.invoke(args=["corpus", "import", str(path), "--corpus", "long"])
    assert result.exit_code == 0, result.output
    assert "cut 1 long texts" in result.output
    assert csv.field_size_limit() == CSV_LIMIT
    with app.app_context():
        parts = db.session.scalars(
            select(Document.text).where(Document.title.startswith("long")).order_by(Document.id)
        ).all()
    assert len(parts) > 1 and " ".join(parts) == long_text


# ---------------------------------------------------------------------------- import-responses


def responses_csv(bad_row: str) -> str:
    return f"context,response,target\nThe capital of France is,Paris,Paris\n{bad_row}\n"


def test_responses_nul_in_cells_is_refused(app, runner, tmp_path):
    path = write(tmp_path, "x.csv", responses_csv("The sky \x00 is,blue,bl\x00ue"))
    refused(app, runner, ["import-responses", path, "--no-score"],
            "x.csv: 1 bad row(s), nothing imported",
            "line 3: context contains a NUL character (\\u0000), which cannot be stored",
            "target contains a NUL character")


def test_responses_encoded_surrogate_is_refused(app, runner, tmp_path):
    data = responses_csv("The sky \ud800 is,blue,blue").encode("utf-8", "surrogatepass")
    refused(app, runner, ["import-responses", write(tmp_path, "x.csv", data), "--no-score"],
            "x.csv: not UTF-8 text (line 3, byte")


def test_responses_context_longer_than_csv_limit_is_refused_by_the_token_limit(app, runner, tmp_path):
    long_context = " ".join(["The fox ran."] * (CSV_LIMIT // 12 + 1))
    assert len(long_context) > CSV_LIMIT
    path = write(tmp_path, "x.csv", responses_csv(f"{long_context},blue,blue"))
    refused(app, runner, ["import-responses", path, "--no-score"],
            "x.csv: line 3: context and target are",
            "the limit is 128 (HUMANLM_MAX_DOCUMENT_TOKENS)")
    assert csv.field_size_limit() == CSV_LIMIT


def test_responses_response_longer_than_csv_limit_is_refused(app, runner, tmp_path):
    path = write(tmp_path, "x.csv", responses_csv("The sky is," + "b" * (CSV_LIMIT + 1) + ",blue"))
    refused(app, runner, ["import-responses", path, "--no-score"],
            "line 3: response is longer than 400 characters")


def test_responses_file_over_the_size_limit_names_the_setting_and_the_way_out(app, runner, tmp_path):
    """A data set larger than one import reads is refused before a row is stored, with the
    setting that caps it and the remedy (parts imported with the same --name)."""
    app.config["MAX_IMPORT_BYTES"] = 60
    path = write(tmp_path, "x.csv", responses_csv("The sky is,blue,blue"))
    assert path.stat().st_size > 60
    refused(app, runner, ["import-responses", path, "--no-score"],
            "x.csv: larger than 60 bytes (HUMANLM_MAX_IMPORT_BYTES)",
            "nothing imported", "import them one by one with the same --name")
