"""Norms without a true continuation: sentence stems people completed, imported with no target.

A stem is the item one past the last token of a document holding the context: no true token,
no correctness, no target log-prob, but the model's distribution after the stem and every
answer's log-prob. These tests check the numbers against raw llama-cpp-python (not against the
code under test), the export's empty cells, and the analysis on stems alone and mixed.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sqlalchemy import func, select

from webapp.extensions import db
from webapp.models import Document, Guess, Item, Prediction, WordScore

STEMS = [
    "At the zoo the children watched the",
    "He unlocked the door with his",
    "In the morning she drinks a cup of",
]
WORDS = [
    ["lions", "monkeys", "elephants", "penguins"],
    ["key", "keys", "card", "foot"],
    ["coffee", "tea", "milk", "water"],
]
ANSWERS_PER_STEM = 12  # >= the analysis' min_answers (10) for KL/JS


def stems_csv(with_target_column: bool = False, extra: str = "") -> str:
    """Every stem answered by 12 participants (the words cycled); no target."""
    header = "context,response,participant" + (",target" if with_target_column else "")
    lines = [header]
    for stem, words in zip(STEMS, WORDS):
        for k in range(ANSWERS_PER_STEM):
            row = f"{stem},{words[k % len(words)] if k < 8 else words[0]},p{k}"
            lines.append(row + ("," if with_target_column else ""))  # an empty target cell
    return "\n".join(lines) + "\n" + extra


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def write(tmp_path, text, name="stems.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def raw_rows(gemma, ids: list[int]) -> np.ndarray:
    """Log-softmax of every row of one raw llama-cpp-python pass over BOS + ids (float64):
    row i is the distribution of the token after ids[:i]."""
    llm = gemma._llm
    llm.reset()
    llm.eval([llm.token_bos(), *ids])
    rows = np.asarray(llm.scores[: len(ids) + 1], dtype=np.float64)
    rows -= rows.max(axis=1, keepdims=True)
    return rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))


def raw_word_logprob(gemma, prefix: list[int], word: list[int], boundary: np.ndarray) -> float:
    """ln p(word | prefix) by the chain rule plus ln P(a word boundary follows), computed with raw
    llama-cpp-python the way FACTS.md "Reusing the prefix" does (one pass over BOS + prefix, the
    word evaluated from its cache), without webapp's code. llama.cpp's kernels give different
    numbers for different batch shapes (0.1 nats on short texts), so the procedure is the same."""
    llm = gemma._llm
    llm.reset()
    llm.eval([llm.token_bos(), *prefix])
    P = len(prefix) + 1
    llm.n_tokens = P  # eval() drops the cache cells after it
    llm.eval(word)
    rows = np.asarray(llm.scores[P - 1 : P + len(word)], dtype=np.float64)
    rows -= rows.max(axis=1, keepdims=True)
    rows -= np.log(np.exp(rows).sum(axis=1, keepdims=True))
    total = sum(rows[i, token] for i, token in enumerate(word))
    return float(total + np.log(np.exp(rows[-1])[boundary].sum()))


@pytest.mark.model
def test_stems_import_without_target_and_every_answer_is_scored(app, runner, tmp_path, gemma):
    from webapp.words import boundary_mask

    result = runner.invoke(args=["import-responses", str(write(tmp_path, stems_csv()))])
    assert result.exit_code == 0, result.output
    assert f"Imported {3 * ANSWERS_PER_STEM} responses" in result.output
    assert "3 of the items are stems without a true continuation" in result.output
    boundary = boundary_mask(gemma)
    with app.app_context():
        guesses = db.session.scalars(select(Guess).order_by(Guess.id)).all()
        assert len(guesses) == 3 * ANSWERS_PER_STEM
        items = {g.item_id for g in guesses}
        assert len(items) == 3
        for item_id in items:
            item = db.session.get(Item, item_id)
            doc = item.document
            assert doc.text in STEMS
            # The item sits after the last token and has no true token; never playable.
            assert item.position == doc.n_tokens == len(doc.token_ids)
            assert item.token_id is None and item.token_text is None
            assert not item.playable and item.skip_reason == "no_target"
            assert item.char_start == len(doc.text)
            # The context's own positions are items as usual (document.items[p] is position p).
            assert [it.position for it in doc.items] == list(range(doc.n_tokens + 1))
            assert all(it.token_id is not None for it in doc.items[:-1])

            # Its prediction: the distribution after the whole stem, no target fields.
            pred = db.session.scalar(select(Prediction).where(Prediction.item_id == item.id))
            assert pred.target_logprob is None and pred.target_rank is None
            ref = raw_rows(gemma, list(doc.token_ids))[doc.n_tokens]
            p = np.exp(ref)
            assert pred.entropy == pytest.approx(float(-(p * ref).sum()), abs=2e-3)
            assert pred.top1_id == int(np.argmax(ref))
            assert len(pred.top_k) == 64
            assert [e[0] for e in pred.top_k[:5]] == np.argsort(-ref)[:5].tolist()
            assert pred.logz[7] == pytest.approx(0.0, abs=1e-4)  # T = 1: log Z = 0 (normalised)

            # Every answer: no correctness, a first-token and a word log-prob.
            for g in (g for g in guesses if g.item_id == item.id):
                assert g.is_correct is None and g.match_rule == "no_target"
                assert g.model_logprob == pytest.approx(ref[g.first_token_id], abs=2e-3)
                word_ids = gemma.tokenize(" " + g.raw_text)
                assert g.token_ids == word_ids
                want = raw_word_logprob(gemma, list(doc.token_ids), word_ids, boundary)
                assert g.word_logprob == pytest.approx(want, abs=1e-4), g.raw_text
        # Only the answers' words are scored: a stem has no true word to add.
        n_words = db.session.scalar(select(func.count(WordScore.id)))
        assert n_words == sum(len(w) for w in WORDS)


@pytest.mark.model
def test_mixed_file_keeps_targets_and_a_reimport_reuses_the_stems(app, runner, tmp_path, tokenizer):
    text = ("context,response,target\n"
            "He unlocked the door with his,key,key\n"   # a target: a real item
            "He unlocked the door with his,card,\n"     # the same context as a stem
            "He unlocked the door with his key,ring,\n")  # a stem whose text is the target document's
    path = write(tmp_path, text)
    for _ in range(2):  # the same file twice into one data set: the stems' items are reused
        result = runner.invoke(args=["import-responses", str(path), "--name", "mixed", "--no-score"])
        assert result.exit_code == 0, result.output
        assert "2 of the items are stems" in result.output
    with app.app_context():
        guesses = db.session.scalars(select(Guess).order_by(Guess.id)).all()
        assert len(guesses) == 6
        assert db.session.scalar(select(func.count(Document.id))) == 3
        key, card, ring = guesses[:3]
        assert key.is_correct is True and key.match_rule == "word"
        assert card.is_correct is None and ring.is_correct is None
        assert {g.item_id for g in guesses[3:]} == {key.item_id, card.item_id, ring.item_id}
        # "...with his key" as a target document and as a stem are two documents: the stem's
        # item is after " key", the target document's item is " key" itself.
        target_item, ring_item = db.session.get(Item, key.item_id), db.session.get(Item, ring.item_id)
        assert target_item.document.text == ring_item.document.text
        assert target_item.document_id != ring_item.document_id
        assert target_item.token_text == " key" and ring_item.token_id is None
        assert ring_item.position == len(tokenizer.tokenize("He unlocked the door with his key"))


@pytest.mark.parametrize(
    "text, needles",
    [
        ("context,response,target\nThe sky is,blue,light blue\nThe sea is,green,\n",
         ["line 2", "one word"]),
        ("context,response\n,blue\nThe sea is,\n", ["2 bad row(s)", "line 2: context is empty",
                                                     "line 3: response is empty"]),
        ("context,response\n" + "word " * 400 + ",blue\n", ["line 2", "the context is", "tokens; the limit is"]),
    ],
)
def test_bad_stem_files_are_refused_and_nothing_is_stored(app, runner, tmp_path, text, needles):
    result = runner.invoke(args=["import-responses", str(write(tmp_path, text)), "--no-score"])
    assert result.exit_code == 1
    for needle in needles:
        assert needle in result.output, result.output
    assert "Traceback" not in result.output
    with app.app_context():
        assert db.session.scalar(select(func.count(Guess.id))) == 0
        assert db.session.scalar(select(func.count(Document.id))) == 0


def test_summary_row_without_target(gemma):
    """summarize_logits with target -1: NaN target log-prob, rank 0, the rest as with a target."""
    from webapp.lm.stats import summarize_logits

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 4000)).astype(np.float32)
    with_target = summarize_logits(logits, [5, 7], 16)
    without = summarize_logits(logits, [5, -1], 16)
    assert without.target_logprob[0] == with_target.target_logprob[0]
    assert math.isnan(without.target_logprob[1]) and without.target_rank[1] == 0
    for field in ("entropy", "top_ids", "top_logprobs", "logz"):
        assert np.array_equal(getattr(without, field), getattr(with_target, field)), field


def _export(app, tmp_path, fmt: str):
    from analysis import load
    from webapp.export import ExportFilters, write_export

    with app.app_context():
        summary = write_export(db.session, tmp_path / f"export-{fmt}", fmt, ExportFilters())
    return load(summary.path), summary.path


@pytest.mark.model
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_export_marks_what_a_stem_lacks(app, runner, tmp_path, fmt):
    text = stems_csv(True, "The capital of France is,Paris,p1,Paris\n")
    result = runner.invoke(args=["import-responses", str(write(tmp_path, text)), "--mode", "token"])
    assert result.exit_code == 0, result.output
    data, path = _export(app, tmp_path, fmt)
    g, items = data.guesses, data.items
    assert len(g) == 3 * ANSWERS_PER_STEM + 1
    stem = g["target_token_id"].isna().to_numpy()
    assert stem.sum() == 3 * ANSWERS_PER_STEM
    assert g.loc[stem, "is_correct"].isna().all() and g.loc[stem, "target_text"].isna().all()
    assert (g.loc[stem, "match_rule"] == "no_target").all()
    assert g.loc[stem, "model_target_logprob"].isna().all() and g.loc[stem, "model_target_rank"].isna().all()
    assert np.isfinite(g.loc[stem, "model_answer_logprob"].to_numpy(dtype=float)).all()
    assert np.isfinite(g.loc[stem, "model_entropy"].to_numpy(dtype=float)).all()
    paris = g.loc[~stem].iloc[0]
    assert bool(paris["is_correct"]) is True and paris["target_text"] == " Paris"
    assert math.isfinite(paris["model_target_logprob"])
    stem_items = items[items["target_token_id"].isna()]
    assert len(stem_items) == 3
    assert stem_items["model_target_logprob"].isna().all()
    assert all(isinstance(v, list) and len(v) == 64 for v in stem_items["model_top_k"])
    assert all(isinstance(v, list) and len(v) == 13 for v in stem_items["model_logz"])
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["items_without_target"] == 3
    readme = (path / "README.md").read_text()
    assert "**3 items have no true" in readme and "match_rule no_target" in readme


def _stems_only_export(app, runner, tmp_path, mode="token"):
    result = runner.invoke(args=["import-responses", str(write(tmp_path, stems_csv(True))),
                                 "--mode", mode])
    assert result.exit_code == 0, result.output
    return _export(app, tmp_path, "csv")[0]


@pytest.mark.model
def test_analysis_runs_on_stems_alone_and_names_what_they_lack(app, runner, tmp_path):
    from analysis.report import run_analysis, to_json, write_report

    data = _stems_only_export(app, runner, tmp_path)
    res = run_analysis(data, n_boot=50)
    notes = " ".join(res["prep"].notes)
    assert "3 items" in notes and "no true continuation" in notes
    assert "accuracy" in notes and "simulator fit" in notes
    assert res["accuracy"] is None and "no true continuation" in res["errors"]["accuracy"]
    fit = res["simulator_fit"].set_index("metric")
    assert np.isfinite(fit.loc["model_loglik", "estimate"]) and fit.loc["model_loglik", "n_items"] == 3
    assert np.isfinite(fit.loc["simulator_fit", "estimate"])
    assert np.isfinite(fit.loc["model_sample_test", "estimate"])
    assert len(res["distances"]) == 3 and np.isfinite(res["distances"]["kl"]).all()
    assert np.isfinite(res["distances"]["js"]).all() and np.isfinite(res["distances"]["h_model"]).all()
    assert np.isfinite(res["temperature"]["estimate"].iloc[0])
    # The model log-likelihood is the mean of the exported answer log-probs (nothing dropped).
    lp = data.guesses["model_answer_logprob"].to_numpy(dtype=float)
    assert fit.loc["model_loglik", "estimate"] == pytest.approx(lp.mean(), abs=1e-9)
    html_path = write_report(data, tmp_path / "report.html", n_boot=50)
    page = html_path.read_text()
    assert "no true continuation" in page and "Traceback" not in page
    report = to_json(res)
    assert any("no true continuation" in n for n in report["notes"])
    write_report(data, tmp_path / "report.json", format="json", n_boot=50)


@pytest.mark.model
def test_analysis_of_a_mixed_export_keeps_accuracy_to_items_with_a_target(app, runner, tmp_path):
    from analysis.report import run_analysis

    extra = "".join(f"The capital of France is,{w},q{k},Paris\n"
                    for k, w in enumerate(["Paris"] * 8 + ["Lyon"] * 4))
    text = stems_csv(True, extra)
    result = runner.invoke(args=["import-responses", str(write(tmp_path, text)), "--mode", "token"])
    assert result.exit_code == 0, result.output
    data = _export(app, tmp_path, "parquet")[0]
    res = run_analysis(data, n_boot=50)
    notes = " ".join(res["prep"].notes)
    assert "3 items" in notes and "no true continuation" in notes
    acc = res["accuracy"]
    humans = acc[(acc["group"] == "all") & (acc["who"] == "humans")].iloc[0]
    assert humans["n_items"] == 1 and humans["n_answers"] == 12
    assert humans["estimate"] == pytest.approx(8 / 12)
    fit = res["simulator_fit"].set_index("metric")
    assert fit.loc["model_loglik", "n_items"] == 4  # stems and the target item
    assert len(res["distances"]) == 4
    lc = res["learning_curve"]
    assert lc["n_items"].max() == 1  # the learning curve uses the target item only


def test_migration_0009_makes_targets_optional_and_refuses_to_downgrade_over_stems(tmp_path):
    from alembic import command
    from sqlalchemy import create_engine, inspect, text

    from webapp.cli import MigrationRefused, alembic_config

    url = f"sqlite:///{tmp_path / 'm.db'}"
    cfg = alembic_config(url)
    command.upgrade(cfg, "0008")
    engine = create_engine(url)

    def nullable() -> dict[str, bool]:
        inspector = inspect(engine)
        return {f"{t}.{c['name']}": c["nullable"] for t in ("items", "predictions", "guesses")
                for c in inspector.get_columns(t)
                if c["name"] in ("token_id", "token_text", "target_logprob", "target_rank", "is_correct")}

    assert not any(nullable().values())
    command.upgrade(cfg, "head")
    assert all(nullable().values()) and len(nullable()) == 5
    with engine.begin() as conn:  # a stem's item
        conn.execute(text("INSERT INTO corpora (id, name, description, min_prefix_tokens, purpose, created_at) "
                          "VALUES (1, 'c', '', 1, 'external', '2026-01-01')"))
        conn.execute(text("INSERT INTO documents (id, corpus_id, title, register, licence, source, text, "
                          "content_hash, tokenizer, token_ids, n_tokens, created_at) VALUES "
                          "(1, 1, '', '', '', '', 'a b', 'h', 't', '[1, 2]', 2, '2026-01-01')"))
        conn.execute(text("INSERT INTO items (document_id, position, token_id, token_text, char_start, "
                          "playable) VALUES (1, 2, NULL, NULL, 3, 0)"))
    with pytest.raises(MigrationRefused, match="rows with an empty target: items: 1"):
        command.downgrade(cfg, "0008")
    assert all(nullable().values())  # nothing changed
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM items"))
    command.downgrade(cfg, "0008")
    assert not any(nullable().values())
    engine.dispose()


@pytest.mark.model
def test_stems_import_and_export_on_sqlite_and_postgresql(any_db_app, tmp_path):
    """The nullable columns, the stem's prediction and the export's empty cells on both
    databases (PostgreSQL reads through ADBC's COPY path)."""
    app = any_db_app
    text = stems_csv() + "The capital of France is,Paris,q1\n"
    text = text.replace("context,response,participant", "context,response,participant,target", 1)
    lines = text.splitlines()
    lines = [lines[0]] + [line + "," for line in lines[1:-1]] + [lines[-1] + ",Paris"]
    path = write(tmp_path, "\n".join(lines) + "\n")
    result = app.test_cli_runner().invoke(args=["import-responses", str(path), "--mode", "token"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        stems = db.session.scalars(select(Item).where(Item.token_id.is_(None))).all()
        assert len(stems) == 3
        preds = db.session.scalars(select(Prediction).where(
            Prediction.item_id.in_([it.id for it in stems]))).all()
        assert len(preds) == 3 and all(p.target_logprob is None and p.target_rank is None for p in preds)
        answers = db.session.scalars(select(Guess).where(Guess.source == "external")).all()
        assert sum(g.is_correct is None for g in answers) == 3 * ANSWERS_PER_STEM
        assert all(g.model_logprob is not None for g in answers)
    data, _path = _export(app, tmp_path, "csv")
    g = data.guesses[data.guesses["source"] == "external"]
    stem = g["target_token_id"].isna().to_numpy()
    assert stem.sum() == 3 * ANSWERS_PER_STEM
    assert g.loc[stem, "is_correct"].isna().all() and g.loc[~stem, "is_correct"].notna().all()
    assert np.isfinite(g.loc[stem, "model_answer_logprob"].to_numpy(dtype=float)).all()


@pytest.mark.model
def test_analysis_of_word_mode_stems(app, runner, tmp_path):
    """Word mode (the import's default): the word log-probs feed the model log-likelihood and
    the simulator fit; accuracy is named as missing, and the report renders."""
    from analysis.report import run_analysis, write_report

    data = _stems_only_export(app, runner, tmp_path, mode="word")
    res = run_analysis(data, n_boot=50)
    assert res["accuracy"] is None and "no true continuation" in res["errors"]["accuracy"]
    fit = res["simulator_fit"].set_index("metric")
    lp = data.guesses["model_answer_logprob"].to_numpy(dtype=float)
    assert fit.loc["model_loglik", "estimate"] == pytest.approx(lp.mean(), abs=1e-9)
    assert np.isfinite(fit.loc["simulator_fit", "estimate"])
    page = write_report(data, tmp_path / "report.html", n_boot=50).read_text()
    assert "no true continuation" in page
