"""`humanlm import-responses`: cloze-style human data from elsewhere, scored with the real model."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import func, select

from webapp.extensions import db
from webapp.models import Corpus, Document, Guess, Item, Prediction, WordScore

CLOZE = (
    "context,response,target,count,participant\n"
    "The capital of France is,Paris,Paris,3,p1\n"
    "The capital of France is,Lyon,Paris,1,p2\n"
    "She poured milk into her,tea,tea,2,\n"
    "She poured milk into her,coffee,tea,,p1\n"
)


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def write(tmp_path, text, name="cloze.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def n_rows(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(model.id)))


@pytest.mark.model
def test_import_cloze_csv_stores_scores_and_marks_external(app, runner, tmp_path, gemma):
    result = runner.invoke(args=["import-responses", str(write(tmp_path, CLOZE))])
    assert result.exit_code == 0, result.output
    assert "Imported 7 responses (4 rows) on 2 items" in result.output
    with app.app_context():
        guesses = db.session.scalars(select(Guess).order_by(Guess.id)).all()
        assert len(guesses) == 7 and all(g.source == "external" and g.mode == "word" for g in guesses)
        paris = [g for g in guesses if g.raw_text == "Paris"]
        assert len(paris) == 3 and all(g.is_correct for g in paris)
        assert not any(g.is_correct for g in guesses if g.raw_text in ("Lyon", "coffee"))
        assert len({g.player_id for g in guesses}) == 3  # p1, p2 and the unnamed one
        corpus = db.session.scalar(select(Corpus).where(Corpus.name == "external:cloze"))
        assert corpus.purpose == "external"
        item = db.session.get(Item, paris[0].item_id)
        assert item.token_text == " Paris"
        assert item.document.text == "The capital of France is Paris"
        # Scored: a prediction for the item, exact first-token and word log-probs for answers.
        prediction = db.session.scalar(select(Prediction).where(Prediction.item_id == item.id))
        assert prediction.target_logprob == pytest.approx(paris[0].model_logprob, abs=1e-5)
        word = db.session.scalar(select(WordScore).where(WordScore.item_id == item.id, WordScore.word == "Paris"))
        assert paris[0].word_logprob == pytest.approx(word.logprob)
        assert word.logprob == pytest.approx(word.tokens_logprob + word.end_logprob)
        # " Paris" is one token, so its word log-prob is its token log-prob plus the end term.
        assert word.tokens_logprob == pytest.approx(prediction.target_logprob, abs=0.05)
        assert all(g.word_logprob is not None and g.word_logprob < 0 for g in guesses)
        assert all(math.isfinite(g.model_logprob) for g in guesses)


@pytest.mark.parametrize(
    "text, needles",
    [
        ("", ["empty file"]),
        ("response,target\nc,d\n", ["missing column(s) context"]),  # no target: a stem, fine
        ("context,response,target,colour\nA,b,c,d\n", ["unknown column(s) colour"]),
        ("context,response,target\nThe sky is,,blue\n", ["line 2", "response is empty"]),
        ("context,response,target,count\nThe sky is,blue,blue,x\nThe sky is,red,blue,0\n",
         ["2 bad row(s)", "line 2: count 'x' is not a whole number", "line 3: count must be between"]),
        ("context,response,target\nThe sky is,blue,light blue\n", ["line 2", "one word"]),
        ("context,response,target,item_id\nThe sky is,blue,blue,q1\nThe sea is,blue,blue,q1\n",
         ["line 3: item_id 'q1' has another context or target than on line 2"]),
        ("context,response,target\nThe sky is,blue,blue,extra\n", ["line 2: more cells than columns"]),
        ("context,response,target\n", ["no rows to import"]),
    ],
)
def test_bad_files_are_refused_with_line_numbers_and_nothing_is_stored(app, runner, tmp_path, text, needles):
    result = runner.invoke(args=["import-responses", str(write(tmp_path, text)), "--no-score"])
    assert result.exit_code == 1
    for needle in needles:
        assert needle in result.output, result.output
    assert "Traceback" not in result.output
    assert n_rows(app, Guess) == 0 and n_rows(app, Document) == 0


def test_non_utf8_and_missing_files_are_refused(app, runner, tmp_path):
    latin = write(tmp_path, "context,response,target\nCafé au,lait,lait\n", encoding="latin-1")
    result = runner.invoke(args=["import-responses", str(latin), "--no-score"])
    assert result.exit_code == 1 and "not UTF-8" in result.output
    result = runner.invoke(args=["import-responses", str(tmp_path / "nope.csv"), "--no-score"])
    assert result.exit_code == 1 and "no such file" in result.output
    assert n_rows(app, Guess) == 0


def test_token_mode_scores_responses_by_their_first_token(app, runner, tmp_path, tokenizer):
    path = write(tmp_path, "context,response,target\nThe capital of France is,Paris,Paris\n"
                           "The capital of France is,Parisian,Paris\n")
    result = runner.invoke(args=["import-responses", str(path), "--mode", "token", "--no-score"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        rules = [g.match_rule for g in db.session.scalars(select(Guess).order_by(Guess.id))]
        assert rules[0] == "first_token"
        same_start = tokenizer.tokenize(" Parisian")[0] == tokenizer.tokenize(" Paris")[0]
        assert rules[1] == ("first_token" if same_start else "none")
        assert all(g.mode == "token" for g in db.session.scalars(select(Guess)))


@pytest.mark.model
def test_import_is_quiet_shows_progress_and_passes_each_context_once(
    app, runner, tmp_path, gemma, capfd, monkeypatch
):
    """llama.cpp's own log lines stay out of the output (they used to print "n_ctx_seq ...
    possible training context overflow" on every model load), a progress bar with a rate
    shows the scoring, and each context is evaluated in one pass of the model."""
    from webapp import lm
    from webapp.lm.llamacpp import LlamaCppModel

    calls = []
    real = LlamaCppModel.score_continuations
    monkeypatch.setattr(LlamaCppModel, "score_continuations",
                        lambda self, *a, **kw: calls.append(a[0]) or real(self, *a, **kw))
    result = runner.invoke(args=["import-responses", str(write(tmp_path, CLOZE))])
    assert result.exit_code == 0, result.output
    captured = capfd.readouterr()
    for text in (result.output, captured.out, captured.err):
        assert "n_ctx_seq" not in text and "llama_" not in text and "SWA cache" not in text
    assert "Scoring with" in result.output and "100%" in result.output
    assert "doc/s" in result.output or "s/doc" in result.output  # the rate
    assert len(calls) == 2  # two contexts, one pass each (predictions, first tokens and words)
    assert "Scored with" in result.output and "7 word log-probs filled" in result.output

    # --verbose (set_verbose) lets llama.cpp speak again
    lm.set_verbose(True)
    try:
        from webapp.lm.llamacpp import LlamaCppModel as Model

        Model("llamacpp:gemma-3-270m", vocab_only=True)
        assert "n_ctx_seq" in capfd.readouterr().err
    finally:
        lm.set_verbose(False)
    Model("llamacpp:gemma-3-270m", vocab_only=True)
    assert "n_ctx_seq" not in capfd.readouterr().err
