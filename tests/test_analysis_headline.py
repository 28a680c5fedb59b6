"""What the report's headline may say: never a verdict drawn from bounds, words in word mode,
rows left out named for what they are, imported answers without a participant not counted as
one person, and a page in landmarks with labelled tables (for screen readers and axe-core)."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from analysis import synthetic as syn
from analysis.answers import prepare
from analysis.metrics import accuracy, learning_curve, simulator_fit
from analysis.reader import load
from analysis.report import run_analysis, to_json, write_report

VERDICTS = ("as well as the other people do", "better than the other people",
            "people predict each other better than the model predicts them")


def word_import(tmp_path, name: str, unfilled: float, *, seed: int = 3):
    """Cloze-style responses imported in word mode: 30 people answer 40 items each by sampling
    a flat version (T = 4) of the model; the model stores only its top 14 words. A share
    `unfilled` of the answers lacks its exact word log-prob (exported before the background
    jobs filled them): the analysis can only count those at the top-k bound."""
    world = syn.make_world(n_items=40, vocab_size=60, top_k=14, seed=seed)
    answers = syn.simulate(world, [("sample", 4.0)] * 30, seed=seed + 1)
    tables = syn.export_tables(world, answers, source="external", study_id=None)
    g = tables["guesses"]
    g["external"] = True
    g["mode"] = "word"
    g["match_rule"] = np.where(g["skipped"], "skip", np.where(g["is_correct"], "word", "word_mismatch"))
    g["model_answer_rank"] = None
    drop = np.random.default_rng(seed).random(len(g)) < unfilled
    g.loc[drop, "model_answer_logprob"] = None
    return load(syn.write_export(tables, tmp_path / name, "csv"))


class Page(HTMLParser):
    """The report's elements: tags with attributes, and the text of the summary list."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.stack: list[str] = []
        self.summary: list[str] = []
        self._in_summary = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "ul" and "summary" in (a.get("class") or ""):
            self._in_summary = 1
        elif self._in_summary and tag == "li":
            self.summary.append("")

    def handle_endtag(self, tag):
        if tag == "ul" and self._in_summary:
            self._in_summary = 0

    def handle_data(self, data):
        if self._in_summary and self.summary:
            self.summary[-1] += data

    def all(self, tag):
        return [a for t, a in self.tags if t == tag]


def headline(page: str) -> str:
    """The top of the report a reader sees first: the title, the sub-heading and the summary."""
    top = page[page.index("<body>"):page.index("<section id=headline")]
    return html.unescape(re.sub(r"<[^>]+>", " ", top))


# --------------------------------------------------------------------------- bounds

def test_mostly_bounded_answers_give_no_verdict_in_the_headline(tmp_path):
    bounded = word_import(tmp_path, "bounded", unfilled=0.85)
    fit = simulator_fit(bounded, n_boot=300).set_index("metric").loc["simulator_fit"]
    share = fit["n_bounded"] / fit["n_answers"]
    assert 0.8 < share < 0.9                                  # the situation of the issue
    # The bounded interval covers 0: read as a finding it would say "as well as".
    assert fit["ci_low"] <= 0 <= fit["ci_high"]
    assert fit["verdict_basis"] == "withheld"
    page = write_report(bounded, tmp_path / "bounded.html", n_boot=300).read_text()
    top = headline(page)
    for verdict in VERDICTS:
        assert verdict not in top, verdict
    fit_line = next(s for s in Page(page).summary if s.startswith("Simulator fit"))
    assert "no verdict yet" in fit_line and "upper bound" in fit_line
    assert f"{int(fit['n_bounded']):,} of {int(fit['n_answers']):,} answers" in fit_line
    # The fit section's verdict box says the same, marked as withheld.
    assert re.search(r"<div class='verdict withheld'><b>Simulator fit:</b> no verdict yet", page)
    # In the table, only what the bounds bound is qualified: the crowd's numbers are exact.
    rows = dict(re.findall(r"<tr><th scope=row>([^<]+)</th><td>([^<]*)<span class=ci>", page))
    assert rows["simulator fit: model − crowd (nats/answer)"].startswith("at most ")
    assert rows["model log-likelihood of human answers (nats/answer)"].startswith("at most ")
    assert rows["perplexity ratio model / crowd"].startswith("at least ")
    assert not rows["leave-one-out crowd log-likelihood (nats/answer)"].startswith("at ")
    doc = to_json(run_analysis(bounded, n_boot=300))
    assert not any(v in s for s in doc["summary"] for v in VERDICTS)


def test_exact_values_give_the_verdict_in_the_headline(tmp_path):
    exact = word_import(tmp_path, "exact", unfilled=0.0)
    fit = simulator_fit(exact, n_boot=300).set_index("metric").loc["simulator_fit"]
    assert fit["n_bounded"] == 0 and fit["verdict_basis"] == "exact"
    # Written out: mean model log-prob minus mean leave-one-out crowd log-prob, here clearly < 0
    # (people answer far more evenly than the model predicts).
    assert fit["ci_high"] < 0
    page = write_report(exact, tmp_path / "exact.html", n_boot=300).read_text()
    fit_line = next(s for s in Page(page).summary if s.startswith("Simulator fit"))
    assert "people predict each other better than the model predicts them" in fit_line
    assert "no verdict" not in headline(page)
    assert f"{fit['estimate']:.2f}".replace("-", "−") in fit_line


def test_a_bound_that_is_already_below_zero_is_stated_as_a_bound(tmp_path):
    """Bounded log-probs can only flatter the model: if even the upper bound is below 0, the
    verdict holds, said as a bound ("at most")."""
    world = syn.make_world(n_items=40, vocab_size=60, top_k=30, seed=3)
    answers = syn.simulate(world, [("sample", 4.0)] * 30, seed=4)
    tables = syn.export_tables(world, answers, unfilled=1.0)  # token mode, nothing filled
    data = load(syn.write_export(tables, tmp_path / "e", "csv"))
    fit = simulator_fit(data, n_boot=300).set_index("metric").loc["simulator_fit"]
    assert fit["n_bounded"] > 0 and fit["ci_high"] < 0
    assert fit["verdict_basis"] == "upper bound"
    line = next(s for s in Page(write_report(data, tmp_path / "r.html", n_boot=300).read_text()).summary
                if s.startswith("Simulator fit"))
    assert line.startswith("Simulator fit: at most") and "even so, people predict each other better" in line


def test_answers_left_out_for_lack_of_numbers_withhold_the_verdict(tmp_path):
    bounded = word_import(tmp_path, "bounded", unfilled=0.85)
    fit = simulator_fit(bounded, n_boot=200, missing="exclude").set_index("metric").loc["simulator_fit"]
    assert fit["n_bounded"] == 0 and fit["verdict_basis"] == "withheld"
    assert "were left out" in fit["verdict"] and "favours the model" in fit["verdict"]


# ---------------------------------------------------------------------------- words

def test_word_mode_reports_speak_of_words(tmp_path):
    data = word_import(tmp_path, "w", unfilled=0.0)
    page = write_report(data, tmp_path / "w.html", n_boot=200).read_text()
    parsed = Page(page)
    h1 = re.findall(r"<h1>(.*?)</h1>", page)
    assert h1 == ["Humans and a language model predicting the next word"]
    assert parsed.summary[0].startswith("Humans gave the true next word in ")
    assert "upper bound of its word accuracy" in parsed.summary[0]
    top = headline(page)
    assert "next token" not in top and "token mode" not in top
    captions = re.findall(r"<caption>(.*?)</caption>", page)
    assert "Top-1 accuracy: how often the true next word was predicted" in captions
    assert not any("token class" in c for c in captions)
    results = page[:page.index("<section id=methods")]
    assert "all words" in results and "all tokens" not in results
    assert "<h3>By filter and class of the word's first token</h3>" in page


def test_mixed_modes_name_both(tmp_path):
    world = syn.make_world(n_items=30, vocab_size=50, top_k=10, seed=5)
    answers = syn.simulate(world, [("sample", 1.0)] * 12, seed=6)
    tables = syn.export_tables(world, answers)
    g = tables["guesses"]
    words = np.arange(len(g)) % 3 == 0
    g.loc[words, "mode"] = "word"
    data = load(syn.write_export(tables, tmp_path / "mixed", "csv"))
    n_word, n_token = int(words.sum()), int((~words).sum())
    page = write_report(data, tmp_path / "t.html", n_boot=100).read_text()
    assert "predicting the next token</h1>" in page
    assert f"{n_word:,} word-mode answers (a separate report: --mode word)" in headline(page)
    page = write_report(data, tmp_path / "w.html", n_boot=100, mode="word").read_text()
    assert "predicting the next word</h1>" in page
    assert f"{n_token:,} token-mode answers (a separate report: --mode token)" in headline(page)


# ------------------------------------------------------------------ rows left out, named

def test_comprehension_checks_are_left_out_and_named(tmp_path):
    world = syn.make_world(n_items=30, vocab_size=50, top_k=10, seed=8)
    answers = syn.simulate(world, [("sample", 1.0)] * 10, seed=9)
    tables = syn.export_tables(world, answers)
    g = tables["guesses"]
    check_item = int(world.item_ids[0])
    answered = (g["item_id"] == check_item).to_numpy()
    # Every answer to the check item is a check, passed; one person skipped it instead.
    g.loc[answered, "match_rule"] = "check"
    g.loc[answered, "is_correct"] = True
    skipped_check = np.flatnonzero(answered)[0]
    g.loc[skipped_check, ["skipped", "is_correct", "match_rule"]] = [True, False, "skip"]
    g.loc[skipped_check, ["answer_text"]] = ""
    tables["studies"].at[0, "settings"] = {**tables["studies"].at[0, "settings"],
                                           "checks": [{"item_id": check_item, "expected_answer": "x"}]}
    data = load(syn.write_export(tables, tmp_path / "e", "csv"))
    prep = prepare(data)
    assert check_item not in set(prep.answers["item_id"])
    assert len(prep.answers) == len(g) - int(answered.sum())
    rest = g.loc[~answered]
    acc = accuracy(data, n_boot=100)
    h = acc[(acc["group"] == "all") & (acc["who"] == "humans")].iloc[0]
    assert h["estimate"] == pytest.approx(rest["is_correct"].mean())
    page = write_report(data, tmp_path / "r.html", n_boot=100).read_text()
    assert f"{int(answered.sum())} comprehension-check answers left out" in html.unescape(page)


def test_rows_left_out_are_named(tmp_path):
    world = syn.make_world(n_items=30, vocab_size=50, top_k=10, seed=10)
    answers = syn.simulate(world, [("sample", 1.0)] * 10, seed=11, skip_rate=0.1)
    tables = syn.export_tables(world, answers, pilot={0}, unfilled=1.0)
    unscored = int(world.item_ids[1])
    items = tables["items"]
    items.loc[items["item_id"] == unscored, ["model_top_k", "model_logz"]] = None
    data = load(syn.write_export(tables, tmp_path / "e", "csv"))
    page = html.unescape(write_report(data, tmp_path / "r.html", n_boot=100).read_text())
    section = page[page.index("Left out or treated specially"):page.index("<section id=headline")]
    g = tables["guesses"]
    n_pilot = int(g["pilot"].sum())
    n_unscored = int(((g["item_id"] == unscored) & ~g["pilot"]).sum())
    assert f"{n_pilot} pilot answers left out" in section
    assert f"{n_unscored} answers without model numbers left out" in section
    prep = prepare(data)
    n_skip = int(prep.answers["skipped"].sum())
    assert n_skip > 0 and f"{n_skip:,} skipped answers" in section
    assert "no exact model log-prob" in section and "outside the stored top-10" in section


# ----------------------------------------------------- imported answers without a participant

def _import(tmp_path, name, pooled: bool):
    world = syn.make_world(n_items=25, vocab_size=50, top_k=10, seed=12)
    answers = syn.simulate(world, [("sample", 1.3)] * 16, seed=13)
    n = len(answers)
    if pooled:   # no participant column: one id for the whole import, many answers per item
        answers.participant = np.zeros(n, dtype=int)
        answers.answer_index = np.arange(1, n + 1)
    else:        # what the text promises: each response its own participant
        answers.participant = np.arange(n)
        answers.answer_index = np.ones(n, dtype=int)
    tables = syn.export_tables(world, answers, source="external", study_id=None)
    tables["guesses"]["external"] = True
    return load(syn.write_export(tables, tmp_path / name, "csv"))


def test_imported_answers_without_a_participant_are_each_their_own_cluster(tmp_path):
    pooled, separate = _import(tmp_path, "pooled", True), _import(tmp_path, "separate", False)
    prep = prepare(pooled)
    n = len(prep.answers)
    assert prep.answers["pooled"].all()
    assert prep.design.n_participants == n                   # not one participant
    assert not prepare(separate).answers["pooled"].any()
    # The intervals are exactly those of the same answers given each by its own participant.
    a = accuracy(pooled, n_boot=300).set_index(["group", "who"])
    b = accuracy(separate, n_boot=300).set_index(["group", "who"])
    for key in [("all", "humans"), ("all", "model"), ("all", "humans − model")]:
        assert a.loc[key, "ci_low"] == pytest.approx(b.loc[key, "ci_low"])
        assert a.loc[key, "ci_high"] == pytest.approx(b.loc[key, "ci_high"])
    fa = simulator_fit(pooled, n_boot=300).set_index("metric").loc["simulator_fit"]
    fb = simulator_fit(separate, n_boot=300).set_index("metric").loc["simulator_fit"]
    assert (fa["ci_low"], fa["ci_high"]) == pytest.approx((fb["ci_low"], fb["ci_high"]))
    # ... and not those of one participant (the old reading: zero participant variance).
    one = prepare(pooled)
    assert len(set(one.design.p_idx.tolist())) == n
    # Counted as what they are, and left out of the learning curve.
    h = a.loc[("all", "humans")]
    assert h["n_participants"] == 0 and h["n_unattributed"] == n
    assert learning_curve(pooled, n_boot=100).empty
    page = html.unescape(write_report(pooled, tmp_path / "r.html", n_boot=200).read_text())
    top = headline(page)
    assert f"items, {n:,} imported answers without a participant ·" in top
    assert "0 participants" not in page
    assert "each is treated as its own participant, so they are clustered by item only" in top


# --------------------------------------------------------------------- the page's structure

def test_report_page_has_landmarks_and_labelled_tables(tmp_path):
    data = word_import(tmp_path, "w", unfilled=0.3)
    world = syn.make_world(n_items=60, vocab_size=80, top_k=12, seed=7)
    answers = syn.simulate(world, [("sample", 1.2)] * 24, items_per_player=40, seed=8)
    token = load(syn.write_export(syn.export_tables(world, answers, unfilled=0.5), tmp_path / "t", "csv"))
    for d, name in ((data, "w.html"), (token, "t.html")):
        page = write_report(d, tmp_path / name, n_boot=100).read_text()
        p = Page(page)
        body = [t for t, _ in p.tags]
        for landmark in ("header", "nav", "main", "footer"):
            assert body.count(landmark) == 1, landmark
        assert body.index("header") < body.index("main") < body.index("footer")
        assert body.count("h1") == 1
        assert p.all("nav")[0].get("aria-label") == "Contents"
        tables = page.count("<table")
        assert tables >= 5 and page.count("<caption>") == tables
        for th in p.all("th"):
            assert th.get("scope") in ("col", "row"), th
        regions = [a for a in p.all("div") if a.get("class") == "scroll"]
        assert len(regions) == tables
        for r in regions:
            assert r.get("tabindex") == "0" and r.get("role") == "region" and r.get("aria-label")
        svgs = p.all("svg")
        assert svgs and all(s.get("role") == "img" and s.get("aria-label", "").startswith("Figure ")
                            for s in svgs)
        # Section links of the table of contents all lead somewhere.
        ids = {a.get("id") for _, a in p.tags if a.get("id")}
        links = [a["href"][1:] for a in p.all("a") if a.get("href", "").startswith("#")]
        assert links and set(links) <= ids
