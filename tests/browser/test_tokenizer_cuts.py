"""How other models cut this (issue 13), through real browsers: after a reveal the solo game
offers, collapsed, the end of the text with the true token as the game's tokenizer, the other
scored models' tokenizers and GPT-4's cl100k_base cut it (asked for only when opened, in every
answer mode, with the keyboard only); the projector shows the same at a token round's reveal
when the host presses T.

Every page is watched for JavaScript errors and Content-Security-Policy violations (`people`).
With HUMANLM_SCREENSHOTS=<dir>, docs/screenshots' play-token-cuts.png and
rooms-host-cuts-1280x720.png are saved there (HUMANLM_SCREENSHOTS_ALL=1: the projector at every
size too, its reveal at 1024x768 with T in the key legend, and a 360 px phone). The positions are drawn at
random, so each run shows another end of the passage.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, Request, Response, expect
from support import add_scored_corpus
from test_classroom_day import LAYOUT_PROBLEMS, PROJECTORS, SHOTS, layout_problems_at, shot

from webapp.corpus import RawDocument
from webapp.extensions import db
from webapp.models import LanguageModel

REFERENCE = "cl100k_base (GPT-4's tokenizer)"
SERVER_MODEL = "Llama 3.1 8B"  # an openai: model without a tiktoken encoding: left out
# Words that Gemma's and GPT-4's tokenizers cut differently (digits, ü, "'s", "sourdough" ...),
# so every position's text shows the point: "a token" depends on the model.
ODD_WORDS = RawDocument(title="Croissants", register="story", text=(
    "The hippopotamus yawned; Grandma's sourdough smelled extraordinary. In 2024, the Zürich café "
    "served 1,234 croissants with homemade strawberry-rhubarb jam."
))




@pytest.fixture
def server_model(live_server):
    """A scored model whose tokens come from its server: the page names it as left out."""
    with live_server.app.app_context():
        db.session.add(LanguageModel(
            key="openai:http://gpu-box:8000/v1#meta-llama/Llama-3.1-8B|k",
            spec="openai:http://gpu-box:8000/v1#meta-llama/Llama-3.1-8B", name=SERVER_MODEL,
            tokenizer="openai-server:meta-llama/Llama-3.1-8B", n_vocab=0, top_k=10,
            temperatures=[1.0], settings={}))
        db.session.commit()
    return SERVER_MODEL


@pytest.fixture
def odd_words(scored_app, gemma, tokenizer) -> str:
    """Corpus "cuts": ODD_WORDS imported and scored by the real model; returns its name."""
    return add_scored_corpus(scored_app, gemma, tokenizer, "cuts", [ODD_WORDS], min_prefix_tokens=6)


def _is_cuts(r: Request | Response) -> bool:
    return "/api/tokenizers?" in r.url


def _is_guess_post(resp: Response) -> bool:
    return resp.url.endswith("/api/play/guesses") and resp.request.method == "POST"


def _is_next_post(resp: Response) -> bool:
    return resp.url.endswith("/api/play/next") and resp.request.method == "POST"


def _sent_text(resp: Response) -> str:
    return parse_qs(urlsplit(resp.url).query, keep_blank_values=True)["text"][0]


def check_rows(page: Page, box: str, reply: dict, target: str, game_model: str | None) -> list[str]:
    """The rows in `box` say what the server's reply says: one per tokenizer in its order, each
    with its name, its count, and chips that spell the text exactly; the chips holding the
    true token are marked. Returns the names."""
    rows = page.locator(f"{box} .cut")
    expect(rows).to_have_count(len(reply["tokenizers"]))
    text = reply["text"]
    assert text.endswith(target), text
    shown = rows.evaluate_all("""rows => rows.map((r) => ({
        name: r.querySelector('.cut__name').textContent,
        tag: r.querySelector('.cut__tag') ? r.querySelector('.cut__tag').textContent : null,
        count: r.querySelector('.cut__count').textContent,
        list: r.querySelector('.cut__tokens').getAttribute('aria-label'),
        chips: [...r.querySelectorAll('.cut__tok')].map((c) => c.dataset.text),
        marked: [...r.querySelectorAll('.cut__tok')].map((c) => c.classList.contains('cut__tok--next')),
    }))""")
    for i, (row, cut) in enumerate(zip(shown, reply["tokenizers"])):
        n = cut["n_tokens"]
        assert row["name"] == cut["name"]
        assert row["tag"] == ("this game" if i == 0 else None)
        assert row["count"] == f"{n} token{'' if n == 1 else 's'}"
        assert len(row["chips"]) == n == len(cut["tokens"]) and row["list"] == f"{cut['name']}: {row['count']}"
        assert row["chips"] == [t["text"] for t in cut["tokens"]]
        assert "".join(row["chips"]) == text  # the chips joined give back the text
        # marked: exactly the chips from the one where the true token starts to the end
        first = next(j for j, m in enumerate(row["marked"]) if m)
        assert all(row["marked"][first:]) and not any(row["marked"][:first])
        assert len("".join(row["chips"][first:])) >= len(target) > len("".join(row["chips"][first + 1:]))
    names = [row["name"] for row in shown]
    if game_model is not None:
        assert names[0] == game_model
    assert REFERENCE in names  # GPT-4's tokenizer, for every class
    assert len(set(names)) == len(names)
    return names


def no_horizontal_scroll(page: Page) -> None:
    sizes = page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]")
    assert sizes[0] <= sizes[1], f"the page scrolls sideways: {sizes}"


# ------------------------------------------------------------------------------- the solo game


def test_the_solo_reveal_shows_the_cuts_when_opened_with_the_keyboard(people, live_server, server_model,
                                                                     odd_words):
    page = people()
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if _is_cuts(r) else None)
    with page.expect_response(_is_next_post) as first:
        page.goto(f"{live_server.url}/play?corpus={odd_words}")
    question = first.value.json()["question"]
    game_model = page.locator("#game").get_attribute("data-model-name")
    expect(page.locator("#guess-input")).to_be_focused()
    page.keyboard.type("the")
    with page.expect_response(_is_guess_post) as info:
        page.keyboard.press("Enter")
    reveal = info.value.json()
    target = reveal["target"]["text"]
    expect(page.locator("#next-btn")).to_be_focused()

    # Collapsed, and nothing asked yet.
    details = page.locator("#cuts-slot details.cuts")
    summary = details.locator("summary")
    expect(summary).to_have_text("How other models cut this")
    expect(details).not_to_have_attribute("open", "")
    expect(details.locator(".cut")).to_have_count(0)
    page.wait_for_timeout(300)
    assert asked == []

    # Keyboard only: Shift+Tab from "Next" to the summary, Enter opens it (and stays on the reveal).
    page.keyboard.press("Shift+Tab")
    expect(summary).to_be_focused()
    with page.expect_response(_is_cuts) as info:
        page.keyboard.press("Enter")
    reply = info.value.json()
    assert info.value.ok, reply
    expect(details).to_have_attribute("open", "")
    expect(page.locator("#game")).to_have_attribute("data-state", "reveal")

    # The text: the end of the prefix (from a word, with the whitespace before it, so the word is
    # cut as in the passage) and the true token, within the server's limit.
    text = _sent_text(info.value)
    full = "".join(question["context"]) + target
    limit = page.evaluate("() => window.humanlm.limits.max_guess_chars")
    assert text == reply["text"] and text.endswith(target) and len(text) <= limit
    assert full.endswith(text) and len(text.split()) <= 9
    start = len(full) - len(text)
    assert start == 0 or (text[:1].isspace() and not full[start - 1].isspace()), (full, text)

    names = check_rows(page, "#cuts-slot", reply, target, game_model)
    assert names == [game_model, REFERENCE]  # the test database: Gemma and cl100k_base
    gemma_cut, gpt4_cut = ([t["text"] for t in cut["tokens"]] for cut in reply["tokenizers"])
    assert gemma_cut != gpt4_cut, text  # the odd words are cut differently
    expect(details.locator(".cuts__left-out")).to_have_text(
        f"{SERVER_MODEL}: its tokens come from its server, so it is not shown here.")
    expect(details.locator(".cuts__lead")).to_contain_text("2 tokenizers")
    shot(page, "play-token-cuts.png")

    # Enter on the summary closes it again; Tab back to "Next"; Enter: the next question.
    page.keyboard.press("Enter")
    expect(details).not_to_have_attribute("open", "")
    page.keyboard.press("Tab")
    expect(page.locator("#next-btn")).to_be_focused()
    with page.expect_response(_is_next_post):
        page.keyboard.press("Enter")
    expect(page.locator("#guess-input")).to_be_focused()
    page.keyboard.press("Escape")  # a skip reveals too: collapsed again, nothing asked
    expect(page.locator("#reveal")).to_be_visible()
    expect(details).to_be_visible()
    expect(details).not_to_have_attribute("open", "")
    page.wait_for_timeout(300)
    assert len(asked) == 1, asked


@pytest.mark.parametrize("mode", ["pairwise", "distribution"])
def test_the_judgement_reveals_offer_the_cuts_too(people, live_server, mode):
    page = people()
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if _is_cuts(r) else None)
    with page.expect_response(_is_next_post):
        page.goto(f"{live_server.url}/play?mode={mode}")
    if mode == "pairwise":
        expect(page.locator(".pw__scale")).to_be_visible()
        page.keyboard.press("7")
    else:
        expect(page.locator(".bet-row__input")).to_be_focused()
        page.keyboard.type(" the")
        expect(page.locator(".bet-row .chip--scored")).to_have_count(1)
        page.keyboard.press("Tab")
        for _ in range(6):
            page.keyboard.press("ArrowRight")
    with page.expect_response(_is_guess_post) as info:
        page.keyboard.press("Enter")
    target = info.value.json()["target"]["text"]
    expect(page.locator("#judge-result")).to_be_visible()
    expect(page.locator("#next-btn")).to_be_focused()
    assert asked == []
    page.keyboard.press("Shift+Tab")
    expect(page.locator("#cuts-slot summary")).to_be_focused()
    with page.expect_response(_is_cuts) as cuts:
        page.keyboard.press(" ")  # Space opens a summary too
    names = check_rows(page, "#cuts-slot", cuts.value.json(), target,
                       page.locator("#game").get_attribute("data-model-name"))
    assert len(names) >= 2
    expect(page.locator("#cuts-slot .cuts__left-out")).to_have_count(0)  # no server model here


def test_the_cuts_fit_a_360_px_phone(people, live_server, server_model):
    phone = people(viewport={"width": 360, "height": 740})
    with phone.expect_response(_is_next_post):
        phone.goto(live_server.url + "/play")
    phone.locator("#guess-input").fill("the")
    with phone.expect_response(_is_guess_post):
        phone.locator("#guess-btn").click()
    summary = phone.locator("#cuts-slot summary")
    summary.scroll_into_view_if_needed()
    with phone.expect_response(_is_cuts):
        summary.click()
    expect(phone.locator("#cuts-slot .cut").first).to_be_visible()
    no_horizontal_scroll(phone)
    if os.environ.get("HUMANLM_SCREENSHOTS_ALL"):
        shot(phone, "play-token-cuts-360.png")
    # every chip inside the card: they wrap, none runs past the edge
    outside = phone.evaluate("""() => {
        const card = document.getElementById('reveal').getBoundingClientRect();
        return [...document.querySelectorAll('#cuts-slot .cut__tok, #cuts-slot .cut__count')]
          .map((c) => c.getBoundingClientRect())
          .filter((r) => r.left < card.left - 0.5 || r.right > card.right + 0.5).length;
    }""")
    assert outside == 0


def test_the_text_to_cut_is_the_end_of_the_sentence(people, live_server):
    page = people()
    page.goto(live_server.url + "/play")
    page.wait_for_function("() => window.humanlm && window.humanlm.cutsText")
    cut = "([p, t, o]) => window.humanlm.cutsText(p, t, o)"
    # the current sentence, with the space before its first word
    assert page.evaluate(cut, ["It was a sunny day. The quick brown fox jumps over the", " lazy", {}]) \
        == " The quick brown fox jumps over the lazy"
    long_one = "one two three four five six seven eight nine ten eleven twelve"
    assert page.evaluate(cut, [long_one, " thirteen", {}]) == " five six seven eight nine ten eleven twelve thirteen"
    # a sentence of fewer than three words keeps the words before it
    assert page.evaluate(cut, ["It was a sunny day. In", " the", {}]) == "It was a sunny day. In the"
    # never longer than the limit, cut at a word
    assert page.evaluate(cut, [long_one, " thirteen", {"maxChars": 23}]) == " eleven twelve thirteen"
    assert page.evaluate(cut, [long_one, " thirteen", {"maxChars": 22}]) == " twelve thirteen"
    assert page.evaluate(cut, ["supercalifragilistic", "s", {"maxChars": 6}]) == "istics"  # no word fits
    assert page.evaluate(cut, ["A\n\nNew paragraph", "s", {"words": 2}]) == "\n\nNew paragraphs"
    assert page.evaluate(cut, ["", "The", {}]) == "The"


# ------------------------------------------------------------------------------ the projector


def create_room(host: Page, server, corpus: str) -> str:
    if SHOTS:  # the screenshot shows a room phones can join (network.py's example address)
        server.app.config["PUBLIC_URL"] = "http://192.168.1.20:5000"
    host.goto(server.url + "/rooms/new")
    host.select_option("#corpus", corpus)
    host.fill("#rounds", "2")
    host.click("#create-btn")
    host.wait_for_url(re.compile(r"/rooms/[A-Z0-9]+/host$"))
    expect(host.locator("#host")).to_have_attribute("data-screen", "lobby")
    return host.url.rsplit("/", 2)[-2]


def test_the_host_presses_t_at_a_reveal_and_the_class_sees_the_cuts(people, live_server, server_model,
                                                                    odd_words):
    base = live_server.url
    host = people(viewport={"width": 1280, "height": 720})
    asked: list[str] = []
    host.on("request", lambda r: asked.append(r.url) if _is_cuts(r) else None)
    code = create_room(host, live_server, odd_words)
    phones = {name: people(phone=True) for name in ("Ana", "Ben")}
    for name, phone in phones.items():
        phone.goto(f"{base}/join/{code}")
        phone.fill("#join-name", name)
        phone.click("#join-btn")
        expect(phone.locator("#wait-title")).to_have_text(f"You're in, {name}!")
    host.click("#primary-btn")  # start
    expect(host.locator("#host")).to_have_attribute("data-phase", "answering")
    # Not offered before the reveal: T does nothing, its key is not in the legend.
    expect(host.locator("#cuts-toggle")).to_be_hidden()
    host.keyboard.press("t")
    expect(host.locator("#cuts-panel")).to_be_hidden()
    for phone, word in zip(phones.values(), (" the", "purple")):
        phone.fill("#guess-input", word.strip())
        phone.click("#guess-btn")
        expect(phone.locator("#s-sent")).to_be_visible()
    host.click("#primary-btn")  # close answers
    expect(host.locator("#host")).to_have_attribute("data-phase", "locked")
    host.click("#primary-btn")  # reveal
    expect(host.locator("#host")).to_have_attribute("data-screen", "reveal")
    target = host.locator("#target-big .chip").get_attribute("data-text")

    # Off by default: the chart is there; the key legend offers T (and is its button).
    expect(host.locator("#compare-panel")).to_be_visible()
    expect(host.locator("#cuts-panel")).to_be_hidden()
    expect(host.locator("#host-shortcuts #cuts-toggle")).to_have_text("T tokenizers")
    expect(host.locator("#cuts-toggle")).to_have_attribute("aria-pressed", "false")
    assert asked == []
    problems = host.evaluate(LAYOUT_PROBLEMS, [{"chart": "#compare-panel", "next button": "#primary-btn",
                                                "key legend": "#host-shortcuts"}, [], 0])
    assert problems == []
    if os.environ.get("HUMANLM_SCREENSHOTS_ALL"):
        host.set_viewport_size({"width": 1024, "height": 768})
        host.wait_for_timeout(300)
        shot(host, "rooms-host-reveal-with-t-1024x768.png")
        host.set_viewport_size({"width": 1280, "height": 720})
        host.wait_for_timeout(300)

    with host.expect_response(_is_cuts) as info:
        host.keyboard.press("t")
    reply = info.value.json()
    panel = host.locator("#cuts-panel")
    expect(panel).to_be_visible()
    expect(host.locator("#cuts-toggle")).to_have_attribute("aria-pressed", "true")
    expect(host.locator("#compare-panel")).to_be_hidden()  # the panel takes the chart's place
    expect(host.locator("#leader-panel")).to_be_hidden()
    names = check_rows(host, "#cuts-panel", reply, target, None)
    assert len(names) >= 2
    expect(panel.locator(".cuts__left-out")).to_contain_text(SERVER_MODEL)

    # Big enough for the back of the room, inside every projector, nothing cut off.
    keys = {"cuts": "#cuts-panel", "cut name": "#cuts-panel .cut__name", "cut count": "#cuts-panel .cut__count",
            "cut chip": "#cuts-panel .cut__tok", "left out": "#cuts-panel .cuts__left-out",
            "true token": ".reveal-target", "text": "#reveal-prefix", "next button": "#primary-btn",
            "join code": "#join-code"}
    readable = ["#cuts-panel .cut__tok", "#cuts-panel .cut__name", "#cuts-panel .cut__count", "#cuts-title"]
    for width, height in PROJECTORS:
        min_px = 28 if (width, height) == (1920, 1080) else 0
        problems = layout_problems_at(host, (width, height), keys, readable, min_px)
        assert problems == [], f"{width}x{height}: {problems}"
        expect(panel).to_be_visible()  # a resize keeps the panel on
        if os.environ.get("HUMANLM_SCREENSHOTS_ALL"):
            shot(host, f"rooms-host-cuts-{width}x{height}.png")
    host.set_viewport_size({"width": 1280, "height": 720})
    host.wait_for_timeout(300)
    shot(host, "rooms-host-cuts-1280x720.png")

    # Six tokenizers (the most the server sends): smaller chips, and still nothing scrolls.
    host.evaluate("""(r) => window.humanlm.renderCuts(document.getElementById('cuts-body'),
        {...r, tokenizers: [0, 1, 2, 3, 4, 5].map((i) => ({...r.tokenizers[i % r.tokenizers.length], name: `Model ${i}`}))},
        {target: r.text.slice(-1)})""", reply)
    expect(panel.locator(".cut")).to_have_count(6)
    for width, height in PROJECTORS:
        problems = layout_problems_at(host, (width, height), keys)
        assert problems == [], f"six tokenizers, {width}x{height}: {problems}"
    host.set_viewport_size({"width": 1280, "height": 720})
    host.wait_for_timeout(300)

    # A click on the legend's T does the same (a mouse works too); T again brings the chart back.
    host.click("#cuts-toggle")
    expect(panel).to_be_hidden()
    expect(host.locator("#compare-panel")).to_be_visible()
    host.keyboard.press("t")
    expect(panel).to_be_visible()
    host.keyboard.press("T")
    expect(panel).to_be_hidden()
    expect(host.locator("#compare .cbar--target")).to_have_count(1)
    assert len(asked) == 1, asked  # the same text is not asked for twice

    # The next round's reveal opens on its chart again.
    host.click("#primary-btn")  # next round
    expect(host.locator("#host")).to_have_attribute("data-phase", "answering")
    expect(host.locator("#cuts-toggle")).to_be_hidden()
    phones["Ana"].fill("#guess-input", "the")
    phones["Ana"].click("#guess-btn")
    host.click("#primary-btn")
    expect(host.locator("#host")).to_have_attribute("data-phase", "locked")
    host.click("#primary-btn")
    expect(host.locator("#host")).to_have_attribute("data-screen", "reveal")
    expect(panel).to_be_hidden()
    expect(host.locator("#cuts-toggle")).to_have_attribute("aria-pressed", "false")
    with host.expect_response(_is_cuts):
        host.keyboard.press("t")
    expect(panel.locator(".cut")).to_have_count(len(names))
