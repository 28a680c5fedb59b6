"""What a classroom room's screens show, built from the database (no Flask, no Socket.IO).

Every view is rebuilt from the stored rows, never kept in memory, so a reloaded projector or a
phone that reconnects, on any server process, gets the whole picture. The host sees the answer
count and histogram while a round is open; everybody sees the reveal, the leaderboard and the
summary once they are due; each seat gets its own feedback. Points and accuracies come from
points.py; nothing about the true token is in a view before the round is revealed.

A room answers in one of three modes (Room.answer_mode): a typed token, a pairwise judgement (which
of two tokens came next: the whole class sees one pair, chosen under the server's secret, which
is why the views that show a pair take `secret`), or a stated distribution (100 points spread over
candidates). Each view says the mode and carries that mode's part.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import game
from ..judgements import (
    JUDGEMENT_MODES,
    MAX_BETS,
    PAIRWISE_SCALE,
    TOTAL_POINTS,
    Pair,
    model_pair_probability,
    probability_of_truth,
    stated_cells_view,
)
from ..lm import Tokenizer
from ..models import Guess, Prediction, Room, RoomPlayer, RoomRound
from . import points
from .commands import RoundItemFacts, active_players, current_round, item_facts, room_pair
from .state import Phase

# At the reveal, a class answer the model gives at least this probability is called likely.
LIKELY_PROB = 0.10
CHART_ROWS = 12  # rows of the reveal chart: what a projector shows legibly
POOLED_CELLS = 8  # candidates shown in a distribution round's pooled chart (then "something else")


# --------------------------------------------------------------- pairwise and distribution


def _facts_and_pair(session: Session, room: Room, item_id: int, secret: bytes
                    ) -> tuple[RoundItemFacts, Pair | None]:
    facts = item_facts(session, item_id, room.model_id)
    return facts, room_pair(room.id, item_id, facts, secret)


def _pair_texts(pair: Pair, token_id: int, tokenizer: Tokenizer) -> tuple[str, str]:
    """(left, right) as shown: the texts of the true token and of the alternative."""
    true = game.token_view(token_id, tokenizer)["text"]
    other = game.token_view(pair.alternative_id, tokenizer)["text"]
    return (true, other) if pair.true_on_left else (other, true)


def question_view(session: Session, room: Room, rnd: RoomRound, tokenizer: Tokenizer,
                  secret: bytes) -> dict:
    """What a round asks beyond its text: nothing (token), the pair to judge, with the scale, and
    never which side is the original (pairwise), or the points to spread (distribution)."""
    if room.answer_mode == "pairwise":
        _facts, pair = _facts_and_pair(session, room, rnd.item_id, secret)
        if pair is None:
            return {"pair": None}
        left, right = _pair_texts(pair, rnd.item.token_id, tokenizer)
        return {"pair": {"left": {"text": left}, "right": {"text": right}, "scale": list(PAIRWISE_SCALE)}}
    if room.answer_mode == "distribution":
        return {"bets": {"total_points": TOTAL_POINTS, "max_bets": MAX_BETS}}
    return {}


def _percent(value: float | None) -> int | None:
    return None if value is None else round(value * 100)


def live_judgements(room: Room, judgements: list[dict | None], tokenizer: Tokenizer) -> dict | None:
    """The host's live view of a judgement round (the original is never told apart): how many
    chose each stop of the scale for the LEFT token (pairwise), or the class's candidates pooled
    by first token with "something else" (distribution)."""
    answered = [j for j in judgements if j and (j.get("left_probability") is not None or j.get("bets"))]
    if room.answer_mode == "pairwise":
        return {
            "kind": "pairwise", "judged": len(answered),
            "stops": points.pairwise_stops((_percent(j["left_probability"]) for j in answered), PAIRWISE_SCALE),
        }
    cells, rest, n = points.pool_stated(answered)
    rows = sorted(({"id": tid, "text": game.token_view(tid, tokenizer)["text"], "share": share}
                   for tid, share in cells.items()), key=lambda r: (-r["share"], r["text"]))
    shown, others = rows[:POOLED_CELLS], rows[POOLED_CELLS:]
    return {
        "kind": "distribution", "judged": n, "cells": shown,
        "others": {"count": len(others), "share": sum(r["share"] for r in others)},
        "else_share": rest,
    }


def _model_cell_prob(tid: int, facts: RoundItemFacts) -> float | None:
    """The model's probability of a first-token cell, where known (game.known_logprob)."""
    lp = game.known_logprob(facts, tid, facts.token_id)
    return math.exp(lp) if lp is not None else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def pairwise_reveal(session: Session, room: Room, rnd: RoomRound, tokenizer: Tokenizer,
                    guesses: list[Guess], secret: bytes) -> dict:
    """The original's side, the class's mean probability for it beside the model's
    G(t*)/(G(t*)+G(t)), how many leaned to the original, and the class's answers on the scale
    as probabilities of the original."""
    facts, pair = _facts_and_pair(session, room, rnd.item_id, secret)
    if pair is None:
        return {"pair": None}
    judged = [g.judgement["true_probability"] for g in guesses
              if g.judgement and g.judgement.get("true_probability") is not None]
    left, right = _pair_texts(pair, facts.token_id, tokenizer)
    model_true = model_pair_probability(facts.target_logprob, pair.alternative_logprob)
    class_true = _mean(judged)
    return {
        "pair": {"left": {"text": left}, "right": {"text": right}, "scale": list(PAIRWISE_SCALE)},
        "true_side": "left" if pair.true_on_left else "right",
        "true": {"text": left if pair.true_on_left else right,
                 "prob": math.exp(facts.target_logprob) if facts.target_logprob is not None else None},
        "alternative": {"text": right if pair.true_on_left else left,
                        "prob": math.exp(pair.alternative_logprob)},
        "judged": len(judged),
        "class_true_probability": class_true,
        "model_true_probability": model_true,
        "leaned_true": sum(1 for p in judged if p > 0.5),
        "leaned_alternative": sum(1 for p in judged if p < 0.5),
        "undecided": sum(1 for p in judged if p == 0.5),
        "stops": points.pairwise_stops((_percent(p) for p in judged), PAIRWISE_SCALE),
        "class_log_score": _mean([points.judgement_log_score(p) for p in judged]),
        "model_log_score": math.log(model_true) if model_true else None,
    }


def distribution_reveal(session: Session, room: Room, rnd: RoomRound, tokenizer: Tokenizer,
                        guesses: list[Guess]) -> dict:
    """The class's candidates pooled by first token beside the model's mass on the same cells
    (None, "not known", for a token outside the stored top-k), "something else" as a cell of its
    own, the true cell marked; and the mean probability the class gave what came next."""
    facts = item_facts(session, rnd.item_id, room.model_id)
    stated = [g.judgement for g in guesses if g.judgement and not g.skipped]
    cells, rest, n = points.pool_stated(stated)
    rows = [{"id": tid, "text": game.token_view(tid, tokenizer)["text"], "class": share,
             "model": _model_cell_prob(tid, facts), "is_true": tid == facts.token_id}
            for tid, share in cells.items()]
    rows.sort(key=lambda r: (-r["class"], -(r["model"] or 0.0), r["text"]))
    shown, others = rows[:POOLED_CELLS], rows[POOLED_CELLS:]
    truth = next((r for r in others if r["is_true"]), None)
    if truth is not None:  # the true cell stays on the chart, in place of the smallest shown
        others = [r for r in others if r is not truth] + [shown[-1]]
        shown = shown[:-1] + [truth]
    known = all(r["model"] is not None for r in rows)
    model_named = sum(r["model"] or 0.0 for r in rows)
    named_true = any(r["is_true"] for r in rows)
    target_prob = math.exp(facts.target_logprob) if facts.target_logprob is not None else None
    class_true = [probability_of_truth(j) for j in stated]
    class_true = [p for p in class_true if p is not None]
    return {
        "cells": shown,
        "others": {"count": len(others), "class": sum(r["class"] for r in others),
                   "model": sum(r["model"] for r in others)
                   if all(r["model"] is not None for r in others) else None},
        "else": {"class": rest, "model": max(0.0, 1 - model_named) if known else None,
                 "is_true": not named_true},
        "judged": n,
        "class_true_probability": _mean(class_true),
        "model_true_probability": target_prob,
        "named_true": sum(1 for j in stated if points.judgement_hit(j)),
        "class_log_score": _mean([points.judgement_log_score(p) for p in class_true]),
        "model_log_score": facts.target_logprob,
    }


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
    mode = room.answer_mode
    if rnd is None:
        return {"round": None, "mode": mode, "answered": 0, "total": len(seats), "histogram": None,
                "live": None, "answered_player_ids": []}
    # token rounds read the first token only; judgement rounds the judgement (what was said)
    said = Guess.first_token_id if mode not in JUDGEMENT_MODES else Guess.judgement
    rows = [
        (seats[player_id], value)
        for player_id, value in session.execute(
            select(Guess.player_id, said).where(Guess.room_id == room.id, Guess.item_id == rnd.item_id)
        )
        if player_id in seats
    ]
    shown = room.show_histogram
    token_mode = mode not in JUDGEMENT_MODES
    return {
        "round": rnd.index,
        "mode": mode,
        "answered": len(rows),
        "total": len(seats),
        "histogram": histogram((t for _, t in rows), tokenizer) if shown and token_mode else None,
        "live": live_judgements(room, [j for _, j in rows], tokenizer) if shown and not token_mode else None,
        "answered_player_ids": sorted(seat for seat, _ in rows),
    }



def round_view(session: Session, room: Room, tokenizer: Tokenizer, secret: bytes) -> dict | None:
    """The open round as every screen shows it: its text before the position, its mode and what
    it asks (question_view), its deadline."""
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
        "mode": room.answer_mode,
        **question_view(session, room, rnd, tokenizer, secret),
    }


def _verdict(prob: float | None) -> str:
    if prob is None:
        return "unlikely"
    return "likely" if prob >= LIKELY_PROB else "plausible"


def reveal_view(session: Session, room: Room, rnd: RoomRound, tokenizer: Tokenizer,
                secret: bytes) -> dict:
    """The truth, the class's distribution beside the model's, and the class's guesses judged
    (token rounds); the class's judgements beside the model's (pairwise, distribution)."""
    item = rnd.item
    guesses = _round_guesses(session, room, item.id)
    if room.answer_mode in JUDGEMENT_MODES:
        view = {
            "mode": room.answer_mode,
            "target": {"id": item.token_id, "text": item.token_text},
            "top_k": len(item_facts(session, item.id, room.model_id).top_k),
            "answered": len(guesses),
            "skips": sum(1 for g in guesses if g.skipped),
            "correct": sum(1 for g in guesses if points.judgement_hit(g.judgement)),
        }
        if room.answer_mode == "pairwise":
            return {**view, "pairwise": pairwise_reveal(session, room, rnd, tokenizer, guesses, secret)}
        return {**view, "distribution": distribution_reveal(session, room, rnd, tokenizer, guesses)}
    prediction = game.prediction_for(session, item.id, room.model_id)
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
            else game.model_view_of_token(prediction, tid)[1],
            "verdict": _verdict(top_k_prob.get(tid)),  # the top-k decides, as for every guess
        }
        for tid, c in counts.items()
    ]
    judged.sort(key=lambda r: (-(r["model_prob"] or 0.0), -r["count"]))
    return {
        "mode": "token",
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


def guess_points(guess: Guess, prediction: Prediction) -> tuple[int, float | None]:
    """(points, log-score) of one answer, by points.py's definitions: for a pairwise or
    distribution answer, judgement_points and the (floored) ln of the probability it gave to what
    came next (None for a skip)."""
    if guess.mode in JUDGEMENT_MODES:
        p = None if guess.skipped else probability_of_truth(guess.judgement)
        return points.judgement_points(p), points.judgement_log_score(p)
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
        row["correct"] += int(is_hit(guess))
        row["answered"] += 1
        if log_score is not None:
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


def is_hit(guess: Guess) -> bool:
    """The "correct" count: the true token (token rounds), the original favoured (pairwise), the
    true token among the candidates (distribution): points.judgement_hit."""
    if guess.mode in JUDGEMENT_MODES:
        return points.judgement_hit(guess.judgement)
    return bool(guess.is_correct)


def plurality_correct(counts: Counter, target: int) -> float:
    """Credit of the class's most common answer: 1 if it is the target; ties share the credit
    (1/k when the target is one of k tied answers); 0 when nobody answered."""
    if not counts:
        return 0.0
    top = max(counts.values())
    tied = [t for t, c in counts.items() if c == top]
    return 1.0 / len(tied) if target in tied else 0.0


def model_true_probability(session: Session, room: Room, item_id: int, secret: bytes) -> float | None:
    """What the model gives the truth in a judgement round's own terms: G(t*)/(G(t*)+G(t)) for
    the round's pair (pairwise), its probability of the true token, the true cell (distribution)."""
    facts, pair = _facts_and_pair(session, room, item_id, secret)
    if room.answer_mode == "pairwise":
        return model_pair_probability(facts.target_logprob, pair.alternative_logprob) if pair else None
    return math.exp(facts.target_logprob) if facts.target_logprob is not None else None


def judgement_summary(session: Session, room: Room, answers, secret: bytes) -> dict:
    """Class vs model over the revealed rounds of a pairwise or distribution room: the mean
    probability each gave to what came next, and its log score (the proper score behind the
    points); `class_accuracy` is the share of answers that were hits (points.judgement_hit)."""
    by_round: dict[int, list[Guess]] = defaultdict(list)
    for rnd, guess, _prediction in answers:
        by_round[rnd.index].append(guess)
    rounds, class_p, model_p = [], [], []
    for rnd in _revealed_rounds(room):
        guesses = by_round.get(rnd.index, [])
        said = [probability_of_truth(g.judgement) for g in guesses if not g.skipped]
        said = [p for p in said if p is not None]
        model = model_true_probability(session, room, rnd.item_id, secret)
        if room.answer_mode == "pairwise":
            model_right = model is not None and model > 0.5
        else:
            prediction = game.prediction_for(session, rnd.item_id, room.model_id)
            model_right = prediction.top1_id == rnd.item.token_id
        class_p += said
        if model is not None:
            model_p.append(model)
        rounds.append({
            "number": rnd.index + 1,
            "target": rnd.item.token_text,
            "answered": len(guesses),
            "class_accuracy": points.accuracy([is_hit(g) for g in guesses]) if guesses else None,
            "class_true_probability": _mean(said),
            "model_true_probability": model,
            "plurality_correct": None,
            "model_correct": model_right,
        })
    hits = [is_hit(g) for _r, g, _p in answers]
    return {
        "mode": room.answer_mode,
        "rounds": rounds,
        "class_accuracy": points.accuracy(hits) if hits else None,
        "model_accuracy": (sum(r["model_correct"] for r in rounds) / len(rounds)) if rounds else None,
        "plurality_accuracy": None,
        "class_true_probability": _mean(class_p),
        "model_true_probability": _mean(model_p),
        "class_log_score": _mean([points.judgement_log_score(p) for p in class_p]),
        "model_log_score": _mean([math.log(p) for p in model_p if p > 0]),
        "n_players": len({g.player_id for _r, g, _p in answers}),
        "n_answers": len(answers),
    }


def summary(session: Session, room: Room, answers=None, secret: bytes | None = None) -> dict:
    """Class vs model over the revealed rounds: per round and overall (`secret`: the pairwise
    rooms' pair, see judgement_summary)."""
    answers = scored_answers(session, room) if answers is None else answers
    if room.answer_mode in JUDGEMENT_MODES:
        if secret is None:
            raise ValueError("the summary of a judgement room needs the server's secret")
        return judgement_summary(session, room, answers, secret)
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
        "mode": "token",
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


def _judgement_feedback(session: Session, room: Room, rnd: RoomRound, tokenizer: Tokenizer,
                        secret: bytes, class_true: float | None):
    """A function giving one seat's view of its pairwise or distribution answer (None: no
    answer): its numbers beside the model's on the same question."""
    facts, pair = _facts_and_pair(session, room, rnd.item_id, secret)
    model_true = model_true_probability(session, room, rnd.item_id, secret)
    left = right = None
    if room.answer_mode == "pairwise" and pair is not None:
        left, right = _pair_texts(pair, facts.token_id, tokenizer)

    def view(guess: Guess | None) -> dict:
        j = guess.judgement if guess is not None else None
        p = None if guess is None or guess.skipped else probability_of_truth(j)
        out = {"kind": room.answer_mode, "your_true_probability": p,
               "your_log_score": points.judgement_log_score(p),
               "model_true_probability": model_true, "class_true_probability": class_true}
        if room.answer_mode == "pairwise":
            out.update({
                "left": {"text": left}, "right": {"text": right},
                "true_side": None if pair is None else "left" if pair.true_on_left else "right",
                "your_left_probability": j.get("left_probability") if j else None,
            })
        else:
            out["cells"] = stated_cells_view(j) if j and not guess.skipped else None
            for cell in out["cells"] or []:  # a cell is named by its first token, as on the projector
                cell["text"] = cell["texts"][0] if cell["texts"] else None
        return out

    return view


def feedback(session: Session, room: Room, tokenizer: Tokenizer, answers=None, *,
             secret: bytes) -> dict[int, dict]:
    """Per seat id, what that student sees after the current round's reveal."""
    rnd = current_round(room)
    if rnd is None or rnd.revealed_at is None:
        return {}
    answers = scored_answers(session, room) if answers is None else answers
    board = leaderboard(session, room, answers)
    by_seat = {row["player_id"]: row for row in board}
    prediction = game.prediction_for(session, rnd.item_id, room.model_id)
    this_round = [(g, p) for r, g, p in answers if r.index == rnd.index]
    share = points.accuracy([is_hit(g) for g, _ in this_round]) if this_round else 0.0
    guess_of = {g.player_id: (g, p) for g, p in this_round}
    judged = None
    if room.answer_mode in JUDGEMENT_MODES:
        said = [probability_of_truth(g.judgement) for g, _ in this_round if not g.skipped]
        judged = _judgement_feedback(session, room, rnd, tokenizer, secret,
                                     _mean([p for p in said if p is not None]))
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
            "mode": room.answer_mode,
        }
        if judged is not None:
            guess = mine[0] if mine else None
            pts = guess_points(*mine)[0] if mine else 0
            out[seat.id] = {
                **base, "answered": guess is not None, "correct": bool(guess) and is_hit(guess),
                "skipped": bool(guess) and guess.skipped, "your_text": None, "your_token": None,
                "model_prob": None, "model_rank": None, "your_verdict": None,
                "points": pts, "bonus": 0, "judgement": judged(guess),
            }
            continue
        if mine is None:
            out[seat.id] = {**base, "answered": False, "correct": False, "skipped": False,
                            "your_text": None, "your_token": None, "model_prob": None,
                            "model_rank": None, "your_verdict": None, "points": 0, "bonus": 0}
            continue
        guess, pred = mine
        pts, _ = guess_points(guess, pred)
        in_top_k = game.model_view_of_token(pred, guess.first_token_id)[0]
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
    session: Session, room: Room, tokenizer: Tokenizer, join_url: str, scored=None, *,
    secret: bytes,
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
        "mode": room.answer_mode,
        "round": round_view(session, room, tokenizer, secret),
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
        "reveal": reveal_view(session, room, rnd, tokenizer, secret)
        if room.phase == Phase.REVEAL.value and rnd is not None else None,
        **_standings(session, room, scored, secret),
    }


def _standings(session: Session, room: Room, scored, secret: bytes) -> dict:
    """The leaderboard (when the host shows it) from the reveal on, and the summary at the end:
    the same on the projector and on every phone."""
    shown = room.phase in (Phase.REVEAL.value, Phase.FINISHED.value)
    scored = shown_answers(session, room) if scored is None else scored
    return {
        "leaderboard": leaderboard(session, room, scored) if shown and room.show_leaderboard else None,
        "summary": summary(session, room, scored, secret)
        if room.phase == Phase.FINISHED.value else None,
    }


def public_state(session: Session, room: Room, tokenizer: Tokenizer, scored=None, *,
                 secret: bytes) -> dict:
    """What every student's screen may show (no per-student parts)."""
    return {
        "code": room.code,
        "phase": room.phase,
        "status": room.status,
        "mode": room.answer_mode,
        "round": round_view(session, room, tokenizer, secret),
        "n_players": len(active_players(session, room)),
        **_standings(session, room, scored, secret),
    }


def my_answer_view(guess: Guess) -> dict:
    """A student's own stored answer, as their phone shows it again after a reload: the text, or
    what the judgement said (the left token's percent; the candidates and their points)."""
    view = {"text": guess.raw_text, "skipped": guess.skipped}
    j = guess.judgement or {}
    if guess.mode == "pairwise":
        view["left_probability"] = j.get("left_probability")
    elif guess.mode == "distribution":
        view["bets"] = [{"text": b["text"], "points": b["points"]} for b in j.get("bets") or []]
        view["else_points"] = j.get("else_points")
    return view


def student_state(session: Session, room: Room, seat: RoomPlayer, tokenizer: Tokenizer, *,
                  secret: bytes) -> dict:
    """A student's whole screen, for (re)joining: public state plus their own answer/feedback."""
    scored = shown_answers(session, room)
    state = public_state(session, room, tokenizer, scored, secret=secret)
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
        fb = feedback(session, room, tokenizer, scored, secret=secret).get(seat.id)
    return {
        **state,
        "player_id": seat.id,
        "nickname": seat.nickname,
        "answered": mine is not None,
        "my_answer": my_answer_view(mine) if mine else None,
        "feedback": fb,
    }
