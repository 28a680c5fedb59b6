"""What changes a classroom room, as functions on a database session (no Flask, no Socket.IO).

Everything about a room is in the database (Room, RoomRound, RoomPlayer, Guess.room_id), so any
server process can handle any event of any room; the Socket.IO layer (events.py) only validates
payloads, calls these functions and broadcasts what views.py builds. This module holds the
commands: creating a room, finding it, seats joining and leaving, moving through the phases,
changing settings, and RoomPolicy, the room's part of the one answer path (webapp.answers). The
rules themselves (phases, codes, nicknames) are in state.py and the guess matching in
webapp.answers: this module combines them and never redefines them.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from ..answers import (
    AnswerRefused,
    Match,
    Placement,
    RoomAnswerIn,
    expect_kind,
    match_distribution,
    match_pairwise,
    match_token,
)
from ..game import documents_in_open_studies
from ..judgements import Pair, choose_pair, usable_alternatives
from ..lm import Tokenizer
from ..models import (
    AnswerSource,
    Corpus,
    CorpusPurpose,
    Document,
    Guess,
    Item,
    LanguageModel,
    Player,
    Prediction,
    Room,
    RoomPlayer,
    RoomRound,
    RoomStatus,
    ScoredDocument,
    utcnow,
)
from .state import (
    Phase,
    RoomRuleError,
    names_alike,
    new_join_code,
    normalize_join_code,
    transition,
    validate_nickname,
)

MAX_ROUNDS = 30
# What the class answers each round: type the next token, judge which of two tokens came next,
# or spread 100 points over candidates (webapp.judgements).
ANSWER_MODES = ("token", "pairwise", "distribution")
MAX_PLAYERS = 400
TIMER_RANGE = (5, 600)
# Positions with this much context and no more read well on a projector.
READABLE_POSITIONS = range(6, 61)


def hash_token(token: str) -> str:
    """Tokens are stored hashed: a leaked database row cannot be used to drive a room."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------ creating rooms


def check_timer(value: object) -> int | None:
    if value in (None, 0):
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RoomRuleError("timer_seconds must be a whole number of seconds")
    low, high = TIMER_RANGE
    if not low <= value <= high:
        raise RoomRuleError(f"the timer must be between {low} and {high} seconds (or off)")
    return value


def _new_code(session: Session, rng: random.Random) -> str:
    for _ in range(20):
        code = new_join_code(rng)
        if session.scalar(select(Room.id).where(Room.code == code)) is None:
            return code
    raise RuntimeError("could not find a free join code")


def pick_corpus_items(
    session: Session, model: LanguageModel, corpus: str, rounds: int, rng: random.Random,
    pairwise: bool = False,
) -> list[Item]:
    """`rounds` scored, playable positions of the corpus, from as many passages as possible.

    Positions with 6-60 tokens of context are preferred (readable on a projector); passages are
    visited in random order, one position each, before any passage gives a second one. With
    `pairwise`, only positions with a drawn alternative that differs from the true token (there
    is a pair to judge: webapp.judgements.usable_alternatives).
    """
    corpus_row = session.scalar(select(Corpus).where(Corpus.name == corpus))
    if corpus_row is None or corpus_row.purpose != CorpusPurpose.GAME:
        raise RoomRuleError(f"unknown corpus {corpus!r}")
    scored = select(ScoredDocument.document_id).where(ScoredDocument.model_id == model.id)
    query = (
        select(Item.id, Item.document_id, Item.position)
        .join(Document, Item.document_id == Document.id)
        .where(Document.corpus_id == corpus_row.id, Item.playable, Document.id.in_(scored))
        .where(Document.id.not_in(documents_in_open_studies()))  # a study's answers stay hidden
    )
    if pairwise:
        query = (
            query.add_columns(Item.token_id, Prediction.alternatives)
            .join(Prediction, (Prediction.item_id == Item.id) & (Prediction.model_id == model.id))
            .where(Prediction.alternatives.is_not(None))
        )
        found = session.execute(query).all()
        rows = [row[:3] for row in found if usable_alternatives(row[4], row[3])]
        if not rows:
            raise RoomRuleError(
                f"corpus {corpus!r} has no positions with a pair to judge: pairwise rounds need "
                "alternatives drawn when the corpus is scored (import it with "
                "--pairwise-alternatives N, then run `humanlm score`), or choose another mode"
            )
    else:
        rows = session.execute(query).all()
    if not rows:
        raise RoomRuleError(f"corpus {corpus!r} has no scored passages yet: run `humanlm score`")
    by_doc: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for item_id, doc_id, position in rows:
        by_doc[doc_id].append((item_id, position))
    pools = []
    for doc_id in sorted(by_doc):
        items = sorted(by_doc[doc_id], key=lambda r: r[1])
        readable = [r for r in items if r[1] in READABLE_POSITIONS]
        rest = [r for r in items if r[1] not in READABLE_POSITIONS]
        rng.shuffle(readable)
        rng.shuffle(rest)
        pools.append(readable + rest)
    rng.shuffle(pools)
    chosen: list[int] = []
    while len(chosen) < rounds and any(pools):
        for pool in pools:
            if pool and len(chosen) < rounds:
                chosen.append(pool.pop(0)[0])
    if len(chosen) < rounds:
        kind = "positions with a pair to judge" if pairwise else "playable positions"
        raise RoomRuleError(f"corpus {corpus!r} has only {len(chosen)} {kind}; choose fewer rounds")
    items = {it.id: it for it in session.scalars(select(Item).where(Item.id.in_(chosen)))}
    return [items[i] for i in chosen]


def create_room(
    session: Session,
    *,
    items: list[Item],
    source: str,
    corpus_name: str,
    model_id: int | None,
    timer_seconds: int | None,
    show_histogram: bool,
    show_leaderboard: bool,
    status: str = RoomStatus.READY,
    rng: random.Random | None = None,
    answer_mode: str = "token",
) -> tuple[Room, str]:
    """A new room in the lobby with one planned round per item; returns (room, host token)."""
    rng = rng or random.SystemRandom()
    if not 1 <= len(items) <= MAX_ROUNDS:
        raise RoomRuleError(f"a room has 1 to {MAX_ROUNDS} rounds")
    if answer_mode not in ANSWER_MODES:
        raise RoomRuleError(f"answer_mode must be one of {', '.join(ANSWER_MODES)}")
    host_token = secrets.token_urlsafe(24)
    room = Room(
        code=_new_code(session, rng), host_token_hash=hash_token(host_token), model_id=model_id,
        source=source, corpus_name=corpus_name, status=status, phase=Phase.LOBBY.value,
        round_index=-1, show_histogram=show_histogram, show_leaderboard=show_leaderboard,
        timer_seconds=timer_seconds, answer_mode=answer_mode,
    )
    room.rounds = [RoomRound(index=i, item_id=item.id) for i, item in enumerate(items)]
    session.add(room)
    session.commit()
    return room, host_token


def mark_ready(session: Session, room_id: int, model_id: int) -> None:
    session.execute(
        update(Room).where(Room.id == room_id).values(status=RoomStatus.READY, model_id=model_id, error=None)
    )
    session.commit()


def mark_failed(session: Session, room_id: int, message: str) -> None:
    session.execute(update(Room).where(Room.id == room_id).values(status=RoomStatus.FAILED, error=message))
    session.commit()


# ----------------------------------------------------------------------------- finding things


@dataclass(frozen=True, eq=False)
class RoundItemFacts:
    """What answering needs of an item and its prediction; both never change once scored.
    Duck-types the Prediction that the answer path reads (top_k, target_logprob)."""

    token_id: int
    top_k: tuple
    target_logprob: float | None = None
    alternatives: dict | None = None  # the pairwise game's drawn tokens (Prediction.alternatives)


class _FactCache:
    """A small per-process cache of immutable rows, so an answer costs fewer queries."""

    def __init__(self, size: int = 4096) -> None:
        self._values: dict = {}
        self._size = size
        self._lock = threading.Lock()

    def get(self, key, load):
        value = self._values.get(key)
        if value is None:
            value = load()
            with self._lock:
                if len(self._values) >= self._size:
                    self._values.clear()
                self._values[key] = value
        return value


_round_items = _FactCache()
_item_facts = _FactCache()


def round_item_id(session: Session, room_id: int, index: int) -> int:
    """The item asked in round `index` of a room (planned at creation, never changed)."""
    return _round_items.get(
        (_database(session), room_id, index),
        lambda: session.scalar(
            select(RoomRound.item_id).where(RoomRound.room_id == room_id, RoomRound.index == index)
        ),
    )


def item_facts(session: Session, item_id: int, model_id: int) -> RoundItemFacts:
    def load() -> RoundItemFacts:
        token_id, top_k, target_logprob, alternatives = session.execute(
            select(Item.token_id, Prediction.top_k, Prediction.target_logprob, Prediction.alternatives)
            .join(Prediction, Prediction.item_id == Item.id)
            .where(Item.id == item_id, Prediction.model_id == model_id)
        ).one()
        return RoundItemFacts(token_id, tuple(tuple(e) for e in top_k), target_logprob, alternatives)

    return _item_facts.get((_database(session), item_id, model_id), load)


def _database(session: Session) -> str:
    """Part of every cache key: ids are only unique within one database (tests use many)."""
    return str(session.get_bind().url)


def room_pair(room_id: int, item_id: int, facts: RoundItemFacts, secret: bytes) -> Pair | None:
    """The pair the whole class judges in a pairwise round: the same for every seat (one key per
    room and item), chosen under the server's secret so the original's side cannot be worked out
    from the scheme; None when the position has no usable alternative."""
    return choose_pair(facts.alternatives, facts.token_id, f"room:{room_id}:{item_id}", secret)


def get_room(session: Session, code: object) -> Room:
    if not isinstance(code, str):
        raise RoomRuleError("missing field 'code'")
    room = session.scalar(select(Room).where(Room.code == normalize_join_code(code)))
    if room is None:
        raise RoomRuleError(f"there is no room {code.strip().upper()!r}: check the code")
    return room


def check_host(room: Room, host_token: object) -> None:
    if not isinstance(host_token, str) or hash_token(host_token) != room.host_token_hash:
        raise RoomRuleError("only the host of this room can do that")


def current_round(room: Room) -> RoomRound | None:
    if 0 <= room.round_index < len(room.rounds):
        return room.rounds[room.round_index]
    return None


def active_players(session: Session, room: Room) -> list[RoomPlayer]:
    return list(
        session.scalars(
            select(RoomPlayer)
            .where(RoomPlayer.room_id == room.id, RoomPlayer.removed.is_(False))
            .order_by(RoomPlayer.id)
        )
    )


# ---------------------------------------------------------------------------- players


def seat_is_held(seat: RoomPlayer, now: datetime, grace_seconds: int) -> bool:
    """Whether a seat still belongs to its student: its token brings the phone back and nobody
    else may take its name. True while the phone is connected and for `grace_seconds` after it
    left; one rule for join and rejoin, so a name is never free while its owner can return."""
    if seat.removed:
        return False
    return seat.connected or now - seat.last_seen_at <= timedelta(seconds=grace_seconds)


def _duration(seconds: int) -> str:
    if seconds >= 120:
        return f"{seconds // 60} minutes"
    return f"{seconds} seconds"


# Joins in this process check the names and store the seat one at a time (a cheap lock: joins
# are rare); joins racing on another process are caught by the check after the insert.
_join_lock = threading.Lock()


def join(
    session: Session, room: Room, nickname: object, grace_seconds: int, *,
    joins_locked: bool = False, one_seat: RoomRuleError | None = None,
) -> tuple[RoomPlayer, str]:
    """A new seat for a student; returns (seat, secret token for rejoining).

    The name must not look like the name of a held seat (state.nickname_keys). Seats that
    expired and look like the new name leave the room (removed), so the class never sees two
    seats with one name; their answers stay stored. `one_seat`, when the connection already
    holds a seat, is raised once the name itself passed (so a wrong name is named first).
    """
    if not isinstance(nickname, str):
        raise RoomRuleError("missing field 'nickname'")
    if room.phase == Phase.FINISHED.value:
        raise RoomRuleError("this room has finished")
    if joins_locked:
        raise RoomRuleError(
            "the host has locked this room: nobody new can join. If this phone had a seat, "
            "reload the page to get it back"
        )
    with _join_lock:
        now = utcnow()
        players = active_players(session, room)
        held = [p for p in players if seat_is_held(p, now, grace_seconds)]
        name = validate_nickname(nickname, {p.nickname for p in held})
        if one_seat is not None:
            raise one_seat
        if len(players) >= MAX_PLAYERS:
            raise RoomRuleError(f"this room is full ({MAX_PLAYERS} players)")
        for old in players:
            if not seat_is_held(old, now, grace_seconds) and names_alike(old.nickname, name):
                old.removed = True  # expired: its owner can no longer come back
        token = secrets.token_urlsafe(24)
        player = Player(id=secrets.token_hex(8))
        seat = RoomPlayer(
            room_id=room.id, player_id=player.id, nickname=name, token_hash=hash_token(token),
            connected=True, joined_at=now, last_seen_at=now,
        )
        session.add_all([player, seat])
        session.commit()
    rival = next(
        (p for p in active_players(session, room)
         if p.id < seat.id and seat_is_held(p, now, grace_seconds)
         and names_alike(p.nickname, name)),
        None,
    )
    if rival is not None:  # another process seated the same name at the same moment
        session.delete(seat)
        session.delete(player)
        session.commit()
        raise RoomRuleError(f"someone is already called {rival.nickname!r}: add a letter or a number")
    return seat, token


def rejoin(
    session: Session, room: Room, token: object, grace_seconds: int, *,
    one_seat: RoomRuleError | None = None, own_seat: int | None = None,
) -> RoomPlayer:
    """The seat a returning browser holds, if it is still valid (seat_is_held). `one_seat` is
    raised when the connection already holds a seat other than `own_seat` (taking the same
    seat again is fine: a client that rejoins on every connect)."""
    if not isinstance(token, str) or not token:
        raise RoomRuleError("missing field 'player_token'")
    seat = session.scalar(
        select(RoomPlayer).where(
            RoomPlayer.token_hash == hash_token(token), RoomPlayer.room_id == room.id
        )
    )
    if seat is None:
        raise RoomRuleError("this browser has no seat in this room: join with a nickname")
    now = utcnow()
    expired = not seat.connected and now - seat.last_seen_at > timedelta(seconds=grace_seconds)
    if expired:
        raise RoomRuleError(
            f"you were away longer than {_duration(grace_seconds)}, so your seat expired and "
            f"the name {seat.nickname!r} may now belong to someone else: join again with a nickname"
        )
    if seat.removed:
        raise RoomRuleError("the host removed you from this room")
    if one_seat is not None and seat.id != own_seat:
        raise one_seat
    seat.connected, seat.last_seen_at = True, now
    session.commit()
    return seat


def set_disconnected(session: Session, seat_id: int, since: datetime | None = None) -> bool:
    """Mark a seat away from now on, unless another connection took it after `since` (the time
    the closing connection took it): a phone that changed network rejoins on a new connection
    before the old one times out, and the old one's late goodbye must not make it look away."""
    query = update(RoomPlayer).where(RoomPlayer.id == seat_id)
    if since is not None:
        query = query.where(RoomPlayer.last_seen_at <= since)
    changed = session.execute(query.values(connected=False, last_seen_at=utcnow())).rowcount
    session.commit()
    return changed == 1


def mark_all_away(session: Session) -> int:
    """After a restart nobody is connected to this server yet: every seat reads away, and its
    grace period counts from now (the phones could not reach a dead server)."""
    changed = session.execute(
        update(RoomPlayer).where(RoomPlayer.connected.is_(True))
        .values(connected=False, last_seen_at=utcnow())
    ).rowcount
    session.commit()
    return changed


def remove_player(session: Session, room: Room, seat_id: object) -> RoomPlayer:
    if isinstance(seat_id, bool) or not isinstance(seat_id, int):
        raise RoomRuleError("missing field 'player_id'")
    seat = session.get(RoomPlayer, seat_id)
    if seat is None or seat.room_id != room.id or seat.removed:
        raise RoomRuleError("there is no such player in this room")
    seat.removed = True
    session.commit()
    return seat


# ------------------------------------------------------------------------------ phases


def apply_action(session: Session, room: Room, action: object, now: datetime | None = None) -> Phase:
    """Move the room on (start, lock, reveal, next, finish) with a compare-and-set update.

    Compare-and-set on (phase, round_index): when a timer and the host lock at the same moment,
    or two workers race, exactly one succeeds and the other gets a clear error.
    """
    if not isinstance(action, str):
        raise RoomRuleError("missing field 'action'")
    if room.status != RoomStatus.READY:
        raise RoomRuleError(
            "the room is still being prepared" if room.status == RoomStatus.PREPARING
            else f"the room could not be prepared: {room.error}"
        )
    now = now or utcnow()
    old_phase = Phase(room.phase)
    new_phase = transition(old_phase, action)
    values: dict = {"phase": new_phase.value}
    index = room.round_index
    stamp: dict = {}
    if action in ("start", "next"):
        index += 1
        if index >= len(room.rounds):
            raise RoomRuleError("that was the last round: finish the room")
        values["round_index"] = index
        values["deadline"] = now + timedelta(seconds=room.timer_seconds) if room.timer_seconds else None
        stamp = {"opened_at": now}
    elif action == "lock":
        values["deadline"] = None
        stamp = {"locked_at": now}
    elif action == "reveal":
        stamp = {"revealed_at": now}
    elif action == "finish":
        values["finished_at"] = now
    result = session.execute(
        update(Room)
        .where(Room.id == room.id, Room.phase == old_phase.value, Room.round_index == room.round_index)
        .values(**values)
    )
    if result.rowcount != 1:
        session.rollback()
        raise RoomRuleError("the room moved on meanwhile; look at the screen and try again")
    if stamp:
        session.execute(
            update(RoomRound).where(RoomRound.room_id == room.id, RoomRound.index == index).values(**stamp)
        )
    session.commit()
    session.refresh(room)
    return new_phase


def update_settings(session: Session, room: Room, data: dict) -> None:
    for key in ("show_histogram", "show_leaderboard", "joins_locked"):
        if key in data:
            if not isinstance(data[key], bool):
                raise RoomRuleError(f"{key} must be true or false")
            setattr(room, key, data[key])
    if "timer_seconds" in data:
        room.timer_seconds = check_timer(data["timer_seconds"])
    session.commit()


# ------------------------------------------------------------------------------ answers


@dataclass(frozen=True)
class AnsweringSeat:
    """What answering needs of a room and of the seat answering in it, read in one query.

    Why not the ORM rows: when a class of 200 answers at once, each answer's two entity loads
    (the whole Room and the whole RoomPlayer) were a quarter of its server time."""

    room_id: int
    code: str
    phase: str
    round_index: int
    deadline: datetime | None
    model_id: int
    answer_mode: str  # token | pairwise | distribution (Room.answer_mode)
    seat_id: int
    player_id: str
    removed: bool


# Built once: constructing the statement was a third of the query's cost per answer.
_ANSWERING_SEAT = (
    select(Room.id, Room.code, Room.phase, Room.round_index, Room.deadline, Room.model_id,
           Room.answer_mode, RoomPlayer.id, RoomPlayer.player_id, RoomPlayer.removed)
    .join(RoomPlayer, RoomPlayer.room_id == Room.id)
    .where(Room.code == bindparam("code"), RoomPlayer.id == bindparam("seat_id"))
)


def answering_seat(session: Session, code: object, seat_id: int) -> AnsweringSeat:
    """The room `code` and seat `seat_id` as of now (RoomRuleError for an unknown room)."""
    if not isinstance(code, str):
        raise RoomRuleError("missing field 'code'")
    row = session.execute(
        _ANSWERING_SEAT, {"code": normalize_join_code(code), "seat_id": seat_id}
    ).one_or_none()
    if row is None:
        get_room(session, code)  # names an unknown room; a known one lacks this seat
        raise RoomRuleError("join the room before answering")
    return AnsweringSeat(*row)


class RoomPolicy:
    """Answers in a room: only to the open round, while it is open, from a seat in the room, of
    the kind the room asks for (its answer_mode: a typed token, a pairwise judgement of the pair
    the whole class sees, or a stated distribution).

    Stored before anything about the true token is shown (reveal needs LOCKED, and answers are
    accepted only while ANSWERING)."""

    already_answered = "you already answered this round"

    def __init__(self, seat: AnsweringSeat, received_at: datetime, secret: bytes = b"") -> None:
        self.seat = seat
        self.received_at = received_at
        self.secret = secret  # keys the class's pair in pairwise rooms (room_pair)

    def locate(self, session: Session, answer: RoomAnswerIn) -> Placement:
        room = self.seat
        if room.removed:
            raise AnswerRefused("the host removed you from this room", 403)
        if room.phase != Phase.ANSWERING.value:
            raise AnswerRefused("answers are closed for this round", 409)
        if answer.round != room.round_index:
            raise AnswerRefused("that round is over; answer the current question", 409)
        deadline = room.deadline
        if deadline is not None and self.received_at > deadline:
            raise AnswerRefused("time is up for this round", 409)
        item_id = round_item_id(session, room.room_id, room.round_index)
        # An earlier answer this round is found by the unique index when this one is stored.
        facts = item_facts(session, item_id, room.model_id)
        row = {"model_id": room.model_id, "room_id": room.room_id, "source": AnswerSource.ROOM}
        pair = None
        if room.answer_mode == "pairwise":
            pair = room_pair(room.room_id, item_id, facts, self.secret)
        return Placement(item_id, facts.token_id, facts, row, context=pair)

    def match(self, answer: RoomAnswerIn, placement: Placement, tokenizer: Tokenizer) -> Match:
        mode = self.seat.answer_mode
        if mode == "pairwise":
            return match_pairwise(answer, placement.context, placement.prediction.target_logprob)
        if mode == "distribution":
            return match_distribution(answer, placement.token_id, tokenizer, placement.prediction)
        expect_kind(answer, "token")
        return match_token(answer.text, placement.token_id, tokenizer, answer.skipped)

    def owns(self, guess: Guess, answer: RoomAnswerIn) -> bool:
        return guess.room_id == self.seat.room_id

    def stored(self, session: Session, placement: Placement, guess: Guess) -> None:
        pass

