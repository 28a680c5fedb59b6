"""Accessibility of every page of the three journeys, checked with axe-core in Chromium.

Each page (and each state of a page: the reveal, the result card, a room's open round ...) is
audited with axe-core's WCAG 2 A/AA and best-practice rules, in the light and the dark colour
scheme: no violation of impact "critical" or "serious" may remain, nor of the landmark rules
(all content in landmarks, one main, distinct names), and exactly one level-one heading is visible. The analysis report must also be in landmarks with labelled table headers.

axe-core is the npm package from static/package.json (`make assets`); the tests read it from
static/node_modules and evaluate it in the page through the DevTools protocol, which the pages'
Content-Security-Policy does not govern, so the CSP checks of the fixtures stay on. The app
never serves it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from research_helpers import PASSWORD, consent, make_researcher, make_study, run_through, study_row
from sqlalchemy import select
from support import add_scored_corpus

from webapp.corpus import RawDocument
from webapp.extensions import db
from webapp.models import Corpus, Document, Item

AXE = Path(__file__).resolve().parents[2] / "static" / "node_modules" / "axe-core" / "axe.min.js"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
BLOCKING = {"critical", "serious"}
LANDMARK_RULES = {"region", "landmark-one-main", "landmark-no-duplicate-main", "landmark-unique"}


# A passage long enough that every text box showing it scrolls on a phone and on the projector
# (every position of corpus "long" has at least 80 tokens before it): a scroll region must be
# reachable with the keyboard, which short test passages never show.
LONG_TEXT = RawDocument(title="Harbour", register="story", text=(
    "The old harbour was quiet in the early morning. Fishing boats rocked gently against the stone "
    "wall, and the gulls circled above the water, calling to each other. Anna walked along the pier "
    "with her father, who carried a basket of nets that needed mending. He told her about the storms "
    "of his childhood, when the waves climbed over the wall and the whole town stayed indoors for "
    "days. She listened and watched the light change on the water. At the end of the pier they sat "
    "down on a wooden bench, opened a flask of tea, and waited for the boats to come back with the "
    "morning catch, as they did every Saturday."
))


@pytest.fixture
def long_passages(scored_app, gemma, tokenizer) -> str:
    """Corpus "long": LONG_TEXT imported and scored by the real model; returns its name."""
    return add_scored_corpus(scored_app, gemma, tokenizer, "long", [LONG_TEXT], min_prefix_tokens=80)


def _scrolls(page: Page, selector: str) -> None:
    """The box really scrolls here, so the audit checks a scroll region (not an empty promise)."""
    sizes = page.locator(selector).evaluate("el => [el.scrollHeight, el.clientHeight]")
    assert sizes[0] > sizes[1] + 4, f"{selector} does not scroll ({sizes}): the scroll check is void"


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run `make assets` (npm ci in static/) first")
    return AXE.read_text(encoding="utf-8")




def _settle(page: Page) -> None:
    """Wait for running CSS transitions and finite animations (a fade-in, a colour scheme's
    change): axe reads colours as they are drawn, so mid-fade they are not the page's."""
    page.evaluate("""() => Promise.race([
        Promise.all(document.getAnimations()
          .filter(a => a.playState === 'running' && a.effect
                       && a.effect.getComputedTiming().iterations !== Infinity)
          .map(a => a.finished.catch(() => null))),
        new Promise(done => setTimeout(done, 3000)),
      ])""")


class Auditor:
    """Runs axe on pages and gathers every finding, so one test reports all its pages at once."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.findings: list[str] = []
        self.audited: list[str] = []

    def __call__(self, page: Page, name: str) -> list[dict]:
        page.wait_for_load_state("load")
        page.evaluate("() => document.fonts && document.fonts.ready")
        _settle(page)
        if not page.evaluate("() => typeof window.axe === 'object'"):
            page.evaluate(f"() => {{ {self.source}\n;window.axe = axe; }}")
        found = []
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            _settle(page)
            # in the dark scheme only the colours change, so only the colour rules run again
            options = ({"runOnly": {"type": "tag", "values": TAGS}} if scheme == "light"
                       else {"runOnly": {"type": "rule", "values": ["color-contrast", "link-in-text-block"]}})
            options["resultTypes"] = ["violations"]  # passes and the rest: one node each (faster)
            result = page.evaluate("options => axe.run(document, options)", options)
            for v in result["violations"]:
                if v["impact"] in BLOCKING or v["id"] in LANDMARK_RULES:
                    targets = [" ".join(map(str, n["target"])) for n in v["nodes"]][:6]
                    summary = (v["nodes"][0].get("failureSummary") or "").replace("\n", " ")[:240]
                    self.findings.append(f"{name} [{scheme}] {v['id']} ({v['impact']}, {len(v['nodes'])} node(s)): "
                                         f"{targets} — {summary}")
                    found.append(v)
        page.emulate_media(color_scheme="light")
        h1 = page.locator("h1:visible")
        if h1.count() != 1:
            self.findings.append(f"{name}: {h1.count()} visible <h1> (want exactly one): "
                                 f"{[h1.nth(i).inner_text() for i in range(h1.count())]}")
        self.audited.append(name)
        return found

    def check(self, expected: list[str]) -> None:
        assert self.audited == expected, self.audited
        assert not self.findings, "accessibility problems:\n" + "\n".join(self.findings)


@pytest.fixture
def audit(axe_source):
    auditor = Auditor(axe_source)
    yield auditor
    if auditor.findings:  # shown with the failure even when a step after the audits failed
        print("accessibility problems so far:\n" + "\n".join(auditor.findings))


# ------------------------------------------------------------------------------- the player


def _guess(page: Page, text: str | None) -> dict:
    with page.expect_response(lambda r: r.url.endswith("/api/play/guesses") and r.request.method == "POST") as info:
        if text is None:
            page.keyboard.press("Escape")
        else:
            page.locator("#guess-input").fill(text)
            page.keyboard.press("Enter")
    expect(page.locator("#reveal")).to_be_visible()
    return info.value.json()


def _next(page: Page) -> None:
    with page.expect_response(lambda r: r.url.endswith("/api/play/next") and r.request.method == "POST"):
        page.locator("#next-btn").click()
    expect(page.locator("#ask")).to_be_visible()


def _finish_round(page: Page) -> None:
    for i in range(10):
        result = _guess(page, [" the", None, " Qzxv"][i % 3])
        if result["round"]["finished"]:
            page.locator("#next-btn").click()
            expect(page.locator("#round-card")).to_be_visible()
            return
        _next(page)
    raise AssertionError("the round did not end within ten answers")


def test_player_pages(people, live_server, audit, long_passages):
    base = live_server.url
    page = people()
    page.goto(base + "/")
    audit(page, "home")

    page.goto(base + "/play?daily=1")  # first: a free round may take the daily passage's positions
    expect(page.locator("#guess-input")).to_be_focused()
    _finish_round(page)
    expect(page.locator("#daily-board")).to_be_visible()
    audit(page, "play: daily board")

    page.goto(base + "/play")
    expect(page.locator("#guess-input")).to_be_focused()
    audit(page, "play: question")
    _guess(page, " Qzxv")  # outside the top-k: the tallest reveal
    audit(page, "play: reveal (wrong)")
    page.locator("#cuts-slot summary").click()  # how other models cut this (issue 13)
    expect(page.locator("#cuts-slot .cut").first).to_be_visible()
    audit(page, "play: reveal, how other models cut this")
    _next(page)
    _guess(page, None)
    audit(page, "play: reveal (skip)")
    _next(page)
    _finish_round(page)
    audit(page, "play: round result card")

    for path, name in (("/no-such-page", "error 404"), ("/rooms/ZZZZZZ/host", "error: unknown room"),
                       ("/join/ZZZZZZ", "join: unknown room")):
        page.goto(base + path)
        audit(page, name)

    phone = people(phone=True)
    phone.goto(f"{base}/play?corpus={long_passages}")
    expect(phone.locator("#guess-input")).to_be_visible()
    _scrolls(phone, "#passage")
    audit(phone, "play on a phone: long passage")
    _guess(phone, " the")
    audit(phone, "play on a phone: reveal")
    phone.locator("#cuts-slot summary").click()
    expect(phone.locator("#cuts-slot .cut").first).to_be_visible()
    audit(phone, "play on a phone: reveal, how other models cut this")

    # the judgement modes (issue 14): a new player, on positions of the test corpus with pairs
    judge = people()
    judge.goto(base + "/play?mode=pairwise")
    expect(judge.locator(".pw__scale")).to_be_visible()
    judge.locator("#mode-help summary").click()  # the players' explanation of the modes, open
    judge.keyboard.press("7")
    audit(judge, "play: which came next? (70% chosen, help open)")
    with judge.expect_response(lambda r: r.url.endswith("/api/play/guesses") and r.request.method == "POST"):
        judge.keyboard.press("Enter")
    expect(judge.locator(".pwr__pair")).to_be_visible()
    audit(judge, "play: which came next? reveal")
    judge.locator("input[name=answer-mode][value=distribution]").check()
    expect(judge.locator(".bet-row__input")).to_be_focused()
    judge.keyboard.type(" the")
    judge.keyboard.press("Tab")
    judge.keyboard.press("ArrowRight")
    judge.get_by_role("button", name="+ Add a guess").click()
    judge.keyboard.type(" the end")
    expect(judge.locator(".bets__note")).to_be_visible()  # two guesses, one first token
    audit(judge, "play: bet on it (two guesses, a note)")
    phone_judge = people(phone=True)
    phone_judge.goto(base + "/play?mode=distribution")
    expect(phone_judge.locator(".bet-row__input")).to_be_visible()
    phone_judge.locator(".bet-row__input").fill(" and")
    phone_judge.locator(".bet-row").first.get_by_role("button", name=re.compile("points more")).click()
    with phone_judge.expect_response(lambda r: r.url.endswith("/api/play/guesses") and r.request.method == "POST"):
        phone_judge.get_by_role("button", name="Place my bets").click()
    expect(phone_judge.locator(".dist__cell").first).to_be_visible()
    audit(phone_judge, "play on a phone: bet on it, reveal")
    audit.check(["home", "play: daily board", "play: question", "play: reveal (wrong)",
                 "play: reveal, how other models cut this", "play: reveal (skip)",
                 "play: round result card", "error 404", "error: unknown room",
                 "join: unknown room", "play on a phone: long passage", "play on a phone: reveal",
                 "play on a phone: reveal, how other models cut this",
                 "play: which came next? (70% chosen, help open)", "play: which came next? reveal",
                 "play: bet on it (two guesses, a note)", "play on a phone: bet on it, reveal"])


# ------------------------------------------------------------------------------ the teacher


def test_teacher_and_student_pages(people, live_server, audit, long_passages):
    base = live_server.url
    host = people()
    host.goto(base + "/rooms/new")
    expect(host.locator("#corpus")).to_be_visible()
    audit(host, "room set-up")
    host.locator("input[name=source][value=prompts]").check()
    expect(host.locator("#prompts")).to_be_visible()
    audit(host, "room set-up: own prompts")
    host.locator("input[name=source][value=corpus]").check()
    host.select_option("#corpus", long_passages)
    host.fill("#rounds", "1")
    host.click("#create-btn")
    host.wait_for_url(re.compile(r"/rooms/[A-Z0-9]+/host$"))
    code = host.url.rsplit("/", 2)[-2]
    expect(host.locator("#host")).to_have_attribute("data-screen", "lobby")
    host.wait_for_function("document.getElementById('join-qr').naturalWidth > 0")
    audit(host, "host: lobby (empty)")

    phone = people(phone=True)
    phone.goto(f"{base}/join")
    audit(phone, "student: join form")
    phone.goto(f"{base}/join/{code}")
    expect(phone.locator("#join-code")).to_have_value(code)
    phone.fill("#join-name", "Ana")
    phone.click("#join-btn")
    expect(phone.locator("#wait-title")).to_have_text("You're in, Ana!")
    audit(phone, "student: waiting")
    expect(host.locator("#player-count")).to_have_text("1")
    audit(host, "host: lobby with a player")

    host.locator("#primary-btn").click()
    expect(host.locator("#host")).to_have_attribute("data-phase", "answering")
    expect(phone.locator("#s-ask")).to_be_visible()
    _scrolls(phone, "#s-prefix")
    audit(phone, "student: question")
    phone.fill("#guess-input", "purple")
    phone.click("#guess-btn")
    expect(phone.locator("#s-sent")).to_be_visible()
    audit(phone, "student: answered")
    expect(host.locator("#answered-n")).to_have_text("1")
    _scrolls(host, "#prefix")
    audit(host, "host: open round")
    host.locator("#players-menu summary").click()
    expect(host.locator("#players-menu-list li")).to_have_count(1)
    audit(host, "host: Players menu open")
    host.keyboard.press("Escape")
    expect(host.locator("#players-menu-list")).to_be_hidden()

    host.locator("#primary-btn").click()  # close answers
    expect(host.locator("#host")).to_have_attribute("data-phase", "locked")
    host.locator("#primary-btn").click()  # reveal
    expect(host.locator("#host")).to_have_attribute("data-phase", "reveal")
    expect(host.locator("#leaderboard-body tr")).to_have_count(1)
    audit(host, "host: reveal")
    host.keyboard.press("t")  # how other models cut this (issue 13), in place of the chart
    expect(host.locator("#cuts-panel .cut").first).to_be_visible()
    audit(host, "host: reveal, how other models cut this (T)")
    host.keyboard.press("t")
    expect(host.locator("#compare-panel")).to_be_visible()
    expect(phone.locator("#feedback")).to_be_visible()
    audit(phone, "student: reveal")

    host.locator("#primary-btn").click()  # the last round: on to the summary slide
    expect(host.locator("#host")).to_have_attribute("data-screen", "finished")
    audit(host, "host: finished")
    expect(phone.locator("#end-title")).to_be_visible()
    audit(phone, "student: game over")
    audit.check(["room set-up", "room set-up: own prompts", "host: lobby (empty)", "student: join form", "student: waiting",
                 "host: lobby with a player", "student: question", "student: answered",
                 "host: open round", "host: Players menu open", "host: reveal",
                 "host: reveal, how other models cut this (T)", "student: reveal", "host: finished", "student: game over"])


# --------------------------------------------------------------------------- the researcher


def test_researcher_and_participant_pages(people, live_server, audit, long_passages, tmp_path):
    app = live_server.app
    base = live_server.url
    make_researcher(app)
    with app.app_context():  # the two latest positions: the longest prefixes, which scroll on a
        # phone whichever of them a participant gets (a prefix of 80 tokens may just fit)
        latest = list(db.session.scalars(
            select(Item.id).join(Document).join(Corpus)
            .where(Corpus.name == long_passages, Item.playable).order_by(Item.position.desc()).limit(2)))
    study_id = make_study(app, corpus=long_passages, items=latest, items_per_participant=2, target_responses=2,
                          completion_code="DONE-7",
                          redirect_url=base + "/?cc={code}",
                          consent_text="We store your answers.\n\nYou can stop at any time.")
    slug = study_row(app, study_id).slug
    for pid in ("p-one", "p-two"):
        participant = app.test_client()
        run_through(participant, slug, consent(participant, slug, PROLIFIC_PID=pid))

    page = people()
    page.goto(base + "/research/login")
    audit(page, "login")
    page.get_by_label("E-mail").fill("ada@example.org")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/research/")
    audit(page, "dashboard")
    page.goto(f"{base}/research/studies/{study_id}")
    expect(page.locator("#live")).to_be_visible()
    audit(page, "study page")
    page.goto(base + "/research/studies/new")
    audit(page, "new study")
    page.get_by_role("button", name=re.compile("Create")).first.click()  # empty: errors shown
    audit(page, "new study: errors")
    page.goto(base + "/research/corpora")
    audit(page, "passages upload")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "Fine."}\n{"text": \n')
    page.locator("input[type=file]").set_input_files(str(bad))
    page.get_by_label("Corpus", exact=True).fill("garden")
    page.get_by_role("button", name="Upload and score").click()
    expect(page.locator(".upload-errors li")).to_have_count(1)
    audit(page, "passages upload: errors")

    report = page.goto(f"{base}/research/studies/{study_id}/report")
    assert report.status == 200
    audit(page, "analysis report")
    headers = page.locator("th")
    assert headers.count() > 0
    unlabelled = page.evaluate(
        "() => [...document.querySelectorAll('th')].filter(th => !th.getAttribute('scope')"
        " && !th.id).map(th => th.textContent.trim())")
    assert unlabelled == [], f"table headers without scope: {unlabelled[:10]}"
    for role in ("main", "banner", "contentinfo"):
        assert page.get_by_role(role).count() >= 1, f"the report has no {role} landmark"

    phone = people(phone=True)
    phone.goto(f"{base}/s/{slug}?PROLIFIC_PID=axe-1")
    audit(phone, "participant: consent")
    phone.get_by_role("button", name="I agree, start the study").click()
    expect(phone.get_by_role("heading", name="What to do")).to_be_visible()
    audit(phone, "participant: instructions")
    phone.get_by_role("link", name="Start").click()
    box = phone.get_by_label("What comes next?")
    expect(box).to_be_visible()
    _scrolls(phone, "#passage")
    audit(phone, "participant: question")
    for _ in range(2):
        box.fill("the")
        phone.get_by_role("button", name="Next").click()
    expect(phone.get_by_role("heading", name="Thank you!")).to_be_visible()
    phone.get_by_role("button", name="Stay on this page").click()
    audit(phone, "participant: end page")
    phone.goto(f"{base}/s/{slug}?PROLIFIC_PID=axe-1")
    expect(phone.get_by_role("heading", name="You have already completed this study")).to_be_visible()
    audit(phone, "participant: already completed")

    # pairwise and distribution studies (issue 14), on positions of the test corpus with pairs
    make_study(app, name="Pairs", slug="pairs-axe", mode="pairwise", show_feedback=True, items_per_participant=1)
    make_study(app, name="Bets", slug="bets-axe", mode="distribution", items_per_participant=1)
    judge = people(phone=True)
    judge.goto(f"{base}/s/pairs-axe?PROLIFIC_PID=axe-2")
    judge.get_by_role("button", name="I agree, start the study").click()
    expect(judge.get_by_role("heading", name="What to do")).to_be_visible()
    audit(judge, "participant: pairwise instructions")
    judge.get_by_role("link", name="Start").click()
    expect(judge.locator(".pw__scale")).to_be_visible()
    judge.locator('.pw__stop[data-value="70"]').click()
    audit(judge, "participant: which came next? (70% chosen)")
    judge.get_by_role("button", name="Answer").click()
    expect(judge.locator("#feedback-judge .pwr__pair")).to_be_visible()
    audit(judge, "participant: which came next? feedback")
    bets = people()
    bets.goto(f"{base}/s/bets-axe?PROLIFIC_PID=axe-3")
    bets.get_by_role("button", name="I agree, start the study").click()
    bets.get_by_role("link", name="Start").click()
    expect(bets.locator(".bet-row__input")).to_be_focused()
    bets.keyboard.type(" the")
    bets.keyboard.press("Tab")
    bets.keyboard.press("ArrowRight")
    audit(bets, "participant: bet on it")
    audit.check(["login", "dashboard", "study page", "new study", "new study: errors", "passages upload",
                 "passages upload: errors", "analysis report", "participant: consent",
                 "participant: instructions", "participant: question", "participant: end page",
                 "participant: already completed", "participant: pairwise instructions",
                 "participant: which came next? (70% chosen)", "participant: which came next? feedback",
                 "participant: bet on it"])
