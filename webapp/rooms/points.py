"""The points rules of classroom rooms and class-level aggregates of guesses, as pure functions
(no Flask, no database).

Why a module of its own: a room shows a whole class's guesses next to the model's distribution and
awards points; the rules are defined here, as plain functions on plain values, so they are tested
by hand-computed examples without an app (tests/test_rooms_points.py) and the room's views only
apply them. Only rooms award points; "scoring" elsewhere means the model pass
(webapp/predictions.py, `humanlm score`).

Conventions (as in the rest of humanlm): log-probabilities are natural logs over the model's full
vocabulary; a guess is represented by its FIRST token id, and a skip ("I don't know") by None.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

CORRECT_POINTS = 100
BONUS_MAX = 50


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
