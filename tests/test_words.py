"""Word-level mode: word boundaries, matching, and word probabilities with the real model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from webapp.lm.stats import log_softmax_row
from webapp.words import (
    continues_word,
    normalize_word,
    word_logprob,
    word_matches,
    word_token_ids,
)


@pytest.mark.parametrize(
    "text, expected",
    [("ing", True), ("7", True), ("'s", True), ("-like", True), (" cat", False), (",", False),
     ("\n", False), ("", False), (".", False)],
)
def test_continues_word(text, expected):
    assert continues_word(text) is expected


@pytest.mark.parametrize(
    "answer, target, expected",
    [("Paris", "Paris", True), (" paris ", "Paris", True), ("Paris.", "Paris", True),
     ("Pariss", "Paris", False), ("", "Paris", False), ("...", "...", False), ("café", "CAFÉ", True)],
)
def test_word_matches(answer, target, expected):
    assert word_matches(answer, target) is expected
    assert normalize_word("  «Hello!» ") == "hello"


def test_leading_space_convention(tokenizer):
    assert word_token_ids(tokenizer, "Hello", "world") == tokenizer.tokenize(" world")
    assert word_token_ids(tokenizer, "Hello\n", "world") == tokenizer.tokenize("world")
    assert word_token_ids(tokenizer, "", "world") == tokenizer.tokenize("world")


def test_target_word_joins_the_tokens_of_one_word(app, tokenizer):
    from webapp.corpus import RawDocument, get_or_create_corpus, import_documents
    from webapp.extensions import db
    from webapp.models import Document
    from webapp.words import is_word_start, target_word

    text = "Unbelievably, the flibbertigibbet experiment worked."
    with app.app_context():
        corpus = get_or_create_corpus(db.session, "w", min_prefix_tokens=1)
        import_documents(db.session, corpus, [RawDocument(text=text)], tokenizer, max_tokens=64)
        doc = db.session.query(Document).one()
        starts = [it for it in doc.items if is_word_start(doc, it)]
        words = [target_word(doc, it) for it in starts]
        assert words == ["Unbelievably", "the", "flibbertigibbet", "experiment", "worked"]
        assert len(tokenizer.tokenize(" flibbertigibbet")) > 1  # the test covers a multi-token word


def _rows_after_cached_prefix(model, prefix: list[int], ids: list[int]) -> np.ndarray:
    """Logit rows the way a word is scored: one pass over BOS + prefix, then the word evaluated
    on top of that cache. llama.cpp's numbers depend slightly on the batch's shape: on a build
    for AVX2 (no AVX-512), one pass over prefix + word moved the end-of-word log-probability of
    " Quetzalcoatl" by 0.003 nats, so a hand computation must start from the same rows."""
    model._eval(prefix)  # keep=True: llama.cpp's cache now holds BOS + prefix
    llm = model._llm
    llm.n_tokens = len(prefix) + 1
    llm.eval(ids)
    return np.array(llm.scores[: len(prefix) + 1 + len(ids)])


@pytest.mark.model
def test_word_logprob_matches_a_hand_computation_with_the_real_model(gemma):
    prefix = gemma.tokenize("The capital of France is")
    word = gemma.tokenize(" Paris")
    multi = gemma.tokenize(" Quetzalcoatl")
    assert len(multi) > 1
    for ids in (word, multi):
        tokens_lp, end_lp = word_logprob(gemma, prefix, ids)
        # By hand, from the rows the model gives this way; row i predicts token i of the sequence.
        logits = _rows_after_cached_prefix(gemma, prefix, ids)
        expected = sum(
            float(log_softmax_row(logits[len(prefix) + i])[t]) for i, t in enumerate(ids)
        )
        assert tokens_lp == pytest.approx(expected, abs=1e-6)
        row = log_softmax_row(logits[len(prefix) + len(ids)])
        boundary = [
            t for t in range(gemma.n_vocab)
            if gemma.is_control(t)
            or not continues_word(gemma.token_bytes(t).decode("utf-8", "replace"))
        ]
        assert end_lp == pytest.approx(float(np.logaddexp.reduce(row[boundary])), abs=1e-6)
        assert end_lp < 0 and math.exp(end_lp) > 0.05  # after " Paris", most mass ends the word
    # The chain rule through separate next-token calls agrees, up to llama.cpp's batch-shape
    # effects: within 0.05 nats on native builds, 0.15 on the portable AVX2 build (the word's
    # later tokens move by up to 0.07 nats each there). A row off by one misses by nats.
    step = gemma.next_token_logprobs(prefix)[multi[0]]
    step += sum(
        gemma.next_token_logprobs(prefix + multi[:i])[multi[i]] for i in range(1, len(multi))
    )
    assert word_logprob(gemma, prefix, multi)[0] == pytest.approx(float(step), abs=0.3)


@pytest.mark.model
def test_fill_word_logprobs_scores_a_document_in_one_pass(app, tokenizer, gemma, monkeypatch):
    """Word answers at several positions of one document: one forward pass of the document,
    each distinct (item, word) once, the same numbers as the word scored on its own."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from webapp.corpus import RawDocument, get_or_create_corpus, import_documents
    from webapp.extensions import db
    from webapp.models import Document, Guess, Player, WordScore
    from webapp.words import boundary_mask, fill_word_logprobs, is_word_start, target_word

    with app.app_context():
        session = db.session
        corpus = get_or_create_corpus(session, "w", min_prefix_tokens=1)
        text = "The cat sat on the warm mat near the old wooden door."
        import_documents(session, corpus, [RawDocument(text=text)], tokenizer, max_tokens=64)
        doc = session.scalar(select(Document))
        items = [it for it in doc.items if is_word_start(doc, it)][2:5]
        answers = {item.id: [target_word(doc, item), "table", "table", " chair ", "hippopotamus"]
                   for item in items}
        n = 0
        for item_id, words in answers.items():
            for word in words:
                n += 1
                session.add(Player(id=f"p{n}"))
                session.flush()
                session.add(Guess(
                    client_key=f"k{n}", player_id=f"p{n}", item_id=item_id, raw_text=word,
                    token_ids=[], is_correct=False, match_rule="word", mode="word",
                    server_received_at=datetime.now(UTC),
                ))
        session.commit()
        calls = []
        real = gemma.score_continuations
        monkeypatch.setattr(gemma, "score_continuations",
                            lambda *a, **kw: calls.append(a[1]) or real(*a, **kw))
        assert fill_word_logprobs(session, gemma, top_k=64) == n
        assert len(calls) == 1  # one pass of the document for all 15 answers
        scores = session.scalars(select(WordScore)).all()
        assert len(scores) == 3 * 4  # per item: the true word, table, chair, hippopotamus
        mask = boundary_mask(gemma)
        for score in scores:
            item = session.get(type(items[0]), score.item_id)
            alone = real(doc.token_ids, {item.position: [score.token_ids]}, end_set=mask)
            result = alone.continuations[item.position][0]
            assert score.tokens_logprob == result.logprob
            assert score.end_logprob == result.end_logprob
            assert score.logprob == score.tokens_logprob + score.end_logprob
        by_key = {(s.item_id, s.word): s.logprob for s in scores}
        for guess in session.scalars(select(Guess)):
            assert guess.word_logprob == by_key[(guess.item_id, guess.raw_text.strip())]
            assert guess.model_id is not None
        assert fill_word_logprobs(session, gemma, top_k=64) == 0  # nothing left
        # a new answer with a word already scored for its item needs no pass at all
        session.add(Player(id="late"))
        session.flush()
        session.add(Guess(client_key="late", player_id="late", item_id=items[0].id,
                          raw_text="table", token_ids=[], is_correct=False, match_rule="word",
                          mode="word", server_received_at=datetime.now(UTC)))
        session.commit()
        assert fill_word_logprobs(session, gemma, top_k=64) == 1
        assert len(calls) == 1
