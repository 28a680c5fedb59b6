"""The `humanlm` command line through click's CliRunner, on an empty migrated database."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, inspect, select

from webapp.extensions import db
from webapp.models import Corpus, Document, Item, Prediction, ScoredDocument

GOOD_TEXT = "The quick brown fox jumps over the lazy dog. It was a sunny day in the park."


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def run(runner, *args):
    return runner.invoke(args=[str(a) for a in args])


def counts(app) -> dict:
    with app.app_context():
        s = db.new_session()
        try:
            return {
                "corpora": s.scalar(select(func.count(Corpus.id))),
                "documents": s.scalar(select(func.count(Document.id))),
                "items": s.scalar(select(func.count(Item.id))),
                "predictions": s.scalar(select(func.count(Prediction.id))),
                "scored": s.scalar(select(func.count(ScoredDocument.id))),
            }
        finally:
            s.close()


def assert_failed(result, *needles):
    assert result.exit_code != 0, result.output
    assert "Error:" in result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


@pytest.fixture
def good_txt(tmp_path):
    path = tmp_path / "good.txt"
    path.write_text(GOOD_TEXT)
    return path


def test_import_good_txt_then_again(app, runner, good_txt, tokenizer):
    result = run(runner, "corpus", "import", good_txt, "--corpus", "mine")
    assert result.exit_code == 0, result.output
    n = len(tokenizer.tokenize(GOOD_TEXT))
    assert f"Corpus 'mine': added 1 documents ({n} token positions" in result.output
    assert "skipped 0 already imported" in result.output
    assert counts(app)["documents"] == 1 and counts(app)["items"] == n

    again = run(runner, "corpus", "import", good_txt, "--corpus", "mine")
    assert again.exit_code == 0, again.output
    assert "added 0 documents" in again.output and "skipped 1 already imported" in again.output
    assert counts(app)["documents"] == 1 and counts(app)["items"] == n


def test_import_uses_min_prefix_tokens(app, runner, good_txt):
    result = run(runner, "corpus", "import", good_txt, "--corpus", "p5", "--min-prefix-tokens", "5")
    assert result.exit_code == 0, result.output
    with app.app_context():
        s = db.new_session()
        corpus = s.scalar(select(Corpus))
        items = s.scalars(select(Item).order_by(Item.position)).all()
        assert corpus.min_prefix_tokens == 5
        assert [i.skip_reason for i in items[:5]] == ["short_prefix"] * 5
        assert all(i.playable for i in items[5:] if i.token_text.strip())
        s.close()


def test_import_jsonl_with_text_field_and_blank_line_split(app, runner, tmp_path):
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"body": f"Document number {i} is here."}) for i in range(3)))
    result = run(runner, "corpus", "import", jsonl, "--corpus", "j", "--text-field", "body")
    assert result.exit_code == 0, result.output
    assert "added 3 documents" in result.output
    txt = tmp_path / "blocks.txt"
    txt.write_text("First block.\n\nSecond block.\n\nThird block.")
    result = run(runner, "corpus", "import", txt, "--corpus", "b", "--split", "blank-line")
    assert result.exit_code == 0, result.output
    assert "added 3 documents" in result.output
    assert counts(app)["documents"] == 6


BAD_FILES = {
    "empty.txt": b"",
    "binary.txt": b"MZ\x00\x00\x90",
    "latin1.txt": b"caf\xe9",
    "bad.jsonl": b'{"text": "fine"}\n{oops}\n',
    "nofield.jsonl": b'{"body": "no text field"}\n',
    "nocol.csv": b"a,b\n1,2\n",
    "slides.pdf": b"%PDF-1.4",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_import_bad_file_fails_cleanly(app, runner, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name])
    assert_failed(run(runner, "corpus", "import", path, "--corpus", "bad"), name)
    assert counts(app)["documents"] == 0 and counts(app)["corpora"] == 0


def test_import_missing_path(app, runner, tmp_path):
    assert_failed(run(runner, "corpus", "import", tmp_path / "nope.txt"), "no such file")
    assert counts(app)["documents"] == 0


def test_import_oversized_file(app, runner, tmp_path):
    app.config["MAX_IMPORT_BYTES"] = 50
    path = tmp_path / "big.txt"
    path.write_text(GOOD_TEXT)
    assert_failed(run(runner, "corpus", "import", path), "over the limit of 50")
    assert counts(app)["documents"] == 0


def test_import_folder_is_all_or_nothing(app, runner, tmp_path, good_txt):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a_good.txt").write_text(GOOD_TEXT)
    (folder / "b_good.jsonl").write_text(json.dumps({"text": "Another fine text."}))
    (folder / "c_bad.txt").write_bytes(b"\xff\xfe\x00b\x00a\x00d")
    assert_failed(run(runner, "corpus", "import", folder, "--corpus", "mixed"), "c_bad.txt")
    assert counts(app) == {"corpora": 0, "documents": 0, "items": 0, "predictions": 0, "scored": 0}
    (folder / "c_bad.txt").unlink()
    result = run(runner, "corpus", "import", folder, "--corpus", "mixed")
    assert result.exit_code == 0 and "added 2 documents" in result.output
    assert counts(app)["documents"] == 2


def test_import_bad_corpus_name_rolls_back(app, runner, good_txt):
    assert_failed(run(runner, "corpus", "import", good_txt, "--corpus", "x" * 101), "corpus name")
    assert counts(app)["documents"] == 0 and counts(app)["corpora"] == 0


def test_corpus_list(app, runner, good_txt):
    empty = run(runner, "corpus", "list")
    assert empty.exit_code == 0 and "No corpora yet" in empty.output
    run(runner, "corpus", "import", good_txt, "--corpus", "listed")
    with app.app_context():
        s = db.new_session()
        n_items = s.scalar(select(func.count(Item.id)))
        n_playable = s.scalar(select(func.count(Item.id)).where(Item.playable))
        s.close()
    listed = run(runner, "corpus", "list")
    assert listed.exit_code == 0
    assert f"listed: 1 documents, {n_items} positions ({n_playable} playable), 0 scored" in listed.output


def test_score_unknown_corpus(app, runner):
    assert_failed(run(runner, "score", "--corpus", "nope"), "unknown corpus 'nope'")
    assert counts(app)["predictions"] == 0


def test_score_unknown_model(app, runner, good_txt):
    run(runner, "corpus", "import", good_txt)
    assert_failed(run(runner, "score", "--model", "kenlm:gpt-4"), "unknown model backend")
    assert_failed(run(runner, "score", "--model", "openai:gpt-4"), "names the model after '#'")
    assert_failed(run(runner, "score", "--model", "llamacpp:/no/such/model.gguf"), "does not exist")
    assert counts(app)["predictions"] == 0


@pytest.mark.model
def test_score_then_score_again(app, runner, good_txt):
    imported = run(runner, "corpus", "import", good_txt, "--corpus", "s")
    assert imported.exit_code == 0, imported.output
    n_items = counts(app)["items"]
    first = run(runner, "score", "--corpus", "s", "--top-k", "8")
    assert first.exit_code == 0, first.output
    assert f"Scored 1 documents ({n_items} tokens" in first.output
    assert "0 were already scored" in first.output
    assert counts(app)["predictions"] == n_items and counts(app)["scored"] == 1
    with app.app_context():
        s = db.new_session()
        assert all(len(p.top_k) == 8 for p in s.scalars(select(Prediction)))
        s.close()
    second = run(runner, "score", "--top-k", "8")
    assert second.exit_code == 0, second.output
    assert "Nothing to score: all 1 documents are already scored" in second.output
    assert counts(app)["predictions"] == n_items
    assert "s: 1 documents" in run(runner, "corpus", "list").output
    assert ", 1 scored" in run(runner, "corpus", "list").output
    filled = run(runner, "score", "--fill-guesses", "--top-k", "8")
    assert filled.exit_code == 0 and "Filled exact model log-probs for 0 guesses" in filled.output


def test_score_top_k_range(runner):
    result = run(runner, "score", "--top-k", "0")
    assert result.exit_code != 0 and "top-k" in result.output


def test_db_upgrade_is_idempotent(app, runner, good_txt):
    run(runner, "corpus", "import", good_txt)
    for _ in range(2):
        result = run(runner, "db", "upgrade")
        assert result.exit_code == 0, result.output
        assert "is at revision head" in result.output
    assert counts(app)["documents"] == 1  # data survives
    with app.app_context():
        tables = set(inspect(db.engine).get_table_names())
    assert {"corpora", "documents", "items", "guesses", "alembic_version"} <= tables
