"""Several models on the same human answers: which model predicts people best.

The export holds one row per (answer, model) in answer_models and per (item, model) in
item_models. Their log-probabilities are of TEXT, not of token ids: ln p_M(answer text | prefix
text) by the chain rule over model M's own tokens (word mode: the word plus its word-end term).
Two models with different tokenizers are therefore scored on the same event, the string a
person typed, and their numbers can be compared answer by answer. First-token numbers
(first_token_logprob, log Z(T)) exist only for a model whose tokenizer is the game's.

Nothing is estimated: a number the export leaves empty stays missing, the model's row says
which measure it lacks and why, and no measure silently drops a model to zero.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .answers import Prepared, _pooled_rows, counted, prepare, select_rows
from .bootstrap import DEFAULT_LEVEL, Design, twoway_bootstrap
from .metrics import _fit_smoothing, proportion_interval
from .reader import AnalysisError, ExportData

# A model whose name or spec says it was tuned after pre-training (instruction, chat, RLHF ...).
TUNED = re.compile(r"instruct|chat|tuned|rlhf|sft|dpo|assistant|(^|[-_ ./:])it($|[-_ ./:])", re.IGNORECASE)


@dataclass
class ModelAnswers:
    """The analysed answers with every model's numbers, one column per model.

    rows: one per selected answer of the report's mode (skips included), with p_idx, i_idx
        (cluster codes for the bootstrap), item_id, answered (not a skip and not empty), key
        (the answer's text: exactly as typed in token mode, without surrounding spaces in word
        mode; the crowd's categories), pooled (imported without a participant).
    lp: (rows x models) answer_logprob, NaN where missing; status: (rows x models) why a value
        is missing: "" (present), "no_row" (no row in answer_models), "null" (row, empty value).
    starts: (rows x models) the item's top1_starts_word as 1.0 / 0.0, NaN where missing;
        entropy: (rows x models) the item's entropy under the model.
    """

    rows: pd.DataFrame
    models: pd.DataFrame  # one row per model: model_id, label, name, spec, same_tokenizer, ...
    lp: np.ndarray
    status: np.ndarray
    starts: np.ndarray
    starts_status: np.ndarray
    entropy: np.ndarray
    design: Design
    mode: str
    game_model_id: int | None
    vocab_size: float
    notes: list[str] = field(default_factory=list)


def _settings(value) -> dict:
    return value if isinstance(value, dict) else {}


def _model_label(name, model_id) -> str:
    return f"{name} (model {int(model_id)})" if name else f"model {int(model_id)}"


def model_answers(data: ExportData, prep: Prepared) -> ModelAnswers | None:
    """Which answers and numbers the model comparison uses.

    Answers: the same selection as the rest of the report (study, source, pilot runs,
    participants flagged for exclusion and comprehension checks as chosen, by
    analysis.answers.select_rows) in the report's mode (token or word), whatever model filled
    the guesses' model_* columns. A skip or an empty answer has no probability: it counts in no
    log-likelihood (only in the models' accuracy, which does not depend on the answer).
    Models: every model of the models table that has a row in answer_models or item_models
    for these answers or their items. The answer's numbers come from answer_models
    (answer_logprob), the item's from item_models (top1_starts_word, entropy); a value the
    export leaves empty is missing, never zero.
    Returns None when no model has per-answer or per-item rows for these answers (an export
    from before these tables, or a selection no model scored this way).
    """
    am, im = data.answer_models, data.item_models
    if not len(am) and not len(im):
        return None
    opts = prep.options
    keep, notes = select_rows(data, study_id=opts.get("study_id"), source=opts.get("source"),
                              include_pilot=bool(opts.get("include_pilot")),
                              include_excluded=bool(opts.get("include_excluded")))
    g = data.guesses.loc[keep]
    g = g.loc[(g["mode"] == prep.mode).to_numpy(dtype=bool)].reset_index(drop=True)
    if g.empty:
        return None
    am = am.loc[am["guess_id"].isin(g["guess_id"])]
    im = im.loc[im["item_id"].isin(g["item_id"])]
    known = set(data.models["model_id"].astype(int).tolist())
    ids = sorted((set(am["model_id"].astype(int)) | set(im["model_id"].astype(int))) & known)
    if not ids:
        return None

    skipped = g["skipped"].to_numpy(dtype=bool)
    text = g["answer_text"].fillna("").astype(str)
    key = (text.str.strip() if prep.mode == "word" else text).to_numpy(dtype=object)
    answered = ~skipped & (key != "")
    pooled = _pooled_rows(g)
    p_codes, people = pd.factorize(g["participant_id"].where(~pooled))
    p_codes = np.asarray(p_codes, dtype=np.int64)
    p_codes[pooled] = len(people) + np.arange(int(pooled.sum()))
    i_codes, _ = pd.factorize(g["item_id"], sort=True)
    rows = pd.DataFrame({
        "guess_id": g["guess_id"].to_numpy(), "item_id": g["item_id"].to_numpy(),
        "p_idx": p_codes, "i_idx": np.asarray(i_codes, dtype=np.int64), "pooled": pooled,
        "answered": answered, "key": np.where(answered, key, None),
        "has_target": g["target_text"].notna().to_numpy(dtype=bool)
        if "target_text" in g else g["target_token_id"].notna().to_numpy(dtype=bool),
    })
    n, M = len(rows), len(ids)
    lp = np.full((n, M), np.nan)
    status = np.full((n, M), "", dtype=object)
    starts = np.full((n, M), np.nan)
    starts_status = np.full((n, M), "", dtype=object)
    entropy = np.full((n, M), np.nan)
    same_tok: list[bool | None] = []
    guess_ids = pd.Index(rows["guess_id"])
    item_ids = rows["item_id"].to_numpy()
    for j, m in enumerate(ids):
        a = am.loc[am["model_id"] == m].set_index("guess_id")
        at = a.reindex(guess_ids)
        has_row = guess_ids.isin(a.index)
        lp[:, j] = at["answer_logprob"].to_numpy(dtype=np.float64)
        status[~has_row, j] = "no_row"
        status[has_row & np.isnan(lp[:, j]), j] = "null"
        it = im.loc[im["model_id"] == m].set_index("item_id")
        irow = it.reindex(item_ids)
        in_items = pd.Index(item_ids).isin(it.index)
        per_item = it["top1_starts_word"].astype("boolean").astype("Float64")
        starts[:, j] = pd.Series(per_item.to_numpy(dtype=np.float64, na_value=np.nan),
                                 index=it.index).reindex(item_ids).to_numpy(dtype=np.float64)
        starts_status[~in_items, j] = "no_row"
        starts_status[in_items & np.isnan(starts[:, j]), j] = "null"
        entropy[:, j] = irow["entropy"].to_numpy(dtype=np.float64)
        flags = pd.concat([a["same_tokenizer"], it["same_tokenizer"]]).astype(object).dropna()
        same_tok.append(bool(flags.iloc[0]) if len(flags) else None)

    models = data.models.set_index("model_id").loc[ids].reset_index()
    game = prep.model.get("model_id")
    game_tok = prep.model.get("tokenizer")
    for j, m in enumerate(ids):  # no row says it: the tokenizer names decide
        if same_tok[j] is None:
            same_tok[j] = bool(models.loc[j, "tokenizer"] == game_tok)
    models["same_tokenizer"] = same_tok
    models["top_k_only"] = [bool(_settings(s).get("top_k_only")) for s in models["settings"]]
    models["label"] = [_model_label(nm, m) for nm, m in zip(models["name"], models["model_id"])]
    models["tuned"] = [bool(TUNED.search(f"{nm or ''} {sp or ''}"))
                       for nm, sp in zip(models["name"], models["spec"])]
    design = Design(rows["p_idx"].to_numpy(), rows["i_idx"].to_numpy(),
                    n_boot=opts.get("n_boot", 1000), seed=opts.get("seed", 0))
    vocab = float(prep.model.get("n_vocab") or 0) or float(len(set(key[answered])) + 1)
    return ModelAnswers(rows=rows, models=models, lp=lp, status=status, starts=starts,
                        starts_status=starts_status, entropy=entropy, design=design,
                        mode=prep.mode, game_model_id=None if game is None else int(game),
                        vocab_size=vocab, notes=notes)


# ----------------------------------------------------------------------- paired means


def _counts(ma: ModelAnswers, mask: np.ndarray) -> dict:
    r = ma.rows
    pooled = r["pooled"].to_numpy(dtype=bool)
    out = {"n_answers": int(mask.sum()),
           "n_items": int(r.loc[mask, "i_idx"].nunique()),
           "n_participants": int(r.loc[mask & ~pooled, "p_idx"].nunique())}
    if pooled.any():
        out["n_unattributed"] = int((mask & pooled).sum())
    return out


def _paired(ma: ModelAnswers, X: np.ndarray, w: np.ndarray, level: float, *,
            reference: int | None = None, higher_is_better: bool = True) -> dict:
    """Weighted means of the columns of X over the rows every available model has, with
    two-way intervals, and paired differences to a reference column (default: the best)."""
    M = X.shape[1]
    inside = w > 0
    avail = np.array([bool(np.isfinite(X[inside, j]).any()) for j in range(M)])
    common = inside & (np.isfinite(X[:, avail]).all(axis=1) if avail.any() else False)
    out = {"available": avail, "common": common, "estimate": np.full(M, np.nan),
           "ci_low": np.full(M, np.nan), "ci_high": np.full(M, np.nan), "se": np.full(M, np.nan),
           "diff": np.full(M, np.nan), "diff_low": np.full(M, np.nan),
           "diff_high": np.full(M, np.nan), "reference": None, "_X": X, "_w": w}
    cols = np.flatnonzero(avail)
    rows = np.flatnonzero(common)
    if not len(cols) or not len(rows):
        return out
    Xa = X[np.ix_(rows, cols)]
    wa = w[rows]
    est = (Xa * wa[:, None]).sum(axis=0) / wa.sum()
    if reference is not None and reference in cols:
        ref = int(np.flatnonzero(cols == reference)[0])
    else:
        ref = int(np.argmax(est) if higher_is_better else np.argmin(est))
    K = len(cols)

    def stat(S):
        with np.errstate(divide="ignore", invalid="ignore"):
            means = S[:, :K] / S[:, K:K + 1]
            return np.column_stack([means, means - means[:, [ref]]])

    res = twoway_bootstrap(np.column_stack([Xa * wa[:, None], wa]), ma.design.subset(rows), stat,
                           level=level)
    for name, vals in (("estimate", res.estimate[:K]), ("ci_low", res.ci_low[:K]),
                       ("ci_high", res.ci_high[:K]), ("se", res.se[:K]),
                       ("diff", res.estimate[K:]), ("diff_low", res.ci_low[K:]),
                       ("diff_high", res.ci_high[K:])):
        out[name][cols] = vals
    out["diff_low"][cols[ref]] = out["diff_high"][cols[ref]] = 0.0
    out["reference"] = int(cols[ref])
    return out


# ---------------------------------------------------------------------------- measures


def mean_loglik(ma: ModelAnswers, level: float = DEFAULT_LEVEL) -> dict:
    """Mean log-likelihood of human answers, per model, and its paired difference to the best.

    For every answer a that is not a skip: l_M(a) = answer_models.answer_logprob = ln p_M(the
    answer's text | the prefix text), the chain rule over M's OWN tokens (word mode: the word
    plus the term for the word ending there). A probability of the same string under every
    model, so it is comparable across tokenizers (a model with shorter tokens multiplies more
    factors for the same string, and that is part of its prediction).
        LL_M = mean over the common answers of l_M(a)   (nats per answer; higher is better)
    Common answers: those every model with numbers has a number for, so all models are scored
    on the same answers. An answer without a model's number (no row yet: the background jobs
    fill it; or an empty value: the backend could not compute it exactly) is left out for all
    models and counted; a model without any number is not compared (and says why).
    Best model: the highest LL_M. Paired differences LL_M - LL_best use the same answers under
    both models; intervals from the two-way cluster bootstrap over participants and items, with
    the same resamples for every model. Verdict: the best model's margin over the runner-up,
    LL_best - LL_second, is a finding when its interval excludes 0, "no verdict" when it spans
    0. Answers left out because a model has not scored their item (a document the background
    jobs have not reached, an item beyond its context) restrict the comparison to the items
    every model scored, which is said with the numbers. The verdict is withheld ("no verdict
    yet") when a model lacks the log-prob of some answers to an item whose other answers it
    scored: which answers a backend cannot score may depend on the answer (as answers outside
    the stored top-k are the model's unlikely ones), and leaving them out could favour it.
    """
    answered = ma.rows["answered"].to_numpy(dtype=bool)
    return _paired(ma, np.where(answered[:, None], ma.lp, np.nan), answered.astype(float), level)


def word_accuracy(ma: ModelAnswers, level: float = DEFAULT_LEVEL) -> dict:
    """Top-1 accuracy at the word level, comparable across tokenizers.

    item_models.top1_starts_word: the model's most likely next token (its own tokens), leading
    whitespace removed, is a non-empty beginning of the true next word. A model with long
    tokens and one with short tokens are judged on the same thing: does its first step go
    towards the right word. Per model:
        acc_M = mean over answers a of top1_starts_word(item of a)
    over the answers of the analysis (skips included: the item was shown), i.e. items weighted
    by how often they were answered, as the report's accuracy of the game's model. Only items
    where every model with this number has it (stems have no true next word and none).
    Intervals: Wilson score with the design's effective sample size (proportion_interval).
    """
    has = ma.rows["has_target"].to_numpy(dtype=bool)
    res = _paired(ma, np.where(has[:, None], ma.starts, np.nan), has.astype(float), level)
    for j in np.flatnonzero(res["available"]):
        row = {"estimate": res["estimate"][j], "se": res["se"][j], "level": level,
               **_counts(ma, res["common"])}
        proportion_interval(row)
        res["ci_low"][j], res["ci_high"][j] = row["ci_low"], row["ci_high"]
    return res


def _crowd(ma: ModelAnswers) -> pd.DataFrame:
    """Per answered row: N_i (answers to the item), c (answers equal to it), s_i (distinct
    answers to the item), g (answers equal to it on all items)."""
    r = ma.rows
    ans = r["answered"].to_numpy(dtype=bool)
    df = pd.DataFrame({"i": r["i_idx"].to_numpy()[ans], "key": r["key"].to_numpy()[ans]})
    out = pd.DataFrame(index=r.index, columns=["N", "c", "s", "g"], dtype=float)
    if not len(df):
        return out
    c = df.groupby(["i", "key"])["key"].transform("size").to_numpy(dtype=float)
    N = df.groupby("i")["key"].transform("size").to_numpy(dtype=float)
    s = df.groupby("i")["key"].transform("nunique").to_numpy(dtype=float)
    gl = df.groupby("key")["key"].transform("size").to_numpy(dtype=float)
    out.loc[ans, "N"], out.loc[ans, "c"], out.loc[ans, "s"], out.loc[ans, "g"] = N, c, s, gl
    return out


def crowd_fit(ma: ModelAnswers, level: float = DEFAULT_LEVEL, min_crowd: int = 3) -> dict:
    """Simulator fit of each model against the leave-one-out crowd, across tokenizers.

    As the report's simulator fit (metrics.simulator_fit), with the crowd's categories being
    the answers' TEXTS (the events the models' answer_logprob are probabilities of), so the
    crowd baseline is one and the same for every model:
        p_LOO(a) = (c_-a(a) + beta u(a)) / (N_i - 1 + beta),  u(a) = g(a) / (G - 1 + V)
    c_-a(a): the other answers to item i with the same text; N_i: answers to i that are not
    skips; g(a): answers with that text on all items; G: all such answers; V: the vocabulary
    size of the game's model (the report's simulator fit uses the same back-off); beta fitted
    by maximising the leave-one-out likelihood. On answers to items with at least
    max(min_crowd, 2) answers, and only the common answers (every model has a number):
        fit_M = mean (l_M(a) - ln p_LOO(a))   (nats per answer; > 0: the model predicts a
                                               held-out person better than the others do)
    Differences between models equal their log-likelihood differences on these answers.
    """
    cr = _crowd(ma)
    ans = ma.rows["answered"].to_numpy(dtype=bool)
    N, c, g = (cr[k].to_numpy(dtype=float) for k in ("N", "c", "g"))
    eligible = ans & (np.nan_to_num(N) >= max(min_crowd, 2))
    G = float(ans.sum())
    u = g / (G - 1 + ma.vocab_size)
    beta = _fit_smoothing(c[eligible] - 1, N[eligible] - 1, u[eligible]) if eligible.any() else np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        l_crowd = np.log((c - 1 + beta * u) / (N - 1 + beta))
    X = np.where(eligible[:, None], ma.lp - l_crowd[:, None], np.nan)
    res = _paired(ma, X, eligible.astype(float), level)
    common = res["common"]
    res["crowd_loglik"] = float(l_crowd[common].mean()) if common.any() else np.nan
    res["beta"] = beta
    res["n_eligible"] = int(eligible.sum())
    return res


def crowd_kl(ma: ModelAnswers, level: float = DEFAULT_LEVEL, min_answers: int = 10) -> dict:
    """KL(crowd ‖ model) per item, and the model's mean entropy on the same items.

    The crowd's distribution h_i over the answer texts given to item i (items with at least
    `min_answers` answers that are not skips) against the model's probabilities of the same
    texts, m_i(t) = exp(answer_logprob):
        KL_i = sum_t h_i(t) ln(h_i(t) / m_i(t)) - (s_i - 1) / (2 N_i)
             = -H(h_i) - (1/N_i) sum_a l_M(a) - (s_i - 1) / (2 N_i)
    (s_i distinct texts, N_i answers; the Miller-Madow term reduces the plug-in estimate's
    upward bias, so an item can come out slightly negative). With a few dozen answers per item
    and a large vocabulary the crowd's distribution is far from complete, and KL stays above 0
    even for people who sample from the model itself: compare models with each other on the
    same items rather than with 0. Texts nobody gave have h = 0 and
    add nothing, so KL needs only the models' probabilities of the answers given: it is exact
    for every model with answer_logprob, top-k-only and other tokenizers included, and it
    differs between two models by their cross-entropies only (H(h_i) is the same). Texts are
    disjoint events in word mode (each word is followed by its end); in token mode two answers
    where one text begins the other overlap, and their model probabilities can sum above 1.
    An item counts only where every model compared has the probability of every answer to it.
    Mean over items, each item once (answers weighted 1/N_i), two-way interval.
    Entropy: item_models.entropy, the model's next-token entropy at the end of the prefix
    over its own tokens (nats/token), averaged over the same items; empty for a model that
    gives only its top-k (not computable then, never estimated). Entropies of models with
    different tokenizers are over different units and compare only roughly.
    """
    cr = _crowd(ma)
    r = ma.rows
    ans = r["answered"].to_numpy(dtype=bool)
    N, c, s = (cr[k].to_numpy(dtype=float) for k in ("N", "c", "s"))
    chosen = ans & (np.nan_to_num(N) >= min_answers)
    i_idx = r["i_idx"].to_numpy()
    lp = np.where(chosen[:, None], ma.lp, np.nan)
    # an item counts for a model only if the model has every answer to it
    bad = pd.DataFrame(~np.isfinite(lp) & chosen[:, None]).groupby(i_idx).transform("any").to_numpy()
    lp = np.where(bad, np.nan, lp)
    with np.errstate(divide="ignore", invalid="ignore"):
        X = np.log(c / N)[:, None] - lp - ((s - 1) / (2 * N))[:, None]
        w = np.where(chosen, 1.0 / N, 0.0)
    X = np.where(chosen[:, None], X, np.nan)
    kl = _paired(ma, X, w, level, higher_is_better=False)
    items_kl = kl["common"]
    if not items_kl.any():
        items_kl = chosen
    ent_rows = items_kl if items_kl.any() else ans
    w_ent = np.zeros(len(r))
    if ent_rows.any():
        n_i = np.bincount(i_idx[ent_rows], minlength=int(i_idx.max()) + 1).astype(float)
        w_ent = np.where(ent_rows, 1.0 / np.maximum(n_i[i_idx], 1), 0.0)
    ent = _paired(ma, np.where(ent_rows[:, None], ma.entropy, np.nan), w_ent, level,
                  higher_is_better=False)
    for key in ("ci_low",):
        ent[key] = np.where(np.isfinite(ent[key]), np.maximum(ent[key], 0.0), ent[key])
    kl["entropy"] = ent
    kl["n_chosen_items"] = int(r.loc[chosen, "i_idx"].nunique())
    return kl


# ------------------------------------------------------------------------ temperature


def model_temperatures(data: ExportData, prep: Prepared, ma: ModelAnswers,
                       fitted: pd.DataFrame | None, level: float = DEFAULT_LEVEL) -> list[dict]:
    """T* per model where log Z(T) exists: the report's temperature fit
    (analysis.temperature.fit_temperature), fed that model's numbers.
    log Z(T) is a sum over the model's full vocabulary at the game's token positions: a model
    that gives only its top-k has none (not computable: top-k only), a model with another
    tokenizer has no first token of the game's (not computable: another tokenizer), and
    word-mode answers have no log Z grid at all. A model whose numbers fill the items table's
    model_* columns is fitted exactly as the report's T* (items.model_logz and the guesses'
    log-probs). Any other model with the game's tokenizer is fitted from its own numbers
    (_own_numbers): its log Z(T) grid in item_models.logz, its first-token log-probs in
    answer_models.first_token_logprob; an export without them (older, or a model without
    stored predictions) says why instead."""
    from .temperature import fit_temperature

    out = []
    item_models = set(data.items["model_id"].dropna().astype(int).tolist())
    for j, m in ma.models.iterrows():
        mid = int(m["model_id"])
        rec: dict[str, Any] = {"model_id": mid, "estimate": np.nan, "ci_low": np.nan,
                               "ci_high": np.nan, "reason": None}
        own = None
        if m["top_k_only"]:
            rec["reason"] = "not computable: top-k only (log Z(T) needs the full vocabulary)"
        elif not m["same_tokenizer"]:
            rec["reason"] = ("not computable: another tokenizer than the game's (T* tempers the "
                             "next-token distribution over the game's tokens)")
        elif ma.mode != "token":
            rec["reason"] = "not computable: word-mode answers have no log Z(T) grid"
        elif mid not in item_models and (own := _own_numbers(data, prep, ma, int(j))) is None:
            rec["reason"] = ("not computable: log Z(T) of this model is not in the export "
                             "(items.model_logz holds another model's, and item_models.logz "
                             "is empty for it)")
        else:
            try:
                if own is not None:
                    t = fit_temperature(own, level=level)
                elif fitted is not None and prep.model.get("model_id") == mid:
                    t = fitted
                else:
                    t = fit_temperature(prepare(data, **{**prep.options, "model_id": mid}),
                                        level=level)
                r = t.iloc[0]
                rec.update(estimate=float(r["estimate"]), ci_low=float(r["ci_low"]),
                           ci_high=float(r["ci_high"]), n_answers=int(r["n_answers"]),
                           n_bounded=int(r["n_bounded"]))
                if r["n_bounded"]:
                    rec["reason"] = (f"approximate: {int(r['n_bounded']):,} answers count at "
                                     "their top-k bound")
                if own is not None:
                    left = int((own.answers["lp_status"] != "skip").sum()) - int(r["n_answers"])
                    if left:
                        rec["reason"] = (f"{counted(left, 'answer')} left out (no first-token "
                                         "log-prob or no log Z(T) of this model at the item)")
            except AnalysisError as exc:
                rec["reason"] = f"not computable: {exc}"
        out.append(rec)
    return out


def _own_numbers(data: ExportData, prep: Prepared, ma: ModelAnswers, j: int) -> Prepared | None:
    """The comparison's answers under model j's own numbers, as analysis.temperature reads them
    (a Prepared): lp = answer_models.first_token_logprob (exact, the full vocabulary), else the
    model's target log-prob (item_models.target_logprob) where the answer's first token is the
    true next token; logz = item_models.logz. No top-k bound: an answer without either number is
    left out (lp_status "missing"), never estimated. None when item_models.logz is empty for
    this model on these items (an export from before the column, or no stored predictions)."""
    mid = int(ma.models["model_id"].iloc[j])
    temps = np.asarray(ma.models["temperatures"].iloc[j], dtype=np.float64)
    rows = ma.rows
    im = data.item_models
    im = im.loc[(im["model_id"] == mid) & im["item_id"].isin(rows["item_id"])]
    im = im.drop_duplicates("item_id").set_index("item_id")
    grid = im["logz"].map(lambda v: v if isinstance(v, list) and len(v) == len(temps) else None)
    if not grid.notna().any():
        return None
    codes = rows.drop_duplicates("i_idx").set_index("i_idx")["item_id"].sort_index()
    logz = np.array([grid.get(i) or [np.nan] * len(temps) for i in codes.to_numpy()],
                    dtype=np.float64).reshape(len(codes), len(temps))

    am = data.answer_models
    am = am.loc[am["model_id"] == mid].drop_duplicates("guess_id").set_index("guess_id")
    guess_ids = pd.Index(rows["guess_id"])
    lp = am["first_token_logprob"].reindex(guess_ids).to_numpy(dtype=np.float64)
    g = data.guesses.set_index("guess_id").reindex(guess_ids)
    first = g["answer_first_token_id"].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    target = g["target_token_id"].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    target_lp = im["target_logprob"].reindex(rows["item_id"].to_numpy()).to_numpy(dtype=np.float64)
    answered = rows["answered"].to_numpy(dtype=bool)
    status = np.where(answered, "exact", "skip").astype(object)
    fill = answered & np.isnan(lp) & (first == target) & np.isfinite(target_lp)
    lp = np.where(fill, target_lp, lp)
    status[fill] = "target"
    status[answered & np.isnan(lp)] = "missing"
    lp[~answered] = np.nan
    answers = pd.DataFrame({"guess_id": rows["guess_id"].to_numpy(),
                            "item_id": rows["item_id"].to_numpy(),
                            "i_idx": rows["i_idx"].to_numpy(), "p_idx": rows["p_idx"].to_numpy(),
                            "pooled": rows["pooled"].to_numpy(dtype=bool),
                            "skipped": ~answered, "lp": lp, "lp_status": status})
    n_items = len(codes)
    model = data.models.set_index("model_id").loc[mid].to_dict()
    model["model_id"] = mid
    return Prepared(
        answers=answers, items=pd.DataFrame({"item_id": codes.to_numpy()}), model=model,
        mode=ma.mode, temperatures=temps, topk_ids=np.full((n_items, 0), -1, dtype=np.int64),
        topk_lp=np.full((n_items, 0), -np.inf), topk_ctrl=np.ones((n_items, 0), dtype=bool),
        logz=logz, design=ma.design, options={**prep.options, "model_id": mid},
        participants=pd.Index([]))


# ------------------------------------------------------------------------- comparison


def _reason_loglik(ma: ModelAnswers, j: int) -> str:
    ans = ma.rows["answered"].to_numpy(dtype=bool)
    st = ma.status[ans, j]
    if (st == "no_row").all():
        return ("not computable: no per-answer log-probs for this model in this export (no rows "
                "in answer_models: the background jobs have not scored these answers with it "
                "yet)")
    if ma.mode == "word" and bool(ma.models["top_k_only"].iloc[j]):
        return ("not computable: top-k only (a word's end term needs the full next-token "
                "distribution; answer_models.answer_logprob empty, never estimated)")
    return ("not computable: its backend could not compute the answers' log-probs exactly "
            "(answer_models.answer_logprob empty; never estimated)")


def answer_level_gaps(ma: ModelAnswers, available: np.ndarray) -> dict[int, int]:
    """Per compared model (column index): answers whose log-prob is empty although the model
    scored other answers to the same item. Such a gap can depend on the answer itself (e.g. an
    answer the model tokenizes to nothing), unlike an item the model could not score at all
    (no room left in its context) or a document the background jobs have not reached."""
    answered = ma.rows["answered"].to_numpy(dtype=bool)
    i_idx = ma.rows["i_idx"].to_numpy()
    out = {}
    for j in np.flatnonzero(available):
        fin = answered & np.isfinite(ma.lp[:, j])
        scored_item = np.bincount(i_idx[fin], minlength=int(i_idx.max()) + 1) > 0
        gap = answered & (ma.status[:, j] == "null") & scored_item[i_idx]
        if gap.any():
            out[int(j)] = int(gap.sum())
    return out


def _missing_text(n_no_row: int, n_null: int) -> str:
    parts = []
    if n_no_row:
        parts.append(f"{counted(n_no_row, 'answer')} not scored by this model yet (no row; the "
                     "background jobs fill them)")
    if n_null:
        parts.append(f"{counted(n_null, 'answer')} its backend could not score exactly (empty)")
    return "; ".join(parts)


def _pairs(models: pd.DataFrame) -> list[tuple[int, int]]:
    """(base index, tuned index) pairs by name: a tuned model and the base model whose name
    shares the longest beginning with it."""
    out = []
    names = [str(n or s or "").lower() for n, s in zip(models["name"], models["spec"])]
    bases = [j for j in range(len(models)) if not models["tuned"].iloc[j]]
    for t in range(len(models)):
        if not models["tuned"].iloc[t] or not bases:
            continue
        common = [len(_prefix(names[t], names[b])) for b in bases]
        if max(common) >= 3:
            out.append((bases[int(np.argmax(common))], t))
    return out


def _prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def compare_models(
    data: ExportData, prep: Prepared, *, level: float = DEFAULT_LEVEL, min_crowd: int = 3,
    min_answers: int = 10, temperature: pd.DataFrame | None = None,
) -> dict | None:
    """Which models predict people best: every measure per model, the ranking, the headline.

    Shown when the export holds at least two models with numbers in answer_models or
    item_models, or one model with per-answer rows. Per model: mean log-likelihood of human
    answers (mean_loglik) with its paired difference to the best model, word-level accuracy
    (word_accuracy), simulator fit against the leave-one-out crowd (crowd_fit), KL(crowd ‖
    model) and mean entropy (crowd_kl), T* where log Z exists (model_temperatures). A measure a
    model cannot have says so and why instead of a number. Mode collapse: each model's mean
    entropy and KL side by side; models whose name or spec says they were tuned (instruct,
    chat, -it, RLHF, SFT, DPO) are paired with the base model of the most similar name, and
    their paired differences are shown as numbers, not as a verdict.
    """
    ma = model_answers(data, prep)
    if ma is None:
        return None
    answered = ma.rows["answered"].to_numpy(dtype=bool)
    has_rows = [(ma.status[:, j] != "no_row").any() for j in range(len(ma.models))]
    item_numbers = [bool(np.isfinite(ma.starts[:, j]).any() or np.isfinite(ma.entropy[:, j]).any())
                    for j in range(len(ma.models))]
    with_numbers = sum(bool(np.isfinite(ma.lp[answered, j]).any()) or item_numbers[j]
                       for j in range(len(ma.models)))
    if with_numbers < 2 and not any(has_rows):
        return None
    ll = mean_loglik(ma, level)
    acc = word_accuracy(ma, level)
    fit = crowd_fit(ma, level, min_crowd)
    kl = crowd_kl(ma, level, min_answers)
    ent = kl["entropy"]
    temps = {t["model_id"]: t for t in model_temperatures(data, prep, ma, temperature, level)}
    n_answered = int(answered.sum())
    common_ll = ll["common"]

    records = []
    for j, m in ma.models.iterrows():
        no_row = int((answered & (ma.status[:, j] == "no_row")).sum())
        null = int((answered & (ma.status[:, j] == "null")).sum())
        have = answered & np.isfinite(ma.lp[:, j])
        rec: dict[str, Any] = {
            "model_id": int(m["model_id"]), "label": m["label"], "name": m["name"],
            "spec": m["spec"], "tokenizer": m["tokenizer"],
            "same_tokenizer": bool(m["same_tokenizer"]), "top_k_only": bool(m["top_k_only"]),
            "tuned": bool(m["tuned"]), "game_model": int(m["model_id"]) == ma.game_model_id,
            "n_answers_total": n_answered, "n_with_logprob": int(have.sum()),
            "n_missing_no_row": no_row, "n_missing_null": null,
            "n_left_out_other_models": int((have & ~common_ll).sum()) if ll["available"][j] else 0,
        }
        if ll["available"][j]:
            rec.update(loglik=ll["estimate"][j], loglik_low=ll["ci_low"][j],
                       loglik_high=ll["ci_high"][j], diff_to_best=ll["diff"][j],
                       diff_low=ll["diff_low"][j], diff_high=ll["diff_high"][j],
                       **_counts(ma, common_ll), loglik_reason=None,
                       missing=_missing_text(no_row, null))
        else:
            rec.update(loglik=np.nan, loglik_low=np.nan, loglik_high=np.nan, diff_to_best=np.nan,
                       diff_low=np.nan, diff_high=np.nan, n_answers=0, n_items=0,
                       n_participants=0, loglik_reason=_reason_loglik(ma, j),
                       missing=_missing_text(no_row, null))
        for name, res, why in (
            ("accuracy", acc, ("not computable: no top1_starts_word for this model on these items "
             "(item_models has no rows for them, or the backend left it empty)")),
            ("simulator_fit", fit, ("not computable: no item has enough answers for the crowd "
                                    f"(at least {max(min_crowd, 2)})" if ll["available"][j] else
                                    "not computable: no answer log-probs (see the log-likelihood)")),
            ("kl", kl, (f"not computable: no item with {min_answers} or more answers that are "
                        "not skips has this model's probability of every answer"
                        if ll["available"][j] else
                        "not computable: no answer log-probs (see the log-likelihood)")),
            ("entropy", ent, ("not computable: top-k only (the entropy needs the full "
                              "vocabulary)" if m["top_k_only"] else
                              "not computable: item_models.entropy is empty for this model")),
        ):
            ok = bool(res["available"][j]) and np.isfinite(res["estimate"][j])
            rec[name] = res["estimate"][j] if ok else np.nan
            rec[f"{name}_low"] = res["ci_low"][j] if ok else np.nan
            rec[f"{name}_high"] = res["ci_high"][j] if ok else np.nan
            rec[f"{name}_reason"] = None if ok else why
            rec[f"{name}_n"] = _counts(ma, res["common"]) if ok else None
        t = temps[int(m["model_id"])]
        rec.update(t_star=t["estimate"], t_star_low=t["ci_low"], t_star_high=t["ci_high"],
                   t_star_reason=t["reason"])
        records.append(rec)
    table = pd.DataFrame(records)
    if fit["available"].any():
        table["crowd_loglik"] = fit["crowd_loglik"]

    headline = _headline(ma, ll, table, level)
    collapse = _collapse(ma, kl, ent, level)
    left = int((answered & ~common_ll).sum()) if ll["available"].any() else n_answered
    return {"models": table, "headline": headline, "mode_collapse": collapse,
            "mode": ma.mode, "n_answers": n_answered, "n_common": int(common_ll.sum()),
            "n_left_out": left, "beta": fit["beta"], "min_crowd": min_crowd,
            "min_answers": min_answers, "n_kl_items": kl["n_chosen_items"], "notes": ma.notes,
            "level": level}


def _f(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}".replace("-", "−") if np.isfinite(x) else "–"


def _headline(ma: ModelAnswers, ll: dict, table: pd.DataFrame, level: float) -> dict:
    """The one line naming the model that predicts people best, or why there is none."""
    ranked = table[np.isfinite(table["loglik"])].sort_values("loglik", ascending=False)
    missing = table[~np.isfinite(table["loglik"])]
    absent = (" Not compared: " + "; ".join(
        f"{r['label']}, {r['loglik_reason'].removeprefix('not computable: ')}"
        for _, r in missing.iterrows()) + "." if len(missing) else "")
    if len(ranked) < 2:
        text = ("Only one model has log-probabilities of the human answers; nothing to compare "
                "it with." if len(ranked) else "No model has log-probabilities of the human answers.")
        return {"text": text + absent, "verdict_basis": "withheld", "best": None}
    best, second = ranked.iloc[0], ranked.iloc[1]
    margin = -second["diff_to_best"]
    lo, hi = -second["diff_high"], -second["diff_low"]
    pct = round(level * 100)
    n = int(best["n_answers"])
    numbers = (f"mean log-likelihood of human answers {_f(best['loglik'])} nats/answer under "
               f"{best['label']} against {_f(second['loglik'])} under {second['label']}, the "
               f"runner-up (margin {_f(margin)}, {pct}% CI {_f(lo)} to {_f(hi)}), on the same "
               f"{n:,} answers")
    answered = ma.rows["answered"].to_numpy(dtype=bool)
    left_out = int((answered & ~ll["common"]).sum())
    if left_out:
        items = int(ma.rows.loc[answered & ~ll["common"], "i_idx"].nunique())
        numbers += (f" every compared model has scored ({left_out:,} answers on {items:,} items "
                    "left out: see the missing numbers per model)")
    gaps = answer_level_gaps(ma, ll["available"])
    if gaps:
        who = "; ".join(f"{counted(n, 'answer')} of {ma.models['label'].iloc[j]}"
                        for j, n in gaps.items())
        text = (f"Which model predicts people best: no verdict yet. Some answers lack a model's "
                f"log-prob although it scored other answers to the same items ({who}); which "
                f"answers its backend could not score may depend on the answer. On the rest, "
                f"{numbers}.")
        basis = "withheld"
    elif not (np.isfinite(lo) and np.isfinite(hi)):
        text, basis = f"Which model predicts people best: not enough data ({numbers}).", "withheld"
    elif lo > 0:
        text = f"{best['label']} predicts people best: {numbers}."
        basis = "exact"
    else:
        text = (f"Which model predicts people best: no verdict, the margin's interval spans 0 "
                f"({numbers}).")
        basis = "exact"
    return {"text": text + absent,
            "verdict_basis": basis, "best": int(best["model_id"]),
            "runner_up": int(second["model_id"]), "margin": margin, "margin_low": lo,
            "margin_high": hi, "verdict": basis == "exact" and lo > 0}


def _collapse(ma: ModelAnswers, kl: dict, ent: dict, level: float) -> dict:
    """Entropy and KL(crowd ‖ model) side by side; tuned − base differences where a pair is
    named."""
    pairs = []
    for b, t in _pairs(ma.models):
        rec = {"base": int(ma.models["model_id"].iloc[b]), "tuned": int(ma.models["model_id"].iloc[t]),
               "base_label": ma.models["label"].iloc[b], "tuned_label": ma.models["label"].iloc[t],
               "same_tokenizer": bool(ma.models["same_tokenizer"].iloc[b] == ma.models["same_tokenizer"].iloc[t]
                                      and ma.models["tokenizer"].iloc[b] == ma.models["tokenizer"].iloc[t])}
        for name, res in (("kl", kl), ("entropy", ent)):
            if res["available"][b] and res["available"][t] and res["common"].any():
                rec.update(_paired_pair(ma, res, b, t, level, name))
            else:
                rec[f"{name}_diff"] = np.nan
                rec[f"{name}_diff_low"] = rec[f"{name}_diff_high"] = np.nan
        pairs.append(rec)
    return {"pairs": pairs,
            "sentence": ("A model with lower entropy than another and a higher KL(crowd ‖ "
                         "model) puts its probability on fewer continuations than people spread "
                         "their answers over, and misses the ones it leaves out: the pattern "
                         "called mode collapse, typical of instruction-tuned models against their "
                         "base.")}


def _paired_pair(ma: ModelAnswers, res: dict, b: int, t: int, level: float, name: str) -> dict:
    """tuned − base on the rows of the comparison (the same items as the table's numbers)."""
    w = np.where(res["common"], res["_w"], 0.0)
    out = _paired(ma, res["_X"][:, [b, t]], w, level, reference=0)
    return {f"{name}_diff": out["diff"][1], f"{name}_diff_low": out["diff_low"][1],
            f"{name}_diff_high": out["diff_high"][1]}
