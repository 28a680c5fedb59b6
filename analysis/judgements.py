"""Pairwise judgements and stated distributions in an export: from the rows of guesses (mode
pairwise or distribution, the answer in guesses.judgement) to the report's numbers, per model.

`pairwise_loss` estimates people's loss on the text with Redwood's estimator (analysis.pairwise),
`stated_scores` compares people's stated distributions with the model's on the same cells
(analysis.stated). Both choose answers with `analysis.answers.select_rows` (the same pilot,
exclusion and check rules as every other measure) and say in `left_out` what they could not use
and why: nothing is dropped silently.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from . import pairwise as pw
from . import stated
from .answers import counted, select_rows
from .bootstrap import DEFAULT_BOOT, DEFAULT_LEVEL
from .reader import ExportData

BIAS_COUNTS = (1, 2, 4, 8, 16)
BIAS_TOLERANCE = 0.05  # nats per token: a simulated bias at least this large is worth a caveat
MAX_SIMULATED_CONTEXTS = 200
MAX_TAIL_TOKENS = 200


def _missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _rows(data: ExportData, mode: str, selection: dict) -> tuple[pd.DataFrame, list[str]]:
    keep, notes = select_rows(data, **{k: selection.get(k) for k in ("study_id", "source")},
                              include_pilot=bool(selection.get("include_pilot")),
                              include_excluded=bool(selection.get("include_excluded")))
    g = data.guesses
    mine = (g["mode"] == mode).to_numpy(dtype=bool)
    if not (mine & keep).any() and mine.any():
        notes.append(f"every {mode} answer was left out by the filters")
    return g.loc[mine & keep], [n for n in notes if mine.any()]


def _model_of(g: pd.DataFrame, items: pd.DataFrame) -> np.ndarray:
    """The model whose numbers a row carries: guesses.model_id, else its item's model."""
    own = g["model_id"].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    item_model = items["model_id"].astype("Float64").reindex(g["item_id"].to_numpy())
    return np.where(np.isnan(own), item_model.to_numpy(dtype=np.float64, na_value=np.nan), own)


def _model_name(data: ExportData, model_id: int) -> str:
    m = data.models[data.models["model_id"] == model_id]
    return str(m["name"].iloc[0]) if len(m) else f"model {model_id}"


# ------------------------------------------------------------------------------- pairwise


def pairwise_rows(data: ExportData, **selection) -> tuple[pd.DataFrame, list[str], Counter]:
    """One row per usable pairwise judgement (columns model_id, item_id, participant_id, r_true,
    g_true_logprob, g_alt_logprob, truth_share, n_draws), the selection's notes, and the
    judgements left out, counted by reason (model_id, reason)."""
    g, notes = _rows(data, "pairwise", selection)
    items = data.items.set_index("item_id")
    model = _model_of(g, items)
    left: Counter = Counter()
    out = []
    for (row, m) in zip(g.itertuples(index=False), model):
        m = None if np.isnan(m) else int(m)
        j = row.judgement
        if row.skipped or (isinstance(j, dict) and _missing(j.get("true_probability"))
                           and _missing(j.get("left_probability"))):
            left[(m, "skipped")] += 1
            continue
        if not isinstance(j, dict) or j.get("kind") != "pairwise" or not isinstance(j.get("alternative"), dict):
            left[(m, "no pairwise judgement stored in the row")] += 1
            continue
        r = j.get("true_probability")
        if _missing(r):
            r = j["left_probability"] if j.get("true_on_left") else 1 - j["left_probability"]
        item = items.loc[row.item_id]
        target = item["target_token_id"]
        g_true = j.get("true_logprob")
        if _missing(g_true) and not _missing(row.model_target_logprob):
            g_true = row.model_target_logprob
        g_alt = j["alternative"].get("logprob")
        draws = item["model_alternatives"]
        if m is None or _missing(g_true) or _missing(g_alt) or _missing(target):
            left[(m, "without the model's log-probs of both tokens (or without a true token)")] += 1
            continue
        if not isinstance(draws, dict) or not draws.get("tokens"):
            left[(m, ("on items whose drawn alternatives are not in the export "
                     "(items.model_alternatives empty), so the share of draws equal to the "
                     "true token is unknown"))] += 1
            continue
        if not _missing(item["model_id"]) and int(item["model_id"]) != m:
            left[(m, "on items whose drawn alternatives come from another model")] += 1
            continue
        if j["alternative"].get("id") == target:
            left[(m, ("whose alternative is the true token itself (never shown by the game: "
                     "such draws count through the share of draws equal to the truth)"))] += 1
            continue
        if not 0 < float(r) < 1:
            left[(m, "with a probability not strictly between 0 and 1")] += 1
            continue
        ids = [t[0] for t in draws["tokens"]]
        out.append({"model_id": m, "item_id": int(row.item_id), "participant_id": row.participant_id,
                    "r_true": float(r), "g_true_logprob": float(g_true), "g_alt_logprob": float(g_alt),
                    "truth_share": pw.truth_share(ids, int(target)), "n_draws": len(ids)})
    cols = ["model_id", "item_id", "participant_id", "r_true", "g_true_logprob", "g_alt_logprob",
            "truth_share", "n_draws"]
    return pd.DataFrame(out, columns=cols), notes, left


def _logsoftmax(x: np.ndarray) -> np.ndarray:
    finite = np.isfinite(x)
    mx = np.max(np.where(finite, x, -np.inf), axis=1, keepdims=True)
    z = np.log(np.sum(np.where(finite, np.exp(x - mx), 0.0), axis=1, keepdims=True)) + mx
    return np.where(finite, x - z, -np.inf)


def proposal_from_export(items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """G as far as an export knows it, for simulations: per item the stored top-k tokens, the
    true token and the drawn alternatives at their exact log-probs, and the rest of the mass
    (1 - what is known) spread evenly over tail tokens no more likely than the least likely
    known one (at most MAX_TAIL_TOKENS of them). Returns (items x V log-probs, padded with
    -inf; the true token's column per item)."""
    rows, truth = [], []
    for it in items.itertuples(index=False):
        known: dict[int, float] = {}
        for t in it.model_top_k or []:
            known[int(t[0])] = float(t[1])
        for t in (it.model_alternatives or {}).get("tokens") or []:
            known[int(t[0])] = float(t[1])
        known[int(it.target_token_id)] = float(it.model_target_logprob)
        lp = np.array(list(known.values()))
        rest = 1.0 - float(np.exp(lp).sum())
        if rest > 1e-9:
            n_tail = int(np.clip(np.ceil(rest / np.exp(lp.min())), 1, MAX_TAIL_TOKENS))
            lp = np.append(lp, np.full(n_tail, np.log(rest / n_tail)))
        rows.append(lp)
        truth.append(list(known).index(int(it.target_token_id)))
    V = max(len(r) for r in rows)
    g = np.full((len(rows), V), -np.inf)
    for i, r in enumerate(rows):
        g[i, :len(r)] = r
    return _logsoftmax(g), np.array(truth, dtype=np.int64)


def simulated_players(g: np.ndarray, truth: np.ndarray, delta: float, *, seed: int = 0) -> np.ndarray:
    """Beliefs H of model players for the bias simulation, whose loss exceeds G's by `delta` on
    these contexts (`matched_gap` chooses it): G with independent Gaussian noise on every token's
    log-prob, its size chosen to give that gap when the gap is positive (0.5 nats otherwise),
    and the true token's log-prob then shifted by one constant to give it exactly."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(g.shape)
    rows = np.arange(len(truth))
    onehot = np.zeros_like(g)
    onehot[rows, truth] = 1.0
    g_true = g[rows, truth]

    def gap(noise: float, shift: float) -> float:
        h = _logsoftmax(g + noise * z + shift * onehot)
        return float(np.mean(g_true - h[rows, truth]))

    def solve(fn, lo: float, hi: float, increasing: bool) -> float:
        for _ in range(50):
            mid = (lo + hi) / 2
            if (fn(mid) < delta) == increasing:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    noise = solve(lambda s: gap(s, 0.0), 0.0, 6.0, True) if delta > 0 else 0.5
    shift = solve(lambda a: gap(noise, a), -40.0, 40.0, False)
    return _logsoftmax(g + noise * z + shift * onehot)


def matched_gap(g: np.ndarray, truth: np.ndarray, estimate: float, per_context: int,
                n_draws: int, answers: str, *, repeats: int = 8, seed: int = 0) -> float:
    """The loss gap of model players (`simulated_players`) whose pairwise estimate, collected
    as in this export (`per_context` judgements and `n_draws` stored draws per context, answers
    "exact" or "rounded"), comes out at the export's `estimate` on average: the gap the
    estimate points to once its own bias is allowed for. Calibrating the players to the raw
    estimate instead would understate the bias exactly when it is large (few judgements per
    context make the estimate low, and players close to the model have little bias)."""
    def simulated(gap: float) -> float:
        h = simulated_players(g, truth, gap, seed=seed)
        rng = np.random.default_rng([seed, 7])  # the same draws for every gap tried
        return float(np.mean([pw.stored_draw_deltas(rng, g, h, truth, per_context, n_draws,
                                                     answers=answers).mean()
                              for _ in range(repeats)]))

    lo, hi = estimate - 1.5, estimate + 1.5  # the simulated estimate grows with the gap
    if simulated(lo) >= estimate:
        return lo
    if simulated(hi) <= estimate:
        return hi
    while hi - lo > 0.01:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if simulated(mid) < estimate else (lo, mid)
    return (lo + hi) / 2


def bias_table(items: pd.DataFrame, estimate: float, *, per_context: float = 1,
               answers: str = "rounded", counts=BIAS_COUNTS, repeats: int = 20,
               seed: int = 0) -> pd.DataFrame:
    """The estimator's bias by judgements per context on this export's own contexts and model
    (`proposal_from_export`, at most MAX_SIMULATED_CONTEXTS of them), judged as the game asks
    (`estimator_bias` with stored_draws = the export's median number of drawn alternatives per
    item) by model players (`simulated_players`) whose loss gap to the model is the one that
    `estimate` points to (`matched_gap`, at the export's median `per_context` judgements and
    kind of `answers`; the report passes the upper end of the difference's interval, the
    largest gap the data allow, since the bias grows with the gap): with exact answers (the bias of the log of a mean, Jensen) and with
    answers rounded to the 1%..99% scale as people give them (rounding caps how sure a
    judgement can be). One row per count: mean estimated minus true loss (nats per token) over
    `repeats` simulated studies, and the spread of single estimates."""
    rng = np.random.default_rng(seed)
    if len(items) > MAX_SIMULATED_CONTEXTS:
        items = items.iloc[np.sort(rng.choice(len(items), MAX_SIMULATED_CONTEXTS, replace=False))]
    g, truth = proposal_from_export(items)
    n_draws = max(1, int(np.median([len((a or {}).get("tokens") or [])
                                    for a in items["model_alternatives"]])))
    gap = matched_gap(g, truth, estimate, max(1, round(per_context)), n_draws, answers, seed=seed)
    h = simulated_players(g, truth, gap, seed=seed)
    out = {n: {"judgements_per_context": n} for n in counts}
    for kind in ("exact", "rounded"):
        for r in pw.estimator_bias(g, h, truth, tuple(counts), repeats=repeats, answers=kind,
                                   seed=seed, stored_draws=n_draws):
            out[r["judgements_per_context"]].update({f"bias_{kind}": r["bias"],
                                                     f"sd_{kind}": r["sd_of_estimate"]})
    df = pd.DataFrame(list(out.values()))
    df.attrs.update(n_contexts=len(truth), gap=gap, estimate=estimate, stored_draws=n_draws)
    return df


def _bias_at(table: pd.DataFrame, per_context: float) -> pd.Series:
    """The simulated row for a median of `per_context` judgements: the largest count not above
    it (the first row when it is below all)."""
    below = table[table["judgements_per_context"] <= per_context]
    return (below.iloc[-1] if len(below) else table.iloc[0])


def pairwise_verdict(delta_low: float, delta_high: float, biases: tuple[float, ...]) -> tuple[str, str]:
    """(verdict, basis) for the loss difference people - model. A finding only when the
    interval excludes 0 and still excludes it after allowing for the estimator's simulated
    bias at the data's judgements per context (the true difference is the estimate minus the
    bias, taken anywhere between 0 and the simulated bias: model players are not people);
    otherwise "no verdict"."""
    if not (np.isfinite(delta_low) and np.isfinite(delta_high)):
        return "no verdict: not enough data for an interval", "withheld"
    if delta_low <= 0 <= delta_high:
        return "no verdict: the interval of the difference spans 0", "withheld"
    b = [0.0, *[x for x in biases if np.isfinite(x)]]
    lo, hi = delta_low - max(b), delta_high - min(b)
    if lo <= 0 <= hi:
        return (("no verdict: the interval excludes 0, but not once the estimator's simulated bias "
                f"at this many judgements per context ({', '.join(f'{x:+.2f}' for x in b[1:])} "
                "nats) is allowed for"), "withheld")
    if lo > 0:
        return "people's loss is higher: the model predicts this text better", "interval"
    return "people's loss is lower: people predict this text better than the model", "interval"


def pairwise_loss(
    data: ExportData, *, level: float = DEFAULT_LEVEL, n_boot: int = DEFAULT_BOOT, seed: int = 0,
    bias_repeats: int = 20, **selection,
) -> list[dict[str, Any]]:
    """Human loss and perplexity from pairwise judgements, per model G (guesses.model_id).

    Contexts are items. Per context, Delta(c) = ln E_G[w] with E_G[w] from `expected_weight`
    (its judged pairs, and the share of its stored draws equal to the true token); human loss =
    the model's loss on the same contexts (mean of -ln G(t*)) + mean Delta(c), perplexity =
    exp(loss), intervals by `human_loss` (two-way cluster bootstrap over contexts and
    participants). Skipped judgements are counted, not used (skipping may not be at random: a
    pair a person found hard is more likely skipped). The estimator is biased low with few
    judgements per context and biased by the answer scale's rounding: `bias_table` measures
    both on this export's contexts, for model players at the largest loss gap the interval
    allows, and the verdict allows for them (`pairwise_verdict`); a caveat says so when the
    bias at the median number of judgements per context reaches BIAS_TOLERANCE (0.05 nats).
    """
    rows, notes, left = pairwise_rows(data, **selection)
    items = data.items.set_index("item_id", drop=False)
    models = sorted({m for m, _ in left if m is not None} | set(rows["model_id"].unique().tolist()))
    if selection.get("model_id") is not None:
        models = [m for m in models if m == selection["model_id"]]
    out = []
    for m in models:
        r = rows[rows["model_id"] == m]
        skipped = left.get((m, "skipped"), 0)
        others = [(n, why) for (mm, why), n in left.items() if mm == m and why != "skipped"]
        entry: dict[str, Any] = {
            "model_id": int(m), "model_name": _model_name(data, int(m)), "n_skipped": int(skipped),
            "left_out": [{"n": int(n), "reason": why} for n, why in others], "notes": notes,
            "n_judgements": len(r), "level": level,
        }
        if len(r) == 0:
            entry["error"] = "no usable judgements"
            out.append(entry)
            continue
        res = pw.human_loss(r["item_id"].to_numpy(), pd.factorize(r["participant_id"])[0],
                            r["g_true_logprob"].to_numpy(), r["g_alt_logprob"].to_numpy(),
                            r["r_true"].to_numpy(), truth_share=r["truth_share"].to_numpy(),
                            level=level, n_boot=n_boot, seed=seed)
        per_context = r.groupby("item_id").size()
        median = float(per_context.median())
        # Answers on the 1%..99% scale (as the game takes them) carry the rounded players' bias;
        # any other answers (e.g. imported exact probabilities) the exact players'.
        r_true = r["r_true"].to_numpy()
        kind = "rounded" if np.isclose(r_true[:, None], pw.SCALE).any(axis=1).all() else "exact"
        # Players at the largest gap the interval allows: the estimator's bias grows with the
        # gap, and with few judgements per context the estimate hardly tells gaps apart.
        top = res.delta_high if np.isfinite(res.delta_high) else res.delta
        known = items.loc[per_context.index]
        known = known[known["model_target_logprob"].notna() & known["target_token_id"].notna()]
        if len(known):
            table = bias_table(known, top, per_context=median, answers=kind,
                               repeats=bias_repeats, seed=seed)
        else:  # no context with the model's own numbers for a simulation: no bias measured
            table = pd.DataFrame({"judgements_per_context": list(BIAS_COUNTS),
                                  **{f"{x}_{k}": np.nan for x in ("bias", "sd") for k in ("exact", "rounded")}})
            table.attrs.update(n_contexts=0, gap=np.nan, estimate=top, stored_draws=0)
        at = _bias_at(table, median)
        bias = float(at[f"bias_{kind}"])
        verdict, basis = pairwise_verdict(res.delta_low, res.delta_high, (bias,))
        biased = bool(np.isfinite(bias) and abs(bias) >= BIAS_TOLERANCE)
        entry.update({
            "n_contexts": res.n_contexts, "n_participants": res.n_participants,
            "model_loss": res.model_loss, "model_perplexity": res.model_perplexity,
            "human_loss": res.human_loss, "loss_low": res.loss_low, "loss_high": res.loss_high,
            "human_perplexity": res.human_perplexity, "perplexity_low": float(np.exp(res.loss_low)),
            "perplexity_high": float(np.exp(res.loss_high)),
            "delta": res.delta, "delta_low": res.delta_low, "delta_high": res.delta_high,
            "median_judgements_per_context": median, "simulated_gap": table.attrs["gap"],
            "mean_truth_share": float(r.groupby("item_id")["truth_share"].first().mean()),
            "bias": table, "bias_at_median": {k: float(at[k]) for k in table.columns},
            "answers": kind, "in_biased_range": bool(biased), "verdict": verdict,
            "verdict_basis": basis,
        })
        entry["caveat"] = _caveat(median, int(at["judgements_per_context"]), bias, kind) if biased else None
        out.append(entry)
    return out


def _caveat(median: float, simulated_at: int, bias: float, kind: str) -> str:
    how = ("with answers on the 1%–99% scale, as people give them" if kind == "rounded" else
           "with exact answers")
    why = ("the logarithm of a mean of few judgements is biased low, and the scale's rounding "
           "caps how sure a judgement can be" if kind == "rounded" else
           "the logarithm of a mean of few judgements is biased low")
    return (f"Few judgements per context: the median context has {median:g}. At {simulated_at} "
            f"per context, model players whose loss is known come out {abs(bias):.2f} nats per "
            f"token too {'low' if bias < 0 else 'high'} {how} ({why}); the verdict allows for "
            "that, and the numbers are approximate.")


# ------------------------------------------------------------------------ stated distributions


def stated_rows(data: ExportData, **selection) -> tuple[list[dict], list[str], Counter]:
    """The scorable stated distributions: dicts with model_id, item_id, participant_id and
    cells (analysis.stated.Cells), the selection's notes, and the answers left out, counted by
    (model_id, reason)."""
    g, notes = _rows(data, "distribution", selection)
    items = data.items.set_index("item_id")
    model = _model_of(g, items)
    left: Counter = Counter()
    out = []
    for row, m in zip(g.itertuples(index=False), model):
        m = None if np.isnan(m) else int(m)
        j = row.judgement
        if row.skipped:
            left[(m, "skipped")] += 1
            continue
        if not isinstance(j, dict) or j.get("kind") != "distribution" or not j.get("bets"):
            left[(m, "no stated distribution stored in the row")] += 1
            continue
        target = row.target_token_id
        if _missing(target):
            left[(m, "on sentence stems (no true next token to score)")] += 1
            continue
        bets = j["bets"]
        if any(_missing(b.get("first_token_id")) for b in bets):
            left[(m, "with a candidate that has no model token")] += 1
            continue
        if m is None or any(_missing(b.get("model_logprob")) for b in bets):
            left[(m, ("whose model numbers are still missing (a candidate outside the stored "
                     "top-k, not yet filled by the background jobs or `humanlm score "
                     "--fill-guesses`)"))] += 1
            continue
        try:
            c = stated.cells([b["points"] for b in bets], j.get("else_points", 0),
                             [int(b["first_token_id"]) for b in bets], int(target),
                             [float(b["model_logprob"]) for b in bets])
        except stated.StatedError as exc:
            left[(m, f"that are not a distribution ({exc})")] += 1
            continue
        out.append({"model_id": m, "item_id": int(row.item_id), "participant_id": row.participant_id,
                    "cells": c})
    return out, notes, left


def _calibration_frame(bins: list[dict], who: str) -> pd.DataFrame:
    df = pd.DataFrame(bins)
    if len(df):
        df.insert(0, "who", who)
        df["confidence"] = df["mean_stated"]
    return df


def stated_scores(
    data: ExportData, *, level: float = DEFAULT_LEVEL, n_boot: int = DEFAULT_BOOT, seed: int = 0,
    **selection,
) -> list[dict[str, Any]]:
    """Stated distributions scored against the model on the same cells, per model.

    Each answer is a distribution over the partition of its candidates' first tokens and
    "something else"; `analysis.stated.compare` gives the mean log score and Brier score of
    people and of the model on the same answers, their paired differences and two-way
    cluster-bootstrap intervals (participants and items); `analysis.stated.calibration` the
    reliability of stated probabilities (and of the model's on the same cells). Answers whose
    model numbers are still missing cannot be scored: they are left out and counted, and the
    comparison gives no verdict until they are filled (whether they would help people or the
    model is unknown). A verdict needs the interval of the log-score difference to exclude 0.
    """
    rows, notes, left = stated_rows(data, **selection)
    models = sorted({m for m, _ in left if m is not None} | {r["model_id"] for r in rows})
    if selection.get("model_id") is not None:
        models = [m for m in models if m == selection["model_id"]]
    out = []
    for m in models:
        mine = [r for r in rows if r["model_id"] == m]
        others = [(n, why) for (mm, why), n in left.items() if mm == m and why != "skipped"]
        n_missing = sum(n for n, why in others if why.startswith("whose model numbers"))
        entry: dict[str, Any] = {
            "model_id": int(m), "model_name": _model_name(data, int(m)),
            "n_skipped": int(left.get((m, "skipped"), 0)), "n_missing_model": int(n_missing),
            "left_out": [{"n": int(n), "reason": why} for n, why in others], "notes": notes,
            "n_answers": len(mine), "level": level,
        }
        if not mine:
            entry["error"] = "no scorable stated distributions"
            out.append(entry)
            continue
        answers = [r["cells"] for r in mine]
        participant = pd.factorize(pd.Series([r["participant_id"] for r in mine]))[0]
        item = pd.factorize(pd.Series([r["item_id"] for r in mine]))[0]
        entry["compare"] = stated.compare(answers, participant, item, level=level, n_boot=n_boot,
                                          seed=seed)
        model_cells = [stated.Cells(c.first_tokens, c.model, c.model, c.outcome) for c in answers]
        entry["calibration"] = pd.concat(
            [_calibration_frame(stated.calibration(answers, participant, item, level=level), "humans"),
             _calibration_frame(stated.calibration(model_cells, participant, item, level=level), "model")],
            ignore_index=True)
        d = entry["compare"]["log_score_difference"]
        if n_missing:
            entry["verdict"] = (f"no verdict yet: {counted(n_missing, 'answer')} await the model's "
                                "numbers and were left out; export again once they are filled")
            entry["verdict_basis"] = "withheld"
        elif not (np.isfinite(d["ci_low"]) and np.isfinite(d["ci_high"])):
            entry["verdict"], entry["verdict_basis"] = "no verdict: not enough data", "withheld"
        elif d["ci_low"] <= 0 <= d["ci_high"]:
            entry["verdict"] = "no verdict: the interval of the difference spans 0"
            entry["verdict_basis"] = "withheld"
        else:
            entry["verdict"] = ("people's stated distributions score better than the model's on the "
                                "same cells" if d["ci_low"] > 0 else
                                "the model's distribution scores better than people's on the same cells")
            entry["verdict_basis"] = "interval"
        out.append(entry)
    return out
