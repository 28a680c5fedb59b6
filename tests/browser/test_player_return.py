"""The player's side of issue 11, in a real browser: the reveal's Next button on screen at
1280x800, a skip that looks unlike a wrong answer, the leading-space switch guessed from the
prefix only, plain words for a guess outside the model's top-k, and the favicon."""

from __future__ import annotations

import re

from playwright.sync_api import Page, Response, expect
from test_classroom_day import shot

DESKTOP = {"width": 1280, "height": 800}


def _is_guess_post(resp: Response) -> bool:
    return resp.url.endswith("/api/play/guesses") and resp.request.method == "POST"


def _is_next_post(resp: Response) -> bool:
    return resp.url.endswith("/api/play/next") and resp.request.method == "POST"


def _open_game(page: Page, base_url: str, query: str = "") -> dict:
    with page.expect_response(_is_next_post) as info:
        page.goto(base_url + "/play" + query)
    payload = info.value.json()
    assert info.value.ok, payload
    assert payload["question"] is not None, payload
    expect(page.locator("#guess-input")).to_be_focused()
    return payload


def _answer(page: Page, text: str | None) -> dict:
    """Type `text` and press Enter, or press Esc for a skip (None); return the reveal."""
    with page.expect_response(_is_guess_post) as info:
        if text is None:
            page.keyboard.press("Escape")
        else:
            page.locator("#guess-input").fill(text)
            page.keyboard.press("Enter")
    assert info.value.ok, info.value.text()
    expect(page.locator("#reveal")).to_be_visible()
    return info.value.json()


def _next(page: Page) -> dict:
    with page.expect_response(_is_next_post) as info:
        page.locator("#next-btn").click()
    expect(page.locator("#ask")).to_be_visible()
    return info.value.json()


def _in_viewport(page: Page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    return (
        box is not None and box["y"] >= 0 and box["x"] >= 0
        and box["y"] + box["height"] <= size["height"] and box["x"] + box["width"] <= size["width"]
    )


def test_next_button_is_on_screen_at_1280x800_without_scrolling(page: Page, live_server):
    page.set_viewport_size(DESKTOP)
    _open_game(page, live_server.url)
    # A guess outside the top-k adds rows below the chart: the tallest reveal there is.
    for text in (" Qzxv", None, " the"):
        _answer(page, text)
        expect(page.locator("#next-btn")).to_be_focused()
        page.wait_for_timeout(400)  # the reveal's scroll-into-view and its animation
        assert _in_viewport(page, "#next-btn"), page.locator("#next-btn").bounding_box()
        # it stays on screen when the player scrolls to the top or to the end of the page
        for y in (0, 100000):
            page.evaluate("y => window.scrollTo(0, y)", y)
            page.wait_for_timeout(100)
            if page.locator("#reveal").bounding_box()["y"] < page.viewport_size["height"]:
                assert _in_viewport(page, "#next-btn"), f"Next off screen at scroll {y}"
        _next(page)


def test_a_skip_looks_unlike_a_wrong_answer(page: Page, live_server):
    page.set_viewport_size(DESKTOP)
    _open_game(page, live_server.url)
    wrong = _answer(page, " Qzxv")
    assert not wrong["guess"]["correct"]
    expect(page.locator("#reveal")).to_have_class(re.compile(r"\bis-bad\b"))
    wrong_look = page.evaluate(
        """() => {
          const m = getComputedStyle(document.getElementById('verdict-mark'));
          const r = getComputedStyle(document.getElementById('reveal'));
          return [document.getElementById('verdict-mark').textContent, m.color, r.borderTopStyle,
                  document.getElementById('verdict-title').textContent];
        }"""
    )
    _next(page)
    skipped = _answer(page, None)
    assert skipped["guess"]["skipped"]
    expect(page.locator("#reveal")).to_have_class(re.compile(r"\bis-skip\b"))
    expect(page.locator("#verdict-title")).to_contain_text("Skipped")
    expect(page.locator("#your-guess")).to_contain_text("I don\u2019t know")
    skip_look = page.evaluate(
        """() => {
          const m = getComputedStyle(document.getElementById('verdict-mark'));
          const r = getComputedStyle(document.getElementById('reveal'));
          return [document.getElementById('verdict-mark').textContent, m.color, r.borderTopStyle,
                  document.getElementById('verdict-title').textContent];
        }"""
    )
    assert wrong_look[0] == "✗" and skip_look[0] == "?"
    assert wrong_look[1] != skip_look[1], "a skip and a wrong answer share the mark's colour"
    assert wrong_look[2] == "solid" and skip_look[2] == "dashed"
    assert wrong_look[3] != skip_look[3]
    # the passage marks a skipped token apart from a missed one
    expect(page.locator("#passage .tok--revealed.tok--skip")).to_have_count(1)


def test_a_guess_outside_the_top_k_is_explained_in_plain_words(page: Page, live_server):
    page.set_viewport_size(DESKTOP)
    _open_game(page, live_server.url)
    for text in (" Qzxv", " zzqj", " Xylophonic"):
        result = _answer(page, text)
        model = result["model"]
        if not result["guess"]["correct"] and not model["guess_in_top_k"]:
            break
        _next(page)
    else:
        raise AssertionError("every odd guess was in the model's top-k")
    floor = model["min_top_k_prob"]
    line = page.locator("#model-line")
    expect(line).to_contain_text(
        f"The model\u2019s top {model['top_k']} did not include your answer: it gave it less than"
    )
    # the floor is the stored top-k's smallest probability, printed as a percentage
    shown = re.search(r"less than ([\d.]+)%", line.inner_text())
    assert shown, line.inner_text()
    assert abs(float(shown.group(1)) / 100 - floor) <= max(floor * 0.06, 0.00006)


def test_space_switch_follows_the_prefix_only(page: Page, live_server):
    page.set_viewport_size(DESKTOP)
    payload = _open_game(page, live_server.url)
    cases = page.evaluate(
        """() => ['', 'The cat', 'The cat ', 'well-', "don'", 'said (', 'It was 3'].map(
             (p) => [p, window.humanlm.spaceAfter(p)])"""
    )
    assert dict(cases) == {
        "": False, "The cat": True, "The cat ": False, "well-": False, "don'": False,
        "said (": False, "It was 3": True,
    }
    # The switch on the page starts as the prefix alone says, for several positions in a row.
    for _ in range(3):
        prefix = "".join(payload["question"]["context"])
        want = page.evaluate("p => window.humanlm.spaceAfter(p)", prefix)
        expect(page.locator("#space-toggle")).to_have_attribute("aria-pressed", "true" if want else "false")
        _answer(page, None)
        payload = _next(page)


def test_favicon_is_linked_and_served(page: Page, live_server):
    page.goto(live_server.url + "/")
    href = page.locator('link[rel="icon"]').get_attribute("href")
    assert href and href.endswith("favicon.svg")
    resp = page.request.get(live_server.url + href)
    assert resp.ok
    assert "svg" in resp.headers["content-type"]
    assert resp.text().lstrip().startswith("<svg")


# ------------------------------------------------------------------------ rounds and the card


def _play_round(page: Page, answers: list[str | None], daily: bool = False) -> list[dict]:
    """Answer positions until the round ends (the reveal offers the result); return reveals."""
    reveals = []
    for i in range(10):
        text = answers[i % len(answers)]
        result = _answer(page, text)
        reveals.append(result)
        assert _in_viewport(page, "#next-btn")
        if result["round"]["finished"]:
            expect(page.locator("#next-btn")).to_contain_text("See your result")
            return reveals
        expect(page.locator("#next-btn")).to_contain_text("Next token")
        body = _next(page)
        assert body["round"]["id"] == result["round"]["id"]
        assert (body["round"]["kind"] == "daily") == daily
        expect(page.locator("#round-text")).to_contain_text(f"{i + 2} of {body['round']['size']}")
    raise AssertionError("the round did not end within ten answers")


def test_a_round_of_ten_ends_on_a_result_card_to_share(page: Page, live_server):
    page.set_viewport_size(DESKTOP)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    first = _open_game(page, live_server.url)
    assert first["round"]["size"] == 10 and first["round"]["kind"] == "free"
    expect(page.locator("#round-text")).to_have_text("Round: 1 of 10")
    reveals = _play_round(page, [" the", None, " Qzxv", " a", " and"])
    assert len(reveals) == 10
    page.keyboard.press("Enter")  # Enter on the reveal opens the result too
    card = page.locator("#round-card")
    expect(card).to_be_visible()
    expect(page.locator("#another-round")).to_be_focused()
    assert _in_viewport(page, "#another-round")  # the next step shows without scrolling at 1280x800
    shot(page, "play-result-desktop.png")
    you = sum(1 for r in reveals if r["guess"]["correct"])
    model = sum(1 for r in reveals if r["model"]["top1_correct"])
    expect(page.locator("#rc-you")).to_have_text(f"{you}/10")
    expect(page.locator("#rc-model")).to_have_text(f"{model}/10")
    expect(page.locator("#rc-grid .rc-grid__row").first.locator(".rc-cell")).to_have_count(10)
    expect(page.locator("#rc-grid .rc-cell--skip")).to_have_count(2)
    expect(page.locator("#rc-worst")).to_contain_text("Worst call:")
    # the share text: a few lines, no player id, the card's address
    share = page.locator("#share-text").inner_text()
    lines = share.strip().splitlines()
    assert lines[0] == "humanlm round" and lines[1].startswith(f"Me {you}/10 · ")
    assert "/play/card/" in lines[-1]
    page.locator("#copy-result").click()
    expect(page.locator("#copy-status")).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == page.locator("#share-text").text_content()
    href = page.locator("#card-link").get_attribute("href")
    assert href.endswith(".svg") and href == lines[-1]
    svg = page.request.get(href)
    assert svg.ok and svg.headers["content-type"].startswith("image/svg+xml")
    assert f"Me {you}/10" in svg.text()
    # another round starts afresh
    with page.expect_response(_is_next_post) as info:
        page.locator("#another-round").click()
    assert info.value.json()["round"]["answered"] == 0
    expect(page.locator("#ask")).to_be_visible()
    expect(card).to_be_hidden()


def test_todays_passage_board_nickname_and_streak(page: Page, live_server, browser):
    page.set_viewport_size(DESKTOP)
    first = _open_game(page, live_server.url, "?daily=1")
    assert first["round"]["kind"] == "daily"
    expect(page.locator("#round-text")).to_contain_text("Today\u2019s passage: 1 of")
    _play_round(page, [" the"], daily=True)
    page.locator("#next-btn").click()
    expect(page.locator("#round-card")).to_be_visible()
    expect(page.locator("#round-kicker")).to_contain_text("Today\u2019s passage")
    expect(page.locator("#daily-board")).to_be_visible()
    expect(page.locator("#board-list .board__row--you")).to_have_count(1)
    expect(page.locator("#board-list .board__row--you .board__name")).to_have_text(re.compile(r"^player [0-9a-f]{6}$"))
    expect(page.locator("#rc-streak")).to_have_text("Streak: 1 day. Play tomorrow to make it 2.")
    # a nickname, with the room rules
    page.locator("#nickname-input").fill("Ada L")
    page.locator("#nickname-form button").click()
    expect(page.locator("#nickname-msg")).to_contain_text("the board calls you Ada L")
    expect(page.locator("#board-list .board__row--you .board__name")).to_have_text("Ada L")
    # someone else: the same passage, and a look-alike name is refused in plain words
    other = browser.new_context(viewport=DESKTOP).new_page()
    try:
        second = _open_game(other, live_server.url, "?daily=1")
        assert second["question"]["item_id"] == first["question"]["item_id"]
        _play_round(other, [None], daily=True)
        other.locator("#next-btn").click()
        expect(other.locator("#board-list .board__row")).to_have_count(2)
        other.locator("#nickname-input").fill("ADA l")
        other.locator("#nickname-form button").click()
        expect(other.locator("#nickname-msg")).to_contain_text("looks the same")
        expect(other.locator("#nickname-input")).to_have_attribute("aria-invalid", "true")
    finally:
        other.context.close()
    # the first player comes back to today's passage: already played, the card again
    with page.expect_response(_is_next_post):
        page.goto(live_server.url + "/play?daily=1")
    expect(page.locator("#round-title")).to_have_text("You played today\u2019s passage")


def test_difficulty_choice_starts_a_round_of_such_positions(page: Page, live_server):
    page.set_viewport_size(DESKTOP)
    _open_game(page, live_server.url)
    with page.expect_response(_is_next_post) as info:
        page.locator("#difficulty").select_option("hard")
    body = info.value.json()
    assert info.value.request.post_data_json["difficulty"] == "hard"
    assert body["round"]["difficulty"] == "hard" and body["round"]["answered"] == 0
    expect(page.locator("#round-text")).to_have_text("Round of hard positions: 1 of 10")
    result = _answer(page, " the")
    assert result["model"]["entropy_nats"] > 3.0
    # the page address can ask for it too
    payload = _open_game(page, live_server.url, "?difficulty=easy")
    assert payload["round"]["difficulty"] == "easy"
    expect(page.locator("#difficulty")).to_have_value("easy")


def test_phone_round_line_and_result_card_fit_390_wide(phone_page: Page, live_server):
    page = phone_page
    _open_game(page, live_server.url)
    # the round line and the difficulty switch take one line above the passage
    row = page.locator(".round-row").bounding_box()
    assert row["height"] < 50, row
    reveals = _play_round(page, [" the", None])
    assert reveals[-1]["round"]["finished"]
    page.locator("#next-btn").click()
    expect(page.locator("#round-card")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], width
    card = page.locator("#round-card").bounding_box()
    for cell in page.locator("#rc-grid .rc-cell").all():
        box = cell.bounding_box()
        assert card["x"] <= box["x"] and box["x"] + box["width"] <= card["x"] + card["width"]
    assert _in_viewport(page, "#rc-you") and _in_viewport(page, "#rc-model")
