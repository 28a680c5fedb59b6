"""Batch work with the model: score documents (one forward pass each) and fill in guess log-probs.

Runs in the CLI, never in a web request. Each document is committed on its own together with its
ScoredDocument marker, so an interrupted run loses at most the document in flight and a re-run
resumes by skipping documents already marked.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from .lm import TEMPERATURES, LanguageModelBackend, display_text
from .models import Corpus, Document, Guess, Item, LanguageModel, Prediction, ScoredDocument

TEMPERATURE_GRID_NAME = "pow2-13"  # names the fixed grid in webapp.lm.stats


class TokenizerMismatch(RuntimeError):
    """The document was tokenized by another tokenizer than the scoring model's."""


@dataclass
class ScoreReport:
    model: str
    documents: int = 0
    tokens: int = 0
    seconds: float = 0.0
    already_scored: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def model_key(model: LanguageModelBackend, top_k: int) -> str:
    settings = model.settings()
    return (
        f"{model.spec}|sha256:{settings.get('file_sha256_prefix', '?')}|k={top_k}"
        f"|T={TEMPERATURE_GRID_NAME}"
    )


def get_or_create_model_row(session: Session, model: LanguageModelBackend, top_k: int) -> LanguageModel:
    """The LanguageModel row naming this model, tokenizer and scoring settings."""
    key = model_key(model, top_k)
    row = session.scalar(select(LanguageModel).where(LanguageModel.key == key))
    if row is None:
        row = LanguageModel(
            key=key, spec=model.spec, name=model.name, tokenizer=model.tokenizer_id,
            n_vocab=model.n_vocab, top_k=top_k, temperatures=list(TEMPERATURES),
            settings={**model.settings(), "temperature_grid": TEMPERATURE_GRID_NAME},
        )
        session.add(row)
        session.commit()
    return row


def documents_to_score(session: Session, model_id: int, corpus: str | None) -> list[Document]:
    scored = select(ScoredDocument.document_id).where(ScoredDocument.model_id == model_id)
    query = select(Document).where(Document.id.not_in(scored)).order_by(Document.id)
    if corpus is not None:
        query = query.join(Corpus).where(Corpus.name == corpus)
    return list(session.scalars(query))


def check_tokenizer(model: LanguageModelBackend, doc: Document) -> None:
    if doc.tokenizer == model.tokenizer_id:
        return
    if model.tokenize(doc.text) != list(doc.token_ids):
        raise TokenizerMismatch(
            f"document {doc.id} was tokenized with {doc.tokenizer}, but {model.spec} uses "
            f"{model.tokenizer_id}; import the corpus again for this model"
        )


def score_document(session: Session, model: LanguageModelBackend, row: LanguageModel, doc: Document) -> float:
    """Score one document in one forward pass, store a Prediction per item; returns seconds."""
    check_tokenizer(model, doc)
    started = time.perf_counter()
    summary = model.score(doc.token_ids, row.top_k)
    items = session.execute(
        select(Item.id, Item.position).where(Item.document_id == doc.id)
    ).all()
    texts: dict[int, str] = {}

    def entry(token_id: int, logprob: float) -> list:
        if token_id not in texts:
            texts[token_id] = display_text(model.token_bytes(token_id))
        return [token_id, round(logprob, 6), texts[token_id], model.is_control(token_id)]

    rows = []
    for item_id, position in items:
        top_ids = summary.top_ids[position].tolist()
        top_lps = summary.top_logprobs[position].tolist()
        rows.append(
            {
                "item_id": item_id,
                "model_id": row.id,
                "target_logprob": float(summary.target_logprob[position]),
                "target_rank": int(summary.target_rank[position]),
                "top1_id": int(top_ids[0]),
                "entropy": float(summary.entropy[position]),
                "top_k": [entry(t, lp) for t, lp in zip(top_ids, top_lps)],
                "logz": [round(float(z), 6) for z in summary.logz[position]],
            }
        )
    if rows:
        session.execute(insert(Prediction), rows)
    seconds = time.perf_counter() - started
    session.add(ScoredDocument(document_id=doc.id, model_id=row.id, n_tokens=doc.n_tokens, seconds=seconds))
    session.commit()
    return seconds


def score_corpus(
    session: Session,
    model: LanguageModelBackend,
    *,
    top_k: int,
    corpus: str | None = None,
    progress: Callable[[Iterable[Document], int], Iterable[Document]] | None = None,
) -> ScoreReport:
    """Score every document (of one corpus, or all) that this model has not scored yet."""
    row = get_or_create_model_row(session, model, top_k)
    pending = documents_to_score(session, row.id, corpus)
    report = ScoreReport(model=row.key)
    all_docs = select(func.count(Document.id))
    if corpus is not None:
        all_docs = all_docs.join(Corpus).where(Corpus.name == corpus)
    report.already_scored = session.scalar(all_docs) - len(pending)
    iterator = progress(pending, sum(d.n_tokens for d in pending)) if progress else pending
    for doc in iterator:
        report.seconds += score_document(session, model, row, doc)
        report.documents += 1
        report.tokens += doc.n_tokens
    return report


def fill_guess_logprobs(session: Session, model: LanguageModelBackend, *, top_k: int) -> int:
    """Exact model log-prob and rank for guesses whose first token was outside the stored top-k.

    One forward pass per document that has such guesses. Returns the number of guesses filled.
    """
    row = get_or_create_model_row(session, model, top_k)
    pending = session.execute(
        select(Guess, Item)
        .join(Item, Guess.item_id == Item.id)
        .where(Guess.model_logprob.is_(None), Guess.first_token_id.is_not(None))
        .where((Guess.model_id == row.id) | Guess.model_id.is_(None))
    ).all()
    by_document: dict[int, list[tuple[Guess, Item]]] = defaultdict(list)
    for guess, item in pending:
        by_document[item.document_id].append((guess, item))
    filled = 0
    for document_id, pairs in by_document.items():
        doc = session.get(Document, document_id)
        check_tokenizer(model, doc)
        results = model.logprobs_at(
            doc.token_ids, [(item.position, guess.first_token_id) for guess, item in pairs]
        )
        for (guess, _item), (logprob, rank) in zip(pairs, results):
            guess.model_logprob, guess.model_rank, guess.model_id = logprob, rank, row.id
            filled += 1
        session.commit()
    return filled
