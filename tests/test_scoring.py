"""webapp.predictions with the real model on a fresh database: scoring, resuming, guess log-probs."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import delete, func, select

from webapp.corpus import RawDocument, get_or_create_corpus, import_documents
from webapp.extensions import db
from webapp.lm import TEMPERATURES
from webapp.models import (
    Document,
    Guess,
    Item,
    LanguageModel,
    Player,
    Prediction,
    ScoredDocument,
)
from webapp.predictions import (
    TEMPERATURE_GRID_NAME,
    TokenizerMismatch,
    fill_guess_logprobs,
    get_or_create_model_row,
    model_key,
    score_corpus,
)

pytestmark = pytest.mark.model

TOP_K = 16
TEXTS = [
    RawDocument(title="Fox", text="The quick brown fox jumps over the lazy dog."),
    RawDocument(title="Rain", text="It rained all night, so the river was high in the morning."),
]


@pytest.fixture
def session(app, tokenizer):
    s = db.new_session()
    corpus = get_or_create_corpus(s, "unit", min_prefix_tokens=2)
    import_documents(s, corpus, TEXTS, tokenizer, max_tokens=64)
    s.commit()
    yield s
    s.close()


def count(session, column) -> int:
    return session.scalar(select(func.count(column)))


def test_score_corpus_stores_everything(session, gemma):
    report = score_corpus(session, gemma, top_k=TOP_K)
    docs = session.scalars(select(Document).order_by(Document.id)).all()
    assert report.documents == 2 and report.already_scored == 0
    assert report.tokens == sum(d.n_tokens for d in docs)

    model = session.scalar(select(LanguageModel))
    assert count(session, LanguageModel.id) == 1
    assert model.key == model_key(gemma, TOP_K)
    assert model.spec == "llamacpp:gemma-3-270m" and model.tokenizer == gemma.tokenizer_id
    assert model.n_vocab == gemma.n_vocab and model.top_k == TOP_K
    assert model.temperatures == list(TEMPERATURES)
    assert model.settings["temperature_grid"] == TEMPERATURE_GRID_NAME
    assert model.settings["file_sha256_prefix"] == gemma.settings()["file_sha256_prefix"]

    markers = session.scalars(select(ScoredDocument).order_by(ScoredDocument.document_id)).all()
    assert [(m.document_id, m.model_id, m.n_tokens) for m in markers] == [
        (d.id, model.id, d.n_tokens) for d in docs
    ]
    assert all(m.seconds > 0 for m in markers)

    # one Prediction per item (playable or not), for this model
    assert count(session, Prediction.id) == count(session, Item.id) == report.tokens
    rows = session.execute(
        select(Prediction, Item).join(Item, Prediction.item_id == Item.id).order_by(Item.id)
    ).all()
    assert len({item.id for _, item in rows}) == len(rows)
    for prediction, item in rows:
        assert prediction.model_id == model.id
        assert len(prediction.top_k) == TOP_K and len(prediction.logz) == len(TEMPERATURES)
        ids = [entry[0] for entry in prediction.top_k]
        lps = [entry[1] for entry in prediction.top_k]
        assert lps == sorted(lps, reverse=True) and prediction.top1_id == ids[0]
        for token_id, _lp, text, control in prediction.top_k:
            assert control == gemma.is_control(token_id)
            assert isinstance(text, str)
        assert prediction.target_rank >= 1 and prediction.target_logprob <= 0
        if item.token_id in ids:
            assert prediction.target_rank == ids.index(item.token_id) + 1
            assert lps[ids.index(item.token_id)] == pytest.approx(prediction.target_logprob, abs=1e-5)
        else:
            assert prediction.target_rank > TOP_K
        j = TEMPERATURES.index(1.0)
        assert prediction.logz[j] == pytest.approx(0.0, abs=1e-4)

    # the stored numbers are the model's: " over" after "The quick brown fox jumps"
    fox = docs[0]
    over_item = fox.items[len(gemma.tokenize("The quick brown fox jumps"))]
    assert over_item.token_text == " over"
    over = session.scalar(select(Prediction).where(Prediction.item_id == over_item.id))
    assert over.target_rank == 1 and np.exp(over.target_logprob) > 0.5
    (exact_lp, exact_rank), = gemma.logprobs_at(fox.token_ids, [(over_item.position, over_item.token_id)])
    assert over.target_logprob == pytest.approx(exact_lp, abs=1e-3) and exact_rank == 1


def test_rescoring_resumes(session, gemma):
    score_corpus(session, gemma, top_k=TOP_K)
    n_predictions = count(session, Prediction.id)

    again = score_corpus(session, gemma, top_k=TOP_K)
    assert (again.documents, again.tokens, again.already_scored) == (0, 0, 2)
    assert count(session, Prediction.id) == n_predictions
    assert count(session, ScoredDocument.id) == 2

    # an interrupted run: the second document's marker and predictions never got committed
    second = session.scalars(select(Document).order_by(Document.id.desc())).first()
    second_items = select(Item.id).where(Item.document_id == second.id)
    session.execute(delete(Prediction).where(Prediction.item_id.in_(second_items)))
    session.execute(delete(ScoredDocument).where(ScoredDocument.document_id == second.id))
    session.commit()
    assert count(session, Prediction.id) == n_predictions - second.n_tokens

    resumed = score_corpus(session, gemma, top_k=TOP_K)
    assert (resumed.documents, resumed.tokens, resumed.already_scored) == (1, second.n_tokens, 1)
    assert count(session, Prediction.id) == n_predictions
    assert set(session.scalars(select(ScoredDocument.document_id))) == set(
        session.scalars(select(Document.id))
    )
    assert count(session, LanguageModel.id) == 1  # the same model row is reused


def test_score_one_corpus_only(session, gemma, tokenizer):
    other = get_or_create_corpus(session, "other")
    import_documents(session, other, [RawDocument(text="A third, separate text.")], tokenizer, max_tokens=64)
    session.commit()
    report = score_corpus(session, gemma, top_k=TOP_K, corpus="other")
    assert report.documents == 1 and report.already_scored == 0
    assert count(session, ScoredDocument.id) == 1
    scored_doc = session.get(Document, session.scalar(select(ScoredDocument.document_id)))
    assert scored_doc.corpus.name == "other"


def test_another_top_k_is_another_model_row(session, gemma):
    a = get_or_create_model_row(session, gemma, TOP_K)
    b = get_or_create_model_row(session, gemma, TOP_K + 1)
    assert a.id != b.id and a.key != b.key
    assert get_or_create_model_row(session, gemma, TOP_K).id == a.id


def test_tokenizer_mismatch(session, gemma):
    first = session.scalars(select(Document).order_by(Document.id)).first()
    first.tokenizer = "sentencepiece:another-model:32000"
    first.token_ids = list(reversed(first.token_ids))
    session.commit()
    with pytest.raises(TokenizerMismatch, match=f"document {first.id} was tokenized with"):
        score_corpus(session, gemma, top_k=TOP_K)
    assert count(session, ScoredDocument.id) == 0
    assert count(session, Prediction.id) == 0


def test_other_tokenizer_name_with_identical_ids_is_accepted(session, gemma):
    first = session.scalars(select(Document).order_by(Document.id)).first()
    first.tokenizer = "renamed-but-identical"
    session.commit()
    report = score_corpus(session, gemma, top_k=TOP_K)
    assert report.documents == 2


def _guess(session, item, token_ids, key, **kw):
    """An answer by its own player (one answer per player and position is a database rule)."""
    session.add(Player(id=key))
    session.flush()
    guess = Guess(
        client_key=key, player_id=key, item_id=item.id, raw_text="x", token_ids=token_ids,
        first_token_id=token_ids[0] if token_ids else None, multi_token=len(token_ids) > 1,
        skipped=not token_ids, is_correct=False, match_rule="none" if token_ids else "skip",
        server_received_at=datetime.now(UTC), **kw,
    )
    session.add(guess)
    return guess


def test_fill_guess_logprobs(session, gemma):
    score_corpus(session, gemma, top_k=TOP_K)
    model = session.scalar(select(LanguageModel))
    doc = session.scalars(select(Document).order_by(Document.id)).first()
    item = next(i for i in doc.items if i.playable)
    prediction = session.scalar(select(Prediction).where(Prediction.item_id == item.id))
    outside = gemma.tokenize(" zebra")[0]
    assert outside not in [entry[0] for entry in prediction.top_k]  # precondition
    far = _guess(session, item, [outside, *gemma.tokenize("s")], "key-outside", model_id=model.id)
    unowned = _guess(session, item, [outside], "key-no-model")  # model_id None: filled too
    skipped = _guess(session, item, [], "key-skip")
    known = _guess(session, item, [prediction.top1_id], "key-known", model_id=model.id,
                   model_logprob=prediction.top_k[0][1], model_rank=1)
    session.commit()

    assert fill_guess_logprobs(session, gemma, top_k=TOP_K) == 2
    (exact_lp, exact_rank), = gemma.logprobs_at(doc.token_ids, [(item.position, outside)])
    for guess in (far, unowned):
        session.refresh(guess)
        assert guess.model_logprob == pytest.approx(exact_lp, abs=1e-9)
        assert guess.model_rank == exact_rank and guess.model_rank > TOP_K
        assert guess.model_logprob < prediction.top_k[-1][1]
        assert guess.model_id == model.id
    session.refresh(skipped)
    session.refresh(known)
    assert skipped.model_logprob is None and skipped.model_rank is None
    assert known.model_logprob == prediction.top_k[0][1] and known.model_rank == 1
    assert fill_guess_logprobs(session, gemma, top_k=TOP_K) == 0  # nothing left to fill


def test_one_pass_per_document_for_predictions_and_answers(session, gemma, monkeypatch):
    """run_model_work: Predictions and the first-token log-probs of pending answers come from
    ONE forward pass per document, equal to what the separate steps store; short documents
    are committed together, and a progress bar hears about every document."""
    from webapp import predictions
    from webapp.predictions import run_model_work

    docs = session.scalars(select(Document).order_by(Document.id)).all()
    outside = gemma.tokenize(" zebra")[0]
    pending = [_guess(session, next(i for i in d.items if i.playable), [outside], f"k{d.id}")
               for d in docs]
    session.commit()
    calls, commits, bars = [], [], []
    real = gemma.score_continuations
    monkeypatch.setattr(gemma, "score_continuations",
                        lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    monkeypatch.setattr(predictions, "COMMIT_SECONDS", 3600.0)
    from sqlalchemy import event

    get_or_create_model_row(session, gemma, TOP_K)  # (creating it commits)
    event.listen(session, "after_commit", lambda s: commits.append(1))

    class Bar:
        def __init__(self, total, unit):
            bars.append([total, unit, 0])

        def update(self, n=1):
            bars[-1][2] += n

        def set_postfix_str(self, s="", refresh=True):
            pass

        def close(self):
            pass

    report = run_model_work(session, gemma, top_k=TOP_K, guesses=True, progress=Bar)
    assert len(calls) == len(docs) == report.passes == report.documents
    assert all(kw["top_k"] == TOP_K for kw in calls)
    assert report.guesses == len(pending) and report.words == 0
    assert len(commits) == 1  # fast documents go in one commit (at most every COMMIT_SECONDS)
    assert bars == [[len(docs), "doc", len(docs)]]
    assert count(session, Prediction.id) == count(session, Item.id)
    for guess in pending:
        session.refresh(guess)
        item = session.get(Item, guess.item_id)
        (lp, rank), = gemma.logprobs_at(item.document.token_ids, [(item.position, outside)])
        assert (guess.model_logprob, guess.model_rank) == (lp, rank)  # the same pass, to the bit

    # scoring alone counts tokens, for a bar in tokens
    session.execute(delete(Prediction))
    session.execute(delete(ScoredDocument))
    session.commit()
    bars.clear()
    report = score_corpus(session, gemma, top_k=TOP_K, progress=Bar)
    assert bars == [[report.tokens, "tok", report.tokens]]
