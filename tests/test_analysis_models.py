"""Several models on the same human answers: the model people's answers were drawn from is
found to predict them best, across tokenizers, with its true advantage inside the interval; a
model without numbers is reported as missing (never as zero); an export from before the
per-model tables loads and its report has no such section."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest

from analysis import synthetic as syn
from analysis.reader import ALL_TABLES, ExportFormatError, load
from analysis.report import run_analysis, to_json, write_report

N_BOOT = 200


def world_and_models(seed: int = 7):
    """A game model (1), model A (2), a sharper tuned version of the game model (3), a model
    that cuts every answer in two tokens (4) and a top-k-only server model that could score
    nothing (5), over one shared vocabulary of texts."""
    world = syn.make_world(n_items=60, vocab_size=80, top_k=12, seed=seed)
    views = [
        syn.ModelView(1, "synthetic model", world.logprobs),
        syn.ModelView(2, "model A", syn.variant_logprobs(world, noise=0.7, seed=1)),
        syn.ModelView(3, "synthetic model-instruct",
                      syn.variant_logprobs(world, noise=0.3, temperature=0.5, seed=2)),
        syn.ModelView(4, "two-piece", syn.variant_logprobs(world, noise=0.7, seed=3),
                      same_tokenizer=False),
        syn.ModelView(5, "server", syn.variant_logprobs(world, noise=0.7, seed=4),
                      top_k_only=True, null=1.0),
    ]
    return world, views


def export_sampled_from(tmp_path, source: int, *, fmt: str = "csv", views_edit=None):
    """30 players who sample every answer from model `source`'s distribution, 40 items each;
    every model scores their answers. Returns the loaded export, the world, the views and the
    answers."""
    world, views = world_and_models()
    by_id = {v.model_id: v for v in views}
    drawn_from = dataclasses.replace(world, logprobs=by_id[source].logprobs)
    answers = syn.simulate(drawn_from, [("sample", 1.0)] * 30, items_per_player=40, seed=8,
                           skip_rate=0.05)
    if views_edit:
        views = views_edit(views)
    tables = syn.add_models(syn.export_tables(world, answers), world, answers, views)
    path = syn.write_export(tables, tmp_path / f"from{source}-{fmt}", fmt)
    return load(path), world, views, answers


def true_differences(views, answers, source: int) -> dict[int, float]:
    """What LL_M - LL_source is on average for answers drawn from `source` on these items:
    minus the mean over the answers' items of KL(source_i || M_i), exact from the full
    distributions."""
    items = answers.item[answers.token >= 0]
    src = next(v for v in views if v.model_id == source).logprobs
    out = {}
    for v in views:
        kl = np.sum(np.exp(src) * (src - v.logprobs), axis=1)
        out[v.model_id] = float(-kl[items].mean())
    return out


@pytest.fixture(scope="module")
def from_a(tmp_path_factory):
    return export_sampled_from(tmp_path_factory.mktemp("models"), 2)


@pytest.mark.parametrize("source", [2, 4], ids=["model A", "other tokenizer"])
def test_players_who_sample_from_a_model_are_best_predicted_by_it(tmp_path, from_a, source):
    data, _, views, answers = from_a if source == 2 else export_sampled_from(tmp_path, source)
    res = run_analysis(data, n_boot=N_BOOT)
    mc = res["models_comparison"]
    t = mc["models"].set_index("model_id")
    head = mc["headline"]
    assert head["best"] == source and head["verdict"] and head["verdict_basis"] == "exact"
    assert head["margin_low"] > 0
    truth = true_differences([v for v in views if v.model_id != 5], answers, source)
    for m, want in truth.items():
        r = t.loc[m]
        if m == source:
            assert r["diff_to_best"] == 0
            continue
        # the best model's true advantage over every other model lies inside the interval
        assert r["diff_low"] <= want <= r["diff_high"], (m, want, r["diff_low"], r["diff_high"])
        assert r["diff_high"] < 0
    print(f"\nplayers sample from model {source}: " + ", ".join(
        f"model {m}: LL {t.loc[m, 'loglik']:.3f} ({t.loc[m, 'loglik_low']:.3f} to "
        f"{t.loc[m, 'loglik_high']:.3f}), − best {t.loc[m, 'diff_to_best']:.3f} "
        f"({t.loc[m, 'diff_low']:.3f} to {t.loc[m, 'diff_high']:.3f}), true {truth[m]:.3f}"
        for m in truth))
    # Every model is scored on the same answers; the game model alone has T*.
    assert t.loc[list(truth), "n_answers"].nunique() == 1
    assert t.loc[list(truth), "n_answers"].iloc[0] == int((answers.token >= 0).sum())
    assert np.isfinite(t.loc[1, "t_star"])
    assert t.loc[1, "t_star"] == pytest.approx(res["temperature"]["estimate"].iloc[0])
    assert "another tokenizer" in t.loc[4, "t_star_reason"]
    assert "not in the export" in t.loc[2, "t_star_reason"]
    # The headline is the summary's first line.
    assert to_json(res)["summary"][0] == head["text"]
    assert head["text"].startswith(t.loc[source, "label"] + " predicts people best")


def test_another_model_with_its_own_log_z_has_its_own_t_star(tmp_path):
    """Players sample from model A at T = 1.5. With item_models.logz (each same-tokenizer
    model's own log Z(T) grid) A's T* is fitted from its own numbers (answer_models'
    first-token log-probs) and its interval holds 1.5, while the game model's T* is the
    report's; an older export without the column says A's T* is not computable, as before."""
    world, views = world_and_models()
    views = [dataclasses.replace(v, logz=True) for v in views]
    drawn_from = dataclasses.replace(world, logprobs=views[1].logprobs)
    answers = syn.simulate(drawn_from, [("sample", 1.5)] * 40, items_per_player=40, seed=8,
                           skip_rate=0.05)
    tables = syn.add_models(syn.export_tables(world, answers), world, answers, views)
    path = syn.write_export(tables, tmp_path / "logz", "csv")
    res = run_analysis(load(path), n_boot=N_BOOT)
    t = res["models_comparison"]["models"].set_index("model_id")
    a = t.loc[2]
    print(f"\nT* of model A {a['t_star']:.3f} ({a['t_star_low']:.3f} to {a['t_star_high']:.3f}); "
          f"game model {t.loc[1, 't_star']:.3f}")
    assert a["t_star_low"] <= 1.5 <= a["t_star_high"] and pd.isna(a["t_star_reason"])
    assert a["t_star_high"] < 2.67 and a["t_star_low"] > 1.0  # an interval that says something
    assert np.isfinite(t.loc[1, "t_star"])
    assert t.loc[1, "t_star"] == pytest.approx(res["temperature"]["estimate"].iloc[0])
    assert np.isfinite(t.loc[3, "t_star"])  # the tuned model has its own grid too
    assert "another tokenizer" in t.loc[4, "t_star_reason"]
    assert "top-k only" in t.loc[5, "t_star_reason"]
    # A's T* is the temperature fit on A's own numbers: the same T* by hand, on a grid
    am = load(path).answer_models
    lp = am.loc[am["model_id"] == 2].set_index("guess_id")["first_token_logprob"]
    g = load(path).guesses.set_index("guess_id").loc[lp.index]
    grid = np.exp(np.linspace(np.log(0.25), np.log(4.0), 2001))
    rows = world.item_ids.searchsorted(g["item_id"].to_numpy())
    logz = np.stack([syn._logsumexp(views[1].logprobs[rows] / T) for T in grid], axis=1)
    ll = (lp.to_numpy()[:, None] / grid[None, :] - logz).sum(axis=0)
    assert a["t_star"] == pytest.approx(grid[np.argmax(ll)], rel=0.01)

    # an export from before the column: as before
    frame = pd.read_csv(path / "item_models.csv", dtype=str, keep_default_na=False)
    frame.drop(columns="logz").to_csv(path / "item_models.csv", index=False)
    old = load(path)
    assert old.warnings == [] and old.item_models["logz"].isna().all()
    t = run_analysis(old, n_boot=N_BOOT)["models_comparison"]["models"].set_index("model_id")
    assert np.isnan(t.loc[2, "t_star"]) and np.isnan(t.loc[3, "t_star"])
    assert t.loc[2, "t_star_reason"].startswith("not computable: log Z(T) of this model is not "
                                                "in the export")
    assert np.isfinite(t.loc[1, "t_star"])


def test_a_model_without_numbers_is_missing_not_zero(from_a, tmp_path):
    data = from_a[0]
    res = run_analysis(data, n_boot=N_BOOT)
    t = res["models_comparison"]["models"].set_index("model_id")
    server = t.loc[5]
    assert np.isnan(server["loglik"]) and np.isnan(server["kl"]) and np.isnan(server["entropy"])
    assert "answer_logprob empty" in server["loglik_reason"]
    assert "top-k only" in server["entropy_reason"] and "top-k only" in server["t_star_reason"]
    assert server["n_missing_null"] == int(t.loc[2, "n_answers"])
    # Its item numbers exist: its word-level accuracy is computed, from item_models alone.
    assert 0 <= server["accuracy"] <= 1
    doc = json.loads(json.dumps(to_json(res), allow_nan=False))
    row = next(r for r in doc["models_comparison"]["models"] if r["model_id"] == 5)
    assert row["loglik"] is None and row["kl"] is None and row["entropy"] is None
    assert "server (model 5), its backend could not compute" in doc["summary"][0]
    page = write_report(data, tmp_path / "r.html", n_boot=N_BOOT).read_text()
    section = page[page.index("<section id=models"):]
    section = section[:section.index("</section>")]
    cells = re.findall(r"<tr><th scope=row>– server \(model 5\).*?</tr>", section)
    assert cells and "not computable" in cells[0] and re.search(r">0\.000<|>−?0\.00 ", cells[0]) is None
    assert "server (model 5)" not in re.search(r"aria-label=\"Figure \d+: ([^\"]*)\"",
                                               section).group(1)


def test_answers_a_model_has_not_scored_are_left_out_and_counted(tmp_path):
    """Model A lacks rows for a tenth of the answers (answered after it scored their items):
    they are left out for every model and counted; the verdict stands on the rest."""

    def partly(views):
        return [dataclasses.replace(v, no_row=0.1) if v.model_id == 2 else v for v in views]

    data, *_ = export_sampled_from(tmp_path, 2, views_edit=partly)
    mc = run_analysis(data, n_boot=N_BOOT)["models_comparison"]
    t = mc["models"].set_index("model_id")
    missing = int(t.loc[2, "n_missing_no_row"])
    assert 0 < missing == mc["n_left_out"] and mc["n_common"] == mc["n_answers"] - missing
    assert t.loc[1, "n_left_out_other_models"] == missing
    assert "not scored by this model yet" in t.loc[2, "missing"]
    assert mc["headline"]["verdict"] and mc["headline"]["best"] == 2
    assert f"({missing:,} answers on " in mc["headline"]["text"]


def test_answers_a_backend_could_not_score_withhold_the_verdict(tmp_path):
    """Model A's backend left a tenth of its answers empty on items whose other answers it
    scored: which ones may depend on the answer, so no verdict yet."""

    def partly(views):
        return [dataclasses.replace(v, null=0.1) if v.model_id == 2 else v for v in views]

    data, *_ = export_sampled_from(tmp_path, 2, views_edit=partly)
    mc = run_analysis(data, n_boot=N_BOOT)["models_comparison"]
    t = mc["models"].set_index("model_id")
    missing = int(t.loc[2, "n_missing_null"])
    assert missing > 0 and mc["n_left_out"] == missing
    assert mc["headline"]["verdict_basis"] == "withheld" and not mc["headline"]["verdict"]
    assert mc["headline"]["text"].startswith("Which model predicts people best: no verdict yet.")
    assert f"{missing:,} answers of model A (model 2)" in mc["headline"]["text"]
    assert "could not score exactly" in t.loc[2, "missing"]


def test_mode_collapse_side_by_side(from_a, tmp_path):
    data = from_a[0]
    res = run_analysis(data, n_boot=N_BOOT)
    mc = res["models_comparison"]
    pair = mc["mode_collapse"]["pairs"]
    assert [(p["base"], p["tuned"]) for p in pair] == [(1, 3)]
    assert pair[0]["entropy_diff_high"] < 0 and pair[0]["kl_diff_low"] > 0
    page = write_report(data, tmp_path / "r.html", n_boot=N_BOOT).read_text()
    assert "the pattern called mode collapse" in page
    assert "Entropy and distance to the crowd (mode collapse)" in page
    assert re.search(r"<figure id='fig-models'><svg", page)
    assert page.count("<svg") == 7  # the report's six figures and this one
    for title in ("Several models: mean log-likelihood of human answers and the ranking",
                  "Several models: KL(crowd ‖ model) and entropy (mode collapse)"):
        assert html_escape(title) in page
    assert "<li><a href='#models'>Which models predict people best</a></li>" in page


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


def test_an_export_without_the_model_tables_loads_and_has_no_section(tmp_path):
    world = syn.make_world(n_items=20, vocab_size=40, top_k=6, seed=2)
    answers = syn.simulate(world, [("sample", 1.0)] * 12, seed=1)
    tables = syn.export_tables(world, answers)
    path = syn.write_export(tables, tmp_path / "old", "csv")
    assert not (path / "answer_models.csv").exists()
    data = load(path)
    for name in ("answer_models", "item_models"):
        assert len(data[name]) == 0 and list(data[name].columns) == ALL_TABLES[name].column_names
    res = run_analysis(data, n_boot=100)
    assert res["models_comparison"] is None and "models_comparison" not in res["errors"]
    page = write_report(data, tmp_path / "r.html", n_boot=100).read_text()
    assert "<section id=models" not in page and "#models" not in page
    assert to_json(res)["models_comparison"] is None
    # A manifest that lists the table while its file is gone is an incomplete export.
    with_models = syn.add_models(tables, world, answers,
                                 [syn.ModelView(1, "synthetic model", world.logprobs)])
    broken = syn.write_export(with_models, tmp_path / "broken", "csv")
    (broken / "item_models.csv").unlink()
    with pytest.raises(ExportFormatError, match="item_models.csv is missing"):
        load(broken)


def test_the_model_tables_read_the_same_in_every_format(tmp_path):
    world, views = world_and_models(3)
    views = [dataclasses.replace(v, logz=True) for v in views]
    answers = syn.simulate(world, [("sample", 1.0)] * 5, items_per_player=10, seed=1,
                           skip_rate=0.1)
    tables = syn.add_models(syn.export_tables(world, answers), world, answers, views)
    ref = None
    for fmt in ("csv", "jsonl", "parquet"):
        data = load(syn.write_export(tables, tmp_path / fmt, fmt))
        assert data.warnings == []
        if ref is None:
            ref = data
            am, im = data.answer_models, data.item_models
            assert am["answer_logprob"].isna().sum() == int((am["model_id"] == 5).sum())
            assert am.loc[am["model_id"] == 4, "first_token_logprob"].isna().all()
            assert (am.loc[am["model_id"] == 4, "answer_n_tokens"] >= 1).all()
            assert im.loc[im["model_id"] == 5, "entropy"].isna().all()
            assert im["top1_starts_word"].dtype == bool
            grids = im.loc[im["model_id"].isin([1, 2, 3]), "logz"]
            assert grids.map(len).eq(len(world.temperatures)).all()
            assert im.loc[im["model_id"].isin([4, 5]), "logz"].isna().all()
            continue
        for name in ("answer_models", "item_models"):
            pd.testing.assert_frame_equal(data[name], ref[name], check_exact=False, rtol=1e-12,
                                          obj=f"{fmt}:{name}")
    # A row for an answer the export does not hold is an edited file.
    tables["answer_models"].loc[0, "guess_id"] = 10**6
    with pytest.raises(ExportFormatError, match="refer to guesses not in the guesses table"):
        load(syn.write_export(tables, tmp_path / "edited", "csv"))


def test_no_verdict_when_two_models_are_too_close_to_tell(tmp_path):
    """The game model made almost identical to model A: the margin's interval spans 0."""

    def close(views):
        a = views[1].logprobs
        near = a + 0.03 * np.random.default_rng(5).normal(size=a.shape)
        near -= np.log(np.exp(near).sum(axis=1, keepdims=True))
        return [dataclasses.replace(views[0], logprobs=near), views[1]]

    data, *_ = export_sampled_from(tmp_path, 2, views_edit=close)
    head = run_analysis(data, n_boot=N_BOOT)["models_comparison"]["headline"]
    assert head["margin_low"] < 0 < head["margin_high"]
    assert not head["verdict"] and head["verdict_basis"] == "exact"
    assert head["text"].startswith("Which model predicts people best: no verdict, the margin's "
                                   "interval spans 0")


def test_word_mode_answers(tmp_path):
    """Word-mode answers: the scores include the word-end term; T* has no grid for words."""
    world, views = world_and_models()
    answers = syn.simulate(world, [("sample", 1.0)] * 20, items_per_player=30, seed=3)
    tables = syn.export_tables(world, answers)
    g = tables["guesses"]
    g["mode"] = "word"
    g["match_rule"] = np.where(g["skipped"], "skip", np.where(g["is_correct"], "word", "word_mismatch"))
    tables = syn.add_models(tables, world, answers, views[:3])
    assert (tables["answer_models"]["end_logprob"] == 0.0).all()
    res = run_analysis(load(syn.write_export(tables, tmp_path / "w", "csv")), n_boot=N_BOOT)
    t = res["models_comparison"]["models"].set_index("model_id")
    assert np.isfinite(t["loglik"]).all() and np.isfinite(t["accuracy"]).all()
    assert (t["t_star_reason"] == "not computable: word-mode answers have no log Z(T) grid").all()
    assert res["models_comparison"]["headline"]["best"] == 1  # the players sampled the game model


# ------------------------------------------------------------------ real engines, real export


@pytest.mark.model
def test_real_export_people_sampling_gemma_are_best_predicted_by_gemma(scored_app, gemma, tmp_path):
    """Players sample every answer from Gemma's full next-token distribution; Gemma and an
    n-gram model over another tokenizer (cl100k_base, trained on this repository's docs) score
    the answers through the background-job path; humanlm exports; the comparison reads the
    exporter's answer_models and item_models and finds Gemma best."""
    from datetime import UTC, datetime
    from pathlib import Path

    from sqlalchemy import select

    from webapp.export import ExportFilters, write_export
    from webapp.extensions import db
    from webapp.lm import display_text
    from webapp.lm.ngram import NgramModel, train
    from webapp.lm.stats import log_softmax_row
    from webapp.models import Document, Guess, LanguageModel, Player
    from webapp.predictions import fill_guess_logprobs, fill_model_scores

    root = Path(__file__).resolve().parent.parent
    rng = np.random.default_rng(11)
    ngram_file = tmp_path / "docs.ngram"
    train([p.read_text() for p in sorted((root / "docs").glob("*.md"))], order=3,
          encoding="cl100k_base", output=ngram_file)
    with scored_app.app_context():
        session = db.session
        model = session.scalar(select(LanguageModel))
        players = [Player(id=f"sim-{i:03d}") for i in range(20)]
        session.add_all(players)
        session.flush()
        key = 0
        for doc in session.scalars(select(Document)):
            logits = np.array(gemma._eval(doc.token_ids))
            for item in (it for it in doc.items if it.playable):
                p = np.exp(log_softmax_row(logits[item.position]))
                for player, token in zip(players, rng.choice(len(p), size=len(players), p=p / p.sum())):
                    key += 1
                    session.add(Guess(
                        client_key=f"sim-{key:07d}", player_id=player.id, item_id=item.id,
                        model_id=model.id, raw_text=display_text(gemma.token_bytes(int(token))),
                        token_ids=[int(token)], first_token_id=int(token),
                        is_correct=int(token) == item.token_id,
                        match_rule="first_token" if int(token) == item.token_id else "none",
                        server_received_at=datetime.now(UTC)))
        session.commit()
        fill_guess_logprobs(session, gemma, top_k=model.top_k)
        fill_model_scores(session, gemma, top_k=model.top_k)
        fill_model_scores(session, NgramModel(f"ngram:{ngram_file}"), top_k=model.top_k)
        write_export(session, tmp_path / "export", "csv", ExportFilters())
    data = load(tmp_path / "export")
    assert len(data.answer_models) == 2 * len(data.guesses) and len(data.item_models) == 2 * len(data.items)
    res = run_analysis(data, n_boot=N_BOOT)
    mc = res["models_comparison"]
    t = mc["models"].set_index("model_id")
    gemma_id = int(data.models.loc[data.models["spec"].str.startswith("llamacpp"), "model_id"].iloc[0])
    ngram_id = next(m for m in t.index if m != gemma_id)
    assert mc["headline"]["best"] == gemma_id and mc["headline"]["verdict"]
    assert mc["n_common"] == len(data.guesses)  # every answer scored by both
    assert t.loc[gemma_id, "same_tokenizer"] and not t.loc[ngram_id, "same_tokenizer"]
    # For the game's model the first-token numbers are the guesses' own, and a one-token
    # answer's chain-rule score is that token's log-prob (up to llama.cpp's batch noise).
    g = data.guesses.set_index("guess_id")
    am = data.answer_models[data.answer_models["model_id"] == gemma_id].set_index("guess_id")
    first = g.loc[am.index, "model_answer_logprob"].to_numpy(dtype=float)
    assert np.nanmax(np.abs(am["first_token_logprob"].to_numpy(dtype=float) - first)) < 0.1
    one = (am["answer_n_tokens"] == 1).to_numpy() & (
        g.loc[am.index, "answer_token_ids"].map(len).to_numpy() == 1)
    assert one.sum() > 100
    assert np.max(np.abs(am["answer_logprob"].to_numpy(dtype=float)[one] - first[one])) < 0.1
    assert t.loc[gemma_id, "t_star_low"] <= 1.0 <= t.loc[gemma_id, "t_star_high"]
    assert "another tokenizer" in t.loc[ngram_id, "t_star_reason"]
    assert np.isfinite(t.loc[ngram_id, ["accuracy", "kl", "entropy"]].astype(float)).all()
    print(f"\nreal engines: Gemma {t.loc[gemma_id, 'loglik']:.3f}, n-gram {t.loc[ngram_id, 'loglik']:.3f} "
          f"nats/answer; {mc['headline']['text']}")
