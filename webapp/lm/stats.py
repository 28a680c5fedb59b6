"""Summaries of full-vocabulary next-token distributions (pure NumPy, no model, no Flask).

For each position we keep: the target token's log-probability and rank, the entropy, the top-k
tokens, and log Z(T) on a fixed temperature grid. Everything is exact over the full vocabulary
(float32 arithmetic, sums pairwise); nothing is renormalised.

Speed matters because this runs once per token of every document, beside a 262,144-way softmax.
log Z(T) = logsumexp(logprob / T) needs sum(p ** (1/T)) for each grid point. Instead of one exp()
per temperature we compute o = exp((logit - max) / 8) once and square it three times (giving the
powers 1/4, 1/2 and 1 of e = exp(logit - max)); each grid point with 1/T <= 1.5 is then one fused
dot product of two of those arrays (e.g. sum(e ** 1.5) = e . sqrt(e)). For 1/T >= 2 (T <= 0.5)
only tokens within 14 nats of the best can matter: the rest add less than 262,144 * e**-28, a
relative 2e-7, so those sums run over that small candidate set. That is why the grid is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# 1/T for each grid point, and how sum(e ** (1/T)) is computed: a dot product of two of the
# precomputed powers of e (names: e1 = e, h = e^1/2, q = e^1/4, o = e^1/8), or "window" (sum over
# the tokens within _WINDOW nats of the best only; exact to float32 precision for 1/T >= 2).
_GRID: tuple[tuple[float, str, str], ...] = (
    (4.0, "window", ""),
    (3.0, "window", ""),
    (2.5, "window", ""),
    (2.0, "window", ""),
    (1.5, "e1", "h"),
    (1.25, "e1", "q"),
    (1.125, "e1", "o"),
    (1.0, "total", ""),
    (0.75, "h", "q"),
    (0.625, "h", "o"),
    (0.5, "q", "q"),
    (0.375, "q", "o"),
    (0.25, "o", "o"),
)
TEMPERATURES: tuple[float, ...] = tuple(round(1.0 / x, 6) for x, _, _ in _GRID)
"""The fixed temperature grid, 0.25 to 4 (1/T = 4, 3, 2.5, 2, 1.5, 1.25, 1.125, 1, 0.75, ...)."""

# Tokens more than this many nats below the best: never in the top-k unless fewer than k tokens
# are inside the window (then a full partition runs), and negligible in sums with 1/T >= 2.
_WINDOW = 14.0


@dataclass
class DistributionSummary:
    """Per-position summaries for n positions (row i describes the distribution after token i)."""

    target_logprob: np.ndarray  # (n,) float64, log p(actual next token)
    target_rank: np.ndarray  # (n,) int64, 1 + number of tokens with strictly higher probability
    entropy: np.ndarray  # (n,) float64, nats
    top_ids: np.ndarray  # (n, k) int64, most likely first
    top_logprobs: np.ndarray  # (n, k) float64
    logz: np.ndarray  # (n, len(TEMPERATURES)) float64, logsumexp(logprob / T)


def summarize_logits(
    logits: np.ndarray, targets: np.ndarray | list[int], top_k: int
) -> DistributionSummary:
    """Summarise rows of raw logits (n x vocab) whose actual next tokens are `targets`."""
    logits = np.asarray(logits, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int64)
    n, vocab = logits.shape
    if targets.shape != (n,):
        raise ValueError(f"targets has shape {targets.shape}, expected ({n},)")
    k = min(top_k, vocab)
    out = DistributionSummary(
        target_logprob=np.empty(n),
        target_rank=np.empty(n, dtype=np.int64),
        entropy=np.empty(n),
        top_ids=np.empty((n, k), dtype=np.int64),
        top_logprobs=np.empty((n, k)),
        logz=np.empty((n, len(_GRID))),
    )
    eighth = np.empty(vocab, dtype=np.float32)  # (logit - max) / 8, all <= 0
    powers = {name: np.empty(vocab, dtype=np.float32) for name in ("o", "q", "h", "e1")}
    for i in range(n):
        row = logits[i]
        best = row.max()
        np.subtract(row, best, out=eighth)
        np.multiply(eighth, 0.125, out=eighth)
        o = np.exp(eighth, out=powers["o"])
        q = np.multiply(o, o, out=powers["q"])
        h = np.multiply(q, q, out=powers["h"])
        e1 = np.multiply(h, h, out=powers["e1"])
        total = float(e1.sum())
        lse = np.log(total)  # log Z(1) of the shifted logits
        # H = -sum p log p = lse - sum(e * shifted) / total, with shifted = 8 * eighth
        with np.errstate(invalid="ignore"):
            weighted = float(np.dot(e1, eighth))
        if np.isnan(weighted):  # -inf logits (masked tokens) give 0 * -inf; they contribute 0
            weighted = float(np.dot(e1, np.nan_to_num(eighth, neginf=0.0)))
        out.entropy[i] = lse - 8.0 * weighted / total
        target = targets[i]
        target_logit = row[target]
        out.target_logprob[i] = float(target_logit - best) - lse
        out.target_rank[i] = 1 + int(np.count_nonzero(row > target_logit))
        window = np.flatnonzero(eighth > -_WINDOW / 8)
        ids = _top_indices(eighth, window, k)
        out.top_ids[i] = ids
        out.top_logprobs[i] = 8.0 * eighth[ids].astype(np.float64) - lse
        window_shifted = 8.0 * eighth[window].astype(np.float64)
        for j, (inv_t, a, b) in enumerate(_GRID):
            # logsumexp(logprob / T) = log sum(e ** (1/T)) - lse / T   (logprob = shifted - lse)
            if a == "total":
                s = total
            elif a == "window":
                s = float(np.exp(window_shifted * inv_t).sum())
            else:
                s = float(np.dot(powers[a], powers[b]))
            out.logz[i, j] = np.log(s) - lse * inv_t
    return out


def _top_indices(values: np.ndarray, window: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest of `values` (logit - max) / 8, largest first, ties by lower id."""
    candidates = window
    if candidates.size < k:  # a very confident row: widen to 40 nats, then to everything
        candidates = np.flatnonzero(values > -40.0 / 8)
        if candidates.size < k:
            candidates = np.arange(values.size)
    if candidates.size > k:  # candidates are in ascending id order, so ties keep lower ids
        vals = values[candidates]
        kth = -np.partition(-vals, k - 1)[k - 1]
        above = candidates[vals > kth]
        tied = candidates[vals == kth]
        candidates = np.concatenate([above, tied[: k - above.size]])
    order = np.lexsort((candidates, -values[candidates]))
    return candidates[order]


def log_softmax_row(row: np.ndarray) -> np.ndarray:
    """Natural-log probabilities of one logits row, in float64 (for exact look-ups)."""
    row = np.asarray(row, dtype=np.float64)
    shifted = row - row.max()
    return shifted - np.log(np.exp(shifted).sum())
