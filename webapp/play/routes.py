"""Routes of the solo game. Thin: validate input, call webapp.play.solo and webapp.answers,
return JSON or a template."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Literal

from flask import Response, abort, current_app, jsonify, render_template, request, session, url_for
from pydantic import Field, ValidationInfo, field_validator
from sqlalchemy import func, select

from .. import answers, game, jobs, judgements, tokenizer_views
from ..answers import Payload, SafeStr, SoloAnswerIn
from ..api import accepts, parse_body, parse_query
from ..api import error as _error
from ..api import model_display_name as _model_display_name
from ..extensions import db
from ..lm import load_tokenizer
from ..models import (
    Corpus,
    CorpusPurpose,
    Document,
    Item,
    LanguageModel,
    Player,
    PlayRound,
    PlayRoundGuess,
    ScoredDocument,
)
from ..rooms.state import RoomRuleError
from . import bp, rounds, solo

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
    difficulty = request.args.get("difficulty", "any")
    return render_template(
        "play/game.html", model_name=_model_display_name(), corpus=request.args.get("corpus"),
        daily=request.args.get("daily") == "1",
        difficulty=difficulty if difficulty in rounds.DIFFICULTIES else "any",
    )


# ---------------------------------------------------------------------------------------- API


class NextIn(Payload):
    """POST /api/play/next: continue the current passage, or start another one.

    With `round` (the game page sends it) the positions come in rounds of ten ending on a
    result card; `daily` plays the day's passage, `difficulty` picks positions where the model
    was confident (easy) or unsure (hard). The open round goes on while the request asks for
    the same kind and difficulty; otherwise, or with `new_round`, it ends and a new one starts."""

    corpus: SafeStr | None = Field(default=None, max_length=100)
    new_passage: bool = False
    round: bool = False
    new_round: bool = False
    daily: bool = False
    difficulty: Literal["any", "easy", "hard"] = "any"
    mode: Literal["token", "pairwise", "distribution"] = Field(
        default="token",
        description="token: type the next token; pairwise: which of two tokens came next "
                    "(corpora scored with --pairwise-alternatives); distribution: bet 100 points. "
                    "Rounds, the daily passage and difficulty are token mode's.",
    )


class NicknameIn(Payload):
    """POST /api/play/nickname: the name shown on the daily board (rules of room nicknames)."""

    nickname: SafeStr = Field(max_length=100)


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
    in_round = body.round or body.daily or body.new_round or body.difficulty != "any"
    if body.mode != "token" and in_round:
        return _error("rounds, the daily passage and difficulty are played in token mode", 400)
    model = _model_or_503()
    player_id = _player_id(create=True)
    if in_round:
        return _next_in_round(body, model, player_id)
    open_round = rounds.open_round(db.session, player_id)
    if open_round is not None:  # free play outside rounds (an API client): end the open round
        rounds.finish(db.session, open_round)
        db.session.commit()
    pairwise = body.mode == "pairwise"
    allowed = solo.with_alternatives(model.id) if pairwise else None
    document = solo.choose_document(db.session, player_id, model, corpus, new_passage, allowed=allowed)
    stats = solo.player_stats(db.session, player_id)
    if document is None:
        return jsonify(question=None, done=True, stats=stats, mode=body.mode)
    allowed_here = solo.pairable_items(db.session, document, model.id) if pairwise else None
    item = solo.next_open_item(db.session, player_id, document, allowed_here)
    if item is None:  # drawn alternatives left, but each equal to the truth: another passage
        document = solo.choose_document(db.session, player_id, model, corpus, True, allowed=allowed)
        allowed_here = solo.pairable_items(db.session, document, model.id) if document else set()
        item = solo.next_open_item(db.session, player_id, document, allowed_here) if document else None
        if item is None:
            return jsonify(question=None, done=True, stats=stats, mode=body.mode)
    question = solo.position_payload(db.session, player_id, document, item)
    question["mode"] = body.mode
    if pairwise:
        prediction = game.prediction_for(db.session, item.id, model.id)
        pair = solo.solo_pair(prediction, item, player_id, _pair_secret())
        question["pair"] = judgements.pair_payload(pair, item, _tokenizer())
    return jsonify(question=question, stats=stats)


def _pair_secret() -> bytes:
    return str(current_app.config["SECRET_KEY"]).encode()


def _next_in_round(body: NextIn, model, player_id: str):
    """The next position of the player's open round, starting one when needed."""
    rnd = rounds.open_round(db.session, player_id)
    switch = rnd is not None and (
        (rnd.kind == "daily") != body.daily or (not body.daily and rnd.difficulty != body.difficulty)
    )
    if rnd is not None and (body.new_round or switch):  # the open round ends (its card stays)
        rounds.finish(db.session, rnd)
        rnd = None
    if rnd is None:
        rnd = rounds.start_round(
            db.session, player_id, model, daily=body.daily, difficulty=body.difficulty
        )
        if rnd is None:  # today's passage: nothing left for this player
            db.session.commit()
            played = db.session.scalar(
                select(PlayRound.id).where(
                    PlayRound.player_id == player_id, PlayRound.kind == "daily",
                    PlayRound.day == rounds.today().isoformat(),
                ).order_by(PlayRound.created_at.desc()).limit(1)
            )
            return jsonify(
                question=None, done=False, daily_done=True, finished_round=played,
                stats=solo.player_stats(db.session, player_id),
            )
    allowed = rounds.allowed_items(db.session, rnd, model.id)
    document, item = None, None
    if rnd.kind == "daily":
        document = db.session.get(Document, rnd.document_id) if rnd.document_id else None
        in_study = document is not None and db.session.scalar(
            game.documents_in_open_studies().where(Item.document_id == document.id).limit(1)
        )
        if document is not None and not in_study:
            item = solo.next_open_item(db.session, player_id, document, allowed)
    else:
        document = solo.choose_document(
            db.session, player_id, model, body.corpus, body.new_passage, allowed=allowed
        )
        if document is not None:
            item = solo.next_open_item(db.session, player_id, document, allowed)
    if item is None:
        finished = rnd.id if rnd.answers else None
        rounds.finish(db.session, rnd)
        db.session.commit()
        return jsonify(
            question=None, done=finished is None, finished_round=finished,
            stats=solo.player_stats(db.session, player_id),
        )
    db.session.commit()
    return jsonify(
        question=solo.position_payload(db.session, player_id, document, item),
        round=rounds.round_info(rnd),
        stats=solo.player_stats(db.session, player_id),
    )


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


@bp.get("/api/tokenizers")
@accepts(query=TokenizeQuery)
def tokenizers():
    """How the game's model, the other scored models and GPT-4's cl100k_base cut a text."""
    text = parse_query(TokenizeQuery).text
    shown, left_out = tokenizer_views.comparison_tokenizers(
        db.session, _model_display_name(), _tokenizer())
    return jsonify(text=text, tokenizers=tokenizer_views.cuts(text, shown), left_out=left_out)


@bp.post("/api/play/guesses")
@accepts(body=SoloAnswerIn)
def submit_guess():
    """Store an answer for the player's current position, then reveal it."""
    received_at = datetime.now(UTC)
    answer = parse_body(SoloAnswerIn)
    model = _model_or_503()
    player_id = _player_id(create=True)
    tokenizer = _tokenizer()
    open_round = rounds.open_round(db.session, player_id)
    try:
        result = answers.submit(
            db.session, solo.SoloPolicy(player_id, model, open_round, _pair_secret()), answer,
            player_id=player_id,
            tokenizer=tokenizer, received_at=received_at,
        )
    except answers.AnswerRefused as refused:
        return _error(refused.message, refused.status)
    guess = result.guess
    if not result.replayed:
        jobs.ask_for_model_numbers(current_app._get_current_object(), guess)
    # The reveal is built only now, from the stored (committed) answer.
    return _reveal(guess, player_id, tokenizer, replayed=result.replayed)


@bp.get("/api/play/guesses/<client_key>")
@accepts(summary="One of your own solo answers revealed again, with model numbers filled since")
def own_guess(client_key: str):
    """The reveal of the caller's own stored solo answer, as POST /api/play/guesses replied,
    with the model numbers the fill job computed since (the page asks again when one was not
    known yet). Someone else's answer is a 404 like an unknown key."""
    player_id = _player_id(create=False)
    guess = solo.own_solo_answer(db.session, player_id, client_key)
    if guess is None:
        return _error("you have no answer with this client_key", 404)
    return _reveal(guess, player_id, _tokenizer(), replayed=True)


def _reveal(guess, player_id: str, tokenizer, *, replayed: bool):
    """The reveal of a stored solo answer: the truth, the model's view, the judgement's numbers,
    the player's scores and, when it belongs to a round, the round."""
    answer_model = db.session.get(LanguageModel, guess.model_id) if guess.model_id else None
    prediction = game.prediction_for(db.session, guess.item_id, answer_model.id) if answer_model else None
    if prediction is None:  # the passage was scored again or removed since
        return _error("the model's numbers for this answer are no longer stored", 404)
    extra = {}
    link = db.session.scalar(select(PlayRoundGuess).where(PlayRoundGuess.guess_id == guess.id))
    if link is not None:
        extra["round"] = rounds.round_info(link.round)
    return jsonify(
        **solo.reveal_payload(guess, prediction, tokenizer, answer_model.top_k),
        **judgements.judgement_reveal(guess, tokenizer), mode=guess.mode,
        stats=solo.player_stats(db.session, player_id),
        replayed=replayed,
        **extra,
    )


def _round_or_404(round_id: str) -> PlayRound:
    rnd = db.session.get(PlayRound, round_id) if len(round_id) <= 24 else None
    if rnd is None:
        abort(404, description=f"there is no round {round_id!r}")
    return rnd


def _card_url(rnd: PlayRound) -> str:
    return url_for("play.round_card", round_id=rnd.id, _external=True)


@bp.get("/api/play/rounds/<round_id>")
@accepts(summary="A round's result card: you vs the model on the same tokens")
def round_result(round_id: str):
    """A round's result (anyone with its random id may see it: it names nobody)."""
    rnd = db.session.get(PlayRound, round_id) if len(round_id) <= 24 else None
    if rnd is None:
        return _error(f"there is no round {round_id!r}", 404)
    result = rounds.round_result(db.session, rnd, _model_display_name())
    mine = rnd.player_id == _player_id(create=False)
    if not mine:  # someone else's round: the scores only, not which tokens they missed
        result["best"] = result["worst"] = None
    return jsonify(
        result=result, share_text=rounds.share_text(result, _card_url(rnd)),
        card_url=_card_url(rnd), mine=mine,
    )


@bp.get("/play/card/<round_id>.svg")
def round_card(round_id: str):
    """The shareable image of a round: scores and a grid of right/wrong, no tokens, no names."""
    rnd = _round_or_404(round_id)
    result = rounds.round_result(db.session, rnd, _model_display_name())
    svg = render_template("play/card.svg", r=result, cells=rounds.card_cells(result))
    return Response(svg, mimetype="image/svg+xml", headers={"Cache-Control": "public, max-age=300"})


@bp.get("/api/play/daily")
@accepts(summary="Today's passage board, the player's streak and nickname")
def daily():
    """Today's board (pseudonymous), the player's streak and whether they played today's passage."""
    player_id = _player_id(create=False)
    day = rounds.today()
    return jsonify(
        board=rounds.daily_board(db.session, day, player_id),
        streak=rounds.streak(db.session, player_id, day),
        nickname=rounds.nickname_of(db.session, player_id),
    )


@bp.post("/api/play/nickname")
@accepts(body=NicknameIn)
def set_nickname():
    """Choose the name shown on the daily board (or get a message saying what to change)."""
    body = parse_body(NicknameIn)
    player_id = _player_id(create=True)
    try:
        name = rounds.set_nickname(db.session, player_id, body.nickname)
    except RoomRuleError as refused:
        db.session.rollback()
        return _error(str(refused), 400)
    return jsonify(nickname=name)


@bp.get("/api/play/stats")
def stats():
    """The player's running scores."""
    player_id = _player_id(create=False)
    empty = {"answered": 0, "correct": 0, "skipped": 0, "model_correct": 0}
    return jsonify(stats=solo.player_stats(db.session, player_id) if player_id else empty)
