"""Screenshots of the classroom-room pages, for docs/screenshots/ (run by hand, not by pytest).

    .venv/bin/python tests/browser/screenshots_rooms.py            # real app, temporary database
    .venv/bin/python tests/browser/screenshots_rooms.py --url URL  # drive a server already running

Without --url it imports a few demo passages into a temporary SQLite file, scores them with the
real model, serves the real app on a free loopback port and plays one room through Debian's
Chromium: a host on a 1920x1080 projector and five students on 390x844 phones. It writes

    rooms-new-desktop.png, rooms-host-answering-1920.png, rooms-host-reveal-1920.png,
    rooms-host-reveal-1366x768.png, rooms-host-reveal-1280x720.png, rooms-host-reveal-1024x768.png,
    rooms-student-question-phone.png, rooms-student-feedback-phone.png,
    rooms-student-feedback-wrong-phone.png (a wrong answer that still earned points)
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "docs" / "screenshots"
CHROMIUM = os.environ.get("HUMANLM_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
PHONE = {"width": 390, "height": 844}
PROJECTOR = {"width": 1920, "height": 1080}
# The projectors schools have, besides 1920x1080: the reveal must fit each without scrolling.
SMALL_PROJECTORS = [(1366, 768), (1280, 720), (1024, 768)]
DESKTOP = {"width": 1280, "height": 800}
DEMO_SLUGS = 4  # passages of the demo corpus to score (about 10 s on 2 cores)
# Five students; the first one is the phone in the screenshots, the last one says "I don't know".
STUDENTS = ["Maya", "Leo", "Ines", "Tom", "Ada"]
FALLBACK_ANSWERS = [" dog", " cat", " dog", " fox"]  # with --url (no database at hand)


def serve_real_app(stack: ExitStack) -> str:
    """Import and score a few demo passages into a temporary database and serve the real app as
    `make class` does: listening on every interface, so the projector shows this machine's network
    address and the phones join through it (the screenshots show a room phones can reach)."""
    sys.path.insert(0, str(REPO))
    from tests import support

    os.environ["HUMANLM_HOST"] = "0.0.0.0"  # read by the app: the server listens on the network
    support.LiveServer = functools.partial(support.LiveServer, host="0.0.0.0")
    url = support.serve_scored_demo(stack, "rooms.db", DEMO_SLUGS)[0]
    return url.replace("0.0.0.0", "127.0.0.1")  # the teacher's browser, on this machine


def first_target(code: str) -> str:
    """The true token of the room's first round (to pick a room that makes a clear picture)."""
    from sqlalchemy import select

    from webapp.extensions import db
    from webapp.models import Room

    session = db.new_session()
    try:
        room = session.scalar(select(Room).where(Room.code == code))
        return next(r for r in room.rounds if r.index == 0).item.token_text
    finally:
        session.close()


def plausible_answers(code: str) -> list[str]:
    """Answers a class might give for the open round: the true token and the model's next picks."""
    from sqlalchemy import select

    from webapp.extensions import db
    from webapp.game import prediction_for
    from webapp.models import Room

    session = db.new_session()
    try:
        room = session.scalar(select(Room).where(Room.code == code))
        rnd = next(r for r in room.rounds if r.index == room.round_index)
        top = [t[2] for t in prediction_for(session, rnd.item_id, room.model_id).top_k if not t[3]]
        target = rnd.item.token_text
    finally:
        session.close()
    picks = [target] + [t for t in top if t != target and t.strip() and "\n" not in t][:3]
    return picks[:1] + picks[1:2] + picks[:1] + picks[2:4]  # two students agree on the truth


def type_token(page, text: str) -> None:
    """Type a token as a student would: the word, with the leading-space switch set to match."""
    toggle = page.locator("#space-toggle")
    if (toggle.get_attribute("aria-pressed") == "true") != text.startswith(" "):
        toggle.click()
    page.fill("#guess-input", text.lstrip(" "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="base URL of a running humanlm server (default: start one)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--corpus", default=None, help="corpus to choose on the set-up page")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import expect, sync_playwright

    with ExitStack() as stack:
        base = args.url.rstrip("/") if args.url else serve_real_app(stack)
        pw = stack.enter_context(sync_playwright())
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        stack.callback(browser.close)

        # ---- set-up page (desktop), then the host view on the same browser (it keeps the host key)
        host_ctx = browser.new_context(viewport=DESKTOP)
        host = host_ctx.new_page()
        host.set_default_timeout(30_000)
        host.goto(base + "/rooms/new")
        if args.corpus:
            host.select_option("#corpus", args.corpus)
        host.fill("#rounds", "3")
        host.check("input[name=timer][value='30']")
        host.locator("#create-btn").focus()
        host.screenshot(path=str(args.out / "rooms-new-desktop.png"), full_page=True)
        print("wrote rooms-new-desktop.png")
        host.check("input[name=timer][value='0']")
        for _attempt in range(12):
            host.click("#create-btn")
            host.wait_for_url("**/rooms/*/host")
            code = host.locator("#join-code").inner_text().strip()
            # Rooms pick random positions; a whole word to guess makes the clearest picture.
            if args.url or re.fullmatch(r" [A-Za-z]{3,}", first_target(code)):
                break
            host.go_back()
        host.set_viewport_size(PROJECTOR)
        expect(host.locator("#host")).to_have_attribute("data-screen", "lobby")

        # ---- students join on phones, at the address the projector shows
        join_url = host.locator("#host").get_attribute("data-join-url")
        phones = []
        for name in STUDENTS:
            ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
            pg = ctx.new_page()
            pg.set_default_timeout(30_000)
            pg.goto(join_url)
            pg.fill("#join-name", name)
            pg.click("#join-btn")
            try:
                expect(pg.locator("#student")).to_have_attribute("data-screen", "wait")
            except AssertionError:
                raise SystemExit(f"{name} could not join: {pg.locator('#join-error').inner_text()!r}") from None
            phones.append(pg)
        expect(host.locator("#player-count")).to_have_text(str(len(STUDENTS)))
        host.mouse.move(0, 0)  # no hover colour on the buttons in the pictures
        if os.environ.get("HUMANLM_SCREENSHOTS_ALL"):
            extra = Path(tempfile.gettempdir()) / "rooms-extra"
            extra.mkdir(exist_ok=True)
            host.wait_for_timeout(500)  # the names' pop-in animation
            host.screenshot(path=str(extra / "host-lobby-1920.png"))
            phones[0].screenshot(path=str(extra / "student-wait-phone.png"))

        host.click("#primary-btn")  # start
        host.mouse.move(0, 0)
        for pg in phones:
            expect(pg.locator("#student")).to_have_attribute("data-screen", "round")
        answers = FALLBACK_ANSWERS if args.url else plausible_answers(code)
        me = phones[0]
        type_token(me, answers[0])
        me.screenshot(path=str(args.out / "rooms-student-question-phone.png"))
        print("wrote rooms-student-question-phone.png")

        for pg, answer in zip(phones[:-1], answers):
            type_token(pg, answer)
            pg.click("#guess-btn")
            expect(pg.locator("#s-sent")).to_be_visible()
        expect(host.locator("#answered-n")).to_have_text(str(len(STUDENTS) - 1))
        host.wait_for_timeout(600)  # let the bars finish growing
        host.screenshot(path=str(args.out / "rooms-host-answering-1920.png"))
        print("wrote rooms-host-answering-1920.png")

        phones[-1].click("#skip-btn")
        expect(host.locator("#answered-n")).to_have_text(str(len(STUDENTS)))
        host.click("#primary-btn")  # lock
        expect(host.locator("#host")).to_have_attribute("data-phase", "locked")
        host.click("#primary-btn")  # reveal
        host.mouse.move(0, 0)
        expect(host.locator("#host")).to_have_attribute("data-screen", "reveal")
        expect(me.locator("#feedback")).to_be_visible()
        host.wait_for_timeout(800)
        host.screenshot(path=str(args.out / "rooms-host-reveal-1920.png"))
        print("wrote rooms-host-reveal-1920.png")
        for width, height in SMALL_PROJECTORS:
            host.set_viewport_size({"width": width, "height": height})
            host.wait_for_timeout(900)  # the bars grow again after a resize
            name = f"rooms-host-reveal-{width}x{height}.png"
            host.screenshot(path=str(args.out / name))
            print(f"wrote {name}")
        host.set_viewport_size(PROJECTOR)
        me.wait_for_timeout(500)
        me.screenshot(path=str(args.out / "rooms-student-feedback-phone.png"))
        print("wrote rooms-student-feedback-phone.png")
        # The second phone answered the model's best other guess: wrong, with points, and why.
        phones[1].screenshot(path=str(args.out / "rooms-student-feedback-wrong-phone.png"))
        print("wrote rooms-student-feedback-wrong-phone.png")

        if os.environ.get("HUMANLM_SCREENSHOTS_ALL"):
            # Extra views for checking the layout by eye (not kept in docs/).
            extra = Path(tempfile.gettempdir()) / "rooms-extra"
            extra.mkdir(exist_ok=True)
            host.set_viewport_size({"width": 1280, "height": 800})
            host.screenshot(path=str(extra / "host-reveal-1280.png"))
            host.set_viewport_size({"width": 700, "height": 900})
            host.screenshot(path=str(extra / "host-reveal-700.png"), full_page=True)
            host.set_viewport_size(PROJECTOR)
            host.click("#finish-btn")
            expect(host.locator("#host")).to_have_attribute("data-screen", "finished")
            host.wait_for_timeout(700)
            host.screenshot(path=str(extra / "host-finished-1920.png"))
            me.screenshot(path=str(extra / "student-finished-phone.png"), full_page=True)
            print(f"wrote extra screenshots to {extra}")


if __name__ == "__main__":
    main()
