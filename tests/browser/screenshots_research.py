"""Screenshots of the research pages, for docs/screenshots/ (a plain script, run by hand).

    .venv/bin/python tests/browser/screenshots_research.py

It imports a few demo passages into a temporary SQLite file, scores them with the real model,
creates a researcher and two studies, lets simulated participants answer one of them (their
answers are drawn from the model's own distribution at T=1.3, plus a few who fail a check), serves
the real app on a free loopback port and drives Debian's Chromium. It writes

    research-dashboard.png, research-study-detail.png, research-study-setup.png (1280 wide),
    research-consent-phone.png, research-task-phone.png, research-completion-phone.png (390x844)
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import sys
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "docs" / "screenshots"
CHROMIUM = os.environ.get("HUMANLM_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
DEMO_PASSAGES = 4
EMAIL, PASSWORD = "ada@lab.example.org", "screenshots only"
CONSENT = (
    "This is a short study about how people predict text, run by the Language and Cognition Lab. "
    "You will read the beginnings of short passages and type the word you think comes next. "
    "It takes about 8 minutes and pays as stated on Prolific.\n\n"
    "We store your answers, how long you took, and your Prolific ID; nothing else about you. "
    "The anonymised answers may be published for research.\n\n"
    "Taking part is voluntary: you can stop at any time by closing this page. Questions: "
    "cloze-study@lab.example.org."
)


def prepare(stack: ExitStack) -> tuple[str, int]:
    """A scored temporary database with a researcher, two studies and simulated participants."""
    sys.path.insert(0, str(REPO))
    from tests.support import MODEL_SPEC, serve_scored_demo

    def populate(session, tokenizer) -> int:
        from webapp.game import active_model
        from webapp.research.auth import create_researcher
        from webapp.research.setup import create_study

        model = active_model(session, MODEL_SPEC)
        researcher = create_researcher(session, EMAIL, PASSWORD)
        main_study = create_study(session, {
            "name": "Cloze norms, everyday prose", "slug": "cloze-everyday", "corpus": "demo",
            "mode": "word", "items": {"sample": 40}, "items_per_participant": 12, "target_responses": 8,
            "seed": 20261124, "consent_text": CONSENT, "show_feedback": False, "ask_probability": False,
            "checks": ["To show you are reading carefully, please type the word orange: | orange"],
            "check_threshold": 1, "completion_code": "C7F3K2Q9",
            "redirect_url": "https://app.prolific.com/submissions/complete?cc={code}", "pilot": False,
        }, model=model, tokenizer=tokenizer, created_by=researcher.id)
        create_study(session, {
            "name": "Token game with feedback (pilot)", "slug": "token-feedback-pilot", "corpus": "demo",
            "mode": "token", "items_per_participant": 20, "target_responses": 5, "consent_text": CONSENT,
            "show_feedback": True, "ask_probability": True, "pilot": True,
        }, model=model, tokenizer=tokenizer, created_by=researcher.id)
        session.commit()
        simulate(session, main_study, tokenizer)
        return main_study.id

    return serve_scored_demo(stack, "research.db", DEMO_PASSAGES, populate)


def simulate(session, study, tokenizer, n_people: int = 28) -> None:
    """Participants whose answers are sampled from the model's distribution (a stand-in for
    people, for the picture only): most finish, a few are still answering, two fail the check."""
    from webapp.answers import StudyAnswerIn
    from webapp.game import prediction_for
    from webapp.research.participants import progress, start_participant, submit_answer
    from webapp.words import target_word

    rng = random.Random(7)
    start = datetime.now(UTC) - timedelta(hours=3)
    for n in range(n_people):
        t = start + timedelta(minutes=7 * n)
        p = start_participant(session, study, {"PROLIFIC_PID": f"5f{rng.getrandbits(60):015x}",
                                               "STUDY_ID": "6650aa", "SESSION_ID": f"s{n}"},
                              now=t, reservation_minutes=60)
        session.commit()
        stop_after = rng.randint(3, 8) if n >= n_people - 3 else None
        answered = 0
        while True:
            _seq, _done, si = progress(session, study, p)
            if si is None or (stop_after is not None and answered >= stop_after):
                break
            if si.kind == "check":
                text = "orange" if n not in (4, 13) else "apple"
            else:
                item = si.item
                pred = prediction_for(session, item.id, study.model_id)
                options = [e for e in pred.top_k if not e[3] and e[2].strip()[:1].isalpha()]
                weights = [math.exp(e[1] / 1.3) for e in options]
                pick = rng.choices(options, weights)[0][2].strip()
                text = target_word(item.document, item) if rng.random() < 0.22 else pick
            t += timedelta(seconds=rng.uniform(4, 16))
            answer = StudyAnswerIn(study_item_id=si.id, text=text or "?",
                                   client_key=f"sim-{n:04d}-{si.id:06d}",
                                   reaction_ms=rng.lognormvariate(8.4, 0.45))
            submit_answer(session, study, p, tokenizer, answer, received_at=t)
            session.commit()
            answered += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import expect, sync_playwright

    with ExitStack() as stack:
        base, study_id = prepare(stack)
        pw = stack.enter_context(sync_playwright())
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        stack.callback(browser.close)

        # ---- researcher: log in, dashboard, study page, set-up form (desktop)
        ctx = browser.new_context(viewport=DESKTOP)
        page = ctx.new_page()
        page.set_default_timeout(30_000)
        page.goto(base + "/research/login")
        page.fill("#email", EMAIL)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/research/")
        page.screenshot(path=str(args.out / "research-dashboard.png"), full_page=True)
        print("wrote research-dashboard.png")

        page.goto(f"{base}/research/studies/{study_id}")
        expect(page.locator("#live")).to_be_visible()
        page.screenshot(path=str(args.out / "research-study-detail.png"), full_page=True)
        print("wrote research-study-detail.png")

        page.goto(base + "/research/studies/new")
        page.fill("#name", "Next-word norms, news register")
        page.check("input[name=mode][value=word]")
        page.check("input[name=items_choice][value=sample]")
        page.fill("#items", "60")
        page.fill("#items_per_participant", "15")
        page.fill("#target_responses", "40")
        page.check("input[name=show_feedback]")
        page.fill("#checks", "To show you are reading carefully, please type the word orange: | orange")
        page.fill("#check_threshold", "1")
        page.fill("#completion_code", "C9X2P1")
        page.fill("#redirect_url", "https://app.prolific.com/submissions/complete?cc={code}")
        page.locator("#name").focus()
        page.screenshot(path=str(args.out / "research-study-setup.png"), full_page=True)
        print("wrote research-study-setup.png")

        # ---- participant on a phone: consent, one question, completion
        phone_ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
        phone = phone_ctx.new_page()
        phone.set_default_timeout(30_000)
        phone.goto(f"{base}/s/cloze-everyday?PROLIFIC_PID=5f3c2a9e8b7d6c5e4f3a2b1c&STUDY_ID=6650aa&SESSION_ID=x1")
        phone.screenshot(path=str(args.out / "research-consent-phone.png"))
        print("wrote research-consent-phone.png")
        phone.get_by_role("button", name="I agree, start the study").tap()
        phone.get_by_role("link", name="Start").tap()
        box = phone.get_by_label("What is the next word?")
        expect(box).to_be_visible()
        box.fill("morning")
        phone.screenshot(path=str(args.out / "research-task-phone.png"))
        print("wrote research-task-phone.png")
        total = int(re.search(r"of (\d+)", phone.locator("#progress-text").inner_text()).group(1))
        for i in range(1, total + 1):
            expect(phone.locator("#progress-text")).to_have_text(f"Question {i} of {total}")
            box.fill("orange")
            phone.get_by_role("button", name="Next").tap()
        phone.wait_for_url("**/s/cloze-everyday/done")
        expect(phone.locator("#completion-code")).to_have_text("C7F3K2Q9")
        phone.screenshot(path=str(args.out / "research-completion-phone.png"))
        print("wrote research-completion-phone.png")


if __name__ == "__main__":
    main()
