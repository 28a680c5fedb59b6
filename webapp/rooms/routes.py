"""HTTP side of classroom rooms: the set-up, host and student pages, room creation, the QR code.

Creating a room from the teacher's own prompts returns at once with status "preparing"; the
prompts are scored in a background task and the host page hears `host_state` when they are ready
(or failed). The live game itself runs over Socket.IO (events.py).
"""

from __future__ import annotations

import io
import random
from typing import Literal

from flask import abort, current_app, jsonify, render_template, request, url_for
from pydantic import Field
from sqlalchemy import func, select

from .. import game
from ..answers import DbInt, Payload, SafeStr
from ..api import accepts, error, model_display_name, parse_body
from ..extensions import db, limiter, socketio
from ..lm import load_tokenizer
from ..models import Corpus, CorpusPurpose, Document, Room, RoomStatus, ScoredDocument
from . import bp, commands, guards
from .network import JoinBase, join_base
from .prompts import parse_prompts, prompt_model, score_prompt_documents, store_prompts
from .state import RoomRuleError, normalize_join_code

DEFAULT_ROUNDS = 5


def _join_base() -> JoinBase:
    """Where phones join (network.py): HUMANLM_PUBLIC_URL, else the teacher's address unless it
    is 127.0.0.1, else this machine's network address when the server listens on the network."""
    return join_base(current_app.config.get("PUBLIC_URL"), current_app.config.get("HOST"),
                     request.host_url)


def _room_or_404(code: str) -> Room:
    try:
        room = db.session.scalar(select(Room).where(Room.code == normalize_join_code(code)))
    except RoomRuleError:
        room = None
    if room is None:
        abort(404, description=f"there is no room {code!r}")
    return room


# -------------------------------------------------------------------------------------- pages


@bp.get("/rooms/new")
def new_room_page():
    model = game.active_model(db.session, current_app.config["MODEL"])
    corpora = []
    if model is not None:
        scored = select(ScoredDocument.document_id).where(ScoredDocument.model_id == model.id)
        rows = db.session.execute(
            select(Corpus.name, func.count(Document.id), Corpus.pairwise_alternatives)
            .join(Document, Document.corpus_id == Corpus.id)
            .where(Corpus.purpose == CorpusPurpose.GAME, Document.id.in_(scored))
            .group_by(Corpus.name, Corpus.pairwise_alternatives)
            .order_by(Corpus.name)
        ).all()
        # pairwise rounds need alternatives drawn at scoring time (the corpus asks for them)
        corpora = [{"name": name, "n_scored_documents": n, "pairwise": bool(alternatives)}
                   for name, n, alternatives in rows]
    return render_template(
        "rooms/new.html", corpora=corpora, model_name=model_display_name(),
        default_rounds=DEFAULT_ROUNDS, join=_join_base(),
    )


@bp.get("/rooms/<code>/host")
def host_page(code: str):
    room = _room_or_404(code)
    join = _join_base()
    # Again at every load: a server restarted with `make class` (or on another network) gives
    # the room the address phones can reach now; the QR code and host_state read it.
    if room.join_url != _join_url(join, room.code):
        room.join_url = _join_url(join, room.code)
        db.session.commit()
    return render_template(
        "rooms/host.html", code=room.code, join_url=room.join_url, join=join,
        model_name=model_display_name(),
    )


@bp.get("/join")
@bp.get("/join/<code>")
def student_page(code: str = ""):
    return render_template(
        "rooms/student.html", code=code.strip().upper()[:12], model_name=model_display_name()
    )


@bp.get("/rooms/<code>/qr.svg")
def qr_code(code: str):
    """The join URL as a QR code, in SVG so it stays sharp on a projector."""
    import qrcode
    import qrcode.image.svg

    room = _room_or_404(code)
    image = qrcode.make(room.join_url, image_factory=qrcode.image.svg.SvgPathImage, border=2)
    buffer = io.BytesIO()
    image.save(buffer)
    return current_app.response_class(buffer.getvalue(), mimetype="image/svg+xml")


# ---------------------------------------------------------------------------------------- API


@bp.get("/api/rooms/<code>")
def room_info(code: str):
    """A room's phase and number of players (what the join page checks)."""
    room = _room_or_404(code)
    n_players = len(commands.active_players(db.session, room))
    return jsonify(code=room.code, phase=room.phase, status=room.status, n_players=n_players)


class RoomCreateIn(Payload):
    """POST /api/rooms: a room from a corpus (`corpus`, `rounds`) or from the teacher's own
    `prompts` (one per line; the last token of a line, or the first after a `|`, is asked)."""

    source: Literal["corpus", "prompts"]
    corpus: SafeStr | None = Field(default=None, max_length=100)
    rounds: int = Field(default=DEFAULT_ROUNDS, ge=1, le=commands.MAX_ROUNDS)
    prompts: SafeStr | None = Field(default=None, max_length=20_000)
    timer_seconds: DbInt | None = Field(default=None, description="seconds per round; 0 or null: off")
    show_histogram: bool = True
    show_leaderboard: bool = True
    answer_mode: Literal["token", "pairwise", "distribution"] = Field(
        default="token",
        description="token: type the next token; pairwise: say which of two tokens came next "
                    "(corpus rooms only: the alternatives are drawn when a corpus is scored); "
                    "distribution: spread 100 points over up to five candidates.",
    )


class QueueFull(Exception):
    """The prompts waiting to be scored in this process are at their bound."""


def _prompt_limits() -> str:
    return guards.setting(current_app.config, "ROOM_PROMPT_LIMITS")


def _not_from_prompts() -> bool:
    """Only rooms from the teacher's own prompts count against ROOM_PROMPT_LIMITS: they make the
    model work; a corpus room reads stored predictions. A body that is no JSON is refused by
    the route itself."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        return True
    return not (isinstance(body, dict) and body.get("source") == "prompts")


@bp.post("/api/rooms")
@limiter.limit(
    _prompt_limits, exempt_when=_not_from_prompts,
    error_message="too many rooms from your own prompts from your network (each one is scored "
    "by the model): wait a minute and try again, or pick a corpus",
)
@accepts(body=RoomCreateIn)
def create_room():
    """Create a room; returns its join code and the host's secret token."""
    body = parse_body(RoomCreateIn)
    try:
        timer = commands.check_timer(body.timer_seconds)
        if body.source == "corpus":
            room, token = _room_from_corpus(body, timer)
        else:
            room, token = _room_from_prompts(body, timer)
    except RoomRuleError as exc:
        db.session.rollback()
        return error(exc.message, 400)
    except QueueFull as exc:
        # 429 with Retry-After: the client may come back; nothing was stored.
        response, status = error(str(exc), 429)
        response.headers["Retry-After"] = "30"
        return response, status
    return jsonify(
        code=room.code, host_token=token, status=room.status, join_url=room.join_url,
        host_url=url_for("rooms.host_page", code=room.code),
    ), 201


def _room_from_corpus(body: RoomCreateIn, timer):
    if body.corpus is None:
        raise RoomRuleError("missing field 'corpus'")
    model = game.active_model(db.session, current_app.config["MODEL"])
    if model is None:
        abort(503, description="no passages are scored yet: run `humanlm score` (or `make run`)")
    items = commands.pick_corpus_items(
        db.session, model, body.corpus, body.rounds, random.SystemRandom(),
        pairwise=body.answer_mode == "pairwise",
    )
    room, token = commands.create_room(
        db.session, items=items, source="corpus", corpus_name=body.corpus, model_id=model.id,
        timer_seconds=timer, show_histogram=body.show_histogram,
        show_leaderboard=body.show_leaderboard, answer_mode=body.answer_mode,
    )
    _set_join_url(room)
    return room, token


def _room_from_prompts(body: RoomCreateIn, timer):
    if body.prompts is None:
        raise RoomRuleError("missing field 'prompts'")
    if body.answer_mode == "pairwise":
        raise RoomRuleError(
            "pairwise rounds need alternatives the model draws when a corpus is scored, and your "
            "own prompts have none: pick passages from a corpus, or another kind of answer"
        )
    parsed = parse_prompts(body.prompts)
    capacity = guards.setting(current_app.config, "ROOM_PROMPT_QUEUE")
    if not guards.prompt_queue.reserve(len(parsed), capacity):
        raise QueueFull(
            f"the server is busy scoring other rooms' prompts ({guards.prompt_queue.waiting} "
            "waiting): try again in a minute, or pick a corpus"
        )
    try:
        tokenizer = load_tokenizer(current_app.config["MODEL"])
        items = store_prompts(db.session, parsed, tokenizer)
        room, token = commands.create_room(
            db.session, items=items, source="prompts", corpus_name="", model_id=None,
            timer_seconds=timer, show_histogram=body.show_histogram,
            show_leaderboard=body.show_leaderboard, status=RoomStatus.PREPARING,
            answer_mode=body.answer_mode,
        )
        _set_join_url(room)
    except BaseException:
        guards.prompt_queue.release(len(parsed))
        raise
    start_preparing(
        current_app._get_current_object(), room.id, sorted({item.document_id for item in items}),
        reserved=len(parsed),
    )
    return room, token


def start_preparing(app, room_id: int, document_ids: list[int], reserved: int) -> None:
    """Score a prompt room in the background; `reserved` places in the prompt queue are given
    back when it ends."""
    socketio.start_background_task(_prepare_prompts, app, room_id, document_ids, reserved)


def _join_url(join: JoinBase, code: str) -> str:
    return f"{join.url}/join/{code}"


def _set_join_url(room: Room) -> None:
    room.join_url = _join_url(_join_base(), room.code)
    db.session.commit()


def _prepare_prompts(app, room_id: int, document_ids: list[int], reserved: int = 0) -> None:
    """Background task: score the prompts, mark the room ready (or failed), tell the host; then
    give the room's places in the prompt queue back, whatever happened."""
    try:
        _score_and_tell(app, room_id, document_ids)
    finally:
        guards.prompt_queue.release(reserved)


def _score_and_tell(app, room_id: int, document_ids: list[int]) -> None:
    from .events import broadcast_state

    with app.app_context():
        session = db.new_session()
        try:
            model = prompt_model(app.config["MODEL"], app.config["N_THREADS"])
            model_id = score_prompt_documents(session, model, app.config["TOP_K"], document_ids)
            commands.mark_ready(session, room_id, model_id)
        except Exception as exc:  # any failure is shown to the host, not lost in a log
            app.logger.exception("scoring room prompts failed")
            session.rollback()
            commands.mark_failed(session, room_id, f"the model could not score the prompts ({exc})")
        finally:
            session.close()
        try:
            room = db.session.get(Room, room_id)
            if room is not None:  # gone (deleted, or this process now serves another database)
                broadcast_state(room, students=True)
        finally:
            db.session.remove()
