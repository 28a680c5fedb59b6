"""The judgement modes (issue 14) in a real browser: "Which came next?" (pairwise) and "Bet on it"
(a stated distribution), played in the solo game on a phone and with the keyboard only on a
desktop, against the live app and the real model's scores. What the page sends is checked against
what the database stores, and the reveal's numbers against the server's reply. The `people`
fixture fails the test on any JavaScript error or Content-Security-Policy violation."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, Response, expect
from sqlalchemy import select

from webapp.extensions import db
from webapp.models import Guess, Item


def _is_guess_post(resp: Response) -> bool:
    return resp.url.endswith("/api/play/guesses") and resp.request.method == "POST"


def _is_next_post(resp: Response) -> bool:
    return resp.url.endswith("/api/play/next") and resp.request.method == "POST"


def _open(page: Page, url: str) -> dict:
    """Open a game page and return the first question payload it received."""
    with page.expect_response(_is_next_post) as info:
        page.goto(url)
    payload = info.value.json()
    assert info.value.ok and payload["question"] is not None, payload
    return payload["question"]


def _sent(info) -> tuple[dict, dict]:
    resp = info.value
    body = json.loads(resp.request.post_data or "{}")
    reply = resp.json()
    assert resp.ok, reply
    return body, reply


def _stored(app, key: str) -> Guess:
    with app.app_context():
        session = db.new_session()
        try:
            guess = session.scalar(select(Guess).where(Guess.client_key == key))
            assert guess is not None, f"nothing stored under {key}"
            session.expunge(guess)
            return guess
        finally:
            session.close()


def _truth(app, item_id: int) -> str:
    with app.app_context():
        session = db.new_session()
        try:
            return session.get(Item, item_id).token_text
        finally:
            session.close()


def _percent(text: str) -> float:
    """The number of the first "12%" / "4.5%" / ">99.9%" in a text, as a fraction."""
    found = re.search(r"(\d+(?:\.\d+)?)%", text)
    assert found, f"no percentage in {text!r}"
    return float(found.group(1)) / 100


def _shown_as(text: str, p: float) -> None:
    """A percentage on the page is the reply's probability, rounded as the page rounds it."""
    shown = _percent(text)
    assert shown == pytest.approx(p, abs=max(0.006, p * 0.01)), (text, p)


def _fits(page: Page) -> None:
    width = page.viewport_size["width"]
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"the page is {scroll}px wide on a {width}px screen"


def _focused_class(page: Page) -> str:
    return page.evaluate("document.activeElement ? document.activeElement.className : ''")


# ------------------------------------------------------------------------------- pairwise


def _check_pairwise_reveal(page: Page, reply: dict) -> None:
    pw = reply["pairwise"]
    expect(page.locator("#reveal")).to_be_visible()
    expect(page.locator("#judge")).to_be_hidden()
    expect(page.locator("#target-chip")).to_have_attribute("data-text", reply["target"]["text"])
    sides = page.locator(".pwr__side")
    expect(sides).to_have_count(2)
    true_index = 0 if pw["true_side"] == "left" else 1
    true_side, other_side = sides.nth(true_index), sides.nth(1 - true_index)
    expect(true_side).to_have_class(re.compile(r"\bis-true\b"))
    expect(true_side.locator(".chip")).to_have_attribute("data-text", pw["true"]["text"])
    expect(other_side.locator(".chip")).to_have_attribute("data-text", pw["alternative"]["text"])
    # both tokens' model probabilities, and the model's answer to the same pair beside the player's
    _shown_as(true_side.locator(".pwr__prob").inner_text(), pw["true"]["prob"])
    _shown_as(other_side.locator(".pwr__prob").inner_text(), pw["alternative"]["prob"])
    _shown_as(page.locator(".vs-row--model .vs-row__pct").inner_text(), pw["model_true_probability"])
    sentence = page.locator("#judge-result .judge-sentence")
    expect(sentence).to_contain_text(f"It was the {pw['true_side'].upper()} one.")
    if pw["true_probability"] is not None:
        _shown_as(page.locator(".vs-row--you .vs-row__pct").inner_text(), pw["true_probability"])
        expect(sentence).to_contain_text(f"You gave the original {round(pw['true_probability'] * 100)}%")
        mark = "✓" if pw["true_probability"] > 0.5 else "✗" if pw["true_probability"] < 0.5 else "="
    else:
        expect(page.locator(".vs-row--you")).to_have_count(0)
        mark = "?"
    expect(page.locator("#verdict-mark")).to_have_text(mark)
    expect(page.locator("#passage .tok--revealed")).to_have_count(1)


def test_pairwise_with_the_keyboard_only_on_a_desktop(people, live_server):
    app = live_server.app
    page = people()
    question = _open(page, live_server.url + "/play?mode=pairwise")
    assert question["mode"] == "pairwise"
    pair = question["pair"]
    expect(page.locator("input[name=answer-mode][value=pairwise]")).to_be_checked()
    expect(page.locator("#judge")).to_be_visible()
    expect(page.locator("#ask")).to_be_hidden()
    # the two tokens exactly as sent, whitespace made visible, and the 11 stops
    chips = page.locator(".pw__side .chip")
    expect(chips.nth(0)).to_have_attribute("data-text", pair["left"]["text"])
    expect(chips.nth(1)).to_have_attribute("data-text", pair["right"]["text"])
    expect(page.locator(".pw__question")).to_have_text("How likely is the LEFT one the original?")
    stops = page.locator(".pw__scale [role=radio]")
    expect(stops).to_have_count(11)
    assert sorted(int(v) for v in stops.evaluate_all("els => els.map(e => e.dataset.value)")) == pair["scale"]
    assert "pw__stop" in _focused_class(page)  # the scale has the focus: no mouse needed

    # Enter before choosing says what to do and sends nothing
    page.keyboard.press("Enter")
    expect(page.locator(".pw__msg")).to_contain_text("Choose how likely")
    page.keyboard.press("8")
    expect(page.locator('.pw__stop[data-value="80"]')).to_have_attribute("aria-checked", "true")
    page.keyboard.press("ArrowRight")  # one stop towards the RIGHT token: 70%
    checked = page.locator('.pw__stop[aria-checked="true"]')
    expect(checked).to_have_attribute("data-value", "70")
    expect(checked).to_be_focused()
    expect(page.locator(".pw__readout")).to_contain_text("You say 70%: the left one")
    with page.expect_response(_is_guess_post) as info:
        page.keyboard.press("Enter")
    body, reply = _sent(info)
    assert body["mode"] == "pairwise" and body["left_probability"] == 70
    assert body["item_id"] == question["item_id"] and body["reaction_ms"] > 0
    assert "skipped" not in body and "text" not in body
    _check_pairwise_reveal(page, reply)
    expect(page.locator("#next-btn")).to_be_focused()
    expect(page.locator("#next-btn")).to_contain_text("Next pair")

    guess = _stored(app, body["client_key"])
    j = guess.judgement
    assert guess.mode == "pairwise" and guess.match_rule == "pairwise" and not guess.skipped
    assert j["left_probability"] == 0.7
    assert j["true_probability"] == pytest.approx(0.7 if j["true_on_left"] else 0.3)
    assert (reply["pairwise"]["true_side"] == "left") == j["true_on_left"]
    # the side the page showed as left is the side the server stored as left
    shown_left = pair["left"]["text"]
    assert (shown_left == reply["pairwise"]["true"]["text"]) == j["true_on_left"]
    expect(page.locator("#scoreline")).to_contain_text("over 1 answer")

    # Enter on the focused Next button: the next pair; Esc there is "I don't know"
    with page.expect_response(_is_next_post) as nxt:
        page.keyboard.press("Enter")
    second = nxt.value.json()["question"]
    assert second["item_id"] != question["item_id"] and second["pair"]
    expect(page.locator("#judge")).to_be_visible()
    with page.expect_response(_is_guess_post) as info:
        page.keyboard.press("Escape")
    body, reply = _sent(info)
    assert body == {**body, "skipped": True, "mode": "pairwise", "item_id": second["item_id"]}
    _check_pairwise_reveal(page, reply)
    skipped = _stored(app, body["client_key"])
    assert skipped.skipped and skipped.mode == "pairwise" and skipped.judgement["left_probability"] is None
    expect(page.locator("#scoreline")).to_contain_text("1 skipped")

    # the choice is remembered: /play opens in the same mode
    with page.expect_response(_is_next_post) as again:
        page.goto(live_server.url + "/play")
    assert json.loads(again.value.request.post_data)["mode"] == "pairwise"
    expect(page.locator(".pw__scale")).to_be_visible()


def test_pairwise_with_a_thumb_on_a_phone(people, live_server):
    app = live_server.app
    page = people(phone=True)
    question = _open(page, live_server.url + "/play?mode=pairwise")
    expect(page.locator(".pw__scale")).to_be_visible()
    _fits(page)
    width = page.viewport_size["width"]
    for stop in page.locator(".pw__stop").all():
        box = stop.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width
        assert box["width"] >= 24 and box["height"] >= 44, box  # a thumb's target
    page.locator('.pw__stop[data-value="30"]').tap()
    expect(page.locator('.pw__stop[data-value="30"]')).to_have_attribute("aria-checked", "true")
    answer = page.get_by_role("button", name="Answer")
    with page.expect_response(_is_guess_post) as info:
        answer.tap()
    body, reply = _sent(info)
    assert body["left_probability"] == 30 and body["item_id"] == question["item_id"]
    _check_pairwise_reveal(page, reply)
    assert _stored(app, body["client_key"]).judgement["left_probability"] == 0.3
    _fits(page)
    expect(page.locator("#next-btn")).to_be_in_viewport()  # pinned under the thumb
    with page.expect_response(_is_next_post):
        page.locator("#next-btn").tap()
    expect(page.locator(".pw__scale")).to_be_visible()


# ------------------------------------------------------------------------------- bets


def _type_candidate(page: Page, row: int, text: str) -> None:
    """Type `text` into a row (focused) so that the row sends exactly `text`: a typed leading
    space turns the row's space switch on, Alt+S turns it off for a token without one."""
    switch = page.locator(".bet-row").nth(row).locator(".bet-row__space")
    if not text.startswith(" ") and switch.get_attribute("aria-pressed") == "true":
        page.keyboard.press("Alt+s")
        expect(switch).to_have_attribute("aria-pressed", "false")
    page.keyboard.type(text)
    expect(page.locator(".bet-row").nth(row).locator(".chip--scored")).to_have_count(1)


def test_bets_with_the_keyboard_only_on_a_desktop(people, live_server):
    app = live_server.app
    page = people()
    question = _open(page, live_server.url + "/play?mode=distribution")
    assert question["mode"] == "distribution" and "pair" not in question
    expect(page.locator(".bet-row")).to_have_count(1)
    expect(page.locator(".bet-row__input")).to_be_focused()
    truth = _truth(app, question["item_id"])

    # Enter with nothing typed: a message, nothing sent
    page.keyboard.press("Enter")
    expect(page.locator(".bets__msg")).to_contain_text("Type at least one guess")

    _type_candidate(page, 0, truth)
    page.keyboard.press("Tab")  # to the points slider
    assert "bet-row__range" in _focused_class(page)
    for _ in range(12):
        page.keyboard.press("ArrowRight")  # 12 x 5 points
    expect(page.locator(".bet-row__points").first).to_have_text("60")
    expect(page.locator(".bet-else__points")).to_have_text("40 pts")

    # Tab on to "+ Add a guess" (past the row's space switch), Enter: a second row, focused
    for _ in range(4):
        page.keyboard.press("Tab")
        if "bets__add" in _focused_class(page):
            break
    assert "bets__add" in _focused_class(page)
    page.keyboard.press("Enter")
    expect(page.locator(".bet-row")).to_have_count(2)
    expect(page.locator(".bet-row__input").nth(1)).to_be_focused()
    _type_candidate(page, 1, " Qzxv")
    page.keyboard.press("Tab")
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowLeft")
    expect(page.locator(".bet-row__points").nth(1)).to_have_text("10")
    expect(page.locator(".bets__sum")).to_have_text("100 points = 60 + 10 + 30 on something else")
    expect(page.locator(".bet-else__points")).to_have_text("30 pts")

    with page.expect_response(_is_guess_post) as info:
        page.keyboard.press("Enter")  # on the slider: place the bets
    body, reply = _sent(info)
    assert body["mode"] == "distribution" and body["item_id"] == question["item_id"]
    assert body["bets"] == [{"text": truth, "points": 60}, {"text": " Qzxv", "points": 10}]
    assert body["else_points"] == 30 and "text" not in body

    guess = _stored(app, body["client_key"])
    j = guess.judgement
    assert guess.mode == "distribution" and not guess.skipped
    assert [(b["text"], b["points"]) for b in j["bets"]] == [(truth, 60), (" Qzxv", 10)]
    assert j["else_points"] == 30 and j["true_cell"] == 0

    dist = reply["distribution"]
    assert dist["person_true"] == 0.6
    expect(page.locator("#reveal")).to_be_visible()
    expect(page.locator("#verdict-mark")).to_have_text("✓")
    cells = page.locator(".dist__cell")
    expect(cells).to_have_count(len(dist["cells"]))
    true_cell = page.locator(".dist__cell.is-true")
    expect(true_cell).to_have_count(1)
    expect(true_cell.locator(".chip")).to_have_attribute("data-text", truth)
    expect(true_cell.locator(".tag--target")).to_have_text("came next")
    expect(true_cell.locator(".vs-row--you .vs-row__pct")).to_have_text("60%")
    _shown_as(true_cell.locator(".vs-row--model .vs-row__pct").inner_text(), dist["model_true"])
    for i, cell in enumerate(dist["cells"]):
        shown = cells.nth(i).locator(".vs-row--model .vs-row__pct")
        if cell["model"] is None:
            expect(shown).to_have_text("not known yet")
        else:
            _shown_as(shown.inner_text(), cell["model"])
    expect(cells.last).to_contain_text("Something else")
    expect(page.locator("#judge-result .judge-sentence")).to_contain_text(
        re.compile(r"You put 60% on what came next; the model put [\d.<>]+% on the same cell\."))
    expect(page.locator("#next-btn")).to_be_focused()

    # the next position: two guesses sharing a first token are allowed and said to count as one
    with page.expect_response(_is_next_post):
        page.keyboard.press("Enter")
    expect(page.locator("#judge")).to_be_visible()
    expect(page.locator(".bet-row")).to_have_count(1)  # a new, empty widget
    expect(page.locator(".bet-row__input")).to_be_focused()
    expect(page.locator(".bet-row__input")).to_have_value("")
    _type_candidate(page, 0, " the")
    page.keyboard.press("Tab")
    page.keyboard.press("ArrowRight")
    page.get_by_role("button", name="+ Add a guess").press("Enter")
    _type_candidate(page, 1, " the end")
    expect(page.locator(".bets__note")).to_contain_text("count as one bet of 5 points")
    # an empty row with points is refused with a message; Esc is "I don't know"
    page.get_by_role("button", name="+ Add a guess").press("Enter")
    page.keyboard.press("Tab")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    expect(page.locator(".bets__msg")).to_contain_text("Guess 3 is empty but has 5 points")
    with page.expect_response(_is_guess_post) as info:
        page.keyboard.press("Escape")
    body, reply = _sent(info)
    assert body["skipped"] is True and body["mode"] == "distribution" and "bets" not in body
    assert _stored(app, body["client_key"]).skipped
    expect(page.locator("#judge-result .judge-sentence")).to_contain_text("You skipped this one.")
    expect(page.locator("#scoreline")).to_contain_text("1 skipped")


def test_bets_with_a_thumb_on_a_phone(people, live_server):
    app = live_server.app
    page = people(phone=True)
    _open(page, live_server.url + "/play")
    page.locator("label", has_text="Bet on it").tap()  # the mode choice, then the address says it
    expect(page.locator(".bet-row__input")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/play\?mode=distribution$"))
    question_id = int(page.locator("#game").get_attribute("data-item-id"))
    _fits(page)

    page.locator(".bet-row__input").tap()
    page.keyboard.type(" and")
    plus = page.locator(".bet-row").first.get_by_role("button", name=re.compile("points more"))
    for _ in range(4):
        plus.tap()
    expect(page.locator(".bet-row__points").first).to_have_text("20")
    page.get_by_role("button", name="+ Add a guess").tap()
    page.keyboard.type(" the")
    page.locator(".bet-row").nth(1).get_by_role("button", name=re.compile("points more")).tap()
    _fits(page)
    width = page.viewport_size["width"]
    for row in page.locator(".bet-row").all():
        box = row.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width
    with page.expect_response(_is_guess_post) as info:
        page.get_by_role("button", name="Place my bets").tap()
    body, reply = _sent(info)
    assert body["item_id"] == question_id
    assert body["bets"] == [{"text": " and", "points": 20}, {"text": " the", "points": 5}]
    assert body["else_points"] == 75
    stored = _stored(app, body["client_key"])
    assert [b["points"] for b in stored.judgement["bets"]] == [20, 5]
    expect(page.locator(".dist__cell")).to_have_count(len(reply["distribution"]["cells"]))
    _fits(page)
    expect(page.locator("#next-btn")).to_be_in_viewport()


# ------------------------------------------------------------------------------- studies


def _is_answer_post(resp: Response) -> bool:
    return "/api/s/" in resp.url and resp.url.endswith("/answers") and resp.request.method == "POST"


def _study_guesses(app, study_id: int) -> list[Guess]:
    with app.app_context():
        session = db.new_session()
        try:
            rows = list(session.scalars(select(Guess).where(Guess.study_id == study_id).order_by(Guess.id)))
            for row in rows:
                session.expunge(row)
            return rows
        finally:
            session.close()


def _start_study(page: Page, base: str, slug: str, pid: str) -> None:
    page.goto(f"{base}/s/{slug}?PROLIFIC_PID={pid}")
    expect(page.get_by_role("heading", name="Information and consent")).to_be_visible()
    page.get_by_role("button", name="I agree, start the study").click()
    expect(page.get_by_role("heading", name="What to do")).to_be_visible()
    page.get_by_role("link", name="Start").click()
    expect(page.locator("#study")).to_have_attribute("data-state", "question")


def test_a_pairwise_study_with_the_keyboard_from_consent_to_completion_code(people, live_server):
    from research_helpers import make_study, study_row

    app = live_server.app
    study_id = make_study(app, name="Pairs", slug="pairs-browser", mode="pairwise", show_feedback=True,
                          items_per_participant=3, completion_code="PAIRS-DONE",
                          checks=["To show you are reading, type the word blue: | blue"])
    assert study_row(app, study_id).mode == "pairwise"
    page = people()
    _start_study(page, live_server.url, "pairs-browser", "pp-pairs")
    sent, checks = [], 0
    for n in range(1, 5):
        expect(page.locator("#progress-text")).to_have_text(f"Question {n} of 4")
        judge = page.locator("#judge")
        ask = page.locator("#ask")
        expect(page.locator("#judge:visible, #ask:visible")).to_have_count(1)
        if ask.is_visible():  # the comprehension check: one typed word, as in every study
            checks += 1
            expect(judge).to_be_hidden()
            box = page.get_by_label("What is the next word?")
            expect(box).to_be_focused()
            page.keyboard.type("blue")
            with page.expect_response(_is_answer_post) as info:
                page.keyboard.press("Enter")
            body, reply = _sent(info)
            assert body["text"] == "blue" and "left_probability" not in body
        else:
            expect(page.locator(".pw__side .chip")).to_have_count(2)
            assert "pw__stop" in _focused_class(page)
            page.keyboard.press("8")
            with page.expect_response(_is_answer_post) as info:
                page.keyboard.press("Enter")
            body, reply = _sent(info)
            assert body["left_probability"] == 80 and "text" not in body
            sent.append(body)
            # feedback: the participant's 80% beside the model's answer to the same pair
            fb = reply["feedback"]["pairwise"]
            expect(page.locator("#feedback")).to_be_visible()
            expect(page.locator("#feedback-line .chip--target")).to_have_attribute("data-text", reply["feedback"]["target"])
            result = page.locator("#feedback-judge")
            expect(result.locator(".judge-sentence")).to_contain_text(f"It was the {fb['true_side'].upper()} one.")
            _shown_as(result.locator(".vs-row--you .vs-row__pct").inner_text(), fb["true_probability"])
            _shown_as(result.locator(".vs-row--model .vs-row__pct").inner_text(), fb["model_true_probability"])
            expect(result.locator(".pwr__side.is-true .chip")).to_have_attribute("data-text", fb["true"]["text"])
        if reply.get("feedback"):  # shown after the last answer too; Continue goes to the end
            expect(page.locator("#continue-btn")).to_be_focused()
            page.keyboard.press("Enter")
        if reply["finished"]:
            break
    expect(page.get_by_role("heading", name="Thank you!")).to_be_visible()
    expect(page.locator("#completion-code")).to_have_text("PAIRS-DONE")
    assert checks == 1 and len(sent) == 3

    rows = _study_guesses(app, study_id)
    judged = [g for g in rows if g.mode == "pairwise"]
    assert [g.client_key for g in judged] == [b["client_key"] for b in sent]
    assert all(g.judgement["left_probability"] == 0.8 and g.match_rule == "pairwise" for g in judged)
    [check] = [g for g in rows if g.match_rule == "check"]
    assert check.is_correct is True and check.raw_text == "blue" and check.mode == "word"


def test_a_distribution_study_on_a_phone_from_consent_to_completion_code(people, live_server):
    from research_helpers import make_study

    app = live_server.app
    study_id = make_study(app, name="Bets", slug="bets-browser", mode="distribution", show_feedback=True,
                          items_per_participant=2, completion_code="BETS-DONE")
    page = people(phone=True)
    _start_study(page, live_server.url, "bets-browser", "pp-bets")
    sent = []
    for n in (1, 2):
        expect(page.locator("#progress-text")).to_have_text(f"Question {n} of 2")
        expect(page.locator(".bet-row")).to_have_count(1)
        _fits(page)
        page.locator(".bet-row__input").tap()
        page.keyboard.type(" the")
        plus = page.locator(".bet-row").first.get_by_role("button", name=re.compile("points more"))
        for _ in range(n * 2):
            plus.tap()
        with page.expect_response(_is_answer_post) as info:
            page.get_by_role("button", name="Place my bets").tap()
        body, reply = _sent(info)
        assert body["bets"] == [{"text": " the", "points": 10 * n}] and body["else_points"] == 100 - 10 * n
        sent.append(body)
        dist = reply["feedback"]["distribution"]
        result = page.locator("#feedback-judge")
        expect(result).to_be_visible()
        expect(result.locator(".dist__cell")).to_have_count(len(dist["cells"]))
        expect(result.locator(".dist__cell.is-true")).to_have_count(1)
        expect(result.locator(".judge-sentence")).to_contain_text(f"You put {round(dist['person_true'] * 100)}% on what came next")
        _fits(page)
        page.get_by_role("button", name="Continue").tap()
        if reply["finished"]:
            break
    expect(page.get_by_role("heading", name="Thank you!")).to_be_visible()
    expect(page.locator("#completion-code")).to_have_text("BETS-DONE")
    rows = _study_guesses(app, study_id)
    assert [g.client_key for g in rows] == [b["client_key"] for b in sent]
    assert [g.judgement["bets"][0]["points"] for g in rows] == [10, 20]
    assert all(g.mode == "distribution" and g.judgement["else_points"] == 100 - g.judgement["bets"][0]["points"]
               for g in rows)
