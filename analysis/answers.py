"""The analysed answers: one clean, numeric table per analysis, with every exclusion counted.

Every metric starts from `prepare(data, ...)`: it chooses the answers (mode, model, study, pilot
and excluded participants), attaches the model's view of each answer and item, and writes down
in `notes` what was left out and why. Results carry those notes in `DataFrame.attrs["notes"]`,
and the report prints them: nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .bootstrap import DEFAULT_BOOT, Design
from .reader import AnalysisError, ExportData
from .tokens import continues_word, token_class

MISSING_POLICIES = ("bound", "exclude")
# Answers that are not a guess of the next token or word (guesses.mode; the answer is in
# guesses.judgement, is_correct is empty): analysed apart, never in accuracy or log-likelihoods.
JUDGEMENT_MODES = ("pairwise", "distribution")
JUDGEMENT_SECTIONS = {"pairwise": "Human loss and perplexity (pairwise)",
                      "distribution": "Stated distributions (bet on the next token)"}


@dataclass
class Prepared:
    """Analysed answers and items of one model and one mode, as arrays ready for metrics.

    answers: one row per answer, with
        p_idx, i_idx      participant and item index (0-based codes)
        skipped, correct  bools; a skip counts as not correct
        key               crowd answer code (first token id in token mode, the stripped word in
                          word mode), -1 for skips
        lp, lp_status     ln p_model(answer) at T=1 and where it came from: exact (export),
                          topk (looked up in the stored top-k), bound (unknown, outside the
                          top-k: the k-th stored log-prob, an upper bound), missing (unknown,
                          excluded by missing="exclude"), skip
        n_item            non-skip answers to the item; count_key: answers with the same key
    items: one row per item (row i = i_idx), with token_class, whole_word, model_correct,
        crowd_correct (plurality), n_nonskip, ...
    topk_ids, topk_lp, topk_ctrl: (items x k) arrays (-1 / -inf / True padding)
    logz: (items x G) log Z(T) on `temperatures`
    """

    answers: pd.DataFrame
    items: pd.DataFrame
    model: dict[str, Any]
    mode: str
    temperatures: np.ndarray
    topk_ids: np.ndarray
    topk_lp: np.ndarray
    topk_ctrl: np.ndarray
    logz: np.ndarray
    design: Design
    notes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    participants: pd.Index = field(default_factory=lambda: pd.Index([]))

    @property
    def n_answers(self) -> int:
        return len(self.answers)


def counted(n: int, noun: str) -> str:
    """'1 answer', '1,234 answers': a count with its noun, as every note says it."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _as_float(s: pd.Series) -> np.ndarray:
    return s.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)


def prepare(
    data: ExportData,
    *,
    mode: str | None = None,
    model_id: int | None = None,
    study_id: int | None = None,
    source: str | None = None,
    include_pilot: bool = False,
    include_excluded: bool = False,
    missing: str = "bound",
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
) -> Prepared:
    """Choose and annotate the answers to analyse (cached per data object and options).

    Defaults: answers of pilot runs and of participants flagged for exclusion are left out
    (counted in notes); if the export holds token- and word-mode answers, or several models,
    the mode/model with the most answers is analysed and the rest counted in notes.
    `missing` says what to do with answers whose model log-prob is unknown (outside the stored
    top-k and not filled by `humanlm score --fill-guesses`): "bound" uses the k-th stored
    log-prob, an upper bound (no token outside the top-k is more likely); "exclude" leaves
    them out of log-likelihood metrics. Either way their number is reported.
    Pairwise judgements and stated distributions (modes pairwise and distribution) are not
    guesses of the next token: they never enter these measures (the report analyses them in
    sections of their own), and the default mode is the most common of token and word.
    Comprehension-check answers are always left out (they test attention, not prediction):
    rows with match_rule "check", and skips on an item the study lists in settings.checks.
    Answers on items the model has not scored are left out ("answers without model numbers").
    Imported answers that name no participant (`humanlm import-responses` without a participant
    column gives a whole file one id; recognised as an imported id with two or more answers to
    one item, or as the only imported id) are not one person: each such answer is its own
    participant in the bootstrap (so they are clustered by item only), counted as
    n_unattributed rather than as participants, and left out of the learning curve.
    """
    if missing not in MISSING_POLICIES:
        raise AnalysisError(f"missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")
    key = (mode, model_id, study_id, source, include_pilot, include_excluded, missing, n_boot, seed)
    cache = data._cache.setdefault("prepared", {})
    if key not in cache:
        cache[key] = _prepare(data, mode, model_id, study_id, source, include_pilot,
                              include_excluded, missing, n_boot, seed)
    return cache[key]


def select_rows(
    data: ExportData, *, study_id: int | None = None, source: str | None = None,
    include_pilot: bool = False, include_excluded: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Which rows of data.guesses an analysis may use (a boolean mask), and notes saying what
    was left out: the study and source chosen, pilot answers, participants flagged for
    exclusion and comprehension checks. Shared by every kind of answer (predictions, pairwise
    judgements, stated distributions), so all sections of a report analyse the same people."""
    g = data.guesses
    notes: list[str] = []
    total = len(g)
    keep = np.ones(total, dtype=bool)
    if study_id is not None:
        keep &= (g["study_id"] == study_id).fillna(False).to_numpy(dtype=bool)
        notes.append(f"only study {study_id}: {int(keep.sum())} of {total} answers")
    if source is not None:
        before = int(keep.sum())
        keep &= (g["source"] == source).to_numpy(dtype=bool)
        notes.append(f"only source {source!r}: {int(keep.sum())} of {before} answers")
    pilot = g["pilot"].to_numpy(dtype=bool)
    if not include_pilot and (pilot & keep).any():
        n_pilot = int((pilot & keep).sum())
        notes.append(f"{counted(n_pilot, 'pilot answer')} left out (keep them with "
                     "include_pilot=True / --include-pilot)")
        keep &= ~pilot
    excl = g["excluded"].to_numpy(dtype=bool)
    if not include_excluded and (excl & keep).any():
        n_people = g.loc[excl & keep, "participant_id"].nunique()
        notes.append(
            f"{counted(int((excl & keep).sum()), 'answer')} of "
            f"{n_people} participant"
            f"{'s' if n_people != 1 else ''} flagged for exclusion "
            "left out (keep them with include_excluded=True / --include-excluded)"
        )
        keep &= ~excl
    checks = _check_rows(data, g) & keep
    if checks.any():
        n_checks = int(checks.sum())
        notes.append(
            f"{counted(n_checks, 'comprehension-check answer')} left out "
            "(they test attention, not prediction: match_rule check, or skipped on an item listed "
            "in the study's settings.checks)"
        )
        keep &= ~checks
    return keep, notes


def _prepare(data, mode, model_id, study_id, source, include_pilot, include_excluded, missing,
             n_boot, seed) -> Prepared:
    keep, notes = select_rows(data, study_id=study_id, source=source, include_pilot=include_pilot,
                              include_excluded=include_excluded)
    g = data.guesses.loc[keep]
    if g.empty:
        raise AnalysisError("no answers to analyse after the filters (" + "; ".join(notes) + ")")

    modes = g["mode"].value_counts()
    if mode in JUDGEMENT_MODES:
        raise AnalysisError(
            f"{mode} answers have no right or wrong answer for these measures: the report "
            f"analyses them in its section {JUDGEMENT_SECTIONS[mode]!r} (analysis.judgements), "
            "beside the token- or word-mode answers")
    predictions = modes[~modes.index.isin(JUDGEMENT_MODES)]
    if mode is None:
        if predictions.empty:
            raise AnalysisError(
                "no token- or word-mode answers to analyse, only "
                + " and ".join(f"{n:,} {m} answers" for m, n in modes.items())
                + " (see the report's sections on them)")
        mode = str(predictions.index[0])
    if mode not in modes.index:
        raise AnalysisError(f"no {mode}-mode answers in this export (modes: {', '.join(modes.index)})")
    for other, n in modes.items():
        if other in JUDGEMENT_MODES:
            notes.append(f"{counted(int(n), other + ' answer')} not in these measures (they have no "
                         f"right or wrong answer: section {JUDGEMENT_SECTIONS[other]!r} analyses them)")
        elif other != mode:
            notes.append(f"{n:,} {other}-mode answers not in this analysis (analyse them with --mode {other} / mode={other!r})")
    g = g.loc[g["mode"] == mode]

    items_all = data.items.set_index("item_id", drop=False)
    item_model = items_all["model_id"].reindex(g["item_id"].to_numpy())
    has_model = items_all["model_top_k"].map(lambda v: v is not None).reindex(g["item_id"].to_numpy())
    known_models = set(data.models["model_id"].tolist())
    usable = (item_model.notna() & has_model.fillna(False).astype(bool)).to_numpy().copy()
    usable &= item_model.isin(list(known_models)).to_numpy(dtype=bool)
    if not usable.any():
        raise AnalysisError("no answers on items with model predictions (score the corpus first)")
    if (~usable).any():
        n_unscored = int((~usable).sum())
        notes.append(f"{counted(n_unscored, 'answer')} without model numbers "
                     "left out (their items have no stored model prediction: score the corpus "
                     "with `humanlm score`)")
    g = g.loc[usable]
    item_model = item_model[usable].astype(int).to_numpy()
    counts = pd.Series(item_model).value_counts()
    if model_id is None:
        model_id = int(counts.index[0])
    if model_id not in counts.index:
        raise AnalysisError(f"model {model_id} has no answers here (models: {sorted(counts.index)})")
    for other, n in counts.items():
        if other != model_id:
            notes.append(f"{n:,} answers on items scored by model {other} not in this analysis (--model {other})")
    g = g.loc[item_model == model_id].reset_index(drop=True)
    model = data.models.set_index("model_id").loc[model_id].to_dict()
    model["model_id"] = model_id
    temps = np.asarray(model["temperatures"], dtype=np.float64)

    # ---- items
    item_codes, item_ids = pd.factorize(g["item_id"], sort=True)
    items = items_all.loc[item_ids].reset_index(drop=True)
    n_items = len(items)
    k = int(max(len(t) for t in items["model_top_k"]))
    topk_ids = np.full((n_items, k), -1, dtype=np.int64)
    topk_lp = np.full((n_items, k), -np.inf)
    topk_ctrl = np.ones((n_items, k), dtype=bool)
    texts: dict[int, str] = {}
    for row, top in enumerate(items["model_top_k"]):
        n = len(top)
        if n:
            topk_ids[row, :n] = [e[0] for e in top]
            topk_lp[row, :n] = [e[1] for e in top]
            topk_ctrl[row, :n] = [bool(e[3]) if len(e) > 3 else False for e in top]
            for e in top[:3]:
                texts.setdefault(int(e[0]), e[2])
    logz = np.array([v if v is not None else [np.nan] * len(temps) for v in items["model_logz"]],
                    dtype=np.float64).reshape(n_items, len(temps))
    kth_lp = np.where(np.isfinite(topk_lp), topk_lp, np.nan)
    kth_lp = np.nanmin(kth_lp, axis=1)
    items["kth_logprob"] = kth_lp
    # Stems (sentences people completed, imported without a true next word) have no target:
    # nothing is correct or wrong there, and no target log-prob (see the note below).
    items["has_target"] = items["target_token_id"].notna().to_numpy(dtype=bool)
    items["model_correct"] = (items["model_top1_id"] == items["target_token_id"]).fillna(False).astype(bool)
    items["model_top1_logprob"] = topk_lp[:, 0]
    shown = np.where(topk_ctrl, np.inf, np.arange(k)[None, :]).argmin(axis=1)  # first non-control
    items["model_top_candidate_id"] = topk_ids[np.arange(n_items), shown]
    items["token_class"] = [token_class(t, p) if has else "no_target" for t, p, has
                            in zip(items["target_text"], items["prefix_text"], items["has_target"])]
    # Whole word: the token after it does not continue the word. The export's next_token_text
    # says so exactly; without it, the next position of the same document if it was exported.
    nxt = data.items[["document_id", "position", "target_text"]].copy()
    nxt["position"] = nxt["position"] - 1
    nxt = nxt.drop_duplicates(["document_id", "position"]).set_index(["document_id", "position"])["target_text"]
    follow = nxt.reindex(pd.MultiIndex.from_arrays([items["document_id"], items["position"]]))
    next_text = follow.to_numpy()
    if "next_token_text" in items.columns:
        given = items["next_token_text"].to_numpy(dtype=object)
        known = np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) for v in given])
        next_text = np.where(known, given, next_text)
    items["next_text"] = next_text
    items["whole_word"] = [
        None if (nt is None or (isinstance(nt, float) and np.isnan(nt))) else not continues_word(str(nt))
        for nt in items["next_text"]
    ]

    # ---- answers
    a = pd.DataFrame({
        "guess_id": g["guess_id"].to_numpy(),
        "participant_id": g["participant_id"].to_numpy(),
        "item_id": g["item_id"].to_numpy(),
        "i_idx": item_codes,
        "skipped": g["skipped"].to_numpy(dtype=bool),
        "answer_index": g["answer_index"].to_numpy(dtype=np.int64),
        "reported_probability": g["reported_probability"].to_numpy(dtype=np.float64),
        "match_rule": g["match_rule"].to_numpy(),
    })
    pooled = _pooled_rows(g)
    p_codes, participants = pd.factorize(a["participant_id"].where(~pooled))
    # Imported answers that name no participant are not one person: each is its own cluster
    # (codes after the real participants'), so the bootstrap resamples them one by one and the
    # item factor carries their dependence.
    p_codes = np.asarray(p_codes, dtype=np.int64)
    p_codes[pooled] = len(participants) + np.arange(int(pooled.sum()))
    a["p_idx"] = p_codes
    a["pooled"] = pooled
    if pooled.any():
        n_pooled = int(pooled.sum())
        notes.append(
            f"{counted(n_pooled, 'imported answer')} name no participant "
            "(imported without a participant column): each is treated as its own participant in "
            "the confidence intervals, so they are clustered by item only, and they are left out "
            "of the learning curve (their order says nothing about experience)"
        )
    a["has_target"] = items["has_target"].to_numpy()[item_codes]
    a["correct"] = g["is_correct"].fillna(False).to_numpy(dtype=bool) & ~a["skipped"].to_numpy()
    if not a["has_target"].all():
        stems = ~items["has_target"].to_numpy()
        n_stem, n_stem_answers = int(stems.sum()), int((~a["has_target"]).sum())
        notes.append(
            f"{counted(n_stem, 'item')} ({n_stem_answers:,} answers) "
            f"ha{'ve' if n_stem != 1 else 's'} no true continuation (sentence stems imported "
            "without a target): they lack correctness and a target log-prob, so accuracy (human, "
            "crowd and model), the learning curve and calibration leave them out; the model "
            "log-likelihood of the answers, simulator fit, KL/JS to the crowd, entropy and T* "
            "include them"
        )
    if mode == "token":
        first = _as_float(g["answer_first_token_id"])
        key_values = np.where(a["skipped"] | np.isnan(first), np.nan, first)
        key_codes = np.where(np.isnan(key_values), -1, key_values).astype(np.int64)
        a["first_token_id"] = key_codes
    else:
        words = g["answer_text"].fillna("").astype(str).str.strip().to_numpy()
        key_codes, _ = pd.factorize(pd.Series(np.where(a["skipped"], None, words)))
        key_codes = np.where(a["skipped"] | (words == ""), -1, key_codes).astype(np.int64)
        first = _as_float(g["answer_first_token_id"])
        a["first_token_id"] = np.where(np.isnan(first), -1, first).astype(np.int64)
    a["key"] = key_codes

    # Model log-prob of each answer.
    lp = _as_float(g["model_answer_logprob"])
    gm = _as_float(g["model_id"])
    other_model = ~np.isnan(gm) & (gm != model_id)
    lp[other_model] = np.nan
    ftok = a["first_token_id"].to_numpy()
    in_topk = np.zeros(len(a), dtype=bool)
    topk_val = np.full(len(a), np.nan)
    for start in range(0, len(a), 100_000):  # chunks keep the (answers x k) comparison small
        rows = slice(start, start + 100_000)
        codes = item_codes[rows]
        hit = (topk_ids[codes] == ftok[rows, None]) & (ftok[rows, None] >= 0)
        in_topk[rows] = hit.any(axis=1)
        topk_val[rows] = np.where(in_topk[rows], topk_lp[codes, hit.argmax(axis=1)], np.nan)
    status = np.full(len(a), "exact", dtype=object)
    skipped = a["skipped"].to_numpy()
    no_answer = skipped | (key_codes < 0)
    fill_topk = np.isnan(lp) & in_topk & ~no_answer
    if mode == "word":
        # A word is at most as likely as its first token; unknown word log-probs are bounded.
        bound = np.where(in_topk, topk_val, kth_lp[item_codes])
        fill_topk = np.zeros(len(a), dtype=bool)
    else:
        lp = np.where(fill_topk, topk_val, lp)
        bound = kth_lp[item_codes]
    status[fill_topk] = "topk"
    unknown = np.isnan(lp) & ~no_answer
    if missing == "bound":
        lp = np.where(unknown, bound, lp)
        status[unknown] = "bound"
    else:
        status[unknown] = "missing"
    status[no_answer] = "skip"
    lp[no_answer] = np.nan
    a["lp"] = lp
    a["lp_status"] = status
    a["in_topk"] = in_topk
    n_unknown = int(unknown.sum())
    if n_unknown:
        what = ("counted at the k-th stored log-prob, an upper bound (so model log-likelihoods "
                "are upper bounds)" if missing == "bound" else "left out of log-likelihood metrics")
        ext = g["external"].to_numpy(dtype=bool)
        whose = "imported answers" if ext[unknown].all() else "answers"
        why = ("word-mode answers get theirs from the background jobs (or `humanlm score "
               "--fill-guesses`), and these were exported before" if mode == "word" else
               f"outside the stored top-{k} and not filled yet by the background jobs or "
               "`humanlm score --fill-guesses`")
        notes.append(
            f"{n_unknown:,} {whose} ({n_unknown / len(a):.1%}) have no exact model log-prob "
            f"({why}): {what}"
        )
    if other_model.any():
        notes.append(f"{int(other_model.sum())} answers carried a log-prob of another model; "
                     "it was ignored")

    # Crowd: counts per (item, key) over non-skip answers, and the plurality answer per item.
    answered = key_codes >= 0
    pair = pd.DataFrame({"i": item_codes[answered], "key": key_codes[answered],
                         "correct": a["correct"].to_numpy()[answered]})
    per_key = pair.groupby(["i", "key"], sort=False).agg(n=("correct", "size"),
                                                         correct=("correct", "max")).reset_index()
    n_item = np.bincount(pair["i"], minlength=n_items)
    items["n_nonskip"] = n_item
    items["n_analysed"] = np.bincount(item_codes, minlength=n_items)
    top = per_key.groupby("i")["n"].transform("max")
    tied = per_key[per_key["n"] == top]
    crowd = tied.groupby("i")["correct"].mean()
    items["crowd_correct"] = crowd.reindex(np.arange(n_items)).to_numpy()
    items["crowd_n_tied"] = tied.groupby("i").size().reindex(np.arange(n_items)).fillna(0).to_numpy()
    a["n_item"] = n_item[item_codes]
    cnt = per_key.set_index(["i", "key"])["n"]
    key_count = np.zeros(len(a))
    if answered.any():
        key_count[answered] = cnt.reindex(
            pd.MultiIndex.from_arrays([item_codes[answered], key_codes[answered]])
        ).to_numpy()
    a["count_key"] = key_count
    a["entropy"] = items["model_entropy"].to_numpy(dtype=np.float64)[item_codes]
    a["model_correct"] = items["model_correct"].to_numpy(dtype=bool)[item_codes]
    a["token_class"] = items["token_class"].to_numpy()[item_codes]

    design = Design(a["p_idx"].to_numpy(), a["i_idx"].to_numpy(), n_boot=n_boot, seed=seed)
    return Prepared(
        answers=a, items=items, model=model, mode=mode, temperatures=temps,
        topk_ids=topk_ids, topk_lp=topk_lp, topk_ctrl=topk_ctrl, logz=logz, design=design,
        notes=notes, participants=participants,
        options={"mode": mode, "model_id": model_id, "study_id": study_id, "source": source,
                 "include_pilot": include_pilot, "include_excluded": include_excluded,
                 "missing": missing, "n_boot": n_boot, "seed": seed},
    )


def _check_rows(data: ExportData, g: pd.DataFrame) -> np.ndarray:
    """Comprehension-check answers: match_rule "check" (answered), or a skip on an item that
    the answer's study lists in settings.checks (a skipped check keeps match_rule "skip")."""
    rule = g["match_rule"].astype(object).to_numpy()
    out = rule == "check"
    pairs: set[tuple[int, int]] = set()
    for study_id, settings in zip(data.studies["study_id"], data.studies["settings"]):
        given = settings.get("checks") if isinstance(settings, dict) else None
        for check in given or []:
            if isinstance(check, dict) and check.get("item_id") is not None:
                pairs.add((int(study_id), int(check["item_id"])))
    if pairs:
        study = g["study_id"].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
        item = g["item_id"].to_numpy()
        skipped = g["skipped"].to_numpy(dtype=bool)
        listed = np.array([not np.isnan(s) and (int(s), int(i)) in pairs
                           for s, i in zip(study, item)], dtype=bool)
        out |= skipped & listed
    return out


def _pooled_rows(g: pd.DataFrame) -> np.ndarray:
    """Imported (external) answers whose participant id stands for a whole import, not a person:
    `humanlm import-responses` gives every row of a file without a participant column one
    shared id. Such an id answers the same item more than once (a person answers each item
    once), or it is the only participant of the imported answers."""
    ext = g["external"].to_numpy(dtype=bool) | (g["source"].astype(object).to_numpy() == "external")
    if not ext.any():
        return np.zeros(len(g), dtype=bool)
    e = g.loc[ext, ["participant_id", "item_id"]]
    ids = set(e.loc[e.duplicated(keep=False), "participant_id"])
    people = e["participant_id"].unique()
    if len(people) == 1:
        ids |= set(people)
    return ext & g["participant_id"].isin(ids).to_numpy()


def get_prepared(data, **selection) -> Prepared:
    """Accept an ExportData (prepared with the selection options) or a Prepared object."""
    if isinstance(data, Prepared):
        return data
    if not isinstance(data, ExportData):
        raise AnalysisError("expected the result of analysis.load(path) or analysis.prepare(data)")
    return prepare(data, **selection)
