"""Issue 11, the study: a researcher launches a Prolific study from the dashboard alone, in a
real browser, on the real app and the database scored by the real model.

The set-up form is filled and sent by Chromium, so the consent and instructions arrive with the
browser's own line endings (\\r\\n in a textarea): participants still see their paragraphs. A pilot
participant and a live one (arriving through the Prolific link with its three ids) answer in
word mode; the study page shows the pilot's figures beside the live ones and how many answers
still await the model's exact numbers; the downloaded export keeps every URL parameter and says
how many answers await their numbers; a background job (a real Huey consumer, the real model)
fills them and the study page's count goes to zero without a reload.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile

from playwright.sync_api import Page, expect
from research_helpers import PASSWORD, make_researcher, participants, study_row

CONSENT = "We store your answers.\n\nYou can stop at any time."
INSTRUCTIONS = "Type the next word.\n\nPress Enter to send it."


def _take_part(phone: Page, link: str, words: list[str]) -> None:
    """Consent (two paragraphs shown), instructions (two paragraphs), one word per question."""
    phone.goto(link)
    consent = phone.locator("main p", has_text="We store your answers.")
    expect(consent).to_have_text("We store your answers.")
    expect(phone.locator("main p", has_text="You can stop at any time.")).to_have_text("You can stop at any time.")
    phone.get_by_role("button", name="I agree, start the study").click()
    expect(phone.get_by_role("heading", name="What to do")).to_be_visible()
    expect(phone.locator("main p", has_text="Type the next word.")).to_have_text("Type the next word.")
    expect(phone.locator("main p", has_text="Press Enter")).to_have_text("Press Enter to send it.")
    phone.get_by_role("link", name="Start").click()
    box = phone.get_by_label("What is the next word?")
    for n, word in enumerate(words, 1):
        expect(phone.locator("#progress-text")).to_have_text(f"Question {n} of {len(words)}")
        box.fill(word)
        phone.get_by_role("button", name="Next").click()
    expect(phone.get_by_role("heading", name="Thank you!")).to_be_visible()
    expect(phone.locator("#completion-code")).to_have_text("GARDEN-7")


def _table(archive: zipfile.ZipFile, name: str) -> list[dict]:
    [member] = [n for n in archive.namelist() if n.endswith(f"/{name}.csv") or n == f"{name}.csv"]
    return list(csv.DictReader(io.StringIO(archive.read(member).decode("utf-8"))))


def _member(archive: zipfile.ZipFile, name: str) -> str:
    [member] = [n for n in archive.namelist() if n.endswith(f"/{name}") or n == name]
    return archive.read(member).decode("utf-8")


def test_a_researcher_launches_a_prolific_study_from_the_dashboard_alone(people, live_server, tmp_path):
    from webapp import jobs

    app = live_server.app
    base = live_server.url
    make_researcher(app)
    page = people()
    page.goto(base + "/research/login")
    page.get_by_label("E-mail").fill("ada@example.org")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/research/")

    # ---- set up: the form, as a researcher fills it in Chromium
    page.get_by_role("link", name="+ New study").click()
    page.get_by_label("Name", exact=True).fill("Garden words")
    page.select_option("#corpus", "tests")
    page.locator("label.segmented__item", has_text="The next word").click()
    page.get_by_label("Items per participant").fill("2")
    page.get_by_label("Target responses per item").fill("1")
    page.locator("#consent_text").fill(CONSENT)
    page.locator("#instructions").fill(INSTRUCTIONS)
    page.locator("#completion_code").fill("GARDEN-7")
    page.locator("input[name=pilot]").check()
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/research/studies/new")) as sent:
        page.get_by_role("button", name="Create the study").click()
    # the browser itself sends a textarea's line breaks as \r\n (HTML's form encoding)
    assert "%0D%0A%0D%0A" in (sent.value.post_data or ""), sent.value.post_data
    page.wait_for_url(re.compile(r"/research/studies/\d+$"))
    study_id = int(page.url.rsplit("/", 1)[-1])
    study = study_row(app, study_id)
    assert study.mode == "word" and study.pilot
    assert study.consent_text == CONSENT and study.instructions == INSTRUCTIONS

    prolific = page.locator("#prolific-link").input_value()
    assert re.search(r"\?PROLIFIC_PID=\{\{%PROLIFIC_PID%\}\}&STUDY_ID=\{\{%STUDY_ID%\}\}"
                     r"&SESSION_ID=\{\{%SESSION_ID%\}\}$", prolific), prolific

    def link(pid: str, session: str) -> str:  # what Prolific does with the link
        return (prolific.replace("{{%PROLIFIC_PID%}}", pid).replace("{{%STUDY_ID%}}", "st-garden")
                .replace("{{%SESSION_ID%}}", session))

    # ---- a pilot run, then the real start
    _take_part(people(phone=True), link("pilot-1", "se-pilot"), ["the", "garden"])
    page.reload()
    pilot_table = page.locator("section[aria-labelledby=pilot-title]")
    expect(page.get_by_role("heading", name="Live and pilot")).to_be_visible()
    expect(pilot_table.locator('[data-k="participants.started"]')).to_have_text("0")
    expect(pilot_table.locator('[data-k="pilot.started"]')).to_have_text("1")
    expect(pilot_table.locator('[data-k="pilot.finished"]')).to_have_text("1")
    expect(pilot_table.locator('[data-k="pilot.responses"]')).to_have_text("2")

    page.get_by_role("button", name="Switch pilot mode off").click()
    expect(page.get_by_text("Pilot mode is off: new participants count towards the targets.")).to_be_visible()
    _take_part(people(phone=True), link("live-1", "se-live"), ["a", "tree"])
    page.reload()
    expect(pilot_table.locator('[data-k="participants.started"]')).to_have_text("1")
    expect(pilot_table.locator('[data-k="accuracy.n"]')).to_have_text("2")
    expect(pilot_table.locator('[data-k="pilot.started"]')).to_have_text("1")
    expect(page.locator(".tile__value[data-k='participants.pilot']")).to_have_text("1")

    # ---- model numbers: word answers wait for the background job, and the pages say so
    study_page = page.url
    page.goto(base + "/research/")
    expect(page.locator(".numbers-note")).to_have_text("Answers awaiting the model's exact numbers: 4.")
    expect(page.get_by_text("Pilot: 1 started, 1 finished")).to_be_visible()
    page.goto(study_page)
    numbers = page.locator("#model-numbers")
    expect(numbers).to_be_visible()
    expect(numbers).to_contain_text("Answers awaiting the model's exact numbers: 4")
    expect(numbers).to_contain_text("Word log-probs are computed in the background")

    # ---- the export, downloaded from the study page: every URL parameter, the awaited count
    with page.expect_download() as download:
        page.locator(".export-form button[type=submit]").click()
    path = tmp_path / "export.zip"
    download.value.save_as(path)
    with zipfile.ZipFile(path) as archive:
        [live] = _table(archive, "participants")  # the pilot is left out unless asked for
        assert (live["url_prolific_pid"], live["url_study_id"], live["url_session_id"]) == \
            ("live-1", "st-garden", "se-live")
        manifest = json.loads(_member(archive, "manifest.json"))
        assert manifest["answers_awaiting_model_numbers"] == 2  # the live run's two words
        assert "2 answers still await the model's exact numbers" in _member(archive, "README.md")
        guesses = _table(archive, "guesses")
        assert len(guesses) == 2 and all(g["model_answer_logprob"] == "" for g in guesses)
    [pilot_run, live_run] = participants(app, study_id)
    assert pilot_run.pilot and not live_run.pilot
    assert live_run.url_params == {
        "PROLIFIC_PID": "live-1", "STUDY_ID": "st-garden", "SESSION_ID": "se-live"}

    # ---- nobody runs a command: a consumer (as `humanlm serve` starts one) fills the numbers,
    # and the open study page follows (it polls its summary)
    consumer = jobs.start_in_thread(app)
    try:
        expect(numbers.locator('[data-k="model_numbers.awaiting"]')).to_have_text("0", timeout=180_000)
    finally:
        consumer.stop()
    expect(numbers).to_be_hidden()
    with page.expect_download() as download:
        page.locator(".export-form button[type=submit]").click()
    download.value.save_as(tmp_path / "after.zip")
    with zipfile.ZipFile(tmp_path / "after.zip") as archive:
        assert json.loads(_member(archive, "manifest.json"))["answers_awaiting_model_numbers"] == 0
        assert all(g["model_answer_logprob"] not in ("", None) for g in _table(archive, "guesses"))
