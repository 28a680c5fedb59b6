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
