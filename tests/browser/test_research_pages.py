"""The researcher's pages under the Content-Security-Policy: the dashboard, a study page with
answers, the set-up form and the analysis report load without one refused script or style (the
`page` fixture fails the test on any violation), and the fill bars are drawn."""

from __future__ import annotations

from playwright.sync_api import expect
from research_helpers import PASSWORD, consent, make_researcher, make_study, run_through, study_row


def test_research_pages_work_under_the_security_policy(live_server, page):
    app = live_server.app
    make_researcher(app)
    study_id = make_study(app, items_per_participant=3, target_responses=2)
    slug = study_row(app, study_id).slug
    for pid in ("p-one", "p-two"):
        participant = app.test_client()
        run_through(participant, slug, consent(participant, slug, PROLIFIC_PID=pid))

    page.goto(live_server.url + "/research/login")
    page.fill("#email", "ada@example.org")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/research/")
    fill = page.locator(".meter__fill").first
    expect(fill).to_be_visible()
    assert fill.evaluate("el => el.getBoundingClientRect().width") > 0

    page.goto(f"{live_server.url}/research/studies/{study_id}")
    expect(page.locator("#live")).to_be_visible()
    bars = page.locator(".mini-meter span")
    assert max(bars.nth(i).evaluate("el => el.getBoundingClientRect().width")
               for i in range(bars.count())) > 0

    page.goto(live_server.url + "/research/studies/new")
    expect(page.locator("#name")).to_be_visible()

    report = page.goto(f"{live_server.url}/research/studies/{study_id}/report")
    assert report.status == 200
    assert "'unsafe-inline'" in report.headers["content-security-policy"]
    assert "script-src 'self'" in report.headers["content-security-policy"]
