"""A day in a classroom, through real browsers: phones join over the network on the first try,
the reveal fits the projectors schools have, phones say what each number is, and the host's
small tools (removing a player, the Players menu, error pages, the join form) behave.

Every page is watched for JavaScript errors and Content-Security-Policy violations. The server is
the real app on a copy of the scored test database (the real model's predictions).
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select
from support import LiveServer

from webapp.rooms import network

WRONG_WORD = "purple"  # in neither test passage, so never the true token




def create_room(host: Page, base: str, rounds: int = 1, answer_mode: str | None = None) -> str:
    """Create a room from corpus "tests" on the set-up page (students answering in
    `answer_mode` when given: pairwise, distribution); return its join code."""
    host.goto(base + "/rooms/new")
    host.select_option("#corpus", "tests")
    host.fill("#rounds", str(rounds))
    if answer_mode is not None:
        host.check(f"input[name=answer_mode][value={answer_mode}]")
    host.click("#create-btn")
    host.wait_for_url(re.compile(r"/rooms/[A-Z0-9]+/host$"))
    expect(host.locator("#host")).to_have_attribute("data-screen", "lobby")
    return host.url.rsplit("/", 2)[-2]


def join(phone: Page, url: str, nickname: str) -> None:
    phone.goto(url)
    phone.fill("#join-name", nickname)
    phone.click("#join-btn")
    expect(phone.locator("#wait-title")).to_have_text(f"You're in, {nickname}!")


def this_machines_addresses() -> set[str]:
    """Non-loopback IPv4 addresses of this machine, found without humanlm's own code:
    `hostname -I`, else the address of the default route."""
    found: set[str] = set()
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5,
                             check=False).stdout
        found.update(a for a in out.split() if "." in a)
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))
            found.add(probe.getsockname()[0])
    except OSError:
        pass
    return {a for a in found if not network.is_loopback(a) and a != "0.0.0.0"}


# ------------------------------------------------------------------- phones join on first try


def test_join_base_rules():
    """HUMANLM_PUBLIC_URL wins; a network address the teacher used is kept; 127.0.0.1 becomes
    the machine's address when the server listens on the network, else it is marked unreachable
    with the command that fixes it."""
    public = network.join_base("https://lm.school.org/", "127.0.0.1", "http://127.0.0.1:5000/")
    assert public == network.JoinBase("https://lm.school.org", True)
    assert network.join_base(None, "0.0.0.0", "http://10.1.2.3:5000/").url == "http://10.1.2.3:5000"
    local = network.join_base(None, "127.0.0.1", "http://localhost:5000/")
    assert not local.reachable and local.fix == "make class" and "reach localhost" in local.problem
    assert local.fix_cli == "humanlm serve --host 0.0.0.0"
    addresses = network.machine_addresses()
    assert all(not network.is_loopback(a) for a in addresses)
    lan = network.join_base(None, "0.0.0.0", "http://127.0.0.1:5000/")
    if addresses:
        assert lan == network.JoinBase(f"http://{addresses[0]}:5000", True)
    else:
        assert not lan.reachable and lan.fix is None and "no network address" in lan.problem
    assert network.is_loopback("127.0.0.2") and network.is_loopback("[::1]")
    assert not network.is_loopback("192.168.1.20")


def test_a_phone_joins_through_the_machines_network_address(people, scored_app):
    """`make class`: the server listens on 0.0.0.0, the teacher opens 127.0.0.1 on the machine;
    the projector shows the machine's network address, and a phone joins through it."""
    addresses = this_machines_addresses()
    if not addresses:
        pytest.skip("this machine has no non-loopback network address")
    scored_app.config["HOST"] = "0.0.0.0"  # what `humanlm serve` records for the room pages
    server = LiveServer(scored_app, host="0.0.0.0").start()
    try:
        port = server._server.server_port
        local = f"http://127.0.0.1:{port}"
        host = people()
        host.goto(local + "/rooms/new")
        expect(host.locator("#join-warning")).to_have_count(0)
        where = host.locator("#join-where")
        expect(where).to_contain_text("Students will join at http://")
        code = create_room(host, local)

        join_url = host.locator("#host").get_attribute("data-join-url")
        parts = urlsplit(join_url)
        assert parts.hostname in addresses, (join_url, addresses)  # this machine, not loopback
        assert parts.port == port and parts.path == f"/join/{code}"
        expect(where).to_have_count(0)
        expect(host.locator("#join-warning")).to_have_count(0)
        expect(host.locator("#host")).to_have_attribute("data-join-reachable", "true")
        expect(host.locator("#join-url-text")).to_have_text(f"{parts.hostname}:{port}/join")
        # The QR code is exactly that URL.
        import qrcode
        import qrcode.image.svg

        expected = io.BytesIO()
        qrcode.make(join_url, image_factory=qrcode.image.svg.SvgPathImage, border=2).save(expected)
        served = host.request.get(f"{local}/rooms/{code}/qr.svg")
        assert served.ok and served.body() == expected.getvalue()

        phone = people(phone=True)
        join(phone, join_url, "Noor")
        assert urlsplit(phone.url).hostname == parts.hostname
        expect(host.locator("#players-lobby .player__name")).to_have_text(["Noor"])
        host.click("#primary-btn")
        expect(phone.locator("#student")).to_have_attribute("data-screen", "round")
    finally:
        server.stop()


def test_a_server_only_this_computer_reaches_says_so_and_how_to_fix_it(people, live_server):
    """`make run` (127.0.0.1): the set-up page and the projector say phones cannot join, and
    give the command."""
    host = people()
    host.goto(live_server.url + "/rooms/new")
    warning = host.locator("#join-warning")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("The server listens on 127.0.0.1, an address only this computer can open")
    expect(warning.locator("code").first).to_have_text("make class")
    expect(warning).to_contain_text("humanlm serve --host 0.0.0.0")
    create_room(host, live_server.url)
    expect(host.locator("#host")).to_have_attribute("data-join-reachable", "false")
    rail = host.locator("#join-warning")
    expect(rail).to_be_visible()
    expect(rail).to_contain_text("Phones cannot join yet")
    expect(rail.locator("code").first).to_have_text("make class")


def test_a_computer_without_a_network_address_says_so_on_both_pages(people, scored_app, monkeypatch):
    """`make class` (0.0.0.0) on a laptop that is on no network: no join URL phones could open,
    so the set-up page and the projector say why and what to do (whatever this machine has)."""
    monkeypatch.setattr(network, "machine_addresses", list)
    scored_app.config["HOST"] = "0.0.0.0"
    server = LiveServer(scored_app).start()
    try:
        host = people()
        host.goto(server.url + "/rooms/new")
        warning = host.locator("#join-warning")
        expect(warning).to_be_visible()
        expect(warning).to_contain_text("This computer has no network address, so phones cannot reach 127.0.0.1.")
        expect(warning).to_contain_text("Connect it to the classroom's Wi-Fi or network, then reload this page.")
        expect(warning.locator("code")).to_have_count(0)  # no command would help: no false fix
        create_room(host, server.url)
        expect(host.locator("#host")).to_have_attribute("data-join-reachable", "false")
        rail = host.locator("#join-warning")
        expect(rail).to_contain_text("Phones cannot join yet")
        expect(rail).to_contain_text("This computer has no network address")
    finally:
        server.stop()


# --------------------------------------------------------------------------------- error pages


def test_unknown_rooms_and_pages_get_a_styled_error_page(people, scored_app, live_server):
    @scored_app.get("/__boom")  # a page that fails, to see the 500 page (no request came yet)
    def boom():
        raise RuntimeError("boom")

    base = live_server.url
    page = people()
    response = page.goto(base + "/rooms/ZZZZZ/host")
    assert response.status == 404
    expect(page.locator("#error-title")).to_have_text("This room does not exist")
    expect(page.locator("#error-message")).to_have_text("There is no room 'ZZZZZ'.")
    expect(page.locator(".site-header .brand")).to_be_visible()  # the site's own page and style
    assert page.locator(".error-page").evaluate("e => getComputedStyle(e).borderTopWidth") == "6px"
    expect(page.get_by_role("link", name="Join a room")).to_have_attribute("href", "/join")
    expect(page.get_by_role("link", name="Host a room")).to_have_attribute("href", "/rooms/new")

    response = page.goto(base + "/no/such/page")
    assert response.status == 404
    expect(page.locator("#error-title")).to_have_text("This page does not exist")
    expect(page.get_by_role("link", name="Home", exact=True)).to_be_visible()

    response = page.goto(base + "/__boom")
    assert response.status == 500
    expect(page.locator("#error-title")).to_have_text("Something went wrong on the server")
    expect(page.locator("#error-message")).to_contain_text("nothing of this request was stored")

    posted = page.request.post(base + "/join", fail_on_status_code=False)
    assert posted.status == 405 and "GET" in posted.headers["allow"]
    assert "This address does not take that request" in posted.text()
    assert "Not Found" not in page.content()
    # API addresses keep answering JSON.
    api = page.request.get(base + "/api/no-such-endpoint", fail_on_status_code=False)
    assert api.status == 404 and "error" in api.json()
    api = page.request.get(base + "/api/rooms/ZZZZZ", fail_on_status_code=False)
    assert api.status == 404 and api.json()["error"] == "there is no room 'ZZZZZ'"


# ----------------------------------------------------------------- phones say what each number is


def round_numbers(code: str):
    """The open round's target, the model's prediction, and a typeable token of its top-k
    that is not the target (the model's best other guess)."""
    from webapp.extensions import db
    from webapp.game import prediction_for
    from webapp.models import Room

    session = db.new_session()
    try:
        room = session.scalar(select(Room).where(Room.code == code))
        rnd = next(r for r in room.rounds if r.index == room.round_index)
        prediction = prediction_for(session, rnd.item_id, room.model_id)
        target = rnd.item.token_text
        other = next(t for t in prediction.top_k if t[2] != target and not t[3]
                     and re.fullmatch(r" ?[A-Za-z]+", t[2]))
        return target, prediction.target_logprob, prediction.target_rank, other, prediction.top_k
    finally:
        session.close()


def send(phone: Page, text: str) -> None:
    toggle = phone.locator("#space-toggle")
    if (toggle.get_attribute("aria-pressed") == "true") != text.startswith(" "):
        toggle.click()
    phone.fill("#guess-input", text.lstrip(" "))
    phone.click("#guess-btn")
    expect(phone.locator("#s-sent")).to_be_visible()


def test_phones_name_each_probability_and_say_why_a_wrong_answer_scored(people, live_server):
    import math

    base = live_server.url
    host = people()
    code = create_room(host, base)
    phones = {name: people(phone=True) for name in ("Ana", "Ben", "Caro")}
    for name, phone in phones.items():
        join(phone, f"{base}/join/{code}", name)
    host.click("#primary-btn")  # start
    expect(host.locator("#host")).to_have_attribute("data-phase", "answering")
    target, target_logprob, target_rank, other, top_k = round_numbers(code)
    if "\n" in target or not target.strip():
        pytest.skip(f"the round's target {target!r} cannot be typed")
    send(phones["Ana"], target)
    send(phones["Ben"], other[2])  # wrong, but the model's best other guess: a bonus
    send(phones["Caro"], WRONG_WORD)
    host.click("#primary-btn")  # close answers
    expect(host.locator("#host")).to_have_attribute("data-phase", "locked")
    host.click("#primary-btn")  # reveal
    expect(host.locator("#host")).to_have_attribute("data-screen", "reveal")

    target_pct = phones["Ana"].evaluate("p => window.humanlm.pct(p)", math.exp(target_logprob))
    target_text = f"{target_pct} (rank {target_rank:,})"

    ana = phones["Ana"]
    expect(ana.locator("#fb-title")).to_have_text("Correct!")
    expect(ana.locator("#fb-model-row")).to_be_hidden()  # the answer is the true token: one number
    expect(ana.locator("#fb-target-prob-label")).to_have_text("The model gave it (your answer)")
    expect(ana.locator("#fb-target-prob")).to_have_text(target_text)
    expect(ana.locator("#fb-why")).to_contain_text("100 for the true token")

    ben = phones["Ben"]
    expect(ben.locator("#fb-title")).to_have_text("Not quite")
    rank = next(i for i, t in enumerate(top_k, 1) if t[0] == other[0])
    other_pct = ben.evaluate("p => window.humanlm.pct(p)", math.exp(other[1]))
    expect(ben.locator("#fb-model-label")).to_have_text("The model gave your answer")
    expect(ben.locator("#fb-model")).to_have_text(f"{other_pct} (rank {rank})")
    expect(ben.locator("#fb-target-prob-label")).to_have_text("The model gave the next token")
    expect(ben.locator("#fb-target-prob")).to_have_text(target_text)
    points = int(ben.locator("#fb-points").inner_text().lstrip("+"))
    assert points > 0
    verdict = "likely" if math.exp(other[1]) >= 0.10 else "plausible"
    expect(ben.locator("#fb-why")).to_have_text(
        f"Not the true token, but +{points}: the model found your answer {verdict} ({other_pct}).")

    caro = phones["Caro"]
    expect(caro.locator("#fb-points")).to_have_text("+0")
    expect(caro.locator("#fb-model")).to_contain_text("not in its top 64")
    expect(caro.locator("#fb-why")).to_have_text(
        "No points: the model found your answer unlikely (not in its top 64).")


# ------------------------------------------------------------- the reveal fits every projector

PROJECTORS = [(1024, 768), (1280, 720), (1366, 768), (1920, 1080)]
# What the class reads at the reveal: each must lie inside the screen, cut off by nothing.
KEY_ELEMENTS = {
    "chart": "#compare-panel",
    "chart row": "#compare .cbar",
    "chart label": "#compare .chip--cbar",
    "chart value": "#compare .cbar__val",
    "legend": "#compare-panel .legend",
    "chart note": "#compare-note",
    "true token": ".reveal-target",
    "true token chip": "#target-big .chip",
    "reveal stats": "#reveal-stats .stat-line",
    "text": "#reveal-prefix",
    "leaderboard": "#leaderboard",
    "leaderboard cell": "#leaderboard th, #leaderboard td",
    "guesses": "#guesses-panel .guesses__row",
    "join URL": "#join-url-text",
    "join code": "#join-code",
    "QR code": "#join-qr",
    "next button": "#primary-btn",
}
# Read from the back of the room: at least 28 px on a 1920x1080 projector.
READ_FROM_THE_BACK = [
    "#compare .chip--cbar", "#compare .cbar__val", "#compare-panel .legend__item",
    "#compare-title", "#leader-title", "#leaderboard th", "#leaderboard td",
    ".guesses__head", "#guesses-panel .chip", "#reveal-stats .stat-line",
]
LAYOUT_PROBLEMS = """([keys, readable, minPx]) => {
  const W = window.innerWidth, H = window.innerHeight, problems = [];
  const page = document.scrollingElement;
  if (page.scrollHeight > page.clientHeight || page.scrollWidth > page.clientWidth) {
    problems.push(`the page scrolls: ${page.scrollWidth}x${page.scrollHeight} in ${W}x${H}`);
  }
  const screen = document.querySelector('.screen[data-for="reveal"]');
  if (screen.scrollHeight > screen.clientHeight + 1) problems.push('the reveal scrolls');
  for (const [name, selector] of Object.entries(keys)) {
    const found = [...document.querySelectorAll(selector)];
    if (!found.length) problems.push(`${name}: not on the page`);
    found.forEach((e, i) => {
      const r = e.getBoundingClientRect();
      const at = `${name} #${i} (${Math.round(r.left)},${Math.round(r.top)})-(${Math.round(r.right)},${Math.round(r.bottom)})`;
      if (!r.width || !r.height) problems.push(`${at} is not shown`);
      if (r.left < -0.5 || r.top < -0.5 || r.right > W + 0.5 || r.bottom > H + 0.5) {
        problems.push(`${at} is outside the ${W}x${H} screen`);
      }
      for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
        const style = getComputedStyle(a);
        if (style.overflowX === 'visible' && style.overflowY === 'visible') continue;
        const box = a.getBoundingClientRect();
        if (r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5 || r.left < box.left - 0.5
            || r.right > box.right + 0.5) problems.push(`${at} is cut off by .${a.className}`);
      }
    });
  }
  for (const e of document.querySelectorAll('#compare .cbar__val, #leaderboard th, #leaderboard td')) {
    if (e.scrollWidth > e.clientWidth + 1) problems.push(`"${e.textContent}" does not fit its box`);
  }
  if (minPx) {
    for (const selector of readable) {
      for (const e of document.querySelectorAll(selector)) {
        const px = parseFloat(getComputedStyle(e).fontSize);
        if (px < minPx) problems.push(`${selector} "${e.textContent.trim()}" is ${px}px`);
      }
    }
  }
  return problems;
}"""
SHOTS = os.environ.get("HUMANLM_SCREENSHOTS")  # a folder: the browser tests also take docs' screenshots
# No animation still running (a blinking caret runs for ever and does not count).
SETTLED = """() => !document.getAnimations().some((a) => a.playState === 'running'
    && a.effect && a.effect.getComputedTiming().iterations !== Infinity)"""


def shot(page: Page, name: str) -> None:
    """A screenshot for docs/screenshots when HUMANLM_SCREENSHOTS names a folder."""
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.wait_for_function(SETTLED)
        page.screenshot(path=str(Path(SHOTS) / name))


def layout_problems_at(host: Page, size: tuple[int, int], keys: dict[str, str],
                       readable: list[str] | None = None, min_px: float = 0) -> list[str]:
    """Resize to a projector's size, let the page settle, and list what LAYOUT_PROBLEMS finds."""
    host.set_viewport_size({"width": size[0], "height": size[1]})
    host.wait_for_timeout(300)  # the page fits the screen again after a resize
    host.wait_for_function(SETTLED)
    return host.evaluate(LAYOUT_PROBLEMS, [keys, readable or [], min_px])


def test_the_reveal_fits_the_projectors_classes_have(people, live_server):
    """At 1024x768, 1280x720, 1366x768 and 1920x1080 nothing of the reveal scrolls or is cut
    off, and what the class reads from the back is at least 28 px at 1920x1080."""
    base = live_server.url
    host = people()
    code = create_room(host, base)
    names = ["Ana", "Ben", "Caro", "Dev", "Maximilian-Alexander"]  # the longest name allowed
    phones = {name: people(phone=True) for name in names}
    for name, phone in phones.items():
        join(phone, f"{base}/join/{code}", name)
    host.click("#primary-btn")  # start
    expect(host.locator("#host")).to_have_attribute("data-phase", "answering")
    target, *_rest, top_k = round_numbers(code)
    others = [t[2] for t in top_k if t[2] != target and not t[3] and re.fullmatch(r" ?[A-Za-z]+", t[2])]
    typed = [target if target.strip() and "\n" not in target else others[2], others[0], others[1], WRONG_WORD]
    for phone, text in zip(phones.values(), typed):
        send(phone, text)
    phones["Maximilian-Alexander"].click("#skip-btn")
    expect(host.locator("#answered-n")).to_have_text("5")
    host.click("#primary-btn")  # close answers
    expect(host.locator("#host")).to_have_attribute("data-phase", "locked")
    host.click("#primary-btn")  # reveal
    expect(host.locator("#host")).to_have_attribute("data-screen", "reveal")
    expect(host.locator("#leaderboard-body tr")).to_have_count(5)

    for width, height in PROJECTORS:
        min_px = 28 if (width, height) == (1920, 1080) else 0
        problems = layout_problems_at(host, (width, height), KEY_ELEMENTS, READ_FROM_THE_BACK, min_px)
        assert problems == [], f"{width}x{height}: {problems}"
        # The true token's row and at least three rows of the chart are always shown.
        expect(host.locator("#compare .cbar--target")).to_have_count(1)
        assert host.locator("#compare .cbar").count() >= 3
        expect(host.locator("#leaderboard-body")).to_contain_text("Maximilian-Alexander")


# -------------------------------------------------------------------------------- host details


def test_removing_a_player_asks_first_and_the_players_menu_closes(people, live_server):
    base = live_server.url
    host = people()
    code = create_room(host, base)
    phones = {name: people(phone=True) for name in ("Ana", "Ben")}
    for name, phone in phones.items():
        join(phone, f"{base}/join/{code}", name)
    names = host.locator("#players-lobby .player__name")
    expect(names).to_have_text(["Ana", "Ben"])

    dialog = host.locator("#remove-dialog")
    host.get_by_role("button", name="Remove Ana").click()
    expect(dialog).to_be_visible()
    expect(host.locator("#remove-title")).to_have_text("Remove Ana from the room?")
    host.keyboard.press("Escape")  # Esc keeps her
    expect(dialog).to_be_hidden()
    host.get_by_role("button", name="Remove Ana").click()
    host.click("#remove-cancel")  # so does Cancel
    expect(dialog).to_be_hidden()
    expect(names).to_have_text(["Ana", "Ben"])
    expect(phones["Ana"].locator("#student")).to_have_attribute("data-screen", "wait")
    host.get_by_role("button", name="Remove Ana").click()
    host.click("#remove-confirm")
    expect(names).to_have_text(["Ben"])
    expect(phones["Ana"].locator("#student")).to_have_attribute("data-screen", "removed")

    # During a round the players are in the Players menu: it closes on a click outside or Esc.
    host.click("#primary-btn")
    expect(host.locator("#host")).to_have_attribute("data-phase", "answering")
    menu = host.locator("#players-menu")
    summary = menu.locator("summary")
    summary.click()
    expect(menu.locator("#players-menu-list")).to_be_visible()
    host.click("#round-ask")
    expect(menu).not_to_have_attribute("open", "")
    expect(menu.locator("#players-menu-list")).to_be_hidden()
    summary.click()
    expect(menu.locator("#players-menu-list")).to_be_visible()
    host.keyboard.press("Escape")
    expect(menu.locator("#players-menu-list")).to_be_hidden()
    expect(summary).to_be_focused()
    # Removing from the menu asks too; the keys behind the dialog do nothing meanwhile.
    summary.click()
    menu.get_by_role("button", name="Remove Ben").click()
    expect(dialog).to_be_visible()
    host.keyboard.press("h")
    expect(host.locator("#histo-toggle")).to_have_attribute("aria-pressed", "true")
    host.click("#remove-confirm")
    expect(dialog).to_be_hidden()
    expect(phones["Ben"].locator("#student")).to_have_attribute("data-screen", "removed")
    expect(host.locator("#player-count")).to_have_text("0")


def test_enter_in_the_code_field_moves_to_the_nickname(people, live_server):
    base = live_server.url
    host = people()
    code = create_room(host, base)
    phone = people(phone=True)
    phone.goto(base + "/join")
    expect(phone.locator("#join-code")).to_be_focused()
    phone.locator("#join-code").press_sequentially(code.lower())
    phone.keyboard.press("Enter")
    expect(phone.locator("#join-name")).to_be_focused()
    expect(phone.locator("#join-code")).to_have_value(code)
    expect(phone.locator("#join-error")).to_be_hidden()  # nothing was sent
    phone.keyboard.type("Lea")
    phone.keyboard.press("Enter")  # Enter in the nickname joins
    expect(phone.locator("#wait-title")).to_have_text("You're in, Lea!")
    expect(host.locator("#players-lobby .player__name")).to_have_text(["Lea"])
