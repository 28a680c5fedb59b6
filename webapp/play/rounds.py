"""Short rounds of the solo game, the daily passage, its board and the player's streak (no Flask).

A round is ROUND_SIZE positions ending on a result card: the player against the model on the
same tokens. A daily round plays the first ROUND_SIZE playable positions of the day's passage,
the same for everyone: chosen by the UTC date from the public game passages (never a passage of
an open study). Difficulty picks positions by the model's stored prediction entropy only, which
says how sure the model was, not what the next token is.

Nothing here shows a true token before the player's answer for it is stored: results and cards
are built from stored answers of the round.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..game import documents_in_open_studies
from ..models import (
    Corpus,
    CorpusPurpose,
    Document,
    Guess,
    Item,
    LanguageModel,
    PlayerNickname,
    PlayRound,
    PlayRoundGuess,
    Prediction,
    ScoredDocument,
)
from ..rooms.state import validate_nickname

ROUND_SIZE = 10
DIFFICULTIES = ("any", "easy", "hard")
# Entropy of the model's next-token distribution, in nats: below EASY_MAX the model was
# confident (a clear favourite), above HARD_MIN it was unsure (many plausible tokens).
EASY_MAX_ENTROPY = 1.5
HARD_MIN_ENTROPY = 3.0
BOARD_SIZE = 20


def today() -> date:
    return datetime.now(UTC).date()


# ------------------------------------------------------------------------------ which positions


def difficulty_items(model_id: int, difficulty: str):
    """Ids of items (a SELECT for `in_`) whose stored prediction fits the difficulty, or None."""
    if difficulty == "easy":
        cond = Prediction.entropy < EASY_MAX_ENTROPY
    elif difficulty == "hard":
        cond = Prediction.entropy > HARD_MIN_ENTROPY
    else:
        return None
    return select(Prediction.item_id).where(Prediction.model_id == model_id, cond)


def daily_document(session: Session, model: LanguageModel, day: date) -> Document | None:
    """The day's passage: the same for everyone, chosen from the scored public game passages
    by a hash of the date (stable while the set of passages stays the same)."""
    scored = select(ScoredDocument.document_id).where(ScoredDocument.model_id == model.id)
    playable = select(Item.document_id).where(Item.playable)
    ids = list(
        session.scalars(
            select(Document.id)
            .join(Corpus)
            .where(Corpus.purpose == CorpusPurpose.GAME)
            .where(Document.id.in_(scored), Document.id.in_(playable))
            .where(Document.id.not_in(documents_in_open_studies()))
            .order_by(Document.id)
        )
    )
    if not ids:
        return None
    digest = hashlib.sha256(f"humanlm-daily-{day.isoformat()}".encode()).digest()
    return session.get(Document, ids[int.from_bytes(digest[:8], "big") % len(ids)])


def daily_item_ids(document: Document) -> list[int]:
    """The positions of a daily round: the passage's first ROUND_SIZE playable ones."""
    return [item.id for item in document.items if item.playable][:ROUND_SIZE]


def allowed_items(session: Session, rnd: PlayRound | None, model_id: int):
    """Which items the round may ask next (a list, a SELECT, or None for any)."""
    if rnd is None:
        return None
    if rnd.kind == "daily":
        document = session.get(Document, rnd.document_id) if rnd.document_id else None
        return daily_item_ids(document) if document is not None else []
    return difficulty_items(model_id, rnd.difficulty)


# ---------------------------------------------------------------------------------- the round


def open_round(session: Session, player_id: str) -> PlayRound | None:
    """The player's unfinished round, if any (the newest)."""
    return session.scalar(
        select(PlayRound)
        .where(PlayRound.player_id == player_id, PlayRound.finished_at.is_(None))
        .order_by(PlayRound.created_at.desc())
        .limit(1)
    )


def finish(session: Session, rnd: PlayRound) -> None:
    """End a round: kept with its answers, or dropped when it has none."""
    if not rnd.answers:
        session.delete(rnd)
    else:
        rnd.finished_at = datetime.now(UTC)


def start_round(
    session: Session, player_id: str, model: LanguageModel, *, daily: bool, difficulty: str,
    day: date | None = None,
) -> PlayRound | None:
    """A new round (None when the daily passage is missing or the player has no open position
    of it left). Not committed."""
    if daily:
        day = day or today()
        document = daily_document(session, model, day)
        if document is None:
            return None
        ids = daily_item_ids(document)
        answered = set(
            session.scalars(select(Guess.item_id).where(Guess.player_id == player_id, Guess.item_id.in_(ids)))
        )
        size = len([i for i in ids if i not in answered])
        if size == 0:
            return None
        rnd = PlayRound(
            id=secrets.token_urlsafe(9), player_id=player_id, kind="daily", day=day.isoformat(),
            difficulty="any", size=size, document_id=document.id,
        )
    else:
        rnd = PlayRound(
            id=secrets.token_urlsafe(9), player_id=player_id, kind="free", day=None,
            difficulty=difficulty if difficulty in DIFFICULTIES else "any", size=ROUND_SIZE,
        )
    session.add(rnd)
    return rnd


def attach(rnd: PlayRound, guess: Guess) -> None:
    """Count a stored answer in its round (commits together with the answer)."""
    rnd.answers.append(PlayRoundGuess(guess=guess))
    if len(rnd.answers) >= rnd.size:
        rnd.finished_at = datetime.now(UTC)


def round_info(rnd: PlayRound) -> dict:
    """What the page shows about the round while playing (no true tokens)."""
    return {
        "id": rnd.id, "kind": rnd.kind, "day": rnd.day, "difficulty": rnd.difficulty,
        "size": rnd.size, "answered": len(rnd.answers), "finished": rnd.finished_at is not None,
    }


# --------------------------------------------------------------------------------- the result


def _calls(session: Session, rnd: PlayRound, model_id: int | None) -> list[dict]:
    calls = []
    for link in rnd.answers:
        guess = link.guess
        item = guess.item
        prediction = session.scalar(
            select(Prediction).where(
                Prediction.item_id == item.id, Prediction.model_id == (guess.model_id or model_id)
            )
        )
        calls.append({
            "you": "skip" if guess.skipped else "right" if guess.is_correct else "wrong",
            "model_right": bool(prediction and prediction.top1_id == item.token_id),
            "target": item.token_text,
            "guess": None if guess.skipped else guess.raw_text,
            "target_prob": math.exp(prediction.target_logprob) if prediction else None,
            "guess_prob": math.exp(guess.model_logprob) if guess.model_logprob is not None else None,
        })
    return calls


def round_result(session: Session, rnd: PlayRound, model_name: str) -> dict:
    """The result card: you vs the model on the round's tokens, your best and worst calls."""
    calls = _calls(session, rnd, None)
    right = [c for c in calls if c["you"] == "right"]
    missed = [c for c in calls if c["you"] != "right"]
    prob = lambda c: c["target_prob"] if c["target_prob"] is not None else 0.0
    best = min(right, key=prob) if right else None  # the token the model found least likely
    worst = max(missed, key=prob) if missed else None  # the miss the model found most likely
    document = session.get(Document, rnd.document_id) if rnd.document_id else None
    return {
        "id": rnd.id,
        "kind": rnd.kind,
        "day": rnd.day,
        "difficulty": rnd.difficulty,
        "size": rnd.size,
        "answered": len(calls),
        "finished": rnd.finished_at is not None,
        "you_correct": len(right),
        "model_correct": sum(1 for c in calls if c["model_right"]),
        "skipped": sum(1 for c in calls if c["you"] == "skip"),
        "calls": [{"you": c["you"], "model_right": c["model_right"]} for c in calls],
        "best": best and {k: best[k] for k in ("target", "guess", "target_prob")},
        "worst": worst and {k: worst[k] for k in ("target", "guess", "target_prob", "you")},
        "passage": document.title if document is not None and rnd.kind == "daily" else None,
        "model_name": model_name,
    }


MARKS = {"right": "🟩", "wrong": "🟥", "skip": "⬜"}


def share_text(result: dict, card_url: str) -> str:
    """A few lines to paste anywhere: scores and a grid, no tokens (no spoilers for the daily
    passage) and nothing about who played."""
    title = (
        f"humanlm daily {result['day']}" if result["kind"] == "daily"
        else "humanlm round" + ("" if result["difficulty"] == "any" else f" ({result['difficulty']})")
    )
    n = result["answered"]
    return "\n".join([
        title,
        f"Me {result['you_correct']}/{n} · {result['model_name']} {result['model_correct']}/{n}",
        "Me    " + "".join(MARKS[c["you"]] for c in result["calls"]),
        "Model " + "".join(MARKS["right" if c["model_right"] else "wrong"] for c in result["calls"]),
        card_url,
    ])


# ------------------------------------------------------------------------- streak and the board


def _solo_days(session: Session, player_id: str) -> set[date]:
    stamps = session.scalars(
        select(Guess.server_received_at).where(
            Guess.player_id == player_id, Guess.room_id.is_(None), Guess.study_id.is_(None),
            Guess.source == "game",
        )
    )
    return {stamp.astimezone(UTC).date() for stamp in stamps}


def streak(session: Session, player_id: str | None, day: date | None = None) -> dict:
    """Consecutive days (UTC) with solo answers, ending today or, when today has none yet,
    yesterday (the streak is still alive until the day ends)."""
    if player_id is None:
        return {"days": 0, "played_today": False}
    day = day or today()
    days = _solo_days(session, player_id)
    played_today = day in days
    cursor = day if played_today else day - timedelta(days=1)
    count = 0
    while cursor in days:
        count += 1
        cursor -= timedelta(days=1)
    return {"days": count, "played_today": played_today}


def display_name(player_id: str, nickname: str | None) -> str:
    return nickname or f"player {player_id[:6]}"


def daily_board(session: Session, day: date, player_id: str | None) -> dict:
    """The day's board: each player's answers in that day's daily rounds (a player who left
    the daily passage and came back has two rounds: they count together), most right first.
    Pseudonymous: a chosen nickname or a shortened random id."""
    per_player: dict[str, dict] = {}
    for rnd in session.scalars(select(PlayRound).where(PlayRound.kind == "daily", PlayRound.day == day.isoformat())):
        if not rnd.answers:
            continue
        row = per_player.setdefault(rnd.player_id, {"correct": 0, "answered": 0, "last": None})
        row["correct"] += sum(1 for link in rnd.answers if link.guess.is_correct)
        row["answered"] += len(rnd.answers)
        stamp = max(link.guess.server_received_at for link in rnd.answers)
        row["last"] = stamp if row["last"] is None else max(row["last"], stamp)
    names = dict(
        session.execute(
            select(PlayerNickname.player_id, PlayerNickname.nickname).where(
                PlayerNickname.player_id.in_(list(per_player))
            )
        ).all()
    )
    order = sorted(per_player.items(), key=lambda kv: (-kv[1]["correct"], -kv[1]["answered"], kv[1]["last"]))
    entries = [
        {
            "rank": i + 1, "name": display_name(pid, names.get(pid)),
            "correct": row["correct"], "answered": row["answered"], "you": pid == player_id,
        }
        for i, (pid, row) in enumerate(order[:BOARD_SIZE])
    ]
    return {"day": day.isoformat(), "entries": entries, "players": len(per_player)}


def nickname_of(session: Session, player_id: str | None) -> str | None:
    row = session.get(PlayerNickname, player_id) if player_id else None
    return row.nickname if row else None


def set_nickname(session: Session, player_id: str, name: str) -> str:
    """Validate like a room nickname (blocked words, look-alikes of a name already on a board
    are refused) and store it. Raises RoomRuleError with a message for people."""
    taken = set(
        session.scalars(select(PlayerNickname.nickname).where(PlayerNickname.player_id != player_id))
    )
    cleaned = validate_nickname(name, taken)
    row = session.get(PlayerNickname, player_id)
    if row is None:
        session.add(PlayerNickname(player_id=player_id, nickname=cleaned))
    else:
        row.nickname = cleaned
        row.set_at = datetime.now(UTC)
    session.commit()
    return cleaned



CARD_FILL = {"right": "#15803d", "wrong": "#b42318", "skip": "#c5c7d6"}


def card_cells(result: dict, left: int = 150, step: int = 42) -> list[dict]:
    """Squares of the card's grid: x position and colour for the player and for the model."""
    return [
        {
            "x": left + i * step,
            "you": CARD_FILL[c["you"]],
            "model": CARD_FILL["right" if c["model_right"] else "wrong"],
        }
        for i, c in enumerate(result["calls"][:ROUND_SIZE])
    ]
