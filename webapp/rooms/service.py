"""What a classroom room does, as functions on a database session (no Flask, no Socket.IO).

Everything about a room is in the database (Room, RoomRound, RoomPlayer, Guess.room_id), so any
server process can handle any event of any room; the Socket.IO layer (events.py) only validates
payloads, calls these functions and broadcasts the views they build. The rules themselves
(phases, codes, nicknames) are in state.py, the points in points.py, the guess matching in
webapp.game: this module combines them and never redefines them.
"""

from __future__ import annotations

import hashlib
import math
import random
import secrets
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .. import game
from ..answers import (
    AnswerRefused,
    Match,
    Placement,
    RoomAnswerIn,
    match_token,
    model_view_of_token,
)
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
from . import points
from .state import (
    Phase,
    RoomRuleError,
    new_join_code,
    normalize_join_code,
    transition,
    validate_nickname,
)

MAX_ROUNDS = 30
MAX_PLAYERS = 400
TIMER_RANGE = (5, 600)
# Positions with this much context and no more read well on a projector.
READABLE_POSITIONS = range(6, 61)
LIKELY_PROB = 0.10
CHART_ROWS = 12


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
    session: Session, model: LanguageModel, corpus: str, rounds: int, rng: random.Random
) -> list[Item]:
    """`rounds` scored, playable positions of the corpus, from as many passages as possible.

    Positions with 6-60 tokens of context are preferred (readable on a projector); passages are
    visited in random order, one position each, before any passage gives a second one.
    """
    corpus_row = session.scalar(select(Corpus).where(Corpus.name == corpus))
    if corpus_row is None or corpus_row.purpose != CorpusPurpose.GAME:
        raise RoomRuleError(f"unknown corpus {corpus!r}")
    scored = select(ScoredDocument.document_id).where(ScoredDocument.model_id == model.id)
    rows = session.execute(
        select(Item.id, Item.document_id, Item.position)
        .join(Document, Item.document_id == Document.id)
        .where(Document.corpus_id == corpus_row.id, Item.playable, Document.id.in_(scored))
    ).all()
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
        raise RoomRuleError(
            f"corpus {corpus!r} has only {len(chosen)} playable positions; choose fewer rounds"
        )
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
) -> tuple[Room, str]:
    """A new room in the lobby with one planned round per item; returns (room, host token)."""
    rng = rng or random.SystemRandom()
    if not 1 <= len(items) <= MAX_ROUNDS:
        raise RoomRuleError(f"a room has 1 to {MAX_ROUNDS} rounds")
    host_token = secrets.token_urlsafe(24)
    room = Room(
        code=_new_code(session, rng), host_token_hash=hash_token(host_token), model_id=model_id,
        source=source, corpus_name=corpus_name, status=status, phase=Phase.LOBBY.value,
        round_index=-1, show_histogram=show_histogram, show_leaderboard=show_leaderboard,
        timer_seconds=timer_seconds,
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


@dataclass(frozen=True)
class ItemFacts:
    """What answering needs of an item and its prediction; both never change once scored."""

    token_id: int
    top_k: tuple


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


def item_facts(session: Session, item_id: int, model_id: int) -> ItemFacts:
    def load() -> ItemFacts:
        token_id, top_k = session.execute(
            select(Item.token_id, Prediction.top_k)
            .join(Prediction, Prediction.item_id == Item.id)
            .where(Item.id == item_id, Prediction.model_id == model_id)
        ).one()
        return ItemFacts(token_id, tuple(tuple(e) for e in top_k))

    return _item_facts.get((_database(session), item_id, model_id), load)


def _database(session: Session) -> str:
    """Part of every cache key: ids are only unique within one database (tests use many)."""
    return str(session.get_bind().url)



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


def join(session: Session, room: Room, nickname: object, grace_seconds: int) -> tuple[RoomPlayer, str]:
    """A new seat for a student; returns (seat, secret token for rejoining)."""
    if not isinstance(nickname, str):
        raise RoomRuleError("missing field 'nickname'")
    if room.phase == Phase.FINISHED.value:
        raise RoomRuleError("this room has finished")
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    players = active_players(session, room)
    # A name is held by a seat that is connected or was seen within the grace period.
    taken = {p.nickname for p in players if p.connected or p.last_seen_at >= cutoff}
    name = validate_nickname(nickname, taken)
    if len(players) >= MAX_PLAYERS:
        raise RoomRuleError(f"this room is full ({MAX_PLAYERS} players)")
    token = secrets.token_urlsafe(24)
    player = Player(id=secrets.token_hex(8))
    seat = RoomPlayer(
        room_id=room.id, player_id=player.id, nickname=name, token_hash=hash_token(token),
        connected=True,
    )
    session.add_all([player, seat])
    session.commit()
    return seat, token


def rejoin(session: Session, room: Room, token: object, grace_seconds: int) -> RoomPlayer:
    """The seat a returning browser holds, if it is still valid."""
    if not isinstance(token, str) or not token:
        raise RoomRuleError("missing field 'player_token'")
    seat = session.scalar(
        select(RoomPlayer).where(
            RoomPlayer.token_hash == hash_token(token), RoomPlayer.room_id == room.id
        )
    )
    if seat is None:
        raise RoomRuleError("this browser has no seat in this room: join with a nickname")
    if seat.removed:
        raise RoomRuleError("the host removed you from this room")
    away = utcnow() - seat.last_seen_at
    if not seat.connected and away > timedelta(seconds=grace_seconds):
        raise RoomRuleError("you were away too long and your seat expired: join again")
    seat.connected, seat.last_seen_at = True, utcnow()
    session.commit()
    return seat


def set_disconnected(session: Session, seat_id: int) -> None:
    session.execute(
        update(RoomPlayer).where(RoomPlayer.id == seat_id).values(connected=False, last_seen_at=utcnow())
    )
    session.commit()


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
    for key in ("show_histogram", "show_leaderboard"):
        if key in data:
            if not isinstance(data[key], bool):
                raise RoomRuleError(f"{key} must be true or false")
            setattr(room, key, data[key])
    if "timer_seconds" in data:
        room.timer_seconds = check_timer(data["timer_seconds"])
    session.commit()


# ------------------------------------------------------------------------------ guesses


class RoomPolicy:
    """Answers in a room: only to the open round, while it is open, from a seat in the room.

    Stored before anything about the true token is shown (reveal needs LOCKED, and answers are
    accepted only while ANSWERING)."""

    already_answered = "you already answered this round"

    def __init__(self, room: Room, seat: RoomPlayer, received_at: datetime) -> None:
        self.room = room
        self.seat = seat
        self.received_at = received_at

    def locate(self, session: Session, answer: RoomAnswerIn) -> Placement:
        room = self.room
        if self.seat.removed:
            raise AnswerRefused("the host removed you from this room", 403)
        if room.phase != Phase.ANSWERING.value:
            raise AnswerRefused("answers are closed for this round", 409)
        if answer.round != room.round_index:
            raise AnswerRefused("that round is over; answer the current question", 409)
        deadline = room.deadline
        if deadline is not None and self.received_at > deadline:
            raise AnswerRefused("time is up for this round", 409)
        item_id = round_item_id(session, room.id, room.round_index)
        # An earlier answer this round is found by the unique index when this one is stored.
        facts = item_facts(session, item_id, room.model_id)
        row = {"model_id": room.model_id, "room_id": room.id, "source": AnswerSource.ROOM}
        return Placement(item_id, facts.token_id, facts, row)

    def match(self, answer: RoomAnswerIn, placement: Placement, tokenizer: Tokenizer) -> Match:
        return match_token(answer.text, placement.token_id, tokenizer, answer.skipped)

    def owns(self, guess: Guess, answer: RoomAnswerIn) -> bool:
        return guess.room_id == self.room.id

    def stored(self, session: Session, placement: Placement, guess: Guess) -> None:
        pass


def _round_guesses(session: Session, room: Room, item_id: int) -> list[Guess]:
    """Answers to one round from players still in the room (removed players' rows stay stored)."""
    return list(
        session.scalars(
            select(Guess)
            .join(RoomPlayer, (RoomPlayer.player_id == Guess.player_id) & (RoomPlayer.room_id == room.id))
            .where(Guess.room_id == room.id, Guess.item_id == item_id, RoomPlayer.removed.is_(False))
        )
    )


def histogram(first_token_ids, tokenizer: Tokenizer) -> list[dict]:
    """The class's answers as first tokens, most frequent first (skips, None, are not a token)."""
    counts = points.aggregate_first_tokens(first_token_ids)
    rows = [{**game.token_view(t, tokenizer), "count": c} for t, c in counts.items()]
    return sorted(rows, key=lambda r: (-r["count"], r["text"]))


def answers_view(session: Session, room: Room, tokenizer: Tokenizer) -> dict:
    """How many of the room's players answered the open round, who, and (if shown) what.

    Sent to the host after answers arrive, so it reads two narrow columns instead of whole rows:
    with 200 students answering at once it runs often.
    """
    rnd = current_round(room)
    seats = dict(
        session.execute(
            select(RoomPlayer.player_id, RoomPlayer.id).where(
                RoomPlayer.room_id == room.id, RoomPlayer.removed.is_(False)
            )
        ).all()
    )
    if rnd is None:
        return {"round": None, "answered": 0, "total": len(seats), "histogram": None,
                "answered_player_ids": []}
    rows = [
        (seats[player_id], first_token)
        for player_id, first_token in session.execute(
            select(Guess.player_id, Guess.first_token_id).where(
                Guess.room_id == room.id, Guess.item_id == rnd.item_id
            )
        )
        if player_id in seats
    ]
    return {
        "round": rnd.index,
        "answered": len(rows),
        "total": len(seats),
        "histogram": histogram((t for _, t in rows), tokenizer) if room.show_histogram else None,
        "answered_player_ids": sorted(seat for seat, _ in rows),
    }


# ------------------------------------------------------------------------------- views


def round_view(room: Room) -> dict | None:
    rnd = current_round(room)
    if rnd is None or room.phase in (Phase.LOBBY.value, Phase.FINISHED.value):
        return None
    item = rnd.item
    deadline = room.deadline
    return {
        "index": rnd.index,
        "number": rnd.index + 1,
        "total": len(room.rounds),
        "context": [it.token_text for it in item.document.items if it.position < item.position],
        "deadline": deadline.isoformat() if deadline and room.phase == Phase.ANSWERING.value else None,
    }


def _verdict(prob: float | None) -> str:
    if prob is None:
        return "unlikely"
    return "likely" if prob >= LIKELY_PROB else "plausible"


def reveal_view(session: Session, room: Room, rnd: RoomRound, tokenizer: Tokenizer) -> dict:
    """The truth, the class's distribution beside the model's, and the class's guesses judged."""
    item = rnd.item
    prediction = game.prediction_for(session, item.id, room.model_id)
    guesses = _round_guesses(session, room, item.id)
    answered = [g for g in guesses if not g.skipped]
    counts = points.aggregate_first_tokens(g.first_token_id for g in answered)
    n = sum(counts.values())
    model_top = [e for e in prediction.top_k if not e[3]]
    model_prob = {tid: math.exp(lp) for tid, lp, _t, _c in prediction.top_k}
    texts = {tid: text for tid, _lp, text, _c in prediction.top_k}

    def text_of(tid: int) -> str:
        return texts.get(tid) or game.token_view(tid, tokenizer)["text"]

    candidates = set(counts) | {e[0] for e in model_top[:CHART_ROWS]} | {item.token_id}
    rows = [
        {
            "id": tid, "text": text_of(tid), "class_count": counts.get(tid, 0),
            "class_share": counts.get(tid, 0) / n if n else 0.0,
            "model_prob": model_prob.get(tid), "is_target": tid == item.token_id,
        }
        for tid in candidates
    ]
    rows.sort(key=lambda r: (-max(r["class_share"], r["model_prob"] or 0.0), r["text"]))
    chart = rows[:CHART_ROWS]
    if not any(r["is_target"] for r in chart):
        chart[-1] = next(r for r in rows if r["is_target"])
    judged = [
        {
            "id": tid, "text": text_of(tid), "count": c, "model_prob": model_prob.get(tid),
            "model_rank": model_view_of_token(prediction, tid)[1],
            "verdict": _verdict(model_prob.get(tid)),
        }
        for tid, c in counts.items()
    ]
    judged.sort(key=lambda r: (-(r["model_prob"] or 0.0), -r["count"]))
    return {
        "target": {"id": item.token_id, "text": item.token_text},
        "model_top1": {"id": prediction.top1_id, "text": text_of(prediction.top1_id)},
        "model_correct": prediction.top1_id == item.token_id,
        "answered": len(guesses),
        "correct": sum(1 for g in guesses if g.is_correct),
        "skips": sum(1 for g in guesses if g.skipped),
        "chart": chart,
        "guesses": judged,
        "top_k": len(prediction.top_k),
        "min_top_k_prob": math.exp(prediction.top_k[-1][1]) if prediction.top_k else None,
    }


def _revealed_rounds(room: Room) -> list[RoomRound]:
    return [r for r in room.rounds if r.revealed_at is not None]


def scored_answers(session: Session, room: Room) -> list[tuple[RoomRound, Guess, Prediction]]:
    """Every answer to a revealed round by a player still in the room, with its prediction."""
    revealed = {r.item_id: r for r in _revealed_rounds(room)}
    if not revealed:
        return []
    rows = session.execute(
        select(Guess, Prediction)
        .join(RoomPlayer, (RoomPlayer.player_id == Guess.player_id) & (RoomPlayer.room_id == room.id))
        .join(Prediction, (Prediction.item_id == Guess.item_id) & (Prediction.model_id == room.model_id))
        .where(Guess.room_id == room.id, Guess.item_id.in_(list(revealed)), RoomPlayer.removed.is_(False))
    ).all()
    return [(revealed[g.item_id], g, p) for g, p in rows]


def guess_points(guess: Guess, prediction: Prediction) -> tuple[int, float]:
    """(points, log-score) of one answer, by points.py's definitions."""
    floor = prediction.top_k[-1][1]
    logprob = None if guess.skipped else guess.model_logprob
    return (
        points.points(logprob, floor, guess.is_correct),
        points.model_log_score(logprob, floor),
    )


def leaderboard(session: Session, room: Room, answers=None) -> list[dict]:
    """Players ranked by points over revealed rounds (ties share a rank: 1, 1, 3)."""
    answers = scored_answers(session, room) if answers is None else answers
    totals: dict[str, dict] = {
        seat.player_id: {
            "player_id": seat.id, "nickname": seat.nickname, "points": 0, "correct": 0,
            "answered": 0, "log_scores": [],
        }
        for seat in active_players(session, room)
    }
    for _rnd, guess, prediction in answers:
        row = totals.get(guess.player_id)
        if row is None:
            continue
        pts, log_score = guess_points(guess, prediction)
        row["points"] += pts
        row["correct"] += int(guess.is_correct)
        row["answered"] += 1
        row["log_scores"].append(log_score)
    rows = sorted(totals.values(), key=lambda r: (-r["points"], -r["correct"], r["nickname"].casefold()))
    out, rank, previous = [], 0, None
    for position, row in enumerate(rows, 1):
        key = (row["points"], row["correct"])
        if key != previous:
            rank, previous = position, key
        scores = row.pop("log_scores")
        row["mean_log_score"] = round(sum(scores) / len(scores), 3) if scores else None
        out.append({"rank": rank, **row})
    return out


def plurality_correct(counts: Counter, target: int) -> float:
    """Credit of the class's most common answer: 1 if it is the target; ties share the credit
    (1/k when the target is one of k tied answers); 0 when nobody answered."""
    if not counts:
        return 0.0
    top = max(counts.values())
    tied = [t for t, c in counts.items() if c == top]
    return 1.0 / len(tied) if target in tied else 0.0


def summary(session: Session, room: Room, answers=None) -> dict:
    """Class vs model over the revealed rounds: per round and overall."""
    answers = scored_answers(session, room) if answers is None else answers
    by_round: dict[int, list[tuple[Guess, Prediction]]] = defaultdict(list)
    for rnd, guess, prediction in answers:
        by_round[rnd.index].append((guess, prediction))
    rounds = []
    for rnd in _revealed_rounds(room):
        pairs = by_round.get(rnd.index, [])
        prediction = game.prediction_for(session, rnd.item_id, room.model_id)
        counts = Counter(g.first_token_id for g, _ in pairs if g.first_token_id is not None)
        rounds.append({
            "number": rnd.index + 1,
            "target": rnd.item.token_text,
            "answered": len(pairs),
            "class_accuracy": points.accuracy([g.is_correct for g, _ in pairs]) if pairs else None,
            "plurality_correct": plurality_correct(counts, rnd.item.token_id),
            "model_correct": prediction.top1_id == rnd.item.token_id,
        })
    all_correct = [g.is_correct for _r, g, _p in answers]
    return {
        "rounds": rounds,
        "class_accuracy": points.accuracy(all_correct) if all_correct else None,
        "model_accuracy": (sum(r["model_correct"] for r in rounds) / len(rounds)) if rounds else None,
        "plurality_accuracy": (sum(r["plurality_correct"] for r in rounds) / len(rounds)) if rounds else None,
        "n_players": len({g.player_id for _r, g, _p in answers}),
        "n_answers": len(answers),
    }


def shown_answers(session: Session, room: Room) -> list[tuple[RoomRound, Guess, Prediction]]:
    """The scored answers the room's screens show: only at reveal and at the end.

    Compute once per broadcast and pass to host_state, public_state and feedback."""
    if room.phase in (Phase.REVEAL.value, Phase.FINISHED.value):
        return scored_answers(session, room)
    return []


def feedback(session: Session, room: Room, tokenizer: Tokenizer, answers=None) -> dict[int, dict]:
    """Per seat id, what that student sees after the current round's reveal."""
    rnd = current_round(room)
    if rnd is None or rnd.revealed_at is None:
        return {}
    answers = scored_answers(session, room) if answers is None else answers
    board = leaderboard(session, room, answers)
    by_seat = {row["player_id"]: row for row in board}
    prediction = game.prediction_for(session, rnd.item_id, room.model_id)
    this_round = [(g, p) for r, g, p in answers if r.index == rnd.index]
    share = points.accuracy([g.is_correct for g, _ in this_round]) if this_round else 0.0
    guess_of = {g.player_id: (g, p) for g, p in this_round}
    top1 = next((e for e in prediction.top_k if e[0] == prediction.top1_id), None)
    out = {}
    for seat in active_players(session, room):
        mine = guess_of.get(seat.player_id)
        row = by_seat[seat.id]
        base = {
            "round": rnd.index,
            "target": {"id": rnd.item.token_id, "text": rnd.item.token_text},
            "model_top1": {"id": prediction.top1_id, "text": top1[2] if top1 else ""},
            "total_points": row["points"], "rank": row["rank"], "n_players": len(board),
            "class_share_of_target": share,
        }
        if mine is None:
            out[seat.id] = {**base, "answered": False, "correct": False, "skipped": False,
                            "your_text": None, "your_token": None, "model_prob": None,
                            "model_rank": None, "points": 0}
            continue
        guess, pred = mine
        pts, _ = guess_points(guess, pred)
        out[seat.id] = {
            **base, "answered": True, "correct": guess.is_correct, "skipped": guess.skipped,
            "your_text": guess.raw_text,
            "your_token": game.token_view(guess.first_token_id, tokenizer)
            if guess.first_token_id is not None else None,
            "model_prob": math.exp(guess.model_logprob) if guess.model_logprob is not None else None,
            "model_rank": guess.model_rank, "points": pts,
        }
    return out


def host_state(
    session: Session, room: Room, tokenizer: Tokenizer, join_url: str, scored=None
) -> dict:
    """Everything the projector shows, rebuilt from the database (a reloaded host gets it all)."""
    rnd = current_round(room)
    answers = answers_view(session, room, tokenizer)
    answered_seats = set(answers["answered_player_ids"])
    shown = room.phase in (Phase.REVEAL.value, Phase.FINISHED.value)
    scored = shown_answers(session, room) if scored is None else scored
    return {
        "code": room.code,
        "join_url": join_url,
        "status": room.status,
        "error": room.error,
        "phase": room.phase,
        "round": round_view(room),
        "rounds_total": len(room.rounds),
        "settings": {
            "show_histogram": room.show_histogram, "show_leaderboard": room.show_leaderboard,
            "timer_seconds": room.timer_seconds,
        },
        "players": [
            {"id": s.id, "nickname": s.nickname, "connected": s.connected,
             "answered": s.id in answered_seats}
            for s in active_players(session, room)
        ],
        "answers": answers,
        "reveal": reveal_view(session, room, rnd, tokenizer)
        if room.phase == Phase.REVEAL.value and rnd is not None else None,
        "leaderboard": leaderboard(session, room, scored) if shown and room.show_leaderboard else None,
        "summary": summary(session, room, scored) if room.phase == Phase.FINISHED.value else None,
    }


def public_state(session: Session, room: Room, scored=None) -> dict:
    """What every student's screen may show (no per-student parts)."""
    shown = room.phase in (Phase.REVEAL.value, Phase.FINISHED.value)
    scored = shown_answers(session, room) if scored is None else scored
    return {
        "code": room.code,
        "phase": room.phase,
        "status": room.status,
        "round": round_view(room),
        "n_players": len(active_players(session, room)),
        "leaderboard": leaderboard(session, room, scored) if shown and room.show_leaderboard else None,
        "summary": summary(session, room, scored) if room.phase == Phase.FINISHED.value else None,
    }


def student_state(session: Session, room: Room, seat: RoomPlayer, tokenizer: Tokenizer) -> dict:
    """A student's whole screen, for (re)joining: public state plus their own answer/feedback."""
    scored = shown_answers(session, room)
    state = public_state(session, room, scored)
    rnd = current_round(room)
    mine = None
    if rnd is not None:
        mine = session.scalar(
            select(Guess).where(
                Guess.room_id == room.id, Guess.player_id == seat.player_id,
                Guess.item_id == rnd.item_id,
            )
        )
    fb = None
    if room.phase == Phase.REVEAL.value:
        fb = feedback(session, room, tokenizer, scored).get(seat.id)
    return {
        **state,
        "player_id": seat.id,
        "nickname": seat.nickname,
        "answered": mine is not None,
        "my_answer": {"text": mine.raw_text, "skipped": mine.skipped} if mine else None,
        "feedback": fb,
    }
