"""The solo game's reveal fills in the model's numbers that were not known yet: a bet on a
candidate outside the model's stored top-k shows "not known yet", the fill job (run here by the
test, as the background worker would) computes it, and the page asks again and shows the number
without reloading. The `people` fixture fails the test on any JavaScript error or CSP violation."""

from __future__ import annotations

import math

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select
from test_judgement_modes import _is_guess_post, _open, _sent, _shown_as, _type_candidate

from webapp import game
from webapp.extensions import db
from webapp.lm import load_tokenizer
from webapp.models import Guess, Item

CANDIDATES = (" zygote", " Qzxv", " xylophone", " Kazakhstan")


def _unlikely(app, item_id: int) -> str:
    """A candidate (with a leading space) whose first token is outside the stored top-k here,
    with and without its leading space."""
    with app.app_context():
        session = db.new_session()
        try:
            item = session.get(Item, item_id)
            model = game.active_model(session, app.config["MODEL"])
            prediction = game.prediction_for(session, item.id, model.id)
            in_k = {entry[0] for entry in prediction.top_k} | {item.token_id}
        finally:
            session.close()
    tokenizer = load_tokenizer(app.config["MODEL"])
    for text in CANDIDATES:
        if {tokenizer.tokenize(text)[0], tokenizer.tokenize(text.strip())[0]}.isdisjoint(in_k):
            return text
    pytest.fail("every candidate is in the top-k here")


def _bets(app, key: str) -> list[dict]:
    with app.app_context():
        session = db.new_session()
        try:
            return session.scalar(select(Guess).where(Guess.client_key == key)).judgement["bets"]
        finally:
            session.close()


def test_a_bet_outside_the_top_k_gets_its_number_without_a_reload(people, live_server):
    app = live_server.app
    page = people()
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url)
            if "/api/play/guesses/" in r.url and r.method == "GET" else None)
    question = _open(page, live_server.url + "/play?mode=distribution")
    text = _unlikely(app, question["item_id"])

    _type_candidate(page, 0, text)
    page.keyboard.press("Tab")  # to the points slider
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    expect(page.locator(".bet-row__points").first).to_have_text("10")
    with page.expect_response(_is_guess_post) as info:
        page.keyboard.press("Enter")
    body, reply = _sent(info)
    cells = reply["distribution"]["cells"]
    assert [c["model"] for c in cells] == [None, None]  # the candidate and "something else"
    shown = page.locator(".dist__cell .vs-row--model .vs-row__pct")
    expect(shown).to_have_text(["not known yet", "not known yet"])
    expect(page.locator("#judge-result .judge-sentence")).to_contain_text("not known yet")
    page.evaluate("window.stillTheSamePage = true")

    done = app.test_cli_runner().invoke(args=["score", "--fill-guesses"])
    assert done.exit_code == 0, done.output
    [bet] = _bets(app, body["client_key"])
    assert bet["model_logprob"] is not None
    p = math.exp(bet["model_logprob"])

    # the page asks again (about 4 s, then 12 s after the reveal) and fills the numbers in place
    expect(shown.first).not_to_have_text("not known yet", timeout=25_000)
    _shown_as(shown.first.inner_text(), p)
    _shown_as(shown.last.inner_text(), 1 - p)
    expect(page.locator("#judge-result .judge-sentence")).not_to_contain_text("not known yet")
    expect(page.locator("#model-numbers-note")).to_contain_text("The model’s numbers are in.")
    expect(page.locator("#model-numbers-note")).to_have_attribute("aria-live", "polite")
    assert page.evaluate("window.stillTheSamePage") is True  # no reload
    assert 1 <= len(asked) <= 2 and all(u.endswith("/api/play/guesses/" + body["client_key"]) for u in asked)
    # the tab's tally now has the model's side of this answer
    expect(page.locator("#scoreline")).not_to_contain_text("not known yet")
    expect(page.locator("#next-btn")).to_be_focused()  # the update took no focus away

    # moving on stops the asking
    n_asked = len(asked)
    page.keyboard.press("Enter")
    expect(page.locator("#judge")).to_be_visible()
    page.wait_for_timeout(500)
    assert len(asked) == n_asked


def _is_next_post(resp) -> bool:
    return resp.url.endswith("/api/play/next") and resp.request.method == "POST"


def test_a_typed_guess_outside_the_top_k_gets_its_rank_without_a_reload(page: Page, live_server):
    app = live_server.app
    with page.expect_response(_is_next_post) as first:
        page.goto(live_server.url + "/play?mode=token")
    question = first.value.json()["question"]
    text = _unlikely(app, question["item_id"])
    page.locator("#guess-input").type(text.strip())
    with page.expect_response(_is_guess_post) as info:
        page.locator("#guess-btn").click()
    body, reply = _sent(info)
    assert reply["model"]["guess_prob"] is None
    line = page.locator("#model-line")
    expect(line).to_contain_text("did not include your answer")
    expect(page.locator("#bars .bar--guess .bar__rank")).to_have_text("–")
    page.evaluate("window.stillTheSamePage = true")

    done = app.test_cli_runner().invoke(args=["score", "--fill-guesses"])
    assert done.exit_code == 0, done.output
    with app.app_context():
        session = db.new_session()
        try:
            stored = session.scalar(select(Guess).where(Guess.client_key == body["client_key"]))
            lp, rank = stored.model_logprob, stored.model_rank
        finally:
            session.close()
    assert lp is not None and rank > 64

    expect(line).to_contain_text("The model gave your guess", timeout=25_000)
    expect(line).to_contain_text(f"(rank {rank})")
    expect(page.locator("#bars .bar--guess .bar__rank")).to_have_text(str(rank))
    _shown_as(page.locator("#bars .bar--guess .bar__pct").inner_text(), math.exp(lp))
    expect(page.locator("#model-numbers-note")).to_contain_text(f"(rank {rank})")
    assert page.evaluate("window.stillTheSamePage") is True
    assert page.js_errors == []
