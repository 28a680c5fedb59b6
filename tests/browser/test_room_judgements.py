"""Rooms that play pairwise and distribution rounds, through real browsers: a projector and three
phones, each in its own browser context, play one room of each kind to the reveal. The host page
shows the pair (never which side is the original), the class's answers live, and the reveal
beside the model; the phones answer with the shared widgets of static/js/judgements.js.

The server is the real app on a copy of the scored test database (four pairwise alternatives
drawn per position). With HUMANLM_SCREENSHOTS=<dir>, the host at 1280x720 and a phone at
390x844 are saved there (docs/room-*.png are made so).
"""

from __future__ import annotations

import math
import re

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select
from test_accessibility import AXE, Auditor
from test_classroom_day import SHOTS, join, layout_problems_at, shot
from test_classroom_day import create_room as create_room_on_page
from test_rooms_pages import guesses_of

from webapp import game
from webapp.extensions import db
from webapp.models import Room
from webapp.rooms import commands, points

SECRET = b"test"  # the test apps' SECRET_KEY (tests/conftest.py)
PROJECTORS = [(1024, 768), (1280, 720), (1920, 1080)]




@pytest.fixture
def audit():
    """axe-core's WCAG checks of the judgement screens (test_accessibility's Auditor)."""
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run `make assets` (npm ci in static/) first")
    return Auditor(AXE.read_text(encoding="utf-8"))


def create_room(host: Page, server, mode: str) -> str:
    """Create a one-round room from corpus "tests" in `mode` on the set-up page."""
    if SHOTS:  # the screenshots show a room phones can join (network.py's example address)
        server.app.config["PUBLIC_URL"] = "http://192.168.1.20:5000"
    return create_room_on_page(host, server.url, 1, mode)


def open_round(code: str):
    """The open round's item, prediction and (pairwise rooms) the class's pair, as the server
    chose it."""
    session = db.new_session()
    try:
        room = session.scalar(select(Room).where(Room.code == code))
        rnd = next(r for r in room.rounds if r.index == room.round_index)
        facts = commands.item_facts(session, rnd.item_id, room.model_id)
        prediction = game.prediction_for(session, rnd.item_id, room.model_id)
        pair = commands.room_pair(room.id, rnd.item_id, facts, SECRET)
        return rnd.item.token_id, rnd.item.token_text, prediction, pair
    finally:
        session.close()


def fits(host: Page, keys: dict[str, str], name: str) -> None:
    """At each projector size nothing scrolls or is cut off of what the class reads."""
    for width, height in PROJECTORS:
        problems = layout_problems_at(host, (width, height), keys)
        assert problems == [], f"{width}x{height}: {problems}"
        shot(host, f"{name}-{width}x{height}.png")
    host.set_viewport_size({"width": 1280, "height": 720})
    host.wait_for_timeout(300)


def advance(host: Page, phase: str) -> None:
    host.click("#primary-btn")
    expect(host.locator("#host")).to_have_attribute("data-phase", phase)


# -------------------------------------------------------------------------------------- pairwise


def test_a_pairwise_room_from_question_to_reveal(people, live_server, tokenizer, audit):
    base = live_server.url
    host = people(viewport={"width": 1280, "height": 720})
    code = create_room(host, live_server, "pairwise")
    phones = {name: people(phone=True) for name in ("Ana", "Ben", "Caro")}
    for name, phone in phones.items():
        join(phone, f"{base}/join/{code}", name)
    advance(host, "answering")

    # The projector and every phone show the same two tokens; nothing says which is the original.
    truth_id, _truth, prediction, pair = open_round(code)
    assert pair is not None
    true_text = game.token_view(truth_id, tokenizer)["text"]
    other_text = game.token_view(pair.alternative_id, tokenizer)["text"]
    left, right = (true_text, other_text) if pair.true_on_left else (other_text, true_text)
    expect(host.locator("#round-ask")).to_have_text("Which one came next?")
    expect(host.locator("#pair-big")).to_be_visible()
    expect(host.locator("#pair-left .chip")).to_have_attribute("data-text", left)
    expect(host.locator("#pair-right .chip")).to_have_attribute("data-text", right)
    expect(host.locator("#pair-big")).not_to_contain_text("original")
    for phone in phones.values():
        expect(phone.locator("#guess-form")).to_be_hidden()
        expect(phone.locator(".pw__side--left .chip")).to_have_attribute("data-text", left)
        expect(phone.locator(".pw__side--right .chip")).to_have_attribute("data-text", right)
    shot(phones["Ana"], "room-pairwise-phone.png")
    audit(phones["Ana"], "phone: pairwise question")

    phones["Ana"].click(".pw__stop[data-value='90']")
    phones["Ana"].click(".judge-submit")
    phones["Ben"].click(".pw__stop[data-value='70']")
    phones["Ben"].keyboard.press("Enter")
    phones["Caro"].click(".judge-skip")
    expect(phones["Ana"].locator("#s-sent-answer")).to_contain_text("You said 90% for the left one")
    expect(phones["Caro"].locator("#s-sent-title")).to_have_text("Skipped")

    # Live: one answer at 90%, one at 70%, on the columns from surely LEFT to surely RIGHT.
    expect(host.locator("#answered-n")).to_have_text("3")
    expect(host.locator("#histo-title")).to_have_text("How likely is LEFT the original?")
    columns = host.locator("#stops-bars .stop")
    expect(columns).to_have_count(11)
    assert columns.evaluate_all("cs => cs.map((c) => c.dataset.percent)") == \
        ["99", "90", "80", "70", "60", "50", "40", "30", "20", "10", "1"]
    expect(host.locator("#stops-bars .stop[data-percent='90']")).to_have_attribute("data-count", "1")
    expect(host.locator("#stops-bars .stop[data-percent='70']")).to_have_attribute("data-count", "1")
    fits(host, {"pair": "#pair-big .chip", "stops": "#stops-bars .stop__pct", "count": "#answered-n",
                "ends": "#stops .stops__ends", "close": "#primary-btn"}, "room-pairwise-host-live")

    audit(host, "host: pairwise answers live")
    stored = guesses_of(code)
    assert stored["Ana"].judgement["left_probability"] == 0.9 and stored["Caro"].skipped
    assert stored["Ana"].judgement["alternative"]["id"] == pair.alternative_id

    advance(host, "locked")
    advance(host, "reveal")
    said = [0.9, 0.7] if pair.true_on_left else [0.1, 0.3]
    model = 1 / (1 + math.exp(pair.alternative_logprob - prediction.target_logprob))
    true_side = "left" if pair.true_on_left else "right"
    expect(host.locator("#pw-reveal")).to_be_visible()
    expect(host.locator("#compare-panel")).to_be_hidden()
    expect(host.locator(f"#pw-reveal-pair .pw-reveal__side[data-side='{true_side}']")).to_have_class(re.compile("is-true"))
    expect(host.locator("#pw-reveal-pair .is-true .chip")).to_have_attribute("data-text", true_text)
    expect(host.locator("#pw-class")).to_have_text(f"{round(sum(said) / 2 * 100)}%")
    expect(host.locator("#pw-class-note")).to_contain_text(f"{sum(p > 0.5 for p in said)} of 2 gave it more than 50%")
    expect(host.locator("#pw-model")).to_have_text(host.evaluate("(p) => window.humanlm.pct(p)", model))
    expect(host.locator("#pw-stops .stop.is-model")).to_have_count(1)
    expect(host.locator("#leaderboard th.lb-correct")).to_have_text("Hits")
    expect(host.locator("#leaderboard-body tr")).to_have_count(3)
    expect(host.locator("#guesses-panel")).to_be_hidden()
    expect(host.locator("#judge-facts")).to_contain_text("85 for 50/50")

    fb = phones["Ana"]
    expect(fb.locator("#fb-judge")).to_be_visible()
    expect(fb.locator(f".fb-pair__side[data-side='{true_side}']")).to_have_class(re.compile("is-true"))
    expect(fb.locator("#fb-points")).to_have_text(f"+{points.judgement_points(said[0])}")
    expect(fb.locator("#fb-you dd")).to_have_text(f"{round(said[0] * 100)}%")
    expect(phones["Caro"].locator("#fb-title")).to_have_text("Skipped")
    shot(fb, "room-pairwise-phone-feedback.png")
    audit(fb, "phone: pairwise reveal")

    fits(host, {
        "pair": "#pw-reveal-pair .chip", "class": "#pw-class", "model": "#pw-model",
        "notes": ".pw-num__note", "stops": "#pw-stops .stop__pct", "true token": "#target-big .chip",
        "stats": "#reveal-stats .stat-line", "leaderboard": "#leaderboard td", "points": "#judge-facts-text",
        "next": "#primary-btn", "join code": "#join-code",
    }, "room-pairwise-host")
    shot(host, "room-pairwise-host.png")
    audit(host, "host: pairwise reveal")

    # The summary: the chance the class and the model gave the original, on average.
    advance(host, "finished")
    expect(host.locator("#summary-tiles .tile").first).to_contain_text(f"{round(sum(said) / 2 * 100)}%")
    expect(host.locator("#summary-tiles")).to_contain_text("Leaned right")
    expect(host.locator("#rounds-title")).to_have_text("Chance given to what came next, per round")
    expect(fb.locator("#end-class")).to_have_text(f"{round(sum(said) / 2 * 100)}%")
    expect(fb.locator("#end-correct-label")).to_have_text("right side")
    shot(host, "room-pairwise-host-summary.png")
    shot(fb, "room-pairwise-phone-end.png")
    audit.check(["phone: pairwise question", "host: pairwise answers live", "phone: pairwise reveal",
                 "host: pairwise reveal"])


# ---------------------------------------------------------------------------------- distribution


def bet(phone: Page, row: int, text: str, points_: int) -> None:
    """Fill guess `row` (0-based) of the bet widget with `text` (a leading space counts)."""
    rows = phone.locator(".bet-row")
    if rows.count() <= row:
        phone.click(".bets__add")
    box = rows.nth(row)
    toggle = box.locator(".bet-row__space")
    if (toggle.get_attribute("aria-pressed") == "true") != text.startswith(" "):
        toggle.click()
    box.locator(".bet-row__input").fill(text.lstrip(" "))
    box.locator(".bet-row__range").fill(str(points_))
    expect(box.locator(".bet-row__points")).to_have_text(str(points_))


def test_a_distribution_room_from_bets_to_reveal(people, live_server, tokenizer, audit):
    base = live_server.url
    host = people(viewport={"width": 1280, "height": 720})
    code = create_room(host, live_server, "distribution")
    phones = {name: people(phone=True) for name in ("Ana", "Ben", "Caro")}
    for name, phone in phones.items():
        join(phone, f"{base}/join/{code}", name)
    advance(host, "answering")
    expect(host.locator("#round-ask")).to_have_text("Bet on what comes next")
    expect(host.locator("#pair-big")).to_be_hidden()

    truth_id, truth, prediction, _pair = open_round(code)
    top = {e[0] for e in prediction.top_k}
    known = next(e for e in prediction.top_k if e[0] != truth_id and not e[3]
                 and re.fullmatch(r" ?[A-Za-z]+", e[2]))
    unknown = next(w for w in (" zebra", " quasar", " kumquat")
                   if tokenizer.tokenize(w)[0] not in top | {truth_id})

    bet(phones["Ana"], 0, truth, 60)
    bet(phones["Ana"], 1, known[2], 10)
    expect(phones["Ana"].locator(".bet-else__points")).to_have_text("30 pts")
    shot(phones["Ana"], "room-distribution-phone.png")
    audit(phones["Ana"], "phone: bets")
    phones["Ana"].click(".judge-submit")
    bet(phones["Ben"], 0, truth, 20)
    bet(phones["Ben"], 1, unknown, 50)
    phones["Ben"].click(".judge-submit")
    phones["Caro"].click(".judge-skip")
    expect(phones["Ana"].locator("#s-sent-answer")).to_contain_text("30 on something else")

    # Live: the candidates by first token, the average share of points on each.
    expect(host.locator("#answered-n")).to_have_text("3")
    expect(host.locator("#histo-title")).to_have_text("The class’s bets so far")
    first = host.locator("#histogram .hbar").first
    expect(first).to_have_attribute("data-text", truth)
    expect(first.locator(".hbar__share")).to_have_text("40%")
    expect(host.locator("#histogram .hbar--else .hbar__share")).to_have_text("30%")
    fits(host, {"bets": "#histogram .chip", "shares": "#histogram .hbar__share", "count": "#answered-n",
                "close": "#primary-btn"}, "room-distribution-host-live")

    audit(host, "host: bets live")
    stored = guesses_of(code)
    assert stored["Ana"].judgement["true_cell"] == 0 and stored["Ana"].mode == "distribution"

    advance(host, "locked")
    advance(host, "reveal")
    expect(host.locator("#compare-title")).to_have_text("The class’s bets vs the model")
    target = host.locator("#compare .cbar--target")
    expect(target).to_have_attribute("data-text", truth)
    expect(target.locator(".cbar__line--class .cbar__val")).to_have_text("40%")
    model_truth = host.evaluate("(p) => window.humanlm.pct(p)", math.exp(prediction.target_logprob))
    expect(target.locator(".cbar__line--model .cbar__val")).to_have_text(model_truth)
    unknown_text = game.token_view(tokenizer.tokenize(unknown)[0], tokenizer)["text"]
    unknown_row = host.locator("#compare .cbar", has=host.locator(f".chip[data-text='{unknown_text}']"))
    expect(unknown_row.locator(".cbar__line--model .cbar__val")).to_have_text("not known")
    rest = host.locator("#compare .cbar", has=host.locator(".cbar__else"))
    expect(rest.locator(".cbar__line--class .cbar__val")).to_have_text("30%")
    expect(rest.locator(".cbar__line--model .cbar__val")).to_have_text("not known")  # a cell is unknown
    expect(host.locator("#reveal-stats")).to_contain_text("2 of 2 named it")
    expect(host.locator("#leaderboard th.lb-correct")).to_have_text("Hits")

    ana = phones["Ana"]
    expect(ana.locator("#fb-title")).to_have_text("You named it!")
    expect(ana.locator("#fb-points")).to_have_text(f"+{points.judgement_points(0.6)}")
    expect(ana.locator(".fb-cells tr.is-true td").nth(1)).to_have_text("60%")
    expect(phones["Ben"].locator(".fb-cells")).to_contain_text("not known")
    shot(ana, "room-distribution-phone-feedback.png")
    audit(ana, "phone: bets reveal")

    fits(host, {
        "chart row": "#compare .cbar", "chart value": "#compare .cbar__val", "note": "#compare-note",
        "true token": "#target-big .chip", "stats": "#reveal-stats .stat-line",
        "leaderboard": "#leaderboard td", "points": "#judge-facts-text", "next": "#primary-btn",
    }, "room-distribution-host")
    shot(host, "room-distribution-host.png")
    audit(host, "host: bets reveal")
    audit.check(["phone: bets", "host: bets live", "phone: bets reveal", "host: bets reveal"])


def test_the_set_up_page_offers_pairwise_only_where_there_are_pairs(people, live_server):
    page = people()
    page.goto(live_server.url + "/rooms/new")
    pairwise = page.locator("input[name=answer_mode][value=pairwise]")
    expect(pairwise).to_be_enabled()
    page.locator(".mode-options").scroll_into_view_if_needed()
    shot(page, "room-new-modes.png")
    page.check("input[name=answer_mode][value=pairwise]")
    page.check("input[name=source][value=prompts]")
    expect(pairwise).to_be_disabled()
    expect(page.locator("input[name=answer_mode][value=token]")).to_be_checked()
    expect(page.locator("#mode-note")).to_contain_text("needs passages from a corpus")
    page.check("input[name=source][value=corpus]")
    expect(pairwise).to_be_enabled()
    expect(page.locator("#mode-note")).to_be_hidden()
