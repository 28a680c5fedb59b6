"""Real model end to end: Gemma scores passages, simulated players answer by sampling Gemma's own
full next-token distribution at T = 1, humanlm exports, analysis/ reads the export, and the
report's numbers agree with the simulation."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import select

import analysis
from analysis.metrics import accuracy, simulator_fit
from analysis.temperature import fit_temperature
from webapp.export import ExportFilters, write_export
from webapp.extensions import db
from webapp.lm import display_text
from webapp.lm.stats import log_softmax_row
from webapp.models import Document, Guess, LanguageModel, Player
from webapp.predictions import fill_guess_logprobs

pytestmark = pytest.mark.model

PLAYERS = 60


def simulate_players(app, gemma, rng: np.random.Generator) -> dict:
    """Every player answers every playable item with a token drawn from the model's FULL
    distribution (all 262,144 tokens); returns what the analysis should find."""
    expected_correct, n = 0.0, 0
    with app.app_context():
        session = db.session
        model = session.scalar(select(LanguageModel))
        players = [Player(id=f"sim-{i:03d}") for i in range(PLAYERS)]
        session.add_all(players)
        session.flush()
        key = 0
        for doc in session.scalars(select(Document)):
            logits = np.array(gemma._eval(doc.token_ids))
            for item in doc.items:
                if not item.playable:
                    continue
                logp = log_softmax_row(logits[item.position])
                p = np.exp(logp - logp.max())
                p /= p.sum()
                expected_correct += float(p[item.token_id]) * PLAYERS
                for player, token in zip(players, rng.choice(len(p), size=PLAYERS, p=p)):
                    token = int(token)
                    key += 1
                    session.add(Guess(
                        client_key=f"sim-{key:07d}", player_id=player.id, item_id=item.id,
                        model_id=model.id, raw_text=display_text(gemma.token_bytes(token)),
                        token_ids=[token], first_token_id=token, is_correct=token == item.token_id,
                        match_rule="first_token" if token == item.token_id else "none",
                        server_received_at=datetime.now(UTC),
                    ))
                    n += 1
        session.commit()
        # The real path for exact log-probs of answers outside the stored top-k.
        fill_guess_logprobs(session, gemma, top_k=model.top_k)
        missing = session.scalar(select(Guess.id).where(Guess.model_logprob.is_(None)))
        assert missing is None
    return {"answers": n, "expected_accuracy": expected_correct / n}


def test_report_recovers_what_the_simulation_put_in(scored_app, gemma, tmp_path):
    truth = simulate_players(scored_app, gemma, np.random.default_rng(7))
    with scored_app.app_context():
        write_export(db.session, tmp_path / "export", "csv", ExportFilters())
    data = analysis.load(tmp_path / "export")
    assert len(data.guesses) == truth["answers"]

    acc = accuracy(data, n_boot=200).set_index(["group_type", "group", "who"])
    humans = acc.loc[("filter", "all", "humans")]
    assert humans["n_answers"] == truth["answers"]
    # Accuracy of samples from the model = mean p(true token); the estimate must be close and
    # its interval must contain the truth.
    assert humans["estimate"] == pytest.approx(truth["expected_accuracy"], abs=0.05)
    assert humans["ci_low"] <= truth["expected_accuracy"] <= humans["ci_high"]

    fit = fit_temperature(data, n_boot=200).iloc[0]
    assert abs(fit["estimate"] - 1.0) < 0.15
    assert fit["ci_low"] <= 1.0 <= fit["ci_high"]

    test = simulator_fit(data, n_boot=200).set_index("metric").loc["model_sample_test"]
    assert test["verdict"] == "indistinguishable from samples of the model (T = 1)"
    assert math.isfinite(test["estimate"]) and abs(test["estimate"]) < 0.3

    # The whole report runs on it, in both formats.
    runner = scored_app.test_cli_runner()
    result = runner.invoke(args=["analyze", str(tmp_path / "export"), "-o", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.json").read_text().startswith("{")
    result = runner.invoke(args=["analyze", str(tmp_path / "export"), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0 and "<svg" in (tmp_path / "r.html").read_text()


def test_analyze_command_reports_bad_input_without_a_traceback(scored_app, tmp_path):
    runner = scored_app.test_cli_runner()
    result = runner.invoke(args=["analyze", str(tmp_path / "nothing-here")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
