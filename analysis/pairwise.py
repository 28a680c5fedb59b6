"""Human loss from pairwise judgements ("which token really came next?"), as in Redwood's study
of humans at next-token prediction (Shlegeris, Roger, Chan, McLean).

A person sees a prefix and two tokens: the true next token t* and a token t_i sampled from a
proposal model G (the scoring model's full distribution at T = 1). They say how likely the one
on the left is the original; turned to the true token's side this is r_i, read as
r_i = p_h(t*) / (p_h(t*) + p_h(t_i)), so 1/r_i - 1 = p_h(t_i) / p_h(t*).

Importance sampling: with t_i ~ G, E[p_h(t_i) / G(t_i)] = sum_t p_h(t) = 1, hence

    w_i = G(t*) (1/r_i - 1) / G(t_i)   has   E[w_i] = G(t*) / p_h(t*)

and Delta(c) = ln mean_i w_i estimates ln G(t*) - ln p_h(t*) = L_human(c) - L_G(c), the
difference of the two log losses at context c. Human loss = the model's loss + mean Delta;
perplexity = exp(loss). A draw equal to t* needs no judgement: its r is 1/2 exactly, w = 1; the
game never shows one, and `expected_weight` puts those draws back into each context's mean.

The logarithm of a mean is biased low (Jensen) when a context has few judgements, more so when
people's judgements are far from the ideal ones; `estimator_bias` measures it by simulation with
model players, as a function of judgements per context. Intervals: a two-way cluster bootstrap
over contexts and participants (the rule of analysis.bootstrap: V = V_P + V_C - V_J, at least the
larger of V_P and V_C), applied to the mean of per-context log means.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .bootstrap import DEFAULT_BOOT, DEFAULT_LEVEL, _counts

# The answer scale people use: 1%, 10%, 20%, ..., 90%, 99% (11 points).
SCALE = np.array([0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99])
ANSWER_KINDS = ("exact", "clipped", "rounded")


def judgement_weights(g_true_logprob, g_alt_logprob, r_true) -> np.ndarray:
    """w_i = G(t*) (1/r_i - 1) / G(t_i) for each judgement (r_i: the probability the person gave
    the TRUE token of being the original, in (0, 1))."""
    r = np.asarray(r_true, dtype=np.float64)
    if np.any((r <= 0) | (r >= 1)):
        raise ValueError("judgements must lie strictly between 0 and 1")
    return np.exp(np.asarray(g_true_logprob, float) - np.asarray(g_alt_logprob, float)) * (1 / r - 1)


def truth_share(draws, true_token: int) -> float:
    """The share of a context's stored draws (items.model_alternatives tokens) that equal the
    true token: the f of `expected_weight`."""
    draws = np.asarray(draws)
    if draws.size == 0:
        raise ValueError("a context needs at least one stored draw")
    return float(np.mean(draws == true_token))


def expected_weight(truth_share, judged_mean):
    """E_G[w] of a context: f x 1 + (1 - f) x (mean of w over its judged pairs).

    Why: the game never shows a pair whose alternative equals the true token t* (its judgement
    would be 1/2 by definition, so its weight G(t*) (1/r - 1) / G(t*) is exactly 1), so the
    judged alternatives are draws from G given that they differ from t*, and their mean weight
    estimates E_G[w | t != t*], not E_G[w]. Leaving the truth draws out would estimate
    E_G[w | t != t*] = (E_G[w] - G(t*)) / (1 - G(t*)), too low whenever E_G[w] < 1 (people
    give the true token more than G does) and too high whenever E_G[w] > 1. The two parts are put back together with
    f = the share of the context's stored draws that equal t*. Given the stored draws,
    f x 1 + (1 - f) x (mean w over the draws that differ from t*) is exactly Redwood's mean
    weight over all the draws (each truth draw counted at its weight 1), and each judged pair
    is a uniform pick among the draws that differ from t*, so the mean over the judged pairs
    estimates their mean without bias: the result has expectation E_G[w] = G(t*) / p_h(t*).
    (With the exact G(t*) in place of f the expectation would be the same; f keeps the
    estimate Redwood's sample mean of the draws that were actually made.) A context whose
    draws all equal t* has f = 1 and E_G[w] = 1 with no judgement; one without stored draws
    cannot be estimated."""
    f = np.asarray(truth_share, dtype=np.float64)
    return f + (1 - f) * np.asarray(judged_mean, dtype=np.float64)


def _context_log_means(sums: np.ndarray, counts: np.ndarray, share: np.ndarray | float = 0.0) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(expected_weight(share, sums / counts))


@dataclass
class HumanLoss:
    """The pairwise estimate over a set of contexts (natural-log losses, per token)."""

    n_contexts: int
    n_judgements: int
    n_participants: int
    model_loss: float  # mean over contexts of -ln G(t*)
    delta: float  # mean over contexts of Delta(c) = L_human(c) - L_G(c)
    delta_low: float
    delta_high: float
    loss_low: float  # the human loss's own interval (contexts vary the model's loss too)
    loss_high: float
    level: float

    @property
    def human_loss(self) -> float:
        return self.model_loss + self.delta

    @property
    def human_perplexity(self) -> float:
        return float(np.exp(self.human_loss))

    @property
    def model_perplexity(self) -> float:
        return float(np.exp(self.model_loss))


def human_loss(
    context: np.ndarray,
    participant: np.ndarray,
    g_true_logprob: np.ndarray,
    g_alt_logprob: np.ndarray,
    r_true: np.ndarray,
    *,
    truth_share: np.ndarray | None = None,
    level: float = DEFAULT_LEVEL,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
) -> HumanLoss:
    """Human loss, and its difference to the proposal model's, from one row per judgement.

    `context` and `participant` are integer labels; g_true_logprob is ln G(t*) of the row's
    context (the same on every row of a context). The model's loss is over the same contexts.
    `truth_share`: per row, the share f of its context's stored draws that equal the true token
    (`expected_weight`), when the rows hold only the judged pairs, as the game stores them;
    None when draws equal to the truth are rows of their own with r = 1/2 (model players).
    """
    context = np.asarray(context)
    participant = np.asarray(participant)
    if not (len(context) == len(participant) == len(g_true_logprob) == len(g_alt_logprob)
            == len(r_true)):
        raise ValueError("every column needs one value per judgement")
    if len(context) == 0:
        raise ValueError("no judgements")
    _, c_idx = np.unique(context, return_inverse=True)
    _, p_idx = np.unique(participant, return_inverse=True)
    n_c, n_p = int(c_idx.max()) + 1, int(p_idx.max()) + 1
    w = judgement_weights(g_true_logprob, g_alt_logprob, r_true)
    g_true = np.zeros(n_c)
    g_true[c_idx] = np.asarray(g_true_logprob, float)
    share = np.zeros(n_c)
    if truth_share is not None:
        if len(truth_share) != len(w):
            raise ValueError("every column needs one value per judgement")
        share[c_idx] = np.asarray(truth_share, float)

    def estimate(weights: np.ndarray | None, per_context: np.ndarray | None = None) -> np.ndarray:
        """(mean Delta, mean human loss) over contexts, for each row of judgement weights
        (R x N); `per_context` (R x C) counts how often each context was drawn (context
        resampling), else each context present counts once."""
        if weights is None:
            weights = np.ones((1, len(w)))
        sums = np.stack([np.bincount(c_idx, weights=row * w, minlength=n_c) for row in weights])
        counts = np.stack([np.bincount(c_idx, weights=row, minlength=n_c) for row in weights])
        present = counts > 0
        m = present.astype(float) if per_context is None else np.where(present, per_context, 0.0)
        logs = np.where(present, _context_log_means(sums, np.where(present, counts, 1.0), share), 0.0)
        total = m.sum(axis=1)
        delta_mean = (m * logs).sum(axis=1) / total
        return np.stack([delta_mean, delta_mean + (m * -g_true).sum(axis=1) / total], axis=1)

    delta, loss = estimate(None)[0]
    variances = []
    for labels, n, by_context in ((p_idx, n_p, False), (c_idx, n_c, True),
                                  (np.arange(len(w)), len(w), False)):
        if n < 2:
            variances.append(np.zeros(2))
            continue
        rng = np.random.default_rng([seed, n, len(w)])
        reps = []
        for start in range(0, n_boot, 100):
            W = _counts(rng, min(100, n_boot - start), n)
            reps.append(estimate(W[:, labels], W if by_context else None))
        reps = np.concatenate(reps)
        variances.append(np.nanvar(reps, axis=0, ddof=1) * n / (n - 1))
    v_p, v_c, v_j = variances
    var = np.fmax(v_p + v_c - v_j, np.fmax(v_p, v_c))
    z = NormalDist().inv_cdf(0.5 + level / 2)
    half = z * np.sqrt(var)
    return HumanLoss(
        n_contexts=n_c, n_judgements=len(w), n_participants=n_p,
        model_loss=float(-g_true.mean()), delta=float(delta),
        delta_low=float(delta - half[0]), delta_high=float(delta + half[0]),
        loss_low=float(loss - half[1]), loss_high=float(loss + half[1]), level=level,
    )


# ------------------------------------------------------------------------- model players


def round_to_scale(r: np.ndarray) -> np.ndarray:
    """A judgement as people give it: the nearest point of the 1%..99% answer scale."""
    r = np.asarray(r, dtype=np.float64)
    return SCALE[np.abs(r[..., None] - SCALE).argmin(axis=-1)]


def model_player_judgements(
    rng: np.random.Generator,
    g_logprobs: np.ndarray,
    h_logprobs: np.ndarray,
    truth: np.ndarray,
    n_per_context: int,
    *,
    n_participants: int = 20,
    answers: str = "exact",
) -> dict[str, np.ndarray]:
    """Judgements of a player whose beliefs are the distributions `h_logprobs` (C x V), on
    alternatives drawn from `g_logprobs` (C x V), the true tokens being `truth` (C,).

    `answers`: "exact" players answer r = H(t*)/(H(t*)+H(t)) (the estimator's ideal);
    "clipped" ones keep it within the scale's [1%, 99%]; "rounded" ones answer the scale's
    nearest point, as people do. A draw equal to t* gets r = 1/2 (it is not shown to anyone:
    its weight is exactly 1). Rows: one per judgement.
    """
    if answers not in ANSWER_KINDS:
        raise ValueError(f"answers must be one of {', '.join(ANSWER_KINDS)}")
    C, V = g_logprobs.shape
    g = np.exp(g_logprobs)
    alt = np.stack([rng.choice(V, size=n_per_context, p=g[c] / g[c].sum()) for c in range(C)])
    ctx = np.repeat(np.arange(C), n_per_context)
    alt = alt.ravel()
    t = truth[ctx]
    h_true, h_alt = h_logprobs[ctx, t], h_logprobs[ctx, alt]
    with np.errstate(over="ignore"):
        r = 1 / (1 + np.exp(h_alt - h_true))
    if answers == "exact":
        r = np.clip(r, 1e-300, 1 - 1e-16)  # within (0, 1) in floating point
    elif answers == "clipped":
        r = np.clip(r, SCALE[0], SCALE[-1])
    else:
        r = round_to_scale(r)
    r[alt == t] = 0.5
    return {
        "context": ctx,
        "participant": rng.integers(0, n_participants, size=len(ctx)),
        "g_true_logprob": g_logprobs[ctx, t],
        "g_alt_logprob": g_logprobs[ctx, alt],
        "r_true": r,
    }


def _draw(rng: np.random.Generator, logprobs: np.ndarray, n: int) -> np.ndarray:
    """C x n tokens drawn with replacement from each row's distribution (inverse CDF)."""
    cum = np.cumsum(np.exp(logprobs), axis=1)
    cum /= cum[:, -1:]
    u = rng.random((len(logprobs), n))
    return np.minimum((cum[:, None, :] < u[:, :, None]).sum(axis=2), logprobs.shape[1] - 1)


def _answer(r: np.ndarray, answers: str) -> np.ndarray:
    if answers == "exact":
        return np.clip(r, 1e-300, 1 - 1e-16)
    if answers == "clipped":
        return np.clip(r, SCALE[0], SCALE[-1])
    return round_to_scale(r)


def stored_draw_deltas(
    rng: np.random.Generator,
    g_logprobs: np.ndarray,
    h_logprobs: np.ndarray,
    truth: np.ndarray,
    n_per_context: int,
    n_draws: int,
    *,
    answers: str = "exact",
) -> np.ndarray:
    """Delta(c) per context as the game collects judgements: `n_draws` alternatives stored per
    context (drawn from G with replacement), `n_per_context` people each judging one of the
    draws that differ from the truth (uniform, so two may judge the same one), combined by
    `expected_weight` with the share of draws equal to the truth; a context whose draws all
    equal the truth has Delta = ln 1 = 0."""
    if answers not in ANSWER_KINDS:
        raise ValueError(f"answers must be one of {', '.join(ANSWER_KINDS)}")
    C = len(truth)
    rows = np.arange(C)[:, None]
    draws = _draw(rng, g_logprobs, n_draws)
    usable = draws != truth[:, None]
    f = 1 - usable.mean(axis=1)
    n_usable = usable.sum(axis=1)
    first = np.argsort(~usable, axis=1, kind="stable")  # the usable draws first
    pick = np.floor(rng.random((C, n_per_context)) * np.maximum(n_usable, 1)[:, None]).astype(int)
    alt = draws[rows, first[rows, pick]]
    t = truth[:, None]
    with np.errstate(over="ignore"):
        r = _answer(1 / (1 + np.exp(h_logprobs[rows, alt] - h_logprobs[rows, t])), answers)
    w = np.exp(g_logprobs[rows, t] - g_logprobs[rows, alt]) * (1 / r - 1)
    judged = np.where(n_usable > 0, w.mean(axis=1), 0.0)
    return np.log(expected_weight(f, judged))


def true_loss(logprobs: np.ndarray, truth: np.ndarray) -> float:
    """The mean log loss of a distribution over the true tokens: what the estimate aims at."""
    return float(-logprobs[np.arange(len(truth)), truth].mean())


def estimator_bias(
    g_logprobs: np.ndarray,
    h_logprobs: np.ndarray,
    truth: np.ndarray,
    judgements_per_context: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
    *,
    repeats: int = 20,
    answers: str = "exact",
    seed: int = 0,
    stored_draws: int | None = None,
) -> list[dict]:
    """Mean estimated minus true human loss, by judgements per context (model players whose
    beliefs are `h_logprobs`), over `repeats` simulated studies; the spread says how much one
    study's estimate varies. Negative = the estimate is too low (people look better).
    `stored_draws`: simulate the game's design (`stored_draw_deltas`: that many draws stored
    per context, judgements only on those that differ from the truth) instead of one fresh
    draw per judgement with a draw equal to the truth judged 1/2."""
    rng = np.random.default_rng(seed)
    target = true_loss(h_logprobs, truth)
    rows = []
    for n in judgements_per_context:
        estimates = []
        for _ in range(repeats):
            if stored_draws is not None:
                delta = stored_draw_deltas(rng, g_logprobs, h_logprobs, truth, n, stored_draws,
                                           answers=answers).mean()
                estimates.append(true_loss(g_logprobs, truth) + delta)
                continue
            j = model_player_judgements(rng, g_logprobs, h_logprobs, truth, n, answers=answers)
            w = judgement_weights(j["g_true_logprob"], j["g_alt_logprob"], j["r_true"])
            sums = np.bincount(j["context"], weights=w, minlength=len(truth))
            delta = np.log(sums / n).mean()
            estimates.append(true_loss(g_logprobs, truth) + delta)
        estimates = np.array(estimates)
        rows.append({
            "judgements_per_context": n, "true_loss": target,
            "mean_estimate": float(estimates.mean()), "bias": float(estimates.mean() - target),
            "sd_of_estimate": float(estimates.std(ddof=1)), "answers": answers,
        })
    return rows
