"""Pairwise alternatives (issue 14): tokens drawn at scoring time from the model's full
distribution at T = 1, stored with their exact log-probs and seeds, so the web layer never runs
the model."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import select

from webapp.export import ExportFilters, write_export
from webapp.extensions import db
from webapp.lm import BackendError, display_text
from webapp.lm.stats import summarize_logits
from webapp.models import Corpus, Document, Guess, Item, Player, Prediction
from webapp.predictions import _Worker


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.max()
    return x - np.log(np.exp(x).sum())


def test_draws_follow_the_full_distribution_and_carry_exact_log_probs():
    logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0, -3.0, -8.0, -30.0], dtype=np.float32)
    rows = np.tile(logits, (4000, 1))
    summary = summarize_logits(rows, [0] * 4000, 3, alternatives=50,
                               seeds=[(7, 1, i) for i in range(4000)])
    drawn = summary.alt_ids.ravel()
    expected = np.exp(_log_softmax(logits))
    frequency = np.bincount(drawn, minlength=8) / drawn.size
    sd = np.sqrt(expected * (1 - expected) / drawn.size)
    assert np.all(np.abs(frequency - expected) <= 5 * sd + 1e-12), (frequency, expected)
    assert frequency[7] == 0  # e**-32 of the mass: never seen in 200,000 draws
    assert np.allclose(summary.alt_logprobs, _log_softmax(logits)[summary.alt_ids], atol=1e-6)


def test_the_same_seed_draws_the_same_tokens_and_another_seed_others():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 1000)).astype(np.float32) * 3
    a = summarize_logits(logits, [1] * 5, 4, alternatives=6, seeds=[(1, 2, i) for i in range(5)])
    b = summarize_logits(logits, [1] * 5, 4, alternatives=6, seeds=[(1, 2, i) for i in range(5)])
    c = summarize_logits(logits, [1] * 5, 4, alternatives=6, seeds=[(9, 2, i) for i in range(5)])
    assert np.array_equal(a.alt_ids, b.alt_ids)
    assert not np.array_equal(a.alt_ids, c.alt_ids)
    assert summarize_logits(logits, [1] * 5, 4).alt_ids is None  # none unless asked
    with pytest.raises(ValueError, match="one seed per row"):
        summarize_logits(logits, [1] * 5, 4, alternatives=2, seeds=[(1,)])


def test_a_corpus_asking_for_alternatives_gets_them_from_the_real_model(app, gemma, tmp_path):
    runner = app.test_cli_runner()
    text = tmp_path / "pair.txt"
    text.write_text("The children walked to school in the rain. Their teacher was waiting.")
    done = runner.invoke(args=["corpus", "import", str(text), "--corpus", "pairs",
                               "--pairwise-alternatives", "3"])
    assert done.exit_code == 0, done.output
    done = runner.invoke(args=["score", "--corpus", "pairs"])
    assert done.exit_code == 0, done.output
    with app.app_context():
        corpus = db.session.scalar(select(Corpus).where(Corpus.name == "pairs"))
        assert corpus.pairwise_alternatives == 3 and corpus.alternatives_seed is not None
        doc = db.session.scalar(select(Document).where(Document.corpus_id == corpus.id))
        rows = db.session.execute(
            select(Item.position, Prediction.alternatives).join(Prediction, Prediction.item_id == Item.id)
            .where(Item.document_id == doc.id).order_by(Item.position)
        ).all()
        assert len(rows) == doc.n_tokens
        queries = []
        for position, alternatives in rows:
            assert alternatives["seed"] == [corpus.alternatives_seed, int(doc.content_hash[:12], 16), position]
            assert len(alternatives["tokens"]) == 3
            for token, _logprob, text_shown in alternatives["tokens"]:
                assert text_shown == display_text(gemma.token_bytes(token))
                queries.append((position, token))
        exact = gemma.logprobs_at(doc.token_ids, queries)
        stored = [lp for _p, alts in rows for _t, lp, _s in alts["tokens"]]
        assert np.allclose(stored, [lp for lp, _rank in exact], atol=1e-4)
        # not always the most likely token: drawn, not the argmax
        assert any(t != alts["tokens"][0][0] for _p, alts in rows for t, _lp, _s in alts["tokens"])
    # the export carries them on the item's row (an item is exported once someone answered it)
    with app.app_context():
        item = db.session.scalar(select(Item).where(Item.document_id == doc.id, Item.position == 3))
        db.session.add(Player(id="pw-player"))
        db.session.flush()
        model_id = db.session.scalar(select(Prediction.model_id).where(Prediction.item_id == item.id))
        db.session.add(Guess(client_key="pairwise-key-1", player_id="pw-player", item_id=item.id,
                             model_id=model_id, raw_text=" x", match_rule="none", is_correct=False,
                             server_received_at=datetime.now(UTC)))
        db.session.commit()
        write_export(db.session, tmp_path / "out", "jsonl", ExportFilters())
        stored = db.session.scalar(select(Prediction.alternatives).where(Prediction.item_id == item.id))
    exported = [json.loads(line) for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    assert [json.loads(r["model_alternatives"]) if isinstance(r["model_alternatives"], str)
            else r["model_alternatives"] for r in exported] == [stored]
    again = runner.invoke(args=["corpus", "import", str(text), "--corpus", "pairs",
                                "--pairwise-alternatives", "5"])
    assert again.exit_code != 0 and "draws 3 pairwise alternatives" in again.output
    bad = runner.invoke(args=["corpus", "import", str(text), "--corpus", "other",
                              "--pairwise-alternatives", "40"])
    assert bad.exit_code != 0 and "between 0 and 16" in bad.output


def test_a_top_k_only_model_cannot_draw_them_and_says_why(app):
    class TopKOnly:
        spec = "openai:http://gpu-box:8000/v1#some-model"

    with app.app_context():
        corpus = Corpus(name="pairs2", pairwise_alternatives=2, alternatives_seed=5)
        db.session.add(corpus)
        db.session.flush()
        doc = Document(corpus_id=corpus.id, text="a b", content_hash="ab" * 32, tokenizer="t",
                       token_ids=[1, 2], n_tokens=2)
        worker = _Worker.__new__(_Worker)
        worker.session, worker.model, worker._alternatives = db.session, TopKOnly(), {}
        with pytest.raises(BackendError, match="gives only its top-k"):
            worker._alternative_seeds(doc, 2)
        db.session.rollback()
