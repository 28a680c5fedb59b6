"""Classroom rooms through real browsers: a host page and students' phones against the live app.

Each browser context is a separate person (its own localStorage, cookies and Socket.IO
connection). The server is the real app on a copy of the scored test database, so every number
on screen comes from the real model's predictions.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import func, select

from webapp.extensions import db
from webapp.game import token_view
from webapp.models import Guess, Room, RoomPlayer

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
WRONG_WORDS = ["purple", "seven"]  # in neither test passage, so never the true token


# ---------------------------------------------------------------------------------- helpers




@pytest.fixture
def people(browser: Browser):
    """Open pages in separate browser contexts; fail the test on any JavaScript error."""
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


def create_room(host: Page, base: str, rounds: int = 2) -> str:
    """Create a room from corpus "tests" through the set-up page; return its join code."""
    host.goto(base + "/rooms/new")
    expect(host.locator("input[name=source][value=corpus]")).to_be_checked()
    host.select_option("#corpus", "tests")
    host.fill("#rounds", str(rounds))
    host.click("#create-btn")
    host.wait_for_url(re.compile(r"/rooms/[A-Z0-9]+/host$"))
    code = host.url.rsplit("/", 2)[-2]
    assert host.evaluate(f"localStorage.getItem('humanlm.host.{code}')"), "host key not stored"
    expect(host.locator("#join-code")).to_have_text(code)
    expect(host.locator("#host")).to_have_attribute("data-screen", "lobby")
    expect(host.locator("#lobby-title")).to_have_text("Waiting for players…")
    return code


def join(student: Page, base: str, code: str, nickname: str) -> None:
    student.goto(f"{base}/join/{code}")
    expect(student.locator("#join-code")).to_have_value(code)
    student.fill("#join-name", nickname)
    student.click("#join-btn")
    expect(student.locator("#wait-title")).to_have_text(f"You're in, {nickname}!")
    expect(student.locator("#me-name")).to_have_text(nickname)


def answer(student: Page, word: str, space: bool | None = None) -> str:
    """Type a guess (optionally setting the leading-space switch) and send it; return the text."""
    expect(student.locator("#s-ask")).to_be_visible()
    toggle = student.locator("#space-toggle")
    if space is not None:
        if (toggle.get_attribute("aria-pressed") == "true") != space:
            toggle.click()
        expect(toggle).to_have_attribute("aria-pressed", "true" if space else "false")
    sent = (" " if toggle.get_attribute("aria-pressed") == "true" else "") + word
    student.fill("#guess-input", word)
    student.click("#guess-btn")
    expect(student.locator("#s-sent")).to_be_visible()
    expect(student.locator("#s-sent-title")).to_have_text("Answer sent ✓")
    expect(student.locator("#s-my-answer")).to_have_attribute("data-text", sent)
    return sent


def host_action(host: Page, label: str, phase: str) -> None:
    button = host.locator("#primary-btn")
    expect(button).to_contain_text(label)
    expect(button).to_be_enabled()
    button.click()
    expect(host.locator("#host")).to_have_attribute("data-phase", phase)


def room_row(code: str) -> tuple[Room, list]:
    """The room and its rounds (a fresh session: the server writes from its own threads)."""
    session = db.new_session()
    try:
        room = session.scalar(select(Room).where(Room.code == code))
        rounds = [(r.index, r.item.token_text) for r in room.rounds]
        return room, rounds
    finally:
        session.close()


def guesses_of(code: str) -> dict[str, Guess]:
    """Stored guesses of the room by nickname."""
    session = db.new_session()
    try:
        rows = session.execute(
            select(RoomPlayer.nickname, Guess)
            .join(Room, Room.id == RoomPlayer.room_id)
            .join(Guess, (Guess.player_id == RoomPlayer.player_id) & (Guess.room_id == Room.id))
            .where(Room.code == code)
        ).all()
        return {nickname: guess for nickname, guess in rows}
    finally:
        session.close()


# ------------------------------------------------------------------------------------ tests


def test_a_host_and_three_phones_play_a_round(people, live_server, tokenizer):
    base = live_server.url
    host = people()
    code = create_room(host, base, rounds=2)
    # The QR code of the join URL is a real image.
    qr = host.locator("#join-qr")
    expect(qr).to_have_attribute("src", f"/rooms/{code}/qr.svg")
    host.wait_for_function("document.getElementById('join-qr').naturalWidth > 0")

    names = ["Ana", "Ben", "Caro"]
    phones = {name: people(phone=True) for name in names}
    for name, phone in phones.items():
        join(phone, base, code, name)
    expect(host.locator("#players-lobby .player__name")).to_have_text(names)
    expect(host.locator("#player-count")).to_have_text("3")

    host_action(host, "Start the first round", "answering")
    expect(host.locator("#round-label")).to_have_text("Round 1 of 2")
    host_text = host.locator("#prefix .prefix__text").inner_text()
    for phone in phones.values():
        expect(phone.locator("#student")).to_have_attribute("data-screen", "round")
        expect(phone.locator("#s-round-label")).to_have_text("Round 1 of 2")
        assert phone.locator("#s-prefix .prefix__text").inner_text() == host_text

    # Ana types the true token (so one phone is right), Ben and Caro two different wrong words.
    _, rounds = room_row(code)
    target = dict(rounds)[0]
    typeable = "\n" not in target and "\t" not in target
    sent = {
        "Ana": answer(phones["Ana"], target.lstrip(" ") if typeable else "the",
                      space=target.startswith(" ") if typeable else None),
        "Ben": answer(phones["Ben"], WRONG_WORDS[0]),
        "Caro": answer(phones["Caro"], WRONG_WORDS[1]),
    }

    # The host's live histogram shows the three answers (as first tokens) with their counts.
    expect(host.locator("#answered-n")).to_have_text("3")
    expect(host.locator("#answered-total")).to_have_text("3")
    stored = guesses_of(code)
    assert {n: g.raw_text for n, g in stored.items()} == sent
    expected = Counter(token_view(g.first_token_id, tokenizer)["text"] for g in stored.values())
    rows = host.locator("#histogram .hbar:not(.hbar--other)")
    expect(rows).to_have_count(len(expected))
    shown = Counter()
    for i in range(rows.count()):
        shown[rows.nth(i).get_attribute("data-text")] += int(rows.nth(i).get_attribute("data-count"))
    assert shown == expected
    for word in WRONG_WORDS:
        expect(host.locator("#histogram")).to_contain_text(word[:3])

    # Keyboard: Space closes the answers (the page's shortcut, not a focused button).
    host.evaluate("document.activeElement && document.activeElement.blur()")
    host.keyboard.press("Space")
    expect(host.locator("#host")).to_have_attribute("data-phase", "locked")
    expect(host.locator("#round-ask")).to_have_text("Answers are closed")
    for phone in phones.values():
        expect(phone.locator("#s-sent-title")).to_have_text("Answers are closed")

    host_action(host, "Reveal the answer", "reveal")
    expect(host.locator("#target-big .chip")).to_have_attribute("data-text", target)
    expect(host.locator("#compare .cbar--target")).to_have_count(1)
    expect(host.locator("#compare .cbar--target")).to_have_attribute("data-text", target)
    expect(host.locator(".legend").first).to_contain_text("Class")
    expect(host.locator(".legend").first).to_contain_text("Model")
    expect(host.locator("#leaderboard-body tr")).to_have_count(3)
    for name in names:
        expect(host.locator("#leaderboard-body")).to_contain_text(name)
    n_correct = sum(g.is_correct for g in stored.values())
    expect(host.locator("#reveal-stats")).to_contain_text(f"{n_correct} of 3 correct")
    expect(host.locator(".reveal .guess-item")).to_have_count(
        len(expected))

    # Each phone shows its own answer and its own verdict.
    for name, phone in phones.items():
        guess = stored[name]
        expect(phone.locator("#feedback")).to_be_visible()
        expect(phone.locator("#fb-your-chip")).to_have_attribute("data-text", sent[name])
        expect(phone.locator("#fb-target-chip")).to_have_attribute("data-text", target)
        expect(phone.locator("#fb-title")).to_have_text("Correct!" if guess.is_correct else "Not quite")
        expect(phone.locator("#fb-mark")).to_have_text("✓" if guess.is_correct else "✗")
        expect(phone.locator("#fb-points")).to_have_text(re.compile(r"^\+\d+$"))
        expect(phone.locator("#fb-rank-label")).to_have_text("rank of 3")
    if typeable:
        assert stored["Ana"].is_correct
        expect(phones["Ana"].locator("#fb-title")).to_have_text("Correct!")
    assert not stored["Ben"].is_correct and not stored["Caro"].is_correct

    # Finish early: the summary slide on the projector, the totals on the phones.
    expect(host.locator("#primary-btn")).to_contain_text("Next round")
    host.click("#finish-btn")
    expect(host.locator("#host")).to_have_attribute("data-screen", "finished")
    expect(host.locator("#summary-tiles")).to_contain_text("Class accuracy")
    expect(host.locator("#summary-tiles")).to_contain_text("Model accuracy")
    expect(host.locator("#summary-rounds .rbar")).to_have_count(1)
    expect(host.locator("#final-leaderboard-body tr")).to_have_count(3)
    for name, phone in phones.items():
        expect(phone.locator("#end-title")).to_have_text(f"Thanks for playing, {name}!")
        expect(phone.locator("#end-rank-label")).to_have_text("rank of 3")


def test_a_reloaded_phone_keeps_its_player_and_its_answer(people, live_server):
    base = live_server.url
    host = people()
    code = create_room(host, base, rounds=1)
    phone = people(phone=True)
    join(phone, base, code, "Dana")
    token = phone.evaluate(f"localStorage.getItem('humanlm.player.{code}')")
    assert token
    host_action(host, "Start the first round", "answering")
    sent = answer(phone, WRONG_WORDS[0])
    key = phone.evaluate(f"sessionStorage.getItem('humanlm.guesskey.{code}.0')")
    assert key and 8 <= len(key) <= 64

    phone.reload()
    expect(phone.locator("#student")).to_have_attribute("data-screen", "round")
    expect(phone.locator("#s-sent")).to_be_visible()
    expect(phone.locator("#s-ask")).to_be_hidden()
    expect(phone.locator("#s-my-answer")).to_have_attribute("data-text", sent)
    expect(phone.locator("#me-name")).to_have_text("Dana")
    expect(phone.locator("#join-error")).to_be_hidden()
    assert phone.evaluate(f"localStorage.getItem('humanlm.player.{code}')") == token
    # Still one player with one answer: the reload rejoined, it did not join again.
    expect(host.locator("#player-count")).to_have_text("1")
    expect(host.locator("#answered-n")).to_have_text("1")
    session = db.new_session()
    try:
        room = session.scalar(select(Room).where(Room.code == code))
        n_seats = session.scalar(select(func.count()).where(RoomPlayer.room_id == room.id))
        n_guesses = session.scalar(select(func.count()).where(Guess.room_id == room.id))
    finally:
        session.close()
    assert (n_seats, n_guesses) == (1, 1)

    # After the reveal a reload shows the same feedback.
    host_action(host, "Close answers", "locked")
    host_action(host, "Reveal the answer", "reveal")
    expect(phone.locator("#fb-your-chip")).to_have_attribute("data-text", sent)
    phone.reload()
    expect(phone.locator("#feedback")).to_be_visible()
    expect(phone.locator("#fb-your-chip")).to_have_attribute("data-text", sent)
    expect(phone.locator("#fb-title")).to_have_text("Not quite")


def test_a_reloaded_host_page_shows_the_same_room(people, live_server):
    base = live_server.url
    host = people()
    code = create_room(host, base, rounds=1)
    phone = people(phone=True)
    join(phone, base, code, "Eli")

    host.reload()
    expect(host.locator("#host")).to_have_attribute("data-screen", "lobby")
    expect(host.locator("#players-lobby .player__name")).to_have_text(["Eli"])

    host_action(host, "Start the first round", "answering")
    answer(phone, WRONG_WORDS[1])
    expect(host.locator("#answered-n")).to_have_text("1")
    # H hides the live answers; the setting is the room's, so it survives the reload.
    host.evaluate("document.activeElement && document.activeElement.blur()")
    host.keyboard.press("h")
    expect(host.locator("#histo-toggle")).to_have_attribute("aria-pressed", "false")
    expect(host.locator("#histo")).to_be_hidden()
    expect(host.locator("#histo-hidden")).to_be_visible()
    host.reload()
    expect(host.locator("#host")).to_have_attribute("data-phase", "answering")
    expect(host.locator("#answered-n")).to_have_text("1")
    expect(host.locator("#histo-hidden")).to_be_visible()
    host.click("#histo-toggle")
    expect(host.locator("#histogram .hbar")).to_have_count(1)
    expect(host.locator("#primary-btn")).to_contain_text("Close answers")

    host_action(host, "Close answers", "locked")
    host_action(host, "Reveal the answer", "reveal")
    target = host.locator("#target-big .chip").get_attribute("data-text")
    host.reload()
    expect(host.locator("#host")).to_have_attribute("data-screen", "reveal")
    expect(host.locator("#target-big .chip")).to_have_attribute("data-text", target)
    expect(host.locator("#leaderboard-body")).to_contain_text("Eli")
    expect(host.locator("#round-label")).to_have_text("Round 1 of 1")
    host.keyboard.press("l")
    expect(host.locator("#leader-hidden")).to_be_visible()
    expect(host.locator("#leaderboard")).to_be_hidden()
    # The last round: the primary action is the summary.
    expect(host.locator("#primary-btn")).to_contain_text("Show the summary")


def test_host_removes_a_player_and_names_stay_plain_text(people, live_server):
    base = live_server.url
    host = people()
    code = create_room(host, base, rounds=1)
    phone = people(phone=True)
    join(phone, base, code, "<b>Fox</b>")
    name = host.locator("#players-lobby .player__name")
    expect(name).to_have_text("<b>Fox</b>")
    expect(host.locator("#players-lobby b")).to_have_count(0)

    host.get_by_role("button", name="Remove <b>Fox</b>").click()
    host.click("#remove-confirm")  # removing asks first
    expect(host.locator("#players-lobby .player")).to_have_count(0)
    expect(phone.locator("#student")).to_have_attribute("data-screen", "removed")
    expect(phone.locator("#removed-text")).to_contain_text("removed")
    assert phone.evaluate(f"localStorage.getItem('humanlm.player.{code}')") is None
    phone.click("#rejoin-btn")
    expect(phone.locator("#join-form")).to_be_visible()


def test_host_locks_the_room_with_j_and_a_returning_phone_still_gets_in(people, live_server):
    base = live_server.url
    host = people()
    code = create_room(host, base, rounds=1)
    phone = people(phone=True)
    join(phone, base, code, "Ivy")
    expect(host.locator("#lock-toggle")).to_have_attribute("aria-pressed", "false")
    expect(host.locator("#joinrail-locked")).to_be_hidden()

    host.evaluate("document.activeElement && document.activeElement.blur()")
    host.keyboard.press("j")
    expect(host.locator("#lock-toggle")).to_have_attribute("aria-pressed", "true")
    expect(host.locator("#joinrail-locked")).to_be_visible()
    expect(host.locator("#host")).to_have_attribute("data-joins-locked", "true")

    late = people(phone=True)
    late.goto(f"{base}/join/{code}")
    late.fill("#join-name", "Late")
    late.click("#join-btn")
    expect(late.locator("#join-error")).to_contain_text("locked")
    expect(late.locator("#join-name")).not_to_have_attribute("aria-invalid", "true")

    phone.reload()  # a phone already in the room gets its seat back
    expect(phone.locator("#wait-title")).to_have_text("You're in, Ivy!")
    host.reload()  # the lock is the room's: a reloaded projector shows it
    expect(host.locator("#lock-toggle")).to_have_attribute("aria-pressed", "true")
    host.click("#lock-toggle")
    expect(host.locator("#joinrail-locked")).to_be_hidden()
    late.click("#join-btn")
    expect(late.locator("#wait-title")).to_have_text("You're in, Late!")
    expect(host.locator("#players-lobby .player__name")).to_have_text(["Ivy", "Late"])


def test_host_page_without_the_host_key_and_setup_errors(people, live_server):
    base = live_server.url
    host = people()
    code = create_room(host, base, rounds=1)

    stranger = people()
    stranger.goto(f"{base}/rooms/{code}/host")
    expect(stranger.locator("#nothost-title")).to_have_text(f"This browser is not the host of room {code}")
    expect(stranger.locator("#controls")).to_be_hidden()

    # A 4xx from POST /api/rooms is shown next to the form, and nothing navigates away.
    stranger.goto(base + "/rooms/new")
    stranger.check("input[name=source][value=prompts]")
    expect(stranger.locator("#panel-prompts")).to_be_visible()
    expect(stranger.locator("#panel-corpus")).to_be_hidden()
    stranger.fill("#prompts", "The capital | of France | Paris")
    stranger.click("#create-btn")
    expect(stranger.locator("#form-error")).to_be_visible()
    expect(stranger.locator("#form-error-message")).to_contain_text("more than one |")
    assert stranger.url.endswith("/rooms/new")

    # A wrong code on the join page is explained inline.
    stranger.goto(base + "/join")
    stranger.fill("#join-code", "zzzzz")
    expect(stranger.locator("#join-code")).to_have_value("ZZZZZ")
    stranger.fill("#join-name", "Gus")
    stranger.click("#join-btn")
    expect(stranger.locator("#join-error")).to_be_visible()
    expect(stranger.locator("#student")).to_have_attribute("data-screen", "join")
