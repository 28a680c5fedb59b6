"""Routes of the solo game. Thin: validate input, call webapp.play.solo and webapp.answers,
return JSON or a template."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from flask import abort, current_app, jsonify, render_template, request, session
from pydantic import Field, ValidationInfo, field_validator
from sqlalchemy import func, select

from .. import answers, game
from ..answers import Payload, SafeStr, SoloAnswerIn
from ..api import accepts, parse_body, parse_query
from ..api import error as _error
from ..api import model_display_name as _model_display_name
from ..extensions import db
from ..lm import load_tokenizer
from ..models import Corpus, CorpusPurpose, Document, LanguageModel, Player, ScoredDocument
from . import bp, solo

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
        select(Corpus).where(Corpus.purpose == CorpusPurpose.GAME).order_by(Corpus.name)
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
        player_stats=solo.player_stats(db.session, player_id) if player_id else None,
    )


@bp.get("/play")
def play_page():
    return render_template(
        "play/game.html", model_name=_model_display_name(), corpus=request.args.get("corpus")
    )


# ---------------------------------------------------------------------------------------- API


class NextIn(Payload):
    """POST /api/play/next: continue the current passage, or start another one."""

    corpus: SafeStr | None = Field(default=None, max_length=100)
    new_passage: bool = False


class TokenizeQuery(Payload):
    """GET /api/tokenize: how the model's tokenizer cuts a text (shown while typing)."""

    text: SafeStr = Field(default="", max_length=4000)

    @field_validator("text")
    @classmethod
    def _fits(cls, value: str, info: ValidationInfo) -> str:
        limit = (info.context or {}).get("max_chars", 200)
        if len(value) > limit:
            raise ValueError(f"text is longer than {limit} characters")
        return value


@bp.post("/api/play/next")
@accepts(body=NextIn)
def next_question():
    """The player's next position: the prefix only, never the true token."""
    body = parse_body(NextIn)
    corpus, new_passage = body.corpus, body.new_passage
    known = select(Corpus).where(Corpus.name == corpus, Corpus.purpose == CorpusPurpose.GAME)
    if corpus is not None and db.session.scalar(known) is None:
        return _error(f"unknown corpus '{corpus}'", 404)
    model = _model_or_503()
    player_id = _player_id(create=True)
    document = solo.choose_document(db.session, player_id, model, corpus, new_passage)
    stats = solo.player_stats(db.session, player_id)
    if document is None:
        return jsonify(question=None, done=True, stats=stats)
    item = solo.next_open_item(db.session, player_id, document)
    return jsonify(question=solo.position_payload(db.session, player_id, document, item), stats=stats)


@bp.get("/api/tokenize")
@accepts(query=TokenizeQuery)
def tokenize():
    """How the model's tokenizer splits a text, token by token."""
    text = parse_query(TokenizeQuery).text
    tokenizer = _tokenizer()
    ids = tokenizer.tokenize(text)
    return jsonify(
        text=text,
        tokens=[game.token_view(t, tokenizer) for t in ids],
        starts_with_space=text[:1].isspace(),
        n_tokens=len(ids),
    )


@bp.post("/api/play/guesses")
@accepts(body=SoloAnswerIn)
def submit_guess():
    """Store an answer for the player's current position, then reveal it."""
    received_at = datetime.now(UTC)
    answer = parse_body(SoloAnswerIn)
    model = _model_or_503()
    player_id = _player_id(create=True)
    tokenizer = _tokenizer()
    try:
        result = answers.submit(
            db.session, solo.SoloPolicy(player_id, model), answer, player_id=player_id,
            tokenizer=tokenizer, received_at=received_at,
        )
    except answers.AnswerRefused as refused:
        return _error(refused.message, refused.status)
    guess = result.guess
    # The reveal is built only now, from the stored (committed) answer.
    answer_model = db.session.get(LanguageModel, guess.model_id)
    prediction = game.prediction_for(db.session, guess.item_id, answer_model.id)
    return jsonify(
        **solo.reveal_payload(guess, prediction, tokenizer, answer_model.top_k),
        stats=solo.player_stats(db.session, player_id),
        replayed=result.replayed,
    )


@bp.get("/api/play/stats")
def stats():
    """The player's running scores."""
    player_id = _player_id(create=False)
    empty = {"answered": 0, "correct": 0, "skipped": 0, "model_correct": 0}
    return jsonify(stats=solo.player_stats(db.session, player_id) if player_id else empty)
