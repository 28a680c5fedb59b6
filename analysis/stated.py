"""Stated distributions ("bet on the next token"): proper scores for people and the model on the
same partition.

A person names up to five candidate continuations and spreads 100 points over them and
"something else". That is a probability distribution q over a partition of the vocabulary:
{candidate 1, ..., candidate k, everything else}, a candidate standing for every continuation
that starts with its first token. The model is scored on exactly the same partition: its mass on
each candidate's first token, and the rest on "something else". Nobody has to invent how a person
would spread "something else" over tokens, so people and model are compared on equal terms.

Scores, per answer (higher log score is better; lower Brier score is better):
  - log score ln q(outcome), the outcome being the cell that holds the true next token: strictly
    proper on the partition. A cell the person gave 0 points would score -inf; the answer scale's
    smallest step is 1 point, so such a cell is scored as half a point (FLOOR) and counted;
  - the model's log score ln m(outcome) on the same cells;
  - the Brier score sum over cells of (q(cell) - [cell is the outcome])^2, people and model.
Calibration pools every (stated probability of a cell, whether it happened) pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .bootstrap import DEFAULT_BOOT, DEFAULT_LEVEL, Design, twoway_bootstrap
from .metrics import proportion_interval

TOTAL_POINTS = 100
MAX_CANDIDATES = 5
FLOOR = 0.005  # half a point of 100: the score of a cell the person gave nothing


class StatedError(ValueError):
    """An answer that is not a distribution over a partition (the message says why)."""


@dataclass(frozen=True)
class Cells:
    """One answer's partition: the candidates' first tokens (distinct), the person's and the
    model's probability of each cell (candidates, then "something else"), and the outcome."""

    first_tokens: tuple[int, ...]
    stated: np.ndarray  # k + 1 probabilities, summing to 1
    model: np.ndarray  # k + 1 probabilities, summing to 1
    outcome: int  # index of the cell holding the true token (k = something else)


def cells(
    points: Sequence[float],
    else_points: float,
    first_tokens: Sequence[int],
    true_token: int,
    model_logprobs: Sequence[float],
) -> Cells:
    """Build the partition of one answer. `points[i]` goes with the candidate whose first token
    is `first_tokens[i]`, and `model_logprobs[i]` is the model's log-prob of that token at the
    position. Candidates that share a first token are one cell (their points add up)."""
    if not (len(points) == len(first_tokens) == len(model_logprobs)):
        raise StatedError("every candidate needs its points, its first token and the model's log-prob")
    if not 1 <= len(points) <= MAX_CANDIDATES:
        raise StatedError(f"name between 1 and {MAX_CANDIDATES} candidates")
    values = np.asarray([*points, else_points], dtype=np.float64)
    if np.any(~np.isfinite(values)) or np.any(values < 0):
        raise StatedError("points must be numbers of at least 0")
    if abs(values.sum() - TOTAL_POINTS) > 1e-9:
        raise StatedError(f"the points must add up to {TOTAL_POINTS} (they add up to {values.sum():g})")
    merged: dict[int, tuple[float, float]] = {}
    for token, pts, lp in zip(first_tokens, points, model_logprobs):
        before = merged.get(int(token), (0.0, float(lp)))
        merged[int(token)] = (before[0] + float(pts), float(lp))
    tokens = tuple(merged)
    stated = np.array([merged[t][0] for t in tokens] + [else_points], dtype=np.float64) / TOTAL_POINTS
    mass = np.exp([merged[t][1] for t in tokens])
    if mass.sum() > 1 + 1e-6:
        raise StatedError("the model's probabilities of the candidates add up to more than 1")
    model = np.append(mass, max(0.0, 1.0 - mass.sum()))
    outcome = tokens.index(true_token) if true_token in tokens else len(tokens)
    return Cells(tokens, stated, model, outcome)


def log_score(probabilities: np.ndarray, outcome: int) -> tuple[float, bool]:
    """(ln p(outcome), whether the floor was used because p(outcome) was 0)."""
    p = float(probabilities[outcome])
    return (float(np.log(FLOOR)), True) if p <= 0 else (float(np.log(p)), False)


def brier(probabilities: np.ndarray, outcome: int) -> float:
    hit = np.zeros(len(probabilities))
    hit[outcome] = 1.0
    return float(((probabilities - hit) ** 2).sum())


def scores(c: Cells) -> dict:
    """The four scores of one answer, and whether the person's log score used the floor."""
    person, floored = log_score(c.stated, c.outcome)
    model, _ = log_score(c.model, c.outcome)
    return {
        "person_log_score": person, "model_log_score": model,
        "person_brier": brier(c.stated, c.outcome), "model_brier": brier(c.model, c.outcome),
        "floored": floored, "n_cells": len(c.stated),
    }


def compare(
    answers: Sequence[Cells],
    participant: Sequence[int],
    item: Sequence[int],
    *,
    level: float = DEFAULT_LEVEL,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
) -> dict:
    """Mean log and Brier scores of people and of the model over the same answers, and their
    paired differences (person - model), with two-way cluster-bootstrap intervals."""
    if not answers:
        raise StatedError("no stated distributions to score")
    rows = [scores(c) for c in answers]
    cols = ("person_log_score", "model_log_score", "person_brier", "model_brier")
    Z = np.array([[r[k] for k in cols] + [1.0] for r in rows])
    Z = np.column_stack([Z, Z[:, 0] - Z[:, 1], Z[:, 2] - Z[:, 3]])  # the paired differences
    design = Design(np.unique(participant, return_inverse=True)[1],
                    np.unique(item, return_inverse=True)[1], n_boot=n_boot, seed=seed)

    def stat(S: np.ndarray) -> np.ndarray:
        return S[:, [0, 1, 2, 3, 5, 6]] / S[:, [4]]

    res = twoway_bootstrap(Z, design, stat, level=level)
    names = (*cols, "log_score_difference", "brier_difference")
    out = {name: {"estimate": float(res.estimate[i]), "ci_low": float(res.ci_low[i]),
                  "ci_high": float(res.ci_high[i])} for i, name in enumerate(names)}
    out.update(n_answers=len(rows), n_floored=int(sum(r["floored"] for r in rows)),
               n_participants=design.n_participants, n_items=design.n_items, level=level)
    return out


def calibration(answers: Sequence[Cells], participant: Sequence[int], item: Sequence[int], *,
                n_bins: int = 10, level: float = DEFAULT_LEVEL) -> list[dict]:
    """Per bin of stated probability: how often a cell given that probability held the true
    token, over every cell of every answer ("something else" included), with a Wilson interval
    whose effective size is the smallest of the bin's distinct answers, items and participants
    (conservative: the cells of one answer are not independent, exactly one of them happens)."""
    pairs = []
    for a, (c, p, i) in enumerate(zip(answers, participant, item)):
        for k, q in enumerate(c.stated):
            pairs.append((q, k == c.outcome, a, p, i))
    q = np.array([x[0] for x in pairs])
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(q, edges[1:-1]), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        chosen = [x for x, w in zip(pairs, which) if w == b]
        if not chosen:
            continue
        hits = np.array([x[1] for x in chosen], dtype=float)
        row = {"bin_low": float(edges[b]), "bin_high": float(edges[b + 1]),
               "mean_stated": float(np.mean([x[0] for x in chosen])),
               "estimate": float(hits.mean()), "n_cells": len(chosen),
               "n_answers": len({x[2] for x in chosen}), "n_participants": len({x[3] for x in chosen}),
               "n_items": len({x[4] for x in chosen}), "level": level, "se": np.nan}
        out.append(proportion_interval(row))
    return out
