"""The report: a self-contained HTML page with every section and figure, JSON for machines,
and a command line that fails with one clear line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis import synthetic as syn
from analysis.cli import main
from analysis.metrics import accuracy
from analysis.reader import load
from analysis.report import write_report

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    world = syn.make_world(n_items=60, vocab_size=80, top_k=12, seed=7)
    answers = syn.simulate(world, [("sample", 1.2)] * 24 + [("top1",)] * 2, items_per_player=40,
                           seed=8, skip_rate=0.05)
    rng = np.random.default_rng(0)
    p = np.exp(world.logprobs[answers.item, np.maximum(answers.token, 0)])
    answers.reported_probability = np.where(answers.participant % 2 == 0,
                                            np.clip(p + rng.normal(0, 0.1, len(p)), 0, 1), np.nan)
    tables = syn.export_tables(world, answers, unfilled=0.5, excluded={3})
    return syn.write_export(tables, tmp_path_factory.mktemp("report") / "export.zip", "csv", as_zip=True)


SECTIONS = ["summary", "headline", "fit", "distributions", "temperature", "learning", "methods",
            "provenance"]
FIGURES = ["fig-accuracy", "fig-scatter", "fig-kl", "fig-temperature", "fig-learning", "fig-calibration"]


def test_html_report_has_every_section_and_figure(export, tmp_path):
    out = write_report(load(export), tmp_path / "r.html", n_boot=200)
    page = out.read_text()
    for s in SECTIONS:
        assert f"<section id={s}" in page, s
    for f in FIGURES:
        assert re.search(rf"<figure id='{f}'><svg", page), f
    assert page.count("<svg") == 6
    # Self-contained: no scripts, no external resources.
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert re.search(r"xlink:href=.https?://", page) is None
    # Axis labels with units.
    for label in ["Top-1 accuracy", "Temperature T (log scale)", "nats/answer",
                  "Model probability of the token", "Observed accuracy"]:
        assert label in page, label
    # Methods come from the docstrings; provenance names the export and the model.
    assert "acc_humans = sum_a w_a correct_a / sum_a w_a" in page
    assert "Cameron, Gelbach &amp; Miller" in page
    assert "synthetic:v80:k12" in page and "Schema version" in page
    assert "flagged for exclusion left out" in page
    assert "no exact model log-prob" in page


def test_json_report_matches_the_metric_functions(export, tmp_path):
    out = write_report(export, tmp_path / "r.json", format="json", n_boot=200, level=0.9)
    doc = json.loads(out.read_text())
    for key in ["provenance", "summary", "accuracy", "simulator_fit", "temperature", "distances",
                "learning_curve", "learning_trend", "calibration", "calibration_summary", "methods"]:
        assert doc[key] is not None, key
    acc = accuracy(load(export), n_boot=200, level=0.9)
    want = acc[(acc["group"] == "all") & (acc["who"] == "humans")].iloc[0]
    got = next(r for r in doc["accuracy"] if r["group"] == "all" and r["who"] == "humans")
    assert got["estimate"] == pytest.approx(want["estimate"])
    assert got["ci_low"] == pytest.approx(want["ci_low"]) and got["n_participants"] == want["n_participants"]
    assert doc["settings"]["level"] == 0.9
    assert doc["temperature"]["fit"][0]["n_answers"] > 0
    assert len(doc["distances"]["items"]) == 60
    assert "Temperature fit" in doc["methods"]


def test_report_survives_thin_data(tmp_path):
    """Too few answers per item for distances, word mode: those sections say why instead."""
    world = syn.make_world(n_items=30, vocab_size=40, top_k=6, seed=2)
    tables = syn.export_tables(world, syn.simulate(world, [("sample", 1.0)] * 3, seed=1))
    data = load(syn.write_export(tables, tmp_path / "thin", "csv"))
    page = write_report(data, tmp_path / "thin.html", n_boot=100).read_text()
    assert "no item has 10 or more answers" in page
    tables["guesses"]["mode"] = "word"
    page = write_report(load(syn.write_export(tables, tmp_path / "word", "csv")), tmp_path / "w.html",
                        n_boot=100).read_text()
    assert "needs token-mode answers" in page


def test_cli_writes_reports(export, tmp_path, capsys):
    assert main([str(export), "-o", str(tmp_path / "r.json"), "--bootstrap", "100"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["n_boot"] == 100
    assert main([str(export), "-o", str(tmp_path / "r.html"), "--bootstrap", "100",
                 "--include-excluded", "--missing", "exclude"]) == 0
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["/does/not/exist"], "error: /does/not/exist does not exist"),
    (["{export}", "--study", "99"], "error: no answers to analyse"),
    (["{export}", "--mode", "word"], "error: no word-mode answers"),
    (["{export}", "--model", "5"], "error: model 5 has no answers"),
    (["{export}", "-o", "/no/such/folder/r.html"], "error: the folder /no/such/folder does not exist"),
    (["{export}", "--level", "95"], "error: --level must be between 0 and 1"),
])
def test_cli_errors_are_one_clear_line(export, tmp_path, capsys, args, message):
    args = [a.format(export=export) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "r.html")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_python_dash_m_analysis(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    proc = subprocess.run([sys.executable, "-m", "analysis", str(bad), "-o", str(tmp_path / "x.html")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "no manifest.json found" in proc.stderr and "Traceback" not in proc.stderr
