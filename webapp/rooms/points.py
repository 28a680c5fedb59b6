"""The points rules of classroom rooms and class-level aggregates of guesses, as pure functions
(no Flask, no database).

Why a module of its own: a room shows a whole class's guesses next to the model's distribution and
awards points; the rules are defined here, as plain functions on plain values, so they are tested
by hand-computed examples without an app (tests/test_rooms_points.py) and the room's views only
apply them. Only rooms award points; "scoring" elsewhere means the model pass
(webapp/predictions.py, `humanlm score`).

Conventions (as in the rest of humanlm): log-probabilities are natural logs over the model's full
vocabulary; a guess is represented by its FIRST token id, and a skip ("I don't know") by None.

Rooms in pairwise or distribution mode (Room.answer_mode) score a judgement, not a typed token:
`judgement_points` below, a bounded log score of the probability the answer gave to what really
came next (a proper scoring rule: stating one's true belief earns the most points on average).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from ..judgements import TOTAL_POINTS

CORRECT_POINTS = 100
BONUS_MAX = 50
JUDGEMENT_POINTS = 100
# The smallest probability a judgement can state: 1% is both the pairwise scale's lowest stop and
# one point of the 100 a distribution spreads. Below it (a distribution that put 0 points where
# the truth was), the score is taken at 1%, so points stay in 0..100.
JUDGEMENT_FLOOR = 0.01


def aggregate_first_tokens(token_ids: Iterable[int | None]) -> dict[int, int]:
    """Count how many students guessed each first token; skips (None) are left out.

    Skips are not a token, so counting them here would put a fake token into the class
    distribution; use `count_skips` for them. Returns {token_id: count}, sorted by token id.
    """
    counts = Counter(t for t in token_ids if t is not None)
    return dict(sorted(counts.items()))


def count_skips(token_ids: Iterable[int | None]) -> int:
    """How many answers were skips (None), the complement of `aggregate_first_tokens`."""
    return sum(1 for t in token_ids if t is None)


def empirical_distribution(
    counts: Mapping[int, int],
    smoothing: float = 0.0,
    support: Iterable[int] | None = None,
) -> dict[int, float]:
    """The class's guesses as a probability distribution, with additive (Lidstone) smoothing.

    Why smoothing: an unsmoothed class distribution gives probability 0 to every token nobody
    guessed, so its log score is -inf as soon as the true token was missed by everyone.

    With support S (default: the tokens in `counts`), N = sum of counts and alpha = `smoothing`:
        p(t) = (counts[t] + alpha) / (N + alpha * |S|)   for every t in S.
    Unseen tokens: a token in S that nobody guessed gets alpha / (N + alpha * |S|), which is 0.0
    when alpha = 0 (it is still listed, with 0.0). A token outside S is not in the result at all,
    meaning probability 0. The values sum to 1 whenever the result is non-empty.
    alpha = 1 is Laplace smoothing. Zero counts are allowed and treated as unseen.
    Returns {} when there is nothing to distribute (empty support, or N = 0 with alpha = 0).
    Raises ValueError for negative counts, negative/non-finite smoothing, or a counted token
    missing from an explicit support (its mass would silently vanish).
    """
    if not math.isfinite(smoothing) or smoothing < 0:
        raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing!r}")
    if any(c < 0 for c in counts.values()):
        raise ValueError("counts must be >= 0")
    tokens = set(counts) if support is None else set(support)
    missing = set(counts) - tokens
    if missing:
        raise ValueError(f"counted tokens missing from support: {sorted(missing)}")
    total = sum(counts.values()) + smoothing * len(tokens)
    if total == 0:
        return {}
    return {t: (counts.get(t, 0) + smoothing) / total for t in sorted(tokens)}


def log_score(distribution: Mapping[int, float], outcome: int) -> float:
    """Logarithmic scoring rule: ln p(outcome); -inf when the outcome has probability 0.

    This is the proper scoring rule for a *distribution* (e.g. a class's smoothed guesses from
    `empirical_distribution`) against the true token: it is maximised in expectation by reporting
    one's true beliefs, so classes and the model can be compared on the model's own measure.
    """
    p = distribution.get(outcome, 0.0)
    return math.log(p) if p > 0 else -math.inf


def _check_logprob(value: float, name: str) -> None:
    if math.isnan(value) or value > 0:
        raise ValueError(f"{name} must be a log-probability (<= 0), got {value!r}")


def model_log_score(guess_logprob: float | None, floor_logprob: float) -> float:
    """Log-score that credits guesses the model also found likely: ln p_model(guess's first token).

    `guess_logprob` is the model's natural-log probability of the student's first token (as stored
    in Guess.model_logprob; an exact value counts even when the token is outside the top-k, e.g.
    after `humanlm score --fill-guesses`). When it is unknown (None): a guess outside the stored
    top-k not yet filled, or a skip, the score is `floor_logprob`, the log-prob of the k-th
    (last) stored token. Any token outside the top-k has probability <= that of the k-th token, so
    for those guesses the floor is an UPPER BOUND of the true value, not the value itself; it
    keeps the score finite and never lets an unknown guess beat a guess inside the top-k.
    A skip scores the same as an unfilled guess outside the top-k (note: an exact filled value
    below the floor scores lower than a skip; compare like with like in analysis).

    Example: top-k floor ln 0.001 = -6.908; guess with p = 0.25 -> -1.386; skip -> -6.908.
    """
    _check_logprob(floor_logprob, "floor_logprob")
    if guess_logprob is None:
        return floor_logprob
    _check_logprob(guess_logprob, "guess_logprob")
    return guess_logprob


def points(guess_logprob: float | None, floor_logprob: float, correct: bool) -> int:
    """Display points for one answer: 100 if correct, plus a 0-50 bonus for model-likely guesses.

    Why: children see whole numbers, while the ordering of answers at a position stays the same as
    under `model_log_score` (the bonus is an increasing affine map of it).
        s     = max(model_log_score(guess_logprob, floor_logprob), floor_logprob)
        bonus = round(50 * (1 - s / floor_logprob))                    (0 at the floor, 50 at p = 1)
        points = (100 if correct else 0) + bonus                       (always in 0..150)
    So the bonus grows with the model probability of the guess, on a log scale between the k-th
    stored token and certainty. Skips, guesses with unknown log-prob and exact log-probs below the
    floor (clipped to it) all get bonus 0.
    If floor_logprob is 0 (k = 1 and the model was certain) there is no range: bonus 0.
    Rounding is half-up.

    Worked example, floor_logprob = ln 0.001 = -6.908:
      correct guess the model gave p = 0.1 (ln = -2.303): 1 - 2.303/6.908 = 0.667 -> 100 + 33 = 133;
      wrong guess with p = 0.5 (ln = -0.693): 1 - 0.693/6.908 = 0.900 -> 0 + 45 = 45;
      correct guess outside the top-k (unknown) -> 100 + 0 = 100; skip -> 0.
    """
    s = model_log_score(guess_logprob, floor_logprob)
    if floor_logprob == 0:
        fraction = 0.0
    else:
        fraction = 1.0 - max(s, floor_logprob) / floor_logprob
    bonus = math.floor(BONUS_MAX * fraction + 0.5)
    return (CORRECT_POINTS if correct else 0) + bonus


def accuracy(correct: Sequence[bool]) -> float:
    """Share of correct answers (skips should be passed as False); 0.0 when there are no answers."""
    if not correct:
        return 0.0
    return sum(1 for c in correct if c) / len(correct)


# ------------------------------------------------------------------ pairwise and distribution


def judgement_log_score(probability: float | None) -> float | None:
    """ln of the probability given to what came next, floored at JUDGEMENT_FLOOR (ln 0.01 =
    -4.605); None for a skip (no judgement: left out of a mean, never counted as a score)."""
    if probability is None:
        return None
    if math.isnan(probability) or not 0 <= probability <= 1:
        raise ValueError(f"probability must be in [0, 1], got {probability!r}")
    return math.log(max(probability, JUDGEMENT_FLOOR))


def judgement_points(probability: float | None) -> int:
    """Points for one pairwise or distribution answer: the log score, mapped onto 0..100.

        points = round(100 * (1 + ln(max(p, 0.01)) / ln(100)))      (half up; a skip gets 0)

    p is `probability_of_truth`: what the answer gave to the token that really came next. The
    map is increasing and affine in ln p, so it keeps the log score's propriety: whoever states
    the probability they believe earns the most points on average, and hedging or bluffing
    costs. Certainty that turns out right earns 100, 50/50 earns 85, 10% earns 50, and 1% (the
    floor) or nothing earns 0. Worked examples: p = 0.9 -> 98, 0.7 -> 92, 0.5 -> 85, 0.3 -> 74,
    0.1 -> 50, 0.01 -> 0, 0 -> 0.
    """
    score = judgement_log_score(probability)
    if score is None:
        return 0
    fraction = 1 + score / -math.log(JUDGEMENT_FLOOR)
    return math.floor(JUDGEMENT_POINTS * fraction + 0.5)


def judgement_hit(judgement: dict | None) -> bool:
    """The "right" column of a judgement room: a pairwise answer that gave the original more than
    50%; a distribution that named the true token among its candidates. False for a skip."""
    if not judgement:
        return False
    if judgement.get("kind") == "pairwise":
        p = judgement.get("true_probability")
        return p is not None and p > 0.5
    true_cell = judgement.get("true_cell")
    return true_cell is not None and true_cell < len(judgement.get("bets") or [])


def pairwise_stops(percents: Iterable[int | None], scale: Sequence[int]) -> list[dict]:
    """How many answers chose each stop of the pairwise scale (a skip, None, on none of them);
    a percent between stops (never sent by the pages) counts on the nearest one."""
    counts = Counter(min(scale, key=lambda s: abs(s - p)) for p in percents if p is not None)
    return [{"percent": s, "count": counts.get(s, 0)} for s in scale]


def pool_stated(judgements: Iterable[dict]) -> tuple[dict[int, float], float, int]:
    """The class's stated distributions pooled by first token: for every first token any answer
    named, the average over the answers of the share of points on it (an answer that did not name
    it counts 0), and the average share on "something else". Candidates of one answer sharing a
    first token add up. Returns ({first token id: average share}, else share, number of answers);
    skips (None) are left out. The shares sum to 1 whenever there is an answer."""
    stated = [j for j in judgements if j]
    n = len(stated)
    if not n:
        return {}, 0.0, 0
    cells: dict[int, float] = {}
    rest = 0.0
    for j in stated:
        for bet in j["bets"]:
            key = bet["first_token_id"]
            if key is None:  # a candidate without tokens (cannot be typed): counted as the rest
                rest += bet["points"] / TOTAL_POINTS / n
                continue
            cells[key] = cells.get(key, 0.0) + bet["points"] / TOTAL_POINTS / n
        rest += j["else_points"] / TOTAL_POINTS / n
    return cells, rest, n
