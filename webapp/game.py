"""Rules of the solo game, as plain functions (no Flask): which question comes next, how a typed
guess is matched to the true token, what the reveal shows, and a player's running scores.

The research rule that shapes this module: nothing about an item's true token leaves the server
before that player's guess for it is stored. `question_payload` builds the prefix from tokens
*before* the item only, and `reveal_payload` is only ever called with a stored Guess.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session

from .lm import Tokenizer, display_text
from .models import Corpus, Document, Guess, Item, LanguageModel, Prediction, ScoredDocument

REVEAL_TOP_N = 10


class GameError(ValueError):
    """A request the game cannot honour; `status` is the HTTP status the web layer should use."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class GuessMatch:
    token_ids: list[int]
    first_token_id: int | None
    multi_token: bool
    correct: bool
    match_rule: str  # first_token | first_token_if_space_toggled | none | skip


def match_guess(text: str, target_id: int, tokenizer: Tokenizer, skipped: bool) -> GuessMatch:
    """Score a typed guess: correct when its FIRST model token is the true next token.

    The guess is tokenized on its own, exactly as typed (a leading space is part of the text).
    `first_token_if_space_toggled` records a near miss: wrong as typed, right with the leading
    space added or removed (shown to the player as a hint, never counted as correct).
    """
    if skipped:
        return GuessMatch([], None, False, False, "skip")
    ids = tokenizer.tokenize(text)
    first = ids[0] if ids else None
    if first is not None and first == target_id:
        rule = "first_token"
    else:
        toggled = text[1:] if text.startswith(" ") else " " + text
        toggled_ids = tokenizer.tokenize(toggled) if toggled.strip() else []
        rule = "first_token_if_space_toggled" if toggled_ids[:1] == [target_id] else "none"
    return GuessMatch(ids, first, len(ids) > 1, rule == "first_token", rule)


def token_view(token_id: int, tokenizer: Tokenizer) -> dict:
    return {"id": token_id, "text": display_text(tokenizer.token_bytes(token_id))}


def active_model(session: Session, spec: str) -> LanguageModel | None:
    """The newest scoring run of the configured model that has scored at least one document."""
    return session.scalar(
        select(LanguageModel)
        .where(LanguageModel.spec == spec)
        .where(LanguageModel.id.in_(select(ScoredDocument.model_id)))
        .order_by(LanguageModel.id.desc())
        .limit(1)
    )


def _answered_items(session: Session, player_id: str, document_id: int) -> set[int]:
    return set(
        session.scalars(
            select(Guess.item_id)
            .join(Item, Guess.item_id == Item.id)
            .where(Guess.player_id == player_id, Item.document_id == document_id)
        )
    )


def next_open_item(session: Session, player_id: str, document: Document) -> Item | None:
    """The first playable position of the document this player has not answered yet."""
    answered = _answered_items(session, player_id, document.id)
    for item in document.items:
        if item.playable and item.id not in answered:
            return item
    return None


def choose_document(
    session: Session,
    player_id: str,
    model: LanguageModel,
    corpus: str | None,
    new_passage: bool,
    rng: random.Random | None = None,
) -> Document | None:
    """Continue the player's current passage, or pick a scored one they have not finished."""
    rng = rng or random.Random()
    scored = select(ScoredDocument.document_id).where(ScoredDocument.model_id == model.id)
    playable = select(Item.document_id).where(Item.playable)
    query = (
        select(Document)
        .join(Corpus)
        .where(Document.id.in_(scored), Document.id.in_(playable), Corpus.purpose == "game")
    )
    if corpus:
        query = query.where(Corpus.name == corpus)
    candidates = {doc.id: doc for doc in session.scalars(query)}
    last = session.scalar(
        select(Item.document_id)
        .join(Guess, Guess.item_id == Item.id)
        .where(Guess.player_id == player_id)
        .order_by(Guess.id.desc())
        .limit(1)
    )
    answered = _answered_counts(session, player_id)  # document id -> playable positions answered
    playable_counts = dict(
        session.execute(
            select(Item.document_id, func.count(Item.id))
            .where(Item.playable, Item.document_id.in_(list(candidates)))
            .group_by(Item.document_id)
        ).all()
    )

    def is_open(doc_id: int) -> bool:
        return answered.get(doc_id, 0) < playable_counts.get(doc_id, 0)

    if last in candidates and not new_passage and is_open(last):
        return candidates[last]
    fresh = [d for i, d in candidates.items() if i not in answered]
    unfinished = [d for i, d in candidates.items() if i in answered and i != last and is_open(i)]
    pool = fresh or unfinished
    if not pool and last in candidates and is_open(last):
        pool = [candidates[last]]
    return rng.choice(sorted(pool, key=lambda d: d.id)) if pool else None


def _answered_counts(session: Session, player_id: str) -> dict[int, int]:
    """Per document, how many positions this player has answered (guesses exist only for playable
    positions: check_guess_allowed refuses the rest)."""
    return dict(
        session.execute(
            select(Item.document_id, func.count(Guess.id))
            .join(Guess, Guess.item_id == Item.id)
            .where(Guess.player_id == player_id)
            .group_by(Item.document_id)
        ).all()
    )


def question_payload(session: Session, player_id: str, document: Document, item: Item) -> dict:
    """What the player may see before guessing: the prefix only (tokens before the item)."""
    prefix = [it.token_text for it in document.items if it.position < item.position]
    playable = [it for it in document.items if it.playable]
    answered = _answered_items(session, player_id, document.id)
    last = prefix[-1] if prefix else ""
    return {
        "item_id": item.id,
        "position": item.position,
        "document": {
            "id": document.id, "title": document.title, "register": document.register,
            "corpus": document.corpus.name,
        },
        "context": prefix,
        "prefix_ends_with_space": bool(last) and last[-1:].isspace(),
        "answered_in_document": sum(1 for it in playable if it.id in answered),
        "playable_in_document": len(playable),
    }


def prediction_for(session: Session, item_id: int, model_id: int) -> Prediction | None:
    return session.scalar(
        select(Prediction).where(Prediction.item_id == item_id, Prediction.model_id == model_id)
    )


def check_guess_allowed(session: Session, player_id: str, item: Item, model: LanguageModel) -> Prediction:
    """A guess must be for a playable, scored item that is the player's current position."""
    if not item.playable:
        raise GameError("this position is not playable", 409)
    prediction = prediction_for(session, item.id, model.id)
    if prediction is None:
        raise GameError("this passage has not been scored by the model yet", 409)
    expected = next_open_item(session, player_id, item.document)
    if expected is None or expected.id != item.id:
        if item.id in _answered_items(session, player_id, item.document_id):
            raise GameError("you already answered this position", 409)
        raise GameError("answer the passage in order: this is not your current position", 409)
    return prediction


def model_view_of_token(prediction: Prediction, token_id: int | None) -> tuple[float | None, int | None]:
    """(logprob, rank) of a token under the prediction, if it is in the stored top-k."""
    if token_id is None:
        return None, None
    for rank, (tid, logprob, _text, _control) in enumerate(prediction.top_k, 1):
        if tid == token_id:
            return logprob, rank
    return None, None


def build_guess(
    match: GuessMatch, prediction, *, raw_text: str, skipped: bool,
    reaction_ms: float | None = None, **fields,
) -> Guess:
    """The Guess row for a matched answer (solo game, rooms, studies and imports all use it).

    Tokens and verdict come from `match`; the model's exact log-prob and rank of its first token
    are filled when that token is in `prediction`'s stored top-k (prediction may be None before
    scoring). `fields` are the rest of the row: ids, times, source, mode ...
    """
    logprob, rank = (
        model_view_of_token(prediction, match.first_token_id) if prediction is not None else (None, None)
    )
    return Guess(
        raw_text=raw_text[:400], token_ids=match.token_ids, first_token_id=match.first_token_id,
        multi_token=match.multi_token, skipped=skipped, is_correct=match.correct,
        match_rule=match.match_rule,
        client_reaction_ms=float(reaction_ms) if reaction_ms is not None else None,
        model_logprob=logprob, model_rank=rank, **fields,
    )


def reveal_payload(guess: Guess, prediction: Prediction, tokenizer: Tokenizer, top_k: int) -> dict:
    """Everything shown after a stored guess: the truth, the model's view, and the guess."""
    item = guess.item
    shown = [entry for entry in prediction.top_k if not entry[3]][:REVEAL_TOP_N]
    guess_lp = guess.model_logprob
    return {
        "guess": {
            "text": guess.raw_text,
            "tokens": [token_view(t, tokenizer) for t in guess.token_ids],
            "first_token": token_view(guess.first_token_id, tokenizer)
            if guess.first_token_id is not None else None,
            "multi_token": guess.multi_token,
            "skipped": guess.skipped,
            "correct": guess.is_correct,
            "match_rule": guess.match_rule,
        },
        "target": {"id": item.token_id, "text": item.token_text},
        "model": {
            "top": [
                {
                    "id": tid, "text": text, "prob": math.exp(lp),
                    "is_target": tid == item.token_id, "is_guess": tid == guess.first_token_id,
                }
                for tid, lp, text, _control in shown
            ],
            "top1_correct": prediction.top1_id == item.token_id,
            "guess_prob": math.exp(guess_lp) if guess_lp is not None else None,
            "guess_rank": guess.model_rank,
            "guess_in_top_k": guess_lp is not None,
            "target_prob": math.exp(prediction.target_logprob),
            "target_rank": prediction.target_rank,
            "top_k": top_k,
            "min_top_k_prob": math.exp(prediction.top_k[-1][1]) if prediction.top_k else None,
            "entropy_nats": prediction.entropy,
        },
    }


def player_stats(session: Session, player_id: str) -> dict:
    """Running scores on the positions this player answered (skips count as wrong)."""
    row = session.execute(
        select(
            func.count(Guess.id),
            func.coalesce(func.sum(cast(Guess.is_correct, Integer)), 0),
            func.coalesce(func.sum(cast(Guess.skipped, Integer)), 0),
            func.coalesce(func.sum(cast(Prediction.top1_id == Item.token_id, Integer)), 0),
        )
        .select_from(Guess)
        .join(Item, Guess.item_id == Item.id)
        .join(
            Prediction,
            (Prediction.item_id == Guess.item_id) & (Prediction.model_id == Guess.model_id),
            isouter=True,
        )
        .where(Guess.player_id == player_id)
    ).one()
    return {"answered": row[0], "correct": row[1], "skipped": row[2], "model_correct": row[3]}

