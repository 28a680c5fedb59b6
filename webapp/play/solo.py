"""The solo game's flow, as plain functions (no Flask): which passage and position come next,
what the player may see before answering, the answer policy, the reveal and running scores.

The research rule that shapes this module: nothing about an item's true token leaves the server
before that player's answer for it is stored. `position_payload` builds the prefix from tokens
*before* the item only, and `reveal_payload` is only ever called with a stored Guess.
"""

from __future__ import annotations

import math
import random

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session

from ..answers import (
    AnswerRefused,
    Match,
    Placement,
    SoloAnswerIn,
    expect_kind,
    match_distribution,
    match_pairwise,
    match_token,
)
from ..game import documents_in_open_studies, prediction_for, token_view
from ..judgements import Pair, choose_pair, usable_alternatives
from ..lm import Tokenizer
from ..models import (
    Corpus,
    CorpusPurpose,
    Document,
    Guess,
    Item,
    LanguageModel,
    PlayRound,
    Prediction,
    ScoredDocument,
)
from . import rounds

REVEAL_TOP_N = 10


class SoloPolicy:
    """Answers in the solo game: the player's next open position of a scored passage."""

    already_answered = "you already answered this position"

    def __init__(self, player_id: str, model: LanguageModel, round: PlayRound | None = None,
                 secret: bytes = b"") -> None:
        self.player_id = player_id
        self.model = model
        self.round = round  # the player's open round: it decides which positions come next
        self.secret = secret  # keys the pairwise game's choice of pair (webapp.judgements)

    def locate(self, session: Session, answer: SoloAnswerIn) -> Placement:
        """A playable, scored item that is the player's current position."""
        item = session.get(Item, answer.item_id)
        if item is None:
            raise AnswerRefused(f"unknown item {answer.item_id}", 404)
        if session.scalar(documents_in_open_studies().where(Item.document_id == item.document_id).limit(1)):
            raise AnswerRefused("this passage is in use by a study right now; press Next for another", 409)
        if not item.playable:
            raise AnswerRefused("this position is not playable", 409)
        prediction = prediction_for(session, item.id, self.model.id)
        if prediction is None:
            raise AnswerRefused("this passage has not been scored by the model yet", 409)
        if answer.mode == "pairwise":
            allowed = pairable_items(session, item.document, self.model.id)
        else:
            allowed = rounds.allowed_items(session, self.round, self.model.id)
        expected = next_open_item(session, self.player_id, item.document, allowed)
        if expected is None or expected.id != item.id:
            if item.id in _answered_items(session, self.player_id, item.document_id):
                raise AnswerRefused(self.already_answered, 409)
            raise AnswerRefused("answer the passage in order: this is not your current position", 409)
        pair = solo_pair(prediction, item, self.player_id, self.secret) if answer.mode == "pairwise" else None
        return Placement(item.id, item.token_id, prediction, {"model_id": self.model.id}, context=pair)

    def match(self, answer: SoloAnswerIn, placement: Placement, tokenizer: Tokenizer) -> Match:
        if answer.mode == "pairwise":
            return match_pairwise(answer, placement.context, placement.prediction.target_logprob)
        if answer.mode == "distribution":
            return match_distribution(answer, placement.token_id, tokenizer, placement.prediction)
        expect_kind(answer, "token")
        return match_token(answer.text, placement.token_id, tokenizer, answer.skipped)

    def owns(self, guess: Guess, answer: SoloAnswerIn) -> bool:
        return guess.item_id == answer.item_id and guess.room_id is None and guess.study_id is None

    def stored(self, session: Session, placement: Placement, guess: Guess) -> None:
        if self.round is not None:
            rounds.attach(self.round, guess)


def solo_pair(prediction: Prediction, item: Item, player_id: str, secret: bytes) -> Pair | None:
    """The pair this player sees at this position (the same every time it is asked for)."""
    return choose_pair(prediction.alternatives, item.token_id, f"solo:{player_id}:{item.id}", secret)


def pairable_items(session: Session, document: Document, model_id: int) -> set[int]:
    """Positions of the document that have an alternative to judge: drawn alternatives of which
    at least one differs from the true token (where the model is sure, every draw may be it)."""
    rows = session.execute(
        select(Item.id, Item.token_id, Prediction.alternatives)
        .join(Prediction, Prediction.item_id == Item.id)
        .where(Item.document_id == document.id, Prediction.model_id == model_id,
               Prediction.alternatives.is_not(None))
    ).all()
    return {item_id for item_id, token_id, alternatives in rows
            if usable_alternatives(alternatives, token_id)}


def with_alternatives(model_id: int):
    """Item ids (a SELECT) that have drawn pairwise alternatives under this model."""
    return select(Prediction.item_id).where(
        Prediction.model_id == model_id, Prediction.alternatives.is_not(None)
    )


def _answered_items(session: Session, player_id: str, document_id: int) -> set[int]:
    return set(
        session.scalars(
            select(Guess.item_id)
            .join(Item, Guess.item_id == Item.id)
            .where(Guess.player_id == player_id, Item.document_id == document_id)
        )
    )


def next_open_item(session: Session, player_id: str, document: Document, allowed=None) -> Item | None:
    """The first playable position of the document this player has not answered yet (among
    `allowed` item ids, a list or a SELECT, when given: a round's difficulty or daily positions)."""
    answered = _answered_items(session, player_id, document.id)
    if allowed is not None and not isinstance(allowed, (list, set, tuple)):
        allowed = set(session.scalars(allowed.where(Prediction.item_id.in_(
            select(Item.id).where(Item.document_id == document.id)))))
    for item in document.items:
        if item.playable and item.id not in answered and (allowed is None or item.id in allowed):
            return item
    return None


def choose_document(
    session: Session,
    player_id: str,
    model: LanguageModel,
    corpus: str | None,
    new_passage: bool,
    rng: random.Random | None = None,
    allowed=None,
) -> Document | None:
    """Continue the player's current passage, or pick a scored one they have not finished
    (with `allowed`, a SELECT of item ids: one with an unanswered allowed position)."""
    rng = rng or random.Random()
    scored = select(ScoredDocument.document_id).where(ScoredDocument.model_id == model.id)
    playable = select(Item.document_id).where(Item.playable)
    query = (
        select(Document)
        .join(Corpus)
        .where(Document.id.in_(scored), Document.id.in_(playable), Corpus.purpose == CorpusPurpose.GAME)
        .where(Document.id.not_in(documents_in_open_studies()))
    )
    if corpus:
        query = query.where(Corpus.name == corpus)
    if allowed is not None:
        mine = select(Guess.item_id).where(Guess.player_id == player_id)
        query = query.where(Document.id.in_(
            select(Item.document_id).where(Item.playable, Item.id.in_(allowed), Item.id.not_in(mine))
        ))
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
    positions: SoloPolicy.locate refuses the rest)."""
    return dict(
        session.execute(
            select(Item.document_id, func.count(Guess.id))
            .join(Guess, Guess.item_id == Item.id)
            .where(Guess.player_id == player_id)
            .group_by(Item.document_id)
        ).all()
    )


def position_payload(session: Session, player_id: str, document: Document, item: Item) -> dict:
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
        "mode": "token",  # free play may ask another mode (the route sets it)
    }


def own_solo_answer(session: Session, player_id: str | None, client_key: str) -> Guess | None:
    """The player's own solo answer stored under `client_key` (None for an unknown key, for
    someone else's answer, and for a room's or a study's: those are revealed elsewhere)."""
    if not player_id or len(client_key) > 64:
        return None
    return session.scalar(select(Guess).where(
        Guess.client_key == client_key, Guess.player_id == player_id,
        Guess.room_id.is_(None), Guess.study_id.is_(None), Guess.source == "game",
    ))


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
    """Running scores on the positions this player answered by typing (skips count as wrong);
    pairwise and distribution answers are never right or wrong, so they are not counted here."""
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
        .where(Guess.player_id == player_id, Guess.mode.in_(("token", "word")))
    ).one()
    return {"answered": row[0], "correct": row[1], "skipped": row[2], "model_correct": row[3]}


