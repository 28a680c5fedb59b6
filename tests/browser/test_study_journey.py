"""A participant's whole journey through a study in Debian's Chromium, on the real app and the
database scored by the real model: the study link with platform ids -> consent -> instructions ->
answers -> a reload mid-way resumes at the next item -> the completion code and the redirect."""

from __future__ import annotations

import re

from playwright.sync_api import expect
from research_helpers import make_study, participants, study_row
from sqlalchemy import select

from webapp.extensions import db
from webapp.models import Guess, StudyItem

PARAMS = "PROLIFIC_PID=pp-browser&STUDY_ID=st-9&SESSION_ID=se-3"


def _guesses(app, study_id):
    with app.app_context():
        session = db.new_session()
        try:
            return list(session.scalars(select(Guess).where(Guess.study_id == study_id).order_by(Guess.id)))
        finally:
            session.close()


def _context_of(app, study_item_id) -> str:
    with app.app_context():
        session = db.new_session()
        try:
            item = session.get(StudyItem, study_item_id).item
            return item.document.text[: item.char_start]
        finally:
            session.close()


def test_consent_answers_reload_resume_code_and_redirect(live_server, page):
    app = live_server.app
    study_id = make_study(app, items_per_participant=4, show_feedback=True, completion_code="DONE-7",
                          redirect_url=live_server.url + "/?cc={code}",
                          consent_text="We store your answers.\n\nYou can stop at any time.")
    slug = study_row(app, study_id).slug

    page.goto(f"{live_server.url}/s/{slug}?{PARAMS}")
    expect(page.get_by_role("heading", name="Information and consent")).to_be_visible()
    expect(page.get_by_text("You can stop at any time.")).to_be_visible()
    assert participants(app, study_id) == []  # nothing stored before consent
    page.get_by_role("button", name="I agree, start the study").click()

    expect(page.get_by_role("heading", name="What to do")).to_be_visible()
    page.get_by_role("link", name="Start").click()

    progress = page.locator("#progress-text")
    answer_box = page.get_by_label("What comes next?")
    for n in (1, 2):
        expect(progress).to_have_text(f"Question {n} of 4")
        answer_box.fill("the")
        answer_box.press("Enter")
        feedback = page.locator("#feedback")
        expect(feedback).to_be_visible()
        expect(page.locator("#feedback-line")).to_contain_text("The text continued with")
        page.keyboard.press("Enter")  # continue, keyboard only
    expect(progress).to_have_text("Question 3 of 4")
    stored = _guesses(app, study_id)
    assert len(stored) == 2 and all(g.raw_text == " the" for g in stored)  # "starts a new word" on

    page.reload()  # mid-way: resumes at the third item, not the first
    expect(progress).to_have_text("Question 3 of 4")
    [p] = participants(app, study_id)
    third = p.assigned[2]
    expect(page.locator("#passage")).to_contain_text(_context_of(app, third)[-40:].strip())

    for n in (3, 4):
        expect(progress).to_have_text(f"Question {n} of 4")
        answer_box.fill("and")
        page.get_by_role("button", name="Next").click()
        page.get_by_role("button", name="Continue").click()

    expect(page.get_by_role("heading", name="Thank you!")).to_be_visible()
    expect(page.locator("#completion-code")).to_have_text("DONE-7")
    page.wait_for_url(re.compile(r"/\?cc=DONE-7$"), timeout=15_000)  # the redirect with the code

    [p] = participants(app, study_id)
    assert p.finished_at is not None and p.external_id == "pp-browser"
    assert p.url_params == {"PROLIFIC_PID": "pp-browser", "STUDY_ID": "st-9", "SESSION_ID": "se-3"}
    guesses = _guesses(app, study_id)
    assert [g.item_id for g in guesses] == [_item_of(app, si) for si in p.assigned]
    assert all(g.source == "study" and g.client_reaction_ms > 0 for g in guesses)

    # The same person again: not let in twice.
    page.goto(f"{live_server.url}/s/{slug}?{PARAMS}")
    expect(page.get_by_role("heading", name="You have already completed this study")).to_be_visible()
    assert page.js_errors == []


def _item_of(app, study_item_id) -> int:
    with app.app_context():
        session = db.new_session()
        try:
            return session.get(StudyItem, study_item_id).item_id
        finally:
            session.close()


def test_phone_word_mode_with_confidence_and_code(live_server, phone_page):
    page = phone_page
    app = live_server.app
    study_id = make_study(app, mode="word", items_per_participant=2, ask_probability=True,
                          completion_code="PHONE-1", checks=["Type the word blue here: | blue"])
    slug = study_row(app, study_id).slug
    page.goto(f"{live_server.url}/s/{slug}?participant=phone-1")
    page.get_by_role("button", name="I agree, start the study").tap()
    page.get_by_role("link", name="Start").tap()

    box = page.get_by_label("What is the next word?")
    slider = page.get_by_label("How likely is your answer to be right?")
    for n in (1, 2, 3):
        expect(page.locator("#progress-text")).to_have_text(f"Question {n} of 3")
        box.fill("blue")
        page.get_by_role("button", name="Next").tap()
        expect(page.locator("#form-error")).to_contain_text("Move the slider")  # must rate first
        slider.fill("70")
        page.get_by_role("button", name="Next").tap()
    expect(page.get_by_role("heading", name="Thank you!")).to_be_visible()
    expect(page.locator("#completion-code")).to_have_text("PHONE-1")

    guesses = _guesses(app, study_id)
    assert len(guesses) == 3 and {g.reported_probability for g in guesses} == {0.7}
    assert all(g.mode == "word" for g in guesses)
    [p] = participants(app, study_id)
    assert (p.checks_passed, p.checks_total) == (1, 1)


def _finish_one_item(page, live_server, slug, params="participant=end-1"):
    page.goto(f"{live_server.url}/s/{slug}?{params}")
    page.get_by_role("button", name="I agree, start the study").click()
    page.get_by_role("link", name="Start").click()
    box = page.get_by_label("What comes next?")
    box.fill("the")
    box.press("Enter")


def test_the_end_page_redirects_once_announced_and_the_code_never_wraps(live_server, phone_page):
    page = phone_page
    app = live_server.app
    code = "C0MPLETE-7Q2X9K4M"
    study_id = make_study(app, items_per_participant=1, completion_code=code,
                          redirect_url=live_server.url + "/?cc={code}")
    slug = study_row(app, study_id).slug
    arrivals = []
    page.on("request", lambda r: arrivals.append(r.url) if "?cc=" in r.url and r.is_navigation_request() else None)
    page.set_viewport_size({"width": 320, "height": 640})
    _finish_one_item(page, live_server, slug)
    expect(page.get_by_role("heading", name="Thank you!")).to_be_visible()
    assert 'http-equiv="refresh"' not in page.content()  # one mechanism: the script below
    note = page.locator("#redirect-note")
    expect(note).to_have_text(re.compile(r"Taking you back in 5\s*5 seconds\.|Taking you back in \d"))
    expect(note).to_have_attribute("role", "status")
    lines = page.locator("#completion-code").evaluate(
        "el => { const r = document.createRange(); r.selectNodeContents(el); "
        "return new Set([...r.getClientRects()].map(x => Math.round(x.top))).size; }")
    assert lines == 1  # the code is on one line, even 320 px wide
    page.wait_for_url(re.compile(r"/\?cc=" + code + "$"), timeout=15_000)
    page.wait_for_timeout(4000)  # long enough for a second mechanism (the old refresh) to fire
    assert arrivals == [f"{live_server.url}/?cc={code}"]


def test_the_redirect_can_be_stopped(live_server, page):
    app = live_server.app
    study_id = make_study(app, items_per_participant=1, redirect_url=live_server.url + "/?cc={code}",
                          completion_code="STAY-1")
    slug = study_row(app, study_id).slug
    _finish_one_item(page, live_server, slug, "participant=stay-1")
    expect(page.get_by_role("heading", name="Thank you!")).to_be_visible()
    page.get_by_role("button", name="Stay on this page").click()
    expect(page.locator("#redirect-note")).to_contain_text("You are staying on this page")
    page.wait_for_timeout(6500)
    assert page.url.endswith(f"/s/{slug}/done")
    page.get_by_role("link", name="Continue").click()
    page.wait_for_url(re.compile(r"/\?cc=STAY-1$"))
    assert page.js_errors == []


def test_confidence_can_be_answered_at_50_percent_without_moving_the_slider(live_server, page):
    app = live_server.app
    study_id = make_study(app, items_per_participant=2, ask_probability=True)
    slug = study_row(app, study_id).slug
    page.goto(f"{live_server.url}/s/{slug}?participant=half")
    page.get_by_role("button", name="I agree, start the study").click()
    page.get_by_role("link", name="Start").click()
    box = page.get_by_label("What comes next?")
    slider = page.get_by_label("How likely is your answer to be right?")

    box.fill("the")
    page.get_by_role("button", name="Next").click()
    expect(page.locator("#form-error")).to_contain_text("Move the slider")  # untouched: asked
    slider.click()  # a click on the handle, where it already is (50%)
    expect(page.locator("#confidence-out")).to_have_text("50%")
    page.get_by_role("button", name="Next").click()
    expect(page.locator("#progress-text")).to_have_text("Question 2 of 2")

    box.fill("a")  # keyboard only: Tab to the slider, Space keeps 50%, Enter sends
    slider.focus()
    page.keyboard.press("Space")
    expect(page.locator("#confidence-out")).to_have_text("50%")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Thank you!")).to_be_visible()
    assert [g.reported_probability for g in _guesses(app, study_id)] == [0.5, 0.5]
    assert page.js_errors == []


def test_a_researcher_uploads_passages_and_watches_them_scored(live_server, page, tmp_path):
    from research_helpers import PASSWORD, make_researcher

    from webapp import jobs

    app = live_server.app
    make_researcher(app)
    page.goto(f"{live_server.url}/research/login")
    page.get_by_label("E-mail").fill("ada@example.org")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="Passages").click()

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "Fine."}\n{"text": \n{"body": "x"}\n')
    page.locator("input[type=file]").set_input_files(str(bad))
    page.get_by_label("Corpus", exact=True).fill("garden")
    page.get_by_role("button", name="Upload and score").click()
    errors = page.locator(".upload-errors li")
    expect(errors).to_have_count(2)
    expect(errors.nth(0)).to_contain_text("bad.jsonl:2:")
    expect(errors.nth(1)).to_contain_text("bad.jsonl:3:")

    good = tmp_path / "garden.txt"
    good.write_text("The garden was quiet in the evening. Birds sang in the old apple tree.\n\n"
                    "She watered the roses before the sun went down behind the hill.\n")
    page.locator("input[type=file]").set_input_files(str(good))
    page.get_by_label("Corpus", exact=True).fill("garden")
    page.get_by_label("A .txt file is").select_option("blank-line")
    page.get_by_role("button", name="Upload and score").click()
    expect(page.get_by_text("2 passages added to the new corpus “garden”")).to_be_visible()
    row = page.locator("tr", has=page.get_by_role("rowheader", name="garden"))
    expect(row.locator(".corpus-state")).to_have_text("queued")
    consumer = jobs.start_in_thread(app)
    try:
        expect(row.locator(".corpus-state")).to_have_text("scored", timeout=120_000)  # polled
    finally:
        consumer.stop()
    expect(row.locator('[data-p="scored_documents"]')).to_have_text("2")
    expect(row.locator('[role="progressbar"]')).to_have_attribute("aria-valuenow", "100")
    assert page.js_errors == []
