"""Figures for the report, drawn with matplotlib (Agg) and returned as inline SVG text.

Style: one figure per question, labelled axes with units, the number of answers/items behind
each point in the caption or on the axis, colour-blind-safe colours (Okabe-Ito), text kept as
text so the figures stay sharp when pasted into a paper.
"""

from __future__ import annotations

import io
import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

WRAP = {"all": "all\ntokens", "words": "whole\nwords", "no_punct": "no punc-\ntuation",
        "word_start": "word\nstart", "word_continuation": "word con-\ntinuation",
        "punctuation": "punc-\ntuation", "number": "number\n"}
COLORS = {"humans": "#0072B2", "crowd": "#E69F00", "model": "#D55E00", "model (top-1)": "#D55E00"}
_salt = itertools.count()

STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e4e4e4",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "svg.fonttype": "none",
    "font.family": "DejaVu Sans",
}


def _svg(fig) -> str:
    buf = io.StringIO()
    with plt.rc_context({"svg.hashsalt": f"fig{next(_salt)}"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", dpi=150)
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _pct(ax, axis="y"):
    fmt = FuncFormatter(lambda v, _: f"{v * 100:.0f}%")
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)


def _fig(w=6.6, h=3.4):
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(w, h))
    return fig, ax


def accuracy_bars(acc: pd.DataFrame, unit: str = "token") -> str:
    """Grouped bars: humans / crowd / model per filter and token class, with CIs. unit "word"
    (word-mode answers) names the first group "all words" and the model's bar as its first
    token (an upper bound of its word accuracy)."""
    with plt.rc_context(STYLE):
        groups = acc[["group_type", "group", "label"]].drop_duplicates()
        groups = groups[~((groups["group_type"] == "class") & (groups["group"] == "other"))]
        fig, ax = plt.subplots(figsize=(7.2, 3.6))
        who = ["humans", "crowd", "model"]
        names = {"humans": "Humans (each answer)", "crowd": "Crowd plurality",
                 "model": "Model top-1" if unit == "token" else "Model top-1 first token"}
        wrap = {**WRAP, "all": f"all\n{unit}s"}
        width = 0.26
        xs = np.arange(len(groups), dtype=float)
        xs[(groups["group_type"] == "class").to_numpy()] += 0.6  # gap between filters and classes
        labels = []
        for gi, (_, g) in enumerate(groups.iterrows()):
            sub = acc[(acc["group_type"] == g["group_type"]) & (acc["group"] == g["group"])]
            n = sub.loc[sub["who"] == "humans", "n_items"]
            name = wrap.get(g["group"], g["label"])
            labels.append(f"{name}\n{int(n.iloc[0]):,} items" if len(n) else name)
        for j, w in enumerate(who):
            vals, lo, hi = [], [], []
            for _, g in groups.iterrows():
                r = acc[(acc["group_type"] == g["group_type"]) & (acc["group"] == g["group"])
                        & (acc["who"] == w)]
                if len(r) and np.isfinite(r["estimate"].iloc[0]):
                    e = r["estimate"].iloc[0]
                    vals.append(e)
                    lo.append(max(e - r["ci_low"].iloc[0], 0) if np.isfinite(r["ci_low"].iloc[0]) else 0)
                    hi.append(max(r["ci_high"].iloc[0] - e, 0) if np.isfinite(r["ci_high"].iloc[0]) else 0)
                else:
                    vals.append(np.nan)
                    lo.append(0)
                    hi.append(0)
            ax.bar(xs + (j - 1) * width, vals, width, color=COLORS[w], label=names[w],
                   yerr=[lo, hi], error_kw={"elinewidth": 0.9, "capsize": 2, "ecolor": "#333"})
        ax.set_xticks(xs, labels)
        ax.set_ylabel("Top-1 accuracy")
        _pct(ax)
        ax.set_ylim(0, min(1.0, max(0.1, np.nanmax(acc.loc[acc["who"].isin(who), "ci_high"]) * 1.15)))
        ax.grid(axis="x", visible=False)
        ax.legend(loc="upper left", ncol=3, frameon=False, bbox_to_anchor=(0, 1.12))
        split = xs[(groups["group_type"] == "class").to_numpy()]
        if len(split):
            ax.axvline(split[0] - 0.8, color="#999", lw=0.8, ls=":")
        fig.tight_layout()
        return _svg(fig)


def probability_scatter(pairs: pd.DataFrame, max_points: int = 6000, seed: int = 0) -> str:
    """Share of people giving a token against the model's probability of it, log-log."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.2, 4.4))
        d = pairs[np.isfinite(pairs["m"]) & (pairs["m"] > 0)]
        if len(d) > max_points:
            d = d.sample(max_points, random_state=seed)
        other = d[~d["is_target"]]
        tgt = d[d["is_target"]]
        ax.scatter(other["m"], other["h"], s=9, alpha=0.35, color=COLORS["humans"], lw=0,
                   label="other answers", rasterized=len(d) > 1500)
        ax.scatter(tgt["m"], tgt["h"], s=14, alpha=0.8, color=COLORS["crowd"], lw=0,
                   marker="D", label="the true next token", rasterized=len(d) > 1500)
        lo = max(min(d["m"].min() if len(d) else 1e-4, d["h"].min() if len(d) else 1e-2) / 2, 1e-8)
        ax.plot([lo, 1], [lo, 1], color="#555", lw=0.9, ls="--", label="equal probability")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, 1.3)
        ax.set_ylim(max(lo, (d["h"].min() / 2) if len(d) else 1e-3), 1.3)
        ax.xaxis.set_major_locator(LogLocator(base=10))
        ymin = ax.get_ylim()[0]
        yt = [t for t in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0) if t >= ymin]
        ax.set_yticks(yt, [f"{t:g}" for t in yt])
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("Model probability of the token, p_model (T = 1, log scale)")
        ax.set_ylabel("Share of people giving it (log scale)")
        ax.legend(loc="upper left", frameon=True, framealpha=0.9, edgecolor="none")
        fig.tight_layout()
        return _svg(fig)


def kl_histogram(dist: pd.DataFrame) -> str:
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.6, 3.3))
        x = dist["kl"].to_numpy(dtype=float)
        x = x[np.isfinite(x)]
        if len(x):
            bins = min(40, max(8, int(np.sqrt(len(x)))))
            ax.hist(x, bins=bins, color=COLORS["humans"], alpha=0.85, edgecolor="white", lw=0.5)
            ax.axvline(x.mean(), color="#222", lw=1.1, ls="--")
            ax.text(x.mean(), ax.get_ylim()[1] * 0.95, f"  mean {x.mean():.2f} nats",
                    va="top", ha="left", fontsize=9)
        ax.set_xlabel("KL(human ‖ model) per item (nats, Miller–Madow corrected)")
        ax.set_ylabel("Items")
        ax.grid(axis="x", visible=False)
        fig.tight_layout()
        return _svg(fig)


def temperature_curve(curve: pd.DataFrame, fit: pd.Series | None) -> str:
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.6, 3.4))
        ax.plot(curve["temperature"], curve["mean_loglik"], color=COLORS["model"], lw=1.6,
                label="interpolated (cubic spline in 1/T)")
        grid = curve[curve["on_grid"]]
        ax.plot(grid["temperature"], grid["mean_loglik"], "o", color=COLORS["model"], ms=4,
                label="stored grid (exact)")
        if fit is not None and np.isfinite(fit["estimate"]):
            ax.axvspan(fit["ci_low"], fit["ci_high"], color=COLORS["humans"], alpha=0.15, lw=0)
            ax.axvline(fit["estimate"], color=COLORS["humans"], lw=1.3,
                       label=f"T* = {fit['estimate']:.2f} ({fit['ci_low']:.2f}–{fit['ci_high']:.2f})")
        ax.axvline(1.0, color="#777", lw=0.9, ls=":", label="T = 1 (the model as trained)")
        ax.set_xscale("log")
        ticks = [0.25, 0.5, 1, 2, 4]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("Temperature T (log scale)")
        ax.set_ylabel("Mean log-likelihood of\nhuman answers (nats/answer)")
        lo = np.nanpercentile(curve["mean_loglik"], 5)
        hi = np.nanmax(curve["mean_loglik"])
        ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.15 * (hi - lo))
        ax.legend(loc="lower right", frameon=False, fontsize=8)
        fig.tight_layout()
        return _svg(fig)


def learning_curve(lc: pd.DataFrame) -> str:
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.6, 3.3))
        for who, style in (("humans", "-o"), ("model", "--s")):
            d = lc[lc["who"] == who]
            if not len(d):
                continue
            err = [np.clip(d["estimate"] - d["ci_low"], 0, None), np.clip(d["ci_high"] - d["estimate"], 0, None)]
            name = "Humans" if who == "humans" else "Model on the same items"
            ax.errorbar(d["center"], d["estimate"], yerr=err, fmt=style, color=COLORS[who], ms=4,
                        lw=1.3, capsize=2, elinewidth=0.8, label=name)
        ax.set_xscale("log", base=2)
        d = lc[lc["who"] == "humans"]
        if len(d):
            ax.set_xticks(d["center"], d["bin"], rotation=0)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("Answers given so far (answer index, doubling bins)")
        ax.set_ylabel("Top-1 accuracy")
        _pct(ax)
        ax.set_ylim(bottom=0)
        ax.legend(frameon=False, loc="best")
        fig.tight_layout()
        return _svg(fig)


def calibration_plot(cal: pd.DataFrame, *, labels: dict[str, str] | None = None,
                     xlabel: str = "Confidence (probability of being right)",
                     ylabel: str = "Observed accuracy") -> str:
    """Reliability diagram: one line per `who` of `cal` (columns who, confidence, estimate,
    ci_low, ci_high), named by `labels` (default: humans' stated probabilities and the model's
    top-1), with the diagonal of perfect calibration."""
    labels = labels or {"humans": "Humans (stated probability)",
                        "model (top-1)": "Model (probability of its top-1)"}
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.6, 4.2))
        ax.plot([0, 1], [0, 1], color="#555", lw=0.9, ls="--", label="perfect calibration")
        for (who, name), marker in zip(labels.items(), "osD^"):
            d = cal[cal["who"] == who]
            if not len(d):
                continue
            err = [np.clip(d["estimate"] - d["ci_low"], 0, None), np.clip(d["ci_high"] - d["estimate"], 0, None)]
            ax.errorbar(d["confidence"], d["estimate"], yerr=err, fmt=marker + "-", ms=4, lw=1.2,
                        color=COLORS.get(who, "#009E73"), capsize=2, elinewidth=0.8, label=name)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        _pct(ax, "x")
        _pct(ax, "y")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(frameon=True, framealpha=0.9, edgecolor="none", loc="upper left", fontsize=8)
        fig.tight_layout()
        return _svg(fig)


def model_ranking(models: pd.DataFrame, unit: str = "answer") -> str:
    """Models ordered by how well they predict people, best on top, one dot per model. Left:
    the mean log-likelihood of human answers (nats per answer) with its interval. Right: the
    paired difference to the best model on the same answers with its interval (narrower: the
    difficulty of the items, shared by every model, cancels). `models` has the columns label,
    loglik, loglik_low, loglik_high, diff_to_best, diff_low, diff_high; models without a
    number are not drawn (the report's table says why)."""
    d = models[np.isfinite(models["loglik"].to_numpy(dtype=float))]
    d = d.sort_values("loglik", ascending=True)  # the best ends up on top
    with plt.rc_context(STYLE):
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(8.4, 1.0 + 0.42 * max(len(d), 1)), sharey=True,
                                     gridspec_kw={"width_ratios": [1.25, 1]})
        y = np.arange(len(d))
        colors = [COLORS["humans"] if j == len(d) - 1 else COLORS["model"] for j in range(len(d))]
        for axis, (est_col, lo_col, hi_col) in ((ax, ("loglik", "loglik_low", "loglik_high")),
                                                (bx, ("diff_to_best", "diff_low", "diff_high"))):
            est = d[est_col].to_numpy(dtype=float)
            lo = np.nan_to_num(np.clip(est - d[lo_col].to_numpy(dtype=float), 0, None))
            hi = np.nan_to_num(np.clip(d[hi_col].to_numpy(dtype=float) - est, 0, None))
            axis.errorbar(est, y, xerr=[lo, hi], fmt="none", ecolor="#555", elinewidth=1.0, capsize=3)
            axis.scatter(est, y, s=36, color=colors, zorder=3)
            axis.grid(axis="y", visible=False)
        bx.axvline(0, color="#777", lw=0.9, ls=":")
        ax.set_yticks(y, [str(v) for v in d["label"]])
        ax.set_ylim(-0.6, len(d) - 0.4)
        ax.set_xlabel(f"Mean log-likelihood of human answers\n(nats/{unit}; higher = predicts people better)")
        bx.set_xlabel(f"Model − best model, paired on the\nsame answers (nats/{unit})")
        fig.tight_layout()
        return _svg(fig)
