"""The game page, played through a real browser against the live app and the real model scores."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, Response, expect
from sqlalchemy import select

from webapp.extensions import db
from webapp.models import Guess, Item

SCORELINE = re.compile(r"You \d+/\d+ \(\d+%\) · Model \d+/\d+ \(\d+%\) on the same tokens")


def _is_guess_post(resp: Response) -> bool:
    return resp.url.endswith("/api/play/guesses") and resp.request.method == "POST"


def _is_next_post(resp: Response) -> bool:
    return resp.url.endswith("/api/play/next") and resp.request.method == "POST"


def _open_game(page: Page, base_url: str) -> dict:
    """Open /play and return the first question payload the page received."""
    with page.expect_response(_is_next_post) as info:
        page.goto(base_url + "/play")
    payload = info.value.json()
    assert info.value.ok, payload
    assert payload["question"] is not None, payload
    expect(page.locator("#ask")).to_be_visible()
    expect(page.locator("#guess-input")).to_be_focused()
    return payload["question"]


def _wait_for_chips(page: Page) -> None:
    expect(page.locator("#token-chips .chip--scored")).to_have_count(1)
    expect(page.locator("#token-summary")).to_contain_text(re.compile(r"\d+ tokens? · "))


def _check_reveal(page: Page, body: dict, result: dict) -> None:
    reveal = page.locator("#reveal")
    expect(reveal).to_be_visible()
    expect(page.locator("#ask")).to_be_hidden()
    # the true next token, as a chip carrying the exact text
    target_chip = page.locator("#target-chip")
    expect(target_chip).to_have_attribute("data-text", result["target"]["text"])
    # a big check or cross
    mark = page.locator("#verdict-mark").inner_text().strip()
    assert mark in ("✓", "✗", "?")  # "?" marks a skip (issue 11)
    assert (mark == "✓") == bool(result["guess"]["correct"])
    # the model's top 10 (or fewer) as bars, with the true token highlighted when present
    bars = page.locator("#bars > li.bar:not(.bar--extra)")
    n_bars = bars.count()
    assert 1 <= n_bars <= 10
    assert n_bars == min(10, len(result["model"]["top"]))
    expect(page.locator("#bars li.bar--target")).to_have_count(1)
    # running scores
    expect(page.locator("#scoreline")).to_have_text(SCORELINE)
    stats = result["stats"]
    expect(page.locator("#scoreline")).to_contain_text(f"You {stats['correct']}/{stats['answered']}")
    expect(page.locator("#next-btn")).to_be_focused()
    # the passage shows the revealed token in place of the blank slot
    expect(page.locator("#passage .tok--revealed")).to_have_count(1)
    expect(page.locator("#passage .slot")).to_have_count(0)


def test_play_three_positions_including_a_skip(page: Page, live_server):
    question = _open_game(page, live_server.url)
    sent: list[dict] = []
    results: list[dict] = []

    for round_no, action in enumerate(["guess", "skip", "toggle-and-guess"]):
        assert page.locator("#game").get_attribute("data-item-id") == str(question["item_id"])
        expect(page.locator("#passage .slot")).to_have_count(1)
        progress = page.locator("#progress-text").inner_text()
        assert re.search(r"Token \d+ of \d+ in this passage", progress), progress

        if action == "skip":
            page.locator("#guess-input").type("mumble")
            with page.expect_response(_is_guess_post) as info:
                page.keyboard.press("Escape")
        else:
            if action == "toggle-and-guess":
                before = page.locator("#space-toggle").get_attribute("aria-pressed")
                page.keyboard.press("Alt+s")
                after = "false" if before == "true" else "true"
                expect(page.locator("#space-toggle")).to_have_attribute("aria-pressed", after)
            page.locator("#guess-input").type("the")
            _wait_for_chips(page)
            with page.expect_response(_is_guess_post) as info:
                page.keyboard.press("Enter")

        resp = info.value
        body = json.loads(resp.request.post_data or "{}")
        result = resp.json()
        assert resp.ok, result
        sent.append(body)
        results.append(result)

        assert body["item_id"] == question["item_id"]
        assert body["skipped"] is (action == "skip")
        if action == "skip":
            assert body["text"] == ""
        else:
            space_on = page.locator("#space-toggle").get_attribute("aria-pressed") == "true"
            assert body["text"] == (" the" if space_on else "the")
        assert body["reaction_ms"] > 0
        assert re.fullmatch(r"[0-9a-f-]{16,64}", body["client_key"])

        _check_reveal(page, body, result)

        with page.expect_response(_is_next_post) as nxt:
            page.keyboard.press("Enter")
        payload = nxt.value.json()
        assert nxt.value.ok, payload
        if payload["question"] is None:
            assert round_no == 2, "the small corpus ran out after fewer than 3 tokens"
            expect(page.locator("#done")).to_be_visible()
            break
        expect(page.locator("#ask")).to_be_visible()
        expect(page.locator("#guess-input")).to_be_focused()
        expect(page.locator("#guess-input")).to_have_value("")
        assert payload["question"]["item_id"] != question["item_id"]
        question = payload["question"]

    assert page.js_errors == []  # type: ignore[attr-defined]

    # What was stored: exactly one row per client key, with the text as scored.
    keys = [b["client_key"] for b in sent]
    assert len(set(keys)) == 3
    with live_server.app.app_context():
        rows = db.session.scalars(select(Guess).where(Guess.client_key.in_(keys))).all()
        by_key = {r.client_key: r for r in rows}
        assert len(rows) == 3
        for b, result in zip(sent, results):
            row = by_key[b["client_key"]]
            item = db.session.get(Item, row.item_id)
            assert row.item_id == b["item_id"]
            assert row.skipped is b["skipped"]
            assert row.raw_text == b["text"]
            assert row.client_reaction_ms == pytest.approx(b["reaction_ms"], abs=0.5)
            assert row.is_correct is bool(result["guess"]["correct"])
            assert result["target"]["text"] == item.token_text
            assert result["target"]["id"] == item.token_id
            if b["skipped"]:
                assert row.first_token_id is None
                assert row.match_rule == "skip"
            else:
                assert row.first_token_id == result["guess"]["first_token"]["id"]
        db.session.remove()


def test_true_token_is_not_sent_before_the_guess(page: Page, live_server):
    responses: list[Response] = []
    page.on("response", lambda r: responses.append(r))

    question = _open_game(page, live_server.url)
    typed = "Qzxv"
    page.locator("#guess-input").type(typed)
    _wait_for_chips(page)
    with page.expect_response(_is_guess_post) as info:
        page.keyboard.press("Enter")
    guess_resp = info.value
    result = guess_resp.json()
    expect(page.locator("#reveal")).to_be_visible()

    with live_server.app.app_context():
        item = db.session.get(Item, question["item_id"])
        target_text, position = item.token_text, item.position
        db.session.remove()
    assert result["target"]["text"] == target_text

    cut = next(i for i, r in enumerate(responses) if _is_guess_post(r))
    before = responses[:cut]
    assert any(_is_next_post(r) for r in before)
    assert any("/api/tokenize" in r.url for r in before), "the page never asked for token chips"

    context = question["context"]
    assert len(context) == position, "the prefix must stop right before the scored token"
    prefix = "".join(context)
    # The prefix followed by the true token is the continuation nobody may see yet.
    tail = prefix[-24:] + target_text
    needles = {tail, json.dumps(tail)[1:-1]}
    forbidden_keys = {"target", "token_id", "token_text", "top", "target_prob", "target_rank"}

    checked = 0
    for resp in before:
        if resp.status in (301, 302, 303, 304, 307, 308):
            continue
        text = resp.body().decode("utf-8", "replace")
        checked += 1
        for needle in needles:
            assert needle not in text, f"{resp.url} leaks the next token"
        if "application/json" not in (resp.headers.get("content-type") or ""):
            continue
        data = json.loads(text)
        for key, value in _walk(data):
            assert key not in forbidden_keys, f"{resp.url} has a '{key}' field before the guess"
            if key in ("context", "title", "register", "corpus", "text", "error"):
                continue
            if isinstance(value, str) and target_text not in typed and target_text.strip():
                assert value != target_text, f"{resp.url} sends the next token in '{key}'"
    assert checked >= 4  # page, stylesheet, script, next question, tokenize...

    # Sanity: the answer does arrive with the guess response.
    assert target_text in guess_resp.body().decode("utf-8")


def _walk(data, key=None):
    """Yield (key, value) for every scalar in a JSON document; list items inherit their key."""
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(v, (dict, list)):
                yield k, None
                yield from _walk(v, k)
            else:
                yield k, v
    elif isinstance(data, list):
        for v in data:
            if isinstance(v, (dict, list)):
                yield from _walk(v, key)
            else:
                yield key, v


def test_phone_guess_controls_fit_without_horizontal_scroll(phone_page: Page, live_server):
    page = phone_page
    _open_game(page, live_server.url)
    width = page.viewport_size["width"]
    height = page.viewport_size["height"]

    def no_horizontal_scroll():
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= width, f"page is {scroll_width}px wide on a {width}px screen"

    for selector in ("#guess-input", "#guess-btn", "#skip-btn", "#space-toggle"):
        loc = page.locator(selector)
        expect(loc).to_be_visible()
        box = loc.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, selector
        assert box["y"] >= 0 and box["y"] + box["height"] <= height, f"{selector} is below the fold"
    no_horizontal_scroll()

    page.locator("#guess-input").type("and the rest of it")
    _wait_for_chips(page)
    no_horizontal_scroll()
    with page.expect_response(_is_guess_post):
        page.locator("#guess-btn").tap()
    expect(page.locator("#reveal")).to_be_visible()
    no_horizontal_scroll()
    # the bar chart fits the screen and Next stays reachable
    for bar in page.locator("#bars > li.bar").all():
        box = bar.bounding_box()
        assert box is not None and box["x"] + box["width"] <= width
    nxt = page.locator("#next-btn")
    expect(nxt).to_be_in_viewport()


def test_home_start_button_is_focused_and_enter_starts(page: Page, live_server):
    page.goto(live_server.url + "/")
    start = page.get_by_role("link", name=re.compile("Start playing"))
    expect(start).to_be_visible()
    expect(start).to_be_focused()
    expect(page.locator(".token-lesson")).to_contain_text("two different tokens")
    with page.expect_response(_is_next_post):
        page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/play$"))
    expect(page.locator("#ask")).to_be_visible()
