"""Summaries of full-vocabulary next-token distributions (pure NumPy, no model, no Flask).

For each position we keep: the target token's log-probability and rank, the entropy, the top-k
tokens, and log Z(T) on a fixed temperature grid. Everything is exact over the full vocabulary
(float32 arithmetic, sums pairwise); nothing is renormalised.

Speed matters because this runs once per token of every document, beside a 262,144-way softmax.
log Z(T) = logsumexp(logprob / T) needs sum(p ** (1/T)) for each grid point. Instead of one exp()
per temperature we compute o = exp((logit - max) / 8) once (as exp2, the cheaper instruction) and
square it three times (giving the powers 1/4, 1/2 and 1 of e = exp(logit - max)); each grid point
with 1/T <= 1.5 is then one fused dot product of two of those arrays (e.g. sum(e ** 1.5) =
e . sqrt(e)). For 1/T >= 2 (T <= 0.5) only tokens within 14 nats of the best can matter: the rest
add less than 262,144 * e**-28, a relative 2e-7, so those sums run over that small window. That
is why the grid is fixed.

The top-k and the rank only concern the largest logits. The maxima of blocks of 512 tokens (one
cheap vectorised reduction, which also gives the row's maximum) bound them: the k-th largest block
maximum is at most the k-th largest logit, so only the tokens at or above it in the few blocks
that reach it (typically about k tokens) are sorted, and a target's rank counts only in the
blocks whose maximum exceeds the target's logit.
"""

from __future__ import annotations

from collections.abc import Sequence
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

# Tokens more than this many nats below the best are negligible in sums with 1/T >= 2.
_WINDOW = 14.0


@dataclass
class DistributionSummary:
    """Per-position summaries for n positions (row i describes the distribution after token i).

    A backend that knows only the top-k (openai:) marks what it cannot know, never estimating
    it: NaN entropy, log Z and target log-prob (absent), target rank -1 (beyond its top-k), and
    top_ids -1 / top_logprobs NaN in top-k slots it could not fill. Stored as NULL / left out
    (webapp/predictions.py). A row with no actual next token (a stem) has target rank 0.
    """

    target_logprob: np.ndarray  # (n,) float64, log p(actual next token)
    target_rank: np.ndarray  # (n,) int64, 1 + number of tokens with strictly higher probability
    entropy: np.ndarray  # (n,) float64, nats
    top_ids: np.ndarray  # (n, k) int64, most likely first
    top_logprobs: np.ndarray  # (n, k) float64
    logz: np.ndarray  # (n, len(TEMPERATURES)) float64, logsumexp(logprob / T)
    # Tokens drawn from the full distribution at T = 1 (pairwise judgements), when asked:
    alt_ids: np.ndarray | None = None  # (n, a) int64, in the order drawn
    alt_logprobs: np.ndarray | None = None  # (n, a) float64, their exact log-probs


_BLOCK = 512
_EIGHTH_LOG2E = float(np.log2(np.e)) / 8  # exp(x / 8) = exp2(x * log2(e) / 8)


_DRAW_BLOCK = 512


def _inverse_cdf(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Token ids drawn by inverse CDF from unnormalised `weights` at uniforms `u` in [0, 1):
    the first id whose running sum exceeds u * total. The running sum is taken per block of
    512 ids and then only inside the blocks the draws land in, in float64: the same ids as one
    cumulative sum over the whole vocabulary (tested), at a twentieth of its cost per position."""
    vocab = weights.shape[0]
    starts = np.arange(0, vocab, _DRAW_BLOCK)
    cum = np.cumsum(np.add.reduceat(weights, starts, dtype=np.float64))
    drawn = u * cum[-1]
    blocks = np.minimum(np.searchsorted(cum, drawn, side="right"), len(cum) - 1)
    ids = np.empty(len(u), dtype=np.int64)
    for j, (block, target) in enumerate(zip(blocks.tolist(), drawn.tolist(), strict=True)):
        start = int(starts[block])
        within = target - (float(cum[block - 1]) if block else 0.0)
        local = np.cumsum(weights[start:start + _DRAW_BLOCK], dtype=np.float64)
        ids[j] = start + min(int(np.searchsorted(local, within, side="right")), len(local) - 1)
    return ids


def summarize_logits(
    logits: np.ndarray, targets: np.ndarray | list[int], top_k: int, *,
    alternatives: int = 0, seeds: Sequence[Sequence[int]] | None = None,
) -> DistributionSummary:
    """Summarise rows of raw logits (n x vocab) whose actual next tokens are `targets`.

    A target of -1 means the row has no actual next token (the distribution after a stem's
    last token): its target_logprob is NaN and its target_rank 0; the rest is summarised.
    With `alternatives` = a > 0, also a tokens drawn (with replacement) from each row's full
    distribution at T = 1, row i's draws from numpy's default generator seeded with seeds[i]
    (inverse CDF over exp(logit - max), whose cumulative sum is exact to float64 rounding), and
    their exact log-probs: the proposals of the pairwise game (analysis/pairwise.py)."""
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
    if alternatives:
        if seeds is None or len(seeds) != n:
            raise ValueError("drawing alternatives needs one seed per row")
        out.alt_ids = np.empty((n, alternatives), dtype=np.int64)
        out.alt_logprobs = np.empty((n, alternatives))
    blocks = _Blocks(vocab, k)
    scaled = np.empty(vocab, dtype=np.float32)  # (logit - max) * log2(e) / 8, all <= 0
    powers = np.empty((4, vocab), dtype=np.float32)  # rows o, q, h, e1 (see _GRID)
    o, q, h, e1 = powers
    window_edge = -_WINDOW * _EIGHTH_LOG2E
    for i in range(n):
        row = logits[i]
        maxima = blocks.maxima(row)
        best = maxima.max()
        np.subtract(row, best, out=scaled)
        np.multiply(scaled, _EIGHTH_LOG2E, out=scaled)
        np.exp2(scaled, out=o)
        np.multiply(o, o, out=q)
        np.multiply(q, q, out=h)
        np.multiply(h, h, out=e1)
        total = float(e1.sum())
        lse = float(np.log(total))  # log Z(1) of the shifted logits
        # H = -sum p log p = lse - sum(e * shifted) / total, with shifted = scaled / c
        with np.errstate(invalid="ignore"):
            weighted = float(np.dot(e1, scaled))
        if np.isnan(weighted):  # -inf logits (masked tokens) give 0 * -inf; they contribute 0
            weighted = float(np.dot(e1, np.nan_to_num(scaled, neginf=0.0)))
        out.entropy[i] = lse - weighted / _EIGHTH_LOG2E / total
        if alternatives:
            alt = _inverse_cdf(e1, np.random.default_rng(list(seeds[i])).random(alternatives))
            out.alt_ids[i] = alt
            out.alt_logprobs[i] = (row[alt].astype(np.float64) - float(best)) - lse
        # sum(e ** (1/T)) for 1/T <= 1.5: each row of `powers` against e1, h and q (gemv), o . o
        with_e1 = powers[:3] @ e1  # 1/T = 1.125, 1.25, 1.5
        with_h = powers[:2] @ h  # 0.625, 0.75
        with_q = powers[:2] @ q  # 0.375, 0.5
        sums = {
            1.5: with_e1[2], 1.25: with_e1[1], 1.125: with_e1[0], 1.0: total,
            0.75: with_h[1], 0.625: with_h[0], 0.5: with_q[1], 0.375: with_q[0],
            0.25: np.dot(o, o),
        }
        window = scaled[scaled > window_edge].astype(np.float64) / _EIGHTH_LOG2E  # shifted
        logz = out.logz[i]
        for j, (inv_t, how, _b) in enumerate(_GRID):
            # logsumexp(logprob / T) = log sum(e ** (1/T)) - lse / T   (logprob = shifted - lse)
            s = float(np.exp(window * inv_t).sum()) if how == "window" else float(sums[inv_t])
            logz[j] = np.log(s) - lse * inv_t
        candidates, kth = blocks.top_candidates(row, maxima)
        ids = _top_indices(row, candidates, k)
        out.top_ids[i] = ids
        out.top_logprobs[i] = (row[ids].astype(np.float64) - float(best)) - lse
        target = targets[i]
        if target < 0:  # no actual next token
            out.target_logprob[i], out.target_rank[i] = np.nan, 0
            continue
        target_logit = row[target]
        out.target_logprob[i] = float(target_logit - best) - lse
        if target_logit >= kth:  # every token above it is a candidate
            above = int(np.count_nonzero(row[candidates] > target_logit))
        else:
            above = blocks.count_above(row, maxima, target_logit)
        out.target_rank[i] = 1 + above
    return out


class _Blocks:
    """The row cut into blocks of 512 tokens (the last may be shorter). Their maxima, one cheap
    vectorised reduction, bound the largest logits: the k-th largest block maximum is at most
    the k-th largest logit, so the top-k lies in the blocks whose maximum reaches it, and the
    tokens above any value lie in the blocks whose maximum exceeds it."""

    def __init__(self, vocab: int, k: int) -> None:
        self.vocab, self.k = vocab, k
        self.starts = np.arange(0, vocab, _BLOCK)
        self.n = self.starts.size
        self.n_full = vocab // _BLOCK
        self.useful = self.n >= 4 * k

    def maxima(self, row: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(row, self.starts)

    def _ids(self, row: np.ndarray, chosen: np.ndarray, keep) -> np.ndarray:
        """Ascending ids in the chosen blocks (ascending) whose values pass `keep`."""
        parts = []
        full = chosen[chosen < self.n_full]
        if full.size:
            values = row[: self.n_full * _BLOCK].reshape(self.n_full, _BLOCK)[full]
            local = np.flatnonzero(keep(values))
            parts.append(full[local // _BLOCK] * _BLOCK + local % _BLOCK)
        if full.size < chosen.size:  # the short last block
            start = self.n_full * _BLOCK
            parts.append(start + np.flatnonzero(keep(row[start:])))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def top_candidates(self, row: np.ndarray, maxima: np.ndarray) -> tuple[np.ndarray, float]:
        """Ascending ids that surely include the k largest logits and every token tied with
        the k-th, and the bound they all reach (-inf: every token)."""
        if not self.useful:
            return np.arange(self.vocab), -np.inf
        kth = np.partition(maxima, self.n - self.k)[self.n - self.k]
        return self._ids(row, np.flatnonzero(maxima >= kth), lambda v: v >= kth), kth

    def count_above(self, row: np.ndarray, maxima: np.ndarray, value) -> int:
        """How many tokens have a logit strictly above `value`."""
        hot = np.flatnonzero(maxima > value)
        if hot.size * 8 > self.n:
            return int(np.count_nonzero(row > value))
        return self._ids(row, hot, lambda v: v > value).size if hot.size else 0


def _top_indices(row: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """The k largest logits among `candidates` (ascending ids), largest first, ties by lower id."""
    values = row[candidates]
    if candidates.size > k:
        kth = np.partition(values, candidates.size - k)[candidates.size - k]
        above = np.flatnonzero(values > kth)
        tied = np.flatnonzero(values == kth)[: k - above.size]  # lower ids first
        keep = np.sort(np.concatenate([above, tied]))
        candidates, values = candidates[keep], values[keep]
    order = np.lexsort((candidates, -values))
    return candidates[order]


def log_softmax_row(row: np.ndarray) -> np.ndarray:
    """Natural-log probabilities of one logits row, in float64 (for exact look-ups)."""
    row = np.asarray(row, dtype=np.float64)
    shifted = row - row.max()
    return shifted - np.log(np.exp(shifted).sum())
