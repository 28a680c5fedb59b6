"""The report: every metric on one export, as a self-contained HTML page or as JSON.

    from analysis.report import write_report
    write_report(analysis.load("export.zip"), "report.html")          # or format="json"

The HTML has no external resources (figures are inline SVG, styles inline), so it can be
mailed, archived with the data, or opened offline. Its methods section is generated from the
docstrings of the metric functions, so the text and the code cannot drift apart.
"""

from __future__ import annotations

import html
import inspect
import itertools
import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import answers as answers_mod
from . import bootstrap as bootstrap_mod
from . import judgements, metrics, models_compare, pairwise, stated, temperature, tokens
from .answers import JUDGEMENT_SECTIONS, counted, prepare
from .reader import AnalysisError, ExportData, load

FORMATS = ("html", "json")
DEFAULTS = {"level": 0.95, "n_boot": 1000, "seed": 0, "min_answers": 10, "min_crowd": 3,
            "missing": "bound"}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("humanlm")
    except Exception:  # noqa: BLE001 (not installed as a package)
        return "unknown"


def _safe(section: str, fn, errors: dict):
    try:
        return fn()
    except AnalysisError as exc:
        errors[section] = str(exc)
        return None


def run_analysis(data: ExportData | str | Path, **options) -> dict[str, Any]:
    """Every metric with the report's settings; returns a dict of DataFrames and facts.

    Options: level, n_boot, seed, min_answers (items in distribution metrics), min_crowd
    (answers for a crowd plurality), missing, and the selection of analysis.prepare (mode,
    model_id, study_id, source, include_pilot, include_excluded).
    """
    if not isinstance(data, ExportData):
        data = load(data, lean=True)
    opts = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    level, min_answers, min_crowd = opts.pop("level"), opts.pop("min_answers"), opts.pop("min_crowd")
    errors: dict[str, str] = {}
    modes = set(data.guesses["mode"].unique().tolist())
    try:
        prep = prepare(data, **opts)
    except AnalysisError as exc:
        # An export of pairwise judgements or stated distributions only: their sections alone.
        if not modes & set(JUDGEMENT_SECTIONS) or opts.get("mode") is not None:
            raise
        prep = None
        errors["predictions"] = str(exc)
    out: dict[str, Any] = {"prep": prep, "data": data, "errors": errors,
                           "settings": {**opts, "level": level, "min_answers": min_answers,
                                        "min_crowd": min_crowd,
                                        "mode": prep.mode if prep else None,
                                        "model_id": prep.model["model_id"] if prep else opts.get("model_id")}}
    chosen = {k: opts.get(k) for k in ("model_id", "study_id", "source", "include_pilot",
                                       "include_excluded")}
    boot = {"level": level, "n_boot": opts["n_boot"], "seed": opts["seed"]}
    out["pairwise"] = (judgements.pairwise_loss(data, **boot, **chosen)
                       if "pairwise" in modes else [])
    out["stated"] = (judgements.stated_scores(data, **boot, **chosen)
                     if "distribution" in modes else [])
    if prep is None:
        return out
    # None when no item has a true continuation (stems only): the report says so instead
    out["accuracy"] = _safe("accuracy", lambda: metrics.accuracy(prep, min_crowd=min_crowd, level=level), errors)
    out["simulator_fit"] = _safe("simulator_fit", lambda: metrics.simulator_fit(
        prep, min_crowd=min_crowd, level=level), errors)
    out["temperature"] = _safe("temperature", lambda: temperature.fit_temperature(prep, level=level), errors)
    out["temperature_curve"] = _safe("temperature", lambda: temperature.temperature_curve(prep), errors)
    # Several models on the same answers (answer_models, item_models); None without them.
    out["models_comparison"] = _safe("models_comparison", lambda: models_compare.compare_models(
        data, prep, level=level, min_crowd=min_crowd, min_answers=min_answers,
        temperature=out["temperature"]), errors)
    out["distances"] = _safe("distances", lambda: metrics.item_distances(prep, min_answers=min_answers), errors)
    if out["distances"] is not None and len(out["distances"]):
        out["distance_summary"] = metrics.distance_summary(prep, distances=out["distances"], level=level)
        out["pairs"] = metrics.answer_pairs(prep, min_answers=min_answers)
        t_star = out["temperature"]["estimate"].iloc[0] if out["temperature"] is not None else None
        if t_star is not None and np.isfinite(t_star):
            at_t = metrics.item_distances(prep, min_answers=min_answers, temperature=float(t_star))
            out["distance_summary_tstar"] = metrics.distance_summary(prep, distances=at_t, level=level)
    elif out["distances"] is not None:
        errors["distances"] = (f"no item has {min_answers} or more answers; distribution "
                               "distances need that many (lower min_answers / --min-answers)")
    out["learning_curve"] = metrics.learning_curve(prep, level=level)
    out["learning_trend"] = metrics.learning_trend(prep, level=level)
    out["calibration"] = metrics.calibration(prep, level=level)
    out["calibration_summary"] = metrics.calibration_summary(prep, level=level)
    out["has_reported_probability"] = bool(np.isfinite(prep.answers["reported_probability"]).any())
    return out


# ------------------------------------------------------------------------------- formatting

def _num(x, digits=2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    s = f"{x:,.{digits}f}"
    return s.replace("-", "−")


def _pct(x, digits=1) -> str:
    if x is None or not np.isfinite(x):
        return "–"
    return f"{100 * x:.{digits}f}%".replace("-", "−")


def _ci(row, fmt=_num, **kw) -> str:
    return f"{fmt(row['estimate'], **kw)} <span class=ci>({fmt(row['ci_low'], **kw)} to {fmt(row['ci_high'], **kw)})</span>"


def _n(row) -> str:
    parts = []
    for key, name in (("n_answers", "answers"), ("n_items", "items"), ("n_participants", "participants"),
                      ("n_unattributed", "imported answers without a participant")):
        v = row.get(key)
        if v is not None and not (isinstance(v, float) and np.isnan(v)):
            if key == "n_unattributed" and not v:
                continue
            if key == "n_participants" and not v and row.get("n_unattributed"):
                continue  # only imported answers without a participant: not "0 participants"
            parts.append(f"{int(v):,} {name}")
    return ", ".join(parts)


def _table(headers: list[str], rows: list[list[str]], caption: str, cls: str = "",
           row_headers: bool = True) -> str:
    """A table with a caption, column headers (scope=col) and, when `row_headers`, the first
    cell of each row as its row header (scope=row); in a scroll container a keyboard can reach
    (tabindex=0, role=region, named by the caption), so a wide table never widens the page."""
    head = "".join(f"<th scope=col>{h}</th>" for h in headers)
    body = []
    for r in rows:
        cells = [f"<th scope=row>{r[0]}</th>" if row_headers else f"<td>{r[0]}</td>"]
        cells += [f"<td>{c}</td>" for c in r[1:]]
        body.append("<tr>" + "".join(cells) + "</tr>")
    label = html.escape(re.sub(r"<[^>]+>", "", caption), quote=True)
    return (f"<div class=scroll role=region tabindex=0 aria-label=\"{label}\">"
            f"<table class='{cls}'><caption>{caption}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _figure(svg: str, number: int, caption: str, fid: str, alt: str) -> str:
    # Show every figure at the same scale (1.6 px per point of the matplotlib figure, about
    # 1.2x its natural size), shrunk only when the column is narrower. The SVG is an image
    # with a text alternative (role=img + aria-label); the caption says what it shows.
    m = re.search(r'<svg[^>]*?width="([\d.]+)pt"', svg)
    style = f" style='width:{float(m.group(1)) * 1.6:.0f}px'" if m else ""
    label = html.escape(f"Figure {number}: {alt}", quote=True)
    svg = svg.replace("<svg ", f"<svg role=img aria-label=\"{label}\" focusable=false{style} ", 1)
    return (f"<figure id='{fid}'>{svg}<figcaption><b>Figure {number}.</b> {caption}</figcaption>"
            "</figure>")


LABEL = re.compile(r"^[A-Z][\w\-() /*,']{0,40}:(\s|$)")  # "Model:", "Crowd plurality:" start a paragraph


def _doc_html(doc: str) -> str:
    """A docstring as paragraphs; indented lines (formulas, lists) as preformatted blocks."""
    out, para, pre = [], [], []

    def flush():
        if para:
            out.append("<p>" + html.escape(" ".join(para)) + "</p>")
            para.clear()
        if pre:
            out.append("<pre>" + html.escape("\n".join(pre)) + "</pre>")
            pre.clear()

    for line in doc.splitlines():
        if not line.strip() or (para and LABEL.match(line)):
            flush()
        if not line.strip():
            continue
        elif line.startswith("  "):
            if para:
                flush()
            pre.append(line)
        else:
            if pre:
                flush()
            para.append(line.strip())
    flush()
    return "\n".join(out)


METHOD_FUNCTIONS = [
    ("Which answers are analysed", answers_mod.prepare),
    ("Accuracy: humans, crowd, model", metrics.accuracy),
    ("Intervals for accuracies: Wilson score with the effective sample size", metrics.proportion_interval),
    ("Token classes", tokens.token_class),
    ("Simulator fit and the model-sample test", metrics.simulator_fit),
    ("Distribution distances per item", metrics.item_distances),
    ("Averages of the distances", metrics.distance_summary),
    ("Temperature fit", temperature.fit_temperature),
    ("Temperature curve", temperature.temperature_curve),
    ("Learning curve", metrics.learning_curve),
    ("Learning trend", metrics.learning_trend),
    ("Calibration (reliability diagram)", metrics.calibration),
    ("Calibration in numbers", metrics.calibration_summary),
]


MODELS_METHODS = [
    ("Several models: the answers and numbers compared", models_compare.model_answers),
    ("Several models: mean log-likelihood of human answers and the ranking", models_compare.mean_loglik),
    ("Several models: word-level accuracy across tokenizers", models_compare.word_accuracy),
    ("Several models: simulator fit against the crowd", models_compare.crowd_fit),
    ("Several models: KL(crowd ‖ model) and entropy (mode collapse)", models_compare.crowd_kl),
    ("Several models: T* per model", models_compare.model_temperatures),
    ("Several models: what the section shows", models_compare.compare_models),
]
PAIRWISE_METHODS = [
    ("Human loss from pairwise judgements", judgements.pairwise_loss),
    ("Pairwise: Redwood's estimator", pairwise),
    ("Pairwise: draws equal to the true token", pairwise.expected_weight),
    ("Pairwise: the estimator's bias, simulated on this export", judgements.bias_table),
    ("Pairwise: the model players of the simulation", judgements.simulated_players),
    ("Pairwise: what G is known of", judgements.proposal_from_export),
    ("Pairwise: verdict", judgements.pairwise_verdict),
]
STATED_METHODS = [
    ("Stated distributions: cells and scores", stated),
    ("Stated distributions: people against the model", judgements.stated_scores),
    ("Stated distributions: calibration", stated.calibration),
]


def methods(res: dict | None = None) -> dict[str, str]:
    """Section title -> docstring, for the methods section (HTML and JSON). With a result of
    run_analysis: the methods of the sections it has (pairwise judgements and stated
    distributions only when the export has them; the prediction measures only when it has
    token- or word-mode answers)."""
    chosen = list(METHOD_FUNCTIONS)
    if res is not None:
        if res.get("prep") is None:
            chosen = [("Which answers are analysed", answers_mod.select_rows)]
        if res.get("models_comparison"):
            chosen += MODELS_METHODS
        if res.get("pairwise"):
            chosen += PAIRWISE_METHODS
        if res.get("stated"):
            chosen += STATED_METHODS
    out = {title: inspect.getdoc(fn) or "" for title, fn in chosen}
    out["Confidence intervals: two-way cluster bootstrap"] = inspect.getdoc(bootstrap_mod) or ""
    return out


# ---------------------------------------------------------------------------------- HTML

CSS = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;color:#1d1d1f;background:#fff;
max-width:1000px;margin:24px auto;padding:0 20px;line-height:1.45;font-size:15px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:34px 0 8px;border-bottom:1px solid #ddd;
padding-bottom:4px}h3{font-size:16px;margin:20px 0 6px}
a{color:#0b5394}
.sub{color:#444;margin:0 0 10px}
nav.toc ol{display:flex;flex-wrap:wrap;gap:4px 18px;list-style:none;padding:0;margin:8px 0 0;font-size:14px}
.scroll{overflow-x:auto;max-width:100%;margin:8px 0 14px}
.scroll:focus-visible{outline:2px solid #0072B2;outline-offset:2px}
table{border-collapse:collapse;font-size:14px}
caption{text-align:left;font-weight:600;padding:2px 0 6px;color:#1d1d1f}
th,td{padding:5px 10px;border-bottom:1px solid #e3e3e3;text-align:left;vertical-align:top}
thead th{background:#f5f5f7;font-weight:600}tbody th{font-weight:600}
td.n,.n{color:#444;font-size:13px}
.ci{color:#444;font-size:13px;white-space:nowrap}
td code{overflow-wrap:anywhere;word-break:break-word}
.verdict{background:#eef6fb;border-left:4px solid #0072B2;padding:8px 12px;margin:10px 0}
.verdict.withheld,.summary .withheld{background:#fff8e6;border-left-color:#E69F00}
ul.summary li.withheld{padding:4px 8px;border-left:4px solid #E69F00}
.note{background:#fff8e6;border-left:4px solid #E69F00;padding:6px 12px;margin:8px 0;font-size:14px}
ul.left-out{margin:6px 0 10px;padding-left:22px;font-size:14px}
figure{margin:14px 0 22px}figure svg{max-width:100%;height:auto}
figcaption{font-size:13px;color:#333;margin-top:4px;max-width:820px}
.figs2{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}.figs2 figure{flex:1 1 430px;margin:6px 0}
pre{background:#f7f7f9;padding:6px 10px;font-size:12.5px;white-space:pre-wrap;overflow-wrap:anywhere;margin:4px 0}
.methods p{margin:6px 0}details{margin:6px 0}summary{cursor:pointer;font-weight:600}
ul.summary li{margin:4px 0}
footer{margin:34px 0 10px;border-top:1px solid #ddd;padding-top:8px;font-size:13px;color:#444}
@media print{body{max-width:none}h2{page-break-after:avoid}figure{page-break-inside:avoid}
.scroll{overflow:visible}}
"""

SECTIONS = [("summary", "Summary"), ("headline", "Who predicts text better?"),
            ("models", "Which models predict people best"),
            ("fit", "How well does the model predict people?"),
            ("distributions", "How close are the distributions?"), ("temperature", "Temperature"),
            ("learning", "Learning and calibration"), ("methods", "Methods"),
            ("provenance", "Data provenance")]


def _unit(res: dict) -> str:
    """What a player predicted in the analysed answers: 'word' (word mode) or 'token'."""
    return "word" if res["prep"] is not None and res["prep"].mode == "word" else "token"


def _who_label(who: str, unit: str) -> str:
    labels = {
        "humans": "Humans (each answer)", "crowd": "Crowd plurality answer",
        "model": "Model top-1" if unit == "token" else "Model top-1 first token (upper bound)",
        "humans − model": "Humans − model", "crowd − model": "Crowd − model",
        "crowd − humans": "Crowd − humans",
    }
    return labels[who]


def _group_label(label: str, unit: str) -> str:
    if unit == "word":
        return {"all tokens": "all words", "whole words only": "whole words only (first token)",
                "no punctuation": "no punctuation"}.get(label, label)
    return label


def clustering(res: dict) -> str:
    """One sentence: how the intervals treat who answered what (the report's sub-heading)."""
    prep = res["prep"]
    if prep is None:
        return "two-way cluster bootstrap over participants and items (contexts)"
    pooled = int(prep.answers["pooled"].sum()) if "pooled" in prep.answers else 0
    text = ("two-way cluster bootstrap over participants and items; accuracies as Wilson score "
            "intervals with the design's effective sample size")
    if pooled:
        text += (f"; the {pooled:,} imported answers that name no participant are not one person: "
                 "each is treated as its own participant, so they are clustered by item only")
    return text


# With answers at their top-k bound (an upper bound of ln p_model), these measures are bounds.
BOUND_WORDS = {"model_loglik": "at most", "simulator_fit": "at most", "perplexity_ratio": "at least",
               "model_loglik_all": "at most", "model_sample_test": "at most"}


def _fit_row(res: dict, metric: str):
    sf = res.get("simulator_fit")
    if sf is None or not len(sf):
        return None
    rows = sf[sf["metric"] == metric]
    return rows.iloc[0] if len(rows) else None


def _fit_sentence(r, name: str, what: str) -> tuple[str, bool]:
    """The headline sentence of a fit measure, and whether its verdict is withheld. Never a
    finding drawn from bounds: the sentence says "at most" and "no verdict yet" then."""
    basis = r.get("verdict_basis", "exact")
    nb, n = int(r.get("n_bounded") or 0), int(r.get("n_answers") or 0)
    value = (f"{_num(r['estimate'])} nats/answer ({_num(r['ci_low'])} to {_num(r['ci_high'])})")
    if basis == "withheld" and nb:
        return ((f"{name}: no verdict yet. {nb:,} of {n:,} answers ({nb / n:.0%}) lack exact "
                 "model log-probs (they await the background jobs) and count at their top-k "
                 f"bound, so {what} is only an upper bound: at most {value}. Export again once "
                 "the model numbers are filled."), True)
    if basis == "withheld":
        return f"{name}: {value}; {r['verdict']}.", True
    if basis == "upper bound":
        return ((f"{name}: at most {value} (an upper bound: {nb:,} of {n:,} answers count at "
                 f"their top-k bound); even so, {r['verdict'].split(' (even though')[0]}."), False)
    return f"{name} ({what}): {value}: {r['verdict']}.", False


def _sentences(res: dict) -> list[tuple[str, str]]:
    """The summary: (sentence, css class) pairs; class 'withheld' marks a withheld verdict."""
    out = _prediction_sentences(res) if res["prep"] is not None else []
    return out + _judgement_sentences(res)


def _interval(low: float, high: float, digits: int = 2) -> str:
    return f"{_num(low, digits)} to {_num(high, digits)}"


def _judgement_sentences(res: dict) -> list[tuple[str, str]]:
    """One summary line per model for pairwise judgements and for stated distributions."""
    out = []
    level = round(res["settings"]["level"] * 100)
    for e in res.get("pairwise") or []:
        if "error" in e:
            out.append(((f"Pairwise judgements ({e['model_name']}): {e['error']} "
                        f"({counted(e['n_skipped'], 'skip')})."), "withheld"))
            continue
        out.append((
            (f"Pairwise judgements: people's loss on the true next tokens is "
            f"{_num(e['human_loss'])} nats/token ({level}% CI {_interval(e['loss_low'], e['loss_high'])}; "
            f"perplexity {_num(e['human_perplexity'], 1)}), against {_num(e['model_loss'])} "
            f"(perplexity {_num(e['model_perplexity'], 1)}) for {e['model_name']} on the same "
            f"{e['n_contexts']:,} contexts; difference {_num(e['delta'])} "
            f"({_interval(e['delta_low'], e['delta_high'])}) from "
            f"{counted(e['n_judgements'], 'judgement')}: {e['verdict']}."),
            "withheld" if e["verdict_basis"] == "withheld" else ""))
    for e in res.get("stated") or []:
        if "error" in e:
            out.append((f"Stated distributions ({e['model_name']}): {e['error']}"
                        + (f" ({counted(e['n_missing_model'], 'answer')} still await the model's "
                           "numbers)." if e["n_missing_model"] else "."), "withheld"))
            continue
        c = e["compare"]
        p, m, d = c["person_log_score"], c["model_log_score"], c["log_score_difference"]
        out.append((
            (f"Stated distributions: people's log score {_num(p['estimate'], 3)} nats/answer "
            f"({level}% CI {_interval(p['ci_low'], p['ci_high'], 3)}), {e['model_name']}'s on the "
            f"same cells {_num(m['estimate'], 3)} ({_interval(m['ci_low'], m['ci_high'], 3)}); "
            f"people − model {_num(d['estimate'], 3)} ({_interval(d['ci_low'], d['ci_high'], 3)}) "
            f"over {counted(c['n_answers'], 'answer')}: {e['verdict']}."),
            "withheld" if e["verdict_basis"] == "withheld" else ""))
    return out


def _prediction_sentences(res: dict) -> list[tuple[str, str]]:
    unit = _unit(res)
    acc = res["accuracy"]
    out = []
    mc = res.get("models_comparison")
    if mc and len(mc["models"]) > 1:  # one model alone: its section says so, not the summary
        h = mc["headline"]
        out.append((h["text"], "withheld" if h["verdict_basis"] == "withheld" else ""))
    if acc is None:  # no item with a true continuation (stems only)
        out.append((res["errors"].get("accuracy", "no accuracy") + ".", ""))  # escaped where shown
    else:
        a = acc[(acc["group_type"] == "filter") & (acc["group"] == "all")].set_index("who")
        h, m, c = a.loc["humans"], a.loc["model"], a.loc["crowd"]
        model = (f"the model's top-1 was right on {_pct(m['estimate'])} ({_pct(m['ci_low'])}–"
                 f"{_pct(m['ci_high'])}) of the same items" if unit == "token" else
                 f"the model's most likely first token was the word's first token on "
                 f"{_pct(m['estimate'])} ({_pct(m['ci_low'])}–{_pct(m['ci_high'])}) of the same items "
                 "(an upper bound of its word accuracy)")
        out.append((
            f"Humans gave the true next {unit} in {_pct(h['estimate'])} of {int(h['n_answers']):,} "
            f"answers ({round(res['settings']['level'] * 100)}% CI {_pct(h['ci_low'])}–"
            f"{_pct(h['ci_high'])}); {model}"
            + (f"; the crowd's most common answer on {_pct(c['estimate'])} "
               f"({_pct(c['ci_low'])}–{_pct(c['ci_high'])}, {int(c['n_items']):,} items with ≥ "
               f"{res['settings']['min_crowd']} answers)." if np.isfinite(c["estimate"]) else "."), ""))
    r = _fit_row(res, "simulator_fit")
    if r is not None:
        text, withheld = _fit_sentence(r, "Simulator fit", "model − leave-one-out crowd log-likelihood")
        out.append((text, "withheld" if withheld else ""))
    r = _fit_row(res, "model_sample_test")
    if r is not None:
        text, withheld = _fit_sentence(r, "Model-sample test", "model − expected log-likelihood of its own samples")
        out.append((text, "withheld" if withheld else ""))
    t = res.get("temperature")
    if t is not None and len(t):
        r = t.iloc[0]
        edge = " (at the end of the stored grid: the best temperature may lie beyond it)" if r["at_edge"] else ""
        nb = int(r.get("n_bounded") or 0)
        bound = (f" Only approximate: {nb:,} of {int(r['n_answers']):,} answers "
                 f"({nb / r['n_answers']:.0%}) count at their top-k bound." if nb else "")
        out.append(((f"The model predicts people best at temperature T* = {r['estimate']:.2f} "
                     f"({r['ci_low']:.2f}–{r['ci_high']:.2f}){edge}, gaining "
                     f"{_num(r['gain_vs_T1'], 3)} nats/answer over T = 1.{bound}"),
                    "withheld" if nb else ""))
    return out


def _left_out(res: dict) -> list[str]:
    """What is not in the numbers, each named for what it is (from prepare's notes, plus the
    answers a measure cannot use)."""
    prep = res["prep"]
    items = []
    if prep is not None:
        items = [html.escape(n) for n in prep.notes]
        a = prep.answers
        n_skip = int(a["skipped"].sum())
        if n_skip:
            items.append(f"{counted(n_skip, 'skipped answer')} (“I don't know”): "
                         "counted as wrong in accuracy, left out of the log-likelihood, crowd and "
                         "distribution measures")
    else:
        entries = (res.get("pairwise") or []) + (res.get("stated") or [])
        items = [html.escape(n) for n in (entries[0]["notes"] if entries else [])]
    for key, what in (("pairwise", "pairwise judgements"), ("stated", "stated distributions")):
        for e in res.get(key) or []:
            left = ([(e["n_skipped"], "skipped (“I don't know”)")] if e["n_skipped"] else [])
            left += [(x["n"], x["reason"]) for x in e["left_out"]]
            for n, why in left:
                items.append(html.escape(f"{what} ({e['model_name']}): {counted(n, 'answer')} "
                                         f"{why}: left out"))
    return items


def _nav(res: dict) -> str:
    return ("<nav class=toc aria-label='Contents'><ol>"
            + "".join(f"<li><a href='#{sid}'>{title}</a></li>" for sid, title in sections(res))
            + "</ol></nav>")


def sections(res: dict) -> list[tuple[str, str]]:
    """(id, title) of the report's sections: the prediction measures when the export has
    token- or word-mode answers, pairwise judgements and stated distributions when it has them."""
    out = [x for x in SECTIONS if res["prep"] is not None or x[0] in ("summary", "methods", "provenance")]
    if not res.get("models_comparison"):
        out = [x for x in out if x[0] != "models"]
    extra = []
    if res.get("pairwise"):
        extra.append(("pairwise", JUDGEMENT_SECTIONS["pairwise"]))
    if res.get("stated"):
        extra.append(("stated", JUDGEMENT_SECTIONS["distribution"]))
    at = [sid for sid, _ in out].index("methods")
    return out[:at] + extra + out[at:]


def _header(res: dict, level: int) -> list[str]:
    """The title, the sub-heading (what was analysed, how many, the interval method) and the
    table of contents."""
    data, prep = res["data"], res["prep"]
    if prep is None:
        entries = (res.get("pairwise") or []) + (res.get("stated") or [])
        kinds = data.guesses["mode"].value_counts()
        what = ", ".join(f"{int(kinds.get(k, 0)):,} {k} answers" for k in JUDGEMENT_SECTIONS
                         if kinds.get(k, 0))
        names = ", ".join(sorted({html.escape(e["model_name"]) for e in entries}))
        return ["<h1>Humans and a language model: pairwise judgements and stated distributions</h1>",
                (f"<p class=sub>Model{'s' if ',' in names else ''} <b>{names}</b> · {what} · no "
                "token- or word-mode answers in this export · export "
                f"{html.escape(str(data.manifest.get('exported_at', '?')))} · {level}% confidence "
                f"intervals ({html.escape(clustering(res))})</p>"), _nav(res)]
    unit = _unit(res)
    model = prep.model
    n_all = metrics._counts(prep, np.ones(len(prep.answers), dtype=bool))
    awaiting = int(data.manifest.get("answers_awaiting_model_numbers") or 0)
    used = data.guesses["guess_id"].isin(prep.answers["guess_id"])
    n_pilot = int(data.guesses.loc[used, "pilot"].sum()) if "pilot" in data.guesses else 0
    caveats = ""
    if n_pilot:
        caveats += (f" · <b>includes {counted(n_pilot, 'pilot answer')}</b>")
    if awaiting:
        caveats += (f" · <b>{counted(awaiting, 'exported answer')} still "
                    f"await{'' if awaiting != 1 else 's'} the model's exact numbers</b> (empty in "
                    "this export; export again once the background jobs have run)")
    other_modes = data.guesses["mode"].value_counts()
    other = ", ".join(f"{int(v):,} {k}-mode answers (a separate report: --mode {k})"
                      for k, v in other_modes.items()
                      if k != prep.mode and k not in JUDGEMENT_SECTIONS)
    judged = ", ".join(f"{int(v):,} {k} answers" for k, v in other_modes.items() if k in JUDGEMENT_SECTIONS)
    people = [f"{n_all['n_participants']:,} participants"] if n_all["n_participants"] else []
    if n_all.get("n_unattributed"):
        people.append(f"{n_all['n_unattributed']:,} imported answers without a participant")
    people = " + ".join(people) or "0 participants"
    header = [f"<h1>Humans and a language model predicting the next {unit}</h1>",
              f"<p class=sub>Model <b>{html.escape(str(model.get('name')))}</b> "
              f"({html.escape(str(model.get('spec')))}) · {prep.mode}-mode answers: players "
              f"predicted the next {unit} · {n_all['n_answers']:,} answers, "
              f"{n_all['n_items']:,} items, {people}"
              + (f" · also in this export, not analysed here: {other}" if other else "")
              + (f" · also {judged}, in sections of their own" if judged else "")
              + (f" · {len(res['models_comparison']['models'])} models on the same answers, "
                 "compared in <a href='#models'>Which models predict people best</a>"
                 if res.get("models_comparison") and len(res["models_comparison"]["models"]) > 1
                 else "")
              + f" · export {html.escape(str(data.manifest.get('exported_at', '?')))} · {level}% "
              f"confidence intervals ({html.escape(clustering(res))}){caveats}</p>",
              _nav(res)]
    return header


def _verdict_box(name: str, e: dict) -> str:
    withheld = e["verdict_basis"] == "withheld"
    return (f"<div class='verdict{' withheld' if withheld else ''}'><b>{html.escape(name)}:</b> "
            f"{html.escape(e['verdict'])}.</div>")


def _left_out_list(e: dict, noun: str) -> str:
    rows = ([(e["n_skipped"], ("skipped (“I don't know”); skipping may not be at random, so "
              "their absence can move the estimate"))] if e["n_skipped"] else [])
    rows += [(x["n"], x["reason"]) for x in e["left_out"]]
    if not rows:
        return f"<p class=n>No {noun} left out.</p>"
    return ("<ul class=left-out>" + "".join(
        f"<li>{html.escape(counted(n, noun))} {html.escape(why)}: left out</li>" for n, why in rows)
        + "</ul>")


def _pairwise_section(res: dict, level: int) -> str:
    """Human loss and perplexity from pairwise judgements, one block per model."""
    entries = res["pairwise"]
    out = [("<section id=pairwise aria-labelledby=h-pairwise><h2 id=h-pairwise>"
           f"{JUDGEMENT_SECTIONS['pairwise']}</h2>"),
           ("<p>People saw a text, the token that really came next and one token drawn from the "
           "model, and said how likely each was the original. From those judgements Redwood's "
           "estimator gives people's log loss on the true next tokens, the number perplexity is "
           "made of, on exactly the contexts where the model's own loss is known.</p>")]
    for e in entries:
        name = html.escape(e["model_name"])
        if len(entries) > 1:
            out.append(f"<h3>Model {e['model_id']}: {name}</h3>")
        if "error" in e:
            out.append(f"<p class=note>{html.escape(e['error'])}.</p>"
                       + _left_out_list(e, "judgement"))
            continue
        n = (f"<span class=n>{e['n_judgements']:,} judgements, {e['n_contexts']:,} contexts, "
             f"{e['n_participants']:,} participants</span>")
        ctx = f"<span class=n>the same {e['n_contexts']:,} contexts</span>"
        ppl = (f"{_num(e['human_perplexity'], 1)} <span class=ci>({_num(e['perplexity_low'], 1)} to "
               f"{_num(e['perplexity_high'], 1)})</span>")
        ratio = {k: float(np.exp(e[k])) for k in ("delta", "delta_low", "delta_high")}
        rows = [["People", _ci({"estimate": e["human_loss"], "ci_low": e["loss_low"],
                                "ci_high": e["loss_high"]}, digits=3), ppl, n],
                [f"Model ({name}), on the same contexts", _num(e["model_loss"], 3),
                 _num(e["model_perplexity"], 1), ctx],
                ["People − model", _ci({"estimate": e["delta"], "ci_low": e["delta_low"],
                                        "ci_high": e["delta_high"]}, digits=3),
                 (f"× {_num(ratio['delta'], 3)} <span class=ci>({_num(ratio['delta_low'], 3)} to "
                 f"{_num(ratio['delta_high'], 3)})</span>"), ctx]]
        out.append(_table(["Who", f"Loss, nats/token ({level}% CI)", "Perplexity", "n"], rows,
                          f"Loss on the true next tokens: people (from pairwise judgements) and "
                          f"{name}"))
        out.append(_verdict_box("People against the model", e))
        if e.get("caveat"):
            out.append(f"<p class=note>{html.escape(e['caveat'])}</p>")
        out.append(
            f"<p class=n>{counted(e['n_judgements'], 'judgement')} used; median "
            f"{e['median_judgements_per_context']:g} per context; on average "
            f"{_pct(e['mean_truth_share'])} of a context's stored draws are the true token itself "
            "(never shown; they count with weight 1). The model's loss has no interval: it is "
            "exact on these contexts; the people's loss and the difference vary with the "
            "contexts and participants drawn (two-way cluster bootstrap).</p>")
        out.append(_left_out_list(e, "judgement"))
        b = e["bias"]
        at = int(e["bias_at_median"]["judgements_per_context"])
        rows = []
        for _, r in b.iterrows():
            mark = " (this export)" if int(r["judgements_per_context"]) == at else ""
            rows.append([f"{int(r['judgements_per_context'])}{mark}",
                         f"{_num(r['bias_exact'], 3)} <span class=ci>(sd {_num(r['sd_exact'], 3)})</span>",
                         f"{_num(r['bias_rounded'], 3)} <span class=ci>(sd {_num(r['sd_rounded'], 3)})</span>"])
        out.append(_table(
            ["Judgements per context", "Bias, exact answers (nats/token)",
             "Bias, answers on the 1%–99% scale"], rows,
            "The estimator's bias, simulated with model players on this export's contexts"))
        out.append(
            f"<p class=n>Estimated minus true loss of model players whose loss exceeds "
            f"{name}'s by {_num(e['simulated_gap'], 3)} nats/token, the largest gap the interval "
            f"allows (their estimate, collected as here, averages the interval's upper end "
            f"{_num(e['delta_high'], 3)}; the bias grows with the gap), on "
            f"{b.attrs.get('n_contexts', 0):,} of this export's contexts with "
            f"{b.attrs.get('stored_draws', 0)} stored draws each, {len(b)} × 20 simulated studies; "
            "sd: how much one study's estimate varies. Negative: the estimate is too low (people "
            f"look better). This export's answers are {'on the scale' if e['answers'] == 'rounded' else 'exact probabilities'}; "
            "the verdict allows for the bias of that column.</p>")
    out.append("</section>")
    return "\n".join(out)


def _stated_section(res: dict, plots, level: int, figure: int) -> str:
    """People's stated distributions against the model's on the same cells, one block per model."""
    entries = res["stated"]
    out = [("<section id=stated aria-labelledby=h-stated><h2 id=h-stated>"
           f"{JUDGEMENT_SECTIONS['distribution']}</h2>"),
           ("<p>People named up to five continuations and spread 100 points over them and "
           "“something else”. Each answer is a distribution over those cells; the model is "
           "scored on exactly the same cells (its probability of each candidate's first token, "
           "the rest on “something else”).</p>")]
    for e in entries:
        name = html.escape(e["model_name"])
        if len(entries) > 1:
            out.append(f"<h3>Model {e['model_id']}: {name}</h3>")
        if "error" in e:
            out.append(f"<p class=note>{html.escape(e['error'])}.</p>" + _left_out_list(e, "answer"))
            continue
        c = e["compare"]
        n = (f"<span class=n>{c['n_answers']:,} answers, {c['n_items']:,} items, "
             f"{c['n_participants']:,} participants</span>")
        rows = [["People (stated)", _ci(c["person_log_score"], digits=3), _ci(c["person_brier"], digits=3), n],
                [f"Model ({name}), same cells", _ci(c["model_log_score"], digits=3),
                 _ci(c["model_brier"], digits=3), n],
                ["People − model", _ci(c["log_score_difference"], digits=3),
                 _ci(c["brier_difference"], digits=3), n]]
        out.append(_table(["Who", f"Log score, nats/answer, higher is better ({level}% CI)",
                           f"Brier score, lower is better ({level}% CI)", "n"], rows,
                          f"Stated distributions scored against {name} on the same cells"))
        out.append(_verdict_box("People against the model", e))
        floored = (f"; {counted(c['n_floored'], 'answer')} gave the true token's cell 0 points and "
                   "score as half a point" if c["n_floored"] else "")
        out.append(f"<p class=n>{counted(c['n_answers'], 'answer')} scored{floored}. Differences "
                   "are paired on the same answers.</p>")
        out.append(_left_out_list(e, "answer"))
        cal = e["calibration"]
        people = cal[cal["who"] == "humans"]
        out.append(_figure(
            plots.calibration_plot(cal, labels={"humans": "People (stated probability of a cell)",
                                                "model": f"Model ({e['model_name']}), same cells"},
                                   xlabel="Stated probability of a cell",
                                   ylabel="How often the cell held the true token"),
            figure, "Calibration of stated distributions: for every cell of every answer "
            "(“something else” included), the probability given to it against how often it held "
            f"the true next token, per tenth of the scale; {level}% Wilson intervals with the "
            "smallest of the bin's answers, items and participants as the effective size.",
            f"fig-stated-calibration-{e['model_id']}",
            "reliability diagram of stated probabilities against observed frequencies, with the "
            "diagonal of perfect calibration"))
        figure += 1
        rows = [[f"{_pct(r['bin_low'], 0)}–{_pct(r['bin_high'], 0)}", _pct(r["mean_stated"]),
                 _ci(r, _pct), (f"<span class=n>{int(r['n_cells']):,} cells, {int(r['n_answers']):,} "
                 f"answers</span>")] for _, r in people.iterrows()]
        out.append(_table(["Stated probability", "Mean stated", f"Observed ({level}% CI)", "n"],
                          rows, "Calibration of people's stated probabilities"))
    out.append("</section>")
    return "\n".join(out)


def _text(v) -> str:
    """A text cell of a records table: "" for None or NaN."""
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _model_cell(r) -> str:
    """The model's name with what sets it apart (the game's model, another tokenizer, top-k
    only, tuned)."""
    tags = []
    if r.get("game_model"):
        tags.append("the game's model")
    if not r.get("same_tokenizer"):
        tags.append(f"own tokenizer {r.get('tokenizer')}")
    if r.get("top_k_only"):
        tags.append("top-k only")
    if r.get("tuned"):
        tags.append("tuned")
    return (html.escape(str(r["label"]))
            + (f"<br><span class=n>{html.escape(', '.join(tags))}</span>" if tags else ""))


def _value(r, key: str, digits: int = 3, fmt=None) -> str:
    """A measure of one model with its interval, or why it has none."""
    if _text(r.get(f"{key}_reason")) and not np.isfinite(r.get(key, np.nan)):
        return f"<span class=n>{html.escape(_text(r[f'{key}_reason']))}</span>"
    row = {"estimate": r[key], "ci_low": r[f"{key}_low"], "ci_high": r[f"{key}_high"]}
    if fmt is not None:
        return _ci(row, fmt)
    return _ci(row, digits=digits)


def _models_section(res: dict, plots, level: int, number: int) -> str:
    """Several models on the same human answers: the ranking, its figure, every other measure,
    and entropy against KL (mode collapse)."""
    mc = res["models_comparison"]
    t = mc["models"]
    unit = "word" if mc["mode"] == "word" else "answer"
    h = mc["headline"]
    out = [("<section id=models aria-labelledby=h-models><h2 id=h-models>Which models predict "
           "people best</h2>"),
           ("<p>Every model scored the same human answers: the probability of each answer's text "
            "after the prefix, by the chain rule over the model's own tokens"
            + (" (with the term for the word ending there)" if mc["mode"] == "word" else "")
            + ". The event is the same string for every model, so models with different "
            "tokenizers are compared on the same answers.</p>"),
           (f"<div class='verdict{' withheld' if h['verdict_basis'] == 'withheld' else ''}'>"
           f"{html.escape(h['text'])}</div>")]
    order = t.assign(_k=np.where(np.isfinite(t["loglik"]), -t["loglik"].fillna(0), np.inf))
    order = order.sort_values(["_k", "model_id"])
    rows = []
    for rank, (_, r) in enumerate(order.iterrows(), 1):
        if np.isfinite(r["loglik"]):
            best = r["diff_to_best"] == 0 and r["model_id"] == h.get("best", r["model_id"])
            diff = ("best" if best else
                    _ci({"estimate": r["diff_to_best"], "ci_low": r["diff_low"],
                         "ci_high": r["diff_high"]}, digits=3))
            n = f"<span class=n>{_n(r)}</span>"
            rows.append([f"{rank}. {_model_cell(r)}", _value(r, "loglik"), diff, n,
                         f"<span class=n>{html.escape(_text(r['missing']) or 'none')}</span>"])
        else:
            rows.append([f"– {_model_cell(r)}",
                         f"<span class=n>{html.escape(_text(r['loglik_reason']))}</span>",
                         "–", "–", f"<span class=n>{html.escape(_text(r['missing']) or 'none')}</span>"])
    out.append(_table(["Model", f"Mean log-likelihood, nats/{unit} ({level}% CI)",
                       f"Model − best, paired ({level}% CI)", "n", "Missing numbers"], rows,
                      "Models ordered by how well they predict people: mean log-likelihood of "
                      "human answers"))
    left = mc["n_left_out"]
    out.append(f"<p class=n>{counted(mc['n_answers'], 'answer')} that are not skips; the "
               f"comparison uses the {mc['n_common']:,} that every compared model has a number "
               "for"
               + (f" ({left:,} left out: a model's number is missing, see the last column)"
                  if left else "")
               + ". Differences are paired on the same answers (two-way cluster bootstrap over "
               "participants and items, the same resamples for every model).</p>")
    ranked = t[np.isfinite(t["loglik"])]
    if len(ranked):
        out.append(_figure(
            plots.model_ranking(ranked, unit), number,
            f"Models ordered by the mean log-likelihood of the human answers under each (nats per "
            f"{unit}; higher: the model predicts people better), with {level}% intervals (left), "
            "and each model's difference to the best on the same answers (right; its interval is "
            "narrower because how hard the items are is shared by every model and cancels); "
            f"{mc['n_common']:,} answers, the same for every model"
            + (f"; not drawn: {', '.join(html.escape(x) for x in t.loc[~np.isfinite(t['loglik']), 'label'])} "
               "(no numbers, see the table)" if len(ranked) < len(t) else "") + ".",
            "fig-models",
            "dot plot of the mean log-likelihood of human answers per model, best on top: "
            + ", ".join(f"{r['label']} {r['loglik']:.2f}" for _, r in
                        ranked.sort_values("loglik", ascending=False).iterrows())))
    rows = []
    for _, r in order.iterrows():
        rows.append([_model_cell(r), _value(r, "accuracy", fmt=_pct), _value(r, "simulator_fit"),
                     _value(r, "kl"), _t_star_cell(r)])
    out.append(_table(
        ["Model", f"Word-level accuracy: top-1 starts the word ({level}% CI)",
         f"Simulator fit: model − leave-one-out crowd, nats/{unit} ({level}% CI)",
         f"KL(crowd ‖ model) per item, nats ({level}% CI)", "Best temperature T*"],
        rows, "Accuracy, simulator fit, distance to the crowd and best temperature per model"))
    notes = []
    acc_n = next((r["accuracy_n"] for _, r in t.iterrows() if r["accuracy_n"]), None)
    if acc_n:
        notes.append(f"Accuracy: {_n(acc_n)}, skips included (the item was shown).")
    fit_n = next((r["simulator_fit_n"] for _, r in t.iterrows() if r["simulator_fit_n"]), None)
    if fit_n:
        crowd = t["crowd_loglik"].iloc[0] if "crowd_loglik" in t else np.nan
        notes.append(f"Simulator fit: {_n(fit_n)} on items with at least "
                     f"{max(mc['min_crowd'], 2)} answers; the crowd's categories are the "
                     f"answers' texts (mean leave-one-out log-likelihood {_num(crowd, 3)}, "
                     f"smoothing β = {_num(mc['beta'], 3)}), the same for every model.")
    kl_n = next((r["kl_n"] for _, r in t.iterrows() if r["kl_n"]), None)
    if kl_n:
        notes.append(f"KL: {kl_n['n_items']:,} items with at least {mc['min_answers']} answers "
                     "that are not skips, each counted once (Miller–Madow corrected).")
    if notes:
        out.append("<p class=n>" + " ".join(notes) + "</p>")

    # Mode collapse: entropy and KL side by side.
    out.append("<h3>Entropy and distance to the crowd (mode collapse)</h3>")
    rows = []
    pairs = mc["mode_collapse"]["pairs"]
    for _, r in order.iterrows():
        bases = [pr["tuned_label"] for pr in pairs if pr["base"] == r["model_id"]]
        role = ("tuned" if r["tuned"] else
                html.escape("base of " + ", ".join(bases)) if bases else "–")
        rows.append([_model_cell(r), role, _value(r, "entropy"), _value(r, "kl"),
                     f"<span class=n>{_n(r['entropy_n']) if r['entropy_n'] else '–'}</span>"])
    out.append(_table(["Model", "Role (from its name)",
                       f"Mean entropy, nats per own token ({level}% CI)",
                       f"KL(crowd ‖ model), nats ({level}% CI)", "n (entropy)"], rows,
                      "Each model's entropy and its distance to the crowd, side by side"))
    out.append(f"<p>{html.escape(mc['mode_collapse']['sentence'])}</p>")
    for pr in mc["mode_collapse"]["pairs"]:
        parts = []
        for key, what in (("entropy_diff", "entropy"), ("kl_diff", "KL(crowd ‖ model)")):
            if np.isfinite(pr.get(key, np.nan)):
                parts.append(f"{what} {_num(pr[key], 3)} <span class=ci>({_num(pr[key + '_low'], 3)} "
                             f"to {_num(pr[key + '_high'], 3)})</span>")
            else:
                parts.append(f"{what}: not computable for both")
        tok = "" if pr["same_tokenizer"] else (" The two tokenizers differ, so their entropies "
                                               "are per different tokens.")
        out.append(f"<p class=n>{html.escape(pr['tuned_label'])} − {html.escape(pr['base_label'])}, "
                   f"paired on the same items ({level}% CI): " + "; ".join(parts) + "." + tok + "</p>")
    out.append("</section>")
    return "\n".join(out)


def _t_star_cell(r) -> str:
    if np.isfinite(r["t_star"]):
        val = (f"{r['t_star']:.2f} <span class=ci>({r['t_star_low']:.2f} to "
               f"{r['t_star_high']:.2f})</span>")
        why = _text(r["t_star_reason"])
        return val + (f"<br><span class=n>{html.escape(why)}</span>" if why else "")
    return f"<span class=n>{html.escape(_text(r['t_star_reason']))}</span>"


def _models_json(mc: dict | None):
    if not mc:
        return None
    return {**{k: v for k, v in mc.items() if k not in ("models",)},
            "models": _records(mc["models"])}


def render_html(res: dict) -> str:
    from . import plots

    data, prep, settings = res["data"], res["prep"], res["settings"]
    unit = _unit(res)
    level = round(settings["level"] * 100)
    model = prep.model if prep is not None else {}
    parts = []
    header = _header(res, level)
    number = itertools.count(1)  # figures numbered in the order shown

    parts.append("<section id=summary aria-labelledby=h-summary><h2 id=h-summary>Summary</h2><ul class=summary>"
                 + "".join(f"<li{' class=' + cls if cls else ''}>{html.escape(text)}</li>"
                           for text, cls in _sentences(res)) + "</ul>")
    left = _left_out(res)
    if left:
        parts.append("<h3>Left out or treated specially</h3><ul class=left-out>"
                     + "".join(f"<li>{x}</li>" for x in left) + "</ul>")
    parts.append("</section>")

    if prep is not None:
        # Headline table.
        acc = res["accuracy"]
        if acc is None:  # no item with a true continuation (stems only)
            parts.append("<section id=headline aria-labelledby=h-headline><h2 id=h-headline>Who predicts text better?</h2>"
                         f"<p class=note>{html.escape(res['errors'].get('accuracy', 'not available'))}.</p></section>")
        else:
            a = acc[(acc["group_type"] == "filter") & (acc["group"] == "all")]
            rows = []
            for who in ["humans", "crowd", "model", "humans − model", "crowd − model"]:
                r = a[a["who"] == who]
                if not len(r):
                    continue
                r = r.iloc[0]
                rows.append([_who_label(who, unit), _ci(r, _pct), f"<span class=n>{_n(r)}</span>"])
            parts.append("<section id=headline aria-labelledby=h-headline><h2 id=h-headline>Who predicts text better?</h2>")
            parts.append(_table(["Who", f"Top-1 accuracy ({level}% CI)", "n"], rows,
                                f"Top-1 accuracy: how often the true next {unit} was predicted", "headline"))
            h = a[a["who"] == "humans"].iloc[0]
            near = (f"; {int(h['n_near_miss']):,} near misses that would be right with the leading space "
                    "toggled, counted wrong" if unit == "token" else "")
            parts.append(
                f"<p class=n>Crowd: items with at least {settings['min_crowd']} answers that are not skips. "
                f"Skipped answers count as wrong ({int(h['n_skipped']):,} skipped{near}). Differences are "
                f"paired on the same answers. Accuracy intervals are Wilson score intervals with the "
                "design's effective sample size (they stay within 0–100%).</p>")
            cls_of = "the true next token" if unit == "token" else "the first token of the true next word"
            parts.append(_figure(plots.accuracy_bars(acc, unit=unit), next(number),
                                 f"Top-1 accuracy by filter (left) and by class of {cls_of} (right), "
                                 f"with {level}% confidence intervals; item counts under each group. Whole "
                                 "words: the token starts a word and is not followed by a word continuation.",
                                 "fig-accuracy",
                                 f"bar chart of top-1 accuracy of humans, the crowd and the model, per "
                                 f"filter and per class of {cls_of}"))
            rows = []
            for (kind, group), sub in acc.groupby(["group_type", "group"], sort=False):
                s = sub.set_index("who")
                rows.append([html.escape(_group_label(s["label"].iloc[0], unit)), _ci(s.loc["humans"], _pct),
                             _ci(s.loc["crowd"], _pct), _ci(s.loc["model"], _pct),
                             _ci(s.loc["humans − model"], _pct), f"<span class=n>{_n(s.loc['humans'])}</span>"])
            title = "By filter and token class" if unit == "token" else "By filter and class of the word's first token"
            parts.append(f"<h3>{title}</h3>")
            parts.append(_table(["Answers", "Humans", "Crowd", "Model", "Humans − model", "n"], rows,
                                f"Top-1 accuracy ({level}% CI) {title[0].lower() + title[1:]}"))
            parts.append("</section>")

        if res.get("models_comparison"):
            parts.append(_models_section(res, plots, level, next(number)))

        # Simulator fit.
        parts.append("<section id=fit aria-labelledby=h-fit><h2 id=h-fit>How well does the model predict people?</h2>")
        sf = res.get("simulator_fit")
        if sf is not None and len(sf):
            rows = []
            for _, r in sf.iterrows():
                val = _ci(r) if r["metric"] != "perplexity_ratio" else _ci(r, digits=3)
                bounded = int(r["n_bounded"]) if r.get("n_bounded") else 0
                if bounded and r["metric"] in BOUND_WORDS:  # the crowd and entropy terms are exact
                    val = f"{BOUND_WORDS[r['metric']]} {val}"
                rows.append([html.escape(r["label"]), val,
                             f"<span class=n>{_n(r)}" + (f"; {bounded:,} at the top-k bound"
                                                         if bounded else "") + "</span>"])
            parts.append(_table(["Measure", f"Estimate ({level}% CI)", "n"], rows,
                                "Log-likelihood of human answers under the model and under the other people"))
            for metric, name in (("simulator_fit", "Simulator fit"), ("model_sample_test", "Model-sample test")):
                r = _fit_row(res, metric)
                if r is not None:
                    withheld = r.get("verdict_basis") == "withheld"
                    parts.append(f"<div class='verdict{' withheld' if withheld else ''}'><b>{name}:</b> "
                                 f"{html.escape(str(r['verdict']))}.</div>")
            beta = sf["smoothing_beta"].iloc[0]
            parts.append(f"<p class=n>Skipped answers are left out, and so are answers on items with "
                         f"fewer than {max(settings['min_crowd'], 2)} answers that are not skips (no "
                         f"crowd to compare with). Crowd baseline smoothing β = {_num(beta, 3)} (fitted by "
                         "leave-one-out likelihood), back-off: all-item answer frequencies with add-one "
                         f"smoothing over the model's {int(sf.attrs.get('vocab_size', 0)):,}-token vocabulary.</p>")
        else:
            why = res["errors"].get("simulator_fit") or (
                f"no item has {max(settings['min_crowd'], 2)} or more answers that are not skips: the "
                "leave-one-out crowd baseline needs them (lower --min-crowd)")
            parts.append(f"<p class=note>{html.escape(why)}</p>")
        parts.append("</section>")

        # Distributions.
        parts.append("<section id=distributions aria-labelledby=h-distributions><h2 id=h-distributions>How close are the distributions?</h2>")
        ds = res.get("distance_summary")
        if ds is not None and len(ds):
            dt = res.get("distance_summary_tstar")
            t_star = res["temperature"]["estimate"].iloc[0] if res.get("temperature") is not None else None
            rows = []
            for _, r in ds.iterrows():
                row = [html.escape(r["label"]), _ci(r, digits=3), _num(r["median"], 3)]
                if dt is not None:
                    m = dt[dt["metric"] == r["metric"]]
                    row.append(_ci(m.iloc[0], digits=3) if len(m) else "–")
                row.append(f"<span class=n>{int(r['n_items']):,} items, {int(r['n_answers']):,} answers</span>")
                rows.append(row)
            headers = ["Per item", f"Mean, T = 1 ({level}% CI)", "Median"]
            if dt is not None:
                headers.append(f"Mean at T* = {t_star:.2f}")
            parts.append(_table(headers + ["n"], rows, "Distances between the human and the model "
                                "distributions, averaged over items"))
            parts.append(f"<p class=n>Items with at least {settings['min_answers']} answers that are "
                         "not skips. Human answers without a known model log-prob are merged with the "
                         "model's remaining mass into one category (divergences are then lower bounds).</p>")
            pairs = res["pairs"]
            known = np.isfinite(pairs["m"])
            rho = pairs.loc[known, "m"].rank().corr(pairs.loc[known, "h"].rank())  # Spearman
            figs = [
                _figure(plots.probability_scatter(pairs), next(number),
                        f"Each point is one answer given to one item: the share of that item's "
                        f"participants who gave it against the model's probability of it. "
                        f"{int(known.sum()):,} (item, answer) pairs from {pairs['i'].nunique():,} items"
                        + (f" ({min(6000, int(known.sum())):,} drawn at random)" if known.sum() > 6000 else "")
                        + f"; Spearman ρ = {_num(rho, 2)} over these pairs. Points above the dashed line: people give the "
                        "token more often than the model predicts.", "fig-scatter",
                        f"log-log scatter plot of the share of people giving a token against the "
                        f"model's probability of it; Spearman rho {_num(rho, 2)}"),
                _figure(plots.kl_histogram(res["distances"]), next(number),
                        "Per-item divergence of the human answer distribution from the model's "
                        f"(T = 1); {len(res['distances']):,} items. 0 = people answer exactly as the model "
                        "predicts.", "fig-kl",
                        f"histogram of the per-item KL divergence over {len(res['distances']):,} items"),
            ]
            parts.append("<div class=figs2>" + "".join(figs) + "</div>")
        else:
            parts.append(f"<p class=note>{html.escape(res['errors'].get('distances', 'not available'))}</p>")
        parts.append("</section>")

        # Temperature.
        parts.append("<section id=temperature aria-labelledby=h-temperature><h2 id=h-temperature>Temperature</h2>")
        t, curve = res.get("temperature"), res.get("temperature_curve")
        if t is not None and curve is not None:
            r = t.iloc[0]
            parts.append(_table(
                ["Measure", f"Estimate ({level}% CI)", "n"],
                [["Best temperature T*", f"{r['estimate']:.3f} <span class=ci>({r['ci_low']:.3f} to {r['ci_high']:.3f})</span>",
                  f"<span class=n>{_n(r)}; {int(r['n_bounded']):,} at the top-k bound</span>"],
                 ["Mean log-likelihood at T* (nats/answer)", _num(r["loglik_at_T*"], 3), ""],
                 ["Mean log-likelihood at T = 1 (nats/answer)", _num(r["loglik_at_1"], 3), ""],
                 ["Gain of T* over T = 1 (nats/answer)",
                  f"{_num(r['gain_vs_T1'], 3)} <span class=ci>({_num(r['gain_ci_low'], 3)} to {_num(r['gain_ci_high'], 3)})</span>", ""]],
                "The temperature at which the model best predicts people"))
            parts.append(_figure(plots.temperature_curve(curve, r), next(number),
                                 "Mean log-likelihood of human answers under the model tempered to T. "
                                 "Dots: the stored grid (exact log Z); line: spline interpolation; band: "
                                 f"{level}% CI of T*.", "fig-temperature",
                                 f"line chart of the mean log-likelihood of human answers against the "
                                 f"temperature, highest at T* = {r['estimate']:.2f}"))
        else:
            parts.append(f"<p class=note>{html.escape(res['errors'].get('temperature', 'not available'))}</p>")
        parts.append("</section>")

        # Learning and calibration.
        parts.append("<section id=learning aria-labelledby=h-learning><h2 id=h-learning>Learning and calibration</h2><div class=figs2>")
        lc = res["learning_curve"]
        no_target = not prep.answers["has_target"].any()  # stems only: nothing is right or wrong
        if not len(lc):
            parts.append("<p class=note>No learning curve: " + (
                         "no item here has a true continuation (sentence stems imported without a "
                         "target have no correctness).</p>" if no_target else
                         "no answer here comes from an identified "
                         "participant (imported answers without a participant have no order of "
                         "experience).</p>"))
        else:
            parts.append(_figure(plots.learning_curve(lc), next(number),
                                 "Accuracy by how many answers the participant had given (doubling bins), "
                                 "with the model's accuracy on the same answers' items as a "
                                 f"difficulty control; {level}% Wilson intervals with the design's "
                                 "effective sample size.", "fig-learning",
                                 "line chart of human and model top-1 accuracy against the number of "
                                 "answers given so far"))
        cal = res["calibration"]
        cap = ("Reliability: observed accuracy against stated confidence, per tenth of the "
               "probability scale." if res["has_reported_probability"] else
               "No participant gave probabilities in this export; the model's own top-1 "
               "reliability is shown for reference.")
        if not len(cal):
            parts.append("<p class=note>No calibration: no item here has a true continuation, so no "
                         "answer and no top-1 of the model can be right or wrong.</p>")
        else:
            parts.append(_figure(plots.calibration_plot(cal), next(number), cap, "fig-calibration",
                                 "reliability diagram: observed accuracy against confidence, with the "
                                 "diagonal of perfect calibration"))
        parts.append("</div>")
        rows = []
        for _, r in res["learning_trend"].iterrows():
            if not r.get("n_answers"):
                continue  # no identified participant: said above
            pp = {k: 100 * r[k] for k in ("estimate", "ci_low", "ci_high")}
            rows.append([html.escape(r["label"]), _ci(pp, digits=2), f"<span class=n>{_n(r)}</span>"])
        if rows:
            parts.append(_table(["Learning", f"Percentage points per doubling ({level}% CI)", "n"], rows,
                                "Do people improve with practice?"))
        cs = res["calibration_summary"]
        rows = [[html.escape(r["who"]), html.escape(r["label"]), _ci(r, digits=3),
                 f"<span class=n>{_n(r)}</span>"] for _, r in cs.iterrows()]
        parts.append(_table(["Who", "Calibration", f"Estimate ({level}% CI)", "n"], rows,
                            "Calibration in numbers"))
        parts.append("</section>")

    figure = next(number)
    if res.get("pairwise"):
        parts.append(_pairwise_section(res, level))
    if res.get("stated"):
        parts.append(_stated_section(res, plots, level, figure))

    # Methods and provenance.
    parts.append("<section id=methods class=methods aria-labelledby=h-methods><h2 id=h-methods>Methods</h2>")
    parts.append("<p>Generated from the docstrings of the functions that computed the numbers "
                 "above (package <code>analysis</code>).</p>")
    for title, doc in methods(res).items():
        parts.append(f"<h3>{html.escape(title)}</h3>{_doc_html(doc)}")
    parts.append("</section>")
    parts.append("<section id=provenance aria-labelledby=h-provenance><h2 id=h-provenance>Data provenance</h2>")
    man = data.manifest
    rows = [["Export", html.escape(data.path)],
            ["Schema version", html.escape(str(man.get("schema_version")))],
            ["humanlm version (export)", html.escape(str(man.get("humanlm_version")))],
            ["Exported at", html.escape(str(man.get("exported_at")))],
            ["Format", html.escape(str(man.get("format")))],
            ["Export filters", f"<code>{html.escape(json.dumps(man.get('filters', {})))}</code>"],
            ["Rows", html.escape(", ".join(f"{k} {len(v):,}" for k, v in data.tables.items()))],
            ["Answers awaiting model numbers", html.escape(
                f"{int(man.get('answers_awaiting_model_numbers') or 0):,} (empty model log-probs, "
                "computed later by the background jobs)" if man.get("answers_awaiting_model_numbers")
                else ("none" if "answers_awaiting_model_numbers" in man else "not recorded"))],
            ]
    shown = [model] if prep is not None else [
        {**m, "model_id": m["model_id"]} for m in data.models.to_dict(orient="records")]
    for m in shown:
        rows += [
            ["Model", html.escape(f"{m.get('model_id')}: {m.get('name')} · {m.get('spec')} · "
                                  f"key {m.get('key')}")],
            ["Tokenizer / vocabulary", html.escape(f"{m.get('tokenizer')} · {m.get('n_vocab'):,} tokens · top-k {m.get('top_k')}")],
            ["Temperature grid", html.escape(", ".join(f"{t:g}" for t in m.get("temperatures", [])))],
            ["Model settings", f"<code>{html.escape(json.dumps(m.get('settings'), default=str))}</code>"]]
    for _, s in data.studies.iterrows():
        rows.append([f"Study {s['study_id']}", html.escape(f"{s['name']} ({s['mode']} mode)") +
                     f"<br><code>{html.escape(json.dumps(s['settings'], default=str))}</code>"])
    rows.append(["Analysis settings", f"<code>{html.escape(json.dumps(settings, default=str))}</code>"])
    rows.append(["Report", html.escape(f"humanlm analysis {_version()}, "
                                       f"{datetime.now(UTC).isoformat(timespec='seconds')}")])
    parts.append(_table(["Property", "Value"], rows, "Where the data and the numbers come from"))
    for w in data.warnings:
        parts.append(f"<div class=note>{html.escape(w)}</div>")
    for section, err in res["errors"].items():
        parts.append(f"<div class=note>{html.escape(section)}: {html.escape(err)}</div>")
    parts.append("</section>")
    footer = (f"<footer><p>Report by humanlm analysis {html.escape(_version())} on "
              f"{datetime.now(UTC).isoformat(timespec='seconds')} from "
              f"{html.escape(str(data.path))}; self-contained: no scripts, no external files.</p></footer>")
    title = (f"humanlm analysis: {html.escape(str(model.get('name')))} ({unit} predictions)"
             if prep is not None else "humanlm analysis: pairwise judgements and stated distributions")
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><title>{title}</title>"
            f"<style>{CSS}</style></head><body><header>" + "\n".join(header) + "</header>\n<main>"
            + "\n".join(parts) + "</main>\n" + footer + "</body></html>\n")


# ---------------------------------------------------------------------------------- JSON

def _clean(value):
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    return value


def _records(df: pd.DataFrame | None):
    if df is None:
        return None
    return _clean(df.to_dict(orient="records"))


def _judgement_json(entries: list[dict]) -> list[dict]:
    out = []
    for e in entries:
        e = dict(e)
        for key in ("bias", "calibration"):
            if isinstance(e.get(key), pd.DataFrame):
                e[key] = _records(e[key])
        out.append(e)
    return out


def to_json(res: dict) -> dict:
    data, prep = res["data"], res["prep"]
    have = prep is not None
    entries = (res.get("pairwise") or []) + (res.get("stated") or [])
    return _clean({
        "report": {"generator": f"humanlm analysis {_version()}",
                   "generated_at": datetime.now(UTC).isoformat(timespec="seconds")},
        "provenance": {"export": data.path, "manifest": {k: v for k, v in data.manifest.items()
                                                         if k != "models"},
                       "model": prep.model if have else None, "models": _records(data.models),
                       "studies": _records(data.studies), "warnings": data.warnings},
        "settings": res["settings"],
        "notes": prep.notes if have else (entries[0]["notes"] if entries else []),
        "summary": [text for text, _ in _sentences(res)],
        "unit": _unit(res) if have else None,
        "clustering": clustering(res),
        "accuracy": _records(res.get("accuracy")),
        "simulator_fit": _records(res.get("simulator_fit")),
        "temperature": {"fit": _records(res.get("temperature")),
                        "curve": _records(res.get("temperature_curve"))},
        "distances": {"summary": _records(res.get("distance_summary")),
                      "summary_at_T*": _records(res.get("distance_summary_tstar")),
                      "items": _records(res.get("distances"))},
        "learning_curve": _records(res.get("learning_curve")),
        "learning_trend": _records(res.get("learning_trend")),
        "calibration": _records(res.get("calibration")),
        "calibration_summary": _records(res.get("calibration_summary")),
        "models_comparison": _models_json(res.get("models_comparison")),
        "pairwise": _judgement_json(res.get("pairwise") or []),
        "stated_distributions": _judgement_json(res.get("stated") or []),
        "errors": res["errors"],
        "methods": methods(res),
    })


def write_report(data: ExportData | str | Path, path: str | Path, format: str = "html", **options) -> Path:
    """Run every metric on `data` (a loaded export or its path) and write the report to `path`:
    format="html" (self-contained page) or "json". Options as for run_analysis."""
    if format not in FORMATS:
        raise AnalysisError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    path = Path(path)
    if not path.parent.exists():
        raise AnalysisError(f"the folder {path.parent} does not exist")
    res = run_analysis(data, **options)
    if format == "json":
        text = json.dumps(to_json(res), indent=1, ensure_ascii=False, allow_nan=False)
    else:
        text = render_html(res)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
