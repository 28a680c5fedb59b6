"""Every answer under every model (webapp.predictions.fill_model_scores), with real models only:
the embedded Gemma 3 270M (the corpus's own tokenizer) and an n-gram model over cl100k_base
tokens trained on the test texts (another tokenizer, exact full-vocabulary numbers).

Checked: each stored number against an independent computation (the backend's logprobs_at and
next_token_logprobs on the concatenated tokens); the same-tokenizer numbers against the stored
Predictions, first-token look-ups and word scores; the passes (one per document, one more per
prefix the other tokenizer splits differently); interruption and re-run; the CLI (`humanlm
score --model`, `--answers`, `humanlm models`, bad specs); the background job filling a
compared model; the export's long tables read back and pivoted.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select
from support import MODEL_SPEC, TEST_MAX_TOKENS

from webapp import jobs
from webapp.app import create_app
from webapp.cli import upgrade_database
from webapp.corpus import RawDocument, get_or_create_corpus, import_documents
from webapp.extensions import db
from webapp.lm import display_text
from webapp.lm.ngram import NgramModel, train
from webapp.models import (
    AnswerModelScore,
    Corpus,
    Document,
    Guess,
    Item,
    ItemModelScore,
    LanguageModel,
    Player,
    Prediction,
    WordScore,
)
from webapp.predictions import fill_model_scores, get_or_create_model_row, run_model_work
from webapp.responses import import_responses, read_rows
from webapp.words import (
    MAX_WORD_CHARS,
    boundary_mask,
    is_word_start,
    target_word,
    word_token_ids,
)

pytestmark = pytest.mark.model

TOP_K = 64
TEXTS = [
    "The quick brown fox jumps over the lazy dog. It was a sunny day in the park.",
    "To make a cup of tea, boil the water, add the tea bag and wait three minutes.",
    # Gemma cuts "hier|ogly|phs", cl100k "hier|og|lyph|s": the prefix before "phs" is no
    # prefix of the n-gram model's tokens of the document, so it gets a pass of its own.
    "The archaeologists catalogued unbelievably many hieroglyphs near Thebes.",
]
NORMS = (  # imported responses: two with a target, two to a stem (no true next word)
    "context,response,target\n"
    "The cat sat on the,mat,mat\n"
    "The cat sat on the,floor,mat\n"
    "She opened the door and saw a,ghost,\n"
    "She opened the door and saw a,man,\n"
)
# (document index, item position, mode, text): token answers as typed, word answers as words
ANSWERS = [
    (0, 3, "token", " fox"), (0, 3, "token", " zebra stripes"), (0, 3, "token", "cat"),
    (0, 4, "word", "jumps"), (0, 4, "word", " leaps "), (0, 9, "token", "."),
    (1, 5, "word", "tea"), (1, 5, "token", " coffee"), (1, 6, "token", ","),
    (2, 8, "token", "phs"), (2, 8, "token", "glyphs"), (2, 2, "word", "catalogued"),
]


def _config(path: Path, **extra) -> dict:
    return {"DATABASE_URL": f"sqlite:///{path}", "TESTING": True, "SECRET_KEY": "test",
            "MODEL": MODEL_SPEC, "MAX_DOCUMENT_TOKENS": TEST_MAX_TOKENS, "TOP_K": TOP_K,
            "ROOM_ANSWER_BATCH_MS": 0, **extra}


@pytest.fixture(scope="module")
def ngram(tmp_path_factory) -> NgramModel:
    """A trigram model over cl100k_base tokens, trained on the test texts."""
    path = tmp_path_factory.mktemp("ngram") / "texts.ngram"
    train([*TEXTS, "The cat sat on the mat.", "She opened the door and saw a man."],
          order=3, encoding="cl100k_base", output=path)
    return NgramModel(f"ngram:{path}")


def _add_answers(session, gemma) -> None:
    docs = session.scalars(select(Document).join(Corpus).where(Corpus.name == "play")
                           .order_by(Document.id)).all()
    for n, (d, position, mode, text) in enumerate(ANSWERS):
        item = docs[d].items[position]
        key = f"answer-{n}"
        session.add(Player(id=key))
        session.flush()
        ids = gemma.tokenize(text if mode == "token" else " " + text.strip())
        session.add(Guess(client_key=key, player_id=key, item_id=item.id, raw_text=text,
                          token_ids=ids,
                          first_token_id=ids[0], multi_token=len(ids) > 1, is_correct=False,
                          match_rule="none", mode=mode, server_received_at=datetime.now(UTC)))
    item = docs[0].items[5]  # a skip: nothing to score, but its item is answered
    session.add(Player(id="skipper"))
    session.flush()
    session.add(Guess(client_key="skip", player_id="skipper", item_id=item.id, raw_text="",
                      token_ids=[], skipped=True, is_correct=False, match_rule="skip",
                      mode="token", server_received_at=datetime.now(UTC)))


@pytest.fixture(scope="module")
def template(tmp_path_factory, gemma) -> Path:
    """Three documents and imported norms (with two stems), scored by Gemma (Predictions), with
    token, word and skipped answers whose guesses columns are filled (first tokens, words)."""
    folder = tmp_path_factory.mktemp("answers")
    path = folder / "template.db"
    upgrade_database(f"sqlite:///{path}")
    session = db.new_session()
    try:
        corpus = get_or_create_corpus(session, "play", min_prefix_tokens=1)
        import_documents(session, corpus, [RawDocument(title=f"t{i}", text=t)
                                           for i, t in enumerate(TEXTS)],
                         gemma, max_tokens=TEST_MAX_TOKENS)
        norms = folder / "norms.csv"
        norms.write_text(NORMS)
        import_responses(session, read_rows(norms, 10_000), gemma, name="norms", mode="word",
                         max_tokens=TEST_MAX_TOKENS)
        _add_answers(session, gemma)
        session.commit()
        run_model_work(session, gemma, top_k=TOP_K, guesses=True, words=True)
    finally:
        session.close()
        db.dispose()
    return path


@pytest.fixture(scope="module")
def filled(tmp_path_factory, template, gemma, ngram) -> tuple[Path, dict]:
    """The template with every answer and item filled under Gemma and under the n-gram model
    (the calls each made: what a pass was asked)."""
    path = tmp_path_factory.mktemp("filled") / "filled.db"
    shutil.copy(template, path)
    db.configure(f"sqlite:///{path}")
    session = db.new_session()
    calls: dict[str, list] = {}
    try:
        for model in (gemma, ngram):
            seen = calls[model.spec] = []
            real = model.score_continuations

            def spy(*args, real=real, seen=seen, **kwargs):
                seen.append((list(args[0]), kwargs))
                return real(*args, **kwargs)

            model.score_continuations = spy
            try:
                report = fill_model_scores(session, model, top_k=TOP_K)
            finally:
                del model.score_continuations
            assert report.passes == len(seen)
    finally:
        session.close()
        db.dispose()
    return path, calls


def _session_on(path: Path):
    db.configure(f"sqlite:///{path}")
    return db.new_session()


@pytest.fixture
def filled_session(filled, tmp_path):
    path = tmp_path / "copy.db"
    shutil.copy(filled[0], path)
    session = _session_on(path)
    yield session
    session.close()
    db.dispose()


def _row(session, model) -> LanguageModel:
    return session.scalar(select(LanguageModel).where(LanguageModel.spec == model.spec))


def _logsumexp(values: np.ndarray) -> float:
    top = values.max()
    return float(top + np.log(np.exp(values - top).sum()))


class Independent:
    """The numbers recomputed from the model's own tokens of the concatenated text: one pass
    over prefix + continuation (logprobs_at), and the full distribution after it (each
    distinct sequence once)."""

    def __init__(self, model) -> None:
        self.model = model
        self.mask = boundary_mask(model)
        self._chains: dict[tuple, float] = {}
        self._after: dict[tuple, np.ndarray] = {}

    def chain(self, prefix_text: str, tokens: list[int]) -> float:
        prefix = self.model.tokenize(prefix_text)
        key = (*prefix, None, *tokens)
        if key not in self._chains:
            found = self.model.logprobs_at(
                prefix + tokens, [(len(prefix) + i, t) for i, t in enumerate(tokens)])
            self._chains[key] = float(sum(lp for lp, _rank in found))
        return self._chains[key]

    def _next(self, ids: list[int]) -> np.ndarray:
        if tuple(ids) not in self._after:
            self._after[tuple(ids)] = np.asarray(self.model.next_token_logprobs(ids),
                                                 dtype=np.float64)
        return self._after[tuple(ids)]

    def end(self, prefix_text: str, tokens: list[int]) -> float:
        return _logsumexp(self._next(self.model.tokenize(prefix_text) + tokens)[self.mask])

    def next(self, prefix_text: str) -> tuple[float, int]:
        logp = self._next(self.model.tokenize(prefix_text))
        p = np.exp(logp)
        return float(-(p[p > 0] * logp[p > 0]).sum()), int(np.argmax(logp))


def _target_text(doc: Document, item: Item) -> str:
    following = next((it for it in doc.items if it.position == item.position + 1), None)
    return doc.text[item.char_start: following.char_start if following else len(doc.text)]


# ------------------------------------------------------------------------ the numbers themselves


@pytest.mark.parametrize("which", ["ngram", "gemma"])
def test_every_number_matches_an_independent_computation(filled_session, which, gemma, ngram):
    """Answers and items under each model, recomputed from the model's own tokens of prefix +
    continuation: exact for the n-gram model. For Gemma the independent pass is over another
    sequence (prefix + continuation, not the document), and llama.cpp's CPU kernels give
    numbers that differ with the batch's shape (measured here: most equal, at most 0.063 nats
    apart, for sequences under 8 tokens): within 0.1 nats. The next test holds Gemma to its own
    stored numbers, computed the same way, to 1e-4 and better."""
    session, model = filled_session, {"ngram": ngram, "gemma": gemma}[which]
    tol = 1e-9 if which == "ngram" else 0.1
    row = _row(session, model)
    check = Independent(model)
    answers = session.scalars(select(AnswerModelScore).where(
        AnswerModelScore.model_id == row.id)).all()
    guesses = session.scalars(select(Guess).where(
        Guess.mode.in_(("token", "word")), Guess.skipped.is_(False))).all()
    assert sorted(a.guess_id for a in answers) == sorted(g.id for g in guesses)
    words = 0
    for score in answers:
        guess = session.get(Guess, score.guess_id)
        item = guess.item
        prefix = item.document.text[: item.char_start]
        assert score.same_tokenizer is (which == "gemma")
        if guess.mode == "word":
            word = guess.raw_text.strip()[:MAX_WORD_CHARS]
            tokens = word_token_ids(model, prefix, word)
            end = check.end(prefix, tokens)
            assert score.end_logprob == pytest.approx(end, abs=tol)
            assert score.logprob == pytest.approx(check.chain(prefix, tokens) + end, abs=tol)
            words += 1
        else:
            tokens = model.tokenize(guess.raw_text)
            assert score.end_logprob is None
            assert score.logprob == pytest.approx(check.chain(prefix, tokens), abs=tol)
        assert score.n_tokens == len(tokens) > 0
        if which == "ngram":  # other token ids: no first-token numbers
            assert score.first_token_logprob is None and score.first_token_rank is None
    assert words == 8  # four in the documents, four imported norms (two to a stem)
    items = session.scalars(select(ItemModelScore).where(ItemModelScore.model_id == row.id)).all()
    answered = set(session.scalars(select(Guess.item_id).distinct()))
    assert {s.item_id for s in items} == answered  # the skip's item too
    stems = 0
    for score in items:
        item = session.get(Item, score.item_id)
        doc = item.document
        prefix = doc.text[: item.char_start]
        entropy, top1 = check.next(prefix)
        # (the entropy is summarised in float32 over the vocabulary, like a Prediction's)
        assert score.entropy == pytest.approx(entropy, abs=1e-4 if which == "ngram" else 0.1)
        assert score.same_tokenizer is (which == "gemma")
        if which == "ngram":  # (Gemma's top-1 is checked against its Predictions below)
            assert score.top1_text == display_text(model.token_bytes(top1))
        if item.token_id is None:  # a stem: the distribution after it, no target
            stems += 1
            assert score.target_logprob is None and score.target_word_logprob is None
            assert score.top1_starts_word is None
            continue
        tokens = model.tokenize(_target_text(doc, item))
        assert score.target_logprob == pytest.approx(check.chain(prefix, tokens), abs=tol)
        word = target_word(doc, item)
        start = score.top1_text.lstrip()
        assert score.top1_starts_word == (bool(start) and word.startswith(start))
        if is_word_start(doc, item):
            tokens = word_token_ids(model, prefix, word)
            expected = check.chain(prefix, tokens) + check.end(prefix, tokens)
            assert score.target_word_logprob == pytest.approx(expected, abs=tol)
        else:
            assert score.target_word_logprob is None
    assert stems == 1


def test_the_corpus_tokenizer_agrees_with_the_stored_predictions(filled_session, gemma):
    """Gemma is the corpus's tokenizer: the chain-rule numbers are the per-position ones
    already stored (Predictions, the guesses' first-token look-ups, word scores)."""
    session = filled_session
    row = _row(session, gemma)
    compared = 0
    for score in session.scalars(select(ItemModelScore).where(ItemModelScore.model_id == row.id)):
        prediction = session.scalar(select(Prediction).where(
            Prediction.item_id == score.item_id, Prediction.model_id == row.id))
        item = session.get(Item, score.item_id)
        assert score.same_tokenizer is True
        if item.token_id is not None:
            assert score.target_logprob == pytest.approx(prediction.target_logprob, abs=1e-4)
            assert score.target_n_tokens == 1
            truth = session.scalar(select(WordScore.logprob).where(
                WordScore.item_id == item.id, WordScore.model_id == row.id,
                WordScore.word == target_word(item.document, item)))
            if truth is not None:  # an item answered in word mode: its true word was scored
                assert score.target_word_logprob == pytest.approx(truth, abs=1e-6)
        assert score.entropy == pytest.approx(prediction.entropy, abs=1e-4)
        assert score.top1_text == prediction.top_k[0][2]
        compared += 1
    assert compared == len(set(session.scalars(select(Guess.item_id))))
    scores = session.scalars(select(AnswerModelScore).where(
        AnswerModelScore.model_id == row.id)).all()
    exact = {}  # (guess id) -> the first token's (log-prob, rank): one pass per document
    for doc_id in {session.get(Guess, s.guess_id).item.document_id for s in scores}:
        asked = [session.get(Guess, s.guess_id) for s in scores]
        asked = [g for g in asked if g.item.document_id == doc_id]
        found = gemma.logprobs_at(session.get(Document, doc_id).token_ids,
                                  [(g.item.position, g.first_token_id) for g in asked])
        exact.update({g.id: f for g, f in zip(asked, found)})
    for score in scores:
        guess = session.get(Guess, score.guess_id)
        logprob, rank = exact[guess.id]
        assert score.first_token_logprob == pytest.approx(logprob, abs=1e-6)
        assert score.first_token_rank == rank
        assert guess.model_logprob == pytest.approx(score.first_token_logprob, abs=1e-5)
        assert guess.model_rank == score.first_token_rank
        if guess.mode == "word":
            assert score.logprob == pytest.approx(guess.word_logprob, abs=1e-6)
        elif len(guess.token_ids) == 1:
            assert score.logprob == pytest.approx(score.first_token_logprob, abs=1e-5)


def test_one_pass_per_document_and_one_per_prefix_split_elsewhere(filled, gemma, ngram):
    """Gemma: one pass per document with answered items. The n-gram model: the same, plus one
    pass for the prefix "...hierogly", which its tokens of the document do not end at."""
    path, calls = filled
    session = _session_on(path)
    try:
        docs = session.scalars(select(Document).where(Document.id.in_(
            select(Item.document_id).where(Item.id.in_(select(Guess.item_id)))))).all()
        assert len(calls[gemma.spec]) == len(docs) == 5
        assert sorted(tuple(ids) for ids, _kw in calls[gemma.spec]) == \
            sorted(tuple(d.token_ids) for d in docs)
        whole = {tuple(ngram.tokenize(d.text)) for d in docs}
        own = [ids for ids, _kw in calls[ngram.spec] if tuple(ids) not in whole]
        assert len(calls[ngram.spec]) == len(docs) + 1 and len(own) == 1
        assert ngram.tokenize(TEXTS[2][: TEXTS[2].index("phs")]) == own[0]
        for ids, kwargs in calls[gemma.spec]:  # only the answered positions are summarised
            doc = next(d for d in docs if list(d.token_ids) == ids)
            answered = {session.get(Item, i).position for i in session.scalars(
                select(Guess.item_id).join(Item).where(Item.document_id == doc.id))}
            assert kwargs["top_k"] == 1 and kwargs["summary_rows"] == sorted(answered)
    finally:
        session.close()
        db.dispose()


# ----------------------------------------------------------------- interruption, re-run, CLI


def test_an_interruption_keeps_finished_documents_and_a_rerun_does_the_rest(template, tmp_path,
                                                                            ngram, monkeypatch):
    path = tmp_path / "cut.db"
    shutil.copy(template, path)
    session = _session_on(path)
    try:
        real = ngram.score_continuations
        calls = []

        def cut(*args, **kwargs):
            calls.append(args[0])
            if len(calls) == 3:  # the third pass: the document in progress is lost, no more
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(ngram, "score_continuations", cut)
        with pytest.raises(KeyboardInterrupt):
            fill_model_scores(session, ngram, top_k=TOP_K)
        row_id = get_or_create_model_row(session, ngram, TOP_K).id
        kept = session.scalars(select(AnswerModelScore).where(
            AnswerModelScore.model_id == row_id)).all()
        kept_items = session.scalar(select(func.count(ItemModelScore.id)))
        assert kept and kept_items
        first = {s.guess_id: s.logprob for s in kept}
        done_docs = {session.get(Guess, g).item.document_id for g in first}
        assert len(done_docs) == 2  # two whole documents, nothing of the third
        monkeypatch.setattr(ngram, "score_continuations", real)
        again = fill_model_scores(session, ngram, top_k=TOP_K)
        assert again.already == len(kept)
        assert again.documents == 3 and again.answers == len(ANSWERS) + 4 - len(kept)
        every = session.scalars(select(AnswerModelScore)).all()
        assert len(every) == len({s.guess_id for s in every}) == len(ANSWERS) + 4
        assert {s.guess_id: s.logprob for s in every if s.guess_id in first} == first
        nothing = fill_model_scores(session, ngram, top_k=TOP_K)
        assert (nothing.documents, nothing.passes, nothing.answers) == (0, 0, 0)
    finally:
        session.close()
        db.dispose()


def test_cli_scores_answers_under_another_tokenizer_and_lists_them(template, tmp_path, ngram):
    path = tmp_path / "cli.db"
    shutil.copy(template, path)
    app = create_app(_config(path))
    runner = app.test_cli_runner()
    spec = ngram.spec
    try:
        result = runner.invoke(args=["score", "--model", spec])
        assert result.exit_code == 0, result.output
        assert "Error" not in result.output
        assert "5 documents were tokenized with" in result.output
        assert "per-position predictions need the corpus's tokenizer" in result.output
        assert f"Answers under {spec} (its own tokens): 16 answers and 10 items filled in 5 " \
               "documents (6 forward passes" in result.output
        with app.app_context():
            row = db.session.scalar(select(LanguageModel).where(LanguageModel.spec == spec))
            assert db.session.scalar(select(func.count(Prediction.id)).where(
                Prediction.model_id == row.id)) == 0
        again = runner.invoke(args=["score", "--model", spec, "--answers"])
        assert again.exit_code == 0, again.output
        assert f"Answers under {spec}: nothing to fill (16 answers already" in again.output
        # Gemma, the corpus's tokenizer: predictions as before, and the answers' rows (one corpus)
        own = runner.invoke(args=["score", "--answers", "--corpus", "external:norms"])
        assert own.exit_code == 0, own.output
        assert "Scored" not in own.output and "Nothing to score" not in own.output
        assert f"Answers under {MODEL_SPEC} (its own tokens): 4 answers and 2 items filled " \
               "in 2 documents (2 forward passes" in own.output
        listed = runner.invoke(args=["models"])
        assert listed.exit_code == 0, listed.output
        assert "answers under its own tokens: 16 (16 with a log-prob); items: 10" in listed.output
        assert "answers under its own tokens: 4 (4 with a log-prob); items: 2" in listed.output
    finally:
        db.dispose()


@pytest.mark.parametrize("args, needle", [
    (["--model", "llamacpp:/no/such/model.gguf"], "does not exist"),
    (["--model", "ngram:/no/such.ngram", "--answers"], "n-gram model file /no/such.ngram does not exist"),
    (["--model", "gpt-17"], "must look like"),
    (["--model", "mystery:thing", "--answers"], "unknown model backend 'mystery'"),
    (["--answers", "--fill-guesses"], "choose one of --fill-guesses, --answers"),
])
def test_cli_refuses_bad_input_and_stores_nothing(template, tmp_path, args, needle):
    path = tmp_path / "bad.db"
    shutil.copy(template, path)
    app = create_app(_config(path))
    try:
        with app.app_context():
            before = [db.session.scalar(select(func.count(t.id)))
                      for t in (LanguageModel, AnswerModelScore, ItemModelScore)]
        result = app.test_cli_runner().invoke(args=["score", *args])
        assert result.exit_code == 1, result.output
        assert "Error:" in result.output and needle in result.output
        assert "Traceback" not in result.output
        with app.app_context():
            assert [db.session.scalar(select(func.count(t.id)))
                    for t in (LanguageModel, AnswerModelScore, ItemModelScore)] == before
    finally:
        db.dispose()


# --------------------------------------------------------------------------- the background job


def test_the_job_fills_the_configured_and_the_compared_models(filled, tmp_path, ngram):
    """HUMANLM_COMPARE_MODELS: an answer from the solo game is filled by the real consumer
    under the configured model and the compared one (a bad spec is reported, not fatal)."""
    path = tmp_path / "job.db"
    shutil.copy(filled[0], path)
    missing = tmp_path / "missing.ngram"
    app = create_app(_config(path, JOB_DELAY_SECONDS=0.2,
                             COMPARE_MODELS=f"ngram:{missing}, {ngram.spec}"))
    client = app.test_client()
    try:
        question = client.post("/api/play/next", json={}).get_json()["question"]
        reply = client.post("/api/play/guesses", json={
            "item_id": question["item_id"], "client_key": uuid.uuid4().hex, "text": " the"})
        assert reply.status_code == 200, reply.get_json()
        queue = jobs.jobs_for(app)
        assert queue.huey.pending_count() + queue.huey.scheduled_count() == 1

        def rows():
            with app.app_context():
                guess = db.session.scalars(select(Guess).order_by(Guess.id.desc())).first()
                return db.session.scalars(select(AnswerModelScore).where(
                    AnswerModelScore.guess_id == guess.id)).all()

        consumer = jobs.start_in_thread(app)
        try:
            deadline = time.monotonic() + 120
            while len(rows()) < 2 and time.monotonic() < deadline:
                time.sleep(0.25)
            while queue.fill_status().get("state") != "done" and time.monotonic() < deadline:
                time.sleep(0.25)
        finally:
            consumer.stop()
        found = rows()
        with app.app_context():
            specs = {db.session.get(LanguageModel, s.model_id).spec: s for s in found}
        assert set(specs) == {MODEL_SPEC, ngram.spec}
        assert specs[MODEL_SPEC].same_tokenizer and specs[MODEL_SPEC].first_token_logprob < 0
        assert not specs[ngram.spec].same_tokenizer and specs[ngram.spec].logprob < 0
        status = queue.fill_status()["answer_scores"]
        assert status[MODEL_SPEC]["answers"] == status[ngram.spec]["answers"] == 1
        assert "does not exist" in status[f"ngram:{missing}"]["error"]
        assert queue.fill_now() == 0 and len(rows()) == 2  # nothing new (the bad spec retried)
    finally:
        db.dispose()


# ------------------------------------------------------------------------------------ export


def test_export_round_trip_pivots_models_side_by_side(filled, tmp_path, gemma, ngram):
    """answer_models and item_models in csv, jsonl and parquet, read back by analysis.load and
    pivoted (one column per model); CSV text cells are neutralised like the other tables'; an
    export without the two tables (an older one) still loads."""
    from analysis import reader
    from analysis.schema import MODEL_TABLES
    from webapp.export import ExportFilters, write_export

    path = tmp_path / "export.db"
    shutil.copy(filled[0], path)
    app = create_app(_config(path))
    formula = '=HYPERLINK("http://x","y")'
    try:
        with app.app_context():
            session = db.session
            ids = {m.spec: _row(session, m).id for m in (gemma, ngram)}
            victim = session.scalars(select(ItemModelScore).order_by(ItemModelScore.id)).first()
            victim.top1_text = formula  # a text cell a spreadsheet would run
            session.commit()
            stored = {(s.guess_id, s.model_id): s.logprob
                      for s in session.scalars(select(AnswerModelScore))}
            tables = {}
            for fmt in ("csv", "jsonl", "parquet"):
                summary = write_export(session, tmp_path / fmt, fmt,
                                       ExportFilters(include_pilot=True))
                assert summary.rows["answer_models"] == len(stored) == 2 * 16
                assert summary.rows["item_models"] == 2 * 10
                tables[fmt] = tmp_path / fmt
            # filtered like the guesses: without the imported norms, their rows go too
            summary = write_export(session, tmp_path / "own", "csv",
                                   ExportFilters(include_external=False))
            assert (summary.rows["guesses"], summary.rows["items"]) == (13, 8)
            assert (summary.rows["answer_models"], summary.rows["item_models"]) == (2 * 12, 2 * 8)
        raw = (tmp_path / "csv" / "item_models.csv").read_text()
        assert "'" + formula.replace('"', '""') in raw
        assert formula in (tmp_path / "jsonl" / "item_models.jsonl").read_text().replace('\\"', '"')
        frames = {}
        for fmt, folder in tables.items():
            data = reader.load(folder)
            manifest = json.loads((folder / "manifest.json").read_text())
            assert set(manifest["tables"]) >= set(MODEL_TABLES)
            assert set(data.models["model_id"]) == set(ids.values())
            assert data.warnings == []
            loaded = frames[fmt] = {name: data[name] for name in MODEL_TABLES}
            answers = loaded["answer_models"]
            wide = answers.pivot(index="guess_id", columns="model_id", values="answer_logprob")
            assert list(wide.columns) == sorted(ids.values()) and len(wide) == 16
            for (guess_id, model_id), logprob in stored.items():
                assert wide.loc[guess_id, model_id] == pytest.approx(logprob, abs=1e-12)
            joined = data.guesses.merge(answers, on="guess_id", suffixes=("", "_m"))
            assert len(joined) == 2 * 16
            items = loaded["item_models"]
            side = items.pivot(index="item_id", columns="model_id", values="top1_starts_word")
            assert side.shape == (10, 2) and set(side.index) == set(data.items["item_id"])
            assert formula in set(items["top1_text"])
            assert items["same_tokenizer"].sum() == 10
            # log Z(T): the same-tokenizer model's own Prediction grid (here the items' model);
            # nothing for another tokenizer
            # (also at the item only a skip answered, whose items row has no model numbers)
            own = items[items["model_id"] == ids[gemma.spec]].set_index("item_id")["logz"]
            grid = data.items.set_index("item_id")["model_logz"]
            temperatures = data.models.set_index("model_id").loc[ids[gemma.spec], "temperatures"]
            assert own.notna().all() and len(own) == 10 and grid.notna().sum() == 9
            for item_id, logz in own.items():
                assert len(logz) == len(temperatures)
                if grid.loc[item_id] is not None:
                    assert logz == pytest.approx(grid.loc[item_id], abs=1e-12)
            assert items.loc[items["model_id"] == ids[ngram.spec], "logz"].isna().all()
        for fmt in ("jsonl", "parquet"):
            for name in MODEL_TABLES:
                pd.testing.assert_frame_equal(frames[fmt][name], frames["csv"][name],
                                              check_dtype=False, obj=f"{fmt}:{name}")
        older = tables["csv"]
        # an export from before item_models.logz: the column reads as empty
        frame = pd.read_csv(older / "item_models.csv", dtype=str, keep_default_na=False)
        frame.drop(columns="logz").to_csv(older / "item_models.csv", index=False)
        data = reader.load(older)
        assert data.warnings == [] and len(data.item_models) == 2 * 10
        assert data.item_models["logz"].isna().all()
        pd.testing.assert_frame_equal(data.item_models.drop(columns="logz"),
                                      frames["csv"]["item_models"].drop(columns="logz"))
        manifest = json.loads((older / "manifest.json").read_text())
        for name in MODEL_TABLES:
            (older / f"{name}.csv").unlink()
            del manifest["tables"][name]
        (older / "manifest.json").write_text(json.dumps(manifest))
        data = reader.load(older)
        assert len(data.guesses) == 17
        assert all(data[name].empty and list(data[name].columns) == table.column_names
                   for name, table in MODEL_TABLES.items())
    finally:
        db.dispose()
