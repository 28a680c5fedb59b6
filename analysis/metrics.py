"""The metrics: who predicts text better, how well the model predicts people, how close the
distributions are, whether people learn, whether they are calibrated.

Each metric is a plain function of a loaded export (`analysis.load`) or of `analysis.prepare`d
answers, returning a DataFrame with the estimate, a two-way clustered confidence interval
(analysis.bootstrap) and the numbers of answers, items and participants behind it. Docstrings
state the formulas; the report's methods section is generated from them.
Selection keywords (mode, model_id, study_id, source, include_pilot, include_excluded,
missing, n_boot, seed) are passed to `analysis.prepare`.
"""

from __future__ import annotations

import itertools
from statistics import NormalDist

import numpy as np
import pandas as pd

from .answers import Prepared, get_prepared
from .bootstrap import DEFAULT_LEVEL, Design, twoway_bootstrap
from .reader import AnalysisError
from .temperature import interpolate_logz
from .tokens import CLASS_LABELS, CLASSES

FILTERS = {
    "all": "all tokens",
    "words": "whole words only",
    "no_punct": "no punctuation",
}


def _counts(prep: Prepared, rows: np.ndarray) -> dict:
    """Numbers of answers, items and participants behind a statistic (rows: mask or indices).

    Participants are people: imported answers that name no participant (answers.pooled; each is
    its own cluster in the bootstrap) are counted as n_unattributed instead."""
    d = prep.design
    mask = rows if rows.dtype == bool else np.isin(np.arange(d.n), rows)
    pooled = prep.answers["pooled"].to_numpy(dtype=bool) if "pooled" in prep.answers else np.zeros(d.n, bool)
    people = mask & ~pooled
    out = {
        "n_answers": int(mask.sum()),
        "n_items": int(np.count_nonzero(np.bincount(d.i_idx[mask], minlength=d.n_items))),
        "n_participants": int(np.count_nonzero(np.bincount(d.p_idx[people], minlength=d.n_participants))),
    }
    if pooled.any():
        out["n_unattributed"] = int((mask & pooled).sum())
    return out


def _result(rows: list[dict], prep: Prepared, **attrs) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df.attrs["notes"] = list(prep.notes)
    df.attrs.update(attrs)
    return df


def proportion_interval(row: dict) -> dict:
    """Intervals for proportions (accuracies, shares correct) are Wilson score intervals with
    the effective sample size of the clustered design, so they stay inside 0-100% and are
    asymmetric near the edges, where a normal interval would cross them.
    The two-way cluster bootstrap gives the standard error se of the proportion p; the design
    effect is deff = se^2 / (p (1 - p) / n) for the n answers behind it, and the effective
    sample size n_eff = n / deff = p (1 - p) / se^2 (never more than n: clustering is not
    allowed to make the data worth more than independent answers). Then, with z the normal
    quantile of the level,
        centre = (p + z^2 / (2 n_eff)) / (1 + z^2 / n_eff)
        half   = z / (1 + z^2 / n_eff) * sqrt(p (1 - p) / n_eff + z^2 / (4 n_eff^2))
        interval = centre -/+ half
    For p of exactly 0 or 1 the resampling has nothing to vary (se = 0; likewise when it shows no
    variation at all); then n_eff = min(answers, items, participants), a conservative effective
    sample size, and for p = 0 or 1 the interval is
    [0, z^2 / (n_eff + z^2)] or [n_eff / (n_eff + z^2), 1]. Differences of proportions keep the
    normal bootstrap interval, cut to [-1, 1]."""
    p, se = row["estimate"], row.get("se", np.nan)
    if not np.isfinite(p):
        return row

    def valid(key):
        v = row.get(key)
        return v is not None and not (isinstance(v, float) and np.isnan(v)) and v > 0

    counts = [int(row[k]) for k in ("n_answers", "n_items", "n_participants") if valid(k)]
    if not counts:
        return row
    n_max = int(row["n_answers"]) if valid("n_answers") else int(row["n_items"]) if valid("n_items") else max(counts)
    p = min(max(float(p), 0.0), 1.0)
    if 0.0 < p < 1.0 and np.isfinite(se) and se > 0:
        n_eff = min(p * (1 - p) / se ** 2, float(n_max))
    else:
        n_eff = float(min(counts))
    z = NormalDist().inv_cdf(0.5 + row["level"] / 2)
    denom = 1 + z * z / n_eff
    centre = (p + z * z / (2 * n_eff)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff * n_eff))
    row["ci_low"], row["ci_high"] = max(0.0, centre - half), min(1.0, centre + half)
    row["n_effective"] = n_eff
    return row


def _difference(row: dict) -> dict:
    row["ci_low"], row["ci_high"] = max(row["ci_low"], -1.0), min(row["ci_high"], 1.0)
    return row


def _row(res, m: int, **extra) -> dict:
    return {
        "estimate": float(res.estimate[m]), "ci_low": float(res.ci_low[m]),
        "ci_high": float(res.ci_high[m]), "se": float(res.se[m]), "level": res.level, **extra,
    }


# ------------------------------------------------------------------------------------ accuracy


def subset_masks(prep: Prepared) -> dict[tuple[str, str], np.ndarray]:
    """Answer masks for the accuracy filters and token classes of the TRUE next token (items
    without one, stems, are in none of them)."""
    a = prep.answers
    cls = a["token_class"].to_numpy()
    whole = prep.items["whole_word"].to_numpy(dtype=object)[a["i_idx"].to_numpy()]
    target = a["has_target"].to_numpy(dtype=bool)
    out = {
        ("filter", "all"): target,
        ("filter", "words"): (cls == "word_start") & (whole != False),
        ("filter", "no_punct"): (cls != "punctuation") & target,
    }
    for c in CLASSES:
        mask = cls == c
        if mask.any():
            out[("class", c)] = mask
    return out


def accuracy(
    data, *, min_crowd: int = 3, weighting: str = "answers", level: float = DEFAULT_LEVEL,
    **selection,
) -> pd.DataFrame:
    """Top-1 accuracy of individual humans, of the crowd's plurality answer, and of the model,
    on the same items, for each filter and token class.

    Humans: share of answers whose first token equals the true next token (token mode; word
    mode: the whole word matches). A skip counts as wrong.
        acc_humans = sum_a w_a correct_a / sum_a w_a
    Model: its most likely token equals the true next token (word mode: its most likely first
    token equals the word's first token, an upper bound of its word accuracy), taken on the
    items of the same answers: acc_model = sum_a w_a model_correct_i(a) / sum_a w_a.
    Crowd plurality: per item, the most common non-skip answer among all analysed answers
    (ties: the average over the tied answers, i.e. a random tie-break in expectation), on items
    with at least `min_crowd` non-skip answers only.
    Weights: w_a = 1 (each answer counts once; default) or w_a = 1 / answers to its item
    (weighting="items": each item counts once).
    Differences (humans - model, crowd - model, crowd - humans) are paired on the same answers.
    Intervals: two-way cluster bootstrap; the crowd's answer per item is computed once from all
    answers and resampled with its item (the plurality is not recomputed in each resample).
    Accuracies get the Wilson score interval with the design's effective sample size (see
    proportion_interval), differences the bootstrap's normal interval.
    Filters, by the class of the TRUE next token (analysis.tokens.token_class): all tokens;
    whole words only (the token starts a word and, where the export holds the next position of
    the same document, the next token does not continue it); no punctuation. Classes: word
    start, word continuation, punctuation, number, other.
    """
    prep = get_prepared(data, **selection)
    if weighting not in ("answers", "items"):
        raise AnalysisError("weighting must be 'answers' or 'items'")
    a = prep.answers
    if not a["has_target"].any():
        raise AnalysisError("no accuracy: the analysed items have no true continuation "
                            "(sentence stems imported without a target), so nothing to be right about")
    i_idx = a["i_idx"].to_numpy()
    h = a["correct"].to_numpy(dtype=float)
    m = a["model_correct"].to_numpy(dtype=float)
    items = prep.items
    crowd_ok = (items["n_nonskip"].to_numpy() >= min_crowd) & items["crowd_correct"].notna().to_numpy()
    kappa = crowd_ok[i_idx].astype(float)
    c = np.nan_to_num(items["crowd_correct"].to_numpy(dtype=float))[i_idx]
    w = np.ones(len(a)) if weighting == "answers" else 1.0 / items["n_analysed"].to_numpy()[i_idx]
    skipped = a["skipped"].to_numpy()
    near = (a["match_rule"].to_numpy() == "first_token_if_space_toggled")

    def stat(S):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.column_stack([
                S[:, 0] / S[:, 2], S[:, 3] / S[:, 6], S[:, 1] / S[:, 2],
                (S[:, 0] - S[:, 1]) / S[:, 2], (S[:, 3] - S[:, 5]) / S[:, 6],
                (S[:, 3] - S[:, 4]) / S[:, 6],
            ])

    who = ["humans", "crowd", "model", "humans − model", "crowd − model", "crowd − humans"]
    rows = []
    for (kind, group), mask in subset_masks(prep).items():
        if not mask.any():
            continue
        sel = np.flatnonzero(mask)
        ws, ks = w[sel], kappa[sel]
        Z = np.column_stack([h[sel] * ws, m[sel] * ws, ws, c[sel] * ks * ws, h[sel] * ks * ws,
                             m[sel] * ks * ws, ks * ws])
        res = twoway_bootstrap(Z, prep.design.subset(sel), stat, level=level)
        n_all = _counts(prep, mask)
        n_crowd = _counts(prep, mask & (kappa > 0))
        label = FILTERS[group] if kind == "filter" else CLASS_LABELS[group]
        for j, name in enumerate(who):
            crowd_row = name.startswith("crowd")
            r = _row(res, j, group_type=kind, group=group, label=label, who=name,
                     **(n_crowd if crowd_row else n_all))
            proportion_interval(r) if "−" not in name else _difference(r)
            if name == "humans":
                r["n_skipped"] = int(skipped[sel].sum())
                r["n_near_miss"] = int(near[sel].sum())
            rows.append(r)
    cols = ["group_type", "group", "label", "who", "estimate", "ci_low", "ci_high", "se",
            "level", "n_effective", "n_answers", "n_items", "n_participants", "n_unattributed",
            "n_skipped", "n_near_miss"]
    df = _result(rows, prep, weighting=weighting, min_crowd=min_crowd)
    return df[[c for c in cols if c in df.columns]]


# ----------------------------------------------------------------------------- simulator fit


def _fit_smoothing(c: np.ndarray, n: np.ndarray, u: np.ndarray) -> float:
    """beta maximising sum ln((c + beta u) / (n + beta)) (leave-one-out likelihood)."""
    def ll(log_beta: float) -> float:
        b = np.exp(log_beta)
        return float(np.sum(np.log(c + b * u)) - np.sum(np.log(n + b)))

    grid = np.linspace(np.log(1e-3), np.log(1e4), 57)
    vals = [ll(x) for x in grid]
    j = int(np.argmax(vals))
    lo, hi = grid[max(j - 1, 0)], grid[min(j + 1, len(grid) - 1)]
    g = (np.sqrt(5) - 1) / 2
    for _ in range(40):  # golden-section refinement
        x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
        if ll(x1) > ll(x2):
            hi = x2
        else:
            lo = x1
    return float(np.exp((lo + hi) / 2))


def _verdict(row: dict, zero: str, above: str, below: str, *, n_left_out: int = 0) -> dict:
    """Set row["verdict"] and row["verdict_basis"]: "exact" (a finding), "upper bound" (holds
    although some log-probs are only upper bounds) or "withheld" (the bounds or the answers
    left out could change it). Never a finding drawn from bounds: with bounded answers the
    estimate is an upper bound, so only "below 0" survives (the true value is lower still)."""
    lo, hi = row["ci_low"], row["ci_high"]
    nb, n = int(row.get("n_bounded") or 0), int(row.get("n_answers") or 0)
    share = f"{nb / n:.0%}" if n else "?"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        row["verdict"], row["verdict_basis"] = "not enough data", "withheld"
    elif nb and hi < 0:
        row["verdict"] = (f"{below} (even though {nb:,} of {n:,} answers ({share}) count at their "
                          "top-k upper bound, which can only flatter the model)")
        row["verdict_basis"] = "upper bound"
    elif nb:
        row["verdict"] = (f"no verdict yet: {nb:,} of {n:,} answers ({share}) lack exact model "
                          f"log-probs and count at their top-k upper bound, so the value is only "
                          f"an upper bound (at most {hi:.2f} nats/answer at the interval's top)")
        row["verdict_basis"] = "withheld"
    elif n_left_out:
        row["verdict"] = (f"no verdict yet: {n_left_out:,} answers without exact model log-probs "
                          "were left out; they lie outside the model's stored top-k, so leaving "
                          "them out favours the model")
        row["verdict_basis"] = "withheld"
    else:
        row["verdict"] = zero if lo <= 0 <= hi else (above if lo > 0 else below)
        row["verdict_basis"] = "exact"
    return row


def simulator_fit(
    data, *, smoothing: float | None = None, min_crowd: int = 3, level: float = DEFAULT_LEVEL,
    **selection,
) -> pd.DataFrame:
    """How well the model predicts people, against how well people predict each other.

    Model log-likelihood: LL_model = mean over non-skip answers a of l_a = ln p_model(a) (nats;
    token mode: of the answer's first token at T = 1; word mode: of the whole word).
    Leave-one-out crowd baseline on the same answers (items with >= min_crowd non-skip
    answers): the other people's answers to the same item, smoothed towards what people answer
    on all items:
        p_LOO(a) = (c_-a(a) + beta u(a)) / (N_i - 1 + beta),
        u(a)     = (g(a) - 1 + 1) / (G - 1 + V)
    where c_-a(a) = other answers to item i equal to a, N_i = non-skip answers to i, g(a) =
    answers equal to a over all items, G = all non-skip answers, V = the model's vocabulary size
    (add-one smoothing of the all-item answer frequencies; every token has u > 0). beta > 0 is
    chosen by maximising the leave-one-out likelihood itself (the most favourable smoothing for
    the crowd) unless `smoothing` gives it. LL_crowd = mean of ln p_LOO(a).
    Simulator fit: D = LL_model - LL_crowd (nats per answer), and the perplexity ratio
    exp(-D) = perplexity of people under the model / under the crowd. Verdict: the interval
    of D covers 0 -> "the model predicts a held-out person as well as the other people do";
    D > 0 -> the model predicts people better than the crowd does; D < 0 -> worse. The crowd
    baseline improves with more answers per item, so D > 0 with few answers is expected.
    Model-sample test (token mode): if people answered like samples from the model at T = 1,
    E[l_a] would be -H_i, minus the entropy (nats) of the model's full distribution at item i.
    D_self = mean(l_a + H_i(a)) over all non-skip answers. Interval covers 0 -> "indistinguishable
    from samples of the model"; D_self > 0 -> people pick the model's likely tokens more often
    than its own samples would (sharper, T < 1); D_self < 0 -> people's answers are less likely
    under the model than its own samples (more diverse or different).
    Answers with an unknown log-prob use the k-th stored log-prob (an upper bound; n_bounded).
    Then both D and D_self are upper bounds, and a verdict is never drawn from them: it is
    withheld ("no verdict yet", verdict_basis "withheld") unless even the upper interval limit is
    below 0 (verdict_basis "upper bound"). Answers left out for lack of a log-prob
    (missing="exclude") are the model's unlikely ones, so their absence favours the model: the
    verdict is withheld then too. verdict_basis "exact": every answer had its exact log-prob.
    Intervals: two-way cluster bootstrap of the per-answer values (each answer's leave-one-out
    probability is computed once from all answers).
    """
    prep = get_prepared(data, **selection)
    a = prep.answers
    lp = a["lp"].to_numpy()
    scored = ~np.isnan(lp)
    if not scored.any():
        raise AnalysisError("no answers with a model log-prob")
    n_item = a["n_item"].to_numpy()
    key = a["key"].to_numpy()
    V = float(prep.model.get("n_vocab") or 0) or 1.0
    answered = key >= 0
    glob = pd.Series(key[answered]).value_counts()
    g = np.zeros(len(a))
    g[answered] = glob.reindex(key[answered]).to_numpy()
    G = float(answered.sum())
    u = g / (G - 1 + V)  # (g - 1 + 1) / (G - 1 + V), the held-out answer removed
    crowd = scored & (n_item >= max(min_crowd, 2))
    c_minus = a["count_key"].to_numpy() - 1
    n_minus = n_item - 1
    beta = smoothing if smoothing is not None else (
        _fit_smoothing(c_minus[crowd], n_minus[crowd], u[crowd]) if crowd.any() else np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        l_crowd = np.log((c_minus + beta * u) / (n_minus + beta))
    status = a["lp_status"].to_numpy()
    rows = []

    def stat(S):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.column_stack([S[:, 0] / S[:, 2], S[:, 1] / S[:, 2],
                                    (S[:, 0] - S[:, 1]) / S[:, 2]])

    if crowd.any():
        sel = np.flatnonzero(crowd)
        res = twoway_bootstrap(np.column_stack([lp[sel], l_crowd[sel], np.ones(len(sel))]),
                               prep.design.subset(sel), stat, level=level)
        n = {**_counts(prep, crowd), "n_bounded": int((status[sel] == "bound").sum())}
        rows.append(_row(res, 0, metric="model_loglik", label="model log-likelihood of human "
                         "answers (nats/answer)", **n))
        rows.append(_row(res, 1, metric="crowd_loglik", label="leave-one-out crowd "
                         "log-likelihood (nats/answer)", **n))
        fit = _row(res, 2, metric="simulator_fit", label="simulator fit: model − crowd "
                   "(nats/answer)", **n)
        _verdict(fit, "the model predicts a held-out person as well as the other people do",
                 "the model predicts people better than the other people's answers do",
                 "people predict each other better than the model predicts them",
                 n_left_out=int(((status == "missing") & (n_item >= max(min_crowd, 2))).sum()))
        rows.append(fit)
        rows.append({**fit, "metric": "perplexity_ratio",
                     "label": "perplexity ratio model / crowd", "estimate": float(np.exp(-fit["estimate"])),
                     "ci_low": float(np.exp(-fit["ci_high"])), "ci_high": float(np.exp(-fit["ci_low"])),
                     "se": np.nan, "verdict": fit["verdict"], "verdict_basis": fit["verdict_basis"]})
    if prep.mode == "token":
        ent = a["entropy"].to_numpy()
        self_rows = scored & np.isfinite(ent)
        sel = np.flatnonzero(self_rows)
        res = twoway_bootstrap(np.column_stack([lp[sel], -ent[sel], np.ones(len(sel))]),
                               prep.design.subset(sel), stat, level=level)
        n = {**_counts(prep, self_rows), "n_bounded": int((status[sel] == "bound").sum())}
        rows.append(_row(res, 0, metric="model_loglik_all", label="model log-likelihood, all "
                         "answers (nats/answer)", **n))
        rows.append(_row(res, 1, metric="model_self_loglik", label="expected log-likelihood of "
                         "the model's own samples, −entropy (nats/answer)", **n))
        st = _row(res, 2, metric="model_sample_test", label="model-sample test: model − "
                  "expected (nats/answer)", **n)
        _verdict(
            st, "indistinguishable from samples of the model (T = 1)",
            "people choose the model's likely tokens more often than its own samples do "
            "(sharper than T = 1)",
            "people's answers are less likely under the model than its own samples "
            "(more varied than, or different from, the model)",
            n_left_out=int(((status == "missing") & np.isfinite(ent)).sum()))
        rows.append(st)
    df = _result(rows, prep, smoothing=beta, min_crowd=min_crowd, vocab_size=V)
    df["smoothing_beta"] = beta
    return df


# ------------------------------------------------------------------------ distribution distances


def answer_pairs(data, *, min_answers: int = 10, temperature: float = 1.0, **selection) -> pd.DataFrame:
    """(item, answered first token) pairs of items with >= min_answers non-skip answers:
    count, human share h = count / N_i, model probability m = exp(l / T - log Z_i(T)) where
    the token's log-prob l is known (NaN otherwise), and whether it is in the stored top-k."""
    prep = get_prepared(data, **selection)
    if prep.mode != "token":
        raise AnalysisError("distribution distances need token-mode answers (the model's word "
                            "distribution is not stored)")
    a = prep.answers
    items = prep.items
    chosen = items["n_nonskip"].to_numpy() >= min_answers
    sel = (a["key"].to_numpy() >= 0) & chosen[a["i_idx"].to_numpy()]
    known_lp = np.where(np.isin(a["lp_status"].to_numpy(), ["exact", "topk"]), a["lp"].to_numpy(), np.nan)
    df = pd.DataFrame({
        "i": a["i_idx"].to_numpy()[sel], "token_id": a["first_token_id"].to_numpy()[sel],
        "lp": known_lp[sel], "in_topk": a["in_topk"].to_numpy()[sel],
    })
    pairs = df.groupby(["i", "token_id"], sort=True).agg(
        count=("lp", "size"), lp=("lp", "max"), in_topk=("in_topk", "max")).reset_index()
    logz_t = _logz_at(prep, temperature)
    n_i = items["n_nonskip"].to_numpy()
    pairs["item_id"] = items["item_id"].to_numpy()[pairs["i"]]
    pairs["n_item"] = n_i[pairs["i"]]
    pairs["h"] = pairs["count"] / pairs["n_item"]
    pairs["m"] = np.exp(pairs["lp"] / temperature - logz_t[pairs["i"]])
    target = items["target_token_id"].fillna(-1).to_numpy(dtype=np.int64)  # -1: a stem
    pairs["is_target"] = pairs["token_id"].to_numpy() == target[pairs["i"]]
    pairs.attrs["chosen_items"] = np.flatnonzero(chosen)
    return pairs


def _logz_at(prep: Prepared, T: float) -> np.ndarray:
    on_grid = np.isclose(prep.temperatures, T, rtol=0, atol=1e-9)
    if on_grid.any():
        return prep.logz[:, int(np.argmax(on_grid))]
    return interpolate_logz(prep.logz, prep.temperatures, [T])[:, 0]


def item_distances(data, *, min_answers: int = 10, temperature: float = 1.0, **selection) -> pd.DataFrame:
    """Per item with >= min_answers non-skip answers: how close the human answer distribution
    h is to the model's distribution m (at temperature T, default 1; token mode).

    Support: the model's stored top-k tokens, every answered token whose model log-prob is
    known, and one "other" category holding the rest of the model's mass
    (m_other = 1 - known model mass) and the human answers whose log-prob is unknown (merged
    there, so with such answers the divergences are lower bounds). The model gives every token
    a positive probability, so h needs no smoothing for KL(h || m).
        KL      = sum_t h_t ln(h_t / m_t) - (s - 1) / (2N)   (nats; s = categories with h > 0,
                  N = answers; the Miller-Madow term removes the plug-in estimate's upward bias,
                  so KL can come out slightly negative when h is close to m)
        KL_plugin = the same without the correction
        JS      = 1/2 KL(h || M) + 1/2 KL(m || M), M = (h + m) / 2   (nats, 0 .. ln 2)
        TV      = 1/2 sum_t |h_t - m_t|   (0 .. 1)
        spearman = Spearman rank correlation (average ranks for ties) of h and m over the
                  model's stored top-k tokens (control tokens left out; h = 0 for tokens nobody
                  gave). The candidate set is chosen by the model alone on purpose: adding the
                  tokens people happened to give (a union) selects on h and makes the
                  correlation negative even for people who sample from the model, as soon as
                  answers are few compared with the plausible tokens. People's favourites the
                  model ranks low show up in model_mass_human_top1/top3 instead.
        H_human = -sum h ln h over distinct answers (nats, plug-in), H_human_mm adds (s-1)/(2N)
        H_model = entropy of the model's full distribution (nats; T = 1 only)
        model_mass_human_top1 / top3 = model probability of the humans' most common answer
                  (ties averaged) / summed over their 3 most common answers
        human_share_model_top = share of people who gave the model's most likely
                  (non-control) token
    """
    prep = get_prepared(data, **selection)
    pairs = answer_pairs(prep, min_answers=min_answers, temperature=temperature)
    chosen = pairs.attrs["chosen_items"]
    items = prep.items
    I = len(items)
    logz_t = _logz_at(prep, temperature)
    if len(chosen) == 0:
        df = pd.DataFrame(columns=["item_id", "n_answers", "kl", "js", "tv", "spearman"])
        df.attrs["notes"] = prep.notes + [f"no item has {min_answers} or more answers"]
        return df
    N = items["n_nonskip"].to_numpy().astype(float)
    i = pairs["i"].to_numpy()
    h = pairs["h"].to_numpy()
    m = pairs["m"].to_numpy()
    known = np.isfinite(m)
    with np.errstate(divide="ignore", invalid="ignore"):
        m_topk = np.exp(prep.topk_lp / temperature - logz_t[:, None])
    m_topk = np.where(np.isfinite(m_topk), m_topk, 0.0)
    M_topk = m_topk.sum(axis=1)
    in_topk = pairs["in_topk"].to_numpy(dtype=bool)
    M_ans_topk = np.bincount(i, weights=np.where(known & in_topk, m, 0), minlength=I)
    M_ans_out = np.bincount(i, weights=np.where(known & ~in_topk, m, 0), minlength=I)
    m_other = np.maximum(1.0 - M_topk - M_ans_out, 1e-12)
    h_other = np.bincount(i, weights=np.where(known, 0, h), minlength=I)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_terms = np.where(known, h * np.log(h / m), 0.0)
        kl = np.bincount(i, weights=kl_terms, minlength=I) + np.where(
            h_other > 0, h_other * np.log(h_other / m_other), 0.0)
        s = np.bincount(i, weights=known.astype(float), minlength=I) + (h_other > 0)
        tv = 0.5 * (np.bincount(i, weights=np.where(known, np.abs(h - m), 0), minlength=I)
                    + (M_topk - M_ans_topk) + np.abs(h_other - m_other))
        mix = (h + m) / 2
        js_terms = np.where(known, 0.5 * h * np.log(h / mix) + 0.5 * m * np.log(m / mix), 0.0)
        mo = (h_other + m_other) / 2
        js_other = np.where(h_other > 0, 0.5 * h_other * np.log(h_other / mo), 0.0) + \
            0.5 * m_other * np.log(m_other / mo)
        js = (np.bincount(i, weights=js_terms, minlength=I)
              + 0.5 * np.log(2) * (M_topk - M_ans_topk) + js_other)
    kl_mm = kl - (s - 1) / (2 * N)
    h_ent = -np.bincount(i, weights=h * np.log(h), minlength=I)
    n_distinct = np.bincount(i, minlength=I)
    h_ent_mm = h_ent + (n_distinct - 1) / (2 * N)

    # Top answers: rank the humans' answers by count (ties: higher model probability first).
    kth = np.exp(items["kth_logprob"].to_numpy() / temperature - logz_t)
    m_b = np.where(known, m, kth[i])
    order = np.lexsort((-m_b, -pairs["count"].to_numpy(), i))
    ranked = pd.DataFrame({"i": i[order], "count": pairs["count"].to_numpy()[order], "m": m_b[order]})
    ranked["rank"] = ranked.groupby("i").cumcount()
    top = ranked[ranked["count"] == ranked.groupby("i")["count"].transform("max")]
    mass_top1 = top.groupby("i")["m"].mean().reindex(np.arange(I)).to_numpy()
    mass_top3 = ranked[ranked["rank"] < 3].groupby("i")["m"].sum().reindex(np.arange(I)).to_numpy()
    cand = items["model_top_candidate_id"].to_numpy()
    share = pairs.loc[pairs["token_id"].to_numpy() == cand[i]].groupby("i")["h"].sum()
    share_top = share.reindex(np.arange(I)).fillna(0.0).to_numpy()
    spearman = _spearman(prep, pairs, chosen, temperature, logz_t)

    c = chosen
    out = pd.DataFrame({
        "item_id": items["item_id"].to_numpy()[c],
        "token_class": items["token_class"].to_numpy()[c],
        "target_text": items["target_text"].to_numpy()[c],
        "n_answers": N[c].astype(int),
        "n_distinct": n_distinct[c],
        "n_unknown": np.bincount(i, weights=(~known).astype(float), minlength=I)[c].astype(int),
        "kl": kl_mm[c], "kl_plugin": kl[c], "js": js[c], "tv": tv[c], "spearman": spearman[c],
        "h_human": h_ent[c], "h_human_mm": h_ent_mm[c],
        "h_model": items["model_entropy"].to_numpy(dtype=float)[c] if temperature == 1.0 else np.nan,
        "model_mass_human_top1": mass_top1[c], "model_mass_human_top3": mass_top3[c],
        "human_share_model_top": share_top[c],
        "temperature": temperature,
    })
    out.attrs["notes"] = list(prep.notes)
    out.attrs["min_answers"] = min_answers
    return out


def _spearman(prep, pairs, chosen, temperature, logz_t) -> np.ndarray:
    """Per item: Spearman correlation of human share and model probability over the model's
    stored top-k (non-control) tokens."""
    I = len(prep.items)
    k = prep.topk_ids.shape[1]
    ii = np.repeat(np.arange(I), k)
    toks = prep.topk_ids.ravel()
    take = (~prep.topk_ctrl.ravel()) & (toks >= 0) & np.isin(ii, chosen)
    cand = pd.DataFrame({"i": ii[take], "token_id": toks[take],
                         "m": np.exp(prep.topk_lp.ravel()[take] / temperature - logz_t[ii[take]])})
    share = pairs.set_index(["i", "token_id"])["h"]
    cand["h"] = share.reindex(pd.MultiIndex.from_arrays([cand["i"], cand["token_id"]])).fillna(0.0).to_numpy()
    grp = cand.groupby("i")
    cand["rh"] = grp["h"].rank(method="average")
    cand["rm"] = grp["m"].rank(method="average")
    cand["rh"] -= cand.groupby("i")["rh"].transform("mean")
    cand["rm"] -= cand.groupby("i")["rm"].transform("mean")
    cand["xy"], cand["xx"], cand["yy"] = cand["rh"] * cand["rm"], cand["rh"] ** 2, cand["rm"] ** 2
    sums = cand.groupby("i")[["xy", "xx", "yy"]].sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = sums["xy"] / np.sqrt(sums["xx"] * sums["yy"])
    rho = rho.where((sums["xx"] > 0) & (sums["yy"] > 0))
    return rho.reindex(np.arange(I)).to_numpy(dtype=float)


DISTANCE_COLUMNS = {
    "kl": "KL(human ‖ model), Miller–Madow corrected (nats)",
    "kl_plugin": "KL(human ‖ model), plug-in (nats)",
    "js": "Jensen–Shannon divergence (nats)",
    "tv": "total variation distance",
    "spearman": "Spearman rank correlation over the model's top-k",
    "h_human_mm": "entropy of human answers, Miller–Madow (nats)",
    "h_model": "entropy of the model (nats)",
    "model_mass_human_top1": "model probability of the humans' top answer",
    "model_mass_human_top3": "model probability of the humans' top 3 answers",
    "human_share_model_top": "share of people giving the model's top token",
}
# The range each per-item value lives in; mean intervals are cut to it.
DISTANCE_RANGES = {"kl_plugin": (0.0, np.inf), "js": (0.0, np.log(2)), "tv": (0.0, 1.0),
                   "spearman": (-1.0, 1.0), "h_human_mm": (0.0, np.inf), "h_model": (0.0, np.inf),
                   "model_mass_human_top1": (0.0, 1.0), "model_mass_human_top3": (0.0, 1.0),
                   "human_share_model_top": (0.0, 1.0)}


def distance_summary(
    data, *, min_answers: int = 10, temperature: float = 1.0, level: float = DEFAULT_LEVEL,
    distances: pd.DataFrame | None = None, **selection,
) -> pd.DataFrame:
    """Means over items of the per-item distances (item_distances), each item counting once,
    with an interval from resampling items (the per-item values already reflect the answers;
    participants are not resampled separately here). Items where a value is undefined (e.g. a
    rank correlation with no variation) are left out of that mean; n_items says how many count.
    Intervals are cut to the range of the value (e.g. 0 to 1 for probabilities and total
    variation, 0 to ln 2 for Jensen-Shannon); the bias-corrected KL may be negative per item.
    """
    prep = get_prepared(data, **selection)
    d = distances if distances is not None else item_distances(
        prep, min_answers=min_answers, temperature=temperature)
    rows = []
    if len(d):
        design = Design(None, np.arange(len(d)), n_boot=prep.design.n_boot, seed=prep.design.seed)
        for col, label in DISTANCE_COLUMNS.items():
            if col not in d:
                continue
            x = d[col].to_numpy(dtype=float)
            ok = np.isfinite(x)
            if not ok.any():
                continue
            res = twoway_bootstrap(np.column_stack([np.where(ok, x, 0), ok.astype(float)]),
                                   design, lambda S: (S[:, 0] / S[:, 1])[:, None], level=level,
                                   bounds=DISTANCE_RANGES.get(col))
            rows.append(_row(res, 0, metric=col, label=label, n_items=int(ok.sum()),
                             n_answers=int(d["n_answers"].to_numpy()[ok].sum()),
                             median=float(np.median(x[ok])), temperature=temperature))
    df = _result(rows, prep, min_answers=min_answers)
    return df


# ------------------------------------------------------------------------------ learning curve

LEARNING_BINS = (1, 2, 3, 5, 9, 17, 33, 65, 129, 257, 513, 1025, 2049, 4097)


def learning_curve(data, *, bins=LEARNING_BINS, level: float = DEFAULT_LEVEL, **selection) -> pd.DataFrame:
    """Accuracy against experience: answers grouped by answer_index (the participant's 1st,
    2nd, 3rd-4th, 5th-8th, ... answer; doubling bins). Per bin: human accuracy, the model's
    accuracy on the same answers' items (a difficulty control: if later items happen to be
    easier, the model's accuracy rises too), and humans - model, with two-way intervals:
    Wilson score intervals with the design's effective sample size for the accuracies (see
    proportion_interval; they stay within 0-100%), the normal interval for the difference.
    Imported answers that name no participant are left out (their order is not experience).
    """
    prep = get_prepared(data, **selection)
    a = prep.answers
    idx = a["answer_index"].to_numpy()
    person = ~a["pooled"].to_numpy(dtype=bool) & a["has_target"].to_numpy(dtype=bool)  # no stems
    h = a["correct"].to_numpy(dtype=float)
    m = a["model_correct"].to_numpy(dtype=float)
    edges = list(bins) + [np.inf]
    rows = []

    def stat(S):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.column_stack([S[:, 0] / S[:, 2], S[:, 1] / S[:, 2], (S[:, 0] - S[:, 1]) / S[:, 2]])

    for lo, hi in itertools.pairwise(edges):
        mask = (idx >= lo) & (idx < hi) & person
        if not mask.any():
            continue
        sel = np.flatnonzero(mask)
        res = twoway_bootstrap(np.column_stack([h[sel], m[sel], np.ones(len(sel))]),
                               prep.design.subset(sel), stat, level=level)
        top = int(min(hi - 1, idx[sel].max()))
        label = f"{lo}" if top == lo else f"{lo}–{top}"
        base = dict(bin=label, first=int(lo), last=top, center=float(np.exp(np.mean(np.log(idx[sel])))),
                    **_counts(prep, mask))
        for j, who in enumerate(["humans", "model", "humans − model"]):
            r = _row(res, j, who=who, **base)
            rows.append(proportion_interval(r) if j < 2 else _difference(r))
    return _result(rows, prep)


def learning_trend(data, *, level: float = DEFAULT_LEVEL, **selection) -> pd.DataFrame:
    """Do people improve? Least-squares slope of correctness on x = log2(answer_index),
    in accuracy points per doubling of the number of answers given:
        slope = sum (x - xbar)(y - ybar) / sum (x - xbar)^2
    for y = human correct (0/1) and for y = human correct - model correct on the same item (the
    change not explained by easier or harder items). Two-way interval; NaN if every answer has
    the same answer_index. Imported answers that name no participant are left out.
    """
    prep = get_prepared(data, **selection)
    a = prep.answers
    person = ~a["pooled"].to_numpy(dtype=bool) & a["has_target"].to_numpy(dtype=bool)  # no stems
    sel = np.flatnonzero(person)
    x = np.log2(a["answer_index"].to_numpy()[sel].astype(float))
    h = a["correct"].to_numpy(dtype=float)[sel]
    d = h - a["model_correct"].to_numpy(dtype=float)[sel]
    Z = np.column_stack([np.ones(len(sel)), x, x * x, h, x * h, d, x * d])

    def stat(S):
        with np.errstate(divide="ignore", invalid="ignore"):
            sxx = S[:, 2] - S[:, 1] ** 2 / S[:, 0]
            sh = (S[:, 4] - S[:, 1] * S[:, 3] / S[:, 0]) / sxx
            sd = (S[:, 6] - S[:, 1] * S[:, 5] / S[:, 0]) / sxx
            return np.column_stack([sh, sd])

    res = twoway_bootstrap(Z, prep.design.subset(sel), stat, level=level)
    n = _counts(prep, person)
    rows = [
        _row(res, 0, metric="slope_humans", label="change in human accuracy per doubling of "
             "answers given", **n),
        _row(res, 1, metric="slope_humans_minus_model", label="change in (human − model) "
             "accuracy per doubling of answers given", **n),
    ]
    return _result(rows, prep)


# --------------------------------------------------------------------------------- calibration

def calibration(data, *, n_bins: int = 10, level: float = DEFAULT_LEVEL, **selection) -> pd.DataFrame:
    """Reliability diagram data: for answers where people gave their own probability r of
    being right (guesses.reported_probability, non-skip), per bin of r (n_bins equal bins on
    [0, 1], the last includes 1): mean r (confidence) and the share correct (accuracy) with a
    two-way interval. For reference, the model's own top-1 reliability on the analysed items:
    confidence = its probability of its most likely token, accuracy = that token is right
    (each item once; interval from resampling items). Perfect calibration: accuracy = confidence.
    """
    prep = get_prepared(data, **selection)
    a = prep.answers
    edges = np.linspace(0, 1, n_bins + 1)
    rows = []

    def stat(S):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.column_stack([S[:, 0] / S[:, 2], S[:, 1] / S[:, 2]])

    r = a["reported_probability"].to_numpy()
    has = np.isfinite(r) & ~a["skipped"].to_numpy()
    y = a["correct"].to_numpy(dtype=float)
    for who, conf, corr, design, mask_all, units in _calibration_sets(prep, r, has, y):
        b = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
        for j in range(n_bins):
            mask = mask_all & (b == j)
            if not mask.any():
                continue
            sel = np.flatnonzero(mask)
            res = twoway_bootstrap(np.column_stack([corr[sel], conf[sel], np.ones(len(sel))]),
                                   design.subset(sel), stat, level=level)
            row = _row(res, 0, who=who, bin_low=edges[j], bin_high=edges[j + 1],
                       confidence=float(res.estimate[1]))
            if units == "answers":
                row.update(_counts(prep, mask))
            else:
                row.update(n_items=len(sel), n_answers=np.nan, n_participants=np.nan)
            rows.append(proportion_interval(row))
    return _result(rows, prep, n_bins=n_bins)


def _calibration_sets(prep, r, has, y):
    has = has & prep.answers["has_target"].to_numpy(dtype=bool)  # a stem has no right answer
    if has.any():
        yield "humans", np.where(has, r, 0.0), y, prep.design, has, "answers"
    items = prep.items
    conf = np.exp(items["model_top1_logprob"].to_numpy(dtype=float))
    corr = items["model_correct"].to_numpy(dtype=float)
    design = Design(None, np.arange(len(items)), n_boot=prep.design.n_boot, seed=prep.design.seed)
    yield ("model (top-1)", conf, corr, design,
           np.isfinite(conf) & items["has_target"].to_numpy(dtype=bool), "items")


def calibration_summary(data, *, n_bins: int = 10, level: float = DEFAULT_LEVEL, **selection) -> pd.DataFrame:
    """Calibration in single numbers, for people's reported probabilities r (non-skip answers
    that have one) and, for reference, the model's top-1 probability:
        mean confidence = mean r;  accuracy = mean correct
        overconfidence  = mean (r - correct)            (> 0: too sure)
        Brier score     = mean (r - correct)^2          (0 best; 0.25 = always saying 0.5)
        ECE             = sum over bins b of (n_b / n) |mean correct_b - mean r_b|
    (n_bins equal-width bins on [0, 1]). Two-way intervals (items only for the model).
    """
    prep = get_prepared(data, **selection)
    a = prep.answers
    r = a["reported_probability"].to_numpy()
    has = np.isfinite(r) & ~a["skipped"].to_numpy()
    y = a["correct"].to_numpy(dtype=float)
    edges = np.linspace(0, 1, n_bins + 1)
    rows = []
    for who, conf, corr, design, mask, units in _calibration_sets(prep, r, has, y):
        if not mask.any():
            continue
        sel = np.flatnonzero(mask)
        c, yy = conf[sel], corr[sel]
        b = np.clip(np.digitize(c, edges[1:-1]), 0, n_bins - 1)
        onehot = np.eye(n_bins)[b]
        Z = np.column_stack([np.ones(len(sel)), c, yy, (c - yy) ** 2, onehot * (yy - c)[:, None]])

        def stat(S):
            with np.errstate(divide="ignore", invalid="ignore"):
                n = S[:, 0]
                ece = np.abs(S[:, 4:]).sum(axis=1) / n
                return np.column_stack([S[:, 1] / n, S[:, 2] / n, (S[:, 1] - S[:, 2]) / n,
                                        S[:, 3] / n, ece])

        res = twoway_bootstrap(Z, design.subset(sel), stat, level=level)
        n = _counts(prep, mask) if units == "answers" else {
            "n_answers": np.nan, "n_items": len(sel), "n_participants": np.nan}
        for j, (metric, label) in enumerate([
            ("confidence", "mean confidence"), ("accuracy", "accuracy"),
            ("overconfidence", "overconfidence (confidence − accuracy)"),
            ("brier", "Brier score"), ("ece", "expected calibration error (ECE)"),
        ]):
            row = _row(res, j, who=who, metric=metric, label=label, **n)
            if metric == "accuracy":
                proportion_interval(row)
            elif metric in ("confidence", "brier", "ece"):  # means of values in [0, 1]
                row["ci_low"], row["ci_high"] = max(row["ci_low"], 0.0), min(row["ci_high"], 1.0)
            else:
                _difference(row)
            rows.append(row)
    return _result(rows, prep, n_bins=n_bins)
