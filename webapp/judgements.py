"""Two answers beyond a top-1 guess, as plain functions (no Flask, no model run):

- **pairwise** ("which token really came next?"): the person sees the true next token and one
  alternative drawn from the model's full distribution at scoring time (`Prediction.alternatives`),
  in random left/right order, and says how likely the LEFT one is the original, on an 11-point
  scale (1%, 10%, ..., 90%, 99%). Read as r = p_h(t*) / (p_h(t*) + p_h(t)), many such judgements
  estimate the person's loss on real text (analysis.pairwise, Redwood's estimator).
- **distribution** ("bet on the next token"): up to five candidate continuations with points, and
  "something else", 100 points in all: a distribution over a partition of the vocabulary that a
  proper score can judge beside the model's mass on the same cells (analysis.stated).

Both are stored as ordinary `guesses` rows through webapp.answers; what was shown and said goes in
`Guess.judgement` (shapes below, also in analysis/schema.py). Which pair a person sees is decided
by an HMAC of a per-answer key under the server's secret: the server finds the same pair again
when the answer arrives, and nobody who knows the scheme can tell the original's side from it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass
from typing import Any

from .game import known_logprob, token_view
from .lm import Tokenizer
from .models import Guess, Item

PAIRWISE_SCALE = (1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99)  # percent, the stops people answer on
TOTAL_POINTS = 100
MAX_BETS = 5
JUDGEMENT_MODES = ("pairwise", "distribution")


@dataclass(frozen=True)
class Pair:
    """The two tokens one person judges at one position: the true one and an alternative."""

    index: int  # position of the alternative in the prediction's drawn alternatives
    alternative_id: int
    alternative_text: str
    alternative_logprob: float  # ln G(alternative), exact, from scoring
    true_on_left: bool


def usable_alternatives(alternatives: dict[str, Any] | None, true_id: int | None) -> list[tuple[int, list]]:
    """(index, [token_id, logprob, text]) of the drawn alternatives that differ from the true
    token. A draw equal to the truth needs no person (its judgement is 1/2 by definition: the
    analysis counts it exactly from items.model_alternatives), so it is never shown."""
    if true_id is None or not alternatives:
        return []
    return [(i, tok) for i, tok in enumerate(alternatives.get("tokens") or []) if tok[0] != true_id]


def choose_pair(alternatives: dict[str, Any] | None, true_id: int | None, key: str, secret: bytes) -> Pair | None:
    """The pair shown for `key` (one person's answer to one position, e.g. "solo:<player>:<item>"),
    uniform over the usable alternatives, the side of the original a fair coin; None when the
    position has no alternative that differs from the truth."""
    usable = usable_alternatives(alternatives, true_id)
    if not usable:
        return None
    digest = hmac.new(secret, key.encode(), hashlib.sha256).digest()
    index, (token_id, logprob, text) = usable[int.from_bytes(digest[:8], "big") % len(usable)]
    return Pair(index, int(token_id), str(text), float(logprob), bool(digest[8] & 1))


def pairwise_judgement(pair: Pair, left_percent: int | None, true_logprob: float | None) -> dict[str, Any]:
    """The stored judgement: what was on the left, what the person said (None for a skip: the
    pair shown is kept all the same), and the model's numbers for both tokens (G of the truth and
    of the alternative, exact from scoring)."""
    left = left_percent / 100 if left_percent is not None else None
    true_probability = None if left is None else left if pair.true_on_left else round(1 - left, 10)
    return {
        "kind": "pairwise",
        "left_probability": left,
        "true_on_left": pair.true_on_left,
        "true_probability": true_probability,
        "alternative": {"index": pair.index, "id": pair.alternative_id, "text": pair.alternative_text,
                        "logprob": pair.alternative_logprob},
        "true_logprob": true_logprob,
    }


def model_pair_probability(true_logprob: float | None, alternative_logprob: float) -> float | None:
    """The model's own answer to the same question: G(t*) / (G(t*) + G(t))."""
    if true_logprob is None:
        return None
    return 1 / (1 + math.exp(alternative_logprob - true_logprob))


def stated_judgement(bets: list[tuple[str, int]], else_points: int, tokenizer: Tokenizer,
                     true_id: int | None, prediction) -> dict[str, Any]:
    """The stored distribution: each candidate as typed, its model tokens (tokenized on its own,
    like a typed guess), its points and the model's log-prob of its first token when known; the
    cell holding the true token (`true_cell`, len(bets) = something else; None for a stem)."""
    cells = []
    for text, points in bets:
        ids = tokenizer.tokenize(text)
        first = ids[0] if ids else None
        cells.append({"text": text, "token_ids": ids, "first_token_id": first, "points": points,
                      "model_logprob": known_logprob(prediction, first, true_id)})
    true_cell = None
    if true_id is not None:
        true_cell = next((i for i, c in enumerate(cells) if c["first_token_id"] == true_id), len(cells))
    return {"kind": "distribution", "bets": cells, "else_points": else_points, "true_cell": true_cell}


def model_true_cell_logprob(judgement: dict[str, Any]) -> float | None:
    """ln m(cell holding the true token) on the person's partition: the model's log score there
    (stored as the answer's model_logprob). Candidates sharing a first token count once; the
    "something else" cell gets 1 - the candidates' mass. None until every candidate's log-prob
    is known (a fill job completes them) or when there is no true token (a stem)."""
    if judgement.get("true_cell") is None:
        return None
    masses: dict[int, float] = {}
    for bet in judgement["bets"]:
        if bet["model_logprob"] is None:
            return None
        masses[bet["first_token_id"]] = bet["model_logprob"]
    bets = judgement["bets"]
    if judgement["true_cell"] < len(bets):
        return masses[bets[judgement["true_cell"]]["first_token_id"]]
    total = sum(math.exp(lp) for lp in masses.values())
    # float rounding must not turn a tiny rest into log(0): the rest is at least 1e-12
    return math.log(max(1.0 - total, 1e-12))


def probability_of_truth(judgement: dict | None) -> float | None:
    """The probability a stored judgement (webapp.judgements) gave to what really came next.

    pairwise: `true_probability` (the left percent, or 1 - it when the original was on the right);
    distribution: the points on every candidate whose first token is the true token, or on
    "something else" when none is, divided by 100. None for a skip, and for a distribution at a
    position without a true token (a stem)."""
    if not judgement:
        return None
    if judgement.get("kind") == "pairwise":
        return judgement.get("true_probability")
    if judgement.get("kind") == "distribution":
        bets, true_cell = judgement.get("bets") or [], judgement.get("true_cell")
        if true_cell is None:
            return None
        if true_cell >= len(bets):
            return judgement["else_points"] / TOTAL_POINTS
        first = bets[true_cell]["first_token_id"]
        return sum(b["points"] for b in bets if b["first_token_id"] == first) / TOTAL_POINTS
    return None


def stated_cells_view(judgement: dict[str, Any]) -> list[dict[str, Any]]:
    """The person's and the model's probability per cell for a reveal, candidates sharing a first
    token merged; the model's "something else" is exact only when every candidate's log-prob is
    known (otherwise None: a bound would be shown as if it were a number)."""
    merged: dict[int | None, dict[str, Any]] = {}
    for cell in judgement["bets"]:
        key = cell["first_token_id"]
        slot = merged.setdefault(key, {"texts": [], "points": 0, "model_logprob": cell["model_logprob"]})
        slot["texts"].append(cell["text"])
        slot["points"] += cell["points"]
    true_first = None
    if judgement.get("true_cell") is not None and judgement["true_cell"] < len(judgement["bets"]):
        true_first = judgement["bets"][judgement["true_cell"]]["first_token_id"]
    rows = []
    known = True
    model_total = 0.0
    for key, slot in merged.items():
        lp = slot["model_logprob"]
        known = known and lp is not None
        model_total += math.exp(lp) if lp is not None else 0.0
        rows.append({"texts": slot["texts"], "person": slot["points"] / TOTAL_POINTS,
                     "model": math.exp(lp) if lp is not None else None,
                     "is_true": key is not None and key == true_first})
    rows.append({"texts": [], "else": True, "person": judgement["else_points"] / TOTAL_POINTS,
                 "model": max(0.0, 1 - model_total) if known else None,
                 "is_true": judgement.get("true_cell") == len(judgement["bets"])})
    return rows


def pair_payload(pair: Pair, item: Item, tokenizer: Tokenizer) -> dict:
    """The two tokens as the player sees them (texts only, the original's side not told)."""
    true, other = token_view(item.token_id, tokenizer)["text"], token_view(pair.alternative_id, tokenizer)["text"]
    left, right = (true, other) if pair.true_on_left else (other, true)
    return {"left": {"text": left}, "right": {"text": right}, "scale": list(PAIRWISE_SCALE)}


def judgement_reveal(guess: Guess, tokenizer: Tokenizer) -> dict:
    """After a pairwise or distribution answer: the person's numbers beside the model's on the
    same question (the model's pair probability G(t*)/(G(t*)+G(t)); its mass on the same cells)."""
    j = guess.judgement or {}
    if guess.mode == "pairwise":
        alt, true_lp = j["alternative"], j["true_logprob"]
        model_true = model_pair_probability(true_lp, alt["logprob"])
        r = j["true_probability"]
        return {"pairwise": {
            "true_side": "left" if j["true_on_left"] else "right",
            "left_probability": j["left_probability"], "true_probability": r,
            "model_true_probability": model_true,
            "true": {"text": token_view(guess.item.token_id, tokenizer)["text"],
                     "prob": math.exp(true_lp) if true_lp is not None else None},
            "alternative": {"text": token_view(alt["id"], tokenizer)["text"], "prob": math.exp(alt["logprob"])},
            "log_score": {"person": math.log(r) if r else None,
                          "model": math.log(model_true) if model_true else None},
        }}
    if guess.mode == "distribution" and j:
        cells = stated_cells_view(j)
        truth = next((c for c in cells if c["is_true"]), None)
        return {"distribution": {
            "cells": cells,
            "person_true": truth["person"] if truth else None,
            "model_true": truth["model"] if truth else None,
        }}
    return {}
