"""The one answer box (static/js/common.js, humanlm.guessInput) on the solo game, a phone in a
room and a study's token mode, and the limits the server hands every page.

The app here runs with MAX_GUESS_CHARS = 50 instead of the default 200, so a page that still
carried its own copy of the limit would show it.
"""

from __future__ import annotations

import json
import re
import shutil
from urllib.parse import unquote

import pytest
from playwright.sync_api import Browser, Page, Request, expect
from research_helpers import make_study, study_row
from sqlalchemy import select
from support import MODEL_SPEC, TEST_MAX_TOKENS, LiveServer
from test_rooms_pages import create_room, host_action, join

from webapp.app import create_app
from webapp.extensions import db
from webapp.models import Guess, Room
from webapp.rooms.commands import MAX_ROUNDS
from webapp.rooms.state import NICKNAME_MAX_CHARS

LIMIT = 50
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}




@pytest.fixture
def server(tmp_path, scored_template):
    """The real app on a copy of the scored test database, with MAX_GUESS_CHARS = 50."""
    path = tmp_path / "scored.db"
    shutil.copy(scored_template, path)
    app = create_app({
        "DATABASE_URL": f"sqlite:///{path}", "TESTING": True, "SECRET_KEY": "test",
        "MODEL": MODEL_SPEC, "MAX_DOCUMENT_TOKENS": TEST_MAX_TOKENS, "TOP_K": 64,
        "ROOM_ANSWER_BATCH_MS": 0, "MAX_GUESS_CHARS": LIMIT,
    })
    live = LiveServer(app).start()
    yield live
    live.stop()
    db.dispose()


@pytest.fixture
def people(browser: Browser):
    """Pages in separate browser contexts (separate people); fail on any JavaScript error."""
    contexts, errors = [], []

    def open_page(phone: bool = False) -> Page:
        if phone:
            ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
        else:
            ctx = browser.new_context(viewport=DESKTOP)
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page

    yield open_page
    for ctx in contexts:
        ctx.close()
    assert errors == [], errors


def _start_study(page: Page, base: str, app, participant: str) -> str:
    """Open a token-mode study (no feedback) as a new participant, up to the first question;
    return the study's slug."""
    study_id = make_study(app, items_per_participant=3)
    slug = study_row(app, study_id).slug
    page.goto(f"{base}/s/{slug}?participant={participant}")
    page.get_by_role("button", name="I agree, start the study").click()
    page.get_by_role("link", name="Start").click()
    expect(page.locator("#progress-text")).to_have_text("Question 1 of 3")
    return slug


def _expect_split(page: Page, first_token: str) -> None:
    """The live split is on screen and its scored (first) chip is exactly `first_token`."""
    scored = page.locator("#token-chips .chip--scored")
    expect(scored).to_have_count(1)
    expect(scored).to_have_attribute("data-text", first_token)
    space = "starts with a space" if first_token.startswith(" ") else "no leading space"
    expect(page.locator("#token-summary")).to_contain_text(re.compile(rf"\d+ tokens? · {space}"))


def _switch_on(page: Page) -> bool:
    return page.locator("#space-toggle").get_attribute("aria-pressed") == "true"


def _set_switch(page: Page, on: bool) -> None:
    if _switch_on(page) != on:
        page.keyboard.press("Alt+s")
    expect(page.locator("#space-toggle")).to_have_attribute("aria-pressed", "true" if on else "false")


def test_the_limits_come_from_the_settings(people, server):
    page = people()
    base = server.url
    page.goto(base + "/play")
    expect(page.locator("#ask")).to_be_visible()
    config = json.loads(page.locator("#humanlm-config").text_content())
    assert config == {"limits": {
        "max_guess_chars": LIMIT, "max_nickname_chars": NICKNAME_MAX_CHARS, "max_rounds": MAX_ROUNDS,
    }}
    assert page.evaluate("window.humanlm.limits.max_guess_chars") == LIMIT
    expect(page.locator("#guess-input")).to_have_attribute("maxlength", str(LIMIT))
    page.locator("#guess-input").type("x" * (LIMIT + 10))
    assert len(page.locator("#guess-input").input_value()) == LIMIT

    page.goto(base + "/join")
    expect(page.locator("#guess-input")).to_have_attribute("maxlength", str(LIMIT))
    expect(page.locator("#join-name")).to_have_attribute("maxlength", str(NICKNAME_MAX_CHARS))
    expect(page.locator("#join-name-help")).to_contain_text(f"Up to {NICKNAME_MAX_CHARS} characters")

    _start_study(page, base, server.app, "limits-1")
    expect(page.locator("#answer-input")).to_have_attribute("maxlength", str(LIMIT))

    # Every page's stylesheets load in the head, none from the body.
    for path in ("/", "/play", "/join", "/rooms/new", "/research/login"):
        page.goto(base + path)
        assert page.locator("head link[rel=stylesheet]").count() >= 1, path
        assert page.locator("body link[rel=stylesheet]").count() == 0, path
    page.goto(base + "/rooms/new")
    assert page.locator("head link[rel=stylesheet][href*='rooms.css']").count() == 1
    expect(page.locator("#rounds")).to_have_attribute("max", str(MAX_ROUNDS))
    expect(page.locator("#rounds-help")).to_have_text(f"1 to {MAX_ROUNDS}")
    page.fill("#rounds", str(MAX_ROUNDS + 1))
    page.click("#create-btn")
    expect(page.get_by_text(f"a whole number from 1 to {MAX_ROUNDS}")).to_be_visible()


def test_the_space_switch_starts_from_the_prefix_alone(people, server):
    page = people()
    page.goto(server.url + "/play")
    cases = {
        "": False,               # start of a text
        "The cat ": False,       # the space is already there
        "Line one\n": False,
        "well-": False,          # inside a word
        "don’": False,
        "(": False,              # after an opening bracket
        "The cat": True,
        "It ended.": True,
        "a - ": False,
    }
    got = page.evaluate("(cases) => cases.map((c) => window.humanlm.spaceAfter(c))", list(cases))
    assert dict(zip(cases, got)) == cases


def test_a_phone_in_a_room_sees_the_token_split_and_sends_one_space(people, server):
    base = server.url
    host = people()
    code = create_room(host, base, rounds=1)
    phone = people(phone=True)
    join(phone, base, code, "Eve")
    host_action(host, "Start the first round", "answering")
    expect(phone.locator("#s-ask")).to_be_visible()

    box = phone.locator("#guess-input")
    expect(phone.locator("#token-summary")).to_have_text("Your answer will be split into tokens here.")
    _set_switch(phone, False)
    box.type("purple")
    _expect_split(phone, "purple")
    _set_switch(phone, True)  # Alt+S works on the phone page too
    _expect_split(phone, " purple")

    # A space typed at the start while the switch is on is the switch's space, not a second one.
    box.fill("")
    box.type(" purple")
    _expect_split(phone, " purple")
    expect(phone.locator("#space-toggle")).to_have_attribute("aria-pressed", "true")
    phone.locator("#guess-btn").tap()
    expect(phone.locator("#s-my-answer")).to_have_attribute("data-text", " purple")
    expect(host.locator("#answered-n")).to_have_text("1")

    session = db.new_session()
    try:
        room = session.scalar(select(Room).where(Room.code == code))
        [stored] = session.scalars(select(Guess).where(Guess.room_id == room.id)).all()
    finally:
        session.close()
    assert stored.raw_text == " purple"


def test_a_study_in_token_mode_shows_the_split_without_fetching_the_answer(people, server):
    page = people()
    requests: list[Request] = []
    page.on("request", lambda r: requests.append(r))
    slug = _start_study(page, server.url, server.app, "split-1")

    box = page.get_by_label("What comes next?")
    _set_switch(page, True)
    box.type("the")
    _expect_split(page, " the")
    page.keyboard.press("Alt+s")
    _expect_split(page, "the")
    expect(page.locator("#answer-input")).to_have_value("the")

    # With the switch on, a typed leading space is sent once.
    box.fill("")
    _set_switch(page, True)
    box.type(" the")
    _expect_split(page, " the")
    with page.expect_request(lambda r: r.method == "POST" and "/answers" in r.url) as sent:
        box.press("Enter")
    assert json.loads(sent.value.post_data or "{}")["text"] == " the"
    expect(page.locator("#progress-text")).to_have_text("Question 2 of 3")

    # Before the answer was stored the page asked for its question and for token splits of
    # what was typed, nothing else.
    before = requests[: requests.index(sent.value)]
    paths = {r.url.split("?")[0].removeprefix(server.url) for r in before if "/api/" in r.url}
    assert paths == {f"/api/s/{slug}/current", "/api/tokenize"}
    texts = {unquote(r.url.split("text=", 1)[1]) for r in before if "/api/tokenize" in r.url}
    assert texts and all(" the".startswith(t) or "the".startswith(t) for t in texts), texts


def test_the_solo_game_sends_one_leading_space(people, server):
    page = people()
    page.goto(server.url + "/play")
    expect(page.locator("#guess-input")).to_be_focused()
    _set_switch(page, False)
    page.keyboard.type(" the")  # a leading space turns the switch on
    expect(page.locator("#space-toggle")).to_have_attribute("aria-pressed", "true")
    _expect_split(page, " the")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/play/guesses")) as sent:
        page.keyboard.press("Enter")
    assert json.loads(sent.value.post_data or "{}")["text"] == " the"
    expect(page.locator("#reveal")).to_be_visible()

    # The switch already on, a typed leading space is still one space (issue 11).
    page.locator("#next-btn").click()
    expect(page.locator("#guess-input")).to_be_focused()
    _set_switch(page, True)
    page.keyboard.type(" and")
    _expect_split(page, " and")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/play/guesses")) as sent:
        page.keyboard.press("Enter")
    assert json.loads(sent.value.post_data or "{}")["text"] == " and"
    expect(page.locator("#reveal")).to_be_visible()
