"""Batch work with the model: score documents (one forward pass each), fill in guess and word
log-probs.

Runs in the CLI (or a background job), never in a web request. One procedure does all of it
(`run_model_work`): per document ONE forward pass of the model, which gives the document's
Predictions, the exact log-prob of every pending answer's first token at its position, and the
cache from which every pending word answer continues (webapp/words.py; the backend's
`score_continuations`); each distinct (item, word) is scored once. Results are written in bulk
and committed with each document's ScoredDocument marker every couple of seconds, so an
interrupted run loses at most those seconds of work and a re-run resumes by skipping documents
already marked and answers already filled.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from .judgements import model_true_cell_logprob
from .lm import TEMPERATURES, BackendError, DocumentScores, LanguageModelBackend, display_text
from .models import (
    AnswerModelScore,
    Corpus,
    Document,
    Guess,
    Item,
    ItemModelScore,
    LanguageModel,
    Prediction,
    ScoredDocument,
    WordScore,
)

TEMPERATURE_GRID_NAME = "pow2-13"  # names the fixed grid in webapp.lm.stats
# Completed documents are committed together at most this often (a command alone on the
# database); the background jobs commit every document (JOB_COMMIT_SECONDS), because on SQLite
# an open write keeps a live class's answers waiting on the lock for as long as it stays open.
COMMIT_SECONDS = 2.0
JOB_COMMIT_SECONDS = 0.0


class TokenizerMismatch(RuntimeError):
    """The document was tokenized by another tokenizer than the scoring model's."""


class Progress(Protocol):
    """What the work reports progress to (a tqdm bar fits)."""

    def update(self, n: int = 1) -> object: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> object: ...

    def close(self) -> object: ...


ProgressFactory = Callable[[int, str], Progress]
"""(total, unit) -> a progress bar; the unit is "tok" (document tokens) or "doc"."""


@dataclass
class WorkReport:
    model: str
    documents: int = 0  # documents given Predictions
    tokens: int = 0  # their tokens
    passes: int = 0  # documents evaluated (one forward pass each)
    guesses: int = 0  # answers given their first token's exact log-prob and rank
    words: int = 0  # word answers given a word log-prob
    word_scores: int = 0  # distinct (item, word) log-probs computed
    unscorable: int = 0  # word answers left without one (no tokens, or no room in the context)
    seconds: float = 0.0
    already_scored: int = 0
    other_tokenizer: int = 0  # documents left out: tokenized by another tokenizer (skip_other_tokenizers)
    other_tokenizer_ids: set[str] = field(default_factory=set)  # ... the tokenizers they have

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


ScoreReport = WorkReport  # what score_corpus returns (the same report, predictions only)


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
    return list(session.scalars(_unscored(model_id, corpus)))


def _unscored(model_id: int, corpus: str | None, *columns):
    scored = select(ScoredDocument.document_id).where(ScoredDocument.model_id == model_id)
    query = select(*(columns or (Document,))).where(Document.id.not_in(scored)).order_by(Document.id)
    if corpus is not None:
        query = query.join(Corpus).where(Corpus.name == corpus)
    return query


def check_tokenizer(model: LanguageModelBackend, doc: Document) -> None:
    if doc.tokenizer == model.tokenizer_id:
        return
    if model.tokenize(doc.text) != list(doc.token_ids):
        raise TokenizerMismatch(
            f"document {doc.id} was tokenized with {doc.tokenizer}, but {model.spec} uses "
            f"{model.tokenizer_id}; import the corpus again for this model"
        )


def score_document(session: Session, model: LanguageModelBackend, row: LanguageModel, doc: Document) -> float:
    """Score one document in one forward pass, store a Prediction per item and commit; returns
    seconds. (Room prompts call this; batch work goes through run_model_work.)"""
    work = _DocumentWork(predict=True)
    seconds = _Worker(session, model, row).run_document(doc, work)
    session.commit()
    return seconds


def score_corpus(
    session: Session,
    model: LanguageModelBackend,
    *,
    top_k: int,
    corpus: str | None = None,
    progress: ProgressFactory | None = None,
    commit_seconds: float = COMMIT_SECONDS,
) -> WorkReport:
    """Score every document (of one corpus, or all) that this model has not scored yet."""
    return run_model_work(session, model, top_k=top_k, corpus=corpus, progress=progress,
                          commit_seconds=commit_seconds)


def fill_guess_logprobs(session: Session, model: LanguageModelBackend, *, top_k: int) -> int:
    """Exact model log-prob and rank for guesses whose first token was outside the stored top-k.

    One forward pass per document that has such guesses. Returns the number of guesses filled.
    """
    return run_model_work(session, model, top_k=top_k, predictions=False, guesses=True).guesses


@dataclass
class _DocumentWork:
    predict: bool = False
    tokens: int = 0  # the document's length, when it is to be scored (for the progress bar)
    lookups: list[tuple[int, int, int]] = field(default_factory=list)  # guess id, position, token
    words: list[tuple[int, int, str]] = field(default_factory=list)  # guess id, item id, answer
    bets: list[tuple[int, int, dict]] = field(default_factory=list)  # guess id, position, judgement


def run_model_work(
    session: Session,
    model: LanguageModelBackend,
    *,
    top_k: int,
    corpus: str | None = None,
    predictions: bool = True,
    guesses: bool = False,
    words: bool = False,
    progress: ProgressFactory | None = None,
    skip_other_tokenizers: bool = False,
    commit_seconds: float = COMMIT_SECONDS,
) -> WorkReport:
    """Everything the model still owes, ONE forward pass per document:

    - `predictions`: a Prediction per item of every document (of `corpus`, or all) this model
      has not scored yet;
    - `guesses`: the exact log-prob and rank of the first token of every answer that has none
      (guesses outside the stored top-k, imported answers);
    - `words`: the word log-prob (webapp/words.py) of every word-mode answer that has none, and
      of its item's true word; each distinct (item, word) once, cached in WordScore.

    A document tokenized by another tokenizer than the model's raises TokenizerMismatch (the
    documents finished before it are kept), or with `skip_other_tokenizers` is left out and
    counted (report.other_tokenizer): its positions are not the model's tokens, so only
    `fill_model_scores` can score its answers under this model.
    """
    row = get_or_create_model_row(session, model, top_k)
    plan, already = _plan(session, row, corpus, predictions, guesses, words)
    report = WorkReport(model=row.key, already_scored=already)
    if skip_other_tokenizers:
        _leave_out_other_tokenizers(session, model, plan, report)
    worker = _Worker(session, model, row, report)
    by_tokens = not (guesses or words)  # scoring alone: a bar in tokens, else in documents
    bar = None
    if progress is not None:
        bar = progress(sum(w.tokens for w in plan.values()), "tok") if by_tokens \
            else progress(len(plan), "doc")
    ahead = getattr(model, "score_ahead", None)  # a server backend: requests in flight
    if ahead is not None and predictions:
        ahead([ids for doc_id, ids in session.execute(
            _unscored(row.id, corpus, Document.id, Document.token_ids)) if doc_id in plan],
              row.top_k)
    last_commit = time.monotonic()
    try:
        for doc_id in sorted(plan):
            doc = session.get(Document, doc_id)
            try:
                report.seconds += worker.run_document(doc, plan[doc_id])
            except TokenizerMismatch:
                session.commit()  # the documents finished before this one are kept
                raise
            if time.monotonic() - last_commit >= commit_seconds:
                session.commit()
                last_commit = time.monotonic()
            if bar is not None:
                bar.update(plan[doc_id].tokens if by_tokens else 1)
                if words and report.word_scores:
                    bar.set_postfix_str(f"{report.word_scores} words", refresh=False)
        session.commit()
    finally:
        if bar is not None:
            bar.close()
    return report


def _leave_out_other_tokenizers(session: Session, model: LanguageModelBackend,
                                plan: dict[int, _DocumentWork], report: WorkReport) -> None:
    """Drop from the plan the documents whose tokens are not the model's (check_tokenizer)."""
    for doc_id, tokenizer in session.execute(
        select(Document.id, Document.tokenizer).where(Document.id.in_(list(plan)))
    ).all():
        if tokenizer == model.tokenizer_id:
            continue
        try:
            check_tokenizer(model, session.get(Document, doc_id))
        except TokenizerMismatch:
            del plan[doc_id]
            report.other_tokenizer += 1
            report.other_tokenizer_ids.add(tokenizer)


def _plan(session: Session, row: LanguageModel, corpus: str | None, predictions: bool,
          guesses: bool, words: bool) -> tuple[dict[int, _DocumentWork], int]:
    """What each document still needs, read in a few bulk queries (no per-answer loading)."""
    plan: dict[int, _DocumentWork] = defaultdict(_DocumentWork)
    already = 0
    owned = (Guess.model_id == row.id) | Guess.model_id.is_(None)
    if predictions:
        pending = session.execute(_unscored(row.id, corpus, Document.id, Document.n_tokens)).all()
        for doc_id, n_tokens in pending:
            plan[doc_id].predict = True
            plan[doc_id].tokens = n_tokens
        everything = select(func.count(Document.id))
        if corpus is not None:
            everything = everything.join(Corpus).where(Corpus.name == corpus)
        already = session.scalar(everything) - len(pending)
    if guesses:
        for guess_id, doc_id, position, token in session.execute(
            select(Guess.id, Item.document_id, Item.position, Guess.first_token_id)
            .join(Item, Guess.item_id == Item.id)
            .where(Guess.model_logprob.is_(None), Guess.first_token_id.is_not(None), owned)
        ):
            plan[doc_id].lookups.append((guess_id, position, token))
        for guess_id, doc_id, position, judgement in session.execute(
            select(Guess.id, Item.document_id, Item.position, Guess.judgement)
            .join(Item, Guess.item_id == Item.id)
            .where(Guess.mode == "distribution", Guess.skipped.is_(False),
                   Guess.model_logprob.is_(None), Guess.judgement.is_not(None), owned)
        ):
            plan[doc_id].bets.append((guess_id, position, judgement))
    if words:
        for guess_id, item_id, text, doc_id in session.execute(
            select(Guess.id, Guess.item_id, Guess.raw_text, Item.document_id)
            .join(Item, Guess.item_id == Item.id)
            .where(Guess.mode == "word", Guess.word_logprob.is_(None), Guess.skipped.is_(False), owned)
        ):
            plan[doc_id].words.append((guess_id, item_id, text))
    return dict(plan), already


def fill_bets(judgement: dict, position: int, found: dict) -> dict | None:
    """A stated distribution with every candidate's exact log-prob from a pass's look-ups
    (`found[(position, token)] = (logprob, rank)`); None when the model had no number for one
    (a top-k-only server): left as it is, never estimated."""
    bets = []
    for bet in judgement["bets"]:
        if bet["model_logprob"] is None:
            logprob, _rank = found[(position, bet["first_token_id"])]
            if math.isnan(logprob):
                return None
            bet = {**bet, "model_logprob": logprob}
        bets.append(bet)
    return {**judgement, "bets": bets}


class _Worker:
    """One document at a time: one model call, then its rows written in bulk (not committed)."""

    def __init__(self, session: Session, model: LanguageModelBackend, row: LanguageModel,
                 report: WorkReport | None = None) -> None:
        self.session, self.model, self.row = session, model, row
        self.report = report or WorkReport(model=row.key)
        self._texts: dict[int, tuple[str, bool]] = {}  # token id -> (shown text, control)
        self._alternatives: dict[int, tuple[int, int | None]] = {}  # corpus id -> (n, seed)

    def _alternative_seeds(self, doc: Document, n_rows: int) -> tuple[int, list | None]:
        """How many pairwise alternatives the document's corpus asks for per position, and the
        seed of each row: (corpus seed, the document's content hash, position), so a corpus
        scored again, or in another database, draws the same tokens."""
        asked = self._alternatives.get(doc.corpus_id)
        if asked is None:
            asked = self._alternatives[doc.corpus_id] = tuple(self.session.execute(
                select(Corpus.pairwise_alternatives, Corpus.alternatives_seed)
                .where(Corpus.id == doc.corpus_id)
            ).one())
        n, seed = asked
        if not n:
            return 0, None
        if not getattr(self.model, "draws_alternatives", False):
            raise BackendError(
                f"corpus #{doc.corpus_id} asks for {n} pairwise alternatives per position, drawn "
                f"from the model's full distribution, but {self.model.spec} gives only its top-k. "
                "Score it with a llamacpp: or ngram: model."
            )
        key = int(doc.content_hash[:12], 16)
        return n, [(int(seed or 0), key, position) for position in range(n_rows)]

    def _token_meta(self, token_id: int) -> tuple[str, bool]:
        meta = self._texts.get(token_id)
        if meta is None:
            meta = self._texts[token_id] = (
                display_text(self.model.token_bytes(token_id)), self.model.is_control(token_id)
            )
        return meta

    def run_document(self, doc: Document, work: _DocumentWork) -> float:
        from .words import boundary_mask, plan_words

        check_tokenizer(self.model, doc)
        started = time.perf_counter()
        session, row, report = self.session, self.row, self.report
        word_plan = plan_words(session, self.model, row, doc, work.words) if work.words else None
        continuations = word_plan.continuations if word_plan is not None else {}
        items = session.execute(
            select(Item.id, Item.position).where(Item.document_id == doc.id)
        ).all() if work.predict else []
        bet_lookups = [(position, bet["first_token_id"]) for _gid, position, judgement in work.bets
                       for bet in judgement["bets"] if bet["model_logprob"] is None]
        lookups = [(position, token) for _gid, position, token in work.lookups] + bet_lookups
        if work.predict or lookups or continuations:
            # a stem's item sits after the last token: its row of the same pass
            through_end = any(position == doc.n_tokens for _id, position in items)
            n_alt, seeds = self._alternative_seeds(
                doc, doc.n_tokens + through_end) if work.predict else (0, None)
            extra = {"alternatives": n_alt, "alternative_seeds": seeds} if n_alt else {}
            scored = self.model.score_continuations(
                doc.token_ids, continuations, top_k=row.top_k if work.predict else None,
                end_set=boundary_mask(self.model) if continuations else None,
                lookups=lookups,
                through_end=through_end, **extra,
            )
            report.passes += 1
        else:  # every word answered here is scored already: no pass needed
            scored = DocumentScores(None)
        updates: dict[int, dict] = defaultdict(dict)
        filled = 0
        for guess_id, position, token in work.lookups:
            logprob, rank = scored.lookups[(position, token)]
            if math.isnan(logprob):  # a top-k-only server that has no numbers at this position
                continue
            # rank -1: beyond a top-k-only server's k (absent, NULL)
            updates[guess_id].update(model_logprob=logprob, model_rank=rank if rank > 0 else None,
                                     model_id=row.id)
            filled += 1
        for guess_id, position, judgement in work.bets:
            completed = fill_bets(judgement, position, scored.lookups)
            if completed is not None:
                updates[guess_id].update(judgement=completed, model_id=row.id,
                                         model_logprob=model_true_cell_logprob(completed))
                filled += 1
        report.guesses += filled
        if word_plan is not None:
            new_scores = word_plan.collect(scored.continuations)
            if new_scores:
                session.execute(insert(WordScore), [
                    {"item_id": item_id, "model_id": row.id, "word": word, "token_ids": ids,
                     "tokens_logprob": tokens_lp, "end_logprob": end_lp, "logprob": tokens_lp + end_lp}
                    for (item_id, word), (ids, tokens_lp, end_lp) in new_scores.items()
                ])
            report.word_scores += len(new_scores)
            for guess_id, logprob in word_plan.answers():
                if logprob is None:
                    report.unscorable += 1
                else:
                    updates[guess_id].update(word_logprob=logprob, model_id=row.id)
                    report.words += 1
        if updates:
            session.execute(update(Guess), [{"id": gid, **values} for gid, values in updates.items()])
        if work.predict:
            self._store_predictions(items, scored.summary, seeds)
        seconds = time.perf_counter() - started
        if work.predict:
            session.add(ScoredDocument(document_id=doc.id, model_id=row.id, n_tokens=doc.n_tokens,
                                       seconds=seconds))
            session.flush()
            report.documents += 1
            report.tokens += doc.n_tokens
        return seconds

    def _store_predictions(self, items: list[tuple[int, int]], summary, seeds=None) -> None:
        """A Prediction per (item id, position); a stem's item (after the last token) has no
        true token, so no target log-prob or rank (NULL), never a made-up one. A top-k-only
        backend (openai:) marks what it cannot know as NaN (entropy, log Z, a target log-prob)
        or rank -1 (beyond its top-k), stored as NULL; top-k slots it could not fill have id -1
        and are left out; a position it knows nothing about gets no Prediction."""
        top_ids = summary.top_ids.tolist()
        top_lps = summary.top_logprobs.tolist()
        alt_ids = None if summary.alt_ids is None else summary.alt_ids.tolist()
        alt_lps = None if summary.alt_logprobs is None else summary.alt_logprobs.tolist()
        meta = self._texts
        fill = self._token_meta
        rows = []
        for item_id, position in items:
            top_k = []
            for token_id, logprob in zip(top_ids[position], top_lps[position]):
                if token_id < 0:
                    continue
                text, control = meta.get(token_id) or fill(token_id)
                top_k.append([token_id, round(logprob, 6), text, control])
            if not top_k:
                continue
            target_rank = int(summary.target_rank[position])  # 0: no true token (a stem)
            target_logprob = float(summary.target_logprob[position])
            entropy = float(summary.entropy[position])
            logz = summary.logz[position].tolist()
            rows.append({
                "item_id": item_id,
                "model_id": self.row.id,
                "target_logprob": None if math.isnan(target_logprob) else target_logprob,
                "target_rank": target_rank if target_rank > 0 else None,
                "top1_id": top_k[0][0],
                "entropy": None if math.isnan(entropy) else entropy,
                "top_k": top_k,
                "logz": None if math.isnan(logz[0]) else [round(z, 6) for z in logz],
                "alternatives": None if alt_ids is None else {
                    "seed": list(seeds[position]),
                    "tokens": [[t, lp, (meta.get(t) or fill(t))[0]]
                               for t, lp in zip(alt_ids[position], alt_lps[position])],
                },
            })
        if rows:
            self.session.execute(insert(Prediction), rows)


# ------------------------------------------------------------ every answer under every model


@dataclass
class ModelScoresReport:
    """What `fill_model_scores` did."""

    model: str
    documents: int = 0  # documents worked on
    passes: int = 0  # forward passes: one per document, plus one per prefix it could not serve
    answers: int = 0  # answers given their row
    answers_unknown: int = 0  # ... of which without a log-prob (see fill_model_scores)
    items: int = 0  # items given their row
    same_tokenizer: int = 0  # documents in the model's own tokenizer (first-token numbers too)
    other_tokenizer: int = 0  # documents tokenized by another tokenizer
    seconds: float = 0.0
    already: int = 0  # answers that had their row before


SCORED_MODES = ("token", "word")  # the answers with text to score


def _scores_queries(model_ids: list[int], corpus: str | None):
    """(answers, items) still without their rows under any of `model_ids`: token and word
    answers that are not skips, and every item with at least one answer."""
    answers = (
        select(Guess.id, Guess.item_id, Guess.mode, Guess.raw_text, Guess.first_token_id,
               Item.document_id)
        .join(Item, Item.id == Guess.item_id)
        .where(Guess.mode.in_(SCORED_MODES), Guess.skipped.is_(False))
    )
    answered = select(Guess.item_id).distinct()
    items = select(Item.id, Item.document_id).where(Item.id.in_(answered))
    if model_ids:
        answers = answers.where(Guess.id.not_in(
            select(AnswerModelScore.guess_id).where(AnswerModelScore.model_id.in_(model_ids))))
        items = items.where(Item.id.not_in(
            select(ItemModelScore.item_id).where(ItemModelScore.model_id.in_(model_ids))))
    if corpus is not None:
        in_corpus = select(Document.id).join(Corpus).where(Corpus.name == corpus)
        answers = answers.where(Item.document_id.in_(in_corpus))
        items = items.where(Item.document_id.in_(in_corpus))
    return answers, items


def pending_model_scores(session: Session, model_ids: list[int],
                         corpus: str | None = None) -> tuple[int, int]:
    """How many answers and items lack their rows under these model rows (all of them when
    the model has no row yet): database only, no model loaded."""
    answers, items = _scores_queries(model_ids, corpus)
    count = func.count()
    return (session.scalar(select(count).select_from(answers.subquery())),
            session.scalar(select(count).select_from(items.subquery())))


def fill_model_scores(
    session: Session,
    model: LanguageModelBackend,
    *,
    top_k: int,
    corpus: str | None = None,
    progress: ProgressFactory | None = None,
) -> ModelScoresReport:
    """Every answer's and item's numbers under `model`, by the chain rule over the model's OWN
    tokens, so models with different tokenizers are compared on the same human answers.

    Per answer (token and word answers that are not skips; an AnswerModelScore row):
        ln p_M(answer | prefix) = sum_i ln p_M(a_i | P, a_1..a_{i-1})
    where P is the document text before the item tokenized by M on its own and a_1..a_n the
    answer as typed tokenized by M on its own; in word mode the word with its leading space
    (webapp.words.word_token_ids) and the word-end term ln P(next token starts a new word)
    added (stored apart too). Where M's tokenizer is the one the corpus was played with, also
    the exact log-prob and rank of the answer's first token (guesses.first_token_id) at the
    item, as the guesses columns are.
    Per answered item (an ItemModelScore row): the true next token's text (the document text
    from the item to the next item) and the true next word (webapp.words.target_word, only at
    items that begin a word, with its end term) scored the same way; M's entropy and most
    likely next token after P, and whether that token's text, leading whitespace stripped and
    non-empty, begins the true next word (accuracy comparable across tokenizers).

    Approximation: P and the answer are tokenized separately and concatenated, which need not
    be how M would tokenize the whole string (a non-canonical split at the prefix/answer
    boundary, e.g. "New" + " York" where M has " York" but the prefix ended in a space); other
    tokenizations of the same text are not summed either, so ln p is a slight underestimate,
    as in webapp.words. When P is not how M tokenizes the document up to that point, P is
    scored in a pass of its own.

    Passes: ONE forward pass per document over M's tokenization of it serves every item
    whose P is a prefix of it (continuations from the pass's cache, one-token ones read off
    it); any other P gets one pass per distinct P. Only what the backend knows exactly is
    stored: a number it cannot give (a top-k-only server's entropy, rank beyond k, any word
    end term; an answer with no tokens; a continuation with no room in the context) is NULL.
    Committed per document, so an interruption loses no finished document and a re-run does
    only what is missing (answers and items without their row for this model).
    """
    row = get_or_create_model_row(session, model, top_k)
    answers_q, items_q = _scores_queries([row.id], corpus)
    plan: dict[int, tuple[list, set]] = defaultdict(lambda: ([], set()))
    for guess_id, item_id, mode, text, first, doc_id in session.execute(answers_q):
        plan[doc_id][0].append((guess_id, item_id, mode, text, first))
    for item_id, doc_id in session.execute(items_q):
        plan[doc_id][1].add(item_id)
    report = ModelScoresReport(model=row.key)
    report.already = session.scalar(select(func.count(AnswerModelScore.id)).where(
        AnswerModelScore.model_id == row.id))
    bar = progress(len(plan), "doc") if progress is not None and plan else None
    scorer = _ModelScorer(session, model, row, report)
    try:
        for doc_id in sorted(plan):
            answers, items = plan[doc_id]
            scorer.run(session.get(Document, doc_id), answers, items)
            session.commit()  # per document: an interruption loses no finished one
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{report.answers} answers", refresh=False)
    except BaseException:
        session.rollback()  # the document in progress only
        raise
    finally:
        if bar is not None:
            bar.close()
    return report


class _Pass:
    """What one forward pass (over `ids`) is asked: continuations per branch position (each
    distinct one once), one-token look-ups, and the rows whose distribution is summarised."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids
        self.continuations: dict[int, list[list[int]]] = {}
        self._at: dict[tuple[int, tuple[int, ...]], int] = {}
        self.lookups: set[tuple[int, int]] = set()
        self.rows: set[int] = set()
        self.words = False  # some continuation needs its word-end term
        self.scored: DocumentScores | None = None

    def ask(self, position: int, tokens: list[int], *, word: bool) -> None:
        """A continuation at `position`; one token with no end term is a look-up."""
        key = (position, tuple(tokens))
        if not word and len(tokens) == 1:
            self.lookups.add((position, tokens[0]))
            return
        self.words |= word
        if key not in self._at:
            at = self.continuations.setdefault(position, [])
            self._at[key] = len(at)
            at.append(list(tokens))

    def run(self, model: LanguageModelBackend, end_set) -> None:
        rows = sorted(self.rows)
        self.scored = model.score_continuations(
            self.ids, self.continuations or None, top_k=1 if rows else None,
            end_set=end_set if self.words else None, lookups=sorted(self.lookups),
            summary_rows=rows or None,
        )
        self._rows = {position: i for i, position in enumerate(rows)}

    def value(self, position: int, tokens: list[int]) -> tuple[float, float | None] | None:
        """(sum of the tokens' log-probs, end term or None), or None when not known."""
        key = (position, tuple(tokens))
        if key in self._at:
            found = self.scored.continuations[position][self._at[key]]
            if found is None or any(math.isnan(lp) for lp in found.token_logprobs):
                return None
            return found.logprob, found.end_logprob
        logprob, _rank = self.scored.lookups[(position, tokens[0])]
        return None if math.isnan(logprob) else (logprob, None)

    def lookup(self, position: int, token: int) -> tuple[float | None, int | None]:
        logprob, rank = self.scored.lookups[(position, token)]
        if math.isnan(logprob):
            return None, None
        return logprob, rank if rank > 0 else None  # -1: beyond a top-k-only server's k

    def summary(self, position: int) -> tuple[float | None, int | None]:
        """(entropy or None, most likely token or None) after `position` tokens."""
        summary, i = self.scored.summary, self._rows[position]
        entropy, top1 = float(summary.entropy[i]), int(summary.top_ids[i, 0])
        return (None if math.isnan(entropy) else entropy), (top1 if top1 >= 0 else None)


class _ModelScorer:
    """fill_model_scores for one document at a time (rows written, not committed)."""

    def __init__(self, session: Session, model: LanguageModelBackend, row: LanguageModel,
                 report: ModelScoresReport) -> None:
        self.session, self.model, self.report = session, model, report
        self.model_id = row.id
        # A word's end term needs the full distribution: not from a top-k-only server.
        self.words = not model.settings().get("top_k_only")
        self.n_ctx = getattr(model, "n_ctx", None)  # BOS + tokens must fit (llamacpp)

    def _fits(self, ids: list[int]) -> bool:
        return self.n_ctx is None or len(ids) + 1 <= self.n_ctx

    def run(self, doc: Document, answers: list[tuple], item_ids: set[int]) -> None:
        from .words import MAX_WORD_CHARS, boundary_mask, is_word_start, target_word, word_token_ids

        started = time.perf_counter()
        model, text, report = self.model, doc.text, self.report
        same = doc.tokenizer == model.tokenizer_id
        ids = list(doc.token_ids) if same else model.tokenize(text)
        same = same or ids == list(doc.token_ids)  # e.g. a server serving the corpus's model
        report.documents += 1
        if same:
            report.same_tokenizer += 1
        else:
            report.other_tokenizer += 1
        items = doc.items
        by_id = {item.id: item for item in items}
        by_position = {item.position: item for item in items}
        passes: dict[tuple[int, ...], _Pass] = {}
        whole = tuple(ids)

        def branch(item: Item) -> tuple[_Pass, int] | None:
            """The pass and position whose next-token distribution follows the item's prefix
            (the prefix tokenized by the model on its own); None if it does not fit."""
            prefix = model.tokenize(text[: item.char_start])
            n = len(prefix)
            key = whole if ids[:n] == prefix and self._fits(ids) else tuple(prefix)
            if key is not whole and not self._fits(prefix):
                return None
            if key not in passes:
                passes[key] = _Pass(list(key))
            return passes[key], n

        needed = {item_id for _g, item_id, *_rest in answers} | item_ids
        branches = {item_id: branch(by_id[item_id]) for item_id in sorted(needed)}
        first_tokens = None
        if same and any(first is not None for *_a, first in answers):
            first_tokens = passes.setdefault(whole, _Pass(ids)) if self._fits(ids) else None

        asked_answers = []  # guess id, item, mode, tokens, first token
        for guess_id, item_id, mode, raw, first in answers:
            item, at = by_id[item_id], branches[item_id]
            if mode == "word":
                word = (raw or "").strip()[:MAX_WORD_CHARS]
                tokens = word_token_ids(model, text[: item.char_start], word) if word else []
            else:
                tokens = model.tokenize(raw or "")
            if at is not None and tokens and (mode != "word" or self.words):
                at[0].ask(at[1], tokens, word=mode == "word")
            if first_tokens is not None and first is not None:
                first_tokens.lookups.add((item.position, first))
            asked_answers.append((guess_id, item, mode, tokens, first))

        asked_items = []  # item, target tokens, word, word tokens
        for item_id in sorted(item_ids):
            item, at = by_id[item_id], branches[item_id]
            target = word = None
            target_tokens: list[int] = []
            word_tokens: list[int] = []
            if item.token_id is not None:  # a stem has no true continuation
                following = by_position.get(item.position + 1)
                end = following.char_start if following is not None else len(text)
                target = text[item.char_start:end]
                target_tokens = model.tokenize(target) if target else []
                word = target_word(doc, item)
                if word and is_word_start(doc, item):
                    word_tokens = word_token_ids(model, text[: item.char_start], word)
            if at is not None:
                at[0].rows.add(at[1])
                if target_tokens:
                    at[0].ask(at[1], target_tokens, word=False)
                if word_tokens and self.words:
                    at[0].ask(at[1], word_tokens, word=True)
            asked_items.append((item, target_tokens, word, word_tokens))

        end_set = boundary_mask(model) if self.words and any(p.words for p in passes.values()) \
            else None
        for each in passes.values():
            if each.continuations or each.lookups or each.rows:
                each.run(model, end_set)
                report.passes += 1

        rows = []
        for guess_id, item, mode, tokens, first in asked_answers:
            at = branches[item.id]
            value = at[0].value(at[1], tokens) if at is not None and tokens and \
                (mode != "word" or self.words) else None
            logprob = end = None
            if value is not None:
                logprob, end = value
                if mode == "word":
                    logprob = None if end is None else logprob + end
                else:
                    end = None
            first_lp, first_rank = (first_tokens.lookup(item.position, first)
                                    if first_tokens is not None and first is not None
                                    else (None, None))
            rows.append({"guess_id": guess_id, "model_id": self.model_id, "logprob": logprob,
                         "n_tokens": len(tokens), "end_logprob": end,
                         "first_token_logprob": first_lp, "first_token_rank": first_rank,
                         "same_tokenizer": same})
            report.answers += 1
            report.answers_unknown += logprob is None
        if rows:
            self.session.execute(insert(AnswerModelScore), rows)

        rows = []
        for item, target_tokens, word, word_tokens in asked_items:
            at = branches[item.id]
            values = {"target_logprob": None, "target_n_tokens": len(target_tokens) or None,
                      "target_word_logprob": None, "target_word_end_logprob": None,
                      "entropy": None, "top1_text": None, "top1_starts_word": None}
            if at is not None:
                found = at[0].value(at[1], target_tokens) if target_tokens else None
                values["target_logprob"] = None if found is None else found[0]
                found = at[0].value(at[1], word_tokens) if word_tokens and self.words else None
                if found is not None and found[1] is not None:
                    values["target_word_logprob"] = found[0] + found[1]
                    values["target_word_end_logprob"] = found[1]
                entropy, top1 = at[0].summary(at[1])
                values["entropy"] = entropy
                if top1 is not None:
                    shown = display_text(model.token_bytes(top1))
                    values["top1_text"] = shown[:200]
                    if word is not None:  # a stem has no true word: NULL
                        start = shown.lstrip()
                        values["top1_starts_word"] = bool(start) and not model.is_control(top1) \
                            and word.startswith(start)
            rows.append({"item_id": item.id, "model_id": self.model_id, "same_tokenizer": same,
                         **values})
            report.items += 1
        if rows:
            self.session.execute(insert(ItemModelScore), rows)
        report.seconds += time.perf_counter() - started
