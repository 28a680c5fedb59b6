"""Routes of the solo game. Thin: validate input, call webapp.game, return JSON or a template."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from flask import abort, current_app, jsonify, render_template, request, session
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from .. import game
from ..api import error as _error
from ..api import field as _field
from ..api import json_body as _json_body
from ..api import model_display_name as _model_display_name
from ..extensions import db
from ..lm import load_tokenizer
from ..models import Corpus, Document, Guess, Item, LanguageModel, Player, ScoredDocument
from . import bp

PLAYER_KEY = "player_id"


# ------------------------------------------------------------------------------------ helpers


def _player_id(create: bool) -> str | None:
    """The pseudonymous player id in the signed session cookie (no personal data)."""
    player_id = session.get(PLAYER_KEY)
    if player_id and db.session.get(Player, player_id):
        return player_id
    if not create:
        return None
    player_id = secrets.token_hex(8)
    db.session.add(Player(id=player_id))
    db.session.commit()
    session[PLAYER_KEY] = player_id
    session.permanent = True
    return player_id


def _tokenizer():
    return load_tokenizer(current_app.config["MODEL"])


def _model_or_503():
    model = game.active_model(db.session, current_app.config["MODEL"])
    if model is None:
        abort(503, description="no passages are scored yet: run `humanlm score` (or `make run`)")
    return model


# -------------------------------------------------------------------------------------- pages


@bp.get("/")
def home():
    model = game.active_model(db.session, current_app.config["MODEL"])
    scored = (
        select(ScoredDocument.document_id).where(ScoredDocument.model_id == model.id)
        if model else None
    )
    corpora = []
    for corpus in db.session.scalars(
        select(Corpus).where(Corpus.purpose == "game").order_by(Corpus.name)
    ):
        n_docs = db.session.scalar(select(func.count(Document.id)).where(Document.corpus_id == corpus.id))
        n_scored = 0
        if scored is not None:
            n_scored = db.session.scalar(
                select(func.count(Document.id)).where(
                    Document.corpus_id == corpus.id, Document.id.in_(scored)
                )
            )
        corpora.append({"name": corpus.name, "n_documents": n_docs, "n_scored_documents": n_scored})
    player_id = _player_id(create=False)
    return render_template(
        "play/home.html",
        model_name=_model_display_name(),
        ready=model is not None,
        corpora=corpora,
        player_stats=game.player_stats(db.session, player_id) if player_id else None,
    )


@bp.get("/play")
def play_page():
    return render_template(
        "play/game.html", model_name=_model_display_name(), corpus=request.args.get("corpus")
    )


# ---------------------------------------------------------------------------------------- API


@bp.post("/api/play/next")
def next_question():
    body = _json_body()
    corpus = _field(body, "corpus", str, required=False)
    new_passage = _field(body, "new_passage", bool, required=False, default=False)
    known = select(Corpus).where(Corpus.name == corpus, Corpus.purpose == "game")
    if corpus is not None and db.session.scalar(known) is None:
        return _error(f"unknown corpus '{corpus}'", 404)
    model = _model_or_503()
    player_id = _player_id(create=True)
    document = game.choose_document(db.session, player_id, model, corpus, new_passage)
    stats = game.player_stats(db.session, player_id)
    if document is None:
        return jsonify(question=None, done=True, stats=stats)
    item = game.next_open_item(db.session, player_id, document)
    return jsonify(question=game.question_payload(db.session, player_id, document, item), stats=stats)


@bp.get("/api/tokenize")
def tokenize():
    text = request.args.get("text", "")
    limit = current_app.config["MAX_GUESS_CHARS"]
    if len(text) > limit:
        return _error(f"text is longer than {limit} characters", 400)
    tokenizer = _tokenizer()
    ids = tokenizer.tokenize(text)
    return jsonify(
        text=text,
        tokens=[game.token_view(t, tokenizer) for t in ids],
        starts_with_space=text[:1].isspace(),
        n_tokens=len(ids),
    )


@bp.post("/api/play/guesses")
def submit_guess():
    received_at = datetime.now(UTC)
    body = _json_body()
    item_id = _field(body, "item_id", int)
    if not -(2**63) <= item_id < 2**63:  # beyond any database integer: cannot exist
        return _error(f"unknown item {item_id}", 404)
    client_key = _field(body, "client_key", str)
    skipped = _field(body, "skipped", bool, required=False, default=False)
    text = _field(body, "text", str, required=not skipped, default="")
    reaction_ms = _field(body, "reaction_ms", (int, float), required=False)
    limit = current_app.config["MAX_GUESS_CHARS"]
    if len(text) > limit:
        return _error(f"guess is longer than {limit} characters", 400)
    if not skipped and not text.strip():
        return _error("guess is empty: type something or choose \"I don't know\"", 400)
    if not 8 <= len(client_key) <= 64:
        return _error("client_key must be 8-64 characters", 400)
    if reaction_ms is not None and not 0 <= reaction_ms <= 86_400_000:
        return _error("reaction_ms must be between 0 and 86400000", 400)

    model = _model_or_503()
    player_id = _player_id(create=True)
    tokenizer = _tokenizer()

    existing = db.session.scalar(select(Guess).where(Guess.client_key == client_key))
    if existing is not None:
        return _replay(existing, player_id, item_id, tokenizer)

    item = db.session.get(Item, item_id)
    if item is None:
        return _error(f"unknown item {item_id}", 404)
    try:
        prediction = game.check_guess_allowed(db.session, player_id, item, model)
    except game.GameError as exc:
        return _error(str(exc), exc.status)

    match = game.match_guess(text if not skipped else "", item.token_id, tokenizer, skipped)
    guess = game.build_guess(
        match, prediction, raw_text="" if skipped else text, skipped=skipped,
        reaction_ms=reaction_ms, client_key=client_key, player_id=player_id, item_id=item.id,
        model_id=model.id, server_received_at=received_at,
    )
    db.session.add(guess)
    try:
        db.session.commit()  # stored first; only then is anything about the target revealed
    except IntegrityError:
        db.session.rollback()
        existing = db.session.scalar(select(Guess).where(Guess.client_key == client_key))
        if existing is None:
            raise
        return _replay(existing, player_id, item_id, tokenizer)
    return jsonify(
        **game.reveal_payload(guess, prediction, tokenizer, model.top_k),
        stats=game.player_stats(db.session, player_id),
        replayed=False,
    )


def _replay(guess: Guess, player_id: str, item_id: int, tokenizer):
    """A retried submit: the same answer again, nothing stored twice."""
    if guess.player_id != player_id or guess.item_id != item_id:
        return _error("client_key was already used for another guess", 409)
    model = db.session.get(LanguageModel, guess.model_id)
    prediction = game.prediction_for(db.session, guess.item_id, model.id)
    return jsonify(
        **game.reveal_payload(guess, prediction, tokenizer, model.top_k),
        stats=game.player_stats(db.session, player_id),
        replayed=True,
    )


@bp.get("/api/play/stats")
def stats():
    player_id = _player_id(create=False)
    empty = {"answered": 0, "correct": 0, "skipped": 0, "model_correct": 0}
    return jsonify(stats=game.player_stats(db.session, player_id) if player_id else empty)
