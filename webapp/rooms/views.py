"""What a classroom room's screens show, built from the database (no Flask, no Socket.IO).

Every view is rebuilt from the stored rows, never kept in memory, so a reloaded projector or a
phone that reconnects, on any server process, gets the whole picture. The host sees the answer
count and histogram while a round is open; everybody sees the reveal, the leaderboard and the
summary once they are due; each seat gets its own feedback. Points and accuracies come from
points.py; nothing about the true token is in a view before the round is revealed.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import game
from ..answers import model_view_of_token
from ..lm import Tokenizer
from ..models import Guess, Prediction, Room, RoomPlayer, RoomRound
from . import points
from .commands import active_players, current_round
from .state import Phase

# At the reveal, a class answer the model gives at least this probability is called likely.
LIKELY_PROB = 0.10
CHART_ROWS = 12  # rows of the reveal chart: what a projector shows legibly


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
    top_k_prob = {tid: math.exp(lp) for tid, lp, _t, _c in prediction.top_k}
    # The true token's probability is stored exactly even outside the top-k: shown, never "<".
    model_prob = {**top_k_prob, item.token_id: math.exp(prediction.target_logprob)}
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
            "model_rank": prediction.target_rank if tid == item.token_id
            else model_view_of_token(prediction, tid)[1],
            "verdict": _verdict(top_k_prob.get(tid)),  # the top-k decides, as for every guess
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
    floor = math.exp(prediction.top_k[-1][1]) if prediction.top_k else None
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
            # The true token's own numbers, next to the answer's (model_prob, model_rank).
            "target_prob": math.exp(prediction.target_logprob),
            "target_rank": prediction.target_rank,
            "top_k": len(prediction.top_k), "min_top_k_prob": floor,
        }
        if mine is None:
            out[seat.id] = {**base, "answered": False, "correct": False, "skipped": False,
                            "your_text": None, "your_token": None, "model_prob": None,
                            "model_rank": None, "your_verdict": None, "points": 0, "bonus": 0}
            continue
        guess, pred = mine
        pts, _ = guess_points(guess, pred)
        in_top_k = model_view_of_token(pred, guess.first_token_id)[0]
        out[seat.id] = {
            **base, "answered": True, "correct": guess.is_correct, "skipped": guess.skipped,
            "your_text": guess.raw_text,
            "your_token": game.token_view(guess.first_token_id, tokenizer)
            if guess.first_token_id is not None else None,
            "model_prob": math.exp(guess.model_logprob) if guess.model_logprob is not None else None,
            "model_rank": guess.model_rank,
            # Why an answer earns a bonus: the reveal's verdict of the answer's first token.
            "your_verdict": None if guess.skipped or guess.first_token_id is None
            else _verdict(math.exp(in_top_k) if in_top_k is not None else None),
            "points": pts,
            "bonus": pts - (points.CORRECT_POINTS if guess.is_correct else 0),
        }
    return out


def host_state(
    session: Session, room: Room, tokenizer: Tokenizer, join_url: str, scored=None
) -> dict:
    """Everything the projector shows, rebuilt from the database (a reloaded host gets it all)."""
    rnd = current_round(room)
    answers = answers_view(session, room, tokenizer)
    answered_seats = set(answers["answered_player_ids"])
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
            "timer_seconds": room.timer_seconds, "joins_locked": room.joins_locked,
        },
        "players": [
            {"id": s.id, "nickname": s.nickname, "connected": s.connected,
             "answered": s.id in answered_seats}
            for s in active_players(session, room)
        ],
        "answers": answers,
        "reveal": reveal_view(session, room, rnd, tokenizer)
        if room.phase == Phase.REVEAL.value and rnd is not None else None,
        **_standings(session, room, scored),
    }


def _standings(session: Session, room: Room, scored=None) -> dict:
    """The leaderboard (when the host shows it) from the reveal on, and the summary at the end:
    the same on the projector and on every phone."""
    shown = room.phase in (Phase.REVEAL.value, Phase.FINISHED.value)
    scored = shown_answers(session, room) if scored is None else scored
    return {
        "leaderboard": leaderboard(session, room, scored) if shown and room.show_leaderboard else None,
        "summary": summary(session, room, scored) if room.phase == Phase.FINISHED.value else None,
    }


def public_state(session: Session, room: Room, scored=None) -> dict:
    """What every student's screen may show (no per-student parts)."""
    return {
        "code": room.code,
        "phase": room.phase,
        "status": room.status,
        "round": round_view(room),
        "n_players": len(active_players(session, room)),
        **_standings(session, room, scored),
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
